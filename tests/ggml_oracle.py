"""ggml's own quantizer and dequantizer (the C library whisper.cpp runs on), through ctypes.

`pywhispercpp` ships whisper.cpp and its `libggml-base` as a wheel; the GGML tests use
`ggml_quantize_chunk` to make quantized blocks and each type's `to_float` to read them back,
so what keras-whisper reads is checked against ggml itself, and `quantize_file` rewrites a
float16 GGML file the way whisper.cpp's `quantize` tool does (2-D tensors except the conv
biases and positional embeddings, header `ftype` = quantization version 2 * 1000 + kind).
"""

from __future__ import annotations

import ctypes
import struct
import sysconfig
from pathlib import Path

import numpy as np

# ggml_type -> ggml_ftype of a file "mostly" of that type
FTYPE_OF_TYPE = {2: 2, 3: 3, 8: 7, 6: 8, 7: 9, 10: 10, 11: 11, 12: 12, 13: 13, 14: 14}
TYPE_IDS = {
    "q4_0": 2,
    "q4_1": 3,
    "q5_0": 6,
    "q5_1": 7,
    "q8_0": 8,
    "q2_K": 10,
    "q3_K": 11,
    "q4_K": 12,
    "q5_K": 13,
    "q6_K": 14,
}
_KEPT = (
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
)


class _Traits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def load_library() -> ctypes.CDLL:
    """`libggml-base.so` of the installed pywhispercpp wheel (raises if absent)."""
    import pywhispercpp  # noqa: F401  (the wheel that installs the library)

    path = Path(sysconfig.get_paths()["purelib"]) / "libggml-base.so"
    library = ctypes.CDLL(str(path))
    library.ggml_quantize_chunk.restype = ctypes.c_size_t
    library.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    library.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
    library.ggml_get_type_traits.argtypes = [ctypes.c_int]
    return library


def quantize(library, type_id: int, rows: np.ndarray) -> np.ndarray:
    """ggml's blocks of a `(rows, n_per_row)` float32 matrix, as bytes."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    traits = library.ggml_get_type_traits(type_id).contents
    out = np.zeros(rows.size // traits.blck_size * traits.type_size, np.uint8)
    size = library.ggml_quantize_chunk(
        type_id, rows.ctypes.data, out.ctypes.data, 0, rows.shape[0], rows.shape[1], None
    )
    assert size == out.size
    return out


def dequantize(library, type_id: int, blocks: np.ndarray, count: int) -> np.ndarray:
    """ggml's `to_float` of `count` values stored as `blocks`."""
    blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
    values = np.zeros(count, np.float32)
    traits = library.ggml_get_type_traits(type_id).contents
    _TO_FLOAT(traits.to_float)(blocks.ctypes.data, values.ctypes.data, count)
    return values


def quantize_file(library, source: Path, target: Path, type_id: int) -> None:
    """Rewrite a float16 GGML file with quantized matrices, as whisper.cpp's `quantize`."""
    with open(source, "rb") as f, open(target, "wb") as out:
        out.write(f.read(4))
        header = list(struct.unpack("<11i", f.read(44)))
        header[-1] = 2 * 1000 + FTYPE_OF_TYPE[type_id]
        out.write(struct.pack("<11i", *header))
        n_mel, n_fft = struct.unpack("<2i", f.read(8))
        out.write(struct.pack("<2i", n_mel, n_fft) + f.read(4 * n_mel * n_fft))
        (count,) = struct.unpack("<i", f.read(4))
        out.write(struct.pack("<i", count))
        for _ in range(count):
            (length,) = struct.unpack("<I", f.read(4))
            out.write(struct.pack("<I", length) + f.read(length))
        while head := f.read(12):
            n_dims, length, stored = struct.unpack("<3i", head)
            ne = struct.unpack(f"<{n_dims}i", f.read(4 * n_dims))
            name = f.read(length)
            dtype = "<f4" if stored == 0 else "<f2"
            data = np.frombuffer(f.read(int(np.prod(ne)) * np.dtype(dtype).itemsize), dtype)
            quantized = n_dims == 2 and name.decode() not in _KEPT
            out.write(struct.pack("<3i", n_dims, length, type_id if quantized else stored))
            out.write(struct.pack(f"<{n_dims}i", *ne) + name)
            if quantized:
                rows = data.astype(np.float32).reshape(ne[1], ne[0])
                out.write(quantize(library, type_id, rows).tobytes())
            else:
                out.write(data.tobytes())
