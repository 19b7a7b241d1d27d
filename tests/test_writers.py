"""Transcript writers: the subtitle formats' exact text, atomic files."""

from __future__ import annotations

import json

import pytest

from keras_whisper.writers import format_timestamp, write_result, write_results

RESULT = {
    "text": "Hello there. General --> Kenobi",
    "language": "en",
    "segments": [
        {"id": 0, "start": 0.0, "end": 1.5, "text": " Hello there."},
        {"id": 1, "start": 3661.25, "end": 3662.0, "text": " General --> Kenobi"},
    ],
}


def test_format_timestamp():
    assert format_timestamp(0.0) == "00:00.000"
    assert format_timestamp(1.5) == "00:01.500"
    assert format_timestamp(3661.25) == "01:01:01.250"
    assert format_timestamp(59.9996) == "01:00.000"  # rounds to the millisecond
    assert format_timestamp(1.5, always_include_hours=True, marker=",") == "00:00:01,500"
    with pytest.raises(ValueError, match="negative"):
        format_timestamp(-1.0)


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("txt", "Hello there.\nGeneral --> Kenobi\n"),
        (
            "srt",
            "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
            "2\n01:01:01,250 --> 01:01:02,000\nGeneral -> Kenobi\n\n",
        ),
        (
            "vtt",
            "WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n\n"
            "01:01:01.250 --> 01:01:02.000\nGeneral -> Kenobi\n\n",
        ),
        ("tsv", "start\tend\ttext\n0\t1500\tHello there.\n3661250\t3662000\tGeneral --> Kenobi\n"),
    ],
)
def test_formats(tmp_path, fmt, expected):
    path = write_result(RESULT, tmp_path / f"out.{fmt}", fmt)
    assert path.read_text(encoding="utf-8") == expected


def test_json_and_no_partial_file_on_failure(tmp_path):
    path = write_result(RESULT, tmp_path / "out.json", "json")
    assert json.loads(path.read_text()) == RESULT
    with pytest.raises(TypeError):
        write_result(object(), tmp_path / "bad.json", "json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    with pytest.raises(ValueError, match="Unknown output format"):
        write_result(RESULT, tmp_path / "x.doc", "doc")


def test_several_formats_are_written_all_or_nothing(tmp_path):
    (tmp_path / "talk.txt").write_text("the user's own notes")
    (tmp_path / "talk.srt").mkdir()  # a folder where one transcript would go
    outputs = {tmp_path / f"talk.{fmt}": fmt for fmt in ("txt", "srt", "json")}
    with pytest.raises(IsADirectoryError, match="talk.srt is a folder"):
        write_results(RESULT, outputs)
    assert (tmp_path / "talk.txt").read_text() == "the user's own notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.srt", "talk.txt"]
    # A writer failing half-way (here on a result it cannot read) leaves no file either.
    (tmp_path / "talk.srt").rmdir()
    with pytest.raises(TypeError):
        write_results(object(), outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.txt"]
    assert write_results(RESULT, outputs) == list(outputs)
    assert json.loads((tmp_path / "talk.json").read_text()) == RESULT


# ---------------------------------------------------------------------------------------------
# Subtitles from word timestamps. Oracle: openai-whisper's own srt and vtt writers on the
# same word-timestamped transcripts (tests/data/subtitles_reference.json, written by
# tests/make_subtitles_reference.py from faster-whisper's words).
# ---------------------------------------------------------------------------------------------


def _subtitle_cases():
    from conftest import DATA

    reference = json.loads((DATA / "subtitles_reference.json").read_text(encoding="utf-8"))
    transcripts = {}
    with open(DATA / "word_timestamps_reference.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            transcripts[row["preset"], row["file"], row["mode"]] = row["segments"]
    return [(transcripts[tuple(case["transcript"])], case) for case in reference["cases"]]


@pytest.mark.parametrize(
    "segments, case",
    _subtitle_cases(),
    ids=[f"{c['transcript'][1]}-{c['layout']}" for _, c in _subtitle_cases()],
)
@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_from_words_match_openai_whisper(tmp_path, segments, case, fmt):
    path = write_result(
        {"text": "", "segments": segments}, tmp_path / f"out.{fmt}", fmt, **case["options"]
    )
    assert path.read_text(encoding="utf-8") == case[fmt]
