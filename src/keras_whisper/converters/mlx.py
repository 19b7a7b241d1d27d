"""MLX Whisper folders (mlx-whisper, the `mlx-community/whisper-*` repositories).

A folder holds `config.json` (OpenAI's `ModelDimensions` fields, optionally
`model_type` and `quantization`) and `weights.safetensors` or `weights.npz`,
named like OpenAI's state dict except that:

- the MLP layers are `mlp1` / `mlp2` (OpenAI's `mlp.0` / `mlp.2`);
- the convolution kernels are `(out, width, in)` (OpenAI's `(out, in, width)`);
- the encoder's sinusoidal positions are computed, not stored;
- `alignment_heads` (an `(n, 2)` integer table of layer, head) may be stored.

Quantized folders (`"quantization": {"group_size": g, "bits": b}`) store each
quantized linear or embedding matrix as `weight` (`uint32` words packing
`32 / b` values, lowest bits first), `scales` and `biases` (one per group of
`g` values along a row): value = scale * q + bias, as MLX's `dequantize`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from keras_whisper.converters.common import (
    ModelDimensions,
    StateDict,
    atomic_file,
    ordered_state_dict,
    validate_state_dict,
)
from keras_whisper.errors import WeightsError

PathLike = str | os.PathLike

WEIGHT_FILES = ("weights.safetensors", "weights.npz")
_CONV_KERNELS = ("encoder.conv1.weight", "encoder.conv2.weight")  # (out, width, in) in MLX
_DIM_KEYS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")


def is_mlx_config(config: Mapping) -> bool:
    """Whether a parsed `config.json` is an MLX Whisper config (OpenAI's field names)."""
    return all(key in config for key in _DIM_KEYS)


def _openai_name(name: str) -> str:
    return name.replace(".mlp1.", ".mlp.0.").replace(".mlp2.", ".mlp.2.")


def _mlx_name(name: str) -> str:
    return name.replace(".mlp.0.", ".mlp1.").replace(".mlp.2.", ".mlp2.")


def dequantize(
    weight: np.ndarray, scales: np.ndarray, biases: np.ndarray, group_size: int, bits: int
) -> np.ndarray:
    """MLX's affine dequantization: `scale * q + bias` per group, in the scales' dtype.

    Args:
        weight: `(rows, columns * bits / 32)` uint32 words, values packed lowest bits
            first as one bit stream per row.
        scales, biases: `(rows, columns / group_size)`.
        group_size: values per group.
        bits: bits per value (2, 3, 4, 5, 6 or 8).

    Returns:
        `(rows, columns)` values of `scales.dtype`.
    """
    if bits not in (2, 3, 4, 5, 6, 8):
        raise WeightsError(f"MLX quantization with {bits} bits is not supported.")
    words = np.ascontiguousarray(weight, dtype="<u4")
    rows = words.shape[0]
    stream = np.unpackbits(words.view(np.uint8).reshape(rows, -1), axis=1, bitorder="little")
    columns = stream.shape[1] // bits
    places = (1 << np.arange(bits, dtype=np.uint32)).astype(np.uint32)
    q = stream[:, : columns * bits].reshape(rows, columns, bits).astype(np.uint32) @ places
    if scales.shape != (rows, columns // group_size) or columns % group_size:
        raise WeightsError(
            f"MLX quantized matrix of {rows} x {columns} values does not fit scales of shape "
            f"{scales.shape} at group size {group_size}."
        )
    dtype = scales.dtype
    q = q.reshape(rows, -1, group_size).astype(dtype)
    values = scales[:, :, None] * q + biases[:, :, None].astype(dtype)
    return values.reshape(rows, columns).astype(dtype)


def _read_config(directory: Path) -> dict:
    path = directory / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(
            f"{directory}: no config.json (an MLX Whisper folder has one)."
        ) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON: {error}.") from None
    if not isinstance(config, dict) or not is_mlx_config(config):
        raise WeightsError(f"{path} is not an MLX Whisper config (no n_mels, n_audio_state, ...).")
    return config


def _dimensions(config: Mapping, directory: Path) -> ModelDimensions:
    try:
        return ModelDimensions.from_dict(
            {k: v for k, v in config.items() if k not in ("model_type", "quantization")}
        )
    except WeightsError as error:
        raise WeightsError(f"{directory / 'config.json'}: {error}") from None


def read_mlx_dimensions(directory: PathLike) -> ModelDimensions:
    """The `ModelDimensions` of an MLX folder, from its `config.json` alone."""
    directory = Path(directory)
    return _dimensions(_read_config(directory), directory)


def _read_weights(directory: Path) -> dict[str, np.ndarray]:
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".npz"):
                with np.load(path, allow_pickle=False) as archive:
                    return {key: archive[key] for key in archive.files}
            import ml_dtypes  # noqa: F401  (registers bfloat16 for safetensors' NumPy reader)
            from safetensors.numpy import load_file

            return load_file(str(path))
        except Exception as error:  # numpy's and safetensors' many error types
            raise WeightsError(
                f"{path}: cannot be read ({type(error).__name__}: {error}). The file is "
                "truncated or corrupt; download it again."
            ) from None
    raise WeightsError(f"{directory}: no {' or '.join(WEIGHT_FILES)}.")


def load_mlx(directory: PathLike) -> tuple[ModelDimensions, StateDict, np.ndarray | None]:
    """Reads an MLX Whisper folder into OpenAI-named NumPy arrays.

    Quantized matrices come back dequantized (in the dtype of their scales, as
    MLX computes them); the rest in their stored dtype.

    Args:
        directory: a folder with `config.json` and `weights.safetensors` or
            `weights.npz`, e.g. a download of `mlx-community/whisper-tiny.en-mlx`.

    Returns:
        `(dims, state_dict, alignment_heads)`: the heads as stored, `(n, 2)`
        `(layer, head)` pairs, or `None`.

    Raises:
        WeightsError: if the folder is not a complete MLX Whisper model.

    Examples:
    ```python
    dims, state_dict, heads = load_mlx("whisper-tiny.en-mlx")
    state_dict["encoder.conv1.weight"].shape  # (384, 80, 3)
    ```
    """
    directory = Path(directory)
    config = _read_config(directory)
    dims = _dimensions(config, directory)
    raw = _read_weights(directory)
    quantization = config.get("quantization")
    if quantization is not None and quantization.get("mode", "affine") != "affine":
        raise WeightsError(
            f"{directory}: MLX quantization mode {quantization['mode']!r} is not supported "
            "(affine is); convert the float16 model instead."
        )
    heads = raw.pop("alignment_heads", None)
    state_dict: StateDict = {}
    for name, value in raw.items():
        if name.endswith((".scales", ".biases")):
            continue
        prefix = name[: -len(".weight")] if name.endswith(".weight") else None
        if prefix is not None and f"{prefix}.scales" in raw:
            if quantization is None:
                raise WeightsError(
                    f"{directory}: '{name}' is quantized but config.json has no quantization."
                )
            own = quantization.get(prefix)  # per-layer settings, where a converter wrote them
            if not isinstance(own, Mapping):
                own = quantization
            value = dequantize(
                value,
                raw[f"{prefix}.scales"],
                raw[f"{prefix}.biases"],
                int(own["group_size"]),
                int(own["bits"]),
            )
        elif name in _CONV_KERNELS:
            value = np.swapaxes(value, 1, 2)
        state_dict[_openai_name(name)] = np.asarray(value)
    if "encoder.positional_embedding" not in state_dict:
        from keras_whisper.layers import sinusoids

        state_dict["encoder.positional_embedding"] = sinusoids(dims.n_audio_ctx, dims.n_audio_state)
    validate_state_dict(dims, state_dict, str(directory))
    if heads is not None:
        heads = np.asarray(heads).astype(np.int64)
    return dims, ordered_state_dict(dims, state_dict), heads


def read_alignment_heads(directory: PathLike) -> np.ndarray | None:
    """The `alignment_heads` tensor of an MLX folder (read alone), or `None`."""
    directory = Path(directory)
    try:
        if not is_mlx_config(json.loads((directory / "config.json").read_text("utf-8"))):
            return None
        if (directory / "weights.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(directory / "weights.safetensors", "numpy") as f:
                if "alignment_heads" in f.keys():
                    return np.asarray(f.get_tensor("alignment_heads")).reshape(-1, 2)
        elif (directory / "weights.npz").is_file():
            with np.load(directory / "weights.npz", allow_pickle=False) as archive:
                if "alignment_heads" in archive.files:
                    return np.asarray(archive["alignment_heads"]).reshape(-1, 2)
    except (OSError, ValueError, AttributeError):
        return None
    return None


def save_mlx(
    dims: ModelDimensions,
    state_dict: Mapping[str, np.ndarray],
    directory: PathLike,
    dtype: str = "float16",
    alignment_heads: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes an MLX Whisper folder (`config.json` + `weights.safetensors`).

    mlx-whisper's `load_models.load_model(directory)` reads it; its own
    quantization (`nn.quantize`) can be applied to the loaded model.

    Args:
        dims: the model's `ModelDimensions`.
        state_dict: OpenAI-named arrays.
        directory: the folder to write.
        dtype: `"float16"` (as mlx-community's folders) or `"float32"`.
        alignment_heads: optional `(n, 2)` (layer, head) pairs to store.
        overwrite: replace an existing MLX folder's files.

    Returns:
        The folder's `Path`.
    """
    from safetensors.numpy import save_file

    if dtype not in ("float16", "float32"):
        raise ValueError(f"MLX folders are written as float16 or float32, not {dtype!r}.")
    directory = Path(directory)
    taken = [n for n in ("config.json", *WEIGHT_FILES) if (directory / n).exists()]
    if taken and not overwrite:
        raise WeightsError(
            f"Refusing to overwrite {', '.join(taken)} in {directory}; pass overwrite=True or "
            "choose another folder."
        )
    validate_state_dict(dims, state_dict, "the state dict to save")
    tensors = {}
    for name, value in ordered_state_dict(dims, state_dict).items():
        if name == "encoder.positional_embedding":
            continue
        array = np.asarray(value, dtype=np.float32)
        if name in _CONV_KERNELS:
            array = np.swapaxes(array, 1, 2)
        tensors[_mlx_name(name)] = np.ascontiguousarray(array.astype(dtype))
    if alignment_heads is not None:
        tensors["alignment_heads"] = np.asarray(alignment_heads, dtype=np.int64).reshape(-1, 2)
    config = {**dims.to_dict(), "model_type": "whisper"}
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_file(directory / "weights.safetensors") as temporary:
        save_file(tensors, temporary)
    with atomic_file(directory / "config.json") as temporary:
        Path(temporary).write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")
    return directory
