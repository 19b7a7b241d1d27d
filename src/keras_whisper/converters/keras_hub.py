"""keras-hub `WhisperBackbone` presets (`config.json` + `model.weights.h5`).

Reads the weights of a keras-hub (or keras-nlp) Whisper preset folder with
`h5py`, without importing keras-hub. Keras' `save_weights` keys layers by
class-based automatic names in the functional model's layer order, so a
preset's `model.weights.h5` holds:

```
layers/conv1d/vars/{0: kernel (3, n_mels, d), 1: bias}         conv1
layers/conv1d_1/vars/{0, 1}                                     conv2
layers/position_embedding/vars/0 (n_audio_ctx, d)               encoder positions
layers/layer_normalization/vars/{0: gamma, 1: beta}             encoder final LN
layers/layer_normalization_1/vars/{0, 1}                        decoder final LN
layers/token_and_position_embedding/token_embedding/vars/0      (n_vocab, d)
layers/token_and_position_embedding/position_embedding/vars/0   (n_text_ctx, d)
layers/whisper_encoder[_i]/_self_attention_layer/{query,key,value,output}_dense/vars/...
layers/whisper_encoder[_i]/{_self_attention_layer_norm, _feedforward_layer_norm,
    _feedforward_intermediate_dense, _feedforward_output_dense}/vars/...
layers/whisper_decoder[_i]/... as the encoder, plus _cross_attention_layer[_norm]
```

Attention projections are `EinsumDense` layers: kernels `(d, heads, head_dim)`
(output `(heads, head_dim, d)`), biases `(heads, head_dim)`, no key bias.
The config's `max_encoder_sequence_length` counts mel frames; the encoder
has half as many positions.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import ml_dtypes
import numpy as np

from keras_whisper.converters.common import (
    ModelDimensions,
    StateDict,
    ordered_state_dict,
    validate_state_dict,
)
from keras_whisper.errors import WeightsError

PathLike = str | os.PathLike

_CLASS_NAMES = ("WhisperBackbone",)


def dims_from_keras_hub_config(config: dict, source: str = "config.json") -> ModelDimensions:
    """Builds `ModelDimensions` from a keras-hub `WhisperBackbone` config.

    Args:
        config: The backbone's `get_config()` dict (the `"config"` entry of a
            preset's `config.json`).
        source: Where it came from, for error messages.

    Returns:
        The `ModelDimensions`; both stacks share `num_layers` and `num_heads`. (The MLP
        width, `intermediate_dim`, is OpenAI's 4x `hidden_dim` in every released Whisper;
        keras-hub takes any, and `load_keras_hub` reads it from the weights.)

    Raises:
        WeightsError: if a field is missing.
    """
    keys = ("vocabulary_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim")
    missing = [key for key in keys if key not in config]
    if missing:
        raise WeightsError(f"{source}: WhisperBackbone config fields {missing} are missing.")
    d = config["hidden_dim"]
    return ModelDimensions(
        n_mels=config.get("num_mels", 80),
        n_audio_ctx=config.get("max_encoder_sequence_length", 3000) // 2,
        n_audio_state=d,
        n_audio_head=config["num_heads"],
        n_audio_layer=config["num_layers"],
        n_vocab=config["vocabulary_size"],
        n_text_ctx=config.get("max_decoder_sequence_length", 448),
        n_text_state=d,
        n_text_head=config["num_heads"],
        n_text_layer=config["num_layers"],
    )


class _H5Reader:
    def __init__(self, file, source: str):
        self.file = file
        self.source = source
        self.used: set[str] = set()

    def var(self, group: str, index: int) -> np.ndarray:
        path = f"layers/{group}/vars/{index}"
        if path not in self.file:
            raise WeightsError(
                f"{self.source}: '{path}' is missing; the weights file is incomplete or not a "
                "keras-hub WhisperBackbone of this config."
            )
        self.used.add(path)
        value = np.asarray(self.file[path][()])
        if value.dtype.kind == "V" and value.dtype.itemsize == 2:
            # HDF5 has no bfloat16: Keras stores a bfloat16 model's variables as opaque
            # 2-byte values, which are bfloat16's bits.
            value = value.view(ml_dtypes.bfloat16)
        return value


def _auto_name(base: str, index: int) -> str:
    return base if index == 0 else f"{base}_{index}"


def _attention(r: _H5Reader, group: str, openai: str, out: StateDict) -> None:
    for keras_name, openai_name in (("query", "query"), ("key", "key"), ("value", "value")):
        kernel = r.var(f"{group}/{keras_name}_dense", 0)
        if kernel.ndim != 3:
            raise WeightsError(
                f"{r.source}: '{group}/{keras_name}_dense' kernel has shape {kernel.shape}; "
                "expected an EinsumDense kernel (hidden, heads, head_dim)."
            )
        d = kernel.shape[0]
        out[f"{openai}.{openai_name}.weight"] = kernel.reshape(d, -1).T.copy()
        if keras_name != "key":
            out[f"{openai}.{openai_name}.bias"] = r.var(f"{group}/{keras_name}_dense", 1).reshape(
                -1
            )
    kernel = r.var(f"{group}/output_dense", 0)
    out[f"{openai}.out.weight"] = kernel.reshape(-1, kernel.shape[-1]).T.copy()
    out[f"{openai}.out.bias"] = r.var(f"{group}/output_dense", 1)


def _layer_norm(r: _H5Reader, group: str, openai: str, out: StateDict) -> None:
    out[f"{openai}.weight"] = r.var(group, 0)
    out[f"{openai}.bias"] = r.var(group, 1)


def _dense(r: _H5Reader, group: str, openai: str, out: StateDict) -> None:
    out[f"{openai}.weight"] = r.var(group, 0).T.copy()
    out[f"{openai}.bias"] = r.var(group, 1)


def load_keras_hub(directory: PathLike) -> tuple[ModelDimensions, StateDict]:
    """Loads the weights of a keras-hub `WhisperBackbone` preset as an OpenAI state dict.

    Args:
        directory: A preset folder with `config.json` (class `WhisperBackbone`)
            and `model.weights.h5`, as written by `backbone.save_to_preset`.

    Returns:
        A tuple `(dims, state_dict)`: kernels are transposed and reshaped to
        OpenAI's `(out, in)` layout, in the stored dtype.

    Raises:
        WeightsError: if the folder is not a Whisper preset, a weight is
            missing, unexpected or misshapen, or a value is not finite.

    Examples:
    ```python
    dims, state_dict = load_keras_hub("whisper_tiny_en")
    state_dict["encoder.blocks.0.attn.query.weight"].shape  # (384, 384)
    ```
    """
    import h5py

    directory = Path(directory)
    config_path = directory / "config.json"
    weights_path = directory / "model.weights.h5"
    if not config_path.is_file():
        raise WeightsError(f"{directory}: no config.json; not a keras-hub preset folder.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise WeightsError(f"{config_path}: not valid JSON ({error}).") from None
    if config.get("class_name") not in _CLASS_NAMES:
        raise WeightsError(
            f"{config_path}: class_name is {config.get('class_name')!r}, not 'WhisperBackbone'."
        )
    if not weights_path.is_file():
        sharded = (
            " (sharded keras-hub weights are not supported)"
            if (directory / "model.weights.json").is_file()
            else ""
        )
        raise WeightsError(f"{directory}: no model.weights.h5{sharded}.")
    dims = dims_from_keras_hub_config(config.get("config", {}), str(config_path))
    source = str(weights_path)
    out: StateDict = {}
    try:
        file = h5py.File(weights_path, "r")
    except OSError as error:
        raise WeightsError(
            f"{weights_path}: cannot be opened as HDF5 ({error}); the file is truncated or corrupt."
        ) from None
    with file:
        r = _H5Reader(file, source)
        out["encoder.positional_embedding"] = r.var("position_embedding", 0)
        for index, conv in ((0, "conv1"), (1, "conv2")):
            group = _auto_name("conv1d", index)
            out[f"encoder.{conv}.weight"] = np.transpose(r.var(group, 0), (2, 1, 0)).copy()
            out[f"encoder.{conv}.bias"] = r.var(group, 1)
        for i in range(dims.n_audio_layer):
            group, openai = _auto_name("whisper_encoder", i), f"encoder.blocks.{i}"
            _attention(r, f"{group}/_self_attention_layer", f"{openai}.attn", out)
            _layer_norm(r, f"{group}/_self_attention_layer_norm", f"{openai}.attn_ln", out)
            _dense(r, f"{group}/_feedforward_intermediate_dense", f"{openai}.mlp.0", out)
            _dense(r, f"{group}/_feedforward_output_dense", f"{openai}.mlp.2", out)
            _layer_norm(r, f"{group}/_feedforward_layer_norm", f"{openai}.mlp_ln", out)
        _layer_norm(r, "layer_normalization", "encoder.ln_post", out)
        embedding = "token_and_position_embedding"
        out["decoder.positional_embedding"] = r.var(f"{embedding}/position_embedding", 0)
        out["decoder.token_embedding.weight"] = r.var(f"{embedding}/token_embedding", 0)
        for i in range(dims.n_text_layer):
            group, openai = _auto_name("whisper_decoder", i), f"decoder.blocks.{i}"
            _attention(r, f"{group}/_self_attention_layer", f"{openai}.attn", out)
            _layer_norm(r, f"{group}/_self_attention_layer_norm", f"{openai}.attn_ln", out)
            _attention(r, f"{group}/_cross_attention_layer", f"{openai}.cross_attn", out)
            _layer_norm(r, f"{group}/_cross_attention_layer_norm", f"{openai}.cross_attn_ln", out)
            _dense(r, f"{group}/_feedforward_intermediate_dense", f"{openai}.mlp.0", out)
            _dense(r, f"{group}/_feedforward_output_dense", f"{openai}.mlp.2", out)
            _layer_norm(r, f"{group}/_feedforward_layer_norm", f"{openai}.mlp_ln", out)
        _layer_norm(r, "layer_normalization_1", "decoder.ln", out)

        stored: list[str] = []
        file.visititems(
            lambda name, obj: stored.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        unexpected = sorted(
            name for name in stored if name.startswith("layers/") and name not in r.used
        )
        layer_pattern = re.compile(r"^layers/whisper_(encoder|decoder)(?:_\d+)?/")
        if unexpected:
            extra_layers = any(layer_pattern.match(name) for name in unexpected)
            raise WeightsError(
                f"{source}: {len(unexpected)} unexpected weight(s) for a Whisper of config "
                f"{dims.to_dict()}: {unexpected[:8]}."
                + (" config.json has fewer layers than the weights." if extra_layers else "")
            )
    validate_state_dict(dims, out, source, config["config"]["intermediate_dim"])
    return dims, ordered_state_dict(dims, out)


def keras_hub_settings(directory: PathLike) -> dict:
    """The `WhisperBackbone` arguments of a keras-hub preset that OpenAI's dimensions do
    not carry: `dropout`, and `max_encoder_sequence_length` as it was saved (OpenAI's
    dimensions count encoder positions, half of it rounded down)."""
    config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    config = config.get("config", {})
    return {key: config[key] for key in ("dropout", "max_encoder_sequence_length") if key in config}
