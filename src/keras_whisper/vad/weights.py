"""Finding and reading Silero VAD weights without importing PyTorch.

The weights of Silero VAD ship inside two PyPI packages, and both are read here as plain files:

- `silero-vad` (the `vad` extra of keras-whisper): `silero_vad/data/silero_vad_16k_op15.onnx`
  holds the 16 kHz network of the package's own model (`load_silero_vad()`, the TorchScript file
  `silero_vad.jit` and every ONNX export of it give the same probabilities). The package also
  ships `silero_vad_16k.safetensors`, but in silero-vad 6.2.x that file holds *other* weights
  than the released model (its probabilities differ by up to 0.4 on real speech), so it is not
  the default source.
- `faster-whisper`: `faster_whisper/assets/silero_vad_v6.onnx`, the Silero VAD v6.0 network that
  faster-whisper runs (silero-vad 6.0.0/6.1.0 weights, an earlier training than 6.2).

The files are located through `importlib.metadata` (the installed distribution's file list), so
`silero_vad`, whose `__init__` imports PyTorch, is never imported. ONNX files are parsed with a
small protobuf reader: only the float tensors (initializers and `Constant` nodes) and the inputs
of the `LSTM` node are needed.

Every source is turned into one canonical dict of NumPy arrays in PyTorch layouts, named like
silero-vad's `silero_vad_16k.safetensors`:

| name | shape | meaning |
|---|---|---|
| `stft_conv.weight` | `(258, 1, 256)` | real (rows 0-128) and imaginary (129-257) STFT basis |
| `conv{1..4}.weight`, `.bias` | `(out, in, 3)`, `(out,)` | the encoder's four convolutions |
| `lstm_cell.weight_ih`, `weight_hh` | `(512, 128)` | LSTM cell, gates in PyTorch order i, f, g, o |
| `lstm_cell.bias_ih`, `bias_hh` | `(512,)` | |
| `final_conv.weight`, `.bias` | `(1, 128, 1)`, `(1,)` | the 1x1 output convolution |
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from pathlib import Path

import numpy as np

from keras_whisper.errors import KerasWhisperError, WeightsError

# The silero-vad release the `vad` extra pins (the reference of the tests).
SILERO_VAD_VERSION = "6.2.3"

INSTALL_HINT = (
    "Silero VAD's weights come with the `silero-vad` package: install the extra with "
    "`pip install 'keras-whisper[vad]'` (or `pip install silero-vad --no-deps`, which is enough: "
    "keras-whisper reads the weight file and never imports silero_vad or PyTorch)."
)

# Where each package keeps its weights, relative to its site-packages folder.
PACKAGE_FILES = {
    "silero-vad": ("silero_vad", "silero_vad/data/silero_vad_16k_op15.onnx"),
    "faster-whisper": ("faster_whisper", "faster_whisper/assets/silero_vad_v6.onnx"),
}

CANONICAL_SHAPES = {
    "stft_conv.weight": (258, 1, 256),
    "conv1.weight": (128, 129, 3),
    "conv1.bias": (128,),
    "conv2.weight": (64, 128, 3),
    "conv2.bias": (64,),
    "conv3.weight": (64, 64, 3),
    "conv3.bias": (64,),
    "conv4.weight": (128, 64, 3),
    "conv4.bias": (128,),
    "lstm_cell.weight_ih": (512, 128),
    "lstm_cell.weight_hh": (512, 128),
    "lstm_cell.bias_ih": (512,),
    "lstm_cell.bias_hh": (512,),
    "final_conv.weight": (1, 128, 1),
    "final_conv.bias": (1,),
}


class MissingVADWeightsError(KerasWhisperError, ImportError):
    """The package holding Silero VAD's weights is not installed (see `INSTALL_HINT`)."""


# ---------------------------------------------------------------------------------------------
# Locating the files
# ---------------------------------------------------------------------------------------------


def package_weights_path(package: str = "silero-vad") -> Path:
    """The path of the Silero VAD weight file shipped in an installed PyPI package.

    Args:
        package: str. `"silero-vad"` (the `vad` extra, the default) or `"faster-whisper"`.

    Returns:
        The absolute `Path` of the ONNX file. The package is not imported.

    Raises:
        MissingVADWeightsError: the package is not installed or lacks the file.
    """
    if package not in PACKAGE_FILES:
        raise ValueError(f"Unknown package {package!r}: choose one of {sorted(PACKAGE_FILES)}.")
    module, relative = PACKAGE_FILES[package]
    candidates = []
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if str(file).replace(os.sep, "/") == relative:
            candidates.append(Path(file.locate()))
    # Editable or unusual installs may lack a file list: look beside the module itself
    # (`find_spec` of a top-level package finds it without running its `__init__`).
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location).parent / relative)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    if package == "silero-vad":
        raise MissingVADWeightsError(f"The `silero-vad` package is not installed. {INSTALL_HINT}")
    raise MissingVADWeightsError(
        f"The `{package}` package (or its file {relative}) is not installed: "
        f"`pip install {package}`, or use the default source: {INSTALL_HINT}"
    )


# ---------------------------------------------------------------------------------------------
# A minimal protobuf reader for ONNX models
# ---------------------------------------------------------------------------------------------

# ONNX field numbers (onnx.proto): ModelProto.graph = 7; GraphProto.node = 1,
# .initializer = 5; NodeProto.input = 1, .op_type = 4, .attribute = 5; AttributeProto.t = 5,
# .g = 6, .graphs = 11; TensorProto.dims = 1, .data_type = 2, .float_data = 4, .name = 8,
# .raw_data = 9, .data_location = 14.
_ONNX_FLOAT = 1


def _varint(buffer: memoryview, index: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if index >= len(buffer):
            raise WeightsError("Truncated ONNX file (a varint runs past the end).")
        byte = buffer[index]
        index += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, index


def _fields(buffer: memoryview):
    """Yields `(field_number, wire_type, value)` of one protobuf message."""
    index, end = 0, len(buffer)
    while index < end:
        key, index = _varint(buffer, index)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, index = _varint(buffer, index)
        elif wire == 1:
            value, index = buffer[index : index + 8], index + 8
        elif wire == 2:
            length, index = _varint(buffer, index)
            value, index = buffer[index : index + length], index + length
        elif wire == 5:
            value, index = buffer[index : index + 4], index + 4
        else:
            raise WeightsError(f"Not an ONNX file (protobuf wire type {wire}).")
        if index > end:
            raise WeightsError("Truncated ONNX file (a field runs past the end).")
        yield number, wire, value


def _onnx_tensor(buffer: memoryview) -> tuple[str, np.ndarray | None]:
    """The name and value of a TensorProto; `None` for anything but inline float32."""
    name, dims, data_type, raw, floats, external = "", [], 0, None, [], False
    for number, wire, value in _fields(buffer):
        if number == 1:
            if wire == 2:  # packed
                position = 0
                while position < len(value):
                    dim, position = _varint(value, position)
                    dims.append(dim)
            else:
                dims.append(value)
        elif number == 2:
            data_type = value
        elif number == 4:
            floats.append(np.frombuffer(value, "<f4"))  # packed (wire 2) or one value (wire 5)
        elif number == 8:
            name = bytes(value).decode("utf-8")
        elif number == 9:
            raw = bytes(value)
        elif number == 14 and value == 1:
            external = True
    if data_type != _ONNX_FLOAT or external:
        return name, None
    data = np.frombuffer(raw, "<f4") if raw is not None else np.concatenate(floats or [[]])
    if data.size != int(np.prod(dims, dtype=np.int64)):
        raise WeightsError(f"ONNX tensor {name!r} holds {data.size} values for shape {dims}.")
    return name, data.astype(np.float32).reshape(dims)


def _walk_graph(buffer: memoryview, tensors: dict, lstm_inputs: list) -> None:
    for number, _, value in _fields(buffer):
        if number == 5:  # initializer
            name, array = _onnx_tensor(value)
            if array is not None:
                tensors[name] = array
        elif number == 1:  # node
            op_type, inputs, outputs, attributes = "", [], [], []
            for field, _, item in _fields(value):
                if field == 1:
                    inputs.append(bytes(item).decode("utf-8"))
                elif field == 2:
                    outputs.append(bytes(item).decode("utf-8"))
                elif field == 4:
                    op_type = bytes(item).decode("utf-8")
                elif field == 5:
                    attributes.append(item)
            if op_type == "LSTM":
                lstm_inputs.append(inputs)
            for attribute in attributes:
                for field, _, item in _fields(attribute):
                    if field == 5 and op_type == "Constant" and outputs:
                        _, array = _onnx_tensor(item)
                        if array is not None:
                            tensors[outputs[0]] = array
                    elif field in (6, 11):  # subgraphs of If / Loop / Scan
                        _walk_graph(item, tensors, lstm_inputs)


def read_onnx_tensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Reads the float32 tensors of an ONNX model and the inputs of its LSTM nodes.

    Args:
        path: str or PathLike. An ONNX model with its weights inside (no external data).

    Returns:
        `(tensors, lstm_inputs)`: the float32 initializers and `Constant` values by name, and
        for every `LSTM` node its input names (`X, W, R, B, ...`).
    """
    buffer = memoryview(Path(path).read_bytes())
    tensors: dict[str, np.ndarray] = {}
    lstm_inputs: list[list[str]] = []
    graphs = [value for number, wire, value in _fields(buffer) if number == 7 and wire == 2]
    if not graphs:
        raise WeightsError(f"{path} is not an ONNX model (no graph).")
    for graph in graphs:
        _walk_graph(graph, tensors, lstm_inputs)
    return tensors, lstm_inputs


# ---------------------------------------------------------------------------------------------
# Canonical form
# ---------------------------------------------------------------------------------------------

# One pattern per naming scheme and canonical tensor: silero-vad's TorchScript/ONNX export
# (`encoder.0.reparam_conv.weight`, with or without `model.`), its sequence export
# (`encoder.0.weight`, `output.weight`), faster-whisper's (`encoder.conv_layers.0.weight`,
# `decoder.conv1d.weight`) and silero-vad's safetensors (canonical names).
_PATTERNS = [
    (r"(?:.*\.)?forward_basis_buffer|stft_conv\.weight", lambda m: "stft_conv.weight"),
    (
        r"(?:.*\.)?encoder\.(?:conv_layers\.)?([0-3])\.(?:reparam_conv\.)?(weight|bias)",
        lambda m: f"conv{int(m[1]) + 1}.{m[2]}",  # encoder.0 is conv1
    ),
    (r"conv([1-4])\.(weight|bias)", lambda m: f"conv{m[1]}.{m[2]}"),
    (
        r"(?:.*\.)?(?:decoder\.rnn|lstm_cell)\.(weight_ih|weight_hh|bias_ih|bias_hh)",
        lambda m: f"lstm_cell.{m[1]}",
    ),
    (
        r"(?:.*\.)?(?:decoder\.decoder\.2|decoder\.conv1d|final_conv|output)\.(weight|bias)",
        lambda m: f"final_conv.{m[1]}",
    ),
]


def _canonical_name(name: str) -> str | None:
    for pattern, canonical in _PATTERNS:
        match = re.fullmatch(pattern, name)
        if match:
            return canonical(match)
    return None


def _onnx_lstm(tensors: dict, lstm_inputs: list) -> dict[str, np.ndarray]:
    """An ONNX `LSTM` node's W, R, B (gates i, o, f, c) in PyTorch's LSTMCell layout (i, f, g, o)."""
    if len(lstm_inputs) != 1:
        return {}
    inputs = lstm_inputs[0]
    if len(inputs) < 4 or any(name not in tensors for name in inputs[1:4]):
        raise WeightsError("The ONNX LSTM node's weights are not float32 tensors of the file.")
    w, r, b = (tensors[name] for name in inputs[1:4])
    if w.shape != (1, 512, 128) or r.shape != (1, 512, 128) or b.shape != (1, 1024):
        raise WeightsError(f"Unexpected ONNX LSTM shapes {w.shape}, {r.shape}, {b.shape}.")
    order = np.concatenate([np.arange(128) + 128 * k for k in (0, 2, 3, 1)])
    return {
        "lstm_cell.weight_ih": w[0][order],
        "lstm_cell.weight_hh": r[0][order],
        "lstm_cell.bias_ih": b[0, :512][order],
        "lstm_cell.bias_hh": b[0, 512:][order],
    }


def canonical_weights(
    tensors: dict[str, np.ndarray], lstm_inputs: list[list[str]] | None = None
) -> dict[str, np.ndarray]:
    """Maps Silero VAD tensors of any supported naming scheme onto the canonical names.

    Args:
        tensors: dict of name to array, from an ONNX model, a safetensors file or a PyTorch
            state dict converted to NumPy.
        lstm_inputs: the input names of the ONNX `LSTM` nodes, if any (see
            `read_onnx_tensors`).

    Returns:
        The 15 canonical float32 arrays (see the module docstring).

    Raises:
        WeightsError: a tensor is missing, duplicated or has the wrong shape.
    """
    result: dict[str, np.ndarray] = {}
    for name, array in tensors.items():
        canonical = _canonical_name(name)
        if canonical is None or canonical not in CANONICAL_SHAPES:
            continue
        if canonical in result:
            raise WeightsError(
                f"Two tensors map onto {canonical!r} (one is {name!r}): the file holds more "
                "than one Silero VAD network. Use a 16 kHz-only file (silero_vad_16k_op15.onnx)."
            )
        result[canonical] = np.asarray(array, dtype=np.float32)
    for name, array in _onnx_lstm(tensors, lstm_inputs or []).items():
        result.setdefault(name, array)
    missing = sorted(set(CANONICAL_SHAPES) - set(result))
    if missing:
        raise WeightsError(f"Not a Silero VAD 16 kHz network: missing {missing}.")
    for name, shape in CANONICAL_SHAPES.items():
        if result[name].shape != shape:
            raise WeightsError(f"{name} has shape {result[name].shape}, expected {shape}.")
    return {name: result[name] for name in CANONICAL_SHAPES}


def load_weights_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a Silero VAD weight file (`.onnx` or `.safetensors`) into canonical form.

    Args:
        path: str or PathLike. silero-vad's `silero_vad_16k_op15.onnx`,
            `silero_vad_16k_sequence.onnx` or `silero_vad_16k.safetensors`, faster-whisper's
            `silero_vad_v6.onnx`, or a safetensors file with the canonical names.

    Returns:
        The canonical dict of float32 arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No Silero VAD weight file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return canonical_weights(load_file(str(path)))
    tensors, lstm_inputs = read_onnx_tensors(path)
    return canonical_weights(tensors, lstm_inputs)
