"""whisper.cpp's GGML model files (`ggml-*.bin`), float and quantized.

The single-file format whisper.cpp loads (its `models/convert-pt-to-ggml.py`
writes it, its `quantize` tool rewrites it with integer blocks). Written here
from the format as whisper.cpp reads it; all integers little-endian:

```
u32 magic 0x67676d6c ("ggml")
i32 n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
    n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype
    (ftype: 0 float32, 1 float16, else quantization version * 1000 + kind)
i32 n_mel, n_fft, then n_mel * n_fft f32: the mel filterbank
i32 n_tokens, then per token: u32 length, the token's bytes (id order)
tensors to the end of the file, each:
    i32 n_dims, i32 name length, i32 ggml type, i32 ne[n_dims] (fastest first),
    the name (UTF-8, OpenAI's state-dict name), the data (no padding)
```

The token list is the ranked byte vocabulary of OpenAI's `.tiktoken` files
(ids 0..N-1, specials not included), so a file carries its own tokenizer
(`keras_whisper.tokenizer.WhisperTokenizer.from_ranked_bytes`). Quantized
tensors are rows of blocks along the fastest axis; each `_dequantize_*` below
mirrors ggml's `dequantize_row_*` (same float32 operations in the same order),
so the weights read here equal those whisper.cpp computes with.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

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

GGML_MAGIC = 0x67676D6C
QUANTIZATION_VERSION_FACTOR = 1000
_HEADER_FIELDS = (
    "n_vocab",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
    "n_mels",
)
# Tensors whisper.cpp's converter keeps in float32 even in a float16 file.
_FLOAT32_TENSORS = (
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
)
_FTYPE_NAMES = {
    0: "float32",
    1: "float16",
    2: "q4_0",
    3: "q4_1",
    4: "q4_1 (some float16)",
    7: "q8_0",
    8: "q5_0",
    9: "q5_1",
    10: "q2_k",
    11: "q3_k",
    12: "q4_k",
    13: "q5_k",
    14: "q6_k",
    32: "bfloat16",
}
_F16 = np.dtype("<f2")
_F32 = np.dtype("<f4")


def _half(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The float16 at byte `offset` of each block, as a `(blocks, 1)` float32 column."""
    return blocks[:, offset : offset + 2].copy().view(_F16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Low nibbles then high nibbles of each row of packed bytes (ggml's 4-bit order)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _fifth_bits(blocks: np.ndarray, offset: int) -> np.ndarray:
    """The 32 fifth bits of a q5 block (a little-endian u32 at `offset`), shifted to 0x10."""
    bits = np.unpackbits(blocks[:, offset : offset + 4], axis=1, bitorder="little")
    return bits << 4


def _dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    d = _half(blocks, 0)
    q = _nibbles(blocks[:, 2:18]).astype(np.int32) - 8
    return q.astype(np.float32) * d


def _dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    d, m = _half(blocks, 0), _half(blocks, 2)
    q = _nibbles(blocks[:, 4:20])
    return q.astype(np.float32) * d + m


def _dequantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    d = _half(blocks, 0)
    q = (_nibbles(blocks[:, 6:22]) | _fifth_bits(blocks, 2)).astype(np.int32) - 16
    return q.astype(np.float32) * d


def _dequantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    d, m = _half(blocks, 0), _half(blocks, 2)
    q = _nibbles(blocks[:, 8:24]) | _fifth_bits(blocks, 4)
    return q.astype(np.float32) * d + m


def _dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = _half(blocks, 0)
    return blocks[:, 2:34].view(np.int8).astype(np.float32) * d


def _k_scales_mins(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins packed in 12 bytes (ggml's `get_scale_min_k4`)."""
    q = scales.astype(np.uint8)
    low_d, low_m = q[:, 0:4] & 63, q[:, 4:8] & 63
    high_d = (q[:, 8:12] & 0x0F) | ((q[:, 0:4] >> 6) << 4)
    high_m = (q[:, 8:12] >> 4) | ((q[:, 4:8] >> 6) << 4)
    return np.concatenate([low_d, high_d], 1), np.concatenate([low_m, high_m], 1)


def _dequantize_q2_k(blocks: np.ndarray) -> np.ndarray:
    scales = blocks[:, 0:16]
    qs = blocks[:, 16:80].reshape(-1, 2, 32)  # two halves of 128 values
    d, dmin = _half(blocks, 80), _half(blocks, 82)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    # (block, half, shift, 32 bytes) -> 2-bit values in output order
    q = (qs[:, :, None, :] >> shifts[None, None, :, None]) & 3
    q = q.reshape(-1, 16, 16).astype(np.float32)  # 16 groups of 16, in scale order
    dl = d * (scales & 0x0F).astype(np.float32)
    ml = dmin * (scales >> 4).astype(np.float32)
    return (dl[:, :, None] * q - ml[:, :, None]).reshape(-1, 256)


def _dequantize_q3_k(blocks: np.ndarray) -> np.ndarray:
    hmask = blocks[:, 0:32]
    qs = blocks[:, 32:96].reshape(-1, 2, 32)
    packed = blocks[:, 96:108].copy().view("<u4")  # aux[0..2]
    d_all = _half(blocks, 108)
    a0, a1, tmp = packed[:, 0], packed[:, 1], packed[:, 2]
    k1, k2 = np.uint32(0x03030303), np.uint32(0x0F0F0F0F)
    aux = np.stack(
        [
            (a0 & k2) | (((tmp >> 0) & k1) << 4),
            (a1 & k2) | (((tmp >> 2) & k1) << 4),
            ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
            ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
        ],
        axis=1,
    ).astype("<u4")
    scales = aux.view(np.int8).astype(np.int32) - 32  # (blocks, 16)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8)
    low = (qs[:, :, None, :] >> shifts[None, None, :, None]) & 3  # (block, half, shift, 32)
    # The high bit of value l in (half h, shift j) is bit 4h + j of hmask[l].
    bit = np.arange(8, dtype=np.uint8).reshape(2, 4)
    high = (hmask[:, None, None, :] >> bit[None, :, :, None]) & 1
    q = low.astype(np.int32) - np.where(high == 1, 0, 4)
    q = q.reshape(-1, 16, 16).astype(np.float32)
    dl = d_all * scales.astype(np.float32)
    return (dl[:, :, None] * q).reshape(-1, 256)


def _dequantize_q4_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin = _half(blocks, 0), _half(blocks, 2)
    sc, m = _k_scales_mins(blocks[:, 4:16])
    qs = blocks[:, 16:144].reshape(-1, 4, 32)
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32).astype(np.float32)
    d8 = d * sc.astype(np.float32)
    m8 = dmin * m.astype(np.float32)
    return (d8[:, :, None] * q - m8[:, :, None]).reshape(-1, 256)


def _dequantize_q5_k(blocks: np.ndarray) -> np.ndarray:
    d, dmin = _half(blocks, 0), _half(blocks, 2)
    sc, m = _k_scales_mins(blocks[:, 4:16])
    qh = blocks[:, 16:48]
    ql = blocks[:, 48:176].reshape(-1, 4, 32)
    low = np.stack([ql & 0x0F, ql >> 4], axis=2).reshape(-1, 8, 32)
    high = (qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = (low + (high << 4)).astype(np.float32)
    d8 = d * sc.astype(np.float32)
    m8 = dmin * m.astype(np.float32)
    return (d8[:, :, None] * q - m8[:, :, None]).reshape(-1, 256)


def _dequantize_q6_k(blocks: np.ndarray) -> np.ndarray:
    ql = blocks[:, 0:128].reshape(-1, 2, 2, 32)  # (block, half, [l, l+32], 32)
    qh = blocks[:, 128:192].reshape(-1, 2, 32)
    scales = blocks[:, 192:208].view(np.int8).reshape(-1, 2, 8).astype(np.float32)
    d = _half(blocks, 208)[:, :, None]
    low = np.stack(
        [ql[:, :, 0] & 0x0F, ql[:, :, 1] & 0x0F, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], axis=2
    )  # (block, half, 4 quarters, 32)
    high = (qh[:, :, None, :] >> np.array([0, 2, 4, 6], np.uint8)[None, None, :, None]) & 3
    q = ((low | (high << 4)).astype(np.int32) - 32).astype(np.float32)
    # scale index: quarter k, element l -> 2k + l // 16
    s = scales.reshape(-1, 2, 4, 2)[:, :, :, :, None]
    q = q.reshape(-1, 2, 4, 2, 16)
    return ((d[:, :, :, None, None] * s) * q).reshape(-1, 256)


@dataclasses.dataclass(frozen=True)
class _Type:
    name: str
    block: int  # values per block
    nbytes: int  # bytes per block
    dequantize: Callable[[np.ndarray], np.ndarray] | None = None


# ggml's `enum ggml_type` values whisper.cpp files use.
TYPES: dict[int, _Type] = {
    0: _Type("f32", 1, 4),
    1: _Type("f16", 1, 2),
    2: _Type("q4_0", 32, 18, _dequantize_q4_0),
    3: _Type("q4_1", 32, 20, _dequantize_q4_1),
    6: _Type("q5_0", 32, 22, _dequantize_q5_0),
    7: _Type("q5_1", 32, 24, _dequantize_q5_1),
    8: _Type("q8_0", 32, 34, _dequantize_q8_0),
    10: _Type("q2_K", 256, 84, _dequantize_q2_k),
    11: _Type("q3_K", 256, 110, _dequantize_q3_k),
    12: _Type("q4_K", 256, 144, _dequantize_q4_k),
    13: _Type("q5_K", 256, 176, _dequantize_q5_k),
    14: _Type("q6_K", 256, 210, _dequantize_q6_k),
    30: _Type("bf16", 1, 2),
}


@dataclasses.dataclass(frozen=True)
class GgmlContents:
    """What a GGML file holds beside the weights.

    Args:
        ftype: the header's `ftype` (quantization version * 1000 + kind).
        tokens: the BPE vocabulary's token bytes, in id order.
        mel_filters: `(n_mels, n_fft // 2 + 1)` float32 filterbank.
        tensor_types: ggml type name of each tensor as stored (`"f16"`, `"q5_1"`, ...).
    """

    ftype: int
    tokens: tuple[bytes, ...]
    mel_filters: np.ndarray
    tensor_types: dict[str, str]

    @property
    def kind(self) -> str:
        """The file's weight type in words (`"float16"`, `"q5_1"`, ...)."""
        code = self.ftype % QUANTIZATION_VERSION_FACTOR
        return _FTYPE_NAMES.get(code, f"ftype {self.ftype}")


def is_ggml_file(path: PathLike) -> bool:
    """Whether `path` is a file that starts with GGML's magic number."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        head = f.read(4)
    return len(head) == 4 and struct.unpack("<I", head)[0] == GGML_MAGIC


class _Reader:
    def __init__(self, file: BinaryIO, source: str):
        self.file = file
        self.source = source

    def take(self, size: int, what: str) -> bytes:
        data = self.file.read(size)
        if len(data) != size:
            raise WeightsError(
                f"{self.source}: the file ends inside {what} (needed {size} bytes, found "
                f"{len(data)}). It is truncated: download it again."
            )
        return data

    def ints(self, count: int, what: str) -> tuple[int, ...]:
        return struct.unpack(f"<{count}i", self.take(4 * count, what))


def _read_tensor(reader: _Reader, expected: Mapping[str, tuple[int, ...]]):
    head = reader.file.read(12)
    if not head:
        return None
    if len(head) != 12:
        raise WeightsError(
            f"{reader.source}: the file ends inside a tensor header. It is truncated: "
            "download it again."
        )
    n_dims, name_length, type_id = struct.unpack("<3i", head)
    if not 1 <= n_dims <= 4 or not 0 < name_length <= 1024:
        raise WeightsError(
            f"{reader.source}: a tensor header is corrupt (n_dims={n_dims}, name length "
            f"{name_length}). The file is damaged: download it again."
        )
    ne = reader.ints(n_dims, "a tensor's shape")
    name = reader.take(name_length, "a tensor name").decode("utf-8", errors="replace")
    kind = TYPES.get(type_id)
    if kind is None:
        known = ", ".join(t.name for t in TYPES.values())
        raise WeightsError(
            f"{reader.source}: tensor '{name}' has ggml type {type_id}, which keras-whisper "
            f"does not read (known: {known}). Re-quantize the model with one of those types, "
            "or convert the original float16 checkpoint instead."
        )
    count = int(np.prod(ne, dtype=np.int64))
    if min(ne) <= 0 or ne[0] % kind.block:
        raise WeightsError(
            f"{reader.source}: tensor '{name}' has shape {list(ne)}, whose rows of {ne[0]} "
            f"values do not divide into {kind.name} blocks of {kind.block}. The file is "
            "damaged."
        )
    size = count // kind.block * kind.nbytes
    data = np.frombuffer(reader.take(size, f"the data of tensor '{name}'"), dtype=np.uint8)
    if type_id == 0:
        array = data.view(_F32)
    elif type_id == 1:
        array = data.view(_F16)
    elif type_id == 30:
        array = (data.view("<u2").astype(np.uint32) << 16).view(_F32)
    else:
        array = kind.dequantize(data.reshape(-1, kind.nbytes)).astype(np.float32, copy=False)
    array = array.reshape(tuple(reversed(ne)))
    want = expected.get(name)
    if want is not None and array.shape != want:
        # whisper.cpp stores the conv biases as (n, 1) and drops axes of size 1.
        if tuple(d for d in array.shape if d != 1) == tuple(d for d in want if d != 1):
            array = array.reshape(want)
    return name, array, kind.name


def _open(path: Path) -> BinaryIO:
    if not path.is_file():
        raise WeightsError(f"{path}: no such file.")
    return open(path, "rb")


def _read_header(reader: _Reader) -> tuple[ModelDimensions, int, np.ndarray, list[bytes]]:
    """The dimensions, `ftype`, mel filterbank and vocabulary before the tensors."""
    source = reader.source
    magic = struct.unpack("<I", reader.take(4, "the magic number"))[0]
    if magic != GGML_MAGIC:
        raise WeightsError(
            f"{source}: not a GGML model file (magic {magic:#010x}, expected "
            f"{GGML_MAGIC:#010x}). whisper.cpp's models are named ggml-*.bin; a GGUF or "
            "other file cannot be read as one."
        )
    values = reader.ints(len(_HEADER_FIELDS) + 1, "the header")
    header = dict(zip(_HEADER_FIELDS, values[:-1], strict=True))
    ftype = values[-1]
    try:
        dims = ModelDimensions(**header)
    except WeightsError as error:
        raise WeightsError(f"{source}: the header is corrupt: {error}") from None
    n_mel, n_fft = reader.ints(2, "the mel filterbank's shape")
    if n_mel != dims.n_mels or not 0 < n_fft <= 4096:
        raise WeightsError(
            f"{source}: the mel filterbank is {n_mel} x {n_fft} for a model of "
            f"{dims.n_mels} mel bins. The file is damaged."
        )
    filters = np.frombuffer(reader.take(4 * n_mel * n_fft, "the mel filterbank"), _F32)
    (n_tokens,) = reader.ints(1, "the vocabulary size")
    if not 0 < n_tokens <= dims.n_vocab:
        raise WeightsError(
            f"{source}: the file lists {n_tokens} tokens for a vocabulary of "
            f"{dims.n_vocab}. The file is damaged."
        )
    tokens = []
    for _ in range(n_tokens):
        (length,) = struct.unpack("<I", reader.take(4, "the vocabulary"))
        if length > 1024:
            raise WeightsError(f"{source}: a token of {length} bytes: the file is damaged.")
        tokens.append(reader.take(length, "the vocabulary"))
    return dims, ftype, filters.reshape(n_mel, n_fft).copy(), tokens


def read_ggml_vocabulary(path: PathLike) -> tuple[ModelDimensions, tuple[bytes, ...]]:
    """The dimensions and vocabulary of a GGML file, without reading its tensors.

    Args:
        path: a `ggml-*.bin` file.

    Returns:
        `(dims, tokens)`: the token bytes in id order.
    """
    path = Path(path)
    with _open(path) as f:
        dims, _, _, tokens = _read_header(_Reader(f, str(path)))
    return dims, tuple(tokens)


def load_ggml(path: PathLike) -> tuple[ModelDimensions, StateDict, GgmlContents]:
    """Reads a whisper.cpp GGML model file into OpenAI-named NumPy arrays.

    float32 and float16 tensors keep their dtype; quantized ones (q4_0, q4_1,
    q5_0, q5_1, q8_0, q2_K ... q6_K) and bfloat16 come back as float32, with
    the values whisper.cpp computes with.

    Args:
        path: a `ggml-*.bin` file, e.g. `ggml-tiny.en.bin` or
            `ggml-base-q5_1.bin` from the whisper.cpp model repository.

    Returns:
        `(dims, state_dict, contents)`; `contents` holds the vocabulary bytes,
        the mel filterbank and each tensor's stored type.

    Raises:
        WeightsError: if the file is not a GGML Whisper model, is truncated, or
            its tensors do not fit its header.

    Examples:
    ```python
    dims, state_dict, contents = load_ggml("ggml-tiny.en-q5_1.bin")
    contents.kind  # 'q5_1'
    state_dict["decoder.token_embedding.weight"].shape  # (51864, 384)
    ```
    """
    path = Path(path)
    source = str(path)
    with _open(path) as f:
        reader = _Reader(f, source)
        dims, ftype, filters, tokens = _read_header(reader)
        expected = expected_shapes(dims)
        state_dict: StateDict = {}
        types: dict[str, str] = {}
        while (tensor := _read_tensor(reader, expected)) is not None:
            name, array, type_name = tensor
            if name in state_dict:
                raise WeightsError(f"{source}: tensor '{name}' appears twice.")
            state_dict[name] = array
            types[name] = type_name
    validate_state_dict(dims, state_dict, source)
    contents = GgmlContents(
        ftype=ftype,
        tokens=tuple(tokens),
        mel_filters=filters,
        tensor_types=types,
    )
    return dims, ordered_state_dict(dims, state_dict), contents


def save_ggml(
    dims: ModelDimensions,
    state_dict: Mapping[str, np.ndarray],
    path: PathLike,
    tokens: Sequence[bytes],
    mel_filters: np.ndarray,
    dtype: str = "float16",
    overwrite: bool = False,
) -> Path:
    """Writes a whisper.cpp GGML model file, as its `convert-pt-to-ggml.py` does.

    With `dtype="float16"` the matrices are float16 and the vectors, the conv
    biases and the positional embeddings float32 (whisper.cpp's layout); with
    `"float32"` everything is float32, as whisper.cpp's converter writes with
    `use-f32` (whisper.cpp 1.8.5 itself cannot run such files on CPUs: its
    convolution takes float16 kernels only and aborts). whisper.cpp's `quantize` tool turns the
    file into q5_1, q8_0 and the other integer types. The file is written to a
    temporary name beside `path` and renamed into place.

    Args:
        dims: the model's `ModelDimensions`.
        state_dict: OpenAI-named arrays.
        path: the file to write, e.g. `ggml-tiny.en.bin`.
        tokens: the BPE vocabulary's token bytes in id order (no specials).
        mel_filters: the `(n_mels, 201)` filterbank the model was trained with.
        dtype: `"float16"` or `"float32"`.
        overwrite: replace an existing file.

    Returns:
        The written `Path`.
    """
    if dtype not in ("float16", "float32"):
        raise ValueError(f"GGML files are written as float16 or float32, not {dtype!r}.")
    path = Path(path)
    if path.exists() and not overwrite:
        raise WeightsError(
            f"Refusing to overwrite {path}; pass overwrite=True or choose another path."
        )
    validate_state_dict(dims, state_dict, "the state dict to save")
    filters = np.asarray(mel_filters, dtype=_F32)
    if filters.ndim != 2 or filters.shape[0] != dims.n_mels:
        raise ValueError(
            f"mel_filters must be ({dims.n_mels}, n_fft // 2 + 1), got {filters.shape}."
        )
    with atomic_file(path) as temporary, open(temporary, "wb") as f:
        f.write(struct.pack("<I", GGML_MAGIC))
        header = [getattr(dims, field) for field in _HEADER_FIELDS]
        f.write(struct.pack("<11i", *header, 1 if dtype == "float16" else 0))
        f.write(struct.pack("<2i", *filters.shape))
        f.write(filters.tobytes())
        f.write(struct.pack("<i", len(tokens)))
        for token in tokens:
            f.write(struct.pack("<I", len(token)))
            f.write(bytes(token))
        for name, value in ordered_state_dict(dims, state_dict).items():
            array = np.asarray(value, dtype=np.float32)
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                array = array.reshape(-1, 1)
            half = dtype == "float16" and array.ndim >= 2 and name not in _FLOAT32_TENSORS
            array = np.ascontiguousarray(array.astype(_F16 if half else _F32))
            encoded = name.encode("utf-8")
            f.write(struct.pack("<3i", array.ndim, len(encoded), 1 if half else 0))
            f.write(struct.pack(f"<{array.ndim}i", *reversed(array.shape)))
            f.write(encoded)
            f.write(array.tobytes())
    return path
