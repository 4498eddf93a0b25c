"""numpy helpers for moving tensors between TF checkpoints and safetensors without torch.

numpy has no bfloat16: its values travel as their ``uint16`` bit patterns (:data:`STORAGE`), and :func:`cast`
converts to and from it as torch does (widening is exact; narrowing rounds to nearest even; NaN becomes the
canonical quiet NaN ``0x7FC0``). float64 is narrowed to float16/bfloat16 through float32, like torch's casts.

:func:`transposed_bands` transposes a 2-D array (a TF kernel, ``[in, out]``) into ``[out, in]`` a band of rows at
a time, each band assembled from small tiles that stay in cache: about as fast as torch's blocked ``copy_`` and
several times faster than a plain ``x.T.copy()``, and the caller streams the bands out without ever holding the
transposed matrix.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

#: The floating-point dtypes, by name: what weights may be stored as.
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
#: dtype name → numpy dtype of its stored bits.
STORAGE: dict[str, Any] = {"float32": np.float32, "float16": np.float16, "float64": np.float64,
                           "bfloat16": np.uint16, "int32": np.int32, "int64": np.int64}
_TILE_ROWS = 64
_TILE_COLS = 256


def view(buffer: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """The bytes of ``buffer`` as an array of ``dtype`` (storage bits) and ``shape``, without copying."""
    count = 1
    for d in shape:
        count *= d
    array: np.ndarray = np.frombuffer(buffer, dtype=STORAGE[dtype], count=count).reshape(shape)
    return array


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _float32_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as ``c10::BFloat16``; NaN → 0x7FC0."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    bits: np.ndarray = ((u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        bits[nan] = 0x7FC0
    return bits


def cast(x: np.ndarray, src: str, dst: str) -> np.ndarray:
    """``x`` (storage bits of ``src``) converted to ``dst`` (its storage bits); floating dtypes only."""
    if src == dst:
        return x
    values = _bfloat16_to_float32(x) if src == "bfloat16" else x
    with np.errstate(over="ignore"):  # out of range becomes ±inf, as in torch
        if dst == "bfloat16":
            return _float32_to_bfloat16(values.astype(np.float32, copy=False))
        if dst == "float16" and values.dtype == np.float64:
            values = values.astype(np.float32)  # torch narrows double → float → half
        return values.astype(STORAGE[dst])


def transposed_bands(x: np.ndarray, buffers: Iterator[np.ndarray] | None = None,
                     band_bytes: int = 8 << 20) -> Iterator[np.ndarray]:
    """``x.T`` (``x`` 2-D) as consecutive bands of rows, each C-contiguous and about ``band_bytes`` large.

    ``buffers`` yields the 1-D arrays of ``x.dtype`` (each at least ``band_bytes``) the bands are written into —
    the caller recycles them once a band is consumed; by default each band gets a fresh array."""
    rows, cols = x.shape
    band = max(1, band_bytes // max(1, rows * x.itemsize))
    if band < cols and band > _TILE_COLS:
        band -= band % _TILE_COLS
    for r0 in range(0, cols, band):
        r1 = min(cols, r0 + band)
        n = (r1 - r0) * rows
        flat = next(buffers) if buffers is not None else np.empty(n, dtype=x.dtype)
        out = flat[:n].reshape(r1 - r0, rows)
        for j in range(r0, r1, _TILE_COLS):
            j1 = min(r1, j + _TILE_COLS)
            for i in range(0, rows, _TILE_ROWS):
                out[j - r0:j1 - r0, i:i + _TILE_ROWS] = x[i:i + _TILE_ROWS, j:j1].T
        yield out


def transposed(x: np.ndarray) -> np.ndarray:
    """``x.T`` as a new C-contiguous array (tiled; see :func:`transposed_bands`)."""
    out = np.empty((x.shape[1], x.shape[0]), dtype=x.dtype)
    pos = 0
    for band in transposed_bands(x, band_bytes=max(1, x.nbytes)):
        out[pos:pos + band.shape[0]] = band
        pos += band.shape[0]
    return out


__all__ = ["FLOAT_DTYPES", "STORAGE", "cast", "transposed", "transposed_bands", "view"]
