"""Compiled stages kept on disk (JAX): a new process loads them instead of compiling.

"A new process" is simulated by dropping the in-process table of compiled stages
(`generate._COMPILED`): the disk is then the only thing shared with the earlier compilation.
"""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest
from conftest import SMALL_CONFIG

from keras_whisper import WhisperBackbone
from keras_whisper.decoding import compilation_cache, encode

generate_module = importlib.import_module("keras_whisper.decoding.generate")

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="the compilation cache is for JAX's compiled stages"
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_WHISPER_CACHE", str(tmp_path))
    monkeypatch.delenv(compilation_cache.ENV, raising=False)
    return tmp_path / "xla"


def _encode_twice(backbone, features):
    """Encode in this 'process', then in a 'new' one; the outputs and the events between."""
    generate_module._COMPILED.pop(backbone, None)
    before = compilation_cache.EVENTS.copy()
    first = keras.ops.convert_to_numpy(encode(backbone, features))
    middle = compilation_cache.EVENTS.copy()
    generate_module._COMPILED.pop(backbone, None)
    second = keras.ops.convert_to_numpy(encode(backbone, features))
    return first, second, middle - before, compilation_cache.EVENTS - middle


def test_a_new_process_loads_the_compiled_stage(cache):
    backbone = WhisperBackbone(**SMALL_CONFIG)
    features = np.random.RandomState(0).randn(2, 40, 16).astype("float32")
    first, second, compiled, loaded = _encode_twice(backbone, features)
    assert compiled == {("stored", "encode"): 1}
    assert [p.name.split("-")[0] for p in cache.iterdir()] == ["encode"]
    assert loaded == {("loaded", "encode"): 1}
    np.testing.assert_array_equal(second, first)
    # Another input shape is another program: compiled and stored beside the first.
    generate_module._COMPILED.pop(backbone, None)
    encode(backbone, features[:1])
    assert len(list(cache.iterdir())) == 2


def test_a_damaged_entry_is_compiled_again_and_replaced(cache):
    backbone = WhisperBackbone(**SMALL_CONFIG)
    features = np.random.RandomState(1).randn(1, 40, 16).astype("float32")
    generate_module._COMPILED.pop(backbone, None)
    expected = keras.ops.convert_to_numpy(encode(backbone, features))
    (entry,) = cache.iterdir()
    size = entry.stat().st_size
    entry.write_bytes(entry.read_bytes()[: size // 3])  # a truncated file
    generate_module._COMPILED.pop(backbone, None)
    before = compilation_cache.EVENTS.copy()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(encode(backbone, features)), expected)
    assert compilation_cache.EVENTS - before == {("stored", "encode"): 1}
    assert entry.stat().st_size == size
    assert not [p for p in cache.iterdir() if p.suffix == ".tmp"]


def test_the_cache_can_be_turned_off(cache, monkeypatch):
    monkeypatch.setenv(compilation_cache.ENV, "0")
    backbone = WhisperBackbone(**SMALL_CONFIG)
    features = np.random.RandomState(2).randn(1, 40, 16).astype("float32")
    generate_module._COMPILED.pop(backbone, None)
    before = compilation_cache.EVENTS.copy()
    encode(backbone, features)
    assert compilation_cache.EVENTS == before
    assert not cache.exists()


def test_an_unwritable_cache_only_costs_the_saving(tmp_path, monkeypatch):
    # The cache folder is a file: nothing can be stored, and decoding goes on.
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("the user's file")
    monkeypatch.setenv("KERAS_WHISPER_CACHE", str(blocker))
    backbone = WhisperBackbone(**SMALL_CONFIG)
    features = np.random.RandomState(3).randn(1, 40, 16).astype("float32")
    generate_module._COMPILED.pop(backbone, None)
    assert encode(backbone, features).shape == (1, 20, 32)
    assert blocker.read_text() == "the user's file"


def test_arguments_the_program_does_not_use_are_part_of_the_key(cache):
    """`jax.jit` prunes unused arguments from the program's text, but its executable still
    checks their types: a stage whose unused argument (a model's weights) changed dtype
    must compile anew, not load the other executable (it raised a TypeError when called)."""
    import jax.numpy as jnp

    def stage(unused, x):
        return x * 2

    x = np.arange(4, dtype="float32")
    first = compilation_cache.CachedJit(stage, "probe")
    np.testing.assert_array_equal(first(jnp.zeros((3,), "float32"), x), x * 2)
    second = compilation_cache.CachedJit(stage, "probe")  # a new process
    np.testing.assert_array_equal(second(jnp.zeros((3,), "bfloat16"), x), x * 2)
    assert len(list(cache.iterdir())) == 2
