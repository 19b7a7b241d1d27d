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
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def _write_txt(result: Any, out: TextIO, **_: Any) -> None:
    for segment in _segments(result):
        out.write(_field(segment, "text", "").strip() + "\n")


def _subtitles(
    segments: list[Any],
    max_line_width: int | None,
    max_line_count: int | None,
    max_words_per_line: int | None,
) -> Iterator[list[tuple[float, float, str]]]:
    """Group the segments' words into subtitles of `(start, end, text)` words (a line
    break is a word starting with a newline), as openai-whisper's subtitle writers do.

    Without both a line width and a line count, every segment (and every run of
    `max_words_per_line` words) starts a new subtitle; with both, words flow into lines
    of at most `max_line_width` characters, subtitles of at most `max_line_count` lines,
    and a pause of over 3 s starts a new subtitle.
    """
    preserve_segments = max_line_count is None or max_line_width is None
    width = max_line_width or 1000
    per_line = max_words_per_line or 1000
    line_length, line_count = 0, 1
    subtitle: list[tuple[float, float, str]] = []
    starts = (_field(w, "start") for s in segments for w in (_field(s, "words") or []))
    last = next(starts, None)  # the first word's start, else the first segment's
    if last is None:
        last = (_field(segments[0], "start") if segments else None) or 0.0
    for segment in segments:
        words = _field(segment, "words") or []
        for first in range(0, len(words), per_line):
            for position, item in enumerate(words[first : first + per_line]):
                start, end = _field(item, "start"), _field(item, "end")
                word = _field(item, "word")
                long_pause = not preserve_segments and start - last > 3.0
                has_room = line_length + len(word) <= width
                new_segment = position == 0 and bool(subtitle) and preserve_segments
                if line_length > 0 and has_room and not long_pause and not new_segment:
                    line_length += len(word)  # the line goes on
                else:
                    word = word.strip()
                    full = max_line_count is not None and (
                        long_pause or line_count >= max_line_count
                    )
                    if (subtitle and full) or new_segment:
                        yield subtitle
                        subtitle, line_count = [], 1
                    elif line_length > 0:
                        line_count += 1
                        word = "\n" + word
                    line_length = len(word.strip())
                subtitle.append((start, end, word))
                last = start
    if subtitle:
        yield subtitle


def _underlined(words: list[str], index: int) -> str:
    marked = words[index].lstrip()
    lead = words[index][: len(words[index]) - len(marked)]
    return "".join(words[:index] + [f"{lead}<u>{marked}</u>"] + words[index + 1 :])


def subtitle_cues(
    result: Any,
    hours: bool = False,
    marker: str = ".",
    *,
    max_line_width: int | None = None,
    max_line_count: int | None = None,
    highlight_words: bool = False,
    max_words_per_line: int | None = None,
) -> Iterator[tuple[str, str, str]]:
    """The `(start, end, text)` cues of an srt or vtt file, times formatted.

    Segments with `words` (word timestamps) are laid out from their words, as
    openai-whisper's writers do; without words each segment is one cue.

    Args:
        result: a transcription result.
        hours: always write the hours (srt).
        marker: the decimal marker (`,` in srt).
        max_line_width: characters in a line before it breaks (with words).
        max_line_count: lines in a cue (with words; with `max_line_width`, words
            flow across segments).
        highlight_words: one cue per word, the word underlined (`<u>`).
        max_words_per_line: words in a line at most (with words).
    """
    segments = list(_segments(result))

    def stamp(seconds: float) -> str:
        return format_timestamp(seconds, hours, marker)

    if not segments or _field(segments[0], "words") is None:
        for segment in segments:
            text = _field(segment, "text", "").strip().replace("-->", "->")
            yield stamp(_field(segment, "start")), stamp(_field(segment, "end")), text
        return
    for subtitle in _subtitles(segments, max_line_width, max_line_count, max_words_per_line):
        first, final = stamp(subtitle[0][0]), stamp(subtitle[-1][1])
        words = [word for _, _, word in subtitle]
        text = "".join(words)
        if not highlight_words:
            yield first, final, text
            continue
        last = first
        for index, (start, end, _) in enumerate(subtitle):
            start, end = stamp(start), stamp(end)
            if last != start:
                yield last, start, text
            yield start, end, _underlined(words, index)
            last = end


def _write_vtt(result: Any, out: TextIO, **layout: Any) -> None:
    out.write("WEBVTT\n\n")
    for start, end, text in subtitle_cues(result, **layout):
        out.write(f"{start} --> {end}\n{text}\n\n")


def _write_srt(result: Any, out: TextIO, **layout: Any) -> None:
    cues = subtitle_cues(result, True, ",", **layout)
    for index, (start, end, text) in enumerate(cues, start=1):
        out.write(f"{index}\n{start} --> {end}\n{text}\n\n")


def _write_tsv(result: Any, out: TextIO, **_: Any) -> None:
    out.write("start\tend\ttext\n")
    for segment in _segments(result):
        start = round(1000 * _field(segment, "start"))
        end = round(1000 * _field(segment, "end"))
        text = _field(segment, "text", "").strip().replace("\t", " ")
        out.write(f"{start}\t{end}\t{text}\n")


def _write_json(result: Any, out: TextIO, **_: Any) -> None:
    json.dump(as_dict(result), out, ensure_ascii=False)
    out.write("\n")


WRITERS: dict[str, Callable[..., None]] = {
    "txt": _write_txt,
    "srt": _write_srt,
    "vtt": _write_vtt,
    "tsv": _write_tsv,
    "json": _write_json,
}


def write_result(
    result: Any, path: str | os.PathLike, output_format: str, **subtitle_layout: Any
) -> Path:
    """Write `result` to `path` in `output_format`, atomically.

    Args:
        result: a transcription result.
        path: the output file.
        output_format: one of `FORMATS`.
        **subtitle_layout: for srt and vtt, `subtitle_cues`'s options
            (`max_line_width`, `max_line_count`, `highlight_words`,
            `max_words_per_line`); they need segments with words.

    Returns:
        The path written.
    """
    return write_results(result, {path: output_format}, **subtitle_layout)[0]


def write_results(
    result: Any, outputs: dict[str | os.PathLike, str], **subtitle_layout: Any
) -> list[Path]:
    """Write `result` in several formats, all or nothing.

    Every file is first written in full under a temporary name beside its target, and
    only then are they all moved into place: if one format fails (a bad option, a full
    disk, a folder in the way), none of the targets is touched.

    Args:
        result: a transcription result.
        outputs: `{path: output_format}`, each format one of `FORMATS`.
        **subtitle_layout: for srt and vtt, `subtitle_cues`'s options.

    Returns:
        The paths written, in the order given.
    """
    targets = [(Path(path), output_format) for path, output_format in outputs.items()]
    for path, output_format in targets:
        if output_format not in WRITERS:
            raise ValueError(f"Unknown output format {output_format!r}; choose from {FORMATS}.")
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder: its transcript cannot be written there.")
    written: list[tuple[str, Path]] = []
    try:
        for path, output_format in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            written.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
                WRITERS[output_format](result, out, **subtitle_layout)
            os.chmod(tmp, 0o644)
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        raise
    return [path for path, _ in targets]
