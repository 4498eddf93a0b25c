"""Read a ``.safetensors`` file without torch: tensors as read-only numpy views of a memory mapping.

The format (:mod:`zoo.converters.safetensors_out` writes it): an 8-byte little-endian header length, a JSON
header (``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` plus ``__metadata__``), then the bytes.
``safetensors``' own numpy loader has no bfloat16; here bfloat16 comes back as its ``uint16`` bits
(:data:`zoo.converters.arrays.STORAGE`), so every dtype zoo writes can be streamed without torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np

from zoo.converters.arrays import STORAGE
from zoo.converters.safetensors_out import DTYPE_TAGS
from zoo.errors import CheckpointError
from zoo.tf.bundle import ITEMSIZE, drop_pages

_NAMES = {tag: name for name, tag in DTYPE_TAGS.items()}
_MAX_HEADER = 100 << 20


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset in the file
    end: int


class SafetensorsFile:
    """An open ``.safetensors`` file: :attr:`entries`, :attr:`metadata`, and :meth:`array` per tensor."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = fh.read(8)
            if len(head) < 8:
                raise self._damaged("shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, _MAX_HEADER):
                raise self._damaged(f"header length {length} does not fit the file ({size} bytes)")
            try:
                header = json.loads(fh.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise self._damaged(f"header is not JSON ({exc})") from None
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        if not isinstance(header, dict):
            raise self._damaged("header is not a JSON object")
        self.metadata: dict[str, str] = header.pop("__metadata__", None) or {}
        self.entries: dict[str, Entry] = {}
        start = 8 + length
        for name, info in header.items():
            try:
                dtype = _NAMES[info["dtype"]]
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise self._damaged(f"tensor {name!r} has an unreadable or unsupported entry {info!r}") from None
            if begin < 0 or end - begin != math.prod(shape) * ITEMSIZE[dtype] or start + end > size:
                raise self._damaged(f"tensor {name!r}: bytes {begin}..{end} do not hold {dtype}{list(shape)} "
                                    f"inside the file")
            self.entries[name] = Entry(name, dtype, shape, start + begin, start + end)

    def _damaged(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.path} is not a readable safetensors file: {what}",
                               hint="the file is damaged; convert or export the model again")

    def array(self, name: str) -> np.ndarray:
        """The tensor's stored values (bfloat16 as uint16 bits), a read-only view of the file."""
        entry = self.entries[name]
        if entry.begin == entry.end or self._map is None:
            return np.zeros(entry.shape, dtype=STORAGE[entry.dtype])
        view = np.frombuffer(self._map, dtype=STORAGE[entry.dtype], count=math.prod(entry.shape),
                             offset=entry.begin)
        return view.reshape(entry.shape)

    def release(self, name: str) -> None:
        """Drop the tensor's mapped pages from this process (the page cache keeps them; a later read maps them
        again), so streaming a large file does not accumulate it in resident memory."""
        entry = self.entries[name]
        if self._map is not None:
            drop_pages(self._map, entry.begin, entry.end)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # arrays still view it; the mapping goes when they do
                pass

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Entry", "SafetensorsFile"]
