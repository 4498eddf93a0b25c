"""Reader for the LevelDB table (SSTable) format TensorFlow uses for a checkpoint's ``.index`` file.

Layout (tensorflow ``core/lib/io/format.{h,cc}``, ``block.cc``)::

    data block 0 | trailer | ... | metaindex block | trailer | index block | trailer | footer (48 bytes)

* footer: metaindex handle, index handle (each two varint64s: offset, size), zero padding to 40 bytes,
  then the magic number as fixed64.
* trailer: 1 byte compression type (0 = none) + masked CRC32C of the block contents and that byte.
* block: entries ``varint shared | varint non_shared | varint value_len | key delta | value`` where the key
  is the previous key's first ``shared`` bytes plus the delta; then fixed32 restart offsets and their count.

The index block maps a separator key to the handle of each data block. The whole file is small (one entry
per variable), so it is read at once and every block's CRC is checked.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

from zoo.errors import CheckpointError, UnsupportedError
from zoo.tf.proto import ProtoError, read_varint

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5
_MASK_DELTA = 0xA282EAD8
_CHUNK = 1 << 20


def mask_crc(crc: int) -> int:
    """LevelDB's CRC masking (stored CRCs are masked so CRCs of CRCs stay well distributed)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def crc32c(data: bytes | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of any buffer, extending ``crc`` (the CRC of the bytes before it; 0 to start); large
    buffers go through in 1 MiB pieces.

    ``google_crc32c`` only accepts ``bytes``, so views (e.g. of an mmap) are copied a piece at a time.
    """
    if isinstance(data, bytes):
        return int(google_crc32c.extend(crc, data))
    view = memoryview(data).cast("B")
    for start in range(0, len(view), _CHUNK):
        crc = google_crc32c.extend(crc, bytes(view[start:start + _CHUNK]))
    return crc


def _handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return offset, size, pos


class Table:
    """An SSTable held in memory. Iterating yields ``(key, value)`` pairs in key order."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: checkpoint index file is missing") from None
        if len(self.data) < FOOTER_SIZE:
            raise CheckpointError(f"{self.path}: {len(self.data)} bytes is too short for a checkpoint index "
                                  f"(the footer alone is {FOOTER_SIZE} bytes); the file is truncated")
        footer = self.data[-FOOTER_SIZE:]
        (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
        if magic != MAGIC:
            raise CheckpointError(f"{self.path}: not a TensorFlow checkpoint index (bad magic number "
                                  f"{magic:#018x}, expected {MAGIC:#018x}); truncated or not an .index file")
        try:
            _, _, pos = _handle(footer, 0)  # metaindex: always empty for TensorFlow (no filter policy)
            self._index = _handle(footer, pos)[:2]
        except ProtoError as exc:
            raise CheckpointError(f"{self.path}: garbled footer ({exc})") from None

    def block(self, offset: int, size: int, what: str) -> bytes:
        """Contents of the block at ``offset`` after checking its trailer."""
        end = offset + size
        if end + TRAILER_SIZE > len(self.data) - FOOTER_SIZE:
            raise CheckpointError(f"{self.path}: {what} at bytes {offset}..{end} lies outside the file "
                                  f"({len(self.data)} bytes); the file is truncated or garbled")
        contents = self.data[offset:end]
        kind = self.data[end]
        (stored,) = struct.unpack_from("<I", self.data, end + 1)
        actual = mask_crc(google_crc32c.extend(google_crc32c.value(contents), bytes([kind])))
        if stored != actual:
            raise CheckpointError(f"{self.path}: CRC32C mismatch in {what} at byte {offset} "
                                  f"(stored {stored:#010x}, computed {actual:#010x}); the file is damaged",
                                  hint="download or copy the checkpoint again")
        if kind == 1:
            raise UnsupportedError(f"{self.path}: {what} is snappy-compressed; zoo reads uncompressed "
                                   "checkpoint indexes only (TensorFlow never compresses them)")
        if kind != 0:
            raise CheckpointError(f"{self.path}: {what} has unknown compression type {kind}")
        return contents

    def _entries(self, block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
        if len(block) < 4:
            raise CheckpointError(f"{self.path}: {what} is too short ({len(block)} bytes)")
        (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
        limit = len(block) - 4 * (num_restarts + 1)
        if limit < 0:
            raise CheckpointError(f"{self.path}: {what} claims {num_restarts} restart points, "
                                  f"more than its {len(block)} bytes can hold")
        key = b""
        pos = 0
        try:
            while pos < limit:
                shared, pos = read_varint(block, pos)
                non_shared, pos = read_varint(block, pos)
                value_len, pos = read_varint(block, pos)
                if shared > len(key) or pos + non_shared + value_len > limit:
                    raise ProtoError("entry runs past the end of the block")
                key = key[:shared] + block[pos:pos + non_shared]
                pos += non_shared
                yield key, block[pos:pos + value_len]
                pos += value_len
        except ProtoError as exc:
            raise CheckpointError(f"{self.path}: garbled {what} at byte {pos} ({exc})") from None

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        index = self.block(*self._index, what="index block")
        for separator, handle in self._entries(index, "index block"):
            try:
                offset, size, _ = _handle(handle, 0)
            except ProtoError as exc:
                raise CheckpointError(f"{self.path}: garbled block handle for key {separator!r} ({exc})") from None
            yield from self._entries(self.block(offset, size, what="data block"), "data block")
