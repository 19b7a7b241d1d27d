"""Silero VAD v6 and speech timestamps against the reference implementations.

Reference data: `tests/data/vad_reference.npz`, written by `tests/make_vad_reference.py`:
probabilities of silero-vad 6.2.3's own PyTorch model (`load_silero_vad()`, TorchScript
`silero_vad.jit`, torch 2.13 CPU) on every WAV of the shared audio set (and `tests/data`), and
faster-whisper 1.2.1's `get_speech_timestamps`, `collect_chunks` and `SpeechTimestampsMap`
outputs on those probabilities. Where silero-vad + torch, onnxruntime or faster-whisper are
importable, the tests also run them on the fly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, shared_dir
from keras import ops

vad = pytest.importorskip("keras_whisper.vad")

DATA = REPO / "tests" / "data"
REFERENCE = np.load(DATA / "vad_reference.npz")
OPTIONS = json.loads(str(REFERENCE["options"]))
TOLERANCE = 1e-3  # the requirement; the measured difference is about 5e-5 at most


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_silero = pytest.mark.skipif(
    not _installed("silero-vad"), reason="silero-vad (the `vad` extra) is not installed"
)


def _read(path: Path) -> np.ndarray:
    audio, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1
    return audio


def _audio_files() -> dict[str, Path]:
    """Every WAV with reference probabilities: tests/data, plus shared/audio when present."""
    files = {p.stem: p for p in sorted(DATA.glob("*.wav"))}
    shared = shared_dir()
    if shared is not None:
        for path in sorted((shared / "audio").glob("*.wav")) + sorted(
            (shared / "audio" / "no_reference").glob("*.wav")
        ):
            files.setdefault(path.stem, path)
    return {name: path for name, path in files.items() if f"probs/{name}" in REFERENCE}


@pytest.fixture(scope="module")
def detector():
    if not _installed("silero-vad"):
        pytest.skip("silero-vad (the `vad` extra) is not installed")
    return vad.SileroVAD.from_package()


@pytest.fixture(scope="module")
def probabilities(detector):
    """Our probabilities of every reference file (one compiled call per file)."""
    return {
        name: (_read(path), detector.speech_probabilities(_read(path)))
        for name, path in _audio_files().items()
    }


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------


@needs_silero
def test_weights_and_timestamps_need_neither_torch_nor_keras():
    """The weight file is found and read without importing silero_vad (whose `__init__`
    imports PyTorch); timestamps from probabilities need no Keras either."""
    code = (
        "import sys\n"
        "from keras_whisper import vad\n"
        "path = vad.package_weights_path()\n"
        "weights = vad.load_weights_file(path)\n"
        "assert len(weights) == 15\n"
        "assert vad.speech_timestamps_from_probs([0.9] * 10) == [{'start': 0, 'end': 5120}]\n"
        "print(path)\n"
        "for name in ('silero_vad', 'torch', 'keras', 'jax'):\n"
        "    assert name not in sys.modules, name + ' imported'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("silero_vad_16k_op15.onnx")


def test_missing_extra_says_what_to_install(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(vad.MissingVADWeightsError, match=r"keras-whisper\[vad\]") as info:
        vad.SileroVAD.from_package()
    assert isinstance(info.value, ImportError)


@needs_silero
def test_onnx_weights_equal_the_pytorch_model():
    """The ONNX file we read holds exactly the weights of silero-vad's PyTorch model."""
    ours = vad.load_weights_file(vad.package_weights_path())
    data = vad.package_weights_path().parent
    sequence = vad.load_weights_file(data / "silero_vad_16k_sequence.onnx")  # ONNX LSTM node
    for name in ours:
        np.testing.assert_array_equal(ours[name], sequence[name], err_msg=name)
    torch = pytest.importorskip("torch")
    model = torch.jit.load(str(data / "silero_vad.jit"), map_location="cpu")
    state = {k: v.numpy() for k, v in model._model.state_dict().items()}
    reference = vad.weights.canonical_weights(state)
    for name in ours:
        np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)


@needs_silero
def test_package_safetensors_is_not_the_released_model():
    """silero-vad 6.2.3's `silero_vad_16k.safetensors` holds other weights (why we read ONNX)."""
    path = vad.package_weights_path().parent / "silero_vad_16k.safetensors"
    if not path.is_file():
        pytest.skip("no safetensors file in this silero-vad")
    other = vad.load_weights_file(path)
    ours = vad.load_weights_file(vad.package_weights_path())
    np.testing.assert_array_equal(other["stft_conv.weight"], ours["stft_conv.weight"])
    assert np.abs(other["conv1.weight"] - ours["conv1.weight"]).max() > 1.0


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x07\x08garbage")
    with pytest.raises(vad.weights.WeightsError):
        vad.load_weights_file(bad)


# ---------------------------------------------------------------------------------------------
# Probabilities
# ---------------------------------------------------------------------------------------------


def test_reference_covers_the_test_data():
    names = set(_audio_files())
    assert {"en_jfk", "en_cards_001"} <= names
    if shared_dir() is not None:
        assert len(names) >= 16, sorted(names)


def test_probabilities_match_silero_reference(probabilities):
    """Within 1e-3 of silero-vad's PyTorch model on every real recording (stored reference)."""
    worst = {}
    for name, (audio, ours) in probabilities.items():
        reference = REFERENCE[f"probs/{name}"]
        assert ours.shape == (math.ceil(len(audio) / 512),) == reference.shape, name
        assert ours.dtype == np.float32
        worst[name] = float(np.abs(ours - reference).max())
    assert max(worst.values()) < TOLERANCE, worst
    # Real speech and real silence are both there: the comparison is not trivial.
    jfk = REFERENCE["probs/en_jfk"]
    assert jfk.max() > 0.99 and jfk.min() < 0.05


@needs_silero
def test_probabilities_match_silero_on_the_fly(detector):
    """The same check computed now with silero-vad's own model, when torch is there."""
    pytest.importorskip("torch")
    import torch
    from silero_vad import load_silero_vad

    audio = _read(DATA / "en_jfk.wav")
    model = load_silero_vad()
    model.reset_states()
    reference = []
    with torch.no_grad():
        for start in range(0, len(audio), 512):
            chunk = torch.from_numpy(audio[start : start + 512])
            chunk = torch.nn.functional.pad(chunk, (0, 512 - len(chunk)))
            reference.append(model(chunk, 16000).item())
    ours = detector.speech_probabilities(audio)
    assert np.abs(ours - np.asarray(reference)).max() < TOLERANCE


@needs_silero
def test_probabilities_match_silero_onnx(detector):
    """silero-vad's ONNX model through onnxruntime (its `OnnxWrapper.audio_forward`)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    import torch
    from silero_vad.utils_vad import OnnxWrapper

    audio = _read(DATA / "en_cards_001.wav")
    wrapper = OnnxWrapper(str(vad.package_weights_path()), force_onnx_cpu=True)
    reference = wrapper.audio_forward(torch.from_numpy(audio), 16000).numpy()[0]
    assert np.abs(detector.speech_probabilities(audio) - reference).max() < TOLERANCE


def test_faster_whisper_network():
    """`from_package("faster-whisper")` reproduces faster-whisper's own Silero VAD v6.0."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("onnxruntime")
    from faster_whisper.vad import get_vad_model

    audio = _read(DATA / "en_jfk.wav")  # 176000 samples: faster-whisper pads 128 zeros
    padded = np.pad(audio, (0, 512 - len(audio) % 512))
    reference = get_vad_model()(padded.copy()).reshape(-1)
    ours = vad.SileroVAD.from_package("faster-whisper").speech_probabilities(audio)
    assert np.abs(ours - reference).max() < TOLERANCE


def test_batches_blocks_and_the_layer_agree(detector):
    """A batch of different lengths, several compiled blocks and the layer on windows all give
    the single-waveform probabilities (which match the reference above)."""
    audios = [_read(DATA / "en_jfk.wav"), _read(DATA / "en_cards_001.wav")]
    singles = [detector.speech_probabilities(a) for a in audios]
    # Blocks of 256 chunks (shapes compiled once): jfk's 344 chunks take two, state carried.
    blocks = detector.speech_probabilities(audios[0], max_block_chunks=256)
    np.testing.assert_allclose(blocks, singles[0], atol=1e-5)
    np.testing.assert_allclose(blocks, REFERENCE["probs/en_jfk"], atol=TOLERANCE)
    batched = detector.speech_probabilities(audios, max_block_chunks=256)
    for single, batch in zip(singles, batched, strict=True):
        np.testing.assert_allclose(batch, single, atol=1e-5)
    stacked = detector.speech_probabilities(np.stack([audios[1], audios[1] * 0.5]))
    assert stacked.shape == (2, len(singles[1]))
    np.testing.assert_allclose(stacked[0], singles[1], atol=1e-5)

    # The layer itself: two calls with the state carried equal the first 64 probabilities.
    windows = vad.frame_windows(audios[0])[None, :64]
    first, state = detector(windows[:, :32])
    second, _ = detector(windows[:, 32:], state)
    joined = np.concatenate([ops.convert_to_numpy(first), ops.convert_to_numpy(second)], 1)[0]
    np.testing.assert_allclose(joined, singles[0][:64], atol=1e-5)


@pytest.mark.parametrize("max_block_chunks", [1024, 100])
def test_streamed_probabilities_equal_the_whole_waveform(detector, max_block_chunks):
    """Block by block, cut anywhere, with the state carried: bit for bit the probabilities of
    the whole waveform, around the 256-chunk (short audio) boundary too."""
    audio = _read(DATA / "en_sonnet001_long.wav")
    rng = np.random.default_rng(0)
    for length in [0, 1, 512, 256 * 512, 256 * 512 + 1, 3 * 100 * 512, len(audio)]:
        waveform = audio[:length]
        whole = detector.speech_probabilities(waveform, max_block_chunks=max_block_chunks)
        cuts = np.sort(rng.integers(0, length + 1, size=9))
        streamed = detector.stream_speech_probabilities(
            iter(np.split(waveform, cuts)), max_block_chunks=max_block_chunks
        )
        assert streamed.dtype == np.float32 and streamed.shape == whole.shape, length
        np.testing.assert_array_equal(streamed, whole, err_msg=f"{length} samples")


def test_group_segments_are_the_groups_of_collect_chunks():
    seconds = [(0, 10), (11, 25), (26, 33), (40, 75), (80, 81)]
    segments = [{"start": 16000 * a, "end": 16000 * b} for a, b in seconds]
    audio = np.arange(16000 * 82, dtype=np.float32)
    groups = vad.group_segments(segments, 30.0)
    pieces = vad.collect_chunks(audio, segments, 30.0)
    assert groups == [piece.segments for piece in pieces]
    assert [len(g) for g in groups] == [2, 1, 1, 1]  # a 35-s segment gets a piece of its own
    assert vad.group_segments([], 30.0) == []


def test_inputs(detector):
    assert detector.speech_probabilities(np.zeros(0, np.float32)).shape == (0,)
    assert detector.speech_probabilities(np.zeros(1, np.float32)).shape == (1,)
    from_path = detector.speech_probabilities(str(DATA / "en_cards_001.wav"))
    np.testing.assert_allclose(from_path, REFERENCE["probs/en_cards_001"], atol=TOLERANCE)
    with pytest.raises(ValueError, match="16000"):
        detector.speech_probabilities(np.zeros(8000, np.float32), sampling_rate=8000)


# ---------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------


def _segments(array: np.ndarray) -> list[dict[str, int]]:
    return [{"start": int(s), "end": int(e)} for s, e in array]


def test_timestamps_match_faster_whisper():
    """faster-whisper's get_speech_timestamps (stored) on silero's probabilities, 6 option sets."""
    count = 0
    for key in REFERENCE.files:
        if not key.startswith("probs/"):
            continue
        name = key[len("probs/") :]
        probs, samples = REFERENCE[key], int(REFERENCE[f"samples/{name}"])
        for k, options in enumerate(OPTIONS):
            expected = _segments(REFERENCE[f"ts/{name}/{k}"])
            ours = vad.speech_timestamps_from_probs(probs, samples, vad.VadOptions(**options))
            assert ours == expected, (name, options)
            count += len(expected)
    assert count > 500


def test_collect_chunks_and_timestamp_map_match_faster_whisper():
    for key in REFERENCE.files:
        if not key.startswith("collect/"):
            continue
        _, name, k = key.split("/")
        segments = _segments(REFERENCE[f"ts/{name}/{k}"])
        audio = np.arange(int(REFERENCE[f"samples/{name}"]), dtype=np.float32)
        pieces = vad.collect_chunks(audio, segments, max_duration_s=30)
        expected = REFERENCE[key]
        if expected[0, 2] == 0:  # faster-whisper's empty piece before an over-long segment
            expected = expected[1:]
        assert [[p.offset, p.duration, len(p.audio)] for p in pieces] == expected.tolist()
        assert [s for p in pieces for s in p.segments] == segments
        joined = np.concatenate([p.audio for p in pieces])
        np.testing.assert_array_equal(
            joined, np.concatenate([audio[s["start"] : s["end"]] for s in segments])
        )
        if f"map/{name}/{k}" in REFERENCE:
            times, starts, ends = REFERENCE[f"map/{name}/{k}"]
            timeline = vad.TimestampMap(segments)
            assert [timeline.original_time(float(t)) for t in times] == starts.tolist()
            assert [timeline.original_time(float(t), is_end=True) for t in times] == ends.tolist()


def test_timestamps_match_faster_whisper_on_the_fly():
    """Random probability sequences and options against faster-whisper itself."""
    pytest.importorskip("faster_whisper")
    from unittest import mock

    import faster_whisper.vad as fw_vad

    rng = np.random.default_rng(0)
    for trial in range(300):
        length = int(rng.integers(1, 300))
        if trial % 2:
            probs = rng.random(length)
        else:
            probs = np.repeat(rng.random(length // 8 + 1), 8)[:length]
        probs = probs.astype(np.float32)
        options = dict(
            threshold=float(rng.choice([0.3, 0.5, 0.7])),
            min_speech_duration_ms=int(rng.choice([0, 100, 250])),
            max_speech_duration_s=float(rng.choice([math.inf, 0.5, 1.0, 2.0])),
            min_silence_duration_ms=int(rng.choice([0, 100, 300, 2000])),
            speech_pad_ms=int(rng.choice([0, 30, 200, 400])),
        )
        samples = length * 512 - int(rng.integers(1, 512))

        class Fixed:
            def __call__(self, padded, probs=probs):
                return probs[:, None]

        with mock.patch.object(fw_vad, "get_vad_model", lambda: Fixed()):
            expected = fw_vad.get_speech_timestamps(
                np.zeros(samples, np.float32), fw_vad.VadOptions(**options)
            )
        assert vad.speech_timestamps_from_probs(probs, samples, **options) == expected


def test_get_speech_timestamps_end_to_end(probabilities, detector, monkeypatch):
    """Our model + our timestamps give faster-whisper's segments on silero's probabilities."""
    for name in ("en_jfk", "en_sonnet001_long", "en_codec2_ve9qrp"):
        if name not in probabilities:
            continue
        audio, probs = probabilities[name]
        for k in (0, 1, 3):
            expected = _segments(REFERENCE[f"ts/{name}/{k}"])
            got = vad.get_speech_timestamps(audio, OPTIONS[k], speech_probs=probs)
            assert got == expected, (name, k)
    # The model run inside, on a path; the default detector (built once) is this one.
    monkeypatch.setattr(vad.timestamps, "_DEFAULT_VAD", detector)
    expected = _segments(REFERENCE["ts/en_jfk/1"])
    assert vad.get_speech_timestamps(str(DATA / "en_jfk.wav"), OPTIONS[1]) == expected


def test_options():
    options = vad.VadOptions()
    assert (options.threshold, options.resolved_neg_threshold) == (0.5, pytest.approx(0.35))
    assert options.min_silence_duration_ms == 2000 and options.speech_pad_ms == 400
    assert options.max_speech_duration_s == math.inf and options.min_speech_duration_ms == 0
    assert vad.VadOptions(threshold=0.1).resolved_neg_threshold == 0.01
    with pytest.raises(ValueError):
        vad.VadOptions(threshold=1.5)
    with pytest.raises(ValueError):
        vad.VadOptions(max_speech_duration_s=0)
    probs = REFERENCE["probs/en_jfk"]
    as_dict = vad.speech_timestamps_from_probs(probs, 176000, {"speech_pad_ms": 30})
    as_kwarg = vad.speech_timestamps_from_probs(probs, 176000, speech_pad_ms=30)
    assert as_dict == as_kwarg != vad.speech_timestamps_from_probs(probs, 176000)
    assert vad.speech_timestamps_from_probs(np.zeros(100), 51200) == []
    assert vad.collect_chunks(np.ones(10), [])[0].duration == 0.0
