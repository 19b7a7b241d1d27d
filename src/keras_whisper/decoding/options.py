"""`DecodingOptions` and `DecodingResult`, with OpenAI Whisper's names and defaults."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from typing import Any

_TASKS = ("transcribe", "translate")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(value: Any, name: str) -> None:
    if value is not None and (not _is_int(value) or value < 1):
        raise ValueError(f"`{name}` must be a positive integer or None; got {value!r}.")


def _check_tokens_or_text(value: Any, name: str) -> None:
    if value is None or isinstance(value, str):
        return
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, Sequence):
        raise ValueError(
            f"`{name}` must be a string, a list of token ids or None; got {type(value).__name__}."
        )
    if not all(_is_int(t) and t >= 0 for t in value):
        raise ValueError(f"`{name}` must hold non-negative integer token ids; got {value!r}.")


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    """How to decode one 30-second window: OpenAI Whisper's `DecodingOptions`.

    The fields, their names and defaults are those of `whisper.DecodingOptions`
    (openai-whisper v20250625), minus `fp16` (the backbone's dtype policy sets the
    precision). The combination is checked when the object is made, so a bad
    option fails before any computation.

    Args:
        task: string. `"transcribe"` (default) or `"translate"` (X to English,
            multilingual models only).
        language: string. Language code or name of the audio (`"en"`,
            `"german"`). `None` (default) detects it on multilingual models and
            means English on English-only models.
        temperature: float. `0.0` (default) decodes greedily (or with beam
            search); above zero, tokens are sampled from `softmax(logits / T)`.
        sample_len: int. The largest number of tokens to sample. Defaults to
            `None`: half the decoder's context, 224.
        best_of: int. With `temperature > 0`, the number of independent samples
            per audio; the best by `length_penalty` ranking is returned.
            Defaults to `None` (one sample).
        beam_size: int. Beam search with this many beams (temperature 0 only).
            Defaults to `None` (greedy).
        patience: float. Beam search keeps going until `round(beam_size *
            patience)` finished candidates per audio exist. Defaults to `None`
            (1.0); needs `beam_size`.
        length_penalty: float. `None` (default) ranks candidates by
            `sum_logprob / length`; `alpha` in `[0, 1]` ranks by
            `sum_logprob / ((5 + length) / 6) ** alpha` (Google NMT).
        prompt: string or list of ints. Text (or tokens) of the previous
            window, given to the decoder after `<|startofprev|>`; only the last
            223 tokens are kept. Defaults to `None`.
        prefix: string or list of ints. Text (or tokens) the transcript must
            start with, placed after the start-of-transcript sequence. Defaults
            to `None`.
        hotwords: string or list of ints. Words (or tokens) the speech is likely to
            hold, such as names or jargon, given to the decoder after
            `<|startofprev|>` and before the `prompt` (faster-whisper's option; its
            first 223 tokens are kept; ignored when a `prefix` is given, as there).
            Defaults to `None`.
        suppress_tokens: string or list of ints. Comma-separated token ids
            never to emit; `"-1"` (default) stands for the tokenizer's
            non-speech symbols. Whenever this is non-empty, the task, start and
            `<|nospeech|>` tokens are suppressed too; `""` disables the filter.
        suppress_blank: bool. Forbid a blank (`" "`) or `<|endoftext|>` as the
            first token. Defaults to `True`.
        without_timestamps: bool. Append `<|notimestamps|>` and sample text
            only. Defaults to `False` (timestamp tokens, with OpenAI's rules).
        max_initial_timestamp: float. The first timestamp may not exceed this
            many seconds. Defaults to `1.0`; `None` or `0.0` (OpenAI's quirk)
            removes the limit.
        repetition_penalty: float > 0. faster-whisper's (CTranslate2's) penalty on
            the tokens of the transcript so far (the prefix and the sampled tokens,
            timestamps included; not the prompt): their logits are divided by it
            when positive and multiplied by it when negative, before the other
            rules. Defaults to `1.0` (off); above 1 discourages repeating.
        no_repeat_ngram_size: int. faster-whisper's option: forbid any token that
            would repeat an n-gram of this size already in the transcript so far
            (the prefix and the sampled tokens). Defaults to `0` (off).

    Examples:
    ```python
    options = DecodingOptions(language="en", without_timestamps=True)
    beam = DecodingOptions(beam_size=5, patience=1.0)
    sampled = DecodingOptions(temperature=0.6, best_of=5)
    ```
    """

    task: str = "transcribe"
    language: str | None = None
    temperature: float = 0.0
    sample_len: int | None = None
    best_of: int | None = None
    beam_size: int | None = None
    patience: float | None = None
    length_penalty: float | None = None
    prompt: str | Sequence[int] | None = None
    prefix: str | Sequence[int] | None = None
    hotwords: str | Sequence[int] | None = None
    suppress_tokens: str | Sequence[int] | None = "-1"
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self):
        if self.task not in _TASKS:
            raise ValueError(f"`task` must be 'transcribe' or 'translate'; got {self.task!r}.")
        if self.language is not None and not isinstance(self.language, str):
            raise ValueError(f"`language` must be a string or None; got {self.language!r}.")
        temperature = self.temperature
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, numbers.Real)
            or not math.isfinite(temperature)
            or temperature < 0
        ):
            hint = (
                ""
                if isinstance(temperature, numbers.Real)
                else " For OpenAI's fallback over several temperatures, decode once per "
                "temperature (`transcribe` takes a list)."
            )
            raise ValueError(
                f"`temperature` must be a finite number >= 0; got {temperature!r}.{hint}"
            )
        _check_positive_int(self.sample_len, "sample_len")
        _check_positive_int(self.best_of, "best_of")
        _check_positive_int(self.beam_size, "beam_size")
        if self.beam_size is not None and self.best_of is not None:
            raise ValueError(
                "`beam_size` and `best_of` can't be given together: beam search is for "
                "temperature 0, `best_of` for sampling (temperature > 0)."
            )
        if temperature == 0 and self.best_of is not None:
            raise ValueError(
                "`best_of` with greedy decoding (temperature=0) is not compatible: every "
                "sample would be the same. Set temperature > 0, or use `beam_size`."
            )
        if temperature > 0 and self.beam_size is not None:
            raise ValueError(
                f"`beam_size` needs temperature=0 (beam search is deterministic); got "
                f"temperature={temperature}. Use `best_of` to draw several samples."
            )
        if self.patience is not None:
            if self.beam_size is None:
                raise ValueError("`patience` requires `beam_size` to be given.")
            if (
                isinstance(self.patience, bool)
                or not isinstance(self.patience, numbers.Real)
                or not self.patience > 0
            ):
                raise ValueError(f"`patience` must be a number > 0; got {self.patience!r}.")
            if round(self.beam_size * self.patience) < 1:
                raise ValueError(
                    f"beam_size={self.beam_size} with patience={self.patience} keeps "
                    f"round(beam_size * patience) = 0 finished candidates; raise `patience`."
                )
        if self.length_penalty is not None and (
            isinstance(self.length_penalty, bool)
            or not isinstance(self.length_penalty, numbers.Real)
            or not 0 <= self.length_penalty <= 1
        ):
            raise ValueError(
                "`length_penalty` (alpha) must be None or a value between 0 and 1; got "
                f"{self.length_penalty!r}."
            )
        _check_tokens_or_text(self.prompt, "prompt")
        _check_tokens_or_text(self.prefix, "prefix")
        self.suppress_token_ids(0)  # validates the format; ids are checked against a vocabulary
        if self.max_initial_timestamp is not None and (
            isinstance(self.max_initial_timestamp, bool)
            or not isinstance(self.max_initial_timestamp, numbers.Real)
            or not self.max_initial_timestamp >= 0
        ):
            raise ValueError(
                "`max_initial_timestamp` must be None or a number of seconds >= 0; got "
                f"{self.max_initial_timestamp!r}."
            )
        penalty = self.repetition_penalty
        if (
            isinstance(penalty, bool)
            or not isinstance(penalty, numbers.Real)
            or not math.isfinite(penalty)
            or not penalty > 0
        ):
            raise ValueError(
                f"`repetition_penalty` must be a finite number > 0 (1 is off); got {penalty!r}."
            )
        if not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0:
            raise ValueError(
                "`no_repeat_ngram_size` must be an integer >= 0 (0 is off); got "
                f"{self.no_repeat_ngram_size!r}."
            )

    @property
    def group_size(self) -> int:
        """Rows decoded per audio: `beam_size`, `best_of`, or 1."""
        return self.beam_size or self.best_of or 1

    def suppress_token_ids(self, vocabulary_size: int = 0) -> list[int] | None:
        """`parse_suppress_tokens(self.suppress_tokens, vocabulary_size)`."""
        return parse_suppress_tokens(self.suppress_tokens, vocabulary_size)


def parse_suppress_tokens(value: Any, vocabulary_size: int = 0) -> list[int] | None:
    """The ids of a `suppress_tokens` option, `-1` included; `None` if the filter is off.

    Args:
        value: string of comma-separated ints (`"-1"`, `"-1,50256"`), list of ints, or an
            empty string / list / `None` (the filter is disabled, as in OpenAI).
        vocabulary_size: int. Ids must lie below it; `0` skips that check.

    Returns:
        A list of ints (possibly holding `-1`), or `None` when the filter is disabled.
    """
    if value is None or (isinstance(value, (str, Sequence)) and len(value) == 0):
        return None
    if isinstance(value, str):
        try:
            ids = [int(part) for part in value.split(",")]
        except ValueError:
            raise ValueError(
                "`suppress_tokens` must be comma-separated integers such as '-1' or "
                f"'-1,50256', a list of ints, or ''; got {value!r}."
            ) from None
    elif isinstance(value, Sequence) and all(_is_int(t) for t in value):
        ids = [int(t) for t in value]
    else:
        raise ValueError(f"`suppress_tokens` must be a string or a list of ints; got {value!r}.")
    bad = [t for t in ids if t < -1 or (vocabulary_size and t >= vocabulary_size)]
    if bad:
        limit = f" and below the vocabulary size {vocabulary_size}" if vocabulary_size else ""
        raise ValueError(
            f"`suppress_tokens` ids must be -1 (non-speech symbols) or >= 0{limit}; got {bad}."
        )
    return ids


@dataclasses.dataclass
class DecodingResult:
    """The outcome of decoding one audio window (OpenAI's `DecodingResult`).

    Args:
        tokens: list of ints. The sampled tokens, without the prompt and the
            final `<|endoftext|>` (timestamps included).
        text: string. `tokens` decoded, timestamps dropped, stripped.
        avg_logprob: float. `sum_logprob / (len(tokens) + 1)` (the `+ 1` counts
            `<|endoftext|>`).
        sum_logprob: float. Sum of the log-probabilities of the chosen tokens
            (end token included) under the filtered, untempered distribution.
        no_speech_prob: float. Probability of `<|nospeech|>` at the
            `<|startoftranscript|>` position, before any filtering.
        temperature: float. The sampling temperature used.
        compression_ratio: float. UTF-8 length of `text` over its zlib-compressed
            length; high values flag repetition loops.
        language: string. The language code used (given, detected, or `"en"`).
        language_probs: dict. Detected language probabilities, when detected.
    """

    tokens: list[int]
    text: str
    avg_logprob: float
    sum_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    language: str | None = None
    language_probs: dict[str, float] | None = None
