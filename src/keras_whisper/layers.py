"""Whisper's building blocks: position tables, tied embedding, attention and blocks.

Every layer here is written with `keras.ops` and `keras.layers` only, so it runs
on JAX, PyTorch and TensorFlow. Attention layers work on whole sequences (the
functional model, training) and on one decoding step at a time with an explicit
key/value cache: plain tensors that are passed in and returned, preallocated to
their maximum length and updated in place with `keras.ops.slice_update`.

Cache layout: one `(keys, values)` pair per decoder layer, each tensor
`(batch, num_heads, length, head_dim)`, the layout the attention products read
without any transpose:

- self-attention: `length` is the maximum decoding length;
- cross-attention: `length` is the encoder length, computed once per audio
  window. Its batch may be smaller than the decoder's: rows `i * group ...
  (i + 1) * group - 1` of the decoder (the beams or samples of one audio) all
  read entry `i`, so the keys and values are never repeated per beam.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

# Replaces the float32 attention scores of masked positions. Like keras-hub, a
# row whose keys are all masked ends up with uniform weights. Masks travel as
# booleans (never autocast to half precision) and meet the scores in float32.
MASK_VALUE = -1e9

# Unmasked self-attention (the encoder) through the backend's fused attention
# kernel (cuDNN flash attention on JAX, PyTorch's SDPA): `None` chooses it on
# PyTorch, and on JAX on GPUs in half precision, where the materialised
# `(batch, heads, 1500, 1500)` scores would otherwise dominate the encoder's memory
# traffic; on JAX's CPU backend the blocked path is faster. PyTorch's CPU SDPA
# kernel runs tiny.en's float32 encoder in 256-270 ms against 415-490 through
# einsum and softmax (2-core AVX-512 EPYC; outputs within 9e-6).
# `True` / `False` force it on or off (benchmarks, tests).
FUSED_ATTENTION: bool | None = None

# On PyTorch's CPU backend a product of a few rows with the embedding table (the
# logits of a decoding step) runs as `(table @ rows.T).T`, at least two rows: tiny.en's
# logits take 3.3 ms at one or two rows and 3-5 at five, against 8.5-9.5 and 11-13
# for `rows @ table.T` (MKL, 2-core AVX-512 EPYC). Up to this many rows.
FEW_ROWS = 16


# On CPUs (JAX) unmasked self-attention over long sequences (the encoder's 1500
# positions) runs head by head in blocks of this many queries: each block's scores
# stay in cache. tiny.en's encoder on a 2-core AVX2 EPYC (blocks of 300): 503-533 ->
# 471-476 ms a window, same output; on a 2-core AVX-512 Xeon (2 MB of L2 a core)
# blocks of 500 ran 3-4 % faster than 300 (tiny.en 192 -> 185 ms, base 422 -> 411).
# Since the encoder is compiled with YNNPACK's default fusions (each block's product,
# row maximum and exponential in one kernel; `decoding.generate.compiler_options`),
# blocks of 750 run best there: tiny.en 174 -> 162 ms, base 401 -> 379 (300: 408).
QUERY_BLOCK = 750


def jax_on_cpu() -> bool:
    """Whether layers run on JAX's CPU backend (where the CPU-tuned forms pay)."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


def torch_on_cpu() -> bool:
    """Whether layers run on PyTorch's CPU backend."""
    if keras.backend.backend() != "torch":
        return False
    import torch

    return not torch.cuda.is_available()


def float32_accumulation(dtype) -> bool:
    """Whether products of `dtype` operands are asked for in float32: bfloat16 on JAX/CPU.

    XLA's CPU backend multiplies bfloat16 matrices on the CPU's matrix units (AMX on
    Intel Xeons since Sapphire Rapids) only when the product is requested in float32
    (`preferred_element_type`); a bfloat16 result takes a slow path. Measured on a
    2-core AVX-512/AMX Xeon, (1500, 384) x (384, 1536): float32 6.2 ms, bfloat16 with a
    bfloat16 result 9.3 ms, with a float32 result 1.1 ms. Elsewhere (GPUs accumulate
    in float32 anyway, PyTorch) products stay as the backend makes them.
    """
    return keras.backend.standardize_dtype(dtype) == "bfloat16" and jax_on_cpu()


def _float32_result(operand_dtype, dtype: str) -> bool:
    """Whether a half-precision product asked for in float32 is returned unrounded by
    JAX itself (`preferred_element_type`) rather than rounded to the operands' dtype
    and then cast (the other backends; logits near 20 go in steps of 0.125 in bfloat16).
    """
    half = keras.backend.standardize_dtype(operand_dtype) in ("bfloat16", "float16")
    return half and dtype == "float32" and keras.backend.backend() == "jax"


def matmul(a, b, dtype=None, transpose_b: bool = False):
    """`a @ b` (`a @ b.T` with `transpose_b`) in `dtype` (default: `a`'s).

    Where `float32_accumulation` says so, bfloat16 is accumulated in float32, and a
    single row (a decoding step of one audio) is multiplied as two: XLA's bfloat16
    vector-matrix product is 15x slower than its two-row product (tiny.en's logits:
    22.8 against 1.6 ms on a 2-core AMX Xeon).
    """
    dtype = keras.backend.standardize_dtype(dtype or a.dtype)
    accumulate = float32_accumulation(a.dtype)
    if not (accumulate or _float32_result(a.dtype, dtype)):
        return ops.cast(ops.matmul(a, ops.transpose(b) if transpose_b else b), dtype)
    import jax
    import jax.numpy as jnp

    a, b = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    if len(b.shape) != 2 or not accumulate:
        operand = jnp.swapaxes(b, -1, -2) if transpose_b else b
        return jnp.matmul(a, operand, preferred_element_type=jnp.float32).astype(dtype)
    shape = a.shape
    rows = jnp.reshape(a, (-1, shape[-1]))
    single = rows.shape[0] == 1
    if single:
        rows = jnp.concatenate([rows, rows], axis=0)
    dimensions = (((1,), (1 if transpose_b else 0,)), ((), ()))
    product = jax.lax.dot_general(rows, b, dimensions, preferred_element_type=jnp.float32)
    if single:
        product = product[:1]
    return jnp.reshape(product, tuple(shape[:-1]) + (product.shape[-1],)).astype(dtype)


def einsum(equation: str, a, b, dtype=None):
    """`ops.einsum(equation, a, b)` in `dtype` (default: `a`'s); see `matmul`."""
    dtype = keras.backend.standardize_dtype(dtype or a.dtype)
    if not (float32_accumulation(a.dtype) or _float32_result(a.dtype, dtype)):
        return ops.cast(ops.einsum(equation, a, b), dtype)
    import jax.numpy as jnp

    a, b = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    return jnp.einsum(equation, a, b, preferred_element_type=jnp.float32).astype(dtype)


def _float32_dense(x, kernel, bias, compute_dtype):
    """`x @ kernel + bias` summed and returned in float32, operands in `compute_dtype`
    (the `float32_accumulation` form of a dense layer's product)."""
    y = matmul(ops.cast(x, compute_dtype), ops.cast(kernel, compute_dtype), "float32")
    return y if bias is None else y + ops.cast(bias, "float32")


@keras.saving.register_keras_serializable(package="keras_whisper")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` whose product is `matmul`'s: bfloat16 accumulated in float32.

    The same weights, names and results as `keras.layers.Dense` (quantized layers
    take Keras's own path); only the product's precision request differs, where
    `float32_accumulation` says so. The bias is added in float32 there.
    """

    def call(self, inputs, training=None):
        if not float32_accumulation(self.compute_dtype):
            return super().call(inputs, training=training)
        return ops.cast(self._float32_call(inputs), self.compute_dtype)

    def _float32_call(self, inputs):
        x = _float32_dense(inputs, self.kernel, self.bias, self.compute_dtype)
        return x if self.activation is None else self.activation(x)

    def project(self, inputs, dtype):
        """`self(inputs)` in `dtype`, not rounded to the compute dtype on the way where
        products are summed in float32 (`float32_accumulation`) and `dtype` is float32:
        the cross-attention keys and values that bfloat16 decoding keeps in float32."""
        if self.quantization_mode is not None or not float32_accumulation(self.compute_dtype):
            return ops.cast(self(inputs), dtype)
        return ops.cast(self._float32_call(inputs), dtype)

    def quantize(self, mode=None, type_check=True, **kwargs):
        # Keras quantizes only `Dense` itself unless told that a subclass is the same
        # layer; this one is (its quantized modes are Keras's own).
        return super().quantize(mode, type_check=False, **kwargs)


# XLA's CPU compiler rewrites every reduction over more than 32 elements into a
# reduce-window and a reduce (its tree-reduction pass, which bounds the rounding of
# long float sums); those run at a fraction of the speed of element-wise code. On
# JAX/CPU the row reductions below first fold the last axis in halves with
# element-wise maxima or sums, which XLA fuses into one pass, down to at most
# FOLD_WIDTH elements. Measured on a 2-core AVX-512 Xeon: one layer's attention
# over the encoder's 1500 positions (6 heads, tiny.en) 29.5 -> 21.3 ms, 15.8 of
# which are its two products. Sums folded this way are pairwise, as accurate.
FOLD_WIDTH = 32


def _folds(x) -> bool:
    """Whether row reductions of `x` are folded: JAX/CPU and a static last axis."""
    return jax_on_cpu() and x.shape[-1] is not None


def _pad_last(x, extra: int, value):
    """`x` with `extra` elements of `value` appended along its last axis."""
    return ops.pad(x, [(0, 0)] * (len(x.shape) - 1) + [(0, extra)], constant_values=value)


def _reduce_rows(x, combine, reduce, identity):
    if not _folds(x):
        return reduce(x, axis=-1, keepdims=True)
    # Halve the last axis with `combine` until it is at most FOLD_WIDTH wide; an odd
    # width's shorter half is padded with `identity`. The result comes out of a
    # reduction, which XLA computes once: joining the odd columns after the halvings
    # instead (element-wise work on slices of the halves) let XLA fuse that tail into
    # every consumer of the result and recompute it for each of their elements
    # (base's greedy logit rules on a 51,865-token row: 1.4-1.8 -> 0.4-0.55 ms a step,
    # medians over a window's steps on a 2-core AVX-512 EPYC).
    width = x.shape[-1]
    while width > FOLD_WIDTH:
        half = -(-width // 2)
        rest = x[..., half:]
        if width - half < half:
            rest = _pad_last(rest, 1, identity)
        x = combine(x[..., :half], rest)
        width = half
    return reduce(x, axis=-1, keepdims=True)


def row_max(x):
    """`max(x, axis=-1, keepdims=True)`, fast on XLA's CPU backend."""
    return _reduce_rows(x, ops.maximum, ops.max, float("-inf"))


def row_sum(x):
    """`sum(x, axis=-1, keepdims=True)`, fast on XLA's CPU backend."""
    return _reduce_rows(x, ops.add, ops.sum, 0)


def row_argmax(x):
    """`argmax(x, axis=-1)` as int32 (the first index of the maximum), fast on XLA's CPU
    backend: the row maximum, then the smallest index holding it, both folded (2-3x
    faster than XLA's variadic reduce over a 51864-token vocabulary at 1-16 rows)."""
    if not _folds(x):
        return ops.cast(ops.argmax(x, axis=-1), "int32")
    width = x.shape[-1]
    positions = ops.arange(width, dtype="int32")
    candidates = ops.where(x == row_max(x), positions, width)
    # A row holding NaN matches nowhere: index 0, not one past the end.
    first = _reduce_rows(candidates, ops.minimum, ops.min, width)[..., 0]
    return ops.where(first == width, 0, first)


# Elements per block of `top_k`'s first stage.
TOP_K_BLOCK = 128


def top_k(x, k: int):
    """`ops.top_k(x, k)` (values and int32 indices, largest first), fast on XLA's CPU
    backend for a few rows of a long last axis, where ties go to the lower index as
    with XLA's own.

    There, in two stages: each block of `TOP_K_BLOCK` consecutive elements by its
    maximum, then the `k` best elements of the `k` best blocks. Exact: an element
    among the `k` best lies in one of the `k` best blocks (ranked by maximum, then
    by position), for otherwise `k` blocks' maxima would rank before it; the chosen
    blocks are read in position order, so ties still go to the lower index. XLA's
    own top-k over 5 rows of a 51,865-token vocabulary takes ~0.35 ms on a 2-core
    AVX-512 EPYC, this 85 us (blocks of 128).
    """
    width = x.shape[-1]
    if not _folds(x) or width < 4 * k * TOP_K_BLOCK:
        values, indices = ops.top_k(x, k)
        return values, ops.cast(indices, "int32")
    lead = tuple(x.shape[:-1])
    blocks = -(-width // TOP_K_BLOCK)
    if blocks * TOP_K_BLOCK != width:
        x = _pad_last(x, blocks * TOP_K_BLOCK - width, float("-inf"))
    grouped = ops.reshape(x, lead + (blocks, TOP_K_BLOCK))
    _, best = ops.top_k(row_max(grouped)[..., 0], k)
    best = ops.sort(ops.cast(best, "int32"), axis=-1)
    candidates = ops.take_along_axis(grouped, best[..., None], axis=-2)
    values, position = ops.top_k(ops.reshape(candidates, lead + (k * TOP_K_BLOCK,)), k)
    position = ops.cast(position, "int32")
    block = ops.take_along_axis(best, position // TOP_K_BLOCK, axis=-1)
    return values, block * TOP_K_BLOCK + position % TOP_K_BLOCK


def softmax(x):
    """Softmax over the last axis (`ops.softmax`), fast on XLA's CPU backend."""
    if not _folds(x):
        return ops.softmax(x, axis=-1)
    exp = ops.exp(x - ops.stop_gradient(row_max(x)))
    return exp / row_sum(exp)


def logsumexp(x):
    """`logsumexp(x, axis=-1)` (`ops.logsumexp`), fast on XLA's CPU backend."""
    if not _folds(x):
        return ops.logsumexp(x, axis=-1)
    peak = ops.stop_gradient(row_max(x))
    # A row of -inf (everything masked) keeps -inf, as ops.logsumexp does.
    finite_peak = ops.where(ops.isfinite(peak), peak, ops.zeros_like(peak))
    return (ops.log(row_sum(ops.exp(x - finite_peak))) + finite_peak)[..., 0]


def log_softmax(x):
    """Log-softmax over the last axis (`ops.log_softmax`), fast on XLA's CPU backend."""
    if not _folds(x):
        return ops.log_softmax(x, axis=-1)
    return x - logsumexp(x)[..., None]


def use_blocked_attention(length: int) -> bool:
    """Whether unmasked self-attention of `length` positions runs in query blocks."""
    return length >= 2 * QUERY_BLOCK and jax_on_cpu()


def use_fused_attention(compute_dtype: str) -> bool:
    """Whether unmasked self-attention runs through `ops.dot_product_attention`."""
    if FUSED_ATTENTION is not None:
        return bool(FUSED_ATTENTION)
    backend = keras.backend.backend()
    if backend == "torch":
        return True
    if backend == "jax" and compute_dtype in ("bfloat16", "float16"):
        import jax

        return jax.default_backend() == "gpu"
    return False


def residual_dtype(compute_dtype: str) -> str:
    """The dtype of the residual stream: float32 when the layers compute in half precision.

    Each block adds its (half-precision) output to a float32 stream, and LayerNorm reads
    that stream in float32: in bfloat16 (8 significant bits) a half-precision stream
    loses the small updates of later layers to rounding.
    """
    return "float32" if compute_dtype in ("bfloat16", "float16") else compute_dtype


def to_residual(x, compute_dtype: str):
    """`x` cast to the residual stream's dtype (`residual_dtype(compute_dtype)`)."""
    return ops.cast(x, residual_dtype(compute_dtype))


def keep_input_dtype(layer: keras.layers.Layer) -> keras.layers.Layer:
    """`layer`, set not to cast its inputs to its compute dtype (it reads the stream)."""
    layer.autocast = False
    return layer


def whisper_kernel_initializer(stddev: float = 0.02) -> keras.initializers.Initializer:
    """The initializer of every dense kernel and embedding table."""
    return keras.initializers.TruncatedNormal(stddev=stddev)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's fixed sinusoidal position table, `(length, channels)` float32.

    The first half of the channels holds sines, the second half cosines, with
    timescales spaced geometrically from 1 to `max_timescale`.

    Args:
        length: int. Number of positions.
        channels: int. Width of the table; must be even.
        max_timescale: float. The longest timescale.
    """
    if channels % 2:
        raise ValueError(f"`channels` must be even for sinusoids, got {channels}.")
    half = channels // 2
    increment = math.log(max_timescale) / max(half - 1, 1)
    inv_timescales = np.exp(-increment * np.arange(half, dtype=np.float64))
    scaled = np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package="keras_whisper")
class PositionEmbedding(keras.layers.Layer):
    """Adds a position table to a sequence, starting at a given position.

    Args:
        sequence_length: int. Number of rows of the table (the longest sequence).
        sinusoidal: bool. If `True`, the table is Whisper's fixed sinusoid table
            and is not trainable (the encoder). Otherwise it is learned (the
            decoder) and initialised with a truncated normal.
        **kwargs: other keyword arguments of `keras.layers.Layer`.
    """

    def __init__(self, sequence_length: int, sinusoidal: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = int(sequence_length)
        self.sinusoidal = bool(sinusoidal)

    def build(self, input_shape):
        hidden_dim = input_shape[-1]
        if self.sinusoidal:
            initializer = keras.initializers.Constant(sinusoids(self.sequence_length, hidden_dim))
        else:
            initializer = whisper_kernel_initializer()
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, hidden_dim),
            initializer=initializer,
            trainable=not self.sinusoidal,
        )
        if self.sinusoidal:
            # A fixed table: it never trains, even if the layer is set trainable.
            self.embeddings.trainable = False
        self.built = True

    def call(self, inputs, start_index=0, positions=None):
        table = ops.convert_to_tensor(self.embeddings)
        if positions is not None:
            # One position per row (`(batch,)`, one new token per row): the rows of a
            # decoding pool sit at different positions.
            rows = ops.take(table, ops.cast(positions, "int32"), axis=0)[:, None, :]
            return inputs + ops.cast(rows, inputs.dtype)
        length = ops.shape(inputs)[1]
        positions = ops.slice(table, (start_index, 0), (length, ops.shape(inputs)[-1]))
        return inputs + ops.cast(positions, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"sequence_length": self.sequence_length, "sinusoidal": self.sinusoidal})
        return config


def _few_rows_on_torch_cpu(x) -> bool:
    if not torch_on_cpu() or any(d is None for d in x.shape):
        return False
    return math.prod(x.shape[:-1]) <= FEW_ROWS


def _few_rows_against_table(x, table):
    """`x @ table.T` for a few rows (`FEW_ROWS`) as `out_major_matmul`, one row doubled."""
    if math.prod(x.shape[:-1]) > 1:
        return out_major_matmul(x, table)
    return out_major_matmul(ops.concatenate([x, x], axis=0), table)[:1]


@keras.saving.register_keras_serializable(package="keras_whisper")
class TokenEmbedding(keras.layers.Embedding):
    """A token embedding that doubles as the tied output projection.

    `layer(ids)` looks tokens up; `layer(hidden, reverse=True)` multiplies by the
    transposed table, giving float32 logits (Whisper has no output bias).
    """

    def call(self, inputs, reverse=False):
        if reverse:
            table = ops.cast(self.embeddings, self.compute_dtype)
            inputs = ops.cast(inputs, self.compute_dtype)
            if float32_accumulation(self.compute_dtype):
                return matmul(inputs, table, "float32", transpose_b=True)
            if self.compute_dtype == "float32" and _few_rows_on_torch_cpu(inputs):
                return _few_rows_against_table(inputs, table)
            # Contract with the table as stored: no transposed copy of it.
            return einsum("...d,vd->...v", inputs, table, "float32")
        return super().call(inputs)

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, reverse=False):
        if reverse:
            shape = tuple(inputs.shape[:-1]) + (self.input_dim,)
            return keras.KerasTensor(shape, dtype="float32")
        return super().compute_output_spec(inputs)


@keras.saving.register_keras_serializable(package="keras_whisper")
class CausalPaddingMask(keras.layers.Layer):
    """The decoder's self-attention bias from a `(batch, T)` key padding mask.

    Position `i` may attend to key `j` when `j <= i` and `padding_mask[j]` is
    set. Returns a boolean mask `(batch, 1, T, T)`, `True` where allowed.
    """

    def call(self, padding_mask):
        length = ops.shape(padding_mask)[1]
        positions = ops.arange(length)
        causal = positions[None, :] <= positions[:, None]
        keys = ops.cast(padding_mask, "bool")[:, None, None, :]
        return ops.logical_and(causal[None, None, :, :], keys)

    def compute_output_spec(self, padding_mask):
        batch, length = padding_mask.shape
        return keras.KerasTensor((batch, 1, length, length), dtype="bool")


def _split_heads(x, num_heads):
    """`(batch, length, heads * head_dim)` -> `(batch, heads, length, head_dim)`."""
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    x = ops.reshape(x, (batch, length, num_heads, -1))
    return ops.transpose(x, (0, 2, 1, 3))


def _merge_heads(x):
    """`(batch, heads, length, head_dim)` -> `(batch, length, heads * head_dim)`."""
    x = ops.transpose(x, (0, 2, 1, 3))
    batch, length = ops.shape(x)[0], ops.shape(x)[1]
    return ops.reshape(x, (batch, length, -1))


def _group_rows(x, group):
    """`(batch, heads, length, d)` -> `(batch // group, heads, group * length, d)`: the
    rows of each group of `group` consecutive rows side by side."""
    batch, heads, length, depth = ops.shape(x)
    x = ops.reshape(x, (batch // group, group, heads, length, depth))
    return ops.reshape(ops.transpose(x, (0, 2, 1, 3, 4)), (batch // group, heads, -1, depth))


def _ungroup_rows(x, group):
    """The inverse of `_group_rows`."""
    audio, heads, rows, depth = ops.shape(x)
    x = ops.reshape(x, (audio, heads, group, rows // group, depth))
    return ops.reshape(ops.transpose(x, (0, 2, 1, 3, 4)), (audio * group, heads, -1, depth))


def layout_barrier(x):
    """`x`, computed as written: XLA may not fold a following transpose into it (JAX).

    Elsewhere the identity.
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.lax.optimization_barrier(x)
    return x


def _padded_rows(rows: int) -> int:
    """The row count an out-major product runs at: 5-7 spare rows past a multiple of
    8 are padded up to the next one.

    YNNPACK's kernels (XLA CPU) take 8 rows at a time: on a 2-core AVX-512 EPYC
    (Zen 4), 5 rows padded to 8 run a base-sized `(2048, 512)` kernel in 188 us
    instead of 263, `(512, 2048)` in 143 instead of 194, and the `(51865, 512)`
    logits table in 5.8-6.3 ms instead of 6.6-7.5; at 1-4 spare rows padding
    costs more than it saves.
    """
    spare = rows % 8
    return rows + (8 - spare) if spare >= 5 else rows


def out_major_matmul(x, table):
    """`x @ table.T` for a few rows `x` `(..., in)` and a table stored `(out, in)`.

    Computed as `(table @ x_2d.T).T`, the product laid out `(out, rows)`: on
    CPUs (XLA, 2-16 rows) this runs 1.2-2.4x faster than `x @ kernel` with the
    kernel stored `(in, out)` and than `x @ table.T` (which XLA would otherwise
    turn it back into). The transpose back touches only the small result. Row
    counts just short of a multiple of 8 are padded with zero rows
    (`_padded_rows`), their results dropped.
    """
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1, shape[-1]))
    rows = flat.shape[0]
    padded = _padded_rows(rows) if isinstance(rows, int) else rows
    if padded != rows:
        flat = ops.pad(flat, ((0, padded - rows), (0, 0)))
    product = ops.transpose(layout_barrier(ops.matmul(table, ops.transpose(flat))))
    if padded != rows:
        product = product[:rows]
    return ops.reshape(product, tuple(shape[:-1]) + (ops.shape(table)[0],))


def step_dense(layer, x, weights=None, out_major=False):
    """`layer(x)`, or the same product from a decoding loop's prepared `weights`.

    Args:
        layer: the `keras.layers.Dense` the weights come from.
        x: `(..., in)` inputs.
        weights: `None` (call `layer`) or a `(kernel, bias)` pair, `bias` possibly
            `None`; the kernel `(in, out)`, or `(out, in)` with `out_major`.
        out_major: bool. See `out_major_matmul`.
    """
    if weights is None:
        return layer(x)
    kernel, bias = weights
    if not out_major and float32_accumulation(layer.compute_dtype):
        return ops.cast(_float32_dense(x, kernel, bias, layer.compute_dtype), layer.compute_dtype)
    x = ops.cast(x, layer.compute_dtype)
    kernel = ops.cast(kernel, layer.compute_dtype)
    y = out_major_matmul(x, kernel) if out_major else ops.matmul(x, kernel)
    return y if bias is None else y + ops.cast(bias, y.dtype)


class StepWeights(NamedTuple):
    """A decoder block's weights prepared once for a decoding loop's steps.

    Built by `WhisperDecoderBlock.step_weights`. Each field is a `(kernel, bias)`
    pair for `step_dense`, or `None` where the step calls the layer itself.
    """

    query_key_value: Any
    self_output: Any = None
    cross_query: Any = None
    cross_output: Any = None
    intermediate: Any = None
    output: Any = None


def dense_weights(layer, out_major=False):
    """A `Dense` layer's `(kernel, bias)` for `step_dense`: the kernel transposed
    (a copy) with `out_major`; `None` with `out_major=False` (the layer is called)."""
    if not out_major:
        return None
    kernel = ops.transpose(ops.convert_to_tensor(layer.kernel))
    bias = ops.convert_to_tensor(layer.bias) if layer.use_bias else None
    return kernel, bias


@keras.saving.register_keras_serializable(package="keras_whisper")
class WhisperAttention(keras.layers.Layer):
    """Multi-head attention as Whisper has it: no bias on the key projection.

    Scores are scaled by `head_dim ** -0.5` and the softmax runs in float32
    whatever the dtype policy.

    Args:
        num_heads: int. Number of attention heads.
        hidden_dim: int. Width of the inputs and outputs; divisible by `num_heads`.
        dropout: float. Dropout on the attention probabilities (training only).
        **kwargs: other keyword arguments of `keras.layers.Layer`.
    """

    def __init__(self, num_heads: int, hidden_dim: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.hidden_dim = int(hidden_dim)
        self.head_dim = self.hidden_dim // self.num_heads
        self.dropout = float(dropout)
        dense = dict(kernel_initializer=whisper_kernel_initializer(), dtype=self.dtype_policy)
        self.query = Dense(hidden_dim, name="query", **dense)
        self.key = Dense(hidden_dim, use_bias=False, name="key", **dense)
        self.value = Dense(hidden_dim, name="value", **dense)
        self.attention_output = Dense(hidden_dim, name="attention_output", **dense)
        self.probability_dropout = keras.layers.Dropout(
            dropout, dtype=self.dtype_policy, name="probability_dropout"
        )

    def build(self, query_shape, key_value_shape=None):
        key_value_shape = query_shape if key_value_shape is None else key_value_shape
        self.query.build(query_shape)
        self.key.build(key_value_shape)
        self.value.build(key_value_shape)
        self.attention_output.build(query_shape)
        self.built = True

    def project_key_value(self, inputs, dtype=None):
        """Keys and values of `inputs`, each `(batch, heads, length, head_dim)`.

        `dtype`: the dtype to return them in (`Dense.project`); `None` for the
        compute dtype.
        """
        if dtype is None:
            keys, values = self.key(inputs), self.value(inputs)
        else:
            keys, values = self.key.project(inputs, dtype), self.value.project(inputs, dtype)
        return _split_heads(keys, self.num_heads), _split_heads(values, self.num_heads)

    def fused_projection(self, out_major=False):
        """The query, key and value projections as one `(kernel, bias)` pair.

        `kernel` is `(hidden_dim, 3 * hidden_dim)`: the query kernel (already
        scaled by `head_dim ** -0.5`), the key kernel and the value kernel side
        by side; `bias` the matching `(3 * hidden_dim,)` vector (zeros for the
        key). A decoding loop builds it once and makes one matrix product per
        step and layer instead of three. With Whisper's `head_dim` of 64 the
        scale is a power of two, so the scaled kernel gives the same queries.

        Args:
            out_major: bool. The kernel transposed, `(3 * hidden_dim, hidden_dim)`,
                for `out_major_matmul`.
        """
        scale = self.head_dim**-0.5
        query_kernel = ops.convert_to_tensor(self.query.kernel)
        kernel = ops.concatenate(
            [
                query_kernel * scale,
                ops.convert_to_tensor(self.key.kernel),
                ops.convert_to_tensor(self.value.kernel),
            ],
            axis=-1,
        )
        bias = ops.concatenate(
            [
                ops.convert_to_tensor(self.query.bias) * scale,
                ops.zeros((self.hidden_dim,), query_kernel.dtype),
                ops.convert_to_tensor(self.value.bias),
            ]
        )
        return (ops.transpose(kernel) if out_major else kernel), bias

    def project_query_key_value(self, inputs, fused=None, out_major=False):
        """Scaled queries, keys and values of `inputs`, each `(batch, heads, length, head_dim)`.

        Args:
            inputs: `(batch, length, hidden_dim)`.
            fused: optional `fused_projection(out_major)`, computed once by the
                caller: one matrix product instead of three.
            out_major: bool. Whether `fused` was built with `out_major`.
        """
        if fused is None:
            return (self._project_query(inputs),) + self.project_key_value(inputs)
        projected = step_dense(self.query, inputs, fused, out_major)
        return tuple(_split_heads(x, self.num_heads) for x in ops.split(projected, 3, axis=-1))

    def _project_query(self, query_inputs, group=1, weights=None, out_major=False):
        """Scaled queries `(batch // group, heads, group * length, head_dim)`.

        `weights`, `out_major`: as `step_dense`'s, for the query projection.
        """
        query = _split_heads(
            step_dense(self.query, query_inputs, weights, out_major), self.num_heads
        )
        query = query * ops.cast(self.head_dim**-0.5, query.dtype)
        # The `group` rows of one audio become one product over its keys.
        return _group_rows(query, group) if group > 1 else query

    def _output(self, context, group=1, weights=None, out_major=False):
        """The output projection of `context` `(batch // group, heads, group * length, d)`.

        `weights`, `out_major`: as `step_dense`'s, for the output projection.
        """
        if group > 1:
            context = _ungroup_rows(context, group)
        return step_dense(self.attention_output, _merge_heads(context), weights, out_major)

    def _scores(self, query, keys, mask=None, out_major=False):
        """Float32 `query . keys` scores `(batch, heads, rows, keys)`, masked.

        With `out_major` (a decoding loop's few rows against many shared keys:
        cross-attention, a shared prompt) they are computed `(keys, rows)` per head
        and transposed back behind `layout_barrier`: on CPUs this is the faster
        product (a prompt's 256 keys against 5 beams, base: 130-310 -> 54-67 us a
        layer).
        """
        if out_major:
            scores = ops.einsum("bhkd,bhqd->bhkq", keys, query)
            scores = ops.cast(ops.swapaxes(layout_barrier(scores), 2, 3), "float32")
        else:
            scores = einsum("bhqd,bhkd->bhqk", query, keys, "float32")
        if mask is not None:
            scores = ops.where(mask, scores, MASK_VALUE)
        return scores

    def attend(
        self,
        query_inputs,
        keys,
        values,
        attention_mask=None,
        training=None,
        group=1,
        step=None,
        out_major=False,
        return_scores=False,
    ):
        """Attention of projected `query_inputs` over already projected keys/values.

        Args:
            query_inputs: `(batch, length, hidden_dim)` un-projected queries.
            keys, values: `(batch // group, heads, key_length, head_dim)`.
            attention_mask: optional boolean mask broadcastable to
                `(batch // group, heads, group * length, key_length)`, `True`
                where allowed.
            training: bool. Whether dropout applies.
            group: int. How many consecutive query rows share one row of
                `keys` and `values` (the beams of one audio in cross-attention).
            step: optional `(query, output)` pair of `step_dense` weights,
                prepared by a decoding loop.
            out_major: bool. Whether `step` is laid out for `out_major_matmul`;
                then the scores are computed out-major too, `(key_length, rows)`
                per head (the context stays `(rows, head_dim)`: on a Zen 4 CPU,
                base's cross-attention of 5 beams against one audio takes 0.47
                ms a layer that way, 0.63 with the context out-major as well).
            return_scores: bool. Also return the scaled scores before the softmax,
                `(batch // group, heads, group * length, key_length)` float32 (what
                word-level timestamps align with).
        """
        query_weights, output_weights = (None, None) if step is None else step
        query = self._project_query(query_inputs, group, query_weights, out_major)
        scores = self._scores(query, keys, attention_mask, out_major)
        weights = ops.cast(softmax(scores), self.compute_dtype)
        weights = self.probability_dropout(weights, training=training)
        context = einsum("bhqk,bhkd->bhqd", weights, values)
        output = self._output(context, group, output_weights, out_major)
        return (output, scores) if return_scores else output

    def attend_with_cache(
        self,
        query,
        cache_keys,
        cache_values,
        keys,
        values,
        cache_mask,
        new_mask,
        output_weights=None,
        out_major=False,
        prefix=None,
    ):
        """Self-attention of new positions over the cached ones and themselves.

        The same as attending over the cache with the new keys and values
        written in, but it reads the cache as it was: the update of the cache
        is then its only use, which lets XLA do it in place.

        Args:
            query: `(batch, heads, new_length, head_dim)` projected and scaled
                queries (`project_query_key_value`).
            cache_keys, cache_values: `(batch, heads, max_length, head_dim)`,
                the earlier positions.
            keys, values: `(batch, heads, new_length, head_dim)`, the new ones.
            cache_mask: boolean, broadcastable to
                `(batch, heads, new_length, max_length)`: the cached positions
                each new one may see.
            new_mask: boolean, broadcastable to
                `(batch, heads, new_length, new_length)` (causal).
            output_weights, out_major: optional `step_dense` weights for the
                output projection, prepared by a decoding loop.
            prefix: optional `(prefix_keys, prefix_values, prefix_mask)`: positions
                before the cache's, shared by groups of consecutive rows (the
                prompt of a beam search's beams). Keys and values
                `(batch // group, heads, prefix_length, head_dim)`; the mask
                boolean, broadcastable to `(batch, heads, new_length, prefix_length)`.
        """
        parts = [self._scores(query, cache_keys, cache_mask), self._scores(query, keys, new_mask)]
        if prefix is not None:
            prefix_keys, prefix_values, prefix_mask = prefix
            group = ops.shape(query)[0] // ops.shape(prefix_keys)[0]
            # The rows of a group as one product over their shared keys (as in
            # cross-attention): `(audio, heads, group * length, ...)`.
            prefix_scores = self._scores(_group_rows(query, group), prefix_keys, None, out_major)
            parts.insert(0, ops.where(prefix_mask, _ungroup_rows(prefix_scores, group), MASK_VALUE))
        weights = ops.cast(softmax(ops.concatenate(parts, axis=-1)), self.compute_dtype)
        # The weights' columns: [prefix,] cache, new keys.
        start = 0 if prefix is None else ops.shape(prefix_keys)[2]
        end = start + ops.shape(cache_keys)[2]
        context = einsum("bhqk,bhkd->bhqd", weights[..., start:end], cache_values)
        context = context + einsum("bhqk,bhkd->bhqd", weights[..., end:], values)
        if prefix is not None:
            shared = _group_rows(weights[..., :start], group)
            context = context + _ungroup_rows(
                einsum("bhqk,bhkd->bhqd", shared, prefix_values), group
            )
        return self._output(context, weights=output_weights, out_major=out_major)

    def call(self, query, key_value=None, attention_mask=None, training=None):
        unmasked = attention_mask is None and not (training and self.dropout > 0)
        if unmasked and use_fused_attention(self.compute_dtype):
            return self._fused(query, query if key_value is None else key_value)
        length = query.shape[1]
        if unmasked and key_value is None and isinstance(length, int):
            if use_blocked_attention(length):
                return self._blocked(query)
        keys, values = self.project_key_value(query if key_value is None else key_value)
        return self.attend(query, keys, values, attention_mask=attention_mask, training=training)

    def _blocked(self, inputs):
        """Unmasked self-attention head by head, `QUERY_BLOCK` queries at a time.

        The heads go through a loop (`ops.fori_loop`) rather than being unrolled: one
        head's program is compiled, not `num_heads` copies (tiny.en's encoder compiles
        in 2.4 s instead of 4.0, and runs as fast). Each block is written in the form
        YNNPACK fuses whole on XLA's CPU backend: the scores' product, their row maximum
        and the exponential in one kernel (the scores never leave the cache unexponentiated),
        the row sums in a second, the product with the values in a third; the context is
        normalised on `(block, head_dim)` rather than on the `(block, length)` weights.
        """
        query = self._project_query(inputs)
        keys, values = self.project_key_value(inputs)
        _, _, length, depth = query.shape
        size = (ops.shape(query)[0], 1, length, depth)

        def head(h, context):
            start = (0, h, 0, 0)
            head_query = ops.slice(query, start, size)[:, 0]
            keys_t = ops.transpose(ops.slice(keys, start, size)[:, 0], (0, 2, 1))
            head_values = ops.slice(values, start, size)[:, 0]
            blocks = []
            for first in range(0, length, QUERY_BLOCK):
                block = head_query[:, first : first + QUERY_BLOCK]
                scores = matmul(block, keys_t, "float32")
                exp = ops.exp(scores - ops.max(scores, axis=-1, keepdims=True))
                total = ops.sum(exp, axis=-1, keepdims=True)
                unnormalised = matmul(ops.cast(exp, self.compute_dtype), head_values, "float32")
                blocks.append(ops.cast(unnormalised / total, self.compute_dtype))
            return ops.slice_update(context, start, ops.concatenate(blocks, axis=1)[:, None])

        context = ops.fori_loop(0, self.num_heads, head, ops.zeros_like(query))
        return self._output(context)

    def _fused(self, query_inputs, key_value_inputs):
        """Unmasked attention in one fused kernel, `(batch, length, heads, head_dim)` layout."""

        def heads(x):
            return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.num_heads, -1))

        context = ops.dot_product_attention(
            heads(self.query(query_inputs)),
            heads(self.key(key_value_inputs)),
            heads(self.value(key_value_inputs)),
            scale=self.head_dim**-0.5,
        )
        batch, length = ops.shape(context)[0], ops.shape(context)[1]
        return self.attention_output(ops.reshape(context, (batch, length, -1)))

    def compute_output_shape(self, query_shape, key_value_shape=None):
        return query_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_heads": self.num_heads, "hidden_dim": self.hidden_dim, "dropout": self.dropout}
        )
        return config


class _Block(keras.layers.Layer):
    """Shared parts of the pre-LayerNorm encoder and decoder blocks."""

    def __init__(
        self,
        num_heads: int,
        hidden_dim: int,
        intermediate_dim: int,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        policy = self.dtype_policy
        self.self_attention = WhisperAttention(
            num_heads, hidden_dim, dropout, dtype=policy, name="self_attention"
        )
        # The block reads and returns the residual stream in `residual_dtype` (float32
        # in half precision): neither it nor its LayerNorms cast their inputs.
        keep_input_dtype(self)
        self.self_attention_layer_norm = keep_input_dtype(
            keras.layers.LayerNormalization(
                epsilon=1e-5, dtype=policy, name="self_attention_layer_norm"
            )
        )
        self.feedforward_layer_norm = keep_input_dtype(
            keras.layers.LayerNormalization(
                epsilon=1e-5, dtype=policy, name="feedforward_layer_norm"
            )
        )
        dense = dict(kernel_initializer=whisper_kernel_initializer(), dtype=policy)
        self.feedforward_intermediate_dense = Dense(
            intermediate_dim, name="feedforward_intermediate_dense", **dense
        )
        self.feedforward_output_dense = Dense(hidden_dim, name="feedforward_output_dense", **dense)
        self.residual_dropout = keras.layers.Dropout(dropout, dtype=policy, name="residual_dropout")

    def _add(self, x, h, training=None):
        return x + ops.cast(self.residual_dropout(h, training=training), x.dtype)

    def _feedforward(self, x, training=None, step=None, out_major=False):
        """The MLP and its residual; `step`: optional `StepWeights` (decoding loops)."""
        intermediate, output = (None, None) if step is None else (step.intermediate, step.output)
        h = self.feedforward_layer_norm(x)
        h = step_dense(self.feedforward_intermediate_dense, h, intermediate, out_major)
        h = keras.activations.gelu(h, approximate=False)
        h = step_dense(self.feedforward_output_dense, h, output, out_major)
        return self._add(x, h, training=training)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "hidden_dim": self.hidden_dim,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_whisper")
class WhisperEncoderBlock(_Block):
    """Pre-LN encoder block: self-attention (no mask), then a GELU MLP.

    Args:
        num_heads: int. Number of attention heads.
        hidden_dim: int. Width of the block.
        intermediate_dim: int. Width of the MLP's hidden layer.
        dropout: float. Dropout rate (training only).
    """

    def build(self, input_shape):
        self.self_attention.build(input_shape)
        self.self_attention_layer_norm.build(input_shape)
        self.feedforward_layer_norm.build(input_shape)
        self.feedforward_intermediate_dense.build(input_shape)
        self.feedforward_output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, x, training=None):
        x = to_residual(x, self.compute_dtype)
        h = self.self_attention(self.self_attention_layer_norm(x), training=training)
        x = self._add(x, h, training=training)
        return self._feedforward(x, training=training)


@keras.saving.register_keras_serializable(package="keras_whisper")
class WhisperDecoderBlock(_Block):
    """Pre-LN decoder block: causal self-attention, cross-attention, GELU MLP.

    Works on whole sequences (`call`) and on decoding steps with a key/value
    cache (`call_with_cache`).

    Args:
        num_heads: int. Number of attention heads.
        hidden_dim: int. Width of the block.
        intermediate_dim: int. Width of the MLP's hidden layer.
        dropout: float. Dropout rate (training only).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        policy = self.dtype_policy
        self.cross_attention = WhisperAttention(
            self.num_heads, self.hidden_dim, self.dropout, dtype=policy, name="cross_attention"
        )
        self.cross_attention_layer_norm = keep_input_dtype(
            keras.layers.LayerNormalization(
                epsilon=1e-5, dtype=policy, name="cross_attention_layer_norm"
            )
        )

    def build(self, x_shape, encoder_output_shape=None):
        encoder_output_shape = x_shape if encoder_output_shape is None else encoder_output_shape
        self.self_attention.build(x_shape)
        self.self_attention_layer_norm.build(x_shape)
        self.cross_attention.build(x_shape, encoder_output_shape)
        self.cross_attention_layer_norm.build(x_shape)
        self.feedforward_layer_norm.build(x_shape)
        self.feedforward_intermediate_dense.build(x_shape)
        self.feedforward_output_dense.build(tuple(x_shape[:-1]) + (self.intermediate_dim,))
        self.built = True

    def call(self, x, encoder_output, self_attention_mask=None, training=None):
        x = to_residual(x, self.compute_dtype)
        encoder_output = ops.cast(encoder_output, self.compute_dtype)
        h = self.self_attention(
            self.self_attention_layer_norm(x),
            attention_mask=self_attention_mask,
            training=training,
        )
        x = self._add(x, h, training=training)
        h = self.cross_attention(
            self.cross_attention_layer_norm(x), encoder_output, training=training
        )
        x = self._add(x, h, training=training)
        return self._feedforward(x, training=training)

    def call_with_cross_scores(self, x, cross_cache, self_attention_mask=None):
        """`call` over projected cross-attention keys and values, with their scores.

        Args:
            x: `(batch, length, hidden_dim)`.
            cross_cache: `(keys, values)` of the encoder output, each `(batch, heads,
                encoder_length, head_dim)` (`WhisperBackbone.cross_attention_cache`).
            self_attention_mask: as `call`'s.

        Returns:
            `(outputs, scores)`: the block's outputs, and its cross-attention scores
            before the softmax, `(batch, heads, length, encoder_length)` float32.
        """
        x = to_residual(x, self.compute_dtype)
        h = self.self_attention(
            self.self_attention_layer_norm(x), attention_mask=self_attention_mask
        )
        x = self._add(x, h)
        h, scores = self.cross_attention.attend(
            self.cross_attention_layer_norm(x), *cross_cache, return_scores=True
        )
        x = self._add(x, h)
        return self._feedforward(x), scores

    def step_weights(self, out_major=False):
        """This block's weights prepared for decoding steps (`StepWeights`).

        Always the fused query/key/value projection (one product per step
        instead of three). With `out_major`, also every other projection's
        kernel transposed, `(out, in)`, for `out_major_matmul`: the layout in
        which XLA on CPUs multiplies 2-16 rows fastest (beam search, batches).
        Built once per decoding loop (a copy of the block's kernels).

        Returns:
            A `StepWeights`, or `None` when the projections are quantized
            (`Model.quantize`): their kernels are not plain matrices.
        """
        dense = [
            self.self_attention.query,
            self.self_attention.key,
            self.self_attention.value,
            self.self_attention.attention_output,
            self.cross_attention.query,
            self.cross_attention.attention_output,
            self.feedforward_intermediate_dense,
            self.feedforward_output_dense,
        ]
        if any(getattr(d, "quantization_mode", None) for d in dense):
            return None
        return StepWeights(
            self.self_attention.fused_projection(out_major),
            *(dense_weights(d, out_major) for d in dense[3:]),
        )

    def call_with_cache(
        self,
        x,
        self_cache,
        cross_cache,
        cache_index,
        self_attention_masks,
        step=None,
        out_major=False,
        prefix=None,
        output_index=None,
    ):
        """One decoding step (any number of new tokens) with explicit caches.

        Args:
            x: `(batch, new_tokens, hidden_dim)`.
            self_cache: `(keys, values)` of this layer's self-attention, each
                `(batch, heads, max_length, head_dim)`; the new ones are written
                at `cache_index`.
            cross_cache: `(keys, values)`, each
                `(batch // group, heads, encoder_length, head_dim)`.
            cache_index: int scalar, the cache slot of the first new token (its
                position, less the length of a shared `prefix`).
            self_attention_masks: `(cache_mask, new_mask)`, booleans
                broadcastable to `(batch, 1, new_tokens, max_length)` (the
                cached positions each new token sees) and
                `(batch, 1, new_tokens, new_tokens)` (causal).
            step: optional `step_weights(out_major)`, built once by a decoding
                loop; the same outputs, fewer or faster products.
            out_major: bool. Whether `step` was built with `out_major`.
            prefix: optional `(keys, values, mask)` of this layer's self-attention
                over positions before `self_cache`'s, shared by groups of rows
                (`WhisperAttention.attend_with_cache`).
            output_index: optional int scalar: compute the output of this one new
                token only (`(batch, 1, hidden_dim)`), while every new token's keys
                and values still go into the cache (a prompt's last layer, whose
                other outputs nobody reads). `self_attention_masks`' new-token mask
                must then be that token's row, broadcastable to
                `(batch, 1, 1, new_tokens)`.

        Returns:
            `(outputs, self_cache)` with the cache updated.
        """
        cache_keys, cache_values = self_cache
        cross_keys, cross_values = cross_cache
        group = ops.shape(x)[0] // ops.shape(cross_keys)[0]
        x = to_residual(x, self.compute_dtype)
        h = self.self_attention_layer_norm(x)
        step = StepWeights(None) if step is None else step
        query, keys, values = self.self_attention.project_query_key_value(
            h, step.query_key_value, out_major
        )
        keys = ops.cast(keys, cache_keys.dtype)
        values = ops.cast(values, cache_values.dtype)
        if output_index is not None:
            batch, heads, _, head_dim = ops.shape(query)
            query = ops.slice(query, (0, 0, output_index, 0), (batch, heads, 1, head_dim))
            x = ops.slice(x, (0, output_index, 0), (batch, 1, ops.shape(x)[2]))
        cache_mask, new_mask = self_attention_masks
        h = self.self_attention.attend_with_cache(
            query,
            cache_keys,
            cache_values,
            keys,
            values,
            cache_mask,
            new_mask,
            step.self_output,
            out_major,
            prefix,
        )
        start = (0, 0, cache_index, 0)
        cache_keys = ops.slice_update(cache_keys, start, keys)
        cache_values = ops.slice_update(cache_values, start, values)
        x = self._add(x, h)
        h = self.cross_attention.attend(
            self.cross_attention_layer_norm(x),
            cross_keys,
            cross_values,
            group=group,
            step=(step.cross_query, step.cross_output),
            out_major=out_major,
        )
        x = self._add(x, h)
        return self._feedforward(x, step=step, out_major=out_major), (cache_keys, cache_values)
