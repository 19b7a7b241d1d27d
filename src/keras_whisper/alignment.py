"""Word-level timestamps: the decoder's cross-attention aligned with the audio.

Once a window is decoded, its text goes through the decoder once more
(`WhisperBackbone.cross_attention_scores`, compiled once per length bucket on JAX).
The cross-attention of a few "alignment heads", which in Whisper follow the speech,
is turned into a `(token, 20-ms frame)` cost: softmax over the window's frames,
normalised over the tokens, median-filtered along time, averaged over the heads.
Dynamic time warping finds the cheapest monotonic path through it, and a word starts
and ends where the path enters its first and leaves its last token. Then, as OpenAI's
`add_word_timestamps` (which faster-whisper shares): punctuation joins its neighbour
word, words that run implausibly long at sentence ends or after pauses are cut to
twice the median word length, and the segments' ends are snapped to their words.

The tests compare the words, times and probabilities with faster-whisper's
(CTranslate2's own alignment) on real speech.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from keras import ops

from keras_whisper.decoding.generate import _run, _to_numpy

# The defaults of openai-whisper and faster-whisper.
PREPEND_PUNCTUATIONS = "\"'\u201c\u00bf([{-"
APPEND_PUNCTUATIONS = "\"'.\u3002,\uff0c!\uff01?\uff1f:\uff1a\u201d)]}\u3001"
MEDIAN_FILTER_WIDTH = 7
FRAMES_PER_POSITION = 2  # mel frames per encoder position
POSITIONS_PER_SECOND = 50  # encoder positions (2 mel hops of 10 ms) per second
SENTENCE_END_MARKS = ".\u3002!\uff01?\uff1f"
# Token sequences are padded to the first of these that holds them (else to the decoder's
# context) before the compiled pass: at most five compilations per model.
LENGTH_BUCKETS = (32, 64, 128, 256)


@dataclasses.dataclass
class Word:
    """One word of a segment: its text (with its leading space), times and probability."""

    start: float
    end: float
    word: str
    probability: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def default_alignment_heads(num_layers: int, num_heads: int) -> tuple[tuple[int, int], ...]:
    """OpenAI's fallback when a model comes without alignment heads: every head of the
    decoder's second half of layers, as `(layer, head)` pairs."""
    return tuple(
        (layer, head) for layer in range(num_layers // 2, num_layers) for head in range(num_heads)
    )


# Where a preset folder may record its alignment heads, and under which key: ours, a
# converted CTranslate2 model's config, a Hugging Face generation config.
_HEAD_FILES = (
    ("assets/alignment_heads.json", "alignment_heads"),
    ("assets/ctranslate2_config.json", "alignment_heads"),
    ("generation_config.json", "alignment_heads"),
)


def read_alignment_heads(preset_dir) -> tuple[tuple[int, int], ...] | None:
    """The alignment heads a preset folder records, as `(layer, head)` pairs, or `None`.

    Looks in `assets/alignment_heads.json` (`WhisperSpeechToText.save_to_preset`),
    `assets/ctranslate2_config.json` (kept by the CTranslate2 converter), a Hugging
    Face `generation_config.json` and an MLX folder's `alignment_heads` tensor.

    Args:
        preset_dir: a preset folder.
    """
    folder = Path(preset_dir)
    for name, key in _HEAD_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            heads = json.loads(path.read_text("utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if heads:
            return tuple((int(layer), int(head)) for layer, head in heads)
    from keras_whisper.converters.mlx import read_alignment_heads as mlx_heads

    heads = mlx_heads(folder)
    return None if heads is None else tuple((int(layer), int(head)) for layer, head in heads)


def write_alignment_heads(preset_dir, heads: Sequence[tuple[int, int]]) -> None:
    """Record `heads` in a preset folder, where `read_alignment_heads` finds them."""
    path = Path(preset_dir) / "assets" / "alignment_heads.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs = [[int(layer), int(head)] for layer, head in heads]
    path.write_text(json.dumps({"alignment_heads": pairs}) + "\n", "utf-8")


def check_alignment_heads(heads, num_layers: int, num_heads: int) -> tuple[tuple[int, int], ...]:
    """`heads` as `(layer, head)` pairs, checked against the decoder's shape."""
    try:
        pairs = tuple((int(layer), int(head)) for layer, head in heads)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"`alignment_heads` must be (layer, head) pairs of ints; got {heads!r}."
        ) from error
    bad = [p for p in pairs if not (0 <= p[0] < num_layers and 0 <= p[1] < num_heads)]
    if not pairs or bad:
        raise ValueError(
            f"`alignment_heads` must be non-empty (layer, head) pairs of this decoder "
            f"({num_layers} layers of {num_heads} heads); got {list(pairs)}."
        )
    return pairs


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window of odd `width` along the last axis, reflect-padded.

    A last axis no longer than `width // 2` cannot be reflect-padded and is returned
    as it is (as openai-whisper does).
    """
    if width <= 1:
        return x
    if width % 2 == 0:
        raise ValueError(f"The median filter's width must be odd; got {width}.")
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.partition(windows, pad, axis=-1)[..., pad]


def dynamic_time_warping(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through `cost` `(tokens, frames)`, from `(0, 0)`.

    Steps go one token and one frame on (diagonal), one token on, or one frame on;
    ties prefer the frame step, then the token step, as openai-whisper's `dtw`. The
    cells of one anti-diagonal depend only on the two before it, so each anti-diagonal
    is computed at once (in float32, the reference's arithmetic), on arrays stored by
    anti-diagonal (`[i + j, i]`) so that its neighbours are plain slices.

    Returns:
        `(token_indices, frame_indices)`: the path, in order.
    """
    cost = np.asarray(cost, dtype=np.float32)
    n, m = cost.shape
    # total[i, j] (the cheapest path to cell (i - 1, j - 1); row and column 0 are the
    # start) is kept at totals[i + j, i]; the step taken into it at steps[i + j, i].
    totals = np.full((n + m + 1, n + 1), np.inf, dtype=np.float32)
    totals[0, 0] = 0.0
    steps = np.zeros((n + m + 1, n + 1), dtype=np.int8)
    skewed = np.zeros((n + m + 1, n + 1), dtype=np.float32)
    rows, cols = np.meshgrid(np.arange(1, n + 1), np.arange(1, m + 1), indexing="ij")
    skewed[rows + cols, rows] = cost
    for diagonal in range(2, n + m + 1):
        lo, hi = max(1, diagonal - m), min(n, diagonal - 1)
        c0 = totals[diagonal - 2, lo - 1 : hi]  # diagonal step, from (i - 1, j - 1)
        c1 = totals[diagonal - 1, lo - 1 : hi]  # token step, from (i - 1, j)
        c2 = totals[diagonal - 1, lo : hi + 1]  # frame step, from (i, j - 1)
        step = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        best = np.where(step == 0, c0, np.where(step == 1, c1, c2))
        totals[diagonal, lo : hi + 1] = skewed[diagonal, lo : hi + 1] + best
        steps[diagonal, lo : hi + 1] = step
    path = []
    i, j = n, m
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        # Along the first row only frame steps remain, along the first column token steps.
        step = 2 if i == 0 else 1 if j == 0 else steps[i + j, i]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path = np.array(path[::-1], dtype=np.int64).reshape(-1, 2)
    return path[:, 0], path[:, 1]


def _alignment_stage(model, encoder_output, tokens, targets, layer_ids, head_ids, eot):
    """Probabilities of `targets` at each position and the alignment heads' scores."""
    cross_cache = model.cross_attention_cache(encoder_output)
    logits, scores = model.cross_attention_scores(tokens, cross_cache)
    heads = ops.stack(
        [scores[layer][0, head] for layer, head in zip(layer_ids, head_ids, strict=True)]
    )
    text_logits = ops.cast(logits[0, :, :eot], "float32")
    log_probs = text_logits - ops.logsumexp(text_logits, axis=-1, keepdims=True)
    chosen = ops.take_along_axis(log_probs, ops.expand_dims(targets, -1), axis=-1)[:, 0]
    return ops.exp(chosen), heads


def _alignment_outputs(backbone, encoder_output, tokens, targets, heads, eot):
    layer_ids = tuple(int(layer) for layer, _ in heads)
    head_ids = tuple(int(head) for _, head in heads)
    length = len(tokens)
    limit = backbone.max_decoder_sequence_length
    padded = next((b for b in LENGTH_BUCKETS if length <= b), limit)
    padded = max(min(padded, limit), length)
    token_array = np.full((1, padded), eot, dtype="int32")
    token_array[0, :length] = tokens
    target_array = np.zeros((padded,), dtype="int32")
    target_array[: len(targets)] = targets

    def stage(model, encoded, token_ids, target_ids):
        return _alignment_stage(model, encoded, token_ids, target_ids, layer_ids, head_ids, eot)

    probs, scores = _run(
        backbone,
        ("align", layer_ids, head_ids, eot),
        stage,
        encoder_output,
        token_array,
        target_array,
    )
    return _to_numpy(probs)[:length], _to_numpy(scores)[:, :length]


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def find_alignment(
    backbone,
    tokenizer,
    encoder_output,
    text_tokens: Sequence[int],
    num_frames: int,
    *,
    sot_sequence: Sequence[int],
    language: str | None = None,
    heads: Sequence[tuple[int, int]] | None = None,
    median_filter_width: int = MEDIAN_FILTER_WIDTH,
) -> list[dict]:
    """Each word of `text_tokens` with its start and end in the window and its probability.

    Args:
        backbone: a `WhisperBackbone`.
        tokenizer: its `WhisperTokenizer`.
        encoder_output: the window's encoder output, `(1, positions, hidden_dim)`.
        text_tokens: the window's text tokens (no timestamps, no special tokens).
        num_frames: how many mel frames of the window hold audio.
        sot_sequence: the start-of-transcript tokens the window was decoded with.
        language: the transcript's language (words split on characters for
            languages written without spaces).
        heads: `(layer, head)` pairs of the alignment heads; defaults to
            `default_alignment_heads`.
        median_filter_width: odd width of the median filter along time.

    Returns:
        A list of `{"word", "tokens", "start", "end", "probability"}`, times in
        seconds from the window's start; empty when there are no words.
    """
    text_tokens = [int(t) for t in text_tokens]
    if not text_tokens:
        return []
    num_layers = len(backbone.decoder_transformer_layers)
    if heads is None:
        heads = default_alignment_heads(num_layers, backbone.num_heads)
    heads = check_alignment_heads(heads, num_layers, backbone.num_heads)
    eot = tokenizer.eot
    prefix = [*sot_sequence, tokenizer.no_timestamps]
    tokens = prefix + text_tokens + [eot]
    # The text token each of the text positions predicts (the position of
    # <|notimestamps|> predicts the first one).
    probs, scores = _alignment_outputs(
        backbone,
        encoder_output,
        tokens,
        [0] * (len(prefix) - 1) + text_tokens,
        heads,
        eot,
    )
    text_token_probs = probs[len(prefix) - 1 : len(prefix) - 1 + len(text_tokens)]

    weights = _softmax(scores[:, :, : num_frames // FRAMES_PER_POSITION].astype(np.float32), -1)
    mean = weights.mean(axis=-2, keepdims=True)
    std = weights.std(axis=-2, keepdims=True)
    weights = median_filter((weights - mean) / std, median_filter_width)
    matrix = weights.mean(axis=0)[len(prefix) - 1 : -1]
    token_indices, frame_indices = dynamic_time_warping(-matrix)

    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [eot], language)
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(token_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = frame_indices[jumps] / POSITIONS_PER_SECOND
    starts = jump_times[boundaries[:-1]]
    ends = jump_times[boundaries[1:]]
    return [
        {
            "word": word,
            "tokens": list(group),
            "start": float(start),
            "end": float(end),
            "probability": float(np.mean(text_token_probs[i:j])),
        }
        for word, group, start, end, i, j in zip(
            words[:-1], word_tokens[:-1], starts, ends, boundaries[:-1], boundaries[1:], strict=True
        )
    ]


def merge_punctuations(alignment: list[dict], prepended: str, appended: str) -> None:
    """Join opening punctuation to the word after it and closing punctuation to the word
    before it, in place (the emptied entries keep their place with no text or tokens)."""
    # Opening marks (a word of its own, after a space) go to the next word, right to left.
    following = len(alignment) - 1
    for index in range(len(alignment) - 2, -1, -1):
        previous = alignment[index]
        if previous["word"].startswith(" ") and previous["word"].strip() in prepended:
            alignment[following]["word"] = previous["word"] + alignment[following]["word"]
            alignment[following]["tokens"] = previous["tokens"] + alignment[following]["tokens"]
            previous["word"], previous["tokens"] = "", []
        else:
            following = index
    # Closing marks go to the word before them, left to right.
    target = 0
    for index in range(1, len(alignment)):
        current = alignment[index]
        if not alignment[target]["word"].endswith(" ") and current["word"] in appended:
            alignment[target]["word"] += current["word"]
            alignment[target]["tokens"] = alignment[target]["tokens"] + current["tokens"]
            current["word"], current["tokens"] = "", []
        else:
            target = index


def add_word_timestamps(
    segments: list[dict],
    alignment: list[dict],
    time_offset: float,
    last_speech_timestamp: float,
    eot: int,
    prepend_punctuations: str = PREPEND_PUNCTUATIONS,
    append_punctuations: str = APPEND_PUNCTUATIONS,
) -> float:
    """Give one window's segments their words, and snap the segments' ends to them.

    Args:
        segments: the window's segments, dicts with `start`, `end` (seconds) and
            `tokens`; each gets a `words` list of `Word`s, and its `start` / `end`
            may move to its first / last word's.
        alignment: `find_alignment`'s words for the text tokens of all `segments`.
        time_offset: where the window starts, in seconds.
        last_speech_timestamp: where the speech before this window ended.
        eot: the id of `<|endoftext|>` (text tokens are the ids below it).
        prepend_punctuations, append_punctuations: the marks that join the word
            after, or before, them.

    Returns:
        The new `last_speech_timestamp`.
    """
    durations = np.array([w["end"] - w["start"] for w in alignment])
    durations = durations[durations.nonzero()]
    median_duration = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    max_duration = median_duration * 2

    # A word at a sentence's end or start may not outlast twice the median word.
    if len(durations):
        for index in range(1, len(alignment)):
            word = alignment[index]
            if word["end"] - word["start"] > max_duration:
                if word["word"] in SENTENCE_END_MARKS:
                    word["end"] = word["start"] + max_duration
                elif alignment[index - 1]["word"] in SENTENCE_END_MARKS:
                    word["start"] = word["end"] - max_duration

    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    position = 0
    for segment in segments:
        count = sum(1 for t in segment["tokens"] if t < eot)
        taken = 0
        words: list[Word] = []
        while position < len(alignment) and taken < count:
            timing = alignment[position]
            if timing["word"]:
                words.append(
                    Word(
                        start=round(time_offset + timing["start"], 2),
                        end=round(time_offset + timing["end"], 2),
                        word=timing["word"],
                        probability=timing["probability"],
                    )
                )
            taken += len(timing["tokens"])
            position += 1
        if words:
            _clamp_after_pause(words, last_speech_timestamp, median_duration, max_duration)
            first, last = words[0], words[-1]
            # The segment's own start and end win over a first or last word that runs long.
            if segment["start"] < first.end and segment["start"] - 0.5 > first.start:
                first.start = max(0.0, min(first.end - median_duration, segment["start"]))
            else:
                segment["start"] = first.start
            if segment["end"] > last.start and segment["end"] + 0.5 < last.end:
                last.end = max(last.start + median_duration, segment["end"])
            else:
                segment["end"] = last.end
            last_speech_timestamp = segment["end"]
        segment["words"] = words
    return last_speech_timestamp


def _clamp_after_pause(
    words: list[Word], last_speech: float, median_duration: float, max_duration: float
) -> None:
    """After a pause, the first (and second) word may not outlast twice the median."""
    first = words[0]
    second = words[1] if len(words) > 1 else None
    long_first = first.end - first.start > max_duration
    long_pair = second is not None and second.end - first.start > max_duration * 2
    if first.end - last_speech > median_duration * 4 and (long_first or long_pair):
        if second is not None and second.end - second.start > max_duration:
            boundary = max(second.end / 2, second.end - max_duration)
            first.end = second.start = boundary
        first.start = max(0.0, first.end - max_duration)


def restore_word(timeline, word: Word) -> Word:
    """`word` with its times on the original audio, for audio whose non-speech a VAD
    dropped: both ends through the speech chunk its middle falls in (faster-whisper's
    rule), in milliseconds.

    Args:
        timeline: a `keras_whisper.vad.TimestampMap`.
        word: a `Word` on the speech timeline.
    """
    chunk = timeline.chunk_index((word.start + word.end) / 2)
    return dataclasses.replace(
        word,
        start=round(timeline.original_time(word.start, chunk), 3),
        end=round(timeline.original_time(word.end, chunk), 3),
    )


# What does not count as a word when a segment's words are scored as a hallucination.
_NOT_WORDS = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS


def word_anomaly_score(word: Word) -> float:
    """How unlike speech a word's timing is: improbable (below 0.15), very short (under
    0.133 s) or very long (over 2 s) words score (openai-whisper's measure)."""
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def is_segment_anomaly(words: Sequence[Word] | None) -> bool:
    """Whether a segment looks hallucinated: its first 8 words (punctuation left out)
    score 3 or more, or nearly one a word."""
    if not words:
        return False
    scored = [w for w in words if w.word not in _NOT_WORDS][:8]
    score = sum(word_anomaly_score(w) for w in scored)
    return score >= 3 or score + 0.01 >= len(scored)
