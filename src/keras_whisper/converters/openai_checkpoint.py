"""OpenAI Whisper `.pt` checkpoints (`{"dims": ..., "model_state_dict": ...}`).

These are the files `whisper.load_model` downloads. They are PyTorch pickles,
so reading and writing them needs `torch`; loading uses
`weights_only=True`, which refuses to run code embedded in the pickle.
"""

from __future__ import annotations

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

# Buffers OpenAI's model may carry that are not weights (alignment heads are
# set from a table after loading, not learned).
_NON_WEIGHT_KEYS = ("alignment_heads",)


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "Reading or writing OpenAI Whisper .pt checkpoints needs PyTorch: "
            "`pip install torch` (CPU wheels are enough), or `pip install keras-whisper[torch]`."
        ) from None
    return torch


def _to_numpy(tensor, torch) -> np.ndarray:
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return tensor.numpy()


def _to_torch(array: np.ndarray, torch):
    array = np.ascontiguousarray(array)
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def load_openai_checkpoint(path: PathLike) -> tuple[ModelDimensions, StateDict]:
    """Loads an OpenAI Whisper `.pt` checkpoint as NumPy arrays.

    Args:
        path: A file such as `tiny.en.pt` from OpenAI's download URLs.

    Returns:
        A tuple `(dims, state_dict)`: the `ModelDimensions` from
        `checkpoint["dims"]` and the arrays of `checkpoint["model_state_dict"]`
        in their stored dtype (float16 for OpenAI's files).

    Raises:
        ImportError: if `torch` is not installed.
        WeightsError: if the file cannot be unpickled safely, lacks `dims` or
            `model_state_dict`, or its tensors do not fit the dims.

    Examples:
    ```python
    dims, state_dict = load_openai_checkpoint("tiny.en.pt")
    state_dict["encoder.conv1.weight"].shape  # (384, 80, 3)
    ```
    """
    torch = _import_torch()
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad pickles.
        raise WeightsError(
            f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True "
            f"({type(error).__name__}: {error}). The file is truncated, corrupt, or contains "
            "more than tensors; re-download it from OpenAI."
        ) from None
    if not isinstance(checkpoint, Mapping) or not {"dims", "model_state_dict"} <= set(checkpoint):
        keys = sorted(checkpoint) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise WeightsError(
            f"{path}: not an OpenAI Whisper checkpoint: expected a dict with 'dims' and "
            f"'model_state_dict', found {keys}. (A Hugging Face pytorch_model.bin is read with "
            "load_transformers on its folder instead.)"
        )
    dims = ModelDimensions.from_dict(checkpoint["dims"])
    state_dict: StateDict = {}
    for name, tensor in checkpoint["model_state_dict"].items():
        if name in _NON_WEIGHT_KEYS:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(
                f"{path}: model_state_dict['{name}'] is a {type(tensor).__name__}, not a tensor."
            )
        state_dict[name] = _to_numpy(tensor, torch)
    validate_state_dict(dims, state_dict, str(path))
    return dims, ordered_state_dict(dims, state_dict)


def save_openai_checkpoint(
    dims: ModelDimensions,
    state_dict: Mapping[str, np.ndarray],
    path: PathLike,
    overwrite: bool = False,
) -> Path:
    """Saves a state dict as an OpenAI Whisper `.pt` checkpoint.

    The file has OpenAI's layout, `{"dims": dims.to_dict(), "model_state_dict":
    {name: tensor}}`, so `whisper.load_model(path)` can read it. It is written
    to a temporary file in the same directory and renamed into place.

    Args:
        dims: The model's `ModelDimensions`.
        state_dict: OpenAI-named arrays, saved in their dtype.
        path: The `.pt` file to write.
        overwrite: Whether to replace an existing file.

    Returns:
        The written `Path`.

    Raises:
        ImportError: if `torch` is not installed.
        WeightsError: if the state dict does not fit `dims`, or the file exists
            and `overwrite` is False.
    """
    torch = _import_torch()
    path = Path(path)
    if path.exists() and not overwrite:
        raise WeightsError(
            f"Refusing to overwrite {path}; pass overwrite=True or choose another path."
        )
    validate_state_dict(dims, state_dict, "the state dict to save")
    checkpoint = {
        "dims": dims.to_dict(),
        "model_state_dict": {
            name: _to_torch(np.asarray(value), torch)
            for name, value in ordered_state_dict(dims, state_dict).items()
        },
    }
    with atomic_file(path) as temporary, open(temporary, "wb") as file:
        torch.save(checkpoint, file)
    return path
