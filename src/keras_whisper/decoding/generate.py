"""KV-cached decoding of 30-second windows: greedy, sampling and beam search.

The decode runs as a few compiled stages on the device, with a single host
round trip at the end (greedy decoding of several rows adds one per halving of
its rows, when it drops finished ones):

1. `encode` (when given log-mel features) and `cross_attention_cache`, once per
   window;
2. language detection, when a multilingual model is given no language;
3. prefill: the whole initial prompt in one `decode_with_cache` call, right-padded
   to a length bucket (8, 16, 32, ...) so that prompts of different lengths share a
   compiled function. Its output at `<|startoftranscript|>` gives `no_speech_prob`;
4. the loop: one token per step under `keras.ops.while_loop`, on a token buffer of
   fixed shape `(batch * group, max_decoder_sequence_length + 1)`, with the logit
   rules of `keras_whisper.decoding.filters` and the greedy, sampling or beam
   search update, all in `keras.ops` with fixed shapes. The rows of one window
   (beams, `best_of` samples) read the prefill's cache as a shared prefix and
   keep only their own positions. Beam search keeps its
   finished candidates in fixed-size on-device arrays. Greedy decoding of several
   rows stops when half of them or fewer are left, gathers those into a loop of
   half the rows and goes on (`_sampling_loop`).

On JAX each stage is a pure function of the model's variables, traced under
`keras.StatelessScope(state_mapping=...)` and wrapped in `jax.jit` (keras-hub's
`CausalLM.generate` idiom), compiled once per input shape and reused; the loop's
shapes depend on the prompt only through the cache lengths (multiples of 64), so
it compiles a few times per (batch, decoding mode). On other backends the same code runs eagerly (under
`torch.no_grad()` for PyTorch, where `keras.ops.while_loop` is a Python loop).

Deviations from openai-whisper, none of which changes a result:

- each step re-feeds the last token of the prompt (or the token sampled last)
  rather than carrying the logits of the previous call; the prefill's output at
  that position is recomputed once, identically;
- beam search: OpenAI merges candidates by their full token tuple. Live beams are
  always distinct sequences, so duplicates can only arise at the first step, where
  all beams of an audio are copies of the prompt; there only the first beam's
  candidates are kept, which is what the merge amounts to. On JAX, ties between
  equal scores resolve by (beam, rank) order, as OpenAI's stable sort of the dict
  does (`torch.topk`'s order of ties is unspecified).
- a candidate of length 0 (an immediate `<|endoftext|>`, possible only with
  `suppress_blank=False` and without timestamps) is ranked by its `sum_logprob`
  instead of raising `ZeroDivisionError`;
- an English-only model given `language=None` decodes English (OpenAI's
  `DecodingTask` would try to detect the language and fail);
- with `sample_len > 224`, OpenAI's prefix truncation `prefix[-(224 - sample_len):]`
  drops tokens from the start of the prefix; here the whole prefix is kept.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import weakref
import zlib
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_whisper import layers
from keras_whisper.decoding import compilation_cache, filters
from keras_whisper.decoding.options import DecodingOptions, DecodingResult

# Prompt lengths are padded up to one of these, then to `_longest_prompt(n_ctx)`, then to
# the decoder's context.
PROMPT_BUCKETS = (8, 16, 32, 64, 128)
# The self-attention cache's length is a multiple of this (at most the context).
CACHE_STEP = 64
# Greedy decoding of several rows drops finished rows, halving the loop (see `_sampling_loop`).
COMPACT_FINISHED_ROWS = True

# How many times each compiled stage has been traced (JAX): "encode", "cross",
# "language", "prefill", "loop". A trace is a compilation; tests read this.
TRACE_COUNTS: collections.Counter = collections.Counter()

# backbone -> {key: jitted function}. Weak keys: the compiled functions go with the model.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

CHUNK_LENGTH = 30  # seconds of audio in one window


# ---------------------------------------------------------------------------------------------
# Running a stage: jitted and stateless on JAX, eagerly elsewhere.
# ---------------------------------------------------------------------------------------------


def _run(backbone, key: tuple, fn, *args, donate: tuple[int, ...] = ()):
    """`fn(backbone, *args)`, compiled once per `key` and input shapes on JAX.

    `donate`: positions in `args` of device arrays the caller no longer needs, whose
    buffers the outputs may reuse (JAX; updates in place instead of copies).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        compiled = _COMPILED.setdefault(backbone, {})
        jitted = compiled.get(key)
        if jitted is None:
            jitted = compiled[key] = _jit_stateless(weakref.ref(backbone), key[0], fn, donate)
        return jitted(_state(backbone), *args)
    if backend == "torch":
        import torch

        context = torch.no_grad()
    else:
        context = contextlib.nullcontext()
    with context:
        return fn(backbone, *args)


def _state(backbone) -> list:
    """The current values of the model's variables (JAX arrays)."""
    compiled = _COMPILED.setdefault(backbone, {})
    # Walking the layer tree for `backbone.variables` costs ~4 ms a call; the list of
    # variables of a built model does not change (their values may, and are read afresh
    # each call).
    variables = compiled.get("__variables__")
    if variables is None:
        variables = compiled["__variables__"] = list(backbone.variables)
    return [v.value for v in variables]


def _derived_stage(model, *, layout):
    table = model.transposed_token_embeddings() if layout == "vector" else None
    return table, model.step_weights(out_major=layout == "out_major")


def _derived_weights(backbone, layout: str):
    """The decoding loop's derived weights, built once per model, weights and layout (JAX).

    `(transposed embedding table or None, backbone.step_weights() or None)`, for a loop
    of `_loop_layout()` `layout`.
    Transposing tiny.en's 80 MB table takes about 75 ms on 2 CPU cores, a fifth of a
    short window's decoding loop, so it is kept with the compiled stages and rebuilt only
    when a variable has been given a new value (e.g. by training). Elsewhere `None`: the
    (eager) loop builds them itself.
    """
    if keras.backend.backend() != "jax":
        return None
    compiled = _COMPILED.setdefault(backbone, {})
    state = _state(backbone)
    key = ("__derived__", layout)
    entry = compiled.get(key)
    if entry is not None:
        refs, value = entry
        if len(refs) == len(state) and all(r() is x for r, x in zip(refs, state, strict=True)):
            return value
    value = _run(backbone, ("derived", layout), functools.partial(_derived_stage, layout=layout))
    # Weak references: the cache does not keep replaced weights alive.
    compiled[key] = ([weakref.ref(x) for x in state], value)
    return value


def compiler_options(stage: str | None = None) -> dict | None:
    """XLA options for the jitted stages (JAX only): tuned for CPUs, none elsewhere.

    Args:
        stage: the stage's name. `"encode"` keeps YNNPACK's default fusions (its
            attention is written for them); the decoding stages hand it their matrix
            products one by one.
    """
    import jax

    if jax.default_backend() != "cpu":
        return None
    # XLA CPU's default copy insertion copies a loop-carried buffer that is both
    # read and updated in place (the self-attention cache), twice per step; its
    # region analysis proves the read comes first and keeps the update in place.
    options = {"xla_cpu_copy_insertion_use_region_analysis": True}
    if stage == "encode":
        # YNNPACK's default fusions take each attention block's product, row maximum
        # and exponential as one kernel (`layers.WhisperAttention._blocked`): tiny.en's
        # encoder 174 -> 162 ms, base 401 -> 379 (2-core AVX-512 Xeon; the former
        # attention under individual products, as below).
        return options
    # Matrix products through YNNPACK one by one: measured on a 2-core AVX2 EPYC, a
    # (1500, 384) x (384, 1536) float32 GEMM runs at 156 GFLOP/s instead of 130 with
    # XLA's own emitter, the tiny.en encoder in 488 ms instead of 634, end to end
    # 10-15 % faster; results equal to 1e-6. The decoding loops' small products and
    # logit rules run best this way.
    options["xla_cpu_experimental_ynn_fusion_type"] = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
    return options


def _jit_stateless(model_ref, name: str, fn, donate: tuple[int, ...] = ()):
    import jax

    def stateless(state, *args):
        TRACE_COUNTS[name] += 1
        model = model_ref()
        # A float32 model computes in float32: on GPUs XLA would otherwise run float32
        # matmuls as TF32 (seen on an H200: log-probabilities off by 4e-4).
        precision = (
            jax.default_matmul_precision("float32")
            if model.compute_dtype == "float32"
            else contextlib.nullcontext()
        )
        mapping = list(zip(model.variables, state, strict=True))
        with precision, keras.StatelessScope(state_mapping=mapping):
            return fn(model, *args)

    # Compiled executables are also kept on disk: a new process loads them instead of
    # compiling (seconds per stage on CPU).
    # `stateless` takes the variables' values first.
    donate_argnums = tuple(position + 1 for position in donate)
    return compilation_cache.CachedJit(stateless, name, compiler_options(name), donate_argnums)


def _to_numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------------------------
# The stages (pure functions of the model and tensors).
# ---------------------------------------------------------------------------------------------


def _encode_stage(model, features):
    return model.encode(features)


def _cross_stage(model, encoder_output):
    return model.cross_attention_cache(encoder_output)


def _language_stage(model, cross_cache, sot_ids, language_mask):
    batch = ops.shape(sot_ids)[0]
    # Two cache slots, the second masked: a one-key softmax would only draw a Keras warning.
    cache = model.empty_self_attention_cache(batch, 2)
    hidden, _ = model.decode_with_cache(sot_ids, cache, cross_cache, 0)
    logits = model.logits(hidden[:, 0])
    logits = ops.where(language_mask[None, :], logits, filters.NEG_INF)
    return ops.softmax(logits, axis=-1)


def _prefill_stage(model, cross_cache, cache, start, prompt, sot_index, no_speech_id):
    # The empty cache and the start position (0) come in as arguments: as constants,
    # XLA would fold the fully masked attention over the empty cache at compile time
    # (seconds per prompt bucket).
    # Only the start of transcript's output is read (for the no-speech probability): the
    # last layer computes the rest of the prompt's keys and values only.
    hidden, cache = model.decode_with_cache(
        prompt, cache, cross_cache, start, output_index=sot_index
    )
    probs = ops.softmax(model.logits(hidden[:, 0]), axis=-1)
    return cache, ops.take(probs, no_speech_id, axis=1)


class _Spec(
    collections.namedtuple(
        "_Spec",
        "mode group max_candidates timestamps blank suppress eot timestamp_begin no_timestamps "
        "layout repetition_penalty no_repeat_ngram_size prefix_length",
        defaults=(1.0, 0, 0),
    )
):
    """The static configuration of a decoding loop (one compiled loop per spec).

    `prefix_length` (the prefix's tokens, where the transcript that faster-whisper's
    repetition rules look at begins) is only set when one of those rules is on.
    """


def _loop_stage(
    model,
    cross_cache,
    cache,
    buffer,
    sample_begin,
    limit,
    suppress_mask,
    blank_mask,
    max_initial_index,
    temperature,
    seed,
    index,
    sum_logprobs,
    done,
    stop_below,
    derived,
    own_cache=None,
    *,
    spec: _Spec,
):
    group = spec.group
    n_audio, length = ops.shape(buffer)
    rows = n_audio * group
    sample_begin = ops.cast(sample_begin, "int32")
    prefix, offset = None, 0
    if group > 1:
        # The rows of one audio share its prompt as they share its cross-attention
        # cache: the prefill's cache (one row per audio) is read once by all of them,
        # and each row's own cache holds its positions from the last prompt token on
        # (which the first step feeds again). Beam search then reorders only those.
        if own_cache is None:
            raise ValueError("A loop of several rows per audio needs `own_cache`.")
        offset = sample_begin - 1
        prefix, cache = (cache, offset), own_cache
        buffer = ops.repeat(buffer, group, axis=0)
    # The products' layout (`_loop_layout`) and one self-attention projection product per
    # layer and step instead of three. The weights come built (`_derived_weights`), else
    # are built here.
    if derived is None:
        derived = _derived_stage(model, layout=spec.layout)
    table, step_weights = derived
    out_major = spec.layout == "out_major"

    def next_logits(index, tokens, cache):
        last = ops.slice(tokens, (0, index - 1), (rows, 1))
        hidden, cache = model.decode_with_cache(
            last, cache, cross_cache, index - 1, step_weights, out_major, prefix=prefix
        )
        logits = model.logits(hidden[:, 0], transposed_embeddings=table, out_major=out_major)
        rules = (suppress_mask, blank_mask, max_initial_index)
        return _logit_rules(spec, logits, tokens, index, sample_begin, *rules), cache

    index = ops.cast(index, "int32")
    if spec.mode == "beam":
        sum_logprobs = ops.zeros((rows,), "float32")
        return _beam_loop(
            spec,
            next_logits,
            index,
            buffer,
            cache,
            sum_logprobs,
            sample_begin,
            limit,
            n_audio,
            offset,
        )

    def cond(index, tokens, cache, sum_logprobs, done):
        # Also stops, for the host to drop finished rows, once no more than `stop_below`
        # rows are left (never when it is negative).
        active = ops.sum(ops.cast(ops.logical_not(done), "int32"))
        return ops.logical_and(index < limit, active > ops.maximum(stop_below, 0))

    def body(index, tokens, cache, sum_logprobs, done):
        logits, cache = next_logits(index, tokens, cache)
        chosen, logprob = _pick(spec, logits, temperature, seed, index)
        sum_logprobs = sum_logprobs + ops.where(done, 0.0, logprob)
        chosen = ops.where(done, spec.eot, chosen)
        tokens = ops.slice_update(tokens, (0, index), chosen[:, None])
        done = ops.logical_or(done, chosen == spec.eot)
        return index + 1, tokens, cache, sum_logprobs, done

    state = (index, buffer, cache, sum_logprobs, done)
    if group > 1:
        return _growing_while_loop(cond, body, state, (2,), offset)
    return ops.while_loop(cond, body, state)


def _own_cache_stages(length: int) -> list[int]:
    """The lengths a loop's own self-attention cache of `length` positions grows through.

    `CACHE_STEP`, doubled until `length`: a row of beam search or of `best_of` sampling
    attends to its whole own cache every step, and most windows end within 64-128
    tokens, so a loop that starts on 64 positions and grows only when it reaches the
    end reads a quarter to a half of what a full-length cache costs (base, beam 5:
    ~1 ms of a 19-ms step).
    """
    stages = []
    size = CACHE_STEP
    while size < length:
        stages.append(size)
        size *= 2
    return stages + [length]


def _growing_while_loop(cond, body, state, caches: tuple[int, ...], offset):
    """`ops.while_loop(cond, body, state)` whose own caches grow with the sequence.

    The loop runs on the first of `_own_cache_stages` (the caches in `state` at the
    indices `caches` are cut to it), stops when the next step would write past it, the
    caches are padded to the next length, and the loop goes on; each stage is a loop
    of its own (compiled with the rest on JAX). `state[0]` is the index of the token
    sampled next; the step writes cache slot `index - 1 - offset`.

    The stages cost compilation and memory, not time: base's beam-5 loop compiles in
    7.4 s instead of 4.0 (once per machine, with `compilation_cache`) and the process
    holds 150-220 MB more (each stage's products keep their own buffers). Reading
    `(lengths, count)`-sliced caches in one loop instead (an `ops.switch` over the
    attention) saved the memory but copied the slices every step (0.6 ms of 18).
    """
    full = ops.shape(keras.tree.flatten(state[caches[0]])[0])[2]
    stages = _own_cache_stages(full)

    def resize(state, length):
        def fit(t):
            have = t.shape[2]
            if have >= length:
                return t[:, :, :length]
            return ops.pad(t, ((0, 0), (0, 0), (0, length - have), (0, 0)))

        return tuple(
            keras.tree.map_structure(fit, x) if i in caches else x for i, x in enumerate(state)
        )

    for i, length in enumerate(stages):
        state = resize(state, length)
        if i == len(stages) - 1:
            return ops.while_loop(cond, body, state)

        def within(*state, length=length):
            return ops.logical_and(cond(*state), state[0] - 1 - offset < length)

        state = ops.while_loop(within, body, state)


def _logit_rules(
    spec, logits, tokens, index, sample_begin, suppress_mask, blank_mask, max_initial_index
):
    """OpenAI's logit rules (`filters`) that `spec` asks for, at position `index`
    (a scalar, or one position per row), after faster-whisper's repetition rules."""
    begin = sample_begin - spec.prefix_length
    if spec.repetition_penalty != 1.0:
        logits = filters.repetition_penalty(logits, tokens, index, begin, spec.repetition_penalty)
    if spec.no_repeat_ngram_size:
        logits = filters.no_repeat_ngram(logits, tokens, index, begin, spec.no_repeat_ngram_size)
    if spec.blank:
        logits = filters.suppress_blank(logits, tokens, index, sample_begin, blank_mask)
    if spec.suppress:
        logits = filters.suppress_tokens(logits, tokens, suppress_mask)
    if spec.timestamps:
        logits = filters.apply_timestamp_rules(
            logits,
            tokens,
            index,
            sample_begin,
            timestamp_begin=spec.timestamp_begin,
            eot=spec.eot,
            no_timestamps=spec.no_timestamps,
            max_initial_timestamp_index=max_initial_index,
        )
    return logits


def _pick(spec, logits, temperature, seed, step):
    """Each row's greedy or sampled token and its log-probability, `(rows,)` each."""
    if spec.mode == "greedy":
        chosen = layers.row_argmax(logits)
    else:
        chosen = sample(logits / temperature, _step_seed(seed, step))
    chosen = ops.cast(chosen, "int32")
    # log_softmax(logits)[chosen], without materialising the whole log-softmax.
    chosen_logit = ops.take_along_axis(logits, chosen[:, None], axis=1)[:, 0]
    return chosen, chosen_logit - layers.logsumexp(logits)


# Tokens per block of `sample`'s first stage.
SAMPLE_BLOCK = 64


def sample(logits, seed):
    """One token per row drawn from `softmax(logits)`, as int32 `(rows,)`.

    The Gumbel-max draw of `keras.random.categorical`, in two stages: a block of
    `SAMPLE_BLOCK` consecutive tokens, by the blocks' total probabilities, then a token
    within it. The probabilities are exactly those of one draw over the whole row, for a
    2 % of its random numbers: with 51,864 tokens and 5 rows, drawing a random number per
    token was a fifth of each sampling step on a CPU (`benchmarks/HISTORY-speed.md`).

    Args:
        logits: `(rows, vocabulary)` float32 logits (already divided by the temperature);
            `-inf` marks tokens that must not be drawn.
        seed: a `keras.random` seed (a `SeedGenerator`, or on JAX a key tensor).
    """
    rows, width = ops.shape(logits)
    blocks = -(-width // SAMPLE_BLOCK)
    padded = ops.pad(
        logits, [[0, 0], [0, blocks * SAMPLE_BLOCK - width]], constant_values=float("-inf")
    )
    grouped = ops.reshape(padded, (rows, blocks, SAMPLE_BLOCK))
    # Each block's log-probability mass (up to the row's constant), -inf where the whole
    # block is masked.
    block_logits = layers.logsumexp(grouped)
    # Gumbel noise for both stages from one draw: the second stage's noise does not depend
    # on which block the first picks.
    uniform = keras.random.uniform(
        (rows, blocks + SAMPLE_BLOCK), minval=np.finfo("float32").tiny, maxval=1.0, seed=seed
    )
    gumbel = -ops.log(-ops.log(uniform))
    block = layers.row_argmax(block_logits + gumbel[:, :blocks])
    within = ops.take_along_axis(grouped, block[:, None, None], axis=1)[:, 0]
    offset = layers.row_argmax(within + gumbel[:, blocks:])
    return block * SAMPLE_BLOCK + offset


def _beam_loop(
    spec, next_logits, index, tokens, cache, sum_logprobs, sample_begin, limit, n_audio, offset
):
    """Beam search's loop; `offset` is the position of the cache's first slot."""
    beams, keep = spec.group, spec.max_candidates
    per_beam = beams + 1
    num_candidates = beams * per_beam
    rows, length = ops.shape(tokens)
    audio_offset = ops.arange(n_audio, dtype="int32")[:, None] * beams
    beam_of_row = ops.arange(rows, dtype="int32") % beams

    def cond(index, tokens, cache, spare, sum_logprobs, fin_tokens, fin_scores, fin_end, fin_count):
        return ops.logical_and(index < limit, ops.logical_not(ops.all(fin_count >= keep)))

    def body(index, tokens, cache, spare, sum_logprobs, fin_tokens, fin_scores, fin_end, fin_count):
        logits, cache = next_logits(index, tokens, cache)
        logprobs = layers.log_softmax(logits)
        top_logprobs, top_ids = layers.top_k(logprobs, per_beam)
        scores = sum_logprobs[:, None] + top_logprobs
        # First step: the beams are copies; OpenAI's tuple-keyed merge keeps one set.
        valid = ops.logical_or(index != sample_begin, beam_of_row == 0)
        scores = ops.where(valid[:, None], scores, filters.NEG_INF)
        scores = ops.reshape(scores, (n_audio, num_candidates))
        ids = ops.reshape(ops.cast(top_ids, "int32"), (n_audio, num_candidates))
        sorted_scores, order = ops.top_k(scores, num_candidates)
        order = ops.cast(order, "int32")
        sorted_ids = ops.take_along_axis(ids, order, axis=1)
        source = order // per_beam  # beam within the audio

        # Walk down the sorted list: EOT candidates finish, others fill the beams,
        # and the walk stops once `beams` live candidates are found.
        is_eot = sorted_ids == spec.eot
        not_eot = ops.cast(ops.logical_not(is_eot), "int32")
        live_rank = ops.cumsum(not_eot, axis=1)  # inclusive count of live candidates
        is_live = ops.logical_and(ops.logical_not(is_eot), live_rank <= beams)
        is_finished = ops.logical_and(is_eot, live_rank - not_eot < beams)

        slots = ops.arange(1, beams + 1, dtype="int32")[None, None, :]
        pick = ops.logical_and(is_live[:, :, None], live_rank[:, :, None] == slots)
        chosen = ops.argmax(ops.cast(pick, "int32"), axis=1)  # (n_audio, beams)
        new_ids = ops.take_along_axis(sorted_ids, chosen, axis=1)
        new_scores = ops.take_along_axis(sorted_scores, chosen, axis=1)
        new_rows = ops.reshape(ops.take_along_axis(source, chosen, axis=1) + audio_offset, (-1,))

        # Newly finished candidates, best first, until the audio has `keep` of them.
        finished = ops.cast(is_finished, "int32")
        slot = fin_count[:, None] + ops.cumsum(finished, axis=1) - finished
        accept = ops.logical_and(is_finished, slot < keep)
        match = ops.logical_and(
            accept[:, :, None], slot[:, :, None] == ops.arange(keep, dtype="int32")[None, None]
        )
        filled = ops.any(match, axis=1)  # (n_audio, keep)
        which = ops.argmax(ops.cast(match, "int32"), axis=1)
        finished_rows = ops.take_along_axis(source, which, axis=1) + audio_offset
        finished_tokens = ops.take(tokens, ops.reshape(finished_rows, (-1,)), axis=0)
        finished_tokens = ops.reshape(finished_tokens, (n_audio, keep, length))
        fin_tokens = ops.where(filled[:, :, None], finished_tokens, fin_tokens)
        fin_scores = ops.where(
            filled, ops.take_along_axis(sorted_scores, which, axis=1), fin_scores
        )
        fin_end = ops.where(filled, index, fin_end)
        fin_count = fin_count + ops.sum(ops.cast(accept, "int32"), axis=1)

        tokens = ops.take(tokens, new_rows, axis=0)
        tokens = ops.slice_update(tokens, (0, index), ops.reshape(new_ids, (rows, 1)))
        cache, spare = _reorder_rows(cache, spare, new_rows, index - offset)
        sum_logprobs = ops.reshape(new_scores, (rows,))
        return (
            index + 1,
            tokens,
            cache,
            spare,
            sum_logprobs,
            fin_tokens,
            fin_scores,
            fin_end,
            fin_count,
        )

    state = (
        index,
        tokens,
        cache,
        # Room for the rows that move when the beams are reordered (see `_reorder_rows`).
        keras.tree.map_structure(ops.zeros_like, cache),
        sum_logprobs,
        ops.zeros((n_audio, keep, length), "int32"),
        ops.zeros((n_audio, keep), "float32"),
        ops.zeros((n_audio, keep), "int32"),
        ops.zeros((n_audio,), "int32"),
    )
    if beams > 1:  # the beams' own caches (`_loop_stage`)
        state = _growing_while_loop(cond, body, state, (2, 3), offset)
    else:
        state = ops.while_loop(cond, body, state)
    index, tokens, _, _, sum_logprobs, fin_tokens, fin_scores, fin_end, fin_count = state
    return index, tokens, sum_logprobs, fin_tokens, fin_scores, fin_end, fin_count


def _reorder_rows(cache, spare, new_rows, length):
    """`take(cache, new_rows, axis=0)` for every tensor of `cache`, copying only what moves.

    After a beam-search step a row usually keeps its own history: on tiny.en's beam-5
    transcripts 1.9 rows of 5 move per step, and none in 43 % of the steps. A gather
    would rewrite the whole cache, and XLA then copies it back into the loop's buffer.
    Here the moved rows are first read into `spare` (so that a row moved away is still
    read as it was), then written over their destinations, both in place. And only the
    positions written so far are copied, in blocks of `CACHE_STEP`: a row's positions
    from `length` on are masked out of attention until decoding writes them.

    Args:
        cache: a tree of `(rows, heads, positions, head_dim)` tensors.
        spare: a tree of the same shapes, whose contents do not matter (a loop carries it
            so that it is not allocated every step).
        new_rows: `(rows,)` int32, the row each row's history now comes from.
        length: int32 scalar, the number of positions written so far.

    Returns:
        `(cache, spare)`, the cache reordered. Other backends than JAX gather.
    """
    if keras.backend.backend() != "jax":
        # Eager backends copy a whole tensor on every `slice_update`: one gather each
        # (PyTorch, tiny.en beam 5: 36 whole-cache copies a step, 21 ms, become 8).
        return keras.tree.map_structure(lambda t: ops.take(t, new_rows, axis=0), cache), spare
    rows = ops.shape(new_rows)[0]
    moved = ops.not_equal(new_rows, ops.arange(rows, dtype="int32"))
    positions = keras.tree.flatten(cache)[0].shape[2]
    block = min(CACHE_STEP, positions)
    blocks = (length + block - 1) // block

    def copy_row(target, source_tree, target_row, source_row):
        def copy_block(b, target):
            # The last block may overlap the one before it (positions not a multiple).
            start = ops.minimum(b * block, positions - block)
            return keras.tree.map_structure(
                lambda t, s: ops.slice_update(
                    t,
                    (target_row, 0, start, 0),
                    ops.slice(s, (source_row, 0, start, 0), (1, t.shape[1], block, t.shape[3])),
                ),
                target,
                source_tree,
            )

        return ops.cond(
            moved[target_row], lambda: ops.fori_loop(0, blocks, copy_block, target), lambda: target
        )

    spare = ops.fori_loop(0, rows, lambda r, sp: copy_row(sp, cache, r, new_rows[r]), spare)
    cache = ops.fori_loop(0, rows, lambda r, c: copy_row(c, spare, r, r), cache)
    return cache, spare


def _loop_layout(rows: int, dtype: str = "float32") -> str:
    """How a decoding loop of `rows` rows lays out its products.

    On JAX's CPU backend (XLA), measured on a 2-core AVX2 EPYC:

    - `"vector"` (1 row): the logits against a transposed copy of the embedding table, a
      vector-matrix product about twice as fast as against the stored table;
    - `"out_major"` (2 or more rows): every product computed `(out, rows)` against kernels
      stored `(out, in)` (`layers.out_major_matmul`), 1.2-2.4x faster per product at 2-16
      rows than XLA's own choice (base's beam-5 step), the logits too, against the table
      as stored (`WhisperBackbone.logits(..., out_major=True)`: 5.8-6.3 ms at 5 rows
      against 7.7-8.1 on a Zen 4 EPYC).

    On a 2-core AVX-512 Xeon the layouts are within a few percent of each other (beam 5:
    out-major 6 % slower than plain on tiny.en, as fast on base; benchmarks/HISTORY-speed.md).
    Elsewhere (GPUs, PyTorch) `"plain"`: the layers' own products; also for bfloat16 on
    CPUs, whose products `layers.matmul` runs on the matrix units in the plain layout
    (tiny.en's logits at 8 rows: 1.5 ms, against 4.6 in float32 and 24 out-major).
    """
    if not layers.jax_on_cpu() or layers.float32_accumulation(dtype):
        return "plain"
    return "vector" if rows == 1 else "out_major"


def _step_seed(seed, index):
    """The seed of one sampling step: a JAX key from (seed, step), else the SeedGenerator."""
    if keras.backend.backend() == "jax":
        step = ops.cast(index, "uint32")
        return ops.stack([seed[0], seed[1] + step])
    return seed


# ---------------------------------------------------------------------------------------------
# Host side: inputs, prompts, results.
# ---------------------------------------------------------------------------------------------


def _encoder_output(backbone, features_or_encoder_output):
    """The encoder output of a batch of windows, `(batch, positions, hidden_dim)`."""
    x = features_or_encoder_output
    shape = tuple(x.shape)
    if len(shape) == 2:
        x = ops.expand_dims(ops.convert_to_tensor(x), 0)
        shape = (1,) + shape
    if len(shape) != 3:
        raise ValueError(
            "Expected log-mel features `(batch, frames, num_mels)` or encoder outputs "
            f"`(batch, positions, hidden_dim)`; got an array of shape {shape}."
        )
    positions = backbone.max_encoder_sequence_length // 2
    if shape[1:] == (positions, backbone.hidden_dim):
        return ops.convert_to_tensor(x, backbone.compute_dtype)
    if shape[-1] != backbone.num_mels:
        raise ValueError(
            f"Expected log-mel features `(batch, frames, {backbone.num_mels})` or encoder "
            f"outputs `(batch, {positions}, {backbone.hidden_dim})`; got shape {shape}. "
            "Features are time-major: transpose `(batch, mels, frames)` arrays."
        )
    if shape[1] > backbone.max_encoder_sequence_length:
        raise ValueError(
            f"The features have {shape[1]} frames, more than one window "
            f"({backbone.max_encoder_sequence_length}). Split the audio into 30-s windows "
            "(`keras_whisper.audio.pad_or_trim`)."
        )
    features = ops.convert_to_tensor(x, "float32")
    return _run(backbone, ("encode",), _encode_stage, features)


def encode(backbone, features):
    """The encoder output of a batch of 30-s windows, `(batch, 1500, hidden_dim)`.

    Compiled once per batch size on JAX (the stage `generate` runs first). Its output can
    be given to `generate` and `detect_language` in place of the features.

    Args:
        backbone: a `WhisperBackbone`.
        features: log-mel features `(batch, frames, num_mels)`, time-major; a single window
            may omit the batch axis.

    Examples:
    ```python
    encoded = encode(backbone, features)
    results = generate(backbone, tokenizer, encoded, DecodingOptions(language="en"))
    ```
    """
    return _encoder_output(backbone, features)


def _language_probs(backbone, tokenizer, cross_cache, batch: int):
    sot_ids = np.full((batch, 1), tokenizer.sot, dtype="int32")
    mask = filters.token_mask(backbone.vocabulary_size, tokenizer.all_language_tokens)
    probs = _run(backbone, ("language",), _language_stage, cross_cache, sot_ids, mask)
    probs = _to_numpy(probs)[:, list(tokenizer.all_language_tokens)]
    codes = tokenizer.all_language_codes
    tokens = [tokenizer.all_language_tokens[int(i)] for i in probs.argmax(axis=-1)]
    dicts = [{code: float(p) for code, p in zip(codes, row, strict=True)} for row in probs]
    return tokens, dicts


def detect_language(
    backbone, tokenizer, features_or_encoder_output
) -> tuple[list[int], list[dict[str, float]]]:
    """Detect the spoken language of each window (OpenAI's `detect_language`).

    Runs the decoder on `<|startoftranscript|>` alone, keeps the logits of the
    language tokens and takes their softmax.

    Args:
        backbone: a multilingual `WhisperBackbone`.
        tokenizer: its `WhisperTokenizer`.
        features_or_encoder_output: log-mel features `(batch, frames, num_mels)`
            (one 30-s window each, time-major) or encoder outputs
            `(batch, 1500, hidden_dim)`.

    Returns:
        `(language_tokens, language_probs)`: the most likely language token of
        each window, and for each window a dict from language code to probability.

    Examples:
    ```python
    tokens, probs = detect_language(backbone, tokenizer, features)
    max(probs[0], key=probs[0].get)  # "en"
    ```
    """
    if not tokenizer.is_multilingual:
        raise ValueError(
            "This model is English-only: it has no language tokens, so it cannot detect "
            "the language. Use a multilingual model (e.g. 'whisper_base_multi')."
        )
    encoder_output = _encoder_output(backbone, features_or_encoder_output)
    cross_cache = _run(backbone, ("cross",), _cross_stage, encoder_output)
    return _language_probs(backbone, tokenizer, cross_cache, int(encoder_output.shape[0]))


def _text_tokens(tokenizer, value) -> list[int]:
    if isinstance(value, str):
        return tokenizer.encode(" " + value.strip())
    return [int(t) for t in value]


def _initial_tokens(tokenizer, options: DecodingOptions, language, n_ctx: int, sample_len: int):
    """OpenAI's initial tokens: [sot_prev, hotwords..., prompt...] + sot sequence + prefix
    (the hotwords are faster-whisper's)."""
    task = options.task
    sot_sequence = list(tokenizer.sot_sequence(language, task))
    if options.without_timestamps:
        sot_sequence.append(tokenizer.no_timestamps)
    tokens = list(sot_sequence) + _prefix_tokens(tokenizer, options, n_ctx, sample_len)
    sot_index = 0
    hotwords = options.hotwords if not options.prefix else None  # faster-whisper's rule
    if options.prompt or hotwords:
        previous = [tokenizer.sot_prev]
        if hotwords:
            previous += _text_tokens(tokenizer, hotwords)[: n_ctx // 2 - 1]
        if options.prompt:
            previous += _text_tokens(tokenizer, options.prompt)[-(n_ctx // 2 - 1) :]
        sot_index = len(previous)
        tokens = previous + tokens
    return tokens, sot_index


def _prefix_tokens(tokenizer, options: DecodingOptions, n_ctx: int, sample_len: int) -> list[int]:
    """The prefix's tokens, as OpenAI keeps them (its last `n_ctx // 2 - sample_len`)."""
    if not options.prefix:
        return []
    prefix = _text_tokens(tokenizer, options.prefix)
    max_prefix_len = n_ctx // 2 - sample_len
    return prefix[-max_prefix_len:] if max_prefix_len > 0 else prefix


def _repetition_fields(tokenizer, options: DecodingOptions, n_ctx: int, sample_len: int) -> dict:
    """The `_Spec` fields of faster-whisper's repetition rules (defaults when they are off,
    so that options without them share a compiled loop)."""
    if options.repetition_penalty == 1.0 and not options.no_repeat_ngram_size:
        return {}
    return {
        "repetition_penalty": float(options.repetition_penalty),
        "no_repeat_ngram_size": int(options.no_repeat_ngram_size),
        "prefix_length": len(_prefix_tokens(tokenizer, options, n_ctx, sample_len)),
    }


def _loop_args(backbone, tokenizer, options, suppress_ids, sample_begin, limit, seed) -> tuple:
    """The decoding loop's arguments shared by `generate` and `DecodingPool`: `(sample_begin,
    limit, suppress mask, blank mask, max initial timestamp index, temperature, seed)`."""
    vocab = backbone.vocabulary_size
    if options.max_initial_timestamp:
        precision = CHUNK_LENGTH / (backbone.max_encoder_sequence_length // 2)
        max_initial_index = round(options.max_initial_timestamp / precision)
    else:
        max_initial_index = filters.NO_LIMIT
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    if keras.backend.backend() == "jax":
        seed_arg = np.array([seed & 0xFFFFFFFF, 0], dtype="uint32")
    else:
        seed_arg = keras.random.SeedGenerator(seed)
    return (
        np.int32(sample_begin),
        np.int32(limit),
        filters.token_mask(vocab, suppress_ids or ()),
        filters.token_mask(vocab, filters.blank_token_ids(tokenizer)),
        np.int32(max_initial_index),
        np.float32(max(options.temperature, 1e-6)),
        seed_arg,
    )


def _longest_prompt(n_ctx: int) -> int:
    """The longest initial tokens without a prefix or hotwords, rounded up to 8.

    `<|startofprev|>`, the previous text's last `n_ctx // 2 - 1` tokens and a start
    sequence of at most four tokens (`<|startoftranscript|>`, language, task,
    `<|notimestamps|>`): 228 for Whisper's 448, padded to 232. Once a transcript is a
    window or two long every window's prompt is about that long, and its prefill's work
    grows with the padded length (256, the next power of two, would be 10 % more).
    """
    return -(-(n_ctx // 2 + 4) // 8) * 8


def _empty_cache(backbone, rows: int, length: int) -> tuple:
    """`backbone.empty_self_attention_cache(rows, length)` with one zero tensor read by
    every layer (the stages only read it: their caches come out new), made in one
    dispatch instead of one per layer and key/value (~0.5 ms each on JAX)."""
    shape = (rows, backbone.num_heads, length, backbone.head_dim)
    zeros = ops.zeros(shape, dtype=backbone.cache_dtype)
    return tuple((zeros, zeros) for _ in backbone.decoder_transformer_layers)


def _bucket(length: int, n_ctx: int) -> int:
    for size in (*PROMPT_BUCKETS, _longest_prompt(n_ctx)):
        if size >= length:
            return min(size, n_ctx)
    return n_ctx


def _rank(candidates, length_penalty) -> int:
    """OpenAI's `MaximumLikelihoodRanker`: the index of the best `(tokens, logprob)`."""
    scores = []
    for tokens, logprob in candidates:
        length = len(tokens)
        if length_penalty is None:
            penalty = length
        else:
            penalty = ((5 + length) / 6) ** length_penalty
        scores.append(logprob / penalty if penalty else logprob)
    return int(np.argmax(scores))


def _until_eot(tokens: np.ndarray, eot: int) -> list[int]:
    ends = np.flatnonzero(tokens == eot)
    return tokens[: ends[0]].tolist() if ends.size else tokens.tolist()


def compression_ratio(text: str) -> float:
    """OpenAI's repetition measure: `len(utf8) / len(zlib.compress(utf8))` of a text.

    Args:
        text: string. A transcript.

    Returns:
        The ratio; above 2.4 `transcribe()` treats the result as a repetition loop.

    Examples:
    ```python
    compression_ratio("ha " * 100)  # about 20
    ```
    """
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def _check_model(backbone, tokenizer) -> None:
    if tokenizer.vocabulary_size() != backbone.vocabulary_size:
        raise ValueError(
            f"The tokenizer has {tokenizer.vocabulary_size()} tokens but the backbone "
            f"{backbone.vocabulary_size}: load both from the same preset."
        )


def generate(
    backbone,
    tokenizer,
    features_or_encoder_output,
    options: DecodingOptions | None = None,
    *,
    seed: int | None = None,
    memo: dict | None = None,
) -> list[DecodingResult]:
    """Decode a batch of 30-second windows, as openai-whisper's `decode()`.

    Builds the initial tokens (`[<|startofprev|>, prompt...]`, the
    start-of-transcript sequence, `<|notimestamps|>` when asked, the prefix),
    detects the language of multilingual windows when `options.language` is
    `None`, then decodes greedily, by sampling (`temperature > 0`, `best_of`
    samples) or by beam search (`beam_size`, `patience`), applying OpenAI's logit
    rules at every step, and ranks the candidates of each window.

    Args:
        backbone: a `WhisperBackbone`.
        tokenizer: the `WhisperTokenizer` of the same preset.
        features_or_encoder_output: log-mel features `(batch, frames, num_mels)`,
            one 30-s window per row, time-major (e.g. `log_mel_spectrogram(
            pad_or_trim(audio))[None]`), or encoder outputs
            `(batch, 1500, hidden_dim)`. A single window may omit the batch axis.
        options: `DecodingOptions`. Defaults to `DecodingOptions()`: greedy, with
            timestamps.
        seed: int. Seed of the sampler when `options.temperature > 0`. Defaults to
            `None`: drawn from NumPy's global generator.
        memo: optional dict, empty at first, for a caller that decodes the same
            windows again with other options (temperature fallback decodes a window
            up to six times): the calls that share it compute the windows'
            cross-attention keys and values, detected languages and each prompt's
            prefill once and keep them there. Never share one between different
            windows or models.

    Returns:
        A list of `DecodingResult`, one per window.

    Examples:
    ```python
    backbone = WhisperBackbone.from_preset("whisper_tiny_en")
    tokenizer = WhisperTokenizer.from_preset("whisper_tiny_en")
    audio = keras_whisper.audio.load_audio("jfk.wav")
    features = keras_whisper.audio.log_mel_spectrogram(pad_or_trim(audio))[None]
    result = generate(backbone, tokenizer, features, DecodingOptions(beam_size=5))[0]
    result.text  # "And so my fellow Americans, ask not what your country ..."
    ```
    """
    options = DecodingOptions() if options is None else options
    if not isinstance(options, DecodingOptions):
        raise ValueError(f"`options` must be a DecodingOptions; got {type(options).__name__}.")
    _check_model(backbone, tokenizer)
    n_ctx = backbone.max_decoder_sequence_length
    sample_len = options.sample_len or n_ctx // 2
    vocab = backbone.vocabulary_size

    if len(features_or_encoder_output.shape) == 3 and features_or_encoder_output.shape[0] == 0:
        return []
    encoder_output = _encoder_output(backbone, features_or_encoder_output)
    n_audio = int(encoder_output.shape[0])
    memo = {} if memo is None else memo
    if "cross" not in memo:
        memo["cross"] = _run(backbone, ("cross",), _cross_stage, encoder_output)
    cross_cache = memo["cross"]

    # Language and the initial tokens (one row per audio; only the language differs).
    language_probs = None
    if tokenizer.is_multilingual and options.language is None:
        if "language" not in memo:
            memo["language"] = _language_probs(backbone, tokenizer, cross_cache, n_audio)
        language_tokens, language_probs = memo["language"]
        codes = dict(zip(tokenizer.all_language_tokens, tokenizer.all_language_codes, strict=True))
        languages = [codes[t] for t in language_tokens]
    else:
        language = options.language or "en"
        if tokenizer.is_multilingual:
            tokenizer.language_token(language)  # validates
            code = tokenizer.all_language_codes[
                tokenizer.all_language_tokens.index(tokenizer.language_token(language))
            ]
        else:
            tokenizer.sot_sequence(language, options.task)  # refuses non-English
            code = "en"
        languages = [code] * n_audio
    rows = [
        _initial_tokens(tokenizer, options, languages[i], n_ctx, sample_len) for i in range(n_audio)
    ]
    sot_index = rows[0][1]
    initial = np.array([r[0] for r in rows], dtype="int32")
    sample_begin = initial.shape[1]
    if sample_begin > n_ctx:
        raise ValueError(
            f"The initial tokens (prompt, start sequence and prefix) are {sample_begin} "
            f"long, more than the decoder's context of {n_ctx}. Shorten the prefix."
        )
    if initial.size and initial.max() >= vocab:
        raise ValueError(f"Prompt or prefix token ids must be below {vocab}.")

    # The self-attention cache holds the positions the loop can reach (below
    # `limit - 1`), rounded up to a multiple of CACHE_STEP: a loop reads (and beam
    # search reorders) the whole cache every step, so a window without a long
    # prompt works on 256 positions instead of 448.
    limit = min(sample_begin + sample_len, n_ctx + 1)
    padded = _bucket(sample_begin, n_ctx)
    if options.beam_size is not None:
        mode, group = "beam", options.beam_size
    elif options.temperature > 0:
        mode, group = "sample", options.best_of or 1
    else:
        mode, group = "greedy", 1
    own_cache = None
    if group == 1:
        cache_length = min(n_ctx, -(-(limit - 1) // CACHE_STEP) * CACHE_STEP)
    else:
        # The rows of an audio share its prompt (`_loop_stage`): the prefill's cache
        # holds the prompt, once per audio, and each row's own cache the positions
        # from the prompt's last token on (`limit - sample_begin` of them). With a
        # 224-token prompt a beam-5 step reads 232 + 5 x 256 cached positions instead
        # of 5 x 448, and reorders only the beams' own.
        own_length = min(n_ctx, -(-(limit - sample_begin) // CACHE_STEP) * CACHE_STEP)
        own_cache = _empty_cache(backbone, n_audio * group, own_length)
        cache_length = min(n_ctx, max(padded, CACHE_STEP))

    # Prefill.
    prompt = np.full((n_audio, padded), tokenizer.eot, dtype="int32")
    prompt[:, :sample_begin] = initial
    # The loops never write to the prefill's cache (a new one comes out), so calls
    # sharing `memo` may read it again: beam search and the fallback temperatures'
    # samples lay it out alike.
    prefill_key = ("prefill", prompt.tobytes(), prompt.shape, sot_index, cache_length)
    if prefill_key not in memo:
        memo[prefill_key] = _run(
            backbone,
            ("prefill",),
            _prefill_stage,
            cross_cache,
            _empty_cache(backbone, n_audio, cache_length),
            np.int32(0),
            prompt,
            np.int32(sot_index),
            np.int32(tokenizer.no_speech),
        )
    self_cache, no_speech = memo[prefill_key]

    # The loop.
    max_candidates = round(group * (options.patience or 1.0)) if mode == "beam" else 0
    suppress_ids = filters.suppressed_token_ids(tokenizer, options.suppress_tokens)
    spec = _Spec(
        mode=mode,
        group=group,
        max_candidates=max_candidates,
        timestamps=not options.without_timestamps,
        blank=bool(options.suppress_blank),
        suppress=suppress_ids is not None,
        eot=tokenizer.eot,
        timestamp_begin=tokenizer.timestamp_begin,
        no_timestamps=tokenizer.no_timestamps,
        layout=_loop_layout(n_audio * group, backbone.compute_dtype),
        **_repetition_fields(tokenizer, options, n_ctx, sample_len),
    )
    buffer = np.zeros((n_audio, n_ctx + 1), dtype="int32")
    buffer[:, :sample_begin] = initial
    loop_args = _loop_args(backbone, tokenizer, options, suppress_ids, sample_begin, limit, seed)
    no_speech = _to_numpy(no_speech)
    if mode == "beam":
        rows = n_audio * group
        outputs = _run(
            backbone,
            ("loop", spec),
            functools.partial(_loop_stage, spec=spec),
            cross_cache,
            self_cache,
            buffer,
            *loop_args,
            np.int32(sample_begin),
            np.zeros((rows,), "float32"),
            np.zeros((rows,), "bool"),
            np.int32(-1),
            _derived_weights(backbone, spec.layout),
            own_cache,
        )
        outputs = [_to_numpy(x) for x in outputs]
    else:
        outputs = _sampling_loop(
            backbone,
            spec,
            cross_cache,
            self_cache,
            buffer,
            loop_args,
            compact=COMPACT_FINISHED_ROWS and mode == "greedy" and n_audio > 1,
            own_cache=own_cache,
        )
    end, tokens, sum_logprobs = int(outputs[0]), outputs[1], outputs[2]

    results = []
    for a in range(n_audio):
        if mode == "beam":
            candidates = _beam_candidates(a, group, outputs, sample_begin, tokenizer.eot)
        else:
            candidates = [
                (
                    _until_eot(tokens[a * group + j, sample_begin:end], tokenizer.eot),
                    float(sum_logprobs[a * group + j]),
                )
                for j in range(group)
            ]
        best_tokens, best_logprob = candidates[_rank(candidates, options.length_penalty)]
        text = tokenizer.decode(best_tokens).strip()
        results.append(
            DecodingResult(
                tokens=best_tokens,
                text=text,
                avg_logprob=best_logprob / (len(best_tokens) + 1),
                sum_logprob=best_logprob,
                no_speech_prob=float(no_speech[a]),
                temperature=float(options.temperature),
                compression_ratio=compression_ratio(text),
                language=languages[a],
                language_probs=None if language_probs is None else language_probs[a],
            )
        )
    return results


def _compact_stage(model, cross_cache, self_cache, tokens, sum_logprobs, rows):
    return keras.tree.map_structure(
        lambda x: ops.take(x, rows, axis=0), (cross_cache, self_cache, tokens, sum_logprobs)
    )


def _sampling_loop(
    backbone, spec, cross_cache, self_cache, buffer, loop_args, compact, own_cache=None
):
    """Runs the greedy or sampling loop; returns `(end, tokens, sum_logprobs)` on the host.

    With `compact`, rows that have reached `<|endoftext|>` stop costing work: the loop
    stops once half of its rows or fewer are still decoding, those rows (with their
    caches) are gathered into a loop of half as many rows, and decoding goes on there
    (8 -> 4 -> 2 -> 1 rows). Each row count is compiled once (JAX); the host syncs only at
    these few points, never per token. A row's tokens do not depend on the other rows, so
    the results are those of the uncompacted loop. `own_cache`: the rows' own caches when
    several rows share an audio's prompt (`_loop_stage`; no compaction then).
    """
    if compact and own_cache is not None:
        raise ValueError("Rows that share a prompt are not compacted.")
    sample_begin = int(loop_args[0])
    rows = int(buffer.shape[0]) * spec.group
    tokens_out = np.zeros((rows, buffer.shape[1]), "int32")
    sums_out = np.zeros((rows,), "float32")
    origin = np.arange(rows)  # the output row of each loop row (-1: padding)
    index, tokens = np.int32(sample_begin), buffer
    sum_logprobs, done = np.zeros((rows,), "float32"), np.zeros((rows,), "bool")
    while True:
        count = len(origin)
        stop_below = count // 2 if compact and count > 1 else -1
        loop_spec = spec._replace(layout=_loop_layout(count, backbone.compute_dtype))
        index, tokens, self_cache, sum_logprobs, done = _run(
            backbone,
            ("loop", loop_spec),
            functools.partial(_loop_stage, spec=loop_spec),
            cross_cache,
            self_cache,
            tokens,
            *loop_args,
            index,
            sum_logprobs,
            done,
            np.int32(stop_below),
            _derived_weights(backbone, loop_spec.layout),
            own_cache,
        )
        host_done = _to_numpy(done)
        real = origin >= 0
        tokens_out[origin[real]] = _to_numpy(tokens)[real]
        sums_out[origin[real]] = _to_numpy(sum_logprobs)[real]
        end = int(_to_numpy(index))
        active = np.flatnonzero(~host_done)
        if stop_below < 0 or end >= int(loop_args[1]) or active.size == 0:
            return end, tokens_out, sums_out
        # Keep the decoding rows; pad with finished copies of the last one.
        size = count // 2
        keep = np.concatenate([active, np.full(size - active.size, active[-1])]).astype("int32")
        cross_cache, self_cache, tokens, sum_logprobs = _run(
            backbone,
            ("compact",),
            _compact_stage,
            cross_cache,
            self_cache,
            tokens,
            sum_logprobs,
            keep,
        )
        origin = np.where(np.arange(size) < active.size, origin[keep], -1)
        done = np.arange(size) >= active.size
        index = np.int32(end)


def _beam_candidates(audio: int, beams: int, outputs: Sequence[Any], sample_begin: int, eot: int):
    """OpenAI's `BeamSearchDecoder.finalize` for one audio: finished, then best live beams."""
    end, tokens, sum_logprobs, fin_tokens, fin_scores, fin_end, fin_count = outputs
    end = int(end)
    count = min(int(fin_count[audio]), fin_scores.shape[1])
    candidates = [
        (
            _until_eot(fin_tokens[audio, m, sample_begin : fin_end[audio, m]], eot),
            float(fin_scores[audio, m]),
        )
        for m in range(count)
    ]
    if len(candidates) < beams:
        live = sum_logprobs[audio * beams : (audio + 1) * beams]
        for j in list(np.argsort(live))[::-1]:
            row = tokens[audio * beams + j, sample_begin:end]
            candidates.append((_until_eot(row, eot), float(live[j])))
            if len(candidates) >= beams:
                break
    return candidates
