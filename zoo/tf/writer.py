"""Write TensorFlow V2 checkpoints (TensorBundle) without TensorFlow — byte for byte what TensorFlow writes.

``zoo export --format tf`` writes through :class:`BundleWriter`; tests and benchmarks use :func:`write_checkpoint`.
The format is the reader's (:mod:`zoo.tf.bundle`) in reverse:

* ``PREFIX.data-00000-of-00001``: every variable's raw little-endian bytes, back to back, in the order they are
  added (TensorFlow's ``SaveV2``, which ``tf.compat.v1.train.Saver`` runs, adds them sorted by name — so does
  :func:`write_checkpoint`, and so does zoo's exporter). :meth:`BundleWriter.add` streams each variable from an
  iterable of buffers: nothing is held after it is written, so a model of any size needs only the memory of its
  largest chunk; the data file is whatever writable the caller passes (zoo's exporter passes one that sha256-hashes
  what it writes, for the receipt).
* ``PREFIX.index``: an SSTable mapping ``""`` to a ``BundleHeaderProto`` and each variable name (sorted
  bytewise) to a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC32C of the bytes).

The SSTable follows TensorFlow's ``BundleWriter::Finish`` and its copy of LevelDB's ``TableBuilder``
(``tensorflow/core/lib/io/table_builder.cc``, ``block_builder.cc``): uncompressed blocks of 256 KiB (a block is cut
once its size estimate reaches that), restart interval 16 in data blocks and 1 in the index block, index keys
shortened with ``FindShortestSeparator`` / ``FindShortSuccessor``, an empty metaindex block, the 48-byte footer.
Protobufs are serialized as the C++ library does (fields in number order, proto3 zero values left out).
tests/test_tf_export.py compares the output with TensorFlow's own files byte for byte, including indexes that
span several blocks (tests/fixtures/tf_export/, made by tests/fixtures/make_tf_export_fixtures.py).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import google_crc32c

from zoo.tf.bundle import DTYPES, ITEMSIZE
from zoo.tf.table import FOOTER_SIZE, MAGIC, mask_crc

#: TensorFlow ``DataType`` codes of the dtypes zoo writes (those it reads); their byte sizes are ``ITEMSIZE``.
DTYPE_CODES: dict[str, int] = {name: code for code, (name, _) in DTYPES.items()}
#: ``table::Options`` defaults that TensorBundle keeps (only compression is switched off).
BLOCK_SIZE = 262144
RESTART_INTERVAL = 16
#: Bytes per chunk when a whole array is added at once.
CHUNK = 16 << 20


class Writable(Protocol):
    def write(self, data: bytes, /) -> Any: ...


class Array(Protocol):
    """What :func:`write_checkpoint` needs from a value: numpy arrays fit (torch tensors too, via ``.numpy()``)."""

    shape: Any


# ------------------------------------------------------------------------------------------- protobuf
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
    """``BundleHeaderProto``: shard count, byte order (0 little, left out), ``version { producer: 1 }``."""
    out = _field(1, 0, _varint(num_shards))
    if endianness:
        out += _field(2, 0, _varint(endianness))
    return out + _len_field(3, _field(1, 0, _varint(1)))


def entry_proto(dtype: str, shape: Iterable[int], shard: int, offset: int, size: int, masked_crc: int) -> bytes:
    """``BundleEntryProto`` as the C++ library serializes it (zero-valued scalar fields are left out; the shape
    message is always present, a zero dimension is an empty ``Dim``)."""
    dims = b"".join(_len_field(2, _field(1, 0, _varint(d)) if d else b"") for d in shape)
    out = _field(1, 0, _varint(DTYPE_CODES[dtype])) + _len_field(2, dims)
    for number, value in ((3, shard), (4, offset), (5, size)):
        if value:
            out += _field(number, 0, _varint(value))
    if masked_crc:
        out += _field(6, 5, struct.pack("<I", masked_crc))
    return out


# ------------------------------------------------------------------------------------------- SSTable
class _BlockBuilder:
    """LevelDB's ``BlockBuilder``: prefix-compressed entries, a restart point every ``interval`` entries."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.reset()

    def reset(self) -> None:
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.interval:
            limit = min(len(self.last_key), len(key))
            while shared < limit and self.last_key[shared] == key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def empty(self) -> bool:
        return not self.buffer

    def finish(self) -> bytes:
        return bytes(self.buffer) + b"".join(struct.pack("<I", r) for r in self.restarts) + \
            struct.pack("<I", len(self.restarts))


def _separator(start: bytes, limit: bytes) -> bytes:
    """``FindShortestSeparator`` (bytewise comparator): a short key in ``[start, limit)``."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)):
        byte = start[n]
        if byte < 0xFF and byte + 1 < limit[n]:
            return start[:n] + bytes([byte + 1])
    return start


def _successor(key: bytes) -> bytes:
    """``FindShortSuccessor``: a short key ``>= key``."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class TableBuilder:
    """LevelDB's ``TableBuilder`` as TensorFlow ships it, without compression; keys must increase."""

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        self.block_size = block_size
        self.out = bytearray()
        self.data = _BlockBuilder(RESTART_INTERVAL)
        self.index = _BlockBuilder(1)
        self.last_key = b""
        self.count = 0
        self.pending: bytes | None = None  # handle of the last data block, awaiting its index entry

    def add(self, key: bytes, value: bytes) -> None:
        if self.count and key <= self.last_key:
            raise ValueError(f"table keys must increase: {key!r} after {self.last_key!r}")
        if self.pending is not None:
            self.index.add(_separator(self.last_key, key), self.pending)
            self.pending = None
        self.last_key = key
        self.count += 1
        self.data.add(key, value)
        if self.data.size_estimate() >= self.block_size:
            self._flush()

    def _flush(self) -> None:
        if not self.data.empty():
            self.pending = self._write_block(self.data)

    def _write_block(self, block: _BlockBuilder) -> bytes:
        contents = block.finish()
        handle = _varint(len(self.out)) + _varint(len(contents))
        crc = google_crc32c.extend(google_crc32c.value(contents), b"\x00")  # type byte 0: no compression
        self.out += contents + b"\x00" + struct.pack("<I", mask_crc(crc))
        block.reset()
        return handle

    def finish(self) -> bytes:
        self._flush()
        meta_handle = self._write_block(_BlockBuilder(RESTART_INTERVAL))
        if self.pending is not None:
            self.index.add(_successor(self.last_key), self.pending)
            self.pending = None
        index_handle = self._write_block(self.index)
        handles = meta_handle + index_handle
        return bytes(self.out) + handles + b"\x00" * (FOOTER_SIZE - 8 - len(handles)) + struct.pack("<Q", MAGIC)


def table_bytes(entries: Iterable[tuple[bytes, bytes]]) -> bytes:
    """An SSTable holding ``entries`` (sorted by key)."""
    builder = TableBuilder()
    for key, value in entries:
        builder.add(key, value)
    return builder.finish()


# -------------------------------------------------------------------------------------------- bundle
class BundleWriter:
    """Streams variables into a checkpoint's data shard(s) and builds its index.

    ``shards`` are writable binary files, one per data shard (``PREFIX.data-NNNNN-of-NNNNN``), positioned at
    their start. :meth:`add` writes one variable; :meth:`index` returns the ``PREFIX.index`` bytes once every
    variable is added. The writer keeps only the index entries (tens of bytes per variable)."""

    def __init__(self, shards: Sequence[Writable]) -> None:
        if not shards:
            raise ValueError("a checkpoint has at least one data shard")
        self.shards = list(shards)
        self.offsets = [0] * len(self.shards)
        self.entries: dict[bytes, bytes] = {}

    def add(self, name: str, dtype: str, shape: Sequence[int], chunks: Iterable[bytes | bytearray | memoryview],
            *, shard: int = 0) -> int:
        """Write variable ``name`` (``dtype``, ``shape``) whose raw little-endian bytes are the concatenation of
        ``chunks``; returns its size in bytes. The bytes must be exactly ``prod(shape) * itemsize``."""
        if dtype not in DTYPE_CODES:
            raise ValueError(f"{name}: dtype {dtype!r} cannot be written (expected one of {', '.join(DTYPE_CODES)})")
        key = name.encode("utf-8")
        if not key or key in self.entries:
            raise ValueError(f"variable name {name!r} is empty or already written")
        shape = tuple(int(d) for d in shape)
        expected = math.prod(shape) * ITEMSIZE[dtype]
        out = self.shards[shard]
        crc = size = 0
        for chunk in chunks:
            data = chunk if isinstance(chunk, bytes) else bytes(chunk)  # google_crc32c reads bytes only
            if not data:
                continue
            crc = google_crc32c.extend(crc, data)
            out.write(data)
            size += len(data)
        offset = self.offsets[shard]
        self.offsets[shard] += size  # even when refused below: the bytes are in the file (a gap no entry names)
        if size != expected:
            raise ValueError(f"{name}: got {size} bytes for {dtype}{list(shape)}, which takes {expected}")
        self.entries[key] = entry_proto(dtype, shape, shard, offset, size, mask_crc(crc))
        return size

    def add_array(self, name: str, array: Any, *, dtype: str | None = None, shard: int = 0) -> int:
        """Write a numpy array (C order; ``dtype`` names it when numpy cannot, e.g. bfloat16 stored as uint16)."""
        import numpy as np

        array = np.asarray(array)
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar into shape [1])
            array = array.copy(order="C")
        raw = memoryview(array.reshape(-1).view(np.uint8))
        chunks = (raw[i:i + CHUNK] for i in range(0, len(raw), CHUNK))
        return self.add(name, dtype or str(array.dtype), array.shape, chunks, shard=shard)

    def index(self) -> bytes:
        """The ``PREFIX.index`` file: the header, then every entry in bytewise name order."""
        entries = [(b"", header_proto(len(self.shards)))]
        entries += sorted(self.entries.items())
        return table_bytes(entries)


def data_file_name(prefix_name: str, shard: int = 0, num_shards: int = 1) -> str:
    return f"{prefix_name}.data-{shard:05d}-of-{num_shards:05d}"


def checkpoint_state(prefix_name: str) -> str:
    """The ``checkpoint`` file TensorFlow keeps next to checkpoints (``tf.train.latest_checkpoint`` reads it)."""
    return f'model_checkpoint_path: "{prefix_name}"\nall_model_checkpoint_paths: "{prefix_name}"\n'


def write_checkpoint(prefix: str | Path, variables: Mapping[str, Array], *, num_shards: int = 1) -> None:
    """Write ``PREFIX.index`` and ``PREFIX.data-*`` holding ``variables`` like TensorFlow's ``SaveV2``: data in
    name order. Values are numpy arrays (float32, float16, float64, int32, int64) or torch tensors of those dtypes
    and bfloat16; with several shards, variables go round-robin over them in name order."""
    prefix = Path(prefix)
    files = [open(prefix.with_name(data_file_name(prefix.name, i, num_shards)), "wb")  # noqa: SIM115
             for i in range(num_shards)]
    try:
        writer = BundleWriter(files)
        for i, name in enumerate(sorted(variables)):
            dtype, array = _numpy(variables[name])
            writer.add_array(name, array, dtype=dtype, shard=i % num_shards)
    finally:
        for fh in files:
            fh.close()
    prefix.with_name(prefix.name + ".index").write_bytes(writer.index())


def _numpy(value: Any) -> tuple[str, Any]:
    """(dtype name, numpy array of the raw values) for a numpy array or a torch tensor."""
    dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
    if dtype == "bfloat16":  # torch tensor: numpy has no bfloat16, its bits travel as uint16
        import torch

        return dtype, value.detach().cpu().contiguous().view(torch.int16).numpy().view("uint16")
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return dtype, value


__all__ = ["DTYPE_CODES", "BundleWriter", "TableBuilder", "checkpoint_state", "data_file_name", "entry_proto",
           "header_proto", "table_bytes", "write_checkpoint"]
