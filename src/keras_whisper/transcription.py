"""Long-form transcription: OpenAI's sequential 30-s seek loop.

`transcribe_segments` yields segments lazily as each window is decoded (long
files stream); `transcribe` collects them into a `TranscriptionResult`. The
algorithm is openai-whisper's `transcribe()`:

- log-mel of the whole file with 30 s of padding, normalised over all of it;
- language detection on the first window when a multilingual model is given
  no language;
- for each window at `seek`: the window's features zero-padded to 3000 frames,
  the previous text as prompt, decoding with temperature fallback (compression
  ratio > 2.4 or average log-probability < -1.0 try the next temperature,
  unless the window looks silent: no-speech probability > 0.6);
- windows judged silent are skipped; otherwise the tokens are split into
  segments at consecutive timestamp pairs and `seek` moves to the last complete
  timestamp (or the end of the window);
- the prompt is reset when `condition_on_previous_text` is off or a window
  needed a temperature above 0.5.

This module touches the model only through `decoding.generate` and
`decoding.detect_language`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from keras_whisper import alignment
from keras_whisper.audio import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    load_audio,
    log_mel_spectrogram,
    pad_or_trim,
)
from keras_whisper.decoding import (
    DecodingOptions,
    DecodingResult,
    detect_language,
    encode,
    filters,
    generate,
)

INPUT_STRIDE = 2  # mel frames per encoder position (= per timestamp step of 0.02 s)
TIME_PRECISION = INPUT_STRIDE * HOP_LENGTH / SAMPLE_RATE  # 0.02 s


@dataclasses.dataclass
class Segment:
    """One transcribed segment, as openai-whisper reports it, and its window's language
    (`language`: a code; it changes within a file only with `multilingual`)."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[alignment.Word] | None = None
    language: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def of_window(cls, result: DecodingResult, **fields: Any) -> Segment:
        """A segment of a decoded window: `fields` (id, seek, start, end, text, tokens,
        words) and the window's scores from its `DecodingResult`."""
        return cls(
            **fields,
            temperature=result.temperature,
            avg_logprob=result.avg_logprob,
            compression_ratio=result.compression_ratio,
            no_speech_prob=result.no_speech_prob,
            language=result.language,
        )


@dataclasses.dataclass
class TranscriptionResult:
    """The transcript of one file: `text`, `language` (+ probability), `segments`."""

    text: str
    language: str | None
    language_probability: float | None
    segments: list[Segment]
    duration: float

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "language": self.language,
            "language_probability": self.language_probability,
            "duration": self.duration,
            "segments": [s.to_dict() for s in self.segments],
        }


@dataclasses.dataclass
class TranscriptionInfo:
    """What is known before the first segment: language and duration."""

    language: str | None
    language_probability: float | None
    duration: float


# faster-whisper's names for options that have another name here.
_OTHER_NAMES = {
    "vad_parameters": "vad_options",
    "log_prob_threshold": "logprob_threshold",
    "max_new_tokens": "sample_len",
}


def check_option_names(options: dict[str, Any], function: Callable) -> None:
    """Raise a `ValueError` naming any of `options` that is neither a `DecodingOptions`
    field nor a parameter of `function`, with the likely intended name.

    Args:
        options: the keyword arguments a transcription function passes on as decoding
            options.
        function: that function (its parameters are valid names too).

    Examples:
    ```python
    check_option_names({"beam_szie": 5}, transcribe_segments)  # ValueError: beam_size?
    ```
    """
    fields = {f.name for f in dataclasses.fields(DecodingOptions)}
    known = fields | set(inspect.signature(function).parameters)
    for name in options:
        if name in fields:
            continue
        if name in _OTHER_NAMES:
            hint = f"faster-whisper's name; here it is {_OTHER_NAMES[name]!r}"
        else:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see the docstring for the options"
        raise ValueError(f"Unknown option {name!r}: {hint}.")


def _temperatures(temperature: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(temperature, (int, float)):
        return (float(temperature),)
    values = tuple(float(t) for t in temperature)
    if not values:
        raise ValueError("`temperature` must hold at least one value.")
    return values


def _frame_peaks(waveform: np.ndarray, frames: int) -> np.ndarray:
    """The loudest absolute sample in each of the first `frames` hops (zeros past the end)."""
    padded = np.zeros(frames * HOP_LENGTH, dtype=np.float32)
    count = min(waveform.shape[0], padded.shape[0])
    padded[:count] = np.abs(waveform[:count])
    return padded.reshape(frames, HOP_LENGTH).max(axis=1) if frames else padded


def parse_clip_timestamps(clip_timestamps: str | Sequence[float] | None) -> list[float]:
    """`clip_timestamps` as seconds: `"0,5.5,10"`, `[0, 5.5, 10]` or `None` (all).

    The values alternate start, end, start, ...; an odd last start runs to the end of
    the audio (openai-whisper's and faster-whisper's `clip_timestamps`).

    Raises:
        ValueError: a value that is not a number, negative or not finite, or a clip
            that ends before it starts.
    """
    if clip_timestamps is None:
        return []
    if isinstance(clip_timestamps, str):
        fields = [f.strip() for f in clip_timestamps.split(",")] if clip_timestamps.strip() else []
    else:
        fields = list(clip_timestamps)
    try:
        values = [float(f) for f in fields]
    except (TypeError, ValueError):
        raise ValueError(
            f"clip_timestamps must be seconds separated by commas, like '0,5.5,10'; got "
            f"{clip_timestamps!r}."
        ) from None
    for value in values:
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"clip_timestamps must be seconds >= 0; got {value!r}.")
    for number, (start, end) in enumerate(zip(values[::2], values[1::2], strict=False), start=1):
        if end <= start:
            raise ValueError(
                f"clip_timestamps: clip {number} ends at {end:g} s, not after its start "
                f"({start:g} s). Give start,end pairs in seconds, like '0,5.5,10,20'."
            )
    return values


def clip_frames(seconds: Sequence[float], content_frames: int) -> list[tuple[int, int]]:
    """Clips in seconds (`parse_clip_timestamps`) as `(start, end)` mel frames, each
    end within the audio's `content_frames`; no clips is the whole audio."""
    points = [round(s * FRAMES_PER_SECOND) for s in seconds] or [0]
    if len(points) % 2:
        points.append(content_frames)
    return [
        (start, min(end, content_frames))
        for start, end in zip(points[::2], points[1::2], strict=True)
    ]


def seed_stream(seed: int | None) -> Iterator[int | None]:
    """Endless per-call seeds drawn from `seed`, or `None`s when `seed` is `None`.

    The sequential loop takes one per window and the batched mode one per batch, so a
    whole transcription's samples follow from its one seed.

    Args:
        seed: int or `None`.

    Examples:
    ```python
    seeds = seed_stream(0)
    first, second = next(seeds), next(seeds)  # the same two for every seed_stream(0)
    ```
    """
    generator = None if seed is None else np.random.default_rng(seed)
    while True:
        yield None if generator is None else int(generator.integers(2**30))


def resolve_language(tokenizer, language: str | None, task: str) -> str | None:
    """Check `task` and `language` for a model; the language code, or `None` to detect it.

    Raises:
        ValueError: an unknown task or language, translation or a language other than
            English on an English-only model.
    """
    if task not in ("transcribe", "translate"):
        raise ValueError(f"`task` must be 'transcribe' or 'translate'; got {task!r}.")
    if tokenizer.is_multilingual:
        if language is None:
            return None
        token = tokenizer.language_token(language)  # raises on unknown languages
        return tokenizer.all_language_codes[tokenizer.all_language_tokens.index(token)]
    if task == "translate":
        raise ValueError(
            "This model is English-only: it cannot translate. Use a multilingual preset "
            "(e.g. whisper_base_multi) for task='translate'."
        )
    if language is not None and language.strip().lower() not in ("en", "english"):
        raise ValueError(
            f"This model is English-only; language={language!r} is not possible. Use a "
            "multilingual preset (e.g. whisper_base_multi) for other languages."
        )
    return "en"


def ends_on_single_timestamp(tokens: Sequence[int], timestamp_begin: int) -> bool:
    """Whether a window's tokens end on text then one timestamp: a segment left open,
    after which the next window starts at the window's end (OpenAI's
    `single_timestamp_ending`)."""
    return [int(t) >= timestamp_begin for t in tokens[-2:]] == [False, True]


def split_segments(
    tokens: Sequence[int], timestamp_begin: int, time_offset: float, window_frames: int
) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Cut one window's tokens into segments at consecutive timestamp pairs (OpenAI's rule).

    Args:
        tokens: the decoded tokens of the window (without `<|endoftext|>`).
        timestamp_begin: the id of `<|0.00|>`.
        time_offset: where the window starts, in seconds.
        window_frames: how many mel frames of the window hold audio (at most 3000).

    Returns:
        `(pieces, advance)`: `(start, end, tokens)` of each segment, and how many mel
        frames the seek should move: to the last complete timestamp pair, or over the
        whole window when the tokens end on a single timestamp or hold no pair.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    is_timestamp = tokens >= timestamp_begin
    single_timestamp_ending = ends_on_single_timestamp(tokens, timestamp_begin)
    consecutive = np.where(is_timestamp[:-1] & is_timestamp[1:])[0] + 1
    pieces: list[tuple[float, float, list[int]]] = []
    if len(consecutive) > 0:
        slices = consecutive.tolist()
        if single_timestamp_ending:
            slices.append(len(tokens))
        last_slice = 0
        for current in slices:
            piece = tokens[last_slice:current]
            start = time_offset + (int(piece[0]) - timestamp_begin) * TIME_PRECISION
            end = time_offset + (int(piece[-1]) - timestamp_begin) * TIME_PRECISION
            pieces.append((start, end, [int(t) for t in piece]))
            last_slice = current
        if single_timestamp_ending:
            return pieces, window_frames
        return pieces, (int(tokens[last_slice - 1]) - timestamp_begin) * INPUT_STRIDE
    end = window_frames / FRAMES_PER_SECOND
    stamps = tokens[is_timestamp]
    if len(stamps) > 0 and int(stamps[-1]) != timestamp_begin:
        end = (int(stamps[-1]) - timestamp_begin) * TIME_PRECISION
    return [(time_offset, time_offset + end, [int(t) for t in tokens])], window_frames


def window_options(
    options: DecodingOptions, temperature: float, best_of: int | None
) -> DecodingOptions:
    """`options` at one temperature of the fallback: as given at 0 (greedy or beam
    search); above 0 without `beam_size` and `patience`, with `best_of` samples."""
    if temperature > 0:
        return dataclasses.replace(
            options, temperature=temperature, beam_size=None, patience=None, best_of=best_of
        )
    return dataclasses.replace(options, temperature=temperature, best_of=None)


def decode_with_fallback(
    backbone,
    tokenizer,
    features: np.ndarray,
    options: DecodingOptions,
    temperatures: Sequence[float],
    compression_ratio_threshold: float | None = 2.4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    best_of: int | None = None,
    seed: int | None = None,
) -> DecodingResult:
    """Decode one window, retrying at higher temperatures when the result looks wrong.

    At temperature 0, `options` is used as is (greedy or beam search); above 0,
    `beam_size` and `patience` are dropped and `best_of` samples are drawn. If
    every temperature fails, the last result is returned (as openai-whisper does).
    `seed` (an int) makes the samples reproducible: temperature `i` of the list
    samples with seed `seed + i`; `None` draws fresh ones. `features` may be the
    window's log-mel features or its encoder output (`decoding.encode`); features are
    encoded once, not at every temperature, and the window's cross-attention keys and
    values and its prompt's prefill are computed once too (`generate`'s `memo`).
    """
    features = encode(backbone, features)
    memo: dict = {}
    result = None
    for step, temperature in enumerate(temperatures):
        result = generate(
            backbone,
            tokenizer,
            features,
            window_options(options, temperature, best_of),
            seed=None if seed is None else seed + step,
            memo=memo,
        )[0]
        needs_fallback = False
        if (
            compression_ratio_threshold is not None
            and result.compression_ratio > compression_ratio_threshold
        ):
            needs_fallback = True
        if logprob_threshold is not None and result.avg_logprob < logprob_threshold:
            needs_fallback = True
        if (
            no_speech_threshold is not None
            and result.no_speech_prob > no_speech_threshold
            and logprob_threshold is not None
            and result.avg_logprob < logprob_threshold
        ):
            needs_fallback = False  # silence: keep the result, the window is skipped
        if not needs_fallback:
            break
    return result


# `transcribe_segments`'s audio when `check_transcribe_options` only checks the options.
_CHECK_ONLY = object()


def check_transcribe_options(backbone, tokenizer, **options: Any) -> None:
    """Check `transcribe_segments` options without any audio.

    Raises the `ValueError` a `transcribe_segments` call with these options would raise
    before reading its audio (unknown names, bad values, every fallback temperature's
    decoding options, a language the model lacks), so a caller with many inputs can
    refuse bad options once, up front.

    Args:
        backbone: a `WhisperBackbone`.
        tokenizer: its `WhisperTokenizer`.
        **options: `transcribe_segments`'s keyword arguments.
    """
    transcribe_segments(backbone, tokenizer, _CHECK_ONLY, **options)


def transcribe_segments(
    backbone,
    tokenizer,
    audio,
    *,
    language: str | None = None,
    task: str = "transcribe",
    temperature: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    compression_ratio_threshold: float | None = 2.4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    condition_on_previous_text: bool = True,
    prompt_reset_on_temperature: float = 0.5,
    initial_prompt: str | None = None,
    carry_initial_prompt: bool = False,
    silence_threshold_db: float | None = -70.0,
    clip_timestamps: str | Sequence[float] | None = None,
    vad_filter: bool = False,
    vad_options: Any = None,
    multilingual: bool = False,
    language_detection_segments: int = 1,
    language_detection_threshold: float = 0.5,
    progress: Callable[[float], None] | None = None,
    seed: int | None = None,
    word_timestamps: bool = False,
    hallucination_silence_threshold: float | None = None,
    alignment_heads: Sequence[tuple[int, int]] | None = None,
    prepend_punctuations: str = alignment.PREPEND_PUNCTUATIONS,
    append_punctuations: str = alignment.APPEND_PUNCTUATIONS,
    **decode_options: Any,
) -> tuple[Iterator[Segment], TranscriptionInfo]:
    """Transcribe audio of any length, yielding segments as windows are decoded.

    Args:
        backbone: a `WhisperBackbone` with real weights.
        tokenizer: its `WhisperTokenizer`.
        audio: a path, bytes, file object or 16 kHz mono float array.
        language: a language code or name; `None` detects it (multilingual
            models) or uses English (`.en` models).
        task: `"transcribe"` or `"translate"` (to English; multilingual only).
        temperature: one temperature, or the fallback sequence.
        compression_ratio_threshold: retry when the text's gzip compression
            ratio is above this.
        logprob_threshold: retry when the average log-probability is below this.
        no_speech_threshold: with a low log-probability, treat a window whose
            no-speech probability is above this as silence and skip it.
        condition_on_previous_text: give the previous window's text as prompt.
        prompt_reset_on_temperature: a window decoded at a temperature above this
            (a fallback) prompts no later window (0.5, openai-whisper's rule;
            faster-whisper's option).
        initial_prompt: text to prompt the first window with. Of a prompt
            longer than half the decoder's context only the last 223 tokens are
            used (OpenAI's rule).
        carry_initial_prompt: put `initial_prompt` before the prompt of every
            window, not only the first (openai-whisper's option): the previous text
            fills the rest of the prompt's room (half the decoder's context), its
            oldest tokens dropped first.
        silence_threshold_db: a window whose loudest sample is below this many
            dB full scale (-70 dBFS: about 10 steps of 16-bit audio) is skipped
            without decoding; Whisper tends to invent a word ("you") in digital
            silence, and the no-speech rule does not always catch it. `None`
            decodes every window, as openai-whisper does.
        clip_timestamps: transcribe only these parts of the audio: seconds as
            `"start,end,start,end,..."` or a list of numbers (an odd last start runs
            to the end), as openai-whisper's and faster-whisper's option. Each clip
            is decoded window by window from its start; segments keep the audio's
            times. `None` (default) transcribes everything.
        vad_filter: drop the non-speech parts first (Silero VAD, `pip install
            'keras-whisper[vad]'`) and transcribe the speech laid end to end;
            segment times are mapped back onto the original audio (as
            faster-whisper's `vad_filter=True`).
        vad_options: `keras_whisper.vad.VadOptions` or a dict of its fields.
        multilingual: detect the language of every window and decode it in that
            language, for speech that changes language (faster-whisper's option; a
            given `language` then only names the first). The transcription's
            `language` stays the first window's. Multilingual models only.
        language_detection_segments: with `language=None`, how many 30-s windows
            from the start may be looked at to detect the language (faster-whisper's
            option): the first whose likeliest language is above
            `language_detection_threshold` decides; if none is, the language most
            windows found, at its highest probability. Defaults to 1.
        language_detection_threshold: see `language_detection_segments`.
        progress: called with the number of seconds of audio done so far.
        seed: int. Seeds the sampling of the temperature fallback: the same seed,
            audio and options give the same transcript. `None` (default) draws
            fresh samples each run, as openai-whisper does.
        word_timestamps: give every segment its `words` (`alignment.Word`: text,
            start, end, probability), from the decoder's cross-attention aligned
            with the audio (`keras_whisper.alignment`); segments' ends snap to their
            words, and the next window starts after the last word (as openai-whisper
            and faster-whisper do). One more decoder pass per window.
        hallucination_silence_threshold: with `word_timestamps`, seconds of silence
            around a segment whose words look hallucinated (improbable, very short
            or very long) for it to be dropped and the silence before it skipped
            (openai-whisper's and faster-whisper's option); `None` (default) keeps
            every segment.
        alignment_heads: the `(layer, head)` pairs whose cross-attention follows
            the speech; `None` takes every head of the second half of the decoder's
            layers (`WhisperSpeechToText` passes its preset's heads).
        prepend_punctuations, append_punctuations: with `word_timestamps`, the
            marks joined to the word after, or before, them.
        **decode_options: `DecodingOptions` fields (beam_size, best_of, hotwords,
            patience, length_penalty, suppress_tokens, suppress_blank,
            without_timestamps, max_initial_timestamp, prefix, repetition_penalty,
            no_repeat_ngram_size).

    Returns:
        `(segments, info)`: a generator of `Segment`s and a
        `TranscriptionInfo` (language and its probability, duration).
    """
    # Options are checked before any audio is read or decoded.
    check_option_names(decode_options, transcribe_segments)
    if hallucination_silence_threshold is not None and not word_timestamps:
        raise ValueError(
            "hallucination_silence_threshold needs word_timestamps=True: the silences "
            "around a segment are found from its words."
        )
    clip_seconds = parse_clip_timestamps(clip_timestamps)
    if clip_seconds and vad_filter:
        raise ValueError(
            "clip_timestamps and vad_filter both choose which audio to transcribe: give "
            "one of them."
        )
    if multilingual and not tokenizer.is_multilingual:
        raise ValueError(
            "multilingual=True detects each window's language, and this model is "
            "English-only: use a multilingual preset (e.g. whisper_base_multi)."
        )
    segments_count = language_detection_segments
    if (
        isinstance(segments_count, bool)
        or not isinstance(segments_count, int)
        or segments_count < 1
    ):
        raise ValueError(
            "`language_detection_segments` must be a positive integer (30-s windows); got "
            f"{language_detection_segments!r}."
        )
    language = resolve_language(tokenizer, language, task)
    # best_of applies to the sampled temperatures only (OpenAI's fallback).
    best_of = decode_options.pop("best_of", None)
    options = DecodingOptions(task=task, language=language, **decode_options)
    temperatures = _temperatures(temperature)
    for value in temperatures:  # every window's options, so no bad one waits for a hard window
        window_options(options, value, best_of)
    filters.suppressed_token_ids(tokenizer, options.suppress_tokens)  # ids within the vocabulary
    if audio is _CHECK_ONLY:
        return iter(()), None

    waveform = load_audio(audio)
    duration = waveform.shape[0] / SAMPLE_RATE
    timeline = None
    if vad_filter:
        from keras_whisper import vad

        speech = vad.get_speech_timestamps(waveform, vad_options)
        timeline = vad.TimestampMap(speech, precision=None) if speech else None
        pieces = [waveform[s["start"] : s["end"]] for s in speech]
        waveform = np.concatenate(pieces) if pieces else np.zeros((0,), np.float32)
    mel = log_mel_spectrogram(waveform, backbone.num_mels, padding=N_SAMPLES)
    content_frames = mel.shape[0] - N_FRAMES
    clips = clip_frames(clip_seconds, content_frames)
    # Loudest sample of each mel frame's hop, for the digital-silence gate.
    frame_peaks = _frame_peaks(waveform, content_frames)

    language_probability = None
    if language is None:
        # openai-whisper detects on the first window of the padded-audio mel; from
        # the first clip's start, as faster-whisper (the whole audio's start without clips).
        first_frame = clips[0][0] if clips[0][0] < content_frames else 0
        language, language_probability = _detect_over_windows(
            backbone,
            tokenizer,
            mel,
            first_frame,
            content_frames,
            language_detection_segments,
            language_detection_threshold,
        )
        options = dataclasses.replace(options, language=language)

    # One seed per decoded window, drawn in window order from `seed`.
    window_seeds = seed_stream(seed)

    def segments() -> Iterator[Segment]:
        ts_begin = tokenizer.timestamp_begin
        all_tokens: list[int] = []
        prompt_reset_since = 0
        last_speech = 0.0  # where the last word ended (word timestamps)
        initial_tokens = tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
        all_tokens.extend(initial_tokens)
        # What the previous text may fill of a carried prompt (openai-whisper's rule).
        room = backbone.max_decoder_sequence_length // 2 - 1 - len(initial_tokens)
        next_id = 0
        for clip_start, clip_end in clips:
            seek = clip_start
            while seek < clip_end:
                window_start = seek
                time_offset = seek / FRAMES_PER_SECOND
                segment_size = min(N_FRAMES, clip_end - seek)
                if silence_threshold_db is not None and (
                    20 * np.log10(frame_peaks[seek : seek + segment_size].max() + 1e-12)
                    < silence_threshold_db
                ):
                    # Digital silence: Whisper would often "hear" a word ("you") in it.
                    seek += segment_size
                    if progress:
                        progress(min(seek, content_frames) / FRAMES_PER_SECOND)
                    continue
                window = pad_or_trim(mel[seek : seek + segment_size], N_FRAMES, axis=0)
                window = window[None].astype("float32")
                # Encoded once, for the language detection, every temperature of the
                # fallback and the word alignment alike.
                window = encode(backbone, window)
                window_options = options
                if multilingual:
                    _, probabilities = detect_language(backbone, tokenizer, window)
                    spoken = max(probabilities[0], key=probabilities[0].get)
                    window_options = dataclasses.replace(options, language=spoken)
                prompt = _window_prompt(
                    all_tokens,
                    initial_tokens,
                    prompt_reset_since,
                    carry_initial_prompt,
                    room,
                    backbone.max_decoder_sequence_length // 2 - 1,
                )
                result = decode_with_fallback(
                    backbone,
                    tokenizer,
                    window,
                    dataclasses.replace(window_options, prompt=prompt or None),
                    temperatures,
                    compression_ratio_threshold,
                    logprob_threshold,
                    no_speech_threshold,
                    best_of,
                    seed=next(window_seeds),
                )
                if no_speech_threshold is not None and result.no_speech_prob > no_speech_threshold:
                    if logprob_threshold is None or result.avg_logprob <= logprob_threshold:
                        seek += segment_size  # silence: nothing to report
                        if progress:
                            progress(min(seek, content_frames) / FRAMES_PER_SECOND)
                        continue

                pieces, advance = split_segments(result.tokens, ts_begin, time_offset, segment_size)
                seek += advance
                pieces = [{"start": a, "end": b, "tokens": t, "words": None} for a, b, t in pieces]
                if word_timestamps:
                    seek, whole_window, last_speech = _place_words(
                        backbone,
                        tokenizer,
                        window,
                        pieces,
                        result.tokens,
                        window_options,
                        window_start=window_start,
                        window_frames=segment_size,
                        seek=seek,
                        content_frames=content_frames,
                        last_speech=last_speech,
                        heads=alignment_heads,
                        punctuations=(prepend_punctuations, append_punctuations),
                        hallucination_threshold=hallucination_silence_threshold,
                    )
                    if whole_window:
                        continue  # a hallucination after silence: decode from it

                for piece in pieces:
                    start, end, words = piece["start"], piece["end"], piece["words"]
                    text_tokens = [int(t) for t in piece["tokens"] if t < tokenizer.eot]
                    text = tokenizer.decode(text_tokens)
                    if start == end or not text.strip():
                        continue  # nothing said: no segment (faster-whisper), no prompt tokens
                    kept = [int(t) for t in piece["tokens"]]
                    all_tokens.extend(kept)
                    if timeline is not None:
                        start = timeline.original_time(start)
                        end = timeline.original_time(end, is_end=True)
                        if words:
                            words = [alignment.restore_word(timeline, w) for w in words]
                            start, end = words[0].start, words[-1].end
                    segment = Segment.of_window(
                        result,
                        id=next_id,
                        seek=int(window_start),
                        start=round(start, 3),
                        end=round(end, 3),
                        text=text,
                        tokens=kept,
                        words=words,
                    )
                    next_id += 1
                    yield segment
                if (
                    not condition_on_previous_text
                    or result.temperature > prompt_reset_on_temperature
                ):
                    prompt_reset_since = len(all_tokens)
                if progress:
                    progress(min(seek, content_frames) / FRAMES_PER_SECOND)

    info = TranscriptionInfo(language, language_probability, duration)
    return segments(), info


def _detect_over_windows(
    backbone, tokenizer, mel, first_frame: int, content_frames: int, count: int, threshold: float
) -> tuple[str, float]:
    """The language and its probability from up to `count` windows from `first_frame`
    (faster-whisper's rule: the first window sure enough decides, else the majority)."""
    found: dict[str, list[float]] = {}
    start = first_frame
    for _ in range(count):
        window = pad_or_trim(mel[start:], N_FRAMES, axis=0)[None].astype("float32")
        _, probabilities = detect_language(backbone, tokenizer, window)
        language = max(probabilities[0], key=probabilities[0].get)
        probability = float(probabilities[0][language])
        if probability > threshold:
            return language, probability
        found.setdefault(language, []).append(probability)
        start += N_FRAMES
        if start >= max(content_frames, first_frame + 1):
            break
    language = max(found, key=lambda code: len(found[code]))
    return language, max(found[language])


def _window_prompt(
    all_tokens: list[int],
    initial_tokens: list[int],
    reset_since: int,
    carry_initial: bool,
    room: int,
    keep: int,
) -> list[int]:
    """The previous text a window is prompted with: all of it since the last reset (of
    which decoding keeps the last `keep` tokens, so only those are passed: an hour's
    transcript is not copied and checked at every window); or, carrying the initial
    prompt, that prompt then the latest text that fits in `room` tokens
    (openai-whisper's `carry_initial_prompt`)."""
    if not carry_initial:
        return all_tokens[max(reset_since, len(all_tokens) - keep) :]
    since = max(len(initial_tokens), reset_since)
    return initial_tokens + (all_tokens[since:][-room:] if room > 0 else [])


def _place_words(
    backbone,
    tokenizer,
    encoded,
    pieces: list[dict],
    tokens: Sequence[int],
    options: DecodingOptions,
    *,
    window_start: int,
    window_frames: int,
    seek: int,
    content_frames: int,
    last_speech: float,
    heads,
    punctuations: tuple[str, str],
    hallucination_threshold: float | None,
) -> tuple[int, bool, float]:
    """Give a window's segments (`pieces`) their words, and say where the next window
    starts: `(seek, whether the whole window is dropped, end of the last word)`.

    The words come from `alignment` on the window's encoder output; unless the window
    ended on a lone timestamp, the next one starts after the last word (which may lie
    past the last timestamp pair); `hallucination_threshold` then drops hallucinated
    segments (`_skip_hallucinations`).
    """
    time_offset = window_start / FRAMES_PER_SECOND
    found = alignment.find_alignment(
        backbone,
        tokenizer,
        encoded,
        [t for piece in pieces for t in piece["tokens"] if t < tokenizer.eot],
        window_frames,
        sot_sequence=tokenizer.sot_sequence(options.language, options.task),
        language=options.language,
        heads=heads,
    )
    alignment.add_word_timestamps(
        pieces, found, time_offset, last_speech, tokenizer.eot, *punctuations
    )
    last_word_end = _last_word_end(pieces)
    single_ending = ends_on_single_timestamp(tokens, tokenizer.timestamp_begin)
    if not single_ending and last_word_end is not None and last_word_end > time_offset:
        seek = round(last_word_end * FRAMES_PER_SECOND)
    if hallucination_threshold is not None:
        skip = _skip_hallucinations(
            pieces,
            hallucination_threshold,
            window_start,
            window_frames,
            content_frames,
            last_speech,
        )
        if skip is not None:
            seek, whole_window = skip
            if whole_window:
                return seek, True, last_speech
        last_word_end = _last_word_end(pieces)
    return seek, False, last_speech if last_word_end is None else last_word_end


def _skip_hallucinations(
    pieces: list[dict],
    threshold: float,
    window_start: int,
    window_frames: int,
    content_frames: int,
    last_speech: float,
) -> tuple[int, bool] | None:
    """Drop a window's hallucinated segments: `(next seek, whether the whole window
    goes)`, or `None` when nothing looks hallucinated.

    As faster-whisper's `hallucination_silence_threshold`: when the window's first
    segment with words looks hallucinated (`alignment.is_segment_anomaly`) and starts
    more than `threshold` seconds in, the whole window goes and the next one starts at
    that segment (the silence before it skipped). Otherwise the first such segment
    with silence (or another hallucination) before and after it is dropped from
    `pieces`, with everything after it, and the next window starts there.
    """
    time_offset = window_start / FRAMES_PER_SECOND
    window_seconds = window_frames / FRAMES_PER_SECOND
    with_words = [p for p in pieces if p["words"]]
    if with_words and alignment.is_segment_anomaly(with_words[0]["words"]):
        gap = with_words[0]["start"] - time_offset
        if gap > threshold:
            return window_start + round(gap * FRAMES_PER_SECOND), True
    window_end = time_offset + N_FRAMES / FRAMES_PER_SECOND
    content_seconds = content_frames / FRAMES_PER_SECOND
    previous_end = last_speech
    for index, piece in enumerate(pieces):
        if not piece["words"]:
            continue
        if alignment.is_segment_anomaly(piece["words"]):
            following = next((p for p in pieces[index + 1 :] if p["words"]), None)
            next_start = following["words"][0].start if following else None
            if next_start is None:
                next_start = time_offset + window_seconds
            silence_before = (
                piece["start"] - previous_end > threshold
                or piece["start"] < threshold
                or piece["start"] - time_offset < 2.0
            )
            silence_after = (
                next_start - piece["end"] > threshold
                or alignment.is_segment_anomaly(following["words"] if following else None)
                or window_end - piece["end"] < 2.0
            )
            if silence_before and silence_after:
                seek = round(max(time_offset + 1, piece["start"]) * FRAMES_PER_SECOND)
                if content_seconds - piece["end"] < threshold:
                    seek = content_frames
                del pieces[index:]
                return seek, False
        previous_end = piece["end"]
    return None


def _last_word_end(pieces: list[dict]) -> float | None:
    """The end of the last word of a window's segments, else of its last segment."""
    for piece in reversed(pieces):
        if piece["words"]:
            return piece["words"][-1].end
    return pieces[-1]["end"] if pieces else None


def transcribe(backbone, tokenizer, audio, **kwargs: Any) -> TranscriptionResult:
    """Transcribe audio of any length (see `transcribe_segments` for the arguments).

    Returns:
        A `TranscriptionResult`: the full `text`, the `language` and its
        probability, the `segments` and the audio `duration`.
    """
    segments, info = transcribe_segments(backbone, tokenizer, audio, **kwargs)
    collected = list(segments)
    text = "".join(s.text for s in collected)
    return TranscriptionResult(
        text=text.strip() if text else "",
        language=info.language,
        language_probability=info.language_probability,
        segments=collected,
        duration=info.duration,
    )
