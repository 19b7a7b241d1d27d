"""Tests of keras_whisper.audio: decoding, resampling, streaming and log-mel features.

The reference for the features is an independent PyTorch implementation of OpenAI Whisper's
`log_mel_spectrogram` written below (torch.stft, the last frame dropped, OpenAI's own
`mel_filters.npz`), checked on every recording of the shared audio set.
"""

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import DATA, shared_dir
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_whisper import audio
from keras_whisper.audio import (
    N_FRAMES,
    N_SAMPLES,
    AudioFileNotFoundError,
    WhisperAudioConverter,
    load_audio,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
    stream_audio,
)
from keras_whisper.errors import AudioError

REPO_ROOT = Path(__file__).resolve().parents[1]
JFK_WAV = DATA / "en_jfk.wav"
JFK_MP3 = DATA / "en_jfk.mp3"
CARDS_WAV = DATA / "en_cards_001.wav"
with np.load(DATA / "mel_filters.npz") as _npz:  # OpenAI's filterbank (MIT, see LICENSES.md)
    OPENAI_FILTERS = dict(_npz)
REFERENCE_ATOL = 1e-4  # max abs difference allowed against the torch reference


_SHARED_ROOT = shared_dir()  # ../shared beside the repository, or $KERAS_WHISPER_SHARED
# The whole shared audio set when it is there; otherwise the copies shipped in tests/data
# (most of the 16 kHz set, the 48 kHz original and the MP3).
SHARED = _SHARED_ROOT / "audio" if _SHARED_ROOT else DATA
# Every recording: the 16 kHz set, formats/ (48 kHz WAV, MP3) and no_reference/ (112 s radio).
SHARED_WAVS = sorted([*SHARED.rglob("*.wav"), *SHARED.rglob("*.mp3")])
WAV_PARAMS = [pytest.param(path, id=str(path.relative_to(SHARED))) for path in SHARED_WAVS]
LONG_16K = (
    SHARED / "no_reference" / "en_codec2_ve9qrp.wav"
    if (SHARED / "no_reference").is_dir()
    else DATA / "en_sonnet001_long.wav"
)


# ---------------------------------------------------------------------------------------------
# The independent reference (PyTorch, OpenAI's recipe)
# ---------------------------------------------------------------------------------------------


def torch_log_mel(samples, n_mels=80, padding=0):
    """OpenAI Whisper's log-mel, (n_mels, frames) transposed to (frames, n_mels)."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    if padding > 0:
        x = torch.nn.functional.pad(x, (0, padding))
    stft = torch.stft(x, 400, 160, window=torch.hann_window(400), return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    filters = torch.from_numpy(OPENAI_FILTERS[f"mel_{n_mels}"])
    log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T.numpy()


def max_abs(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


@pytest.fixture(scope="module")
def converter(other_backend_runs):
    # Requesting `other_backend_runs` starts the PyTorch/TensorFlow subprocesses early, so that
    # their imports (about 10 s for keras on torch) overlap the tests that use this fixture.
    return WhisperAudioConverter()


@pytest.fixture(scope="module")
def jfk():
    return load_audio(JFK_WAV)


# ---------------------------------------------------------------------------------------------
# Constants and filterbank
# ---------------------------------------------------------------------------------------------


def test_constants():
    assert (audio.SAMPLE_RATE, audio.N_FFT, audio.HOP_LENGTH) == (16000, 400, 160)
    assert (audio.CHUNK_LENGTH, N_SAMPLES, N_FRAMES) == (30, 480000, 3000)
    assert (audio.FRAMES_PER_SECOND, audio.TOKENS_PER_SECOND) == (100, 50)
    assert audio.N_SAMPLES_PER_TOKEN == 320


@pytest.mark.parametrize("num_mels", [80, 128])
def test_mel_filters_match_openai(num_mels):
    ours = mel_filters(num_mels)
    reference = OPENAI_FILTERS[f"mel_{num_mels}"]
    assert ours.shape == reference.shape == (num_mels, 201)
    assert ours.dtype == np.float64
    # The reference is stored in float32: 1e-6 relative is well above its rounding.
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-9)
    assert mel_filters(num_mels) is ours  # cached
    assert not ours.flags.writeable  # so the cache cannot be corrupted


@pytest.mark.parametrize(
    "num_mels, rate, n_fft", [(80, 16000, 400), (128, 16000, 400), (40, 8000, 256)]
)
def test_filterbank_spans_equal_the_matrix_product(num_mels, rate, n_fft):
    # The log-mel applies each filter over its nonzero span (no BLAS call, whose spinning
    # threads slowed the encoder run next): the same numbers as the whole product.
    power = np.random.default_rng(0).random((700, n_fft // 2 + 1))
    out = np.empty((700, num_mels))
    audio._apply_filterbank(power, audio._filter_bands(num_mels, rate, n_fft), out)
    np.testing.assert_allclose(out, power @ mel_filters(num_mels, rate, n_fft).T, rtol=1e-13)


def test_mel_filters_other_rates_are_well_formed():
    filters = mel_filters(40, sampling_rate=8000, n_fft=256)
    assert filters.shape == (40, 129)
    assert (filters >= 0).all() and (filters.sum(axis=1) > 0).all()
    with pytest.raises(AudioError):
        mel_filters(0)


# ---------------------------------------------------------------------------------------------
# Features against the torch reference
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_window_features(converter):
    """The converter's features of every shared recording, in one batched call."""
    windows = np.stack([pad_or_trim(load_audio(path)) for path in SHARED_WAVS])
    return dict(zip(SHARED_WAVS, np.asarray(converter(windows)), strict=True))


@pytest.mark.parametrize("path", WAV_PARAMS)
def test_features_match_torch_reference_on_every_file(path, shared_window_features):
    samples = load_audio(path)
    ours = log_mel_spectrogram(samples)
    reference = torch_log_mel(samples)
    assert ours.shape == (samples.size // 160, 80) and ours.dtype == np.float32
    assert max_abs(ours, reference) < REFERENCE_ATOL

    features = shared_window_features[path]  # OpenAI's 30-s window path: pad_or_trim first
    assert features.shape == (N_FRAMES, 80)
    assert max_abs(features, torch_log_mel(pad_or_trim(samples))) < REFERENCE_ATOL


def test_whole_file_features_match_torch_reference(converter):
    path = SHARED / "en_sonnet001_long.wav" if SHARED else JFK_WAV
    samples = load_audio(path)
    whole = converter.whole_file_features(samples)
    assert whole.shape == ((samples.size + N_SAMPLES) // 160, 80)
    assert max_abs(whole, torch_log_mel(samples, padding=N_SAMPLES)) < REFERENCE_ATOL
    content_frames = whole.shape[0] - N_FRAMES
    assert content_frames == samples.size // 160


def test_128_mels_match_torch_reference(jfk):
    ours = log_mel_spectrogram(jfk, num_mels=128)
    assert max_abs(ours, torch_log_mel(jfk, n_mels=128)) < REFERENCE_ATOL
    converter = WhisperAudioConverter(num_mels=128)
    assert converter.audio_shape() == (3000, 128)
    features = np.asarray(converter(jfk))
    assert max_abs(features, torch_log_mel(pad_or_trim(jfk), n_mels=128)) < REFERENCE_ATOL


@settings(max_examples=15, deadline=None)
@given(
    length=st.integers(min_value=201, max_value=6000),
    scale=st.floats(min_value=1e-4, max_value=1.0),
    seed=st.integers(0, 2**16),
)
def test_log_mel_matches_torch_reference_on_random_lengths(length, scale, seed):
    samples = (np.random.default_rng(seed).standard_normal(length) * scale).astype(np.float32)
    ours = log_mel_spectrogram(samples)
    assert ours.shape == (length // 160, 80)
    assert max_abs(ours, torch_log_mel(samples)) < REFERENCE_ATOL


def test_log_mel_edge_cases(tmp_path):
    silence = log_mel_spectrogram(np.zeros(0, np.float32), padding=N_SAMPLES)
    assert silence.shape == (N_FRAMES, 80)
    np.testing.assert_array_equal(silence, -1.5)  # log10(1e-10) = -10 -> (-10 + 4) / 4
    assert log_mel_spectrogram(np.ones(201, np.float32)).shape == (1, 80)
    with pytest.raises(AudioError, match="too short"):
        log_mel_spectrogram(np.ones(200, np.float32))
    with pytest.raises(AudioError, match="padding"):
        log_mel_spectrogram(np.ones(1000, np.float32), padding=-1)
    with pytest.raises(AudioError, match="NaN"):
        log_mel_spectrogram(np.full(1000, np.nan, np.float32))
    # A path is decoded first.
    np.testing.assert_array_equal(
        log_mel_spectrogram(CARDS_WAV), log_mel_spectrogram(load_audio(CARDS_WAV))
    )


# ---------------------------------------------------------------------------------------------
# The Keras converter
# ---------------------------------------------------------------------------------------------


def test_converter_batch_matches_single_examples(converter, jfk):
    cards = load_audio(CARDS_WAV)
    noise = np.random.default_rng(0).standard_normal(N_SAMPLES + 5000).astype(np.float32) * 0.1
    rows = [jfk, cards, noise[:N_SAMPLES], np.zeros(N_SAMPLES, np.float32)]
    batch = np.stack([pad_or_trim(row) for row in rows])
    batched = np.asarray(converter(batch))
    assert batched.shape == (4, N_FRAMES, 80)
    for row, features in zip(rows, batched, strict=True):
        assert max_abs(features, converter(row)) < 1e-5
    # Normalisation is per example: the silent row is flat, whatever the others hold.
    np.testing.assert_allclose(batched[3], -1.5)
    # Longer inputs are truncated to 30 s, shorter ones padded with zeros at the end.
    assert max_abs(converter(noise), converter(noise[:N_SAMPLES])) < 1e-6
    assert max_abs(converter(cards), converter(pad_or_trim(cards))) < 1e-6
    # A ragged batch (a list of waveforms of different lengths) is padded/trimmed row by row.
    ragged = np.asarray(converter([jfk, cards, noise]))
    assert ragged.shape == (3, N_FRAMES, 80)
    assert max_abs(ragged[:2], batched[:2]) < 1e-6
    assert max_abs(ragged[2], batched[2]) < 1e-6


def test_converter_matches_numpy_window(converter, jfk):
    expected = log_mel_spectrogram(pad_or_trim(jfk))
    assert max_abs(converter(jfk), expected) < 5e-5


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_converter_low_and_high_precision_inputs(converter, jfk, dtype):
    import ml_dtypes

    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    samples = jfk.astype(np_dtype)
    upcast = samples.astype(np.float32)
    expected = np.asarray(converter(upcast))
    assert max_abs(converter(samples), expected) < 1e-6
    assert max_abs(converter(keras.ops.convert_to_tensor(samples)), expected) < 1e-6
    np.testing.assert_array_equal(load_audio(samples), upcast)


def test_converter_config_shapes_and_symbolic_call():
    converter = WhisperAudioConverter(name="front_end")
    config = converter.get_config()
    for key, value in {
        "num_mels": 80,
        "num_fft_bins": 400,
        "stride": 160,
        "sampling_rate": 16000,
        "max_audio_length": 30,
        "name": "front_end",
    }.items():
        assert config[key] == value
    clone = WhisperAudioConverter.from_config(config)
    assert clone.get_config() == config
    assert converter.audio_shape() == (3000, 80)  # keras-hub returns (30, 80)
    assert converter.compute_output_shape((None, 123)) == (None, 3000, 80)
    assert converter.weights == []
    inputs = keras.Input(shape=(N_SAMPLES,))
    assert tuple(converter(inputs).shape) == (None, 3000, 80)
    small = WhisperAudioConverter(num_mels=64, stride=100, max_audio_length=2)
    assert small.audio_shape() == (320, 64)
    assert np.asarray(small(np.zeros(100, np.float32))).shape == (320, 64)


def test_converter_rejects_bad_inputs(converter):
    with pytest.raises(AudioError, match="float"):
        converter(np.zeros(1000, np.int16))
    with pytest.raises(AudioError, match="shape"):
        converter(np.zeros((2, 2, 1000), np.float32))
    with pytest.raises(AudioError, match="float"):
        converter([np.zeros(10, np.float32), np.zeros(20, np.int16)])
    with pytest.raises(AudioError):
        WhisperAudioConverter(stride=0)
    for length in [0, float("nan"), float("inf"), "30"]:
        with pytest.raises(AudioError):
            WhisperAudioConverter(max_audio_length=length)


_BACKEND_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from keras_whisper.audio import (
        WhisperAudioConverter, load_audio, log_mel_spectrogram, pad_or_trim
    )
    samples = load_audio(sys.argv[1])
    converter = WhisperAudioConverter()
    single = keras.ops.convert_to_numpy(converter(samples))
    batch = keras.ops.convert_to_numpy(converter(np.stack([samples, samples[::-1].copy()])))
    expected = log_mel_spectrogram(pad_or_trim(samples))
    print(json.dumps({
        "backend": keras.backend.backend(),
        "single_shape": list(single.shape),
        "batch_shape": list(batch.shape),
        "single_err": float(np.abs(single - expected).max()),
        "batch_err": float(np.abs(batch[0] - expected).max()),
    }))
    """
)


OTHER_BACKENDS = ["torch", "tensorflow"]


@pytest.fixture(scope="module")
def other_backend_runs(request):
    """Runs `_BACKEND_SCRIPT` under each other installed, selected backend, in the background."""
    import importlib.util

    src = Path(audio.__file__).resolve().parents[1]
    selected = {item.nodeid for item in request.session.items}
    runs = {}
    for backend in OTHER_BACKENDS:
        wanted = f"test_converter_on_other_backends[{backend}]"
        if not any(nodeid.endswith(wanted) for nodeid in selected):
            continue
        if importlib.util.find_spec(backend) is None:
            continue
        env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="")
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
        runs[backend] = subprocess.Popen(
            [sys.executable, "-c", _BACKEND_SCRIPT, str(JFK_WAV)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    yield runs
    for process in runs.values():
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_converter_on_other_backends(backend, other_backend_runs):
    if backend not in other_backend_runs:
        pytest.skip(f"keras backend {backend!r} is not installed")
    stdout, stderr = other_backend_runs[backend].communicate(timeout=300)
    assert other_backend_runs[backend].returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert report["single_shape"] == [3000, 80]
    assert report["batch_shape"] == [2, 3000, 80]
    assert report["single_err"] < 5e-5 and report["batch_err"] < 5e-5


# ---------------------------------------------------------------------------------------------
# load_audio
# ---------------------------------------------------------------------------------------------


class _PipeLike:
    """A binary stream that cannot seek, like a pipe or a socket."""

    def __init__(self, data):
        self._data = io.BytesIO(data)

    def read(self, size=-1):
        return self._data.read(size)

    def seekable(self):
        return False


def test_load_audio_sources_agree(jfk):
    reference, rate = sf.read(JFK_WAV, dtype="float32")
    assert rate == 16000
    assert jfk.dtype == np.float32 and jfk.ndim == 1
    np.testing.assert_array_equal(jfk, reference)
    data = JFK_WAV.read_bytes()
    np.testing.assert_array_equal(load_audio(str(JFK_WAV)), jfk)
    np.testing.assert_array_equal(load_audio(data), jfk)
    np.testing.assert_array_equal(load_audio(bytearray(data)), jfk)
    np.testing.assert_array_equal(load_audio(memoryview(data)), jfk)
    with open(JFK_WAV, "rb") as handle:
        np.testing.assert_array_equal(load_audio(handle), jfk)
    np.testing.assert_array_equal(load_audio(io.BytesIO(data)), jfk)
    np.testing.assert_array_equal(load_audio(_PipeLike(data)), jfk)
    int16, _ = sf.read(JFK_WAV, dtype="int16")
    np.testing.assert_array_equal(load_audio(int16), jfk)  # int16 / 32768


def test_load_audio_array_dtypes_and_channels():
    np.testing.assert_array_equal(load_audio(np.array([0, 128, 255], np.uint8)), [-1, 0, 127 / 128])
    np.testing.assert_array_equal(load_audio(np.array([-(2**31), 2**30], np.int32)), [-1, 0.5])
    np.testing.assert_array_equal(load_audio(np.array([0.25, -0.5])), np.float32([0.25, -0.5]))
    stereo = np.array([[0.5, -0.5], [1.0, 0.0], [0.25, 0.75]], np.float32)
    np.testing.assert_array_equal(load_audio(stereo), [0.0, 0.5, 0.5])
    np.testing.assert_array_equal(load_audio(stereo[:, :1]), stereo[:, 0])
    # Arrays are taken to be at `sampling_rate` already: no resampling.
    assert load_audio(np.zeros(100, np.float32), sampling_rate=8000).size == 100


def test_load_audio_stereo_and_other_containers(tmp_path):
    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal((16000, 2)) * 0.2).clip(-1, 1).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), stereo.mean(axis=1), atol=1e-7)
    pcm = (rng.standard_normal(8000) * 3000).astype(np.int16)
    for fmt in ["FLAC", "OGG"]:
        buffer = io.BytesIO()
        sf.write(buffer, pcm, 16000, format=fmt)
        decoded = load_audio(buffer.getvalue())
        assert decoded.dtype == np.float32 and abs(decoded.size - pcm.size) < 1000
        if fmt == "FLAC":  # lossless
            np.testing.assert_array_equal(decoded, pcm / np.float32(32768))


def test_mp3_decodes_like_the_wav(jfk):
    mp3 = load_audio(JFK_MP3)
    assert mp3.shape == jfk.shape
    snr = 10 * np.log10(np.sum(jfk.astype(np.float64) ** 2) / np.sum((mp3 - jfk) ** 2.0))
    assert np.corrcoef(mp3, jfk)[0, 1] > 0.999 and snr > 30
    # libsndfile decodes MP3 blocks with last-bit differences, hence a tolerance.
    streamed = np.concatenate(list(stream_audio(JFK_MP3, 4.0)))
    np.testing.assert_allclose(streamed, mp3, atol=1e-6, rtol=0)


def test_48khz_original_resamples_to_the_16khz_file():
    # manifest.tsv: formats/en_alsa_front_center_48k.wav is the 48 kHz original of
    # en_alsa_front_center.wav.
    resampled = load_audio(SHARED / "formats" / "en_alsa_front_center_48k.wav")
    expected = load_audio(SHARED / "en_alsa_front_center.wav")
    assert resampled.shape == expected.shape
    assert np.corrcoef(resampled, expected)[0, 1] > 0.999
    windows = list(stream_audio(SHARED / "formats" / "en_alsa_front_center_48k.wav", 0.5))
    assert {w.size for w in windows[:-1]} == {8000}
    np.testing.assert_allclose(np.concatenate(windows), resampled, atol=1e-6, rtol=0)


def test_resample_helper(jfk):
    down = audio.resample(jfk, 16000, 8000)
    assert down.dtype == np.float32 and down.size == jfk.size // 2
    np.testing.assert_array_equal(audio.resample(jfk, 16000, 16000), jfk)
    with pytest.raises(AudioError):
        audio.resample(jfk, 0, 16000)


def test_load_audio_resamples_to_other_rates(tmp_path, jfk):
    path = tmp_path / "jfk8k.wav"
    sf.write(path, soxr.resample(jfk, 16000, 8000), 8000, subtype="FLOAT")
    at_8k = load_audio(JFK_WAV, sampling_rate=8000)
    np.testing.assert_array_equal(at_8k, audio.resample(jfk, 16000, 8000))
    back = load_audio(path)
    assert back.size == jfk.size
    assert np.corrcoef(back, jfk)[0, 1] > 0.99  # the band above 4 kHz is gone


# Bad inputs --------------------------------------------------------------------------------------


def _wav_bytes(samples, rate=16000, subtype="PCM_16"):
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.fixture
def no_ffmpeg(tmp_path, monkeypatch):
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioFileNotFoundError, match="nope.wav") as info:
        load_audio(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, AudioError)
    with pytest.raises(FileNotFoundError):  # raised at the call, not at the first window
        stream_audio(str(missing))


def test_empty_inputs(tmp_path):
    empty_file = tmp_path / "empty.wav"
    empty_file.write_bytes(b"")
    zero_frames = tmp_path / "zero_frames.wav"
    zero_frames.write_bytes(_wav_bytes(np.zeros(0, np.int16)))
    for source in [
        empty_file,
        zero_frames,
        b"",
        zero_frames.read_bytes(),
        io.BytesIO(b""),
        np.zeros(0, np.float32),
        np.zeros((0, 2), np.float32),
    ]:
        with pytest.raises(AudioError, match="no samples"):
            load_audio(source)
        with pytest.raises(AudioError, match="no samples"):
            list(stream_audio(source))
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)


def test_non_finite_samples(tmp_path):
    for bad in [np.nan, np.inf, -np.inf]:
        samples = np.zeros(1000, np.float32)
        samples[500] = bad
        with pytest.raises(AudioError, match="NaN or infinite"):
            load_audio(samples)
        path = tmp_path / "bad.wav"
        sf.write(path, samples, 16000, subtype="FLOAT")
        with pytest.raises(AudioError, match="NaN or infinite"):
            load_audio(path)
        with pytest.raises(AudioError, match="NaN or infinite"):
            list(stream_audio(path))


def test_not_audio_without_ffmpeg(tmp_path, no_ffmpeg):
    text = tmp_path / "notes.wav"
    text.write_text("This is a text file, not audio.\n")
    with pytest.raises(AudioError, match="ffmpeg") as info:
        load_audio(text)
    assert "notes.wav" in str(info.value) and "install" in str(info.value).lower()
    with pytest.raises(AudioError, match="ffmpeg"):
        load_audio(os.urandom(4096))
    with pytest.raises(AudioError, match="ffmpeg"):
        list(stream_audio(text))


@pytest.mark.parametrize(
    "source, match",
    [
        (np.zeros((4, 4, 4), np.float32), "shape"),
        (np.float32(0.5), "shape"),
        (np.zeros((2, 16000), np.float32), r"audio\.T"),  # (channels, samples)
        (np.zeros((10, 0), np.float32), "no channels"),
        (np.zeros(100, np.complex64), "dtype"),
        (np.zeros(100, bool), "dtype"),
        (np.array(["a", "b"]), "dtype"),
        (np.array([None, 1.0], dtype=object), "dtype"),
        (12345, "Unsupported audio source"),
        (None, "Unsupported audio source"),
        (io.StringIO("text"), "text mode"),
    ],
)
def test_bad_array_and_source_types(source, match):
    with pytest.raises(AudioError, match=match):
        load_audio(source)


@pytest.mark.parametrize("rate", [0, -16000, 1.5, True, "16000", float("nan")])
def test_bad_sampling_rates(rate, jfk):
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio(jfk, sampling_rate=rate)


def test_bad_window_lengths(jfk):
    for window in [0, -1.0, float("nan"), float("inf"), "30", 1e-9]:
        with pytest.raises(AudioError, match="window_seconds"):
            stream_audio(jfk, window_seconds=window)


def test_pad_or_trim():
    samples = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_trim(samples, 4), samples[:4])
    np.testing.assert_array_equal(pad_or_trim(samples, 12), np.r_[samples, 0, 0])
    assert pad_or_trim(samples, 10) is samples
    assert pad_or_trim(np.zeros(5, np.float32)).shape == (N_SAMPLES,)
    mel = np.ones((7, 80), np.float32)
    padded = pad_or_trim(mel, N_FRAMES, axis=0)
    assert padded.shape == (3000, 80) and padded[7:].sum() == 0 and padded[:7].sum() == 7 * 80
    assert pad_or_trim(mel, 5, axis=-1).shape == (7, 5)
    with pytest.raises(AudioError):
        pad_or_trim(samples, -1)
    with pytest.raises(AudioError):
        pad_or_trim(samples, 4, axis=1)


# ffmpeg fallback -------------------------------------------------------------------------------

_FAKE_FFMPEG = """#!{python}
import sys
args = sys.argv[1:]
assert args[:1] == ["-nostdin"] and "-ac" in args and args[args.index("-f") + 1] == "s16le"
assert args[args.index("-ar") + 1] == "16000"
source = args[args.index("-i") + 1]
data = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()
if not data.startswith(b"FAKEPCM\\n"):
    sys.stderr.write("Invalid data found when processing input\\n")
    sys.exit(1)
sys.stdout.buffer.write(data[8:])
"""


@pytest.fixture
def fake_ffmpeg(tmp_path, monkeypatch):
    """An `ffmpeg` on PATH that decodes a made-up container (b"FAKEPCM\\n" + s16le)."""
    bin_dir = tmp_path / "fake_bin"
    bin_dir.mkdir()
    script = bin_dir / "ffmpeg"
    script.write_text(_FAKE_FFMPEG.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.skipif(sys.platform == "win32", reason="the fake ffmpeg is a POSIX script")
def test_ffmpeg_fallback_decodes_other_containers(tmp_path, fake_ffmpeg):
    pcm = (np.random.default_rng(2).standard_normal(50000) * 4000).astype("<i2")
    container = b"FAKEPCM\n" + pcm.tobytes()
    expected = pcm / np.float32(32768)
    path = tmp_path / "speech.m4a"
    path.write_bytes(container)
    for source in [path, container, io.BytesIO(container), _PipeLike(container)]:
        np.testing.assert_array_equal(load_audio(source), expected)
    for source in [path, container, io.BytesIO(container)]:
        windows = list(stream_audio(source, window_seconds=1.0))
        assert [w.size for w in windows] == [16000, 16000, 16000, 2000]
        np.testing.assert_array_equal(np.concatenate(windows), expected)
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"definitely not audio")
    with pytest.raises(AudioError, match="Invalid data found"):
        load_audio(broken)
    with pytest.raises(AudioError, match="Invalid data found"):
        list(stream_audio(broken))
    with pytest.raises(AudioError, match="no samples"):
        load_audio(b"FAKEPCM\n")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg program is not installed")
def test_real_ffmpeg_decodes_m4a(tmp_path, jfk):
    m4a = tmp_path / "jfk.m4a"  # MP4 needs seeking: in-memory sources go through a temp file
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(JFK_WAV), "-c:a", "aac", str(m4a)],
        check=True,
    )
    decoded = load_audio(m4a)
    assert abs(decoded.size - jfk.size) < 2048
    assert np.corrcoef(decoded[: jfk.size], jfk[: decoded.size])[0, 1] > 0.999
    np.testing.assert_array_equal(load_audio(m4a.read_bytes()), decoded)
    with open(m4a, "rb") as handle:
        np.testing.assert_array_equal(np.concatenate(list(stream_audio(handle, 2.0))), decoded)
    with pytest.raises(AudioError, match="ffmpeg could not decode"):
        load_audio(b"this is text, not audio " * 100)


# ---------------------------------------------------------------------------------------------
# stream_audio
# ---------------------------------------------------------------------------------------------


def test_stream_matches_load_for_all_sources(jfk):
    for source in [JFK_WAV, JFK_WAV.read_bytes(), io.BytesIO(JFK_WAV.read_bytes()), jfk]:
        windows = list(stream_audio(source, window_seconds=3.0))
        assert [w.size for w in windows] == [48000, 48000, 48000, 32000]
        assert all(w.dtype == np.float32 for w in windows)
        np.testing.assert_array_equal(np.concatenate(windows), jfk)


def test_stream_long_16khz_file_exactly():
    path = LONG_16K
    whole = load_audio(path)
    windows = list(stream_audio(path))
    assert [w.size for w in windows[:-1]] == [N_SAMPLES] * (len(windows) - 1)
    np.testing.assert_array_equal(np.concatenate(windows), whole)


def test_stream_8khz_recording_resampled(tmp_path):
    # The radio recording's original rate was 8 kHz (the shared copy is upsampled to 16 kHz).
    original = load_audio(LONG_16K, sampling_rate=8000)
    path = tmp_path / "ve9qrp_8k.wav"
    sf.write(path, original, 8000, subtype="PCM_16")
    whole = load_audio(path)
    assert abs(whole.size - 2 * original.size) <= 1
    windows = list(stream_audio(path, window_seconds=30.0))
    assert len(windows) == -(-whole.size // N_SAMPLES)  # 30-s windows, the last one short
    np.testing.assert_allclose(np.concatenate(windows), whole, atol=1e-6, rtol=0)


def test_stream_memory_is_bounded(tmp_path):
    # 10 minutes at 8 kHz: decoded whole at 16 kHz it would take 38 MB.
    minutes, rate = 10, 8000
    rng = np.random.default_rng(3)
    path = tmp_path / "long.wav"
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as handle:
        for _ in range(minutes):
            handle.write((rng.standard_normal(60 * rate) * 0.1).astype(np.float32))
    tracemalloc.start()
    try:
        total = 0
        for window in stream_audio(path):
            total += window.size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(total - minutes * 60 * 16000) <= 1
    assert peak < 8 * 2**20, f"streaming peaked at {peak / 2**20:.1f} MiB"


@pytest.mark.slow
def test_stream_an_hour_in_bounded_memory(tmp_path):
    rate = 44100
    path = tmp_path / "hour.flac"
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(60 * rate) / rate)).astype(np.float32)
    with sf.SoundFile(path, "w", rate, 2, "PCM_16") as handle:
        for _ in range(60):
            handle.write(np.stack([tone, tone], axis=1))
    tracemalloc.start()
    try:
        total = sum(window.size for window in stream_audio(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(total - 3600 * 16000) <= 1
    assert peak < 16 * 2**20


def test_a_wav_cut_short_is_an_error_not_a_shorter_recording(tmp_path):
    # libsndfile reads a truncated WAV without a word; the header still says how long the
    # recording was (an unfinished download or copy).
    whole = (DATA / "en_jfk.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 2])
    for source in (cut, cut.read_bytes()):
        with pytest.raises(AudioError, match=r"cut short: its header announces 11\.00 s"):
            load_audio(source)
        with pytest.raises(AudioError, match="cut short"):
            next(stream_audio(source))
    # Writers that stream leave the size unknown (0xFFFFFFFF): read what is there.
    unknown = bytearray(whole[: len(whole) // 2])
    data_at = unknown.index(b"data") + 4
    unknown[data_at : data_at + 4] = b"\xff\xff\xff\xff"
    assert 5.4 < load_audio(bytes(unknown)).shape[0] / 16000 < 5.6
    assert load_audio(DATA / "en_jfk.wav").shape[0] == 176000
