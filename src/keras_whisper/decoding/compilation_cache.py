"""Compiled decoding stages kept on disk (JAX), so a new process loads instead of compiling.

`jax.jit` compiles each stage of `keras_whisper.decoding.generate` once per process and
input shape: on a 2-core CPU, about 4 s for tiny.en's encoder and 3 s for a decoding loop,
most of a cold start. `CachedJit` keeps each compiled executable in the user cache
(`keras_whisper.preset_io.cache_dir() / "xla"`) under a key made of the stage's lowered
program, the JAX and jaxlib versions, the compiler options and the device (its platform and
kind, and on CPUs the instruction-set flags, since XLA compiles for the host's), so a later
process with the same key loads the executable instead of compiling it. The user's other
JAX code is not affected: no global JAX setting is changed.

Set `KERAS_WHISPER_COMPILATION_CACHE=0` to turn the cache off. An entry that cannot be
loaded (truncated, or written by another version) is compiled again and replaced; a cache
folder that cannot be written leaves compilation as it was.
"""

from __future__ import annotations

import collections
import hashlib
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ENV = "KERAS_WHISPER_COMPILATION_CACHE"

# How many executables were loaded from disk ("loaded") or written to it ("stored"), by stage
# name; tests read this.
EVENTS: collections.Counter = collections.Counter()


def enabled() -> bool:
    """Whether compiled stages are kept on disk (`$KERAS_WHISPER_COMPILATION_CACHE` != 0)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def directory() -> Path:
    """The folder of the compiled stages: `cache_dir() / "xla"`."""
    from keras_whisper.preset_io import cache_dir

    return cache_dir() / "xla"


def _cpu_flags() -> str:
    """The host CPU's instruction-set flags (Linux), which XLA CPU code depends on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _device_description() -> str:
    import jax

    device = jax.devices()[0]
    parts = [device.platform, getattr(device, "device_kind", ""), platform.machine()]
    if device.platform == "cpu":
        parts.append(_cpu_flags())
    return "|".join(parts)


def _signature(args: tuple) -> tuple:
    """Shapes and dtypes of the arguments' leaves, with their tree structure."""
    import jax

    leaves, tree = jax.tree.flatten(args)
    # Dtype objects as they are (hashable, equal when equal): their names cost ~10 us a
    # leaf, and a call passes the model's ~180 weights (tiny.en's 10-minute file: 0.2 s).
    return (
        tree,
        tuple(
            (np.shape(leaf), getattr(leaf, "dtype", type(leaf)), getattr(leaf, "weak_type", False))
            for leaf in leaves
        ),
    )


class CachedJit:
    """`jax.jit(fn, compiler_options=...)` whose executables are also kept on disk.

    Called like the jitted function (positional arguments only). Each new argument
    signature (shapes, dtypes) is traced and lowered as `jax.jit` would, then loaded from
    the disk cache when its key is there, else compiled and stored.

    Args:
        fn: the function to compile.
        name: a short name for the cache files and `EVENTS` (e.g. `"encode"`).
        compiler_options: XLA compiler options, or `None`.
        donate_argnums: positions of the arguments whose buffers the executable may
            reuse for its outputs (`jax.jit`'s `donate_argnums`).
    """

    def __init__(
        self,
        fn,
        name: str,
        compiler_options: dict | None = None,
        donate_argnums: tuple[int, ...] = (),
    ):
        import jax

        self._jitted = jax.jit(fn, compiler_options=compiler_options, donate_argnums=donate_argnums)
        self._name = name
        self._options = dict(compiler_options or {})
        self._executables: dict[tuple, Any] = {}

    def __call__(self, *args):
        if not enabled():
            return self._jitted(*args)
        signature = _signature(args)
        executable = self._executables.get(signature)
        if executable is None:
            executable = self._executables[signature] = self._load_or_compile(args)
        return executable(*args)

    def _key(self, lowered, args: tuple) -> str:
        import jax
        import jaxlib

        digest = hashlib.sha256()
        for part in (
            lowered.as_text(),
            # The program's text leaves out the arguments it does not use (`jax.jit`
            # prunes them), but the executable still checks their types when called:
            # two models that differ only there share a program, not an executable.
            repr(_signature(args)),
            jax.__version__,
            jaxlib.__version__,
            repr(sorted(self._options.items())),
            _device_description(),
        ):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()[:40]

    def _load_or_compile(self, args: tuple):
        from jax.experimental import serialize_executable

        lowered = self._jitted.lower(*args)
        path = directory() / f"{self._name}-{self._key(lowered, args)}.xla"
        try:
            payload = path.read_bytes()
        except OSError:
            payload = None
        if payload is not None:
            try:
                executable = serialize_executable.deserialize_and_load(
                    payload, lowered.in_tree, lowered.out_tree
                )
                EVENTS["loaded", self._name] += 1
                return executable
            except Exception:  # truncated or foreign entry: compile again and replace it
                pass
        executable = lowered.compile()
        try:
            payload, _, _ = serialize_executable.serialize(executable)
            _write_atomically(path, payload)
            EVENTS["stored", self._name] += 1
        except Exception:  # not serializable, or no writable cache: only this process has it
            pass
        return executable


def _write_atomically(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` through a temporary file, so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(payload)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
