"""Audio for Whisper: decoding, resampling, streaming and log-mel features.

Two feature paths compute the same log-mel spectrogram as OpenAI Whisper's `log_mel_spectrogram`
(periodic Hann window of 400 samples, hop 160, centred frames with reflect padding, the last frame
dropped, Slaney mel filterbank, `log10` floored at `1e-10`, dynamic range clamped to 8 decades,
then `(x + 4) / 4`):

- `log_mel_spectrogram`, vectorised NumPy, for any length of audio (whole-file features);
- `WhisperAudioConverter`, a Keras layer written with `keras.ops` only, for fixed 30 s windows
  (any backend; jit-compilable).

Both return **time-major** features, `(frames, num_mels)`, the layout of keras-hub; OpenAI and
Hugging Face return `(num_mels, frames)`.

Decoding goes through `soundfile` (WAV, FLAC, OGG, MP3, AIFF, ...) and falls back to the `ffmpeg`
program for other containers. Resampling uses `soxr`. Everything that goes wrong with the input is
raised as `keras_whisper.errors.AudioError` with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import numbers
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from typing import IO, Any

import keras
import numpy as np
import soundfile
import soxr
from keras import ops

from keras_whisper.errors import AudioError
from keras_whisper.preset_io import PresetComponent

# Whisper's fixed front end (openai/whisper `audio.py`).
SAMPLE_RATE = 16000  # Hz
N_FFT = 400  # samples per STFT frame (25 ms)
HOP_LENGTH = 160  # samples between frames (10 ms)
CHUNK_LENGTH = 30  # seconds per model window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # the encoder's first conv has stride 2
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames per second (10 ms)
TOKENS_PER_SECOND = SAMPLE_RATE // N_SAMPLES_PER_TOKEN  # 50 positions per second (20 ms)

# `soxr` quality of every resampling done here ("HQ": 20-bit precision, flat to 0.95 * Nyquist).
RESAMPLE_QUALITY = "HQ"

_LOG_FLOOR = 1e-10  # power floor before log10
_DYNAMIC_RANGE = 8.0  # decades kept below the maximum
_READ_BLOCK_SECONDS = 4.0  # input read per block while streaming
_STFT_BLOCK_FRAMES = 4096  # frames transformed at once by the NumPy path (bounds memory)

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | np.ndarray

__all__ = [
    "CHUNK_LENGTH",
    "FRAMES_PER_SECOND",
    "HOP_LENGTH",
    "N_FFT",
    "N_FRAMES",
    "N_SAMPLES",
    "N_SAMPLES_PER_TOKEN",
    "SAMPLE_RATE",
    "TOKENS_PER_SECOND",
    "AudioFileNotFoundError",
    "WhisperAudioConverter",
    "load_audio",
    "log_mel_spectrogram",
    "mel_filters",
    "pad_or_trim",
    "resample",
    "stream_audio",
]


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """An audio path that does not exist (an `AudioError` and a `FileNotFoundError`)."""


_FFMPEG_HINT = (
    "soundfile reads WAV, FLAC, OGG (Vorbis/Opus), MP3 and AIFF; other formats (M4A/AAC, MP4, "
    "WebM, ...) are decoded with the `ffmpeg` program. Install ffmpeg (`apt-get install ffmpeg`, "
    "`brew install ffmpeg` or `conda install -c conda-forge ffmpeg`) or convert the audio to "
    "WAV or FLAC first."
)


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise AudioError(f"`{name}` must be a positive integer, got {value!r}.")
    if not math.isfinite(value) or value <= 0 or int(value) != value:
        raise AudioError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _is_float_dtype(dtype: np.dtype) -> bool:
    if dtype.kind == "f":
        return True
    # ml_dtypes extension types (bfloat16, float8_*) have kind "V" but are real floating types.
    return dtype.kind == "V" and dtype.name.startswith(("bfloat", "float"))


def _as_mono_float32(audio: Any, name: str = "audio", allow_empty: bool = False) -> np.ndarray:
    """Validates an array of samples and returns it as a 1-D float32 array.

    Integer samples are normalised as soundfile would (int16 / 32768, uint8 centred on 128, ...).
    A 2-D array is `(samples, channels)` and is down-mixed by averaging the channels.
    """
    if isinstance(audio, (str, bytes, bytearray)) or audio is None:
        raise AudioError(f"{name} must be an array of samples, got {type(audio).__name__}.")
    try:
        array = np.asarray(audio)
    except Exception as error:  # objects whose __array__ fails (e.g. a bfloat16 torch tensor)
        raise AudioError(
            f"{name} could not be converted to a NumPy array ({error}); pass a NumPy array, "
            "for example `tensor.float().numpy()`."
        ) from error
    dtype = array.dtype
    if dtype.kind in "iu":
        bits = dtype.itemsize * 8
        scale = float(2 ** (bits - 1))
        offset = scale if dtype.kind == "u" else 0.0
        array = (array.astype(np.float64) - offset) / scale
    elif not _is_float_dtype(dtype):
        raise AudioError(
            f"{name} has dtype {dtype}; audio samples must be floating point (in [-1, 1]) or "
            "integer PCM (int16, int32, uint8, ...)."
        )
    if array.ndim == 2:
        samples, channels = array.shape
        if channels == 0:
            raise AudioError(f"{name} has shape {array.shape}: it has no channels.")
        if samples == 0 and not allow_empty:
            raise AudioError(f"{name} contains no samples.")
        if channels > samples:
            raise AudioError(
                f"{name} has shape {array.shape}, which reads as (samples, channels) with more "
                "channels than samples; pass (samples, channels), e.g. `audio.T` for a "
                "(channels, samples) array."
            )
        array = _downmix(array)
    elif array.ndim != 1:
        raise AudioError(
            f"{name} must be 1-D (samples,) or 2-D (samples, channels); got shape {array.shape}."
        )
    array = np.asarray(array, dtype=np.float32)
    if array.size == 0 and not allow_empty:
        raise AudioError(f"{name} contains no samples.")
    _check_finite(array, name)
    return array


def _downmix(block: np.ndarray) -> np.ndarray:
    """Averages `(samples, channels)` to `(samples,)`, the same way for a block or a whole file."""
    if block.shape[1] == 1:
        return np.asarray(block[:, 0], dtype=np.float32)
    return np.mean(block, axis=1, dtype=np.float64).astype(np.float32)


def _check_finite(array: np.ndarray, name: str) -> None:
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise AudioError(f"{name} contains {bad} NaN or infinite sample(s).")


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


class _Source:
    """A resolved audio source: a path, in-memory bytes, a binary file object or an array."""

    def __init__(self, kind: str, value: Any, name: str):
        self.kind = kind
        self.value = value
        self.name = name


def _resolve_source(source: Any) -> _Source:
    if isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(os.fspath(source))
        if not os.path.exists(path):
            raise AudioFileNotFoundError(f"Audio file not found: {path!r}.")
        if os.path.isdir(path):
            raise AudioError(f"{path!r} is a directory, not an audio file.")
        if os.path.getsize(path) == 0:
            raise AudioError(f"Audio file {path!r} is empty (0 bytes): it contains no samples.")
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise AudioError(f"Audio file {path!r} cannot be opened: {error}.") from error
        return _Source("path", path, repr(path))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise AudioError("The audio bytes are empty: they contain no samples.")
        return _Source("bytes", data, f"<{len(data)} bytes of audio>")
    if hasattr(source, "read"):
        name = f"<file object {getattr(source, 'name', type(source).__name__)!s}>"
        if isinstance(source, io.TextIOBase):
            raise AudioError(f"{name} is opened in text mode; open it with mode 'rb'.")
        seekable = getattr(source, "seekable", None)
        if callable(seekable) and seekable() and hasattr(source, "seek"):
            start = source.tell()
            end = source.seek(0, io.SEEK_END)
            source.seek(start)
            if end is not None and end <= start:
                raise AudioError(
                    f"{name} is empty (no bytes left to read): it contains no samples."
                )
            return _Source("file", source, name)
        data = source.read()  # pipes and sockets: soundfile needs to seek, so buffer them
        if isinstance(data, str):
            raise AudioError(f"{name} is opened in text mode; open it with mode 'rb'.")
        if not data:
            raise AudioError(f"{name} is empty: it contains no samples.")
        return _Source("bytes", bytes(data), name)
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        return _Source("array", source, "audio array")
    raise AudioError(
        f"Unsupported audio source of type {type(source).__name__}; pass a path, bytes, a binary "
        "file object or an array of samples."
    )


def _soundfile_handle(source: _Source) -> Any:
    """What `soundfile.SoundFile` opens for a source (rewound file objects, fresh BytesIO)."""
    if source.kind == "path":
        return source.value
    if source.kind == "bytes":
        return io.BytesIO(source.value)
    return source.value


def _open_soundfile(source: _Source) -> soundfile.SoundFile | None:
    """Opens a source with soundfile, or returns None when libsndfile does not know the format."""
    start = source.value.tell() if source.kind == "file" else None
    try:
        handle = soundfile.SoundFile(_soundfile_handle(source))
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError):
        if start is not None:
            source.value.seek(start)
        return None
    if handle.format == "WAV" and source.kind in ("path", "bytes"):
        try:
            _check_wav_complete(source)
        except AudioError:
            handle.close()
            raise
    return handle


# A WAV header's data size when the writer did not know it (streamed or unfinished files).
_UNKNOWN_WAV_SIZES = (0, 0xFFFFFFFF)


def _check_wav_complete(source: _Source) -> None:
    """`AudioError` if a RIFF/WAVE file holds less audio than its header announces.

    libsndfile reads what is there without a word, so a download or copy cut short would
    be transcribed as if it were the whole recording.
    """
    if source.kind == "path":
        with open(source.value, "rb") as f:
            head = f.read(1 << 16)
            size = os.fstat(f.fileno()).st_size
    else:
        head, size = source.value[: 1 << 16], len(source.value)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    offset, block_align, rate = 12, 0, 0
    while offset + 8 <= len(head):
        chunk, length = (
            head[offset : offset + 4],
            int.from_bytes(head[offset + 4 : offset + 8], "little"),
        )
        if chunk == b"fmt " and offset + 24 <= len(head):
            rate = int.from_bytes(head[offset + 12 : offset + 16], "little")
            block_align = int.from_bytes(head[offset + 20 : offset + 22], "little")
        if chunk == b"data":
            if length in _UNKNOWN_WAV_SIZES or not block_align or not rate:
                return
            present = size - (offset + 8)
            if present < length:
                announced = length / block_align / rate
                held = max(present, 0) / block_align / rate
                raise AudioError(
                    f"{source.name} is cut short: its header announces {announced:.2f} s of "
                    f"audio and the file holds {held:.2f} s (an unfinished download or copy?). "
                    "Get the whole file again, or rewrite what is there as a new file (e.g. "
                    "`ffmpeg -i cut.wav whole.wav`) to transcribe it."
                )
            return
        offset += 8 + length + (length & 1)


def _read_error(source: _Source, error: Exception) -> AudioError:
    return AudioError(
        f"Could not read {source.name}: {error}. The file may be truncated or corrupt."
    )


# ---------------------------------------------------------------------------------------------
# ffmpeg fallback
# ---------------------------------------------------------------------------------------------


def _ffmpeg_or_raise(source: _Source) -> str:
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise AudioError(
            f"Could not decode {source.name}: it is not in a format soundfile (libsndfile) "
            f"recognises, and the `ffmpeg` program was not found on PATH. {_FFMPEG_HINT}"
        )
    return executable


def _ffmpeg_command(executable: str, input_arg: str, sampling_rate: int) -> list[str]:
    # OpenAI's command line, plus quiet logging so that stderr stays small.
    return [
        executable,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-threads",
        "0",
        "-i",
        input_arg,
        "-f",
        "s16le",
        "-ac",
        "1",
        "-acodec",
        "pcm_s16le",
        "-ar",
        str(sampling_rate),
        "-",
    ]


def _ffmpeg_error(source: _Source, returncode: int, stderr: bytes) -> AudioError:
    message = stderr.decode("utf-8", "replace").strip()
    tail = "\n".join(message.splitlines()[-5:]) or "no message"
    return AudioError(
        f"ffmpeg could not decode {source.name} (exit code {returncode}); it may not be audio "
        f"or may be corrupt. ffmpeg said: {tail}"
    )


def _input_chunks(source: _Source, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    if source.kind == "bytes":
        for start in range(0, len(source.value), chunk_bytes):
            yield source.value[start : start + chunk_bytes]
    else:
        while True:
            chunk = source.value.read(chunk_bytes)
            if not chunk:
                return
            yield bytes(chunk)


def _pcm16_to_float32(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)


@contextlib.contextmanager
def _ffmpeg_input(source: _Source) -> Iterator[str]:
    """A path ffmpeg can read: the file itself, or a temporary copy of bytes / a file object.

    ffmpeg cannot decode every container from a pipe (MP4/M4A keep their index at the end and
    need to seek), so in-memory audio goes through a temporary file, written in chunks.
    """
    if source.kind == "path":
        yield source.value
        return
    descriptor, path = tempfile.mkstemp(prefix="keras_whisper_", suffix=".audio")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            for chunk in _input_chunks(source):
                handle.write(chunk)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _ffmpeg_load(source: _Source, sampling_rate: int) -> np.ndarray:
    executable = _ffmpeg_or_raise(source)
    with _ffmpeg_input(source) as path:
        command = _ffmpeg_command(executable, path, sampling_rate)
        try:
            result = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, check=False
            )
        except OSError as error:
            raise AudioError(f"Could not run ffmpeg ({executable}): {error}.") from error
    if result.returncode != 0:
        raise _ffmpeg_error(source, result.returncode, result.stderr)
    return _pcm16_to_float32(result.stdout[: len(result.stdout) // 2 * 2])


def _ffmpeg_blocks(source: _Source, sampling_rate: int, block_samples: int) -> Iterator[np.ndarray]:
    executable = _ffmpeg_or_raise(source)
    with _ffmpeg_input(source) as path, tempfile.TemporaryFile() as stderr:
        command = _ffmpeg_command(executable, path, sampling_rate)
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
            )
        except OSError as error:
            raise AudioError(f"Could not run ffmpeg ({executable}): {error}.") from error
        try:
            leftover = b""
            while True:
                chunk = process.stdout.read(2 * block_samples)
                if not chunk:
                    break
                chunk = leftover + chunk
                usable = len(chunk) // 2 * 2
                leftover = chunk[usable:]
                if usable:
                    yield _pcm16_to_float32(chunk[:usable])
            returncode = process.wait()
            if returncode != 0:
                stderr.seek(0)
                raise _ffmpeg_error(source, returncode, stderr.read())
        finally:
            if process.poll() is None:  # the consumer stopped early
                process.kill()
            process.wait()
            process.stdout.close()


# ---------------------------------------------------------------------------------------------
# Public decoding API
# ---------------------------------------------------------------------------------------------


def resample(audio: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    """Resamples mono audio with soxr (quality `RESAMPLE_QUALITY`, "HQ").

    Args:
        audio: 1-D array of samples (or `(samples, channels)`, down-mixed first).
        orig_sampling_rate: int. The sampling rate of `audio` in Hz.
        target_sampling_rate: int. The sampling rate wanted, in Hz.

    Returns:
        A 1-D float32 array of about `len(audio) * target / orig` samples. The same array (as
        float32) when the rates are equal.

    Examples:
    ```python
    audio_16k = keras_whisper.audio.resample(audio_48k, 48000, 16000)
    ```
    """
    orig = _check_positive_int(orig_sampling_rate, "orig_sampling_rate")
    target = _check_positive_int(target_sampling_rate, "target_sampling_rate")
    audio = _as_mono_float32(audio, allow_empty=True)
    if orig == target or audio.size == 0:
        return audio
    return soxr.resample(audio, orig, target, quality=RESAMPLE_QUALITY).astype(
        np.float32, copy=False
    )


def load_audio(source: AudioSource, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decodes audio into mono float32 samples at `sampling_rate`.

    Files and bytes in a format libsndfile knows (WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...) are
    read with `soundfile`, down-mixed by averaging the channels, then resampled with `soxr` (quality
    "HQ") when their rate differs. Any other container (M4A, MP4, WebM, ...) is decoded by the
    `ffmpeg` program, like OpenAI Whisper does (`ffmpeg -nostdin -threads 0 -i FILE -f s16le -ac 1
    -acodec pcm_s16le -ar SR -`, samples divided by 32768); ffmpeg then does the down-mix and the
    resampling. Bytes and file objects reach ffmpeg through a temporary file, since containers
    such as MP4 cannot be decoded from a pipe.

    Empty audio is an error: a file, a byte string or an array with no samples raises
    `AudioError` ("contains no samples"). To get features for silence, pass zeros.

    Args:
        source: the audio. A path (`str` or `os.PathLike`); the encoded file as `bytes`; a binary
            file object (read from its current position; non-seekable streams are read into
            memory); or an array of samples, taken to be at `sampling_rate` already and not
            resampled. Arrays are 1-D `(samples,)` or 2-D `(samples, channels)` (down-mixed),
            floating point (float16, bfloat16, float32, float64: cast to float32) or integer
            PCM (normalised like soundfile: int16 / 32768, int32 / 2**31, uint8 centred on 128).
        sampling_rate: int. The sampling rate of the result in Hz. Defaults to 16000.

    Returns:
        A 1-D float32 NumPy array of samples, nominally in [-1, 1].

    Raises:
        AudioError: the audio cannot be read or decoded, contains no samples, contains NaN or
            infinite samples, or an array has an unsupported dtype or rank. A missing path
            raises `AudioFileNotFoundError`, which is also a `FileNotFoundError`.

    Examples:
    ```python
    audio = keras_whisper.audio.load_audio("speech.flac")
    audio = keras_whisper.audio.load_audio(open("speech.mp3", "rb").read())
    audio = keras_whisper.audio.load_audio(int16_samples)  # already at 16 kHz
    ```
    """
    sampling_rate = _check_positive_int(sampling_rate, "sampling_rate")
    resolved = _resolve_source(source)
    if resolved.kind == "array":
        return _as_mono_float32(resolved.value)
    handle = _open_soundfile(resolved)
    if handle is None:
        audio = _ffmpeg_load(resolved, sampling_rate)
        if audio.size == 0:
            raise AudioError(f"{resolved.name} contains no samples.")
        _check_finite(audio, resolved.name)
        return audio
    with handle:
        orig_rate = handle.samplerate
        try:
            data = handle.read(dtype="float32", always_2d=True)
        except (soundfile.SoundFileError, RuntimeError) as error:
            raise _read_error(resolved, error) from error
    if data.shape[0] == 0:
        raise AudioError(f"{resolved.name} contains no samples.")
    audio = _downmix(data)
    del data
    _check_finite(audio, resolved.name)
    if orig_rate != sampling_rate:
        audio = soxr.resample(audio, orig_rate, sampling_rate, quality=RESAMPLE_QUALITY)
        if audio.size == 0:
            raise AudioError(f"{resolved.name} contains no samples at {sampling_rate} Hz.")
    return np.asarray(audio, dtype=np.float32)


def _decoded_blocks(
    resolved: _Source, sampling_rate: int, block_seconds: float
) -> Iterator[np.ndarray]:
    """Mono float32 blocks at `sampling_rate`, a few seconds each, decoded as they are read."""
    handle = _open_soundfile(resolved)
    if handle is None:
        yield from _ffmpeg_blocks(resolved, sampling_rate, int(block_seconds * sampling_rate))
        return
    with handle:
        orig_rate = handle.samplerate
        block_frames = max(1, int(block_seconds * orig_rate))
        stream = None
        if orig_rate != sampling_rate:
            stream = soxr.ResampleStream(
                orig_rate, sampling_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        while True:
            try:
                block = handle.read(block_frames, dtype="float32", always_2d=True)
            except (soundfile.SoundFileError, RuntimeError) as error:
                raise _read_error(resolved, error) from error
            if block.shape[0] == 0:
                break
            mono = _downmix(block)
            _check_finite(mono, resolved.name)
            yield mono if stream is None else stream.resample_chunk(mono)
        if stream is not None:
            yield stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def _rewindow(blocks: Iterable[np.ndarray], window: int, name: str) -> Iterator[np.ndarray]:
    buffer = np.empty(window, dtype=np.float32)
    filled = 0
    produced = False
    for block in blocks:
        position = 0
        while position < block.size:
            count = min(window - filled, block.size - position)
            buffer[filled : filled + count] = block[position : position + count]
            filled += count
            position += count
            if filled == window:
                produced = True
                yield buffer
                buffer = np.empty(window, dtype=np.float32)
                filled = 0
    if filled:
        produced = True
        yield buffer[:filled].copy()
    if not produced:
        raise AudioError(f"{name} contains no samples.")


def stream_audio(
    source: AudioSource, window_seconds: float = 30.0, sampling_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """Decodes audio window by window, never holding the whole file.

    Files are read in blocks of a few seconds with `soundfile`, down-mixed and resampled with a
    streaming `soxr.ResampleStream` (the same filter as `load_audio`), and cut into consecutive
    windows; formats that need `ffmpeg` are read from its output pipe. Memory stays bounded by a
    window and a block whatever the length of the file, so hour-long recordings stream fine.
    The windows concatenated equal `load_audio(source, sampling_rate)`: bit for bit for PCM
    files, resampled or not (soxr's stream and one-shot resampling agree exactly), and to the
    last float32 bit for MP3 (libsndfile's block decoding rounds slightly differently).

    The source is checked at once (a missing path raises here); decoding errors, including NaN
    samples or an empty file, are raised while iterating.

    Args:
        source: the audio, as for `load_audio` (path, bytes, binary file object or array).
        window_seconds: float. The length of each window in seconds. Defaults to 30.0.
        sampling_rate: int. The sampling rate of the windows in Hz. Defaults to 16000.

    Returns:
        An iterator of 1-D float32 arrays of `round(window_seconds * sampling_rate)` samples each;
        the last window holds what is left and is shorter (it is not padded).

    Examples:
    ```python
    for window in keras_whisper.audio.stream_audio("lecture.flac"):
        features = converter(window)  # pads the last window to 30 s
    ```
    """
    sampling_rate = _check_positive_int(sampling_rate, "sampling_rate")
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, numbers.Real):
        raise AudioError(f"`window_seconds` must be a positive number, got {window_seconds!r}.")
    window = int(round(window_seconds * sampling_rate)) if math.isfinite(window_seconds) else 0
    if window < 1:
        raise AudioError(
            f"`window_seconds` must be positive and hold at least one sample, got {window_seconds!r}."
        )
    resolved = _resolve_source(source)
    if resolved.kind == "array":
        audio = _as_mono_float32(resolved.value)
        return (audio[start : start + window].copy() for start in range(0, audio.size, window))
    blocks = _decoded_blocks(resolved, sampling_rate, _READ_BLOCK_SECONDS)
    return _rewindow(blocks, window, resolved.name)


def pad_or_trim(array: np.ndarray, length: int = N_SAMPLES, *, axis: int = -1) -> np.ndarray:
    """Zero-pads (at the end) or truncates an array to `length` along `axis`.

    Use `length=N_SAMPLES` (the default) on samples and `length=N_FRAMES, axis=0` on our
    time-major features.

    Args:
        array: a NumPy array (or anything `np.asarray` accepts).
        length: int. The size wanted along `axis`. Defaults to `N_SAMPLES` (480000).
        axis: int. The axis to pad or trim. Defaults to -1.

    Returns:
        A NumPy array with `array.shape[axis] == length` (the input itself when it already fits).

    Examples:
    ```python
    window = pad_or_trim(audio)  # 30 s of samples
    mel = pad_or_trim(mel, N_FRAMES, axis=0)  # 3000 frames
    ```
    """
    array = np.asarray(array)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise AudioError(f"`length` must be a non-negative integer, got {length!r}.")
    if array.ndim == 0:
        raise AudioError("pad_or_trim needs an array with at least one dimension.")
    if not -array.ndim <= axis < array.ndim:
        raise AudioError(f"axis {axis} is out of range for an array of shape {array.shape}.")
    size = array.shape[axis]
    if size > length:
        return np.take(array, np.arange(length), axis=axis)
    if size < length:
        widths = [(0, 0)] * array.ndim
        widths[axis] = (0, length - size)
        return np.pad(array, widths)
    return array


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    frequencies = np.asarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = frequencies / f_sp
    safe = np.maximum(frequencies, min_log_hz)
    logarithmic = min_log_mel + np.log(safe / min_log_hz) / logstep
    return np.where(frequencies >= min_log_hz, logarithmic, linear)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = mels * f_sp
    logarithmic = min_log_hz * np.exp(logstep * (np.maximum(mels, min_log_mel) - min_log_mel))
    return np.where(mels >= min_log_mel, logarithmic, linear)


@functools.lru_cache(maxsize=16)
def mel_filters(num_mels: int, sampling_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """The Slaney-style mel filterbank of Whisper, computed in float64.

    The same matrix as `librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels,
    htk=False, norm="slaney")` (triangles between mel-spaced edges from 0 Hz to Nyquist on
    Slaney's mel scale, each scaled to unit area `2 / (f_high - f_low)`), which is what OpenAI
    ships as `mel_filters.npz`. Results are cached and read-only.

    Args:
        num_mels: int. The number of mel bands: 80 for most Whisper models, 128 for large-v3.
        sampling_rate: int. The sampling rate in Hz. Defaults to 16000.
        n_fft: int. The FFT size. Defaults to 400.

    Returns:
        A read-only float64 array of shape `(num_mels, n_fft // 2 + 1)`.

    Examples:
    ```python
    filters = keras_whisper.audio.mel_filters(80)  # (80, 201)
    ```
    """
    num_mels = _check_positive_int(num_mels, "num_mels")
    sampling_rate = _check_positive_int(sampling_rate, "sampling_rate")
    n_fft = _check_positive_int(n_fft, "n_fft")
    fft_frequencies = np.arange(n_fft // 2 + 1, dtype=np.float64) * (sampling_rate / n_fft)
    mel_edges = np.linspace(0.0, float(_hz_to_mel(sampling_rate / 2.0)), num_mels + 2)
    hz_edges = _mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_frequencies[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=16)
def _filter_bands(num_mels: int, sampling_rate: int, n_fft: int) -> tuple:
    """Each mel filter as `(first_bin, weights)`: its nonzero span (a triangle covers a few
    adjacent FFT bins; every bin lies in at most two filters)."""
    bands = []
    for row in mel_filters(num_mels, sampling_rate, n_fft):
        nonzero = np.flatnonzero(row)
        first = int(nonzero[0]) if nonzero.size else 0
        last = int(nonzero[-1]) + 1 if nonzero.size else 0
        weights = np.array(row[first:last])[:, None]
        weights.setflags(write=False)
        bands.append((first, weights))
    return tuple(bands)


def _apply_filterbank(power: np.ndarray, bands: tuple, out: np.ndarray) -> None:
    """`out = power @ filters.T` (`power` `(frames, bins)`), one filter span at a time.

    Not a BLAS product: after one, OpenBLAS keeps its worker threads spinning for a while,
    and on a 2-core machine they took a core from the encoder that runs next (tiny.en's
    encoder 172 -> 216 ms a window). The spans are short (at most 14 of 201 bins for 80
    mels), so this costs about 1 ms more per 30 s of audio.
    """
    transposed = np.ascontiguousarray(power.T)
    for m, (first, weights) in enumerate(bands):
        span = transposed[first : first + weights.shape[0]]
        out[:, m] = np.sum(span * weights, axis=0) if weights.size else 0.0


@functools.lru_cache(maxsize=8)
def _hann_window(length: int) -> np.ndarray:
    """The periodic Hann window (`torch.hann_window(length)`, `scipy.signal.get_window`)."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length, dtype=np.float64) / length)
    window.setflags(write=False)
    return window


def _normalise_log_mel(mel: np.ndarray) -> np.ndarray:
    """OpenAI's log, dynamic-range floor and scaling, in place in `mel` (float64)."""
    log_spec = np.log10(np.maximum(mel, _LOG_FLOOR, out=mel), out=mel)
    np.maximum(log_spec, log_spec.max() - _DYNAMIC_RANGE, out=log_spec)
    log_spec += 4.0
    log_spec /= 4.0
    return log_spec.astype(np.float32)


def log_mel_spectrogram(
    audio: np.ndarray | str | os.PathLike,
    num_mels: int = 80,
    padding: int = 0,
    *,
    n_fft: int = N_FFT,
    hop_length: int = HOP_LENGTH,
    sampling_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Whisper's log-mel spectrogram in NumPy, for audio of any length, time-major.

    Computes OpenAI's `log_mel_spectrogram(audio, n_mels, padding)`: `padding` zeros are appended,
    the signal is reflect-padded by `n_fft // 2` on both sides, framed every `hop_length` samples
    with a periodic Hann window, the last frame is dropped, then `|rfft|**2` goes through the mel
    filterbank, `log10(max(x, 1e-10))`, `max(x, x.max() - 8)` over the whole result and
    `(x + 4) / 4`. The transform runs in float64 in blocks of frames, so memory stays
    proportional to the output.

    OpenAI's `transcribe()` uses `padding=N_SAMPLES` for whole-file features: the max - 8 floor
    then uses the global maximum of the file, and `content_frames = frames - N_FRAMES`.

    Args:
        audio: 1-D float samples at `sampling_rate` (validated as in `load_audio`), or a path
            (decoded with `load_audio`).
        num_mels: int. Mel bands, 80 or 128. Defaults to 80.
        padding: int. Zero samples appended before the transform. Defaults to 0.
        n_fft: int. FFT size. Defaults to 400.
        hop_length: int. Samples between frames. Defaults to 160.
        sampling_rate: int. Sampling rate in Hz (for the filterbank). Defaults to 16000.

    Returns:
        A float32 array of shape `((len(audio) + padding) // hop_length, num_mels)`.

    Raises:
        AudioError: the audio is invalid or shorter than `n_fft // 2 + 1` samples after padding.

    Examples:
    ```python
    mel = log_mel_spectrogram(audio)  # (len(audio) // 160, 80)
    mel = log_mel_spectrogram(audio, padding=N_SAMPLES)  # whole file, OpenAI transcribe style
    ```
    """
    if isinstance(audio, (str, os.PathLike)):
        audio = load_audio(audio, sampling_rate)
    audio = _as_mono_float32(audio, allow_empty=True)
    n_fft = _check_positive_int(n_fft, "n_fft")
    hop_length = _check_positive_int(hop_length, "hop_length")
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise AudioError(f"`padding` must be a non-negative integer, got {padding!r}.")
    half = n_fft // 2
    length = audio.size + int(padding)  # after the zeros
    num_frames = length // hop_length
    if length <= half or num_frames < 1:
        raise AudioError(
            f"Audio of {length} samples (after padding) is too short for a log-mel "
            f"spectrogram: it needs at least {max(half + 1, hop_length)} samples. Pad it (e.g. "
            "`padding=N_SAMPLES` or `pad_or_trim`)."
        )
    bands = _filter_bands(num_mels, sampling_rate, n_fft)
    window = _hann_window(n_fft)
    # The zero-extended signal reflect-padded by `half` on both sides, built in one float32
    # buffer (`np.pad(..., mode="reflect")`'s values; each block of frames is widened to
    # float64 as it is windowed): one copy of a long file instead of three in float64.
    padded = np.zeros(length + 2 * half, dtype=np.float32)
    padded[half : half + audio.size] = audio
    padded[:half] = padded[2 * half : half : -1]
    padded[half + length :] = padded[half + length - 2 : length - 2 : -1]
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:num_frames]
    mel = np.empty((num_frames, len(bands)), dtype=np.float64)
    for start in range(0, num_frames, _STFT_BLOCK_FRAMES):
        stop = min(start + _STFT_BLOCK_FRAMES, num_frames)
        spectrum = np.fft.rfft(frames[start:stop] * window, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2
        _apply_filterbank(power, bands, mel[start:stop])
    return _normalise_log_mel(mel)


# ---------------------------------------------------------------------------------------------
# Keras layer
# ---------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="keras_whisper")
class WhisperAudioConverter(PresetComponent, keras.layers.Layer):
    """Whisper's audio front end as a Keras layer: waveforms to log-mel features.

    Each waveform is zero-padded at the end or truncated to `max_audio_length` seconds, then turned
    into Whisper's log-mel spectrogram (periodic Hann window, reflect padding, last frame dropped,
    Slaney mel filterbank, log10, dynamic range clamped to 8 decades below each example's maximum,
    `(x + 4) / 4`). This is what OpenAI's `log_mel_spectrogram(pad_or_trim(audio))` gives, in
    keras-hub's time-major layout. The computation uses `keras.ops` only, in float32, so the layer
    runs and compiles on every backend; the output is cast to the layer's compute dtype. Samples
    that are NaN or infinite give NaN features (validate with `load_audio` first).

    The constructor and `get_config` are those of keras-hub's `WhisperAudioConverter`, with two
    deliberate differences: the filterbank spans 0 Hz to `sampling_rate / 2` (keras-hub hard-codes
    8 kHz, which is only right at 16 kHz; at 16 kHz the two agree), and `audio_shape()` returns the
    feature shape `(num_frames, num_mels)` = `(3000, 80)` (keras-hub returns
    `(max_audio_length, num_mels)` = `(30, 80)`, which is not a shape of anything).

    Args:
        num_mels: int. Mel bands, 80 (or 128 for large-v3). Defaults to 80.
        num_fft_bins: int. The FFT size (frame length) in samples. Defaults to 400.
        stride: int. Samples between frames. Defaults to 160.
        sampling_rate: int. The sampling rate of the input in Hz. Defaults to 16000.
        max_audio_length: int. Seconds per window; inputs are padded or trimmed to
            `max_audio_length * sampling_rate` samples. Defaults to 30.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: float waveforms at `sampling_rate`, `(samples,)` or `(batch, samples)`, or a
            list of 1-D waveforms of different lengths (a ragged batch, like keras-hub); any
            float dtype (computed in float32). Integer PCM is refused: use `load_audio` first.

    Returns:
        Features of shape `(num_frames, num_mels)` or `(batch, num_frames, num_mels)` with
        `num_frames = max_audio_length * sampling_rate // stride` (3000).

    Examples:
    ```python
    converter = keras_whisper.audio.WhisperAudioConverter()
    features = converter(load_audio("speech.wav"))  # (3000, 80)
    features = converter(np.zeros((4, 16000), "float32"))  # (4, 3000, 80)
    whole = converter.whole_file_features(load_audio("long.wav"))  # OpenAI transcribe() style
    ```
    """

    preset_file = "audio_converter.json"
    keras_hub_keys = (
        "name",
        "num_mels",
        "num_fft_bins",
        "stride",
        "sampling_rate",
        "max_audio_length",
    )

    def __init__(
        self,
        num_mels: int = 80,
        num_fft_bins: int = 400,
        stride: int = 160,
        sampling_rate: int = 16000,
        max_audio_length: int = 30,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        # Waveforms are cast to float32 in `call`, whatever the dtype policy.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True
        self.built = True
        self.num_mels = _check_positive_int(num_mels, "num_mels")
        self.num_fft_bins = _check_positive_int(num_fft_bins, "num_fft_bins")
        self.stride = _check_positive_int(stride, "stride")
        self.sampling_rate = _check_positive_int(sampling_rate, "sampling_rate")
        if isinstance(max_audio_length, bool) or not isinstance(max_audio_length, numbers.Real):
            raise AudioError(f"`max_audio_length` must be positive, got {max_audio_length!r}.")
        if not (math.isfinite(max_audio_length) and max_audio_length > 0):
            raise AudioError(f"`max_audio_length` must be positive, got {max_audio_length!r}.")
        self.max_audio_length = max_audio_length
        self.num_samples = int(round(max_audio_length * sampling_rate))
        self.num_frames = self.num_samples // self.stride
        if self.num_samples <= self.num_fft_bins // 2 or self.num_frames < 1:
            raise AudioError(
                f"max_audio_length * sampling_rate = {self.num_samples} samples is too short for "
                f"frames of {self.num_fft_bins} samples every {self.stride}."
            )
        # Constants, not weights: nothing to save, nothing to train.
        self._filters = np.ascontiguousarray(
            mel_filters(self.num_mels, self.sampling_rate, self.num_fft_bins).T, dtype=np.float32
        )
        self._window = _hann_window(self.num_fft_bins).astype(np.float32)

    def audio_shape(self) -> tuple[int, int]:
        """The shape of one example's features, `(num_frames, num_mels)`, e.g. `(3000, 80)`."""
        return (self.num_frames, self.num_mels)

    def _pad_or_trim(self, waveforms: Any) -> Any:
        length = waveforms.shape[-1]
        if length is None:  # unknown until run time (TF graphs): pad generously, then slice
            waveforms = ops.pad(waveforms, [[0, 0], [0, self.num_samples]])
            return waveforms[:, : self.num_samples]
        if length > self.num_samples:
            return waveforms[:, : self.num_samples]
        if length < self.num_samples:
            return ops.pad(waveforms, [[0, 0], [0, self.num_samples - length]])
        return waveforms

    def _frames(self, padded: Any) -> Any:
        """Frames `(batch, num_frames, n_fft)` by reshape and shifted slices (no gather)."""
        hop, n_fft, count = self.stride, self.num_fft_bins, self.num_frames
        shifts = -(-n_fft // hop)  # ceil(n_fft / hop)
        rows = count + shifts - 1  # fits: rows * hop < num_samples + n_fft
        chunks = ops.reshape(padded[:, : rows * hop], (-1, rows, hop))
        frames = ops.concatenate([chunks[:, k : k + count, :] for k in range(shifts)], axis=-1)
        return frames[:, :, :n_fft]

    def _stack_ragged(self, rows: list | tuple) -> np.ndarray | None:
        """A list of 1-D waveforms of any lengths, padded or trimmed and stacked (or None)."""
        arrays = [np.asarray(ops.convert_to_numpy(row)) for row in rows]
        if not arrays or any(array.ndim != 1 for array in arrays):
            return None  # a plain list of samples, or something `convert_to_tensor` will judge
        for array in arrays:
            if not _is_float_dtype(array.dtype):
                raise AudioError(
                    f"WhisperAudioConverter needs float waveforms, got dtype {array.dtype}; "
                    "decode integer PCM with `load_audio` (or divide int16 samples by 32768)."
                )
        return np.stack(
            [pad_or_trim(array.astype(np.float32), self.num_samples) for array in arrays]
        )

    def call(self, inputs: Any) -> Any:
        if isinstance(inputs, (list, tuple)):
            stacked = self._stack_ragged(inputs)
            inputs = stacked if stacked is not None else inputs
        waveforms = ops.convert_to_tensor(inputs)
        dtype = keras.backend.standardize_dtype(waveforms.dtype)
        if "int" in dtype or dtype == "bool" or "complex" in dtype:
            raise AudioError(
                f"WhisperAudioConverter needs float waveforms, got dtype {dtype}; decode integer "
                "PCM with `load_audio` (or divide int16 samples by 32768)."
            )
        rank = len(waveforms.shape)
        if rank not in (1, 2):
            raise AudioError(
                f"WhisperAudioConverter takes (samples,) or (batch, samples), got shape "
                f"{tuple(waveforms.shape)}."
            )
        waveforms = ops.cast(waveforms, "float32")
        if rank == 1:
            waveforms = waveforms[None, :]
        waveforms = self._pad_or_trim(waveforms)
        half = self.num_fft_bins // 2
        padded = ops.pad(waveforms, [[0, 0], [half, half]], mode="reflect")
        frames = self._frames(padded) * ops.convert_to_tensor(self._window)
        real, imag = ops.rfft(frames)
        power = real * real + imag * imag
        mel = ops.matmul(power, ops.convert_to_tensor(self._filters))
        log_spec = ops.log10(ops.maximum(mel, _LOG_FLOOR))
        peak = ops.max(log_spec, axis=(1, 2), keepdims=True)
        log_spec = ops.maximum(log_spec, peak - _DYNAMIC_RANGE)
        features = (log_spec + 4.0) / 4.0
        if rank == 1:
            features = features[0]
        return ops.cast(features, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[:-1]) + (self.num_frames, self.num_mels)

    def compute_output_spec(self, inputs: Any) -> keras.KerasTensor:
        shape = self.compute_output_shape(tuple(inputs.shape))
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def whole_file_features(self, audio: np.ndarray) -> np.ndarray:
        """Features of a whole recording, normalised over the whole file (NumPy).

        OpenAI's `transcribe()` front end: `log_mel_spectrogram(audio, padding=N_SAMPLES)`, one
        window's worth of zeros appended and the max - 8 floor taken from the file's global
        maximum. Slice windows of `num_frames` frames from it; the frames that hold audio are
        `content_frames = features.shape[0] - num_frames`.

        Args:
            audio: 1-D float samples at `sampling_rate` (or `(samples, channels)`), any length.

        Returns:
            A float32 array `((len(audio) + num_samples) // stride, num_mels)`.

        Examples:
        ```python
        mel = converter.whole_file_features(load_audio("podcast.mp3"))
        content_frames = mel.shape[0] - converter.num_frames
        ```
        """
        return log_mel_spectrogram(
            audio,
            self.num_mels,
            padding=self.num_samples,
            n_fft=self.num_fft_bins,
            hop_length=self.stride,
            sampling_rate=self.sampling_rate,
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "num_mels": self.num_mels,
                "num_fft_bins": self.num_fft_bins,
                "stride": self.stride,
                "sampling_rate": self.sampling_rate,
                "max_audio_length": self.max_audio_length,
            }
        )
        return config
