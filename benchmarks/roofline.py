"""The machine's limits and how close our encoder and decoder step come to them.

`measure_machine` (run in a worker pinned to 2 CPUs) measures float32 GEMM
FLOP/s with numpy, JAX and PyTorch and memory bandwidth with a large array copy.
`encoder_flops` and `decoder_step_bytes` count, from the architecture alone,
the work of one encoder forward on a 30-s window and the bytes one batch-1
decoder step must read; the driver divides them by our measured times.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

GEMM_SIZE = 2048  # square float32 matrices: 17.2 GFLOP per product
COPY_BYTES = 256 << 20  # per array: far beyond any cache
FLOAT32_BYTES = 4


def _dims(config: dict) -> tuple[int, int, int, int, int, int, int]:
    hidden = config["hidden_dim"]
    return (
        hidden,
        config.get("intermediate_dim", 4 * hidden),
        config["num_layers"],
        config.get("num_decoder_layers") or config["num_layers"],
        config["vocabulary_size"],
        config.get("num_mels", 80),
        config["max_encoder_sequence_length"],
    )


def encoder_flops(config: dict) -> float:
    """Floating-point operations (multiply and add counted apart) of one encoder pass.

    Counts the two convolutions, the attention projections, the attention
    products (scores and weighted sum) and the MLP for a 3000-frame window;
    layer norms, softmax, GELU and biases (under 1 %) are left out.
    """
    d, ff, layers, _, _, mels, frames = _dims(config)
    positions = frames // 2
    conv = 2 * frames * mels * d * 3 + 2 * positions * d * d * 3
    per_layer = (
        2 * positions * d * 4 * d  # q, k, v, out projections
        + 2 * 2 * positions * positions * d  # q @ k^T and weights @ v
        + 2 * 2 * positions * d * ff  # the two MLP matrices
    )
    return float(conv + layers * per_layer)


def decoder_step_bytes(config: dict, position: int) -> float:
    """Bytes (float32) that one cached decoder step at batch 1 cannot avoid reading.

    Per decoder layer: self-attention q/k/v/out weights, cross-attention q/out
    weights (its keys and values are cached), the MLP, the cached
    cross-attention keys/values of the 1500 encoder positions and the
    self-attention keys/values of `position + 1` tokens; plus the tied
    embedding matrix for the logits. Biases and norms are included.
    """
    d, ff, _, dec_layers, vocab, _, frames = _dims(config)
    per_layer = (
        4 * d * d
        + 3 * d  # self-attention (k has no bias)
        + 2 * d * d
        + 2 * d  # cross-attention query and output
        + 2 * d * ff
        + ff
        + d  # MLP
        + 6 * d  # three layer norms
        + 2 * (frames // 2) * d  # cached cross-attention keys and values
        + 2 * (position + 1) * d  # cached self-attention keys and values
    )
    floats = dec_layers * per_layer + vocab * d + 2 * d
    return float(floats * FLOAT32_BYTES)


def _best_and_median(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def measure_machine(repeats: int = 5) -> dict[str, dict[str, float]]:
    """Measure GEMM FLOP/s and copy bandwidth in this process (best and median of `repeats`).

    Returns:
        `{"gemm": {library: flop/s}, "gemm_median": {...}, "copy": {library: bytes/s},
        "copy_median": {...}}`. A copy moves `2 * size` bytes (read and write).
    """
    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(2)
    n = GEMM_SIZE
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    jax_dot = jax.jit(jnp.dot)
    # The options keras-whisper compiles its stages with (YNNPACK matrix products).
    from keras_whisper.decoding.generate import compiler_options

    jax_ynn_dot = jax.jit(jnp.dot, compiler_options=compiler_options())
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    gemm_runs = {
        "numpy": lambda: a @ b,
        "jax": lambda: jax_dot(ja, jb).block_until_ready(),
        "jax-ynn": lambda: jax_ynn_dot(ja, jb).block_until_ready(),
        "torch": lambda: torch.mm(ta, tb),
    }
    results: dict[str, dict[str, float]] = {"gemm": {}, "gemm_median": {}}
    for name, fn in gemm_runs.items():
        best, median = _best_and_median(fn, repeats)
        results["gemm"][name] = flops / best
        results["gemm_median"][name] = flops / median

    count = COPY_BYTES // FLOAT32_BYTES
    src = np.ones(count, np.float32)
    dst = np.zeros(count, np.float32)
    tsrc, tdst = torch.from_numpy(src), torch.from_numpy(dst)
    copy_runs = {"numpy": lambda: np.copyto(dst, src), "torch": lambda: tdst.copy_(tsrc)}
    results.update(copy={}, copy_median={})
    for name, fn in copy_runs.items():
        best, median = _best_and_median(fn, repeats)
        results["copy"][name] = 2 * COPY_BYTES / best
        results["copy_median"][name] = 2 * COPY_BYTES / median
    return results
