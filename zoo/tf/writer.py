"""Write TensorFlow V2 checkpoints (TensorBundle) without TensorFlow.

zoo itself only reads checkpoints; this writer exists so tests can build damaged or unusual checkpoints and
benchmarks can synthesize large ones. It follows TensorFlow's ``BundleWriter`` + ``TableBuilder`` closely
(uncompressed blocks, restart interval 16, shortest-successor index key), so for a single-block index it
produces the same bytes TensorFlow does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

import google_crc32c

from zoo.tf.table import FOOTER_SIZE, MAGIC, crc32c, mask_crc

_DTYPE_CODES = {"float32": 1, "float64": 2, "int32": 3, "int64": 9, "bfloat16": 14, "float16": 19}
_RESTART_INTERVAL = 16
_BLOCK_SIZE = 262144


class Array(Protocol):
    """What the writer needs from a value: numpy arrays and torch tensors (via ``.numpy()``) fit."""

    shape: tuple[int, ...]

    def tobytes(self) -> bytes: ...


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _len_field(number: int, payload: bytes) -> bytes:
    return _field(number, 2, _varint(len(payload)) + payload)


def header_proto(num_shards: int = 1, endianness: int = 0) -> bytes:
    out = _field(1, 0, _varint(num_shards))
    if endianness:
        out += _field(2, 0, _varint(endianness))
    return out + _len_field(3, _field(1, 0, _varint(1)))  # version { producer: 1 }


def entry_proto(dtype: str, shape: Iterable[int], shard: int, offset: int, size: int, masked_crc: int) -> bytes:
    dims = b"".join(_len_field(2, _field(1, 0, _varint(d)) if d else b"") for d in shape)
    out = _field(1, 0, _varint(_DTYPE_CODES[dtype])) + _len_field(2, dims)
    for number, value in ((3, shard), (4, offset), (5, size)):
        if value:
            out += _field(number, 0, _varint(value))
    return out + _field(6, 5, struct.pack("<I", masked_crc))


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()
    restarts = []
    previous = b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % _RESTART_INTERVAL == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    if not restarts:
        restarts.append(0)
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _successor(key: bytes) -> bytes:
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _separator(start: bytes, limit: bytes) -> bytes:
    """LevelDB's ``FindShortestSeparator`` (bytewise comparator)."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)):
        byte = start[n]
        if byte < 0xFF and byte + 1 < limit[n]:
            return start[:n] + bytes([byte + 1])
    return start


def _with_trailer(contents: bytes) -> bytes:
    crc = google_crc32c.extend(google_crc32c.value(contents), b"\x00")
    return contents + b"\x00" + struct.pack("<I", mask_crc(crc))


def table_bytes(entries: list[tuple[bytes, bytes]]) -> bytes:
    """An SSTable holding ``entries`` (sorted by key)."""
    out = bytearray()
    index: list[tuple[bytes, bytes]] = []
    blocks: list[list[tuple[bytes, bytes]]] = [[]]
    size = 0
    for key, value in entries:
        blocks[-1].append((key, value))
        size += len(key) + len(value) + 8
        if size >= _BLOCK_SIZE:
            blocks.append([])
            size = 0
    blocks = [b for b in blocks if b] or [[]]
    handles = []
    for block in blocks:
        contents = _block(block)
        handles.append(_varint(len(out)) + _varint(len(contents)))
        out += _with_trailer(contents)
    for i, handle in enumerate(handles):
        last = blocks[i][-1][0] if blocks[i] else b""
        key = _separator(last, blocks[i + 1][0][0]) if i + 1 < len(blocks) else _successor(last)
        index.append((key, handle))
    meta = _block([])
    meta_handle = _varint(len(out)) + _varint(len(meta))
    out += _with_trailer(meta)
    index_contents = _block(index)
    index_handle = _varint(len(out)) + _varint(len(index_contents))
    out += _with_trailer(index_contents)
    handles_bytes = meta_handle + index_handle
    footer = handles_bytes + b"\x00" * (FOOTER_SIZE - 8 - len(handles_bytes)) + struct.pack("<Q", MAGIC)
    return bytes(out + footer)


def dtype_of(array: object) -> str:
    name = str(getattr(array, "dtype", ""))
    return name.removeprefix("torch.")


def write_checkpoint(prefix: str | Path, variables: Mapping[str, Array], *, num_shards: int = 1) -> None:
    """Write ``PREFIX.index`` and ``PREFIX.data-*`` holding ``variables`` (numpy arrays; float32, float16,
    float64, int32, int64; torch tensors of those dtypes and bfloat16 also work). Variables are spread
    round-robin over ``num_shards`` data files in name order."""
    prefix = Path(prefix)
    names = sorted(variables)
    files = [open(prefix.with_name(f"{prefix.name}.data-{i:05d}-of-{num_shards:05d}"), "wb")
             for i in range(num_shards)]
    entries = [(b"", header_proto(num_shards))]
    try:
        for i, name in enumerate(names):
            value = variables[name]
            raw = _raw_bytes(value)
            shard = i % num_shards
            offset = files[shard].tell()
            files[shard].write(raw)
            entries.append((name.encode("utf-8"),
                            entry_proto(dtype_of(value), value.shape, shard, offset, len(raw), mask_crc(crc32c(raw)))))
    finally:
        for fh in files:
            fh.close()
    prefix.with_name(prefix.name + ".index").write_bytes(table_bytes(entries))


def _raw_bytes(value: Array) -> bytes | memoryview:
    if dtype_of(value) == "bfloat16":  # torch tensor: no numpy equivalent
        import torch

        return memoryview(value.contiguous().reshape(-1).view(torch.int16).numpy()).cast("B")  # type: ignore[attr-defined]
    if hasattr(value, "numpy") and not hasattr(value, "tobytes"):
        value = value.numpy()  # type: ignore[attr-defined]
    try:
        return memoryview(value).cast("B")  # type: ignore[arg-type]
    except TypeError:
        return value.tobytes()
