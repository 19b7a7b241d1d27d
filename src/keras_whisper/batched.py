"""Batched long-form transcription: the throughput mode beside the sequential seek loop.

Voice activity detection (`keras_whisper.vad`) cuts each file's speech into pieces of at
most 30 s; the pieces of one file or of many are decoded together, `batch_size` windows per
call of the same compiled decoding loop (a short last batch is padded with silent windows,
so there is one compilation per batch size and none per file). Pieces carry no prompt from
one another, which is what lets them run side by side. Each piece's segments are mapped back
onto its own file's timeline, and results come out one file at a time, in input order, as
soon as all of a file's pieces are decoded.

The sequential `transcription.transcribe` stays the reference for fidelity (previous text as
prompt, temperature fallback); this mode trades those for throughput, as faster-whisper's
`BatchedInferencePipeline` does.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from keras_whisper.audio import (
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    load_audio,
    log_mel_spectrogram,
    pad_or_trim,
)
from keras_whisper.decoding import DecodingOptions, detect_language, generate
from keras_whisper.transcription import (
    Segment,
    TranscriptionResult,
    resolve_language,
    split_segments,
)

CHUNK_SECONDS = 30.0


def window_features(audio: np.ndarray, num_mels: int) -> np.ndarray:
    """The `(3000, num_mels)` features of up to 30 s of audio, as `transcribe` makes them."""
    mel = log_mel_spectrogram(audio, num_mels, padding=N_SAMPLES)
    content = mel.shape[0] - N_FRAMES
    return pad_or_trim(mel[:content], N_FRAMES, axis=0).astype("float32")


@dataclasses.dataclass
class _Piece:
    file: int
    index: int
    audio: np.ndarray
    offset: float  # start on the file's speech timeline (s)
    duration: float
    language: str | None


@dataclasses.dataclass
class _File:
    source: Any
    duration: float = 0.0
    timeline: Any = None
    language: str | None = None
    language_probability: float | None = None
    pieces: int = 0
    results: dict = dataclasses.field(default_factory=dict)
    error: Exception | None = None


def transcribe_many(
    backbone,
    tokenizer,
    inputs: Iterable[Any],
    *,
    batch_size: int = 8,
    language: str | None = None,
    task: str = "transcribe",
    without_timestamps: bool = True,
    no_speech_threshold: float | None = 0.6,
    logprob_threshold: float | None = -1.0,
    vad: Any = None,
    vad_options: Any = None,
    progress: Callable[[float], None] | None = None,
    **decode_options: Any,
) -> Iterator[tuple[Any, TranscriptionResult | Exception]]:
    """Transcribe many files (or one long one) in batches of speech pieces.

    Args:
        backbone: a `WhisperBackbone` with real weights.
        tokenizer: its `WhisperTokenizer`.
        inputs: paths, bytes, file objects or 16 kHz mono float arrays.
        batch_size: windows decoded together.
        language: a language code or name; `None` detects it once per file, on its
            first piece (multilingual models), or means English (`.en` models).
        task: `"transcribe"` or `"translate"`.
        without_timestamps: one segment per speech piece (default, as faster-whisper's
            batched pipeline); `False` predicts timestamps and splits pieces on them.
        no_speech_threshold: with `logprob_threshold`, a piece whose no-speech
            probability is above this and whose average log-probability is below
            `logprob_threshold` is dropped as silence.
        logprob_threshold: see `no_speech_threshold`.
        vad: a `keras_whisper.vad.SileroVAD`; defaults to the one of the `silero-vad`
            package (`pip install 'keras-whisper[vad]'`).
        vad_options: `keras_whisper.vad.VadOptions` or a dict of its fields; pieces are
            always cut at 30 s (`max_speech_duration_s`).
        progress: called with the seconds of audio (of all files) finished so far.
        **decode_options: `DecodingOptions` fields: `temperature` (one value: there is
            no fallback in this mode), `beam_size`, `patience`, `length_penalty`,
            `suppress_tokens`, `suppress_blank`, `max_initial_timestamp`, `prefix`.

    Yields:
        `(input, result)` per input, in input order: a `TranscriptionResult`, or the
        exception that input raised (unreadable or empty audio); the other inputs go on.

    Examples:
    ```python
    model = keras_whisper.WhisperSpeechToText.from_preset("whisper_tiny_en")
    for path, result in transcribe_many(model.backbone, model.tokenizer, paths, batch_size=16):
        print(path, result.text if not isinstance(result, Exception) else result)
    ```
    """
    from keras_whisper import vad as vad_module

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    language = resolve_language(tokenizer, language, task)
    options = DecodingOptions(
        task=task, language=language, without_timestamps=without_timestamps, **decode_options
    )
    if isinstance(vad_options, dict):
        vad_options = vad_module.VadOptions(**vad_options)
    vad_options = dataclasses.replace(
        vad_options or vad_module.VadOptions(), max_speech_duration_s=CHUNK_SECONDS
    )
    detector = vad if vad is not None else vad_module.SileroVAD.from_package()

    files: list[_File] = []
    queue: collections.deque[_Piece] = collections.deque()
    source = iter(inputs)
    exhausted = False
    next_out = 0
    done_seconds = 0.0

    def prepare(item) -> None:
        entry = _File(source=item)
        files.append(entry)
        try:
            waveform = load_audio(item)
            entry.duration = waveform.shape[0] / SAMPLE_RATE
            speech = vad_module.get_speech_timestamps(waveform, vad_options, vad=detector)
            pieces = vad_module.collect_chunks(waveform, speech, CHUNK_SECONDS) if speech else []
            entry.timeline = vad_module.TimestampMap(speech, precision=None) if speech else None
            entry.language = language
            if pieces and language is None:
                features = window_features(pieces[0].audio, backbone.num_mels)[None]
                _, probabilities = detect_language(backbone, tokenizer, features)
                entry.language = max(probabilities[0], key=probabilities[0].get)
                entry.language_probability = float(probabilities[0][entry.language])
            entry.pieces = len(pieces)
            for index, piece in enumerate(pieces):
                queue.append(
                    _Piece(
                        len(files) - 1,
                        index,
                        piece.audio,
                        piece.offset,
                        piece.duration,
                        entry.language,
                    )
                )
        except Exception as error:  # reported in order with the results, the rest go on
            entry.error = error

    while True:
        while not exhausted and len(queue) < batch_size:
            try:
                prepare(next(source))
            except StopIteration:
                exhausted = True
        if queue:
            head = queue[0].language
            batch = []
            for piece in list(queue):
                if len(batch) == batch_size:
                    break
                if piece.language == head:
                    batch.append(piece)
            for piece in batch:
                queue.remove(piece)
            features = np.zeros((batch_size, N_FRAMES, backbone.num_mels), "float32")
            for row, piece in enumerate(batch):
                features[row] = window_features(piece.audio, backbone.num_mels)
            results = generate(
                backbone, tokenizer, features, dataclasses.replace(options, language=head)
            )
            for piece, result in zip(batch, results, strict=False):
                entry = files[piece.file]
                rest = None
                if not options.without_timestamps:
                    rest = _remainder(piece, result, tokenizer.timestamp_begin, entry.pieces)
                if rest is not None:  # decode the rest of the piece again, as the seek loop does
                    entry.pieces += 1
                    queue.appendleft(rest)
                entry.results[piece.index] = (piece, result, rest is not None)
        while next_out < len(files):
            entry = files[next_out]
            if entry.error is None and len(entry.results) < entry.pieces:
                break
            next_out += 1
            if entry.error is not None:
                yield entry.source, entry.error
                continue
            done_seconds += entry.duration
            if progress:
                progress(done_seconds)
            yield (
                entry.source,
                _file_result(entry, tokenizer, options, no_speech_threshold, logprob_threshold),
            )
        if exhausted and not queue and next_out == len(files):
            return


def _remainder(piece: _Piece, result, timestamp_begin: int, index: int) -> _Piece | None:
    """The part of a piece after its last complete timestamp pair, if over a second is left.

    Whisper ends a window on a timestamp pair when it expects the next window to start
    there; the sequential loop seeks to it, and so does this: the rest becomes a new piece.
    """
    frames = int(round(piece.duration * 100))
    _, advance = split_segments(result.tokens, timestamp_begin, piece.offset, frames)
    if advance <= 0 or frames - advance < 100:
        return None
    cut = advance * (SAMPLE_RATE // 100)
    return _Piece(
        piece.file,
        index,
        piece.audio[cut:],
        piece.offset + advance / 100,
        piece.duration - advance / 100,
        piece.language,
    )


def _file_result(
    entry: _File, tokenizer, options, no_speech_threshold, logprob_threshold
) -> TranscriptionResult:
    segments: list[Segment] = []
    for piece, result, cut in sorted(entry.results.values(), key=lambda item: item[0].offset):
        if (
            no_speech_threshold is not None
            and result.no_speech_prob > no_speech_threshold
            and (logprob_threshold is None or result.avg_logprob < logprob_threshold)
        ):
            continue
        frames = int(round(piece.duration * 100))
        if options.without_timestamps:
            pieces = [(piece.offset, piece.offset + piece.duration, list(result.tokens))]
        else:
            pieces, _ = split_segments(
                result.tokens, tokenizer.timestamp_begin, piece.offset, frames
            )
            # The sequential loop would seek back to the last timestamp pair; here the
            # tokens after it are the rest of the piece.
            used = sum(len(tokens) for _, _, tokens in pieces)
            if used < len(result.tokens) and not cut:
                start = pieces[-1][1] if pieces else piece.offset
                pieces.append((start, piece.offset + piece.duration, list(result.tokens[used:])))
        for start, end, tokens in pieces:
            text = tokenizer.decode([t for t in tokens if t < tokenizer.eot])
            if start == end or not text.strip():
                continue
            segments.append(
                Segment(
                    id=len(segments),
                    seek=int(round(piece.offset * 100)),
                    start=round(entry.timeline.original_time(start), 3),
                    end=round(entry.timeline.original_time(end, is_end=True), 3),
                    text=text,
                    tokens=tokens,
                    temperature=result.temperature,
                    avg_logprob=result.avg_logprob,
                    compression_ratio=result.compression_ratio,
                    no_speech_prob=result.no_speech_prob,
                )
            )
    text = "".join(s.text for s in segments).strip()
    return TranscriptionResult(
        text=text,
        language=entry.language,
        language_probability=entry.language_probability,
        segments=segments,
        duration=entry.duration,
    )


def transcribe_batched(backbone, tokenizer, audio, **kwargs: Any) -> TranscriptionResult:
    """Transcribe one recording in batches of speech pieces (see `transcribe_many`).

    Raises:
        The error reading the audio raised (`keras_whisper.errors.AudioError`, ...).
    """
    for _, result in transcribe_many(backbone, tokenizer, [audio], **kwargs):
        if isinstance(result, Exception):
            raise result
        return result
    raise AssertionError("transcribe_many yielded nothing for one input")  # pragma: no cover
