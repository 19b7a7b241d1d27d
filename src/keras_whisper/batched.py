"""Batched long-form transcription: the throughput mode beside the sequential seek loop.

Voice activity detection (`keras_whisper.vad`) cuts each file's speech into pieces of at
most 30 s; the pieces of one file or of many are decoded together on `batch_size` rows.
Greedy decoding and sampling run on a `keras_whisper.decoding.pool.DecodingPool`: when a
row reaches `<|endoftext|>`, the next piece (of any file, in any language) takes it while
the other rows go on, so no row waits for the longest of a batch; once no piece waits, the
pool halves as its rows finish. Beam search decodes `batch_size` windows per call of
`generate` (a short last batch is padded with copies of its last window). Either way each
row count is compiled once, none per file. Pieces carry no prompt from one another, which
is what lets them run side by side. Each piece's segments are mapped back
onto its own file's timeline, and results come out one file at a time, in input order, as
soon as all of a file's pieces are decoded.

Memory is bounded by the batch, not by the length of the files. A file (path, bytes or file
object) is read twice, block by block: first for the VAD's speech probabilities (the model's
state carried from block to block, so they equal those of the whole waveform), then for the
samples of its pieces, each read only when a batch takes it. About `batch_size` pieces of 30 s
are alive at once (on a CPU, with the encoder outputs of the next `batch_size // 4`), plus a
block per open file and the speech probabilities (one float per 32 ms: 0.5 MB per hour).
A float32 array given by the caller is only sliced, never copied.

The sequential `transcription.transcribe` stays the reference for fidelity (previous text as
prompt, temperature fallback); this mode trades those for throughput, as faster-whisper's
`BatchedInferencePipeline` does.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from keras import ops

from keras_whisper import alignment
from keras_whisper.audio import (
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    SAMPLE_RATE,
    _as_mono_float32,
    _decoded_blocks,
    _resolve_source,
    log_mel_spectrogram,
    pad_or_trim,
)
from keras_whisper.decoding import DecodingOptions, detect_language, encode, filters, generate
from keras_whisper.decoding.pool import DecodingPool
from keras_whisper.errors import AudioError, OutOfMemoryError
from keras_whisper.layers import jax_on_cpu
from keras_whisper.transcription import (
    Segment,
    TranscriptionResult,
    check_option_names,
    resolve_language,
    seed_stream,
    split_segments,
)

CHUNK_SECONDS = 30.0
# Seconds of audio decoded at once while a file is read (bounds the memory of an open file).
BLOCK_SECONDS = 10.0


# Zeros after a piece's samples: past them every frame of `transcribe`'s 30 s of padding is
# silent (all its samples zero, the end's reflection included), so it adds only the floor
# value to the log-mel's maximum, never more.
_TAIL = N_FFT + 2 * HOP_LENGTH


def window_features(audio: np.ndarray, num_mels: int) -> np.ndarray:
    """The `(3000, num_mels)` features of up to 30 s of audio, as `transcribe` makes them.

    `transcribe` takes the first frames of `log_mel_spectrogram(audio, padding=N_SAMPLES)`
    and pads them; its 30 s of zeros only matter through the frames that overlap the
    audio, so a few hundred zeros give the same features at half the work.
    """
    audio = _as_mono_float32(audio, allow_empty=True)
    content = audio.size // HOP_LENGTH
    mel = log_mel_spectrogram(audio, num_mels, padding=_TAIL)
    return pad_or_trim(mel[:content], N_FRAMES, axis=0).astype("float32")


class _Recording:
    """One input of `transcribe_many`, whose samples can be read twice, block by block.

    Paths, bytes and file objects are decoded as they are read (soundfile or ffmpeg, the
    decoders of `keras_whisper.audio.stream_audio`); a file object is rewound to where it
    started for the second reading. An array is the caller's own: it is only sliced.
    """

    def __init__(self, item: Any, block_seconds: float):
        self.source = _resolve_source(item)
        self.name = self.source.name
        self.block_samples = max(1, int(block_seconds * SAMPLE_RATE))
        self.array = None
        self.start = None
        if self.source.kind == "array":
            self.array = _as_mono_float32(self.source.value)  # no copy for 1-D float32
        elif self.source.kind == "file":
            self.start = self.source.value.tell()

    def blocks(self) -> Iterator[np.ndarray]:
        """The samples at 16 kHz, mono float32, in blocks of about `block_seconds`."""
        if self.array is not None:
            step = self.block_samples
            return (self.array[i : i + step] for i in range(0, self.array.size, step))
        if self.start is not None:
            self.source.value.seek(self.start)
        return _decoded_blocks(self.source, SAMPLE_RATE, self.block_samples / SAMPLE_RATE)

    def speech(self, detector, vad_options) -> tuple[int, list[dict[str, int]]]:
        """First reading: the length in samples and the speech segments.

        The same segments as `vad.get_speech_timestamps(load_audio(input))`: the
        probabilities are computed block by block with the VAD state carried across, and
        only they (not the samples) are kept.
        """
        count = 0

        def counted():
            nonlocal count
            for block in self.blocks():
                count += block.size
                yield block

        probabilities = detector.stream_speech_probabilities(counted())
        if count == 0:
            raise AudioError(f"{self.name} contains no samples.")
        from keras_whisper import vad as vad_module

        return count, vad_module.speech_timestamps_from_probs(probabilities, count, vad_options)

    def pieces(self, groups: list[list[dict[str, int]]]) -> Iterator[np.ndarray]:
        """Second reading: the samples of each group of segments, one piece at a time.

        A piece is its segments' samples one after the other (`vad.collect_chunks`). Blocks
        are read up to the end of the piece asked for and dropped once passed, so a piece
        and one block are held, however long the file.
        """
        if self.array is not None:
            for group in groups:
                yield np.concatenate([self.array[s["start"] : s["end"]] for s in group])
            return
        blocks = self.blocks()
        block, block_start = np.zeros((0,), np.float32), 0  # block holds samples from block_start
        try:
            for group in groups:
                piece = np.empty(sum(s["end"] - s["start"] for s in group), np.float32)
                filled = 0
                for segment in group:
                    position, end = segment["start"], segment["end"]
                    if position < block_start:
                        raise AssertionError("speech segments out of order")  # pragma: no cover
                    while position < end:
                        offset = position - block_start
                        if offset >= block.size:
                            block_start += block.size
                            block = next(blocks, None)
                            if block is None:
                                raise AudioError(
                                    f"{self.name} ended at {block_start / SAMPLE_RATE:.2f} s "
                                    "on the second reading, before the end of the first: did "
                                    "it change while being transcribed?"
                                )
                            continue
                        count = min(end - position, block.size - offset)
                        piece[filled : filled + count] = block[offset : offset + count]
                        filled += count
                        position += count
                yield piece
        finally:
            blocks.close()  # closes the file, or stops ffmpeg


@dataclasses.dataclass
class _Piece:
    file: int
    index: int
    audio: np.ndarray | None  # read when a batch takes the piece, dropped once decoded
    offset: float  # start on the file's speech timeline (s)
    duration: float
    language: str | None
    encoded: Any = None  # its encoder output, kept until aligned (word timestamps)

    @property
    def frames(self) -> int:
        """Its length in mel frames (10 ms)."""
        return int(round(self.duration * 100))


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
    reader: Iterator[np.ndarray] | None = None  # the samples of the pieces not yet read
    unread: int = 0


def _is_out_of_memory(error: BaseException) -> bool:
    """Whether an error of the decoding loop means that memory ran out.

    JAX raises `XlaRuntimeError` (`jax.errors.JaxRuntimeError`) with `RESOURCE_EXHAUSTED` in
    the message, PyTorch `torch.OutOfMemoryError` (a `RuntimeError`), NumPy `MemoryError`.
    """
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and (
        "RESOURCE_EXHAUSTED" in message or "out of memory" in message.lower()
    )


def _out_of_memory(batch_size: int) -> OutOfMemoryError:
    if batch_size > 1:
        advice = f"try batch_size={batch_size // 2} (--batch-size {batch_size // 2} in the CLI)"
    else:
        advice = (
            "one window does not fit either: try a smaller preset, dtype='bfloat16', or the CPU"
        )
    return OutOfMemoryError(
        f"Out of memory decoding a batch of {batch_size} windows (batch_size={batch_size}); "
        f"{advice}."
    )


# `transcribe()` options that only the sequential seek loop has.
SEQUENTIAL_ONLY = frozenset(
    {
        "clip_timestamps",
        "carry_initial_prompt",
        "condition_on_previous_text",
        "prompt_reset_on_temperature",
        "language_detection_segments",
        "language_detection_threshold",
        "compression_ratio_threshold",
        "hallucination_silence_threshold",
        "vad_filter",
        "silence_threshold_db",
    }
)


def _transcribe_many(
    backbone,
    tokenizer,
    inputs: Iterable[Any],
    *,
    batch_size: int = 8,
    language: str | None = None,
    task: str = "transcribe",
    without_timestamps: bool = True,
    initial_prompt: str | None = None,
    no_speech_threshold: float | None = 0.6,
    logprob_threshold: float | None = -1.0,
    vad: Any = None,
    vad_options: Any = None,
    multilingual: bool = False,
    progress: Callable[[float], None] | None = None,
    seed: int | None = None,
    word_timestamps: bool = False,
    alignment_heads: Any = None,
    prepend_punctuations: str = alignment.PREPEND_PUNCTUATIONS,
    append_punctuations: str = alignment.APPEND_PUNCTUATIONS,
    **decode_options: Any,
) -> Iterator[tuple[Any, TranscriptionResult | Exception]]:
    """Transcribe many files (or one long one) in batches of speech pieces.

    Memory is bounded by `batch_size`, not by the length of the files: a file is read twice,
    block by block (`BLOCK_SECONDS`), once for its VAD speech probabilities and once for the
    samples of its pieces, each read only when a batch takes it. About `batch_size` x 30 s of
    audio is held at a time, plus a block per open file and the probabilities of the files
    being transcribed (0.5 MB per hour of audio), so hours-long recordings go through in the
    memory of a few minutes. The results are those of reading each file whole. Arrays are
    the caller's own: a 1-D float32 one is sliced, never copied whole.

    Args:
        backbone: a `WhisperBackbone` with real weights.
        tokenizer: its `WhisperTokenizer`.
        inputs: paths, bytes, file objects (read from where they are, rewound for the second
            reading; pipes are buffered) or 16 kHz mono float arrays; any iterable, consumed
            as the batches need inputs.
        batch_size: windows decoded together; halve it if the accelerator runs out of memory.
        language: a language code or name; `None` detects it once per file, on its
            first piece (multilingual models), or means English (`.en` models).
        task: `"transcribe"` or `"translate"`.
        without_timestamps: one segment per speech piece (default, as faster-whisper's
            batched pipeline); `False` predicts timestamps and splits pieces on them.
        initial_prompt: text to prompt every piece with (the same for all: pieces do
            not prompt one another), e.g. names or spellings the speech uses.
        no_speech_threshold: with `logprob_threshold`, a piece whose no-speech
            probability is above this and whose average log-probability is below
            `logprob_threshold` is dropped as silence.
        logprob_threshold: see `no_speech_threshold`.
        multilingual: detect the language of every piece and decode it in that
            language, for speech that changes language (faster-whisper's option; a
            file's `language` stays its first piece's). Multilingual models only.
        vad: a `keras_whisper.vad.SileroVAD`; defaults to the one of the `silero-vad`
            package (`pip install 'keras-whisper[vad]'`).
        vad_options: `keras_whisper.vad.VadOptions` or a dict of its fields; pieces are
            always cut at 30 s (`max_speech_duration_s`).
        progress: called with the seconds of audio (of all files) finished so far.
        seed: int. Seeds the sampling when `temperature > 0`: the same seed, inputs and
            options give the same transcripts. `None` (default) draws fresh samples.
        word_timestamps: give every segment its `words` (`keras_whisper.alignment`):
            each piece is aligned with its audio once decoded (its encoder output is
            kept until then: one more `(1500, hidden_dim)` array per row).
        alignment_heads: the decoder's `(layer, head)` pairs that follow the speech
            (`None`: the second half of its layers).
        prepend_punctuations, append_punctuations: with `word_timestamps`, the marks
            joined to the word after, or before, them.
        **decode_options: `DecodingOptions` fields: `temperature` (one value: there is
            no fallback in this mode), `beam_size`, `patience`, `length_penalty`,
            `suppress_tokens`, `suppress_blank`, `max_initial_timestamp`, `prefix`, `hotwords`,
            `repetition_penalty`, `no_repeat_ngram_size`.

    Yields:
        `(input, result)` per input, in input order, as soon as all of its pieces are
        decoded: a `TranscriptionResult`, or the exception that input raised (an
        `AudioError` saying why: missing, empty, corrupt or undecodable audio, or a file
        that changed between the two readings); the other inputs go on.

    Raises:
        ValueError: `batch_size` is not a positive integer, or a bad `task` or `language`.
        keras_whisper.errors.OutOfMemoryError: a batch did not fit in the accelerator's
            memory; the message names the batch size to try instead (half). The results
            already yielded stand.

    Examples:
    ```python
    model = keras_whisper.WhisperSpeechToText.from_preset("whisper_tiny_en")
    for path, result in transcribe_many(model.backbone, model.tokenizer, paths, batch_size=16):
        print(path, result.text if not isinstance(result, Exception) else result)

    # A 10-hour recording: read in blocks, about 16 x 30 s of audio in memory at a time.
    result = transcribe_batched(model.backbone, model.tokenizer, "day.flac", batch_size=16)
    ```
    """
    from keras_whisper import vad as vad_module

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
    sequential_only = sorted(set(decode_options) & SEQUENTIAL_ONLY)
    if sequential_only:
        raise ValueError(
            f"{', '.join(sequential_only)}: options of the sequential mode (batch_size=None); "
            "the batched mode decodes VAD speech pieces on their own, without fallback."
        )
    check_option_names(decode_options, transcribe_many)
    if multilingual and not tokenizer.is_multilingual:
        raise ValueError(
            "multilingual=True detects each piece's language, and this model is "
            "English-only: use a multilingual preset (e.g. whisper_base_multi)."
        )
    language = resolve_language(tokenizer, language, task)
    options = DecodingOptions(
        task=task,
        language=language,
        without_timestamps=without_timestamps,
        prompt=initial_prompt or None,
        **decode_options,
    )
    filters.suppressed_token_ids(tokenizer, options.suppress_tokens)  # ids within the vocabulary
    if isinstance(vad_options, dict):
        vad_options = vad_module.VadOptions(**vad_options)
    vad_options = dataclasses.replace(
        vad_options or vad_module.VadOptions(), max_speech_duration_s=CHUNK_SECONDS
    )
    # The default detector is built (and compiled) once per process, not once per call.
    detector = vad if vad is not None else vad_module.default_vad()
    batch_seeds = seed_stream(seed)
    yield _READY  # `transcribe_many` has run the checks above, before any input is read

    files: dict[int, _File] = {}  # the files not yet reported, by input position
    queue: collections.deque[_Piece] = collections.deque()
    source = iter(inputs)
    exhausted = False
    opened = 0
    next_out = 0
    done_seconds = 0.0

    def prepare(item) -> None:
        nonlocal opened
        number = opened
        entry = files[number] = _File(source=item)
        opened += 1
        try:
            recording = _Recording(item, BLOCK_SECONDS)
            samples, speech = recording.speech(detector, vad_options)
            entry.duration = samples / SAMPLE_RATE
            groups = vad_module.group_segments(speech, CHUNK_SECONDS)
            entry.timeline = vad_module.TimestampMap(speech, precision=None) if speech else None
            entry.language = language
            pieces, offset = [], 0
            for index, group in enumerate(groups):
                length = sum(s["end"] - s["start"] for s in group)
                pieces.append(
                    _Piece(
                        number,
                        index,
                        None,
                        offset / SAMPLE_RATE,
                        length / SAMPLE_RATE,
                        entry.language,
                    )
                )
                offset += length
            entry.pieces = entry.unread = len(pieces)
            if pieces:
                entry.reader = recording.pieces(groups)
            if pieces and language is None:
                read(pieces[0])
                features = window_features(pieces[0].audio, backbone.num_mels)[None]
                _, probabilities = detect_language(backbone, tokenizer, features)
                entry.language = max(probabilities[0], key=probabilities[0].get)
                entry.language_probability = float(probabilities[0][entry.language])
                for piece in pieces:
                    piece.language = entry.language
            queue.extend(pieces)
        except Exception as error:  # reported in order with the results, the rest go on
            fail(entry, error)

    def read(piece: _Piece) -> None:
        """The samples of a piece, read from its file when a batch takes it."""
        if piece.audio is not None:
            return
        entry = files[piece.file]
        piece.audio = next(entry.reader)
        entry.unread -= 1
        if entry.unread == 0:
            entry.reader.close()
            entry.reader = None

    def fail(entry: _File, error: Exception) -> None:
        entry.error = error
        if entry.reader is not None:
            entry.reader.close()
            entry.reader = None

    def take(piece: _Piece) -> bool:
        """Read a piece's samples for decoding; `False` if its file has failed."""
        entry = files[piece.file]
        if entry.error is not None:
            return False
        try:
            read(piece)
        except Exception as error:  # the file failed on its second reading
            fail(entry, error)
            for other in [p for p in queue if p.file == piece.file]:
                queue.remove(other)
            return False
        return True

    def collect(piece: _Piece, result) -> None:
        entry = files[piece.file]
        if entry.error is not None:
            return
        # The rest of a piece after its last timestamp pair is decoded again, as the seek
        # loop does; the piece's samples are dropped (but for that rest).
        rest = None
        if not options.without_timestamps:
            rest = _remainder(piece, result, tokenizer.timestamp_begin, entry.pieces)
        if rest is not None:
            entry.pieces += 1
            queue.appendleft(rest)
        segments = _piece_segments(piece, result, rest is not None, tokenizer, options)
        if word_timestamps:
            found = alignment.find_alignment(
                backbone,
                tokenizer,
                piece.encoded,
                [t for segment in segments for t in segment["tokens"] if t < tokenizer.eot],
                piece.frames,
                sot_sequence=tokenizer.sot_sequence(piece.language, task),
                language=piece.language,
                heads=alignment_heads,
            )
            # Pieces join end to end on the speech timeline: no pause before one.
            alignment.add_word_timestamps(
                segments,
                found,
                piece.offset,
                piece.offset,
                tokenizer.eot,
                prepend_punctuations,
                append_punctuations,
            )
        piece.audio = piece.encoded = None
        entry.results[piece.index] = (piece, result, segments)

    def detect(pieces: list[_Piece], encoded) -> None:
        """With `multilingual`, each piece takes the language detected on its own audio."""
        if multilingual:
            _, probabilities = detect_language(backbone, tokenizer, encoded)
            for piece, probs in zip(pieces, probabilities, strict=True):
                piece.language = max(probs, key=probs.get)

    def keep_encoded(pieces: list[_Piece], encoded) -> None:
        """With word timestamps, each piece keeps its encoder output until aligned."""
        if word_timestamps:
            for row, piece in enumerate(pieces):
                piece.encoded = encoded[row : row + 1]

    # Greedy decoding and sampling run on a pool of rows refilled as they finish; beam
    # search (and best_of > 1) decodes batch after batch.
    pool = ahead = None
    if options.beam_size is None and (options.best_of or 1) == 1:
        pool = DecodingPool(backbone, tokenizer, options, batch_size, seed=next(batch_seeds))
        if _encode_one_at_a_time():
            ahead = _EncodeAhead(pool.encode, backbone.num_mels)

    try:
        while True:
            while not exhausted and len(queue) < batch_size:
                try:
                    prepare(next(source))
                except StopIteration:
                    exhausted = True
            if pool is not None:
                new = []
                while queue and len(new) < pool.free_rows():
                    piece = queue.popleft()
                    if take(piece):
                        new.append(piece)
                try:
                    if new and ahead is not None:
                        encoded = ops.concatenate([ahead.take(p) for p in new], axis=0)
                        keep_encoded(new, encoded)
                        detect(new, encoded)
                        pool.add(encoded, [p.language for p in new], new)
                    elif new:
                        features = np.stack(
                            [window_features(p.audio, backbone.num_mels) for p in new]
                        )
                        if word_timestamps or multilingual:
                            features = encode(backbone, features)
                            keep_encoded(new, features)
                            detect(new, features)
                        pool.add(features, [p.language for p in new], new)
                    if ahead is not None:
                        # The pieces the next refills will take are encoded while the pool
                        # decodes (it stops as soon as one to size // 8 rows finish).
                        # (A copy of the queue's head: `take` may drop a failed file's pieces.)
                        upcoming = list(itertools.islice(queue, _ahead_count(pool.size)))
                        ahead.submit([p for p in upcoming if take(p)])
                    finished = pool.run(pending=len(queue) + (0 if exhausted else 1))
                except Exception as error:
                    if _is_out_of_memory(error):
                        raise _out_of_memory(batch_size) from error
                    raise
                for piece, result in finished:
                    collect(piece, result)
            elif queue:
                head = queue[0].language
                batch = []
                for piece in list(queue):
                    if len(batch) == batch_size:
                        break
                    if piece.language == head or multilingual:  # (detected per piece)
                        batch.append(piece)
                for piece in batch:
                    queue.remove(piece)
                features = np.zeros((batch_size, N_FRAMES, backbone.num_mels), "float32")
                rows = []
                for piece in batch:
                    if take(piece):
                        features[len(rows)] = window_features(piece.audio, backbone.num_mels)
                        rows.append(piece)
                results = []
                if any(files[piece.file].error is None for piece in rows):
                    try:
                        if len(rows) < batch_size or _encode_one_at_a_time():
                            features = _short_batch(backbone, features[: len(rows)], batch_size)
                        elif word_timestamps:
                            features = encode(backbone, features)
                        keep_encoded(rows, features)
                        results = generate(
                            backbone,
                            tokenizer,
                            features,
                            # With `multilingual`, generate detects each piece's language.
                            dataclasses.replace(options, language=None if multilingual else head),
                            seed=next(batch_seeds),
                        )
                        for piece, result in zip(rows, results, strict=False):
                            piece.language = result.language
                    except Exception as error:
                        if _is_out_of_memory(error):
                            raise _out_of_memory(batch_size) from error
                        raise
                for piece, result in zip(rows, results, strict=False):
                    collect(piece, result)
            while next_out < opened:
                entry = files[next_out]
                if entry.error is None and len(entry.results) < entry.pieces:
                    break
                del files[next_out]
                next_out += 1
                if entry.error is not None:
                    yield entry.source, entry.error
                    continue
                done_seconds += entry.duration
                if progress:
                    progress(done_seconds)
                yield (
                    entry.source,
                    _file_result(entry, tokenizer, no_speech_threshold, logprob_threshold),
                )
            decoding = pool is not None and pool.decoding
            if exhausted and not queue and not decoding and next_out == opened:
                return
    finally:  # the caller stopped early, or an error: close the files still open
        if ahead is not None:
            ahead.close()
        for entry in files.values():
            if entry.reader is not None:
                entry.reader.close()


def _encode_one_at_a_time() -> bool:
    """Whether full batches are also encoded window by window: JAX on a CPU.

    There the one-window encoder is faster per window than the batched one (measured on 2
    cores: tiny.en 453 against 489 ms at batch 8, 430 against 499 at 16; base 962 against
    982 at 8), and it is the sequential mode's, so no encoder is compiled per batch size.
    GPUs want the whole batch at once.
    """
    return jax_on_cpu()


def _ahead_count(rows: int) -> int:
    """How many waiting pieces are encoded ahead while a pool of `rows` rows decodes.

    A quarter of the rows (at least 2) keeps the worker busy through a pool's run; on the
    10-minute benchmark file (2-core AVX-512 Xeon) the batched mode takes 4-8 % less time
    than without encoding ahead (tiny.en 8 rows 8.67 -> 8.09 s, 16 rows 8.17 -> 7.81; base
    8 rows 18.50 -> 17.05, 16 rows 18.20 -> 17.56), against 1 % for an eighth.
    """
    return max(2, rows // 4)


class _EncodeAhead:
    """Encoder outputs of the pieces waiting next, made on a second thread (JAX on a CPU).

    While the pool decodes (steps of small products that wait on memory), one worker
    thread encodes the pieces the next refills will take (large products): side by side on
    2 cores the two take less time than one after the other (base, 16 rows: 5.3 against
    5.6 s for a pool's run and six encoder windows). Features are made on the calling
    thread, in queue order; a piece taken before its encoding was asked for is encoded on
    the spot. Outputs are kept until their piece is taken: `_ahead_count(batch_size)`
    windows' worth.

    Args:
        encode: log-mel features `(n, frames, num_mels)` -> encoder outputs, as the pool's
            `add` takes them (`DecodingPool.encode`).
        num_mels: the model's number of mel bands.
    """

    def __init__(self, encode: Callable, num_mels: int):
        self._encode, self._num_mels = encode, num_mels
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="keras-whisper-encoder")
        self._futures: dict[int, tuple[_Piece, Future]] = {}

    def _features(self, piece: _Piece) -> np.ndarray:
        return window_features(piece.audio, self._num_mels)[None]

    def _encode_and_wait(self, features: np.ndarray):
        import jax

        # Waits here, on the worker, for the encoder to finish.
        return jax.block_until_ready(self._encode(features))

    def submit(self, pieces: list[_Piece]) -> None:
        """Start encoding `pieces` (their samples read) unless already started."""
        for piece in pieces:
            if id(piece) not in self._futures:
                job = self._executor.submit(self._encode_and_wait, self._features(piece))
                self._futures[id(piece)] = (piece, job)

    def take(self, piece: _Piece):
        """The encoder output `(1, positions, hidden_dim)` of `piece` (its samples read)."""
        entry = self._futures.pop(id(piece), None)
        if entry is None:
            return self._encode(self._features(piece))
        return entry[1].result()  # re-raises the worker's error, e.g. out of memory

    def close(self) -> None:
        """Drop the outputs not taken; wait for the encoding under way (if any)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()


def _short_batch(backbone, features: np.ndarray, batch_size: int):
    """The encoder output of a batch of `batch_size` windows or fewer, padded.

    Only the windows there are go through the encoder, one at a time (the one-window
    encoder is compiled once; the sequential mode uses it too): the last batch of a file
    with 9 pieces at batch size 8 costs one encoder pass, not eight. The missing rows repeat
    the last window's output, so they decode as it does and never outlast the real ones;
    the decoding loop keeps its `batch_size` rows, and its one compilation.
    """
    encoded = [encode(backbone, features[i : i + 1]) for i in range(len(features))]
    encoded += [encoded[-1]] * (batch_size - len(encoded))
    return ops.concatenate(encoded, axis=0)


def _remainder(piece: _Piece, result, timestamp_begin: int, index: int) -> _Piece | None:
    """The part of a piece after its last complete timestamp pair, if over a second is left.

    Whisper ends a window on a timestamp pair when it expects the next window to start
    there; the sequential loop seeks to it, and so does this: the rest becomes a new piece.
    """
    _, advance = split_segments(result.tokens, timestamp_begin, piece.offset, piece.frames)
    if advance <= 0 or piece.frames - advance < 100:
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


def _piece_segments(piece: _Piece, result, cut: bool, tokenizer, options) -> list[dict]:
    """A decoded piece's segments on the speech timeline: `{"start", "end", "tokens",
    "words"}` (`words` filled by the alignment, with word timestamps)."""
    if options.without_timestamps:
        pieces = [(piece.offset, piece.offset + piece.duration, list(result.tokens))]
    else:
        pieces, _ = split_segments(
            result.tokens, tokenizer.timestamp_begin, piece.offset, piece.frames
        )
        # The sequential loop would seek back to the last timestamp pair; here the
        # tokens after it are the rest of the piece.
        used = sum(len(tokens) for _, _, tokens in pieces)
        if used < len(result.tokens) and not cut:
            start = pieces[-1][1] if pieces else piece.offset
            pieces.append((start, piece.offset + piece.duration, list(result.tokens[used:])))
    return [{"start": a, "end": b, "tokens": t, "words": None} for a, b, t in pieces]


def _file_result(
    entry: _File, tokenizer, no_speech_threshold, logprob_threshold
) -> TranscriptionResult:
    segments: list[Segment] = []
    timeline = entry.timeline
    for piece, result, found in sorted(entry.results.values(), key=lambda item: item[0].offset):
        if (
            no_speech_threshold is not None
            and result.no_speech_prob > no_speech_threshold
            and (logprob_threshold is None or result.avg_logprob < logprob_threshold)
        ):
            continue
        for segment in found:
            tokens = segment["tokens"]
            text = tokenizer.decode([t for t in tokens if t < tokenizer.eot])
            if segment["start"] == segment["end"] or not text.strip():
                continue
            start = round(timeline.original_time(segment["start"]), 3)
            end = round(timeline.original_time(segment["end"], is_end=True), 3)
            words = segment["words"]
            if words:
                words = [alignment.restore_word(timeline, w) for w in words]
                start, end = words[0].start, words[-1].end
            segments.append(
                Segment.of_window(
                    result,
                    id=len(segments),
                    seek=int(round(piece.offset * 100)),
                    start=start,
                    end=end,
                    text=text,
                    tokens=tokens,
                    words=words,
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


_READY = object()


def transcribe_many(backbone, tokenizer, inputs, **kwargs: Any):
    if isinstance(inputs, (str, bytes, bytearray, os.PathLike, np.ndarray)):
        raise TypeError(
            "transcribe_many takes an iterable of inputs (paths, bytes, file objects or "
            f"arrays), one per recording; got one {type(inputs).__name__}: pass "
            "[input], or use transcribe() for a single recording."
        )
    run = _transcribe_many(backbone, tokenizer, inputs, **kwargs)
    next(run)  # the options are checked now, not when the first result is asked for
    return run


# One function to read and to introspect (its options are checked against this signature).
transcribe_many.__doc__ = _transcribe_many.__doc__
transcribe_many.__signature__ = inspect.signature(_transcribe_many)


def transcribe_batched(backbone, tokenizer, audio, **kwargs: Any) -> TranscriptionResult:
    """Transcribe one recording in batches of speech pieces (see `transcribe_many`).

    The recording is read in blocks, twice: memory is bounded by the batch size, not by
    its length.

    Args:
        backbone: a `WhisperBackbone` with real weights.
        tokenizer: its `WhisperTokenizer`.
        audio: a path, bytes, a file object or a 16 kHz mono float array.
        **kwargs: the arguments of `transcribe_many` (`batch_size`, `language`, ...).

    Returns:
        A `TranscriptionResult`.

    Raises:
        The error reading the audio raised (`keras_whisper.errors.AudioError`, ...), or
        `keras_whisper.errors.OutOfMemoryError` (try half the batch size).

    Examples:
    ```python
    model = keras_whisper.WhisperSpeechToText.from_preset("whisper_tiny_en")
    result = transcribe_batched(model.backbone, model.tokenizer, "talk.mp3", batch_size=8)
    ```
    """
    for _, result in transcribe_many(backbone, tokenizer, [audio], **kwargs):
        if isinstance(result, Exception):
            raise result
        return result
    raise AssertionError("transcribe_many yielded nothing for one input")  # pragma: no cover
