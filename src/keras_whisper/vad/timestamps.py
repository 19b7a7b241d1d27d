"""Speech timestamps from Silero VAD probabilities, faster-whisper's way.

`get_speech_timestamps` turns the per-chunk speech probabilities (one per 512 samples) into
speech segments with the options and the algorithm of faster-whisper's `VadOptions` and
`get_speech_timestamps` (`faster_whisper/vad.py`, itself adapted from silero-vad):

- a segment opens at the first chunk whose probability is `>= threshold` and closes once the
  probability has stayed `< neg_threshold` (default `threshold - 0.15`, at least 0.01) for
  `min_silence_duration_ms`; the segment ends where that silence began;
- segments of `min_speech_duration_ms` or less are dropped;
- a segment that grows past `max_speech_duration_s` (less one chunk and two paddings) is cut at
  the start of the last silence longer than 98 ms if there was one, else right there;
- finally every segment grows by `speech_pad_ms` on each side, clamped to the audio; two
  segments closer than two paddings split the gap between them instead.

`collect_chunks` then gathers the speech into groups of at most `max_duration_s` (30 s for
Whisper's windows; `group_segments` makes the same groups without touching the audio) and
`TimestampMap` maps times on the timeline of the concatenated speech back to the original
audio, like faster-whisper's `collect_chunks` and `SpeechTimestampsMap`.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any

import numpy as np

from keras_whisper.vad.constants import CHUNK_SAMPLES, SAMPLE_RATE

# A segment that reaches the maximum length is cut at a silence longer than this (ms).
_MIN_SILENCE_AT_MAX_SPEECH_MS = 98


@dataclasses.dataclass
class VadOptions:
    """Options of `get_speech_timestamps`; the defaults are faster-whisper's.

    Args:
        threshold: float. A chunk whose speech probability is at least this is speech.
        neg_threshold: float or `None`. Inside speech, only a chunk whose probability is below
            this counts as silence. `None` means `max(threshold - 0.15, 0.01)`.
        min_speech_duration_ms: int. Segments this long or shorter are dropped.
        max_speech_duration_s: float. Segments are cut to at most this long (before padding;
            see the module docstring). `math.inf` never cuts.
        min_silence_duration_ms: int. Silence that closes a segment.
        speech_pad_ms: int. Padding added on each side of every segment.

    Examples:
    ```python
    options = keras_whisper.vad.VadOptions(min_silence_duration_ms=500)
    # For 30-s Whisper windows (faster-whisper's batched pipeline):
    options = keras_whisper.vad.VadOptions(max_speech_duration_s=30)
    ```
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech_duration_ms: int = 0
    max_speech_duration_s: float = math.inf
    min_silence_duration_ms: int = 2000
    speech_pad_ms: int = 400

    def __post_init__(self):
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"`threshold` must be in [0, 1], got {self.threshold}.")
        for name in ("min_speech_duration_ms", "min_silence_duration_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not self.max_speech_duration_s > 0:
            raise ValueError(
                f"`max_speech_duration_s` must be > 0, got {self.max_speech_duration_s}."
            )

    @property
    def resolved_neg_threshold(self) -> float:
        """The silence threshold in use: `neg_threshold`, or `max(threshold - 0.15, 0.01)`."""
        if self.neg_threshold is None:
            return max(self.threshold - 0.15, 0.01)
        return self.neg_threshold


def _options(options: VadOptions | dict | None, overrides: dict) -> VadOptions:
    if options is None:
        options = VadOptions()
    elif isinstance(options, dict):
        options = VadOptions(**options)
    if overrides:
        options = dataclasses.replace(options, **overrides)
    return options


def speech_timestamps_from_probs(
    speech_probs: Any,
    num_samples: int | None = None,
    options: VadOptions | dict | None = None,
    sampling_rate: int = SAMPLE_RATE,
    **overrides,
) -> list[dict[str, int]]:
    """Speech segments from Silero VAD probabilities (faster-whisper's algorithm).

    Args:
        speech_probs: 1-D array of speech probabilities, one per chunk of 512 samples (see
            `SileroVAD.speech_probabilities`).
        num_samples: int. Length of the audio in samples; the last segment ends there and no
            padding goes past it. Defaults to `512 * len(speech_probs)`.
        options: `VadOptions`, a dict of its fields, or `None` for the defaults.
        sampling_rate: int. The rate of the audio the chunks are made of (16000).
        **overrides: fields of `VadOptions` replacing those of `options`.

    Returns:
        A list of `{"start": int, "end": int}` in samples, sorted and not overlapping.

    Examples:
    ```python
    probs = vad.speech_probabilities(audio)
    segments = keras_whisper.vad.speech_timestamps_from_probs(probs, len(audio))
    ```
    """
    options = _options(options, overrides)
    probs = np.asarray(speech_probs).reshape(-1)
    if probs.dtype.kind != "f":
        probs = probs.astype(np.float64)  # float32 stays float32: compared as faster-whisper does
    if num_samples is None:
        num_samples = CHUNK_SAMPLES * len(probs)
    num_samples = int(num_samples)
    window = CHUNK_SAMPLES
    threshold = options.threshold
    neg_threshold = options.resolved_neg_threshold
    min_speech = sampling_rate * options.min_speech_duration_ms / 1000
    pad = sampling_rate * options.speech_pad_ms / 1000
    max_speech = sampling_rate * options.max_speech_duration_s - window - 2 * pad
    min_silence = sampling_rate * options.min_silence_duration_ms / 1000
    min_silence_at_max = sampling_rate * _MIN_SILENCE_AT_MAX_SPEECH_MS / 1000

    segments: list[dict[str, int]] = []
    start: int | None = None  # start of the open segment; None outside speech
    silence_start: int | None = None  # first silent chunk of the current pause
    cut_at: int | None = None  # the last pause longer than 98 ms: where a long segment ends
    resume_at: int | None = None  # first speech after that pause: where the next one starts

    def forget_pause():
        nonlocal silence_start, cut_at, resume_at
        silence_start = cut_at = resume_at = None

    for index, prob in enumerate(probs):
        position = window * index
        is_speech = prob >= threshold
        if is_speech and silence_start is not None:
            silence_start = None  # the pause is over
            if cut_at is not None and (resume_at is None or resume_at < cut_at):
                resume_at = position
        if start is None:
            if is_speech:
                start = position
            continue
        if position - start > max_speech:
            if cut_at is not None:
                segments.append({"start": start, "end": cut_at})
                # Speech resumed after the cut: it opens the next segment.
                start = resume_at if resume_at is not None and resume_at >= cut_at else None
                forget_pause()
            else:
                segments.append({"start": start, "end": position})
                start = None
                forget_pause()
                continue
        if start is not None and prob < neg_threshold:
            if silence_start is None:
                silence_start = position
            if position - silence_start > min_silence_at_max:
                cut_at = silence_start
            if position - silence_start >= min_silence:
                if silence_start - start > min_speech:
                    segments.append({"start": start, "end": silence_start})
                start = None
                forget_pause()
    if start is not None and num_samples - start > min_speech:
        segments.append({"start": start, "end": num_samples})
    return _pad_segments(segments, pad, num_samples)


def _pad_segments(segments: list[dict], pad: float, num_samples: int) -> list[dict[str, int]]:
    """Grows every segment by `pad` samples per side; close neighbours split their gap."""
    for index, segment in enumerate(segments):
        if index == 0:
            segment["start"] = int(max(0, segment["start"] - pad))
        if index + 1 < len(segments):
            following = segments[index + 1]
            gap = following["start"] - segment["end"]
            if gap < 2 * pad:
                segment["end"] += int(gap // 2)
                following["start"] = int(max(0, following["start"] - gap // 2))
            else:
                segment["end"] = int(min(num_samples, segment["end"] + pad))
                following["start"] = int(max(0, following["start"] - pad))
        else:
            segment["end"] = int(min(num_samples, segment["end"] + pad))
    return segments


_DEFAULT_VAD = None


def default_vad():
    """The default `SileroVAD` (`SileroVAD.from_package()`), built once per process.

    `get_speech_timestamps`, `vad_filter=True` and the batched mode share it, so its weights
    are read and its network compiled once, not once per call.

    Returns:
        A built `SileroVAD`.

    Examples:
    ```python
    detector = keras_whisper.vad.default_vad()
    probs = detector.speech_probabilities(audio)
    ```
    """
    global _DEFAULT_VAD
    if _DEFAULT_VAD is None:
        from keras_whisper.vad.model import SileroVAD

        _DEFAULT_VAD = SileroVAD.from_package()
    return _DEFAULT_VAD


def get_speech_timestamps(
    audio: Any,
    options: VadOptions | dict | None = None,
    *,
    vad: Any = None,
    speech_probs: Any = None,
    **overrides,
) -> list[dict[str, int]]:
    """Speech segments of 16 kHz audio, like faster-whisper's `get_speech_timestamps`.

    Args:
        audio: the 16 kHz waveform (1-D array, or anything `keras_whisper.audio.load_audio`
            reads). Only its length is used when `speech_probs` is given.
        options: `VadOptions`, a dict of its fields, or `None` for faster-whisper's defaults
            (threshold 0.5, min_silence_duration_ms 2000, speech_pad_ms 400, no length limit).
        vad: the `SileroVAD` to run; defaults to `SileroVAD.from_package()` (built once).
        speech_probs: probabilities already computed for `audio`; the model is then not run.
        **overrides: fields of `VadOptions` replacing those of `options`.

    Returns:
        A list of `{"start": int, "end": int}` in samples of `audio`.

    Examples:
    ```python
    audio = keras_whisper.audio.load_audio("meeting.mp3")
    segments = keras_whisper.vad.get_speech_timestamps(audio, min_silence_duration_ms=500)
    seconds = [(s["start"] / 16000, s["end"] / 16000) for s in segments]
    ```
    """
    if isinstance(audio, np.ndarray) and audio.ndim == 1:
        waveform = audio
    else:
        from keras_whisper.audio import load_audio

        waveform = load_audio(audio, SAMPLE_RATE)
    if speech_probs is None:
        speech_probs = (vad or default_vad()).speech_probabilities(waveform)
    return speech_timestamps_from_probs(speech_probs, len(waveform), options, **overrides)


@dataclasses.dataclass
class CollectedChunk:
    """Speech collected into one piece of audio (see `collect_chunks`).

    Args:
        audio: float32 array, the speech segments of `segments` one after the other.
        offset: float. Where `audio` starts on the timeline of all the collected speech (s).
        duration: float. Length of `audio` (s).
        segments: list of `{"start", "end"}` (samples of the original audio) it is made of.
    """

    audio: np.ndarray
    offset: float
    duration: float
    segments: list[dict[str, int]]


def group_segments(
    segments: list[dict[str, int]],
    max_duration_s: float = 30.0,
    sampling_rate: int = SAMPLE_RATE,
) -> list[list[dict[str, int]]]:
    """The segments of each piece of `collect_chunks`, without touching any audio.

    Consecutive segments go into the same group while their total length stays within
    `max_duration_s`; a longer segment gets a group of its own. A group's piece is its
    segments' samples one after the other, `sum(end - start)` samples long, so the plan of a
    long recording's pieces costs no audio: the samples can be read later, piece by piece.

    Args:
        segments: the speech segments, `{"start", "end"}` in samples, as returned by
            `get_speech_timestamps`.
        max_duration_s: float. Longest piece in seconds.
        sampling_rate: int. Samples per second of the audio.

    Returns:
        A list of lists of segments (the same dicts); empty when there are no segments.

    Examples:
    ```python
    segments = keras_whisper.vad.get_speech_timestamps(audio, max_speech_duration_s=30)
    for group in keras_whisper.vad.group_segments(segments):
        piece = np.concatenate([audio[s["start"] : s["end"]] for s in group])
    ```
    """
    if not segments:
        return []
    limit = max_duration_s * sampling_rate
    groups: list[list[dict[str, int]]] = [[]]
    length = 0
    for segment in segments:
        size = segment["end"] - segment["start"]
        if groups[-1] and length + size > limit:
            groups.append([])
            length = 0
        groups[-1].append(segment)
        length += size
    return groups


def collect_chunks(
    audio: np.ndarray,
    segments: list[dict[str, int]],
    max_duration_s: float = 30.0,
    sampling_rate: int = SAMPLE_RATE,
) -> list[CollectedChunk]:
    """Concatenates the speech segments into pieces of at most `max_duration_s`.

    Consecutive segments go into the same piece while it stays within `max_duration_s`; a
    segment longer than that gets a piece of its own (cut it beforehand with
    `VadOptions(max_speech_duration_s=...)`). The pieces laid end to end are all the speech:
    their `offset`s are on that timeline, the one `TimestampMap` maps back. Like
    faster-whisper's `collect_chunks`, except that each piece lists all its segments and no
    empty piece precedes an over-long first segment.

    Args:
        audio: 1-D array, the original audio.
        segments: the speech segments, `{"start", "end"}` in samples, as returned by
            `get_speech_timestamps`.
        max_duration_s: float. Longest piece in seconds; `math.inf` collects everything into
            one piece (faster-whisper's sequential `transcribe`).
        sampling_rate: int. Samples per second of `audio`.

    Returns:
        A list of `CollectedChunk`; one empty piece when there is no speech.

    Examples:
    ```python
    segments = keras_whisper.vad.get_speech_timestamps(audio, max_speech_duration_s=30)
    for piece in keras_whisper.vad.collect_chunks(audio, segments):
        ...  # transcribe piece.audio; its times start at piece.offset on the speech timeline
    ```
    """
    audio = np.asarray(audio)
    if not segments:
        return [CollectedChunk(np.zeros((0,), np.float32), 0.0, 0.0, [])]
    pieces, offset = [], 0
    for group in group_segments(segments, max_duration_s, sampling_rate):
        parts = [audio[s["start"] : s["end"]] for s in group]
        piece = np.concatenate(parts) if parts else np.zeros((0,), audio.dtype)
        pieces.append(
            CollectedChunk(
                audio=piece,
                offset=offset / sampling_rate,
                duration=len(piece) / sampling_rate,
                segments=[dict(s) for s in group],
            )
        )
        offset += len(piece)
    return pieces


class TimestampMap:
    """Maps times on the collected-speech timeline back to the original audio.

    The timeline of the collected speech is the segments laid end to end (see
    `collect_chunks`): a time `t` there falls in some segment `k` and maps to `t` plus all the
    audio dropped before segment `k`. Same results as faster-whisper's `SpeechTimestampsMap`.

    Args:
        segments: the speech segments, `{"start", "end"}` in samples of the original audio.
        sampling_rate: int. Samples per second.
        precision: int or `None`. Decimals the returned times are rounded to (faster-whisper
            rounds to 2); `None` keeps them unrounded.

    Examples:
    ```python
    segments = keras_whisper.vad.get_speech_timestamps(audio)
    speech = np.concatenate([audio[s["start"] : s["end"]] for s in segments])
    timeline = keras_whisper.vad.TimestampMap(segments)
    # A transcript segment from 12.0 s to 15.5 s of `speech`:
    start = timeline.original_time(12.0)
    end = timeline.original_time(15.5, is_end=True)
    ```
    """

    def __init__(
        self,
        segments: list[dict[str, int]],
        sampling_rate: int = SAMPLE_RATE,
        precision: int | None = 2,
    ):
        self.sampling_rate = sampling_rate
        self.precision = precision
        self.chunk_end_sample: list[int] = []  # end of each segment on the speech timeline
        self.silence_before: list[float] = []  # seconds dropped before each segment
        dropped, previous_end = 0, 0
        for segment in segments:
            dropped += segment["start"] - previous_end
            previous_end = segment["end"]
            self.chunk_end_sample.append(segment["end"] - dropped)
            self.silence_before.append(dropped / sampling_rate)

    def chunk_index(self, time: float, is_end: bool = False) -> int:
        """The segment a time of the speech timeline falls in.

        Args:
            time: float. Seconds on the speech timeline.
            is_end: bool. A time exactly at the end of a segment belongs to that segment
                (an end time) rather than to the next one (a start time).

        Returns:
            The index of the segment (the last one for times past the end).
        """
        if not self.chunk_end_sample:
            raise ValueError("TimestampMap has no segments to map times onto.")
        sample = int(time * self.sampling_rate)
        if is_end:
            index = bisect.bisect_left(self.chunk_end_sample, sample)
            if index < len(self.chunk_end_sample) and self.chunk_end_sample[index] == sample:
                return index
        return min(bisect.bisect_right(self.chunk_end_sample, sample), len(self.silence_before) - 1)

    def original_time(
        self, time: float, chunk_index: int | None = None, is_end: bool = False
    ) -> float:
        """The time in the original audio of a time on the speech timeline.

        Args:
            time: float. Seconds on the speech timeline.
            chunk_index: int or `None`. The segment to map through (for example the one of a
                word's middle, so both its ends map through the same segment); found from
                `time` when `None`.
            is_end: bool. Whether `time` ends something (see `chunk_index`).

        Returns:
            Seconds in the original audio, rounded to `precision` decimals.
        """
        if chunk_index is None:
            chunk_index = self.chunk_index(time, is_end)
        result = self.silence_before[chunk_index] + time
        return round(result, self.precision) if self.precision is not None else result
