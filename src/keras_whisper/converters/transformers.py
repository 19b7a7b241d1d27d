"""Hugging Face transformers Whisper folders (`config.json` + safetensors).

Reads and writes the layout of `WhisperForConditionalGeneration.save_pretrained`:
a `config.json` with `model_type: "whisper"` and the weights in
`model.safetensors` (or shards listed by `model.safetensors.index.json`).
The `transformers` package is not needed; tensors are read with
`safetensors` as NumPy arrays and renamed to OpenAI's names.

Name mapping (HF, with or without the `model.` prefix -> OpenAI):

| Hugging Face | OpenAI |
|---|---|
| `encoder.conv{1,2}.*` | `encoder.conv{1,2}.*` |
| `encoder.embed_positions.weight` | `encoder.positional_embedding` |
| `{en,de}coder.layers.i.self_attn.{q,k,v,out}_proj.*` | `*.blocks.i.attn.{query,key,value,out}.*` |
| `{en,de}coder.layers.i.self_attn_layer_norm.*` | `*.blocks.i.attn_ln.*` |
| `decoder.layers.i.encoder_attn.{q,k,v,out}_proj.*` | `decoder.blocks.i.cross_attn.*` |
| `decoder.layers.i.encoder_attn_layer_norm.*` | `decoder.blocks.i.cross_attn_ln.*` |
| `*.layers.i.fc1.*`, `fc2.*`, `final_layer_norm.*` | `*.blocks.i.mlp.0.*`, `mlp.2.*`, `mlp_ln.*` |
| `encoder.layer_norm.*` / `decoder.layer_norm.*` | `encoder.ln_post.*` / `decoder.ln.*` |
| `decoder.embed_tokens.weight` | `decoder.token_embedding.weight` |
| `decoder.embed_positions.weight` | `decoder.positional_embedding` |
| `proj_out.weight` | (tied to the token embedding; checked, not kept) |
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from keras_whisper.converters.common import (
    ModelDimensions,
    StateDict,
    atomic_file,
    expected_shapes,
    ordered_state_dict,
    validate_state_dict,
)
from keras_whisper.errors import WeightsError

PathLike = str | os.PathLike

_PREFIX = "model."
_PROJ_OUT = "proj_out.weight"
_ENGLISH_ONLY_VOCAB = 51864

_ATTENTION = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}
_BLOCK_PARTS = {
    "attn": "self_attn",
    "cross_attn": "encoder_attn",
    "attn_ln": "self_attn_layer_norm",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_TOP_LEVEL = {
    "encoder.positional_embedding": "encoder.embed_positions.weight",
    "encoder.ln_post.weight": "encoder.layer_norm.weight",
    "encoder.ln_post.bias": "encoder.layer_norm.bias",
    "decoder.token_embedding.weight": "decoder.embed_tokens.weight",
    "decoder.positional_embedding": "decoder.embed_positions.weight",
    "decoder.ln.weight": "decoder.layer_norm.weight",
    "decoder.ln.bias": "decoder.layer_norm.bias",
}
_BLOCK_NAME = re.compile(
    r"^(encoder|decoder)\.blocks\.(\d+)\.(attn|cross_attn|attn_ln|cross_attn_ln|mlp\.0|mlp\.2|mlp_ln)"
    r"(?:\.(query|key|value|out))?\.(weight|bias)$"
)


def hf_name(openai_name: str) -> str:
    """Returns the Hugging Face name (with the `model.` prefix) of an OpenAI tensor name.

    Args:
        openai_name: e.g. `"decoder.blocks.0.cross_attn.query.weight"`.

    Returns:
        e.g. `"model.decoder.layers.0.encoder_attn.q_proj.weight"`.

    Raises:
        WeightsError: if the name is not an OpenAI Whisper tensor name.
    """
    if openai_name in _TOP_LEVEL:
        return _PREFIX + _TOP_LEVEL[openai_name]
    if re.fullmatch(r"encoder\.conv[12]\.(weight|bias)", openai_name):
        return _PREFIX + openai_name
    match = _BLOCK_NAME.match(openai_name)
    if match is None:
        raise WeightsError(f"'{openai_name}' is not an OpenAI Whisper tensor name.")
    stack, index, part, projection, kind = match.groups()
    name = f"{stack}.layers.{index}.{_BLOCK_PARTS[part]}"
    if projection is not None:
        name += "." + _ATTENTION[projection]
    return f"{_PREFIX}{name}.{kind}"


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise WeightsError(
            f"{directory}: no config.json. A Hugging Face Whisper folder has config.json and "
            "model.safetensors (as written by save_pretrained)."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path}: not valid JSON ({error}).") from None
    if config.get("model_type") != "whisper":
        raise WeightsError(
            f"{path}: model_type is {config.get('model_type')!r}, not 'whisper'; this is not a "
            "Hugging Face Whisper model."
        )
    return config


def dims_from_hf_config(config: Mapping, source: str = "config.json") -> ModelDimensions:
    """Builds `ModelDimensions` from a Hugging Face `WhisperConfig` dict.

    Args:
        config: The parsed `config.json`.
        source: Where it came from, for error messages.

    Returns:
        The `ModelDimensions`.

    Raises:
        WeightsError: if a field is missing, or the config describes something
            OpenAI's architecture cannot hold (FFN not 4x, scaled embeddings,
            another activation).
    """
    keys = (
        "num_mel_bins",
        "max_source_positions",
        "d_model",
        "encoder_attention_heads",
        "encoder_layers",
        "vocab_size",
        "max_target_positions",
        "decoder_attention_heads",
        "decoder_layers",
    )
    missing = [key for key in keys if key not in config]
    if missing:
        raise WeightsError(f"{source}: Whisper config fields {missing} are missing.")
    d = config["d_model"]
    for key in ("encoder_ffn_dim", "decoder_ffn_dim"):
        if key in config and config[key] != 4 * d:
            raise WeightsError(
                f"{source}: {key}={config[key]} but OpenAI Whisper's MLP is 4 x d_model = {4 * d}; "
                "this model cannot be represented as an OpenAI Whisper."
            )
    if config.get("scale_embedding", False):
        raise WeightsError(f"{source}: scale_embedding=true is not OpenAI Whisper's architecture.")
    if config.get("activation_function", "gelu") != "gelu":
        raise WeightsError(
            f"{source}: activation_function={config['activation_function']!r}; OpenAI Whisper "
            "uses exact 'gelu'."
        )
    return ModelDimensions(
        n_mels=config["num_mel_bins"],
        n_audio_ctx=config["max_source_positions"],
        n_audio_state=d,
        n_audio_head=config["encoder_attention_heads"],
        n_audio_layer=config["encoder_layers"],
        n_vocab=config["vocab_size"],
        n_text_ctx=config["max_target_positions"],
        n_text_state=d,
        n_text_head=config["decoder_attention_heads"],
        n_text_layer=config["decoder_layers"],
    )


def _read_tensors(directory: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    def load(path: Path) -> dict[str, np.ndarray]:
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors raises its own error types.
            raise WeightsError(
                f"{path}: cannot be read as safetensors ({type(error).__name__}: {error}). The "
                "file is truncated or corrupt; download it again."
            ) from None

    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return load(single)
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, UnicodeDecodeError) as error:
            raise WeightsError(f"{index}: not a valid safetensors index ({error}).") from None
        tensors: dict[str, np.ndarray] = {}
        for shard in dict.fromkeys(weight_map.values()):
            if not (directory / shard).is_file():
                raise WeightsError(
                    f"{directory}: shard '{shard}' listed in {index.name} is missing; download "
                    "every model-*.safetensors file."
                )
            tensors.update(load(directory / shard))
        absent = sorted(set(weight_map) - set(tensors))
        if absent:
            raise WeightsError(
                f"{index}: tensors {absent[:8]} are listed but not found in their shards; the "
                "download is incomplete or mixed up."
            )
        return tensors
    if (directory / "pytorch_model.bin").is_file():
        from keras_whisper.converters.openai_checkpoint import _import_torch, _to_numpy

        torch = _import_torch()
        path = directory / "pytorch_model.bin"
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise WeightsError(
                f"{path}: cannot be read ({type(error).__name__}: {error}); download it again."
            ) from None
        return {name: _to_numpy(value, torch) for name, value in raw.items()}
    raise WeightsError(
        f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin."
    )


def load_transformers(directory: PathLike) -> tuple[ModelDimensions, StateDict]:
    """Loads a Hugging Face transformers Whisper folder as an OpenAI state dict.

    Args:
        directory: A folder with `config.json` and `model.safetensors` (or a
            sharded `model.safetensors.index.json`, or `pytorch_model.bin`
            when `torch` is installed), e.g. a local copy of `openai/whisper-tiny`.

    Returns:
        A tuple `(dims, state_dict)` with arrays in their stored dtype.

    Raises:
        WeightsError: if files are missing or corrupt, a tensor is unknown,
            missing or misshapen, the tied `proj_out.weight` differs from the
            token embedding, or a key bias is not zero.

    Examples:
    ```python
    dims, state_dict = load_transformers("whisper-tiny")
    dims.n_vocab  # 51865
    ```
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(f"{directory}: not a directory.")
    config = _read_config(directory)
    source = str(directory)
    dims = dims_from_hf_config(config, str(directory / "config.json"))
    to_openai = {
        hf[len(_PREFIX) :]: openai for openai in expected_shapes(dims) for hf in [hf_name(openai)]
    }
    tensors = _read_tensors(directory)
    state_dict: StateDict = {}
    projection = None
    unknown = []
    for name, value in tensors.items():
        short = name[len(_PREFIX) :] if name.startswith(_PREFIX) else name
        if short == _PROJ_OUT:
            projection = value
        elif short in to_openai:
            openai = to_openai[short]
            if openai in state_dict:
                raise WeightsError(
                    f"{source}: tensor '{short}' appears both with and without the 'model.' prefix."
                )
            state_dict[openai] = value
        elif re.fullmatch(
            r"(en|de)coder\.layers\.\d+\.(self_attn|encoder_attn)\.k_proj\.bias", short
        ):
            if np.any(value.astype(np.float32) != 0):
                raise WeightsError(
                    f"{source}: '{name}' is not zero; OpenAI Whisper's key projection has no bias."
                )
        else:
            unknown.append(name)
    if unknown:
        raise WeightsError(
            f"{source}: {len(unknown)} tensor(s) that are not part of a Whisper of config "
            f"{dims.to_dict()}: {sorted(unknown)[:8]}. Is config.json the one for these weights?"
        )
    embedding = state_dict.get("decoder.token_embedding.weight")
    if (
        projection is not None
        and embedding is not None
        and not np.array_equal(projection, embedding)
    ):
        raise WeightsError(
            f"{source}: 'proj_out.weight' differs from 'model.decoder.embed_tokens.weight'. OpenAI "
            "Whisper ties the output projection to the token embedding, so untied weights "
            "cannot be represented."
        )
    validate_state_dict(dims, state_dict, source)
    return dims, ordered_state_dict(dims, state_dict)


def hf_config(dims: ModelDimensions, torch_dtype: str = "float32") -> dict:
    """Returns a Hugging Face `WhisperConfig` dict for the given dimensions.

    Token ids follow OpenAI's vocabularies: English-only models (51864 tokens)
    end text with 50256 and start with 50257; multilingual ones use 50257
    and 50258.

    Args:
        dims: The model's `ModelDimensions`; encoder and decoder widths must match.
        torch_dtype: The dtype the weights are stored in.

    Returns:
        A JSON-serialisable dict.
    """
    if dims.n_audio_state != dims.n_text_state:
        raise WeightsError(
            f"Hugging Face Whisper has one d_model, but n_audio_state={dims.n_audio_state} and "
            f"n_text_state={dims.n_text_state} differ."
        )
    eot = 50256 if dims.n_vocab == _ENGLISH_ONLY_VOCAB else 50257
    d = dims.n_audio_state
    return {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "d_model": d,
        "encoder_layers": dims.n_audio_layer,
        "encoder_attention_heads": dims.n_audio_head,
        "encoder_ffn_dim": 4 * d,
        "decoder_layers": dims.n_text_layer,
        "decoder_attention_heads": dims.n_text_head,
        "decoder_ffn_dim": 4 * d,
        "num_mel_bins": dims.n_mels,
        "vocab_size": dims.n_vocab,
        "max_source_positions": dims.n_audio_ctx,
        "max_target_positions": dims.n_text_ctx,
        "num_hidden_layers": dims.n_audio_layer,
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "is_encoder_decoder": True,
        "use_cache": True,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "bos_token_id": 50257,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "decoder_start_token_id": eot + 1,
        "begin_suppress_tokens": [220, eot],
        "torch_dtype": torch_dtype,
    }


def _write_atomic(path: Path, write) -> None:
    with atomic_file(path) as temporary:
        write(temporary)


def save_transformers(
    dims: ModelDimensions,
    state_dict: Mapping[str, np.ndarray],
    directory: PathLike,
    extra_config: Mapping | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Saves a state dict as a Hugging Face transformers Whisper folder.

    Writes `config.json` and a single `model.safetensors` (metadata
    `format: pt`) with `model.`-prefixed names and no `proj_out.weight`
    (tied), which `WhisperForConditionalGeneration.from_pretrained` reads.

    Args:
        dims: The model's `ModelDimensions`.
        state_dict: OpenAI-named arrays.
        directory: Output folder, created if needed.
        extra_config: Entries added to or replacing those of `config.json`
            (e.g. `alignment_heads`, `suppress_tokens`, token ids).
        dtype: Cast floating weights to this dtype (`"float32"`,
            `"float16"`, `"bfloat16"`); None keeps each tensor's dtype.
        overwrite: Whether to write into a non-empty folder.

    Returns:
        The folder `Path`.

    Raises:
        WeightsError: if the state dict does not fit `dims`, or the folder is
            not empty and `overwrite` is False.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise WeightsError(
            f"Refusing to write into the non-empty folder {directory}; pass overwrite=True or "
            "choose an empty folder."
        )
    validate_state_dict(dims, state_dict, "the state dict to save")
    tensors = {}
    for name, value in ordered_state_dict(dims, state_dict).items():
        array = np.asarray(value)
        if dtype is not None:
            if dtype == "bfloat16":
                import ml_dtypes

                array = array.astype(ml_dtypes.bfloat16)
            else:
                array = array.astype(dtype)
        tensors[hf_name(name)] = np.ascontiguousarray(array)
    dtypes = {array.dtype.name for array in tensors.values()}
    config = hf_config(dims, torch_dtype=dtypes.pop() if len(dtypes) == 1 else "float32")
    config.update(extra_config or {})
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(
        directory / "model.safetensors",
        lambda path: save_file(tensors, path, metadata={"format": "pt"}),
    )
    _write_atomic(
        directory / "config.json",
        lambda path: Path(path).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"),
    )
    return directory
