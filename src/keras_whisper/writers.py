"""Transcript writers: txt, srt, vtt, tsv and json, written atomically.

Each writer takes a transcription result (a mapping, or an object with
`text`, `language` and `segments`, each segment with `start`, `end` and
`text`) and a path. A file is first written under a temporary name beside the
target and then moved into place, so a failure never leaves a partial output.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

FORMATS = ("txt", "srt", "vtt", "tsv", "json")


def _field(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def as_dict(result: Any) -> dict:
    """The JSON form of a result: `text`, `language`, `segments` (and the rest)."""
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if isinstance(result, Mapping):
        return dict(result)
    raise TypeError(f"Cannot serialise a {type(result).__name__} as a transcription result.")


def format_timestamp(seconds: float, always_include_hours: bool = False, marker: str = ".") -> str:
    """`seconds` as `[HH:]MM:SS.mmm` (srt uses `,` as the decimal marker).

    Args:
        seconds: a non-negative time.
        always_include_hours: write `00:` hours even below one hour.
        marker: the decimal marker.
    """
    if seconds < 0:
        raise ValueError(f"A timestamp cannot be negative; got {seconds}.")
    milliseconds = round(seconds * 1000.0)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1_000)
    hours_part = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{marker}{milliseconds:03d}"


def _segments(result: Any) -> Iterable[Any]:
    return _field(result, "segments", []) or []


def _write_txt(result: Any, out: TextIO) -> None:
    for segment in _segments(result):
        out.write(_field(segment, "text", "").strip() + "\n")


def _write_vtt(result: Any, out: TextIO) -> None:
    out.write("WEBVTT\n\n")
    for segment in _segments(result):
        start = format_timestamp(_field(segment, "start"))
        end = format_timestamp(_field(segment, "end"))
        text = _field(segment, "text", "").strip().replace("-->", "->")
        out.write(f"{start} --> {end}\n{text}\n\n")


def _write_srt(result: Any, out: TextIO) -> None:
    for index, segment in enumerate(_segments(result), start=1):
        start = format_timestamp(_field(segment, "start"), True, ",")
        end = format_timestamp(_field(segment, "end"), True, ",")
        text = _field(segment, "text", "").strip().replace("-->", "->")
        out.write(f"{index}\n{start} --> {end}\n{text}\n\n")


def _write_tsv(result: Any, out: TextIO) -> None:
    out.write("start\tend\ttext\n")
    for segment in _segments(result):
        start = round(1000 * _field(segment, "start"))
        end = round(1000 * _field(segment, "end"))
        text = _field(segment, "text", "").strip().replace("\t", " ")
        out.write(f"{start}\t{end}\t{text}\n")


def _write_json(result: Any, out: TextIO) -> None:
    json.dump(as_dict(result), out, ensure_ascii=False)
    out.write("\n")


WRITERS: dict[str, Callable[[Any, TextIO], None]] = {
    "txt": _write_txt,
    "srt": _write_srt,
    "vtt": _write_vtt,
    "tsv": _write_tsv,
    "json": _write_json,
}


def write_result(result: Any, path: str | os.PathLike, output_format: str) -> Path:
    """Write `result` to `path` in `output_format`, atomically.

    Args:
        result: a transcription result.
        path: the output file.
        output_format: one of `FORMATS`.

    Returns:
        The path written.
    """
    if output_format not in WRITERS:
        raise ValueError(f"Unknown output format {output_format!r}; choose from {FORMATS}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            WRITERS[output_format](result, out)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return path
