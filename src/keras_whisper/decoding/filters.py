"""OpenAI Whisper's logit rules as vectorised `keras.ops` functions.

Each rule takes the next-token `logits` of a whole batch, `(batch, vocab)` float32,
and the token buffer `tokens`, `(batch, max_length)`, in which positions
`0 ... index - 1` hold the prompt and the tokens sampled so far (anything at or
after `index` is ignored). `index` (the position about to be sampled) and
`sample_begin` (the first sampled position) may be Python ints or scalar tensors,
so the rules compile inside a `keras.ops.while_loop`; `index` may also be a
`(batch,)` tensor, one position per row (the rows of a decoding pool). Nothing loops over rows:
every rule is a boolean mask built from comparisons against `ops.arange(vocab)`
and applied with `ops.where`.

The rules, in the order `generate` applies them (openai-whisper `decoding.py`):

1. `suppress_blank`: at the first sampled position, forbid `" "` and `<|endoftext|>`.
2. `suppress_tokens`: forbid a fixed set of tokens at every step.
3. `apply_timestamp_rules`: forbid `<|notimestamps|>`; make timestamps come in pairs
   and never decrease; start with a timestamp no later than
   `max_initial_timestamp`; prefer a timestamp when the timestamps' total
   probability beats every single text token.

Before them, when asked, faster-whisper's (CTranslate2's) rules on the transcript so far
(`tokens[begin:index]`, `begin` the first token after the start sequence):

- `repetition_penalty`: scale down the logits of the tokens already there;
- `no_repeat_ngram`: forbid the tokens that would repeat an n-gram already there.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from keras import ops

from keras_whisper import layers

NEG_INF = float("-inf")

# Stands for "no limit" when a rule's index bound is disabled (larger than any vocabulary).
NO_LIMIT = 2**30


def token_mask(vocabulary_size: int, token_ids: Iterable[int]) -> np.ndarray:
    """A boolean `(vocabulary_size,)` mask, `True` at `token_ids`.

    Args:
        vocabulary_size: int. The number of logits.
        token_ids: iterable of ints. Ids to mark; each must be in `[0, vocabulary_size)`.

    Returns:
        A NumPy bool array.

    Examples:
    ```python
    mask = token_mask(51864, [220, 50256])
    ```
    """
    ids = np.asarray(sorted(set(int(t) for t in token_ids)), dtype=np.int64)
    if ids.size and (ids[0] < 0 or ids[-1] >= vocabulary_size):
        raise ValueError(
            f"Token ids must lie in [0, {vocabulary_size}); got {ids[ids < 0].tolist()} "
            f"{ids[ids >= vocabulary_size].tolist()}."
        )
    mask = np.zeros(vocabulary_size, dtype=bool)
    mask[ids] = True
    return mask


def _vocab_ids(logits):
    return ops.arange(ops.shape(logits)[-1], dtype="int32")[None, :]


def suppress_blank(logits, tokens, index, sample_begin, blank_mask):
    """OpenAI's `SuppressBlank`: no blank or end token as the first sampled token.

    Args:
        logits: `(batch, vocab)` float logits.
        tokens: `(batch, max_length)` int token buffer (unused: the rule only depends
            on the position; kept for a uniform signature).
        index: int scalar (Python or tensor) or `(batch,)`. The position being sampled.
        sample_begin: int scalar. The first sampled position.
        blank_mask: `(vocab,)` bool, `True` at `encode(" ")` and `<|endoftext|>`.

    Returns:
        The logits with the masked tokens at `-inf` where `index == sample_begin`.

    Examples:
    ```python
    mask = token_mask(vocab, tokenizer.encode(" ") + [tokenizer.eot])
    logits = suppress_blank(logits, tokens, index, sample_begin, mask)
    ```
    """
    del tokens
    first = _per_row(ops.equal(index, sample_begin))
    mask = ops.logical_and(first, ops.convert_to_tensor(blank_mask)[None, :])
    return ops.where(mask, NEG_INF, logits)


def suppress_tokens(logits, tokens, suppress_mask):
    """OpenAI's `SuppressTokens`: forbid a fixed set of tokens at every step.

    Args:
        logits: `(batch, vocab)` float logits.
        tokens: `(batch, max_length)` int token buffer (unused).
        suppress_mask: `(vocab,)` bool, `True` at the tokens to forbid (see
            `suppressed_token_ids`).

    Returns:
        The logits with the masked tokens at `-inf`.
    """
    del tokens
    return ops.where(ops.convert_to_tensor(suppress_mask)[None, :], NEG_INF, logits)


def _per_row(x):
    """A scalar or a `(batch,)` tensor as a column broadcasting against `(batch, vocab)`."""
    return ops.reshape(x, (-1, 1))


def _column(tokens, position):
    """`tokens[:, position]` for a scalar or per-row (possibly traced) position, clipped
    to >= 0."""
    position = ops.maximum(ops.cast(position, "int32"), 0)
    if len(ops.shape(position)) == 0:
        return ops.take(tokens, position, axis=1)
    return ops.take_along_axis(tokens, position[:, None], axis=1)[:, 0]


def apply_timestamp_rules(
    logits,
    tokens,
    index,
    sample_begin,
    *,
    timestamp_begin: int,
    eot: int,
    no_timestamps: int,
    max_initial_timestamp_index=None,
):
    """OpenAI's `ApplyTimestampRules`, for every row at once.

    Per row, with `seq` the tokens sampled so far (`tokens[sample_begin:index]`):

    - `<|notimestamps|>` is always forbidden;
    - `last_was_ts = len(seq) >= 1 and seq[-1] >= timestamp_begin`,
      `penultimate_was_ts = len(seq) < 2 or seq[-2] >= timestamp_begin`; after a
      lone timestamp only a timestamp or `<|endoftext|>` may follow (text is
      forbidden), after two timestamps no timestamp may follow;
    - timestamps never decrease: below the last sampled timestamp is forbidden, and
      the last one itself too unless it opened a pair (each segment has a nonzero
      length);
    - at the first sampled position every non-timestamp is forbidden, and so are
      timestamps after `max_initial_timestamp_index`;
    - finally, on the log-softmax of the logits filtered so far, when
      `logsumexp(timestamps) > max(text tokens)` every text token (and
      `<|endoftext|>`) is forbidden.

    Args:
        logits: `(batch, vocab)` float logits.
        tokens: `(batch, max_length)` int token buffer.
        index: int scalar (Python or tensor) or `(batch,)`. The position being sampled.
        sample_begin: int scalar. The first sampled position.
        timestamp_begin: int. Id of `<|0.00|>`.
        eot: int. Id of `<|endoftext|>` (text tokens are the ids below it).
        no_timestamps: int. Id of `<|notimestamps|>`.
        max_initial_timestamp_index: int scalar or `None`. The latest first
            timestamp, in 20-ms steps (`round(max_initial_timestamp / 0.02)`);
            `None` for no limit.

    Returns:
        The filtered logits.
    """
    ids = _vocab_ids(logits)
    is_timestamp = ids >= timestamp_begin
    index = ops.cast(index, "int32")
    sample_begin = ops.cast(sample_begin, "int32")
    num_sampled = index - sample_begin

    last = _column(tokens, index - 1)
    penultimate = _column(tokens, index - 2)
    last_was_ts = ops.logical_and(num_sampled >= 1, last >= timestamp_begin)
    penultimate_was_ts = ops.logical_or(num_sampled < 2, penultimate >= timestamp_begin)
    forbid_timestamps = ops.logical_and(last_was_ts, penultimate_was_ts)[:, None]
    forbid_text = ops.logical_and(last_was_ts, ops.logical_not(penultimate_was_ts))[:, None]
    mask = ops.logical_or(
        ids == no_timestamps,
        ops.logical_or(
            ops.logical_and(forbid_timestamps, is_timestamp),
            ops.logical_and(forbid_text, ids < eot),
        ),
    )

    # Monotonic timestamps: from the last sampled one (not the largest, as OpenAI).
    positions = ops.arange(ops.shape(tokens)[1], dtype="int32")[None, :]
    sampled = ops.logical_and(positions >= sample_begin, positions < _per_row(index))
    sampled_timestamps = ops.logical_and(sampled, tokens >= timestamp_begin)
    any_timestamp = ops.any(sampled_timestamps, axis=1)
    last_position = ops.max(ops.where(sampled_timestamps, positions, 0), axis=1)
    last_timestamp = ops.take_along_axis(tokens, last_position[:, None], axis=1)[:, 0]
    lower_bound = ops.where(
        ops.logical_and(last_was_ts, ops.logical_not(penultimate_was_ts)),
        last_timestamp,
        last_timestamp + 1,
    )
    mask = ops.logical_or(
        mask,
        ops.logical_and(
            any_timestamp[:, None], ops.logical_and(is_timestamp, ids < lower_bound[:, None])
        ),
    )

    # The first sampled token is a timestamp, no later than the initial limit.
    limit = NO_LIMIT if max_initial_timestamp_index is None else max_initial_timestamp_index
    last_allowed = timestamp_begin + ops.cast(limit, "int32")
    first_forbidden = ops.logical_or(ids < timestamp_begin, ids > last_allowed)
    mask = ops.logical_or(mask, ops.logical_and(_per_row(num_sampled == 0), first_forbidden))
    logits = ops.where(mask, NEG_INF, logits)

    # Timestamps' total probability against the best text token, on the filtered logits.
    logprobs = layers.log_softmax(ops.cast(logits, "float32"))
    timestamp_logprob = layers.logsumexp(ops.where(is_timestamp, logprobs, NEG_INF))
    max_text_logprob = layers.row_max(ops.where(is_timestamp, NEG_INF, logprobs))[:, 0]
    prefer_timestamp = (timestamp_logprob > max_text_logprob)[:, None]
    return ops.where(ops.logical_and(prefer_timestamp, ids < timestamp_begin), NEG_INF, logits)


def _seen(ids, where, vocabulary_size: int):
    """`(batch, vocab)` bool: `True` at each row's `ids` (`(batch, n)` ints) where `where`."""
    rows, width = ops.shape(ids)
    where = ops.broadcast_to(where, (rows, width))
    row_ids = ops.repeat(ops.arange(rows, dtype="int32")[:, None], width, axis=1)
    indices = ops.stack(
        [ops.reshape(row_ids, (-1,)), ops.reshape(ops.where(where, ids, 0), (-1,))], axis=1
    )
    counts = ops.scatter(
        indices, ops.reshape(ops.cast(where, "float32"), (-1,)), (rows, vocabulary_size)
    )
    return counts > 0


def _in_transcript(tokens, index, begin):
    """`(batch, max_length)` bool: the positions `begin ... index - 1` of each row."""
    positions = ops.arange(ops.shape(tokens)[1], dtype="int32")[None, :]
    index = _per_row(ops.cast(index, "int32"))
    return ops.logical_and(positions >= ops.cast(begin, "int32"), positions < index)


def repetition_penalty(logits, tokens, index, begin, penalty: float):
    """faster-whisper's `repetition_penalty` (CTranslate2's `RepetitionPenalty`).

    The logit of every token in `tokens[begin:index]` (each counted once) is divided
    by `penalty` when positive and multiplied by it when negative.

    Args:
        logits: `(batch, vocab)` float logits, before any other rule.
        tokens: `(batch, max_length)` int token buffer.
        index: int scalar or `(batch,)`. The position being sampled.
        begin: int scalar. The first position of the transcript (its prefix, or the
            first sampled position).
        penalty: float > 0. Above 1 discourages repetition.

    Returns:
        The penalised logits.

    Examples:
    ```python
    logits = repetition_penalty(logits, tokens, index, sample_begin, 1.3)
    ```
    """
    seen = _seen(tokens, _in_transcript(tokens, index, begin), ops.shape(logits)[-1])
    penalized = ops.where(logits < 0, logits * penalty, logits / penalty)
    return ops.where(seen, penalized, logits)


def _shifted(tokens, offset: int):
    """`tokens[:, j + offset]` at column `j` (zeros past the end)."""
    if offset == 0:
        return tokens
    rows = ops.shape(tokens)[0]
    tail = ops.zeros((rows, offset), dtype=tokens.dtype)
    return ops.concatenate([tokens[:, offset:], tail], axis=1)


def no_repeat_ngram(logits, tokens, index, begin, size: int):
    """faster-whisper's `no_repeat_ngram_size` (CTranslate2's `NoRepeatNgram`).

    With `seq = tokens[begin:index]`: every token that would end an n-gram of `size`
    tokens already in `seq` (its first `size - 1` tokens equal to the last `size - 1`
    of `seq`) is forbidden. `size` 1 forbids every token of `seq`.

    Args:
        logits: `(batch, vocab)` float logits.
        tokens: `(batch, max_length)` int token buffer.
        index: int scalar or `(batch,)`. The position being sampled.
        begin: int scalar. The first position of the transcript.
        size: int >= 1, static. The n-gram size.

    Returns:
        The logits with the forbidden tokens at `-inf`.

    Examples:
    ```python
    logits = no_repeat_ngram(logits, tokens, index, sample_begin, 3)
    ```
    """
    index = ops.cast(index, "int32")
    positions = ops.arange(ops.shape(tokens)[1], dtype="int32")[None, :]
    # n-grams tokens[j : j + size] that lie within seq.
    match = ops.logical_and(
        positions >= ops.cast(begin, "int32"), positions <= _per_row(index) - size
    )
    for k in range(size - 1):
        last = _column(tokens, index - (size - 1) + k)
        match = ops.logical_and(match, _shifted(tokens, k) == _per_row(last))
    banned = _seen(_shifted(tokens, size - 1), match, ops.shape(logits)[-1])
    return ops.where(banned, NEG_INF, logits)


def suppressed_token_ids(tokenizer, suppress_tokens="-1") -> tuple[int, ...] | None:
    """The token set of OpenAI's `SuppressTokens` filter for a `suppress_tokens` option.

    `-1` expands to `tokenizer.non_speech_tokens`; whenever the option is non-empty
    the set also gets `<|transcribe|>`, `<|translate|>`, `<|startoftranscript|>`,
    `<|startofprev|>`, `<|startoflm|>` and `<|nospeech|>`. An empty option disables
    the filter (even those special tokens stay allowed), as in OpenAI.

    Args:
        tokenizer: a `WhisperTokenizer`.
        suppress_tokens: string of comma-separated ids or list of ints. Defaults to `"-1"`.

    Returns:
        A sorted tuple of ids, or `None` when the filter is disabled.

    Examples:
    ```python
    ids = suppressed_token_ids(tokenizer)  # 90 ids for tiny.en
    ```
    """
    from keras_whisper.decoding.options import parse_suppress_tokens

    ids = parse_suppress_tokens(suppress_tokens, tokenizer.vocabulary_size())
    if ids is None:
        return None
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(tokenizer.non_speech_tokens)
    ids += [
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    ]
    return tuple(sorted(set(ids)))


def blank_token_ids(tokenizer) -> tuple[int, ...]:
    """The tokens `suppress_blank` forbids first: `encode(" ")` and `<|endoftext|>`."""
    return tuple(tokenizer.encode(" ")) + (tokenizer.eot,)
