"""A pool of decoding rows refilled with new windows as rows finish (continuous batching).

`generate` decodes a batch of windows together until the longest is done: a window that
ends after 20 tokens leaves its row idle while another writes 80. In the batched
long-form mode (`keras_whisper.batched`) there is always another speech piece waiting, so
the pool puts it in the finished row instead, and the loop keeps all its rows busy until
the pieces run out; only then do finished rows go away (the loop halves, as `generate`'s
greedy loop does). On the 10-minute benchmark file at 8 rows the tiny.en loop made 263
steps for 202 tokens a row before; with the pool it makes about as many steps as the
tokens need.

How rows at different positions share one compiled step:

- one step counter for the whole pool; the token fed at step `i` is written to cache slot
  `i mod length` of every row (one in-place update, as in `generate`), so the
  self-attention cache is a ring;
- each row remembers the step it started at: its position is `i - start`, which picks its
  positional embedding, and it attends to the slots written since it started (the last
  `position` slots of the ring; stale slots of the row's previous window are masked out).
  Attention does not depend on the order of the keys, only on which are visible;
- a new row is fed its start sequence (`<|startoftranscript|>`, language, task) one
  step at a time (the first steps of a row are forced): a prefill of a few tokens for
  one window would cost more than these steps shared by all rows. Its no-speech
  probability is read at `<|startoftranscript|>`, as `generate` does. A prompt before
  it (`<|startofprev|>`, hotwords, the initial prompt: the same for every window, up to
  223 tokens) is instead decoded in one pass when the window is added, and its keys and
  values written into the ring slots the row's steps would have filled; the row starts
  at `<|startoftranscript|>`;
- the loop stops when as many rows have finished as there are pieces waiting (at least
  one), the host collects their tokens, encodes new pieces into those rows
  (`WhisperBackbone.cross_attention_cache` written in place), and the loop goes on.

Greedy decoding and sampling (one sample per window) only; beam search keeps `generate`.
A row's tokens depend only on its own window: the results are `generate`'s, up to
floating-point summation order.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from keras import ops

from keras_whisper import layers
from keras_whisper.decoding import filters
from keras_whisper.decoding.generate import (
    CACHE_STEP,
    _check_model,
    _derived_stage,
    _derived_weights,
    _encoder_output,
    _initial_tokens,
    _logit_rules,
    _loop_args,
    _loop_layout,
    _pick,
    _repetition_fields,
    _run,
    _Spec,
    _to_numpy,
    _until_eot,
    compression_ratio,
)
from keras_whisper.decoding.options import DecodingOptions, DecodingResult


def _one_window_at_a_time() -> bool:
    """Whether new windows are encoded one at a time: on JAX/CPU, where the one-window
    encoder is the faster per window (and the sequential mode's, compiled once)."""
    return layers.jax_on_cpu()


def pool_sizes(rows: int) -> list[int]:
    """The sizes a pool of `rows` rows can take as it halves: `[rows, rows // 2, ..., 1]`.

    Each is compiled once; a pool starts at the smallest that holds the windows there are.
    """
    sizes = [rows]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return sizes


def _insert_stage(model, cross_cache, encoder_output, rows):
    """The cross-attention keys and values of new windows, written into `rows`."""
    return _write_rows(model.cross_attention_cache(encoder_output), cross_cache, rows)


def _write_rows(new, cache, rows):
    """`cache` (pairs of `(batch, ...)` arrays per layer) with `new` written into `rows`."""
    indices = ops.cast(rows, "int32")[:, None]
    return tuple(
        tuple(
            ops.scatter_update(old, indices, ops.cast(update, old.dtype))
            for old, update in zip(pair, new_pair, strict=True)
        )
        for pair, new_pair in zip(cache, new, strict=True)
    )


def _insert_prefill_stage(
    model, cross_cache, self_cache, encoder_output, rows, prompt, empty, first_slot
):
    """`_insert_stage`, and the self-attention keys and values of the rows' prompt.

    The prompt (`<|startofprev|>` and the previous text, the same for every window) is
    decoded in one pass against each new window; its `n` positions go to the ring slots
    `first_slot ... first_slot + n - 1` (mod the cache length) of the new rows, where the
    pool's steps would have written them one a step. The rows' other slots are kept.
    """
    new_cross = model.cross_attention_cache(encoder_output)
    count = ops.shape(encoder_output)[0]
    tokens = ops.repeat(prompt, count, axis=0)
    _, prefilled = model.decode_with_cache(tokens, empty, new_cross, ops.cast(0, "int32"))
    num_prompt = ops.shape(prompt)[1]
    length = ops.shape(self_cache[0][0])[2]
    # The prompt position each slot of the ring holds, when it holds one.
    position = (ops.arange(length, dtype="int32") - first_slot) % length
    held = (position < num_prompt)[None, None, :, None]
    position = ops.minimum(position, num_prompt - 1)
    indices = ops.cast(rows, "int32")
    merged = tuple(
        tuple(
            ops.where(
                held,
                ops.cast(ops.take(new, position, axis=2), old.dtype),
                ops.take(old, indices, axis=0),
            )
            for old, new in zip(pair, new_pair, strict=True)
        )
        for pair, new_pair in zip(self_cache, prefilled, strict=True)
    )
    return _write_rows(new_cross, cross_cache, rows), _write_rows(merged, self_cache, rows)


def _shrink_stage(model, cross_cache, self_cache, keep):
    """The caches of the rows `keep`."""
    del model
    take = functools.partial(ops.take, indices=keep, axis=0)
    return tuple(tuple((take(k), take(v)) for k, v in cache) for cache in (cross_cache, self_cache))


def _pool_stage(
    model,
    cross_cache,
    cache,
    tokens,
    start,
    step,
    done,
    sum_logprobs,
    no_speech,
    sample_begin,
    limit,
    suppress_mask,
    blank_mask,
    max_initial_index,
    temperature,
    seed,
    sot_index,
    no_speech_id,
    exit_done,
    stop_below,
    derived,
    *,
    spec: _Spec,
):
    """Steps of the pool until `exit_done` rows are done or `stop_below` or fewer decode."""
    rows, width = ops.shape(tokens)
    length = ops.shape(cache[0][0])[2]
    last_position = model.max_decoder_sequence_length - 1
    if derived is None:
        derived = _derived_stage(model, layout=spec.layout)
    table, step_weights = derived
    out_major = spec.layout == "out_major"
    columns = ops.arange(width, dtype="int32")[None, :]
    slots = ops.arange(length, dtype="int32")[None, :]
    sample_begin = ops.cast(sample_begin, "int32")
    start = ops.cast(start, "int32")
    rules = (suppress_mask, blank_mask, max_initial_index)

    def cond(step, tokens, cache, sum_logprobs, done, no_speech):
        finished = ops.sum(ops.cast(done, "int32"))
        decoding = rows - finished
        return ops.logical_and(finished < exit_done, decoding > ops.maximum(stop_below, 0))

    def body(step, tokens, cache, sum_logprobs, done, no_speech):
        # Finished rows keep stepping (their outputs unused) until they are refilled.
        position = ops.clip(step - start, 0, last_position)  # of the token fed
        index = position + 1  # the position sampled
        fed = ops.take_along_axis(tokens, position[:, None], axis=1)
        age = (step - slots) % length  # 0: the slot written now
        visible = ops.logical_and(age >= 1, age <= position[:, None])
        hidden, cache = model.decode_with_cache(
            fed,
            cache,
            cross_cache,
            step % length,
            step_weights,
            out_major,
            positions=position,
            cache_mask=visible,
        )
        logits = model.logits(hidden[:, 0], transposed_embeddings=table, out_major=out_major)
        # The no-speech probability at <|startoftranscript|>, before any rule.
        at_sot = ops.logical_and(position == sot_index, ops.logical_not(done))
        # (Only on steps where some row is there: a pass over the logits less.)
        no_speech = ops.cond(
            ops.any(at_sot),
            lambda: ops.where(at_sot, _probability(logits, no_speech_id), no_speech),
            lambda: no_speech,
        )
        logits = _logit_rules(spec, logits, tokens, index, sample_begin, *rules)
        chosen, logprob = _pick(spec, logits, temperature, seed, step)
        # A row's first steps feed its initial tokens.
        forced = index < sample_begin
        given = ops.take_along_axis(tokens, ops.minimum(index, width - 1)[:, None], axis=1)
        chosen = ops.where(forced, given[:, 0], chosen)
        sampling = ops.logical_and(ops.logical_not(done), ops.logical_not(forced))
        sum_logprobs = sum_logprobs + ops.where(sampling, logprob, 0.0)
        write = ops.logical_and(sampling[:, None], columns == index[:, None])
        tokens = ops.where(write, chosen[:, None], tokens)
        ended = ops.logical_or(chosen == spec.eot, index >= limit - 1)
        done = ops.logical_or(done, ops.logical_and(sampling, ended))
        return step + 1, tokens, cache, sum_logprobs, done, no_speech

    return ops.while_loop(
        cond, body, (ops.cast(step, "int32"), tokens, cache, sum_logprobs, done, no_speech)
    )


def _probability(logits, token):
    """Each row's probability of `token` under `softmax(logits)`, `(rows,)`."""
    return ops.exp(ops.take(logits, token, axis=1) - layers.logsumexp(logits))


class DecodingPool:
    """Greedy or sampled decoding of many 30-s windows on a fixed number of rows.

    Windows are added to free rows (`add`) and decoded by `run`, which returns those that
    finished; their rows are free again. The pool keeps one compiled loop per size (see
    `pool_sizes`); when no window is waiting it halves as its rows finish.

    Args:
        backbone: a `WhisperBackbone`.
        tokenizer: its `WhisperTokenizer`.
        options: `DecodingOptions` without `beam_size`, `best_of` 1 or `None`. A
            `prompt` (and `hotwords`) is the same for every window (decoded in one pass
            as each window is added); windows never prompt one another.
        rows: int. The largest number of windows decoded at once.
        seed: int. Seeds the sampler when `options.temperature > 0`.

    Examples:
    ```python
    pool = DecodingPool(backbone, tokenizer, DecodingOptions(language="en"), rows=8)
    pool.add(features[:8], ["en"] * 8, names[:8])
    while pool.decoding:
        for name, result in pool.run(pending=0):
            print(name, result.text)
    ```
    """

    def __init__(
        self, backbone, tokenizer, options: DecodingOptions, rows: int, seed: int | None = None
    ):
        _check_model(backbone, tokenizer)
        if options.beam_size is not None or (options.best_of or 1) > 1:
            raise ValueError(
                "A DecodingPool decodes greedily or draws one sample per window; use "
                "`generate` for beam search or best_of > 1."
            )
        if not isinstance(rows, int) or rows < 1:
            raise ValueError(f"`rows` must be a positive integer; got {rows!r}.")
        self.backbone, self.tokenizer, self.options = backbone, tokenizer, options
        n_ctx = backbone.max_decoder_sequence_length
        self.sample_len = options.sample_len or n_ctx // 2
        self._initial: dict[str, list[int]] = {}
        probe, self.sot_index = _initial_tokens(
            tokenizer, options, options.language or "en", n_ctx, self.sample_len
        )
        self.sample_begin = len(probe)
        self._prompt = np.array([probe[: self.sot_index]], dtype="int32")
        self.limit = min(self.sample_begin + self.sample_len, n_ctx + 1)
        # Positions up to `limit - 2` are fed, so a row never sees a slot twice.
        self.cache_length = min(n_ctx, -(-(self.limit - 1) // CACHE_STEP) * CACHE_STEP)
        suppress_ids = filters.suppressed_token_ids(tokenizer, options.suppress_tokens)
        self._spec = _Spec(
            mode="sample" if options.temperature > 0 else "greedy",
            group=1,
            max_candidates=0,
            timestamps=not options.without_timestamps,
            blank=bool(options.suppress_blank),
            suppress=suppress_ids is not None,
            eot=tokenizer.eot,
            timestamp_begin=tokenizer.timestamp_begin,
            no_timestamps=tokenizer.no_timestamps,
            layout="plain",
            **_repetition_fields(tokenizer, options, n_ctx, self.sample_len),
        )
        self._loop_args = _loop_args(
            backbone, tokenizer, options, suppress_ids, self.sample_begin, self.limit, seed
        ) + (np.int32(self.sot_index), np.int32(tokenizer.no_speech))
        self.sizes = pool_sizes(rows)
        self.size = 0  # rows in use; the caches are made by the first `add`
        self._step = 0
        self._payloads: list[Any] = []
        self._languages: list[str | None] = []

    # -- host-side state ------------------------------------------------------------------

    @property
    def decoding(self) -> int:
        """How many windows are being decoded."""
        return sum(p is not None for p in self._payloads)

    def free_rows(self) -> int:
        """How many windows `add` can take now."""
        return self.size - self.decoding if self.size else self.sizes[0]

    def _layout(self, size: int) -> str:
        return _loop_layout(size, self.backbone.compute_dtype)

    def _allocate(self, size: int) -> None:
        backbone = self.backbone
        self.size = size
        self._spec = self._spec._replace(layout=self._layout(size))
        positions = backbone.max_encoder_sequence_length // 2
        shape = (size, backbone.num_heads, positions, backbone.head_dim)
        dtype = backbone.cache_dtype
        self._cross = tuple(
            (ops.zeros(shape, dtype), ops.zeros(shape, dtype))
            for _ in backbone.decoder_transformer_layers
        )
        self._cache = backbone.empty_self_attention_cache(size, self.cache_length)
        width = backbone.max_decoder_sequence_length + 1
        self._tokens = np.zeros((size, width), "int32")
        self._start = np.zeros((size,), "int32")
        self._done = np.ones((size,), "bool")
        self._sums = np.zeros((size,), "float32")
        self._no_speech = np.zeros((size,), "float32")
        self._payloads = [None] * size
        self._languages = [None] * size

    def _initial_tokens(self, language: str | None) -> list[int]:
        language = language or self.options.language or "en"
        if language not in self._initial:
            n_ctx = self.backbone.max_decoder_sequence_length
            tokens, _ = _initial_tokens(
                self.tokenizer, self.options, language, n_ctx, self.sample_len
            )
            if len(tokens) != self.sample_begin:  # pragma: no cover - same layout per language
                raise AssertionError("initial tokens of different lengths")
            self._initial[language] = tokens
        return self._initial[language]

    # -- the public steps -----------------------------------------------------------------

    def add(self, features, languages: list[str | None], payloads: list[Any]) -> None:
        """Start decoding windows in free rows.

        Args:
            features: log-mel features `(n, 3000, num_mels)` of the windows (encoded
                here: on JAX/CPU one window at a time, with the sequential mode's
                one-window encoder; elsewhere as one batch padded to one of `sizes`, one
                compilation each), or their encoder outputs `(n, 1500, hidden_dim)`.
            languages: the language code of each window (`None`: the options', else
                English).
            payloads: anything, one per window (not `None`), returned with its result.

        Raises:
            ValueError: more windows than free rows, or a `None` payload.
        """
        count = len(payloads)
        if count != len(languages) or count != int(features.shape[0]):
            raise ValueError("Give one window, one language and one payload per window.")
        if any(p is None for p in payloads):
            raise ValueError("A payload cannot be None (it marks a free row).")
        if count == 0:
            return
        if count > self.free_rows():
            raise ValueError(f"{count} windows for {self.free_rows()} free rows.")
        if not self.size:
            self._allocate(min(size for size in self.sizes if size >= count))
        free = [r for r in range(self.size) if self._payloads[r] is None][:count]
        if _one_window_at_a_time():
            for i, r in enumerate(free):
                self._insert(self.encode(features[i : i + 1]), [r])
        else:
            size = min(s for s in self.sizes if s >= count)
            # Padded by repeating the last window: its row is written twice, identically.
            padding = [count - 1] * (size - count)
            indices = np.arange(count).tolist() + padding
            batch = ops.take(ops.convert_to_tensor(features), np.array(indices), axis=0)
            self._insert(_encoder_output(self.backbone, batch), free + [free[-1]] * len(padding))
        for r, language, payload in zip(free, languages, payloads, strict=True):
            initial = self._initial_tokens(language)
            self._tokens[r] = 0
            self._tokens[r, : len(initial)] = initial
            # The prompt before `<|startoftranscript|>` is prefilled (`_insert`): the
            # row's first step feeds `<|startoftranscript|>`.
            self._start[r] = self._step - self.sot_index
            self._done[r] = False
            self._sums[r] = 0.0
            self._no_speech[r] = 0.0
            self._payloads[r] = payload
            self._languages[r] = language or self.options.language or "en"

    def encode(self, features):
        """The encoder outputs `add` takes in place of the windows' features.

        On JAX/CPU one window at a time (the sequential mode's encoder, compiled once);
        elsewhere as one batch (compiled per number of windows). Encoder outputs are
        returned as they are.

        Args:
            features: log-mel features `(n, 3000, num_mels)`, or encoder outputs.

        Returns:
            The encoder outputs `(n, 1500, hidden_dim)`.
        """
        if _one_window_at_a_time() and int(features.shape[0]) > 1:
            windows = [self.encode(features[i : i + 1]) for i in range(int(features.shape[0]))]
            return ops.concatenate(windows, axis=0)
        return _encoder_output(self.backbone, features)

    def _insert(self, encoder_output, rows: list[int]) -> None:
        """Write the cross-attention keys and values of windows into `rows` (in place),
        and the self-attention keys and values of the prompt, when there is one."""
        if self.sot_index:
            count = int(encoder_output.shape[0])
            empty = self.backbone.empty_self_attention_cache(count, self.sot_index)
            self._cross, self._cache = _run(
                self.backbone,
                ("pool_insert_prefill",),
                _insert_prefill_stage,
                self._cross,
                self._cache,
                encoder_output,
                np.array(rows, dtype="int32"),
                self._prompt,
                empty,
                np.int32(self._step - self.sot_index),
                donate=(0, 1),
            )
            return
        self._cross = _run(
            self.backbone,
            ("pool_insert",),
            _insert_stage,
            self._cross,
            encoder_output,
            np.array(rows, dtype="int32"),
            donate=(0,),
        )

    def run(self, pending: int) -> list[tuple[Any, DecodingResult]]:
        """Decode until rows finish; returns `(payload, DecodingResult)` of those.

        Args:
            pending: how many windows are waiting for a row. With some waiting, the loop
                stops as soon as that many rows (at most `size // 8`, at least one) have
                finished, to refill them; with none, it runs until half of its rows or
                fewer are decoding, then halves the pool (its rows are compiled once per
                size).

        Returns:
            The windows that finished, possibly none (the pool only halved).
        """
        if not self.decoding:
            return []
        finished_rows = int(self._done.sum())
        if pending > 0:
            exit_done = finished_rows + min(pending, max(1, self.size // 8))
            stop_below = 0
        else:
            exit_done = self.size + 1
            stop_below = self.size // 2 if self.size > 1 else 0
        step, tokens, self._cache, sums, done, no_speech = _run(
            self.backbone,
            ("pool", self._spec),
            functools.partial(_pool_stage, spec=self._spec),
            self._cross,
            self._cache,
            self._tokens,
            self._start,
            np.int32(self._step),
            self._done,
            self._sums,
            self._no_speech,
            *self._loop_args,
            np.int32(exit_done),
            np.int32(stop_below),
            _derived_weights(self.backbone, self._spec.layout),
            donate=(1,),
        )
        self._step = int(_to_numpy(step))
        self._tokens = np.array(_to_numpy(tokens))
        self._done = np.array(_to_numpy(done))
        self._sums = np.array(_to_numpy(sums))
        self._no_speech = np.array(_to_numpy(no_speech))
        results = []
        for r in range(self.size):
            if self._done[r] and self._payloads[r] is not None:
                results.append((self._payloads[r], self._result(r)))
                self._payloads[r] = None
        if pending <= 0 and self.size > 1 and self.decoding <= self.size // 2:
            self._shrink()
        return results

    def _result(self, r: int) -> DecodingResult:
        tokens = _until_eot(self._tokens[r, self.sample_begin : self.limit], self.tokenizer.eot)
        text = self.tokenizer.decode(tokens).strip()
        logprob = float(self._sums[r])
        return DecodingResult(
            tokens=tokens,
            text=text,
            avg_logprob=logprob / (len(tokens) + 1),
            sum_logprob=logprob,
            no_speech_prob=float(self._no_speech[r]),
            temperature=float(self.options.temperature),
            compression_ratio=compression_ratio(text),
            language=self._languages[r],
            language_probs=None,
        )

    def _shrink(self) -> None:
        """Halve the pool (repeatedly) down to the smallest size holding its windows."""
        busy = [r for r in range(self.size) if self._payloads[r] is not None]
        size = min(s for s in self.sizes if s >= max(1, len(busy)))
        if size >= self.size:
            return
        free = [r for r in range(self.size) if self._payloads[r] is None]
        keep = np.array((busy + free)[:size], dtype="int32")
        self._cross, self._cache = _run(
            self.backbone,
            ("pool_shrink",),
            _shrink_stage,
            self._cross,
            self._cache,
            keep,
        )
        self.size = size
        self._spec = self._spec._replace(layout=self._layout(size))
        for name in ("_tokens", "_start", "_done", "_sums", "_no_speech"):
            setattr(self, name, getattr(self, name)[keep])
        self._payloads = [self._payloads[r] for r in keep]
        self._languages = [self._languages[r] for r in keep]
