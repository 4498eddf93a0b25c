"""TFRecord files read without TensorFlow: framing, CRCs, and GZIP/ZLIB streams, in bounded memory.

Each record is ``uint64 length | masked CRC32C of it | data | masked CRC32C of data`` (tensorflow
``core/lib/io/record_writer.cc``). Both CRCs are checked, and a file that ends inside a record is an error, as in
TensorFlow: dropping a cut-off last record would hide a broken copy. A length is checked against what the file can
hold and against :data:`MAX_RECORD_BYTES` before anything is read for it, and compressed files are inflated a
bounded step at a time, so a damaged or hostile file costs little memory. In compressed files, byte offsets
count bytes of the decompressed stream.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import os
import struct
import zlib
from collections.abc import Callable, Collection, Generator, Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from zoo._fs import human_size, open_regular
from zoo.errors import DataError, UsageError, first_line
from zoo.tf.example import FeatureValue, parse_example
from zoo.tf.proto import ProtoError
from zoo.tf.table import crc32c, mask_crc

log = logging.getLogger("zoo.tf")

Compression = Literal["auto", "none", "gzip", "zlib"]

#: The largest record zoo reads. An upstream pretraining example is a few KiB; a length field beyond this is
#: refused before any memory is taken for it (what a record costs is at most about twice this).
MAX_RECORD_BYTES = 16 << 20

_HEADER = 12  # uint64 length + uint32 masked CRC
_FOOTER = 4
_PIECE = 1 << 20  # data is read in pieces of this size, so memory follows the bytes that are really there
_INFLATE_INPUT = 64 << 10  # compressed bytes read at a time
_DEFLATE_RATIO = 1032  # deflate's largest expansion (zlib's FAQ): n compressed bytes inflate to at most 1032·n
_GZIP_MAGIC = b"\x1f\x8b"
_DAMAGED_HINT = ("the file is damaged (a bad disk, or a copy or download that went wrong); copy it again "
                 "or regenerate it with create_pretraining_data.py")
_TRUNCATED_HINT = ("the file was cut short, usually by an interrupted create_pretraining_data.py run or "
                   "copy; regenerate or copy it again")
_TOO_LARGE_HINT = ("the length field is damaged, or the file holds something other than pretraining examples "
                   "(create_pretraining_data.py writes records of a few KiB)")
#: What zoo reads, for messages about files that are something else.
UPSTREAM_HINT = ("zoo reads TFRecord files written by create_pretraining_data.py of google-research/bert, "
                 "google-research/albert or brightmart/albert_zh")


@dataclasses.dataclass(frozen=True)
class Record:
    """One TFRecord record: its 0-based index, the byte offset of its header, and its payload."""

    index: int
    offset: int
    data: bytes


def record_error(path: str | os.PathLike[str], record: Record, problem: str, hint: str | None) -> DataError:
    """A DataError about ``record`` of the file at ``path``, located by index and byte offset."""
    return DataError(f"{Path(path)}: record {record.index} (byte {record.offset}): {problem}", hint=hint)


# ------------------------------------------------------------------------------------------- the streams
class _ZlibReader(io.RawIOBase):
    """A raw stream inflating a ZLIB-wrapped file; each call returns at most what its buffer holds."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._z = zlib.decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not len(buffer):
            return 0
        while True:
            if self._z.eof:
                if self._z.unused_data or self._raw.read(1):
                    raise zlib.error("data after the end of the zlib stream")
                return 0
            data = self._z.unconsumed_tail or self._raw.read(_INFLATE_INPUT)
            if not data:
                raise EOFError("compressed file ended before the end of the zlib stream")
            out = self._z.decompress(data, len(buffer))  # never more than the buffer: memory stays bounded
            if out:
                buffer[:len(out)] = out
                return len(out)


def looks_like_tfrecord(head: bytes) -> bool:
    """Whether bytes read from the start of a file begin an uncompressed TFRecord: a uint64 length followed by
    the masked CRC32C of those 8 bytes (a text file does that by chance about once in 4 billion)."""
    return _length_crc_ok(head)


def _length_crc_ok(header: bytes) -> bool:
    return len(header) >= _HEADER and mask_crc(crc32c(header[:8])) == struct.unpack_from("<I", header, 8)[0]


def _zlib_header_ok(head: bytes) -> bool:
    """RFC 1950: deflate method 8, window ≤ 32 KiB, and (CMF·256 + FLG) divisible by 31."""
    return len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


def _detect(raw: BinaryIO) -> Literal["none", "gzip", "zlib"]:
    head = raw.read(_HEADER)
    raw.seek(0)
    if head[:2] == _GZIP_MAGIC:
        return "gzip"
    if not _length_crc_ok(head) and _zlib_header_ok(head):
        return "zlib"
    return "none"


def _open(path: Path, compression: Compression) -> tuple[BinaryIO, BinaryIO, str]:
    """``(raw file, stream to read records from, compression used)``; the caller closes the raw file."""
    if compression not in ("auto", "none", "gzip", "zlib"):
        raise UsageError(f"unknown TFRecord compression {compression!r}",
                         hint="use 'auto', 'none', 'gzip' or 'zlib'")
    try:
        raw = open_regular(path, "TFRecord", buffering=1 << 20)
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or first_line(exc)}") from None
    try:
        kind = _detect(raw) if compression == "auto" else compression
    except OSError as exc:
        raw.close()
        raise DataError(f"{path}: cannot read: {exc.strerror or first_line(exc)}") from None
    if kind == "gzip":
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    elif kind == "zlib":
        stream = io.BufferedReader(_ZlibReader(raw), 1 << 20)
    else:
        stream = raw
    if kind != "none":
        log.debug("%s: reading %s-compressed TFRecords", path, kind)
    return raw, stream, kind


def _read(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at the end of the stream. Read in pieces: a stream shorter than ``n`` costs
    only what it holds."""
    if n <= _PIECE:
        return stream.read(n)
    pieces: list[bytes] = []
    while n > 0:
        piece = stream.read(min(n, _PIECE))
        if not piece:
            break
        pieces.append(piece)
        n -= len(piece)
    return b"".join(pieces)


# ------------------------------------------------------------------------------------------- the records
def _check_length(length: int, offset: int, size: int, kind: str, fail: Callable[[str, str], DataError]) -> None:
    """Refuse a record of ``length`` data bytes at ``offset`` of a ``size``-byte file before reading it: when the
    file cannot hold it (a compressed one inflates to at most :data:`_DEFLATE_RATIO` times its size), or when it
    is larger than :data:`MAX_RECORD_BYTES`."""
    after = offset + _HEADER
    if kind == "none" and after + length + _FOOTER > size:
        raise fail(f"file ends inside the record: it claims {length} data bytes, the file has {size - after} "
                   "after the header", _TRUNCATED_HINT)
    if kind != "none" and after + length + _FOOTER > size * _DEFLATE_RATIO:
        raise fail(f"file ends inside the record: it claims {length} data bytes, more than a {size}-byte {kind} "
                   "file can hold", _TRUNCATED_HINT)
    if length > MAX_RECORD_BYTES:
        raise fail(f"a record of {length} bytes is larger than the largest record zoo reads "
                   f"({human_size(MAX_RECORD_BYTES)})", _TOO_LARGE_HINT)


def iter_records(path: str | os.PathLike[str], *,
                 compression: Compression = "auto") -> Generator[Record, None, None]:
    """Stream the records of a TFRecord file (plain, GZIP or ZLIB; ``auto`` recognises them), checking both
    CRCs of each.

    Raises :class:`~zoo.errors.DataError` (naming the file, the record index and its byte offset) for a bad
    length or data CRC, a length the file cannot hold or larger than :data:`MAX_RECORD_BYTES`, and a file that
    ends inside a record, after yielding every record before it. A path that is not a regular file (a directory,
    a FIFO) is a :class:`~zoo.errors.NotFoundError`.
    """
    path = Path(path)
    raw, stream, kind = _open(path, compression)
    where = "byte" if kind == "none" else "decompressed byte"
    size = os.fstat(raw.fileno()).st_size
    index = offset = 0

    def fail(problem: str, hint: str) -> DataError:
        return DataError(f"{path}: record {index} ({where} {offset}): {problem}", hint=hint)

    try:
        while header := stream.read(_HEADER):
            if len(header) < _HEADER:
                raise fail(f"file ends inside the record header ({len(header)} of {_HEADER} bytes)",
                           _TRUNCATED_HINT)
            (length,) = struct.unpack_from("<Q", header)
            if not _length_crc_ok(header):
                if index == 0:
                    raise fail("not a TFRecord file (the first record's length CRC does not match)",
                               f"{UPSTREAM_HINT} (uncompressed, GZIP or ZLIB); this file holds something "
                               "else, such as the text corpus itself")
                raise fail("length CRC mismatch", _DAMAGED_HINT)
            _check_length(length, offset, size, kind, fail)
            data = _read(stream, length)
            footer = stream.read(_FOOTER)
            if len(data) < length or len(footer) < _FOOTER:
                raise fail(f"file ends inside the record ({len(data) + len(footer)} of {length + _FOOTER} bytes "
                           "after the header)", _TRUNCATED_HINT)
            stored, actual = struct.unpack("<I", footer)[0], mask_crc(crc32c(data))
            if stored != actual:
                raise fail(f"data CRC mismatch (stored {stored:#010x}, computed {actual:#010x})", _DAMAGED_HINT)
            yield Record(index, offset, data)
            index += 1
            offset += _HEADER + length + _FOOTER
    except EOFError as exc:
        raise fail(f"{kind} stream is cut short: {first_line(exc)}", _TRUNCATED_HINT) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise fail(f"{kind} stream is damaged: {first_line(exc)}", _DAMAGED_HINT) from None
    except OSError as exc:
        raise fail(f"read failed: {exc.strerror or first_line(exc)}", "check the disk or the share") from None
    finally:
        if stream is not raw:
            stream.close()
        raw.close()


def count_records(path: str | os.PathLike[str], *, compression: Compression = "auto") -> int:
    """How many records the file holds, verifying every CRC on the way (one streaming pass)."""
    return sum(1 for _ in iter_records(path, compression=compression))


def read_examples(path: str | os.PathLike[str], *, features: Collection[str] | None = None,
                  compression: Compression = "auto") -> Iterator[dict[str, FeatureValue]]:
    """Every record of a TFRecord file decoded with :func:`zoo.tf.example.parse_example`; garbled ones raise
    DataError."""
    for record in iter_records(path, compression=compression):
        try:
            yield parse_example(record.data, features)
        except ProtoError as exc:
            raise record_error(path, record, f"not a valid tf.train.Example: {exc}", UPSTREAM_HINT) from None


__all__ = ["MAX_RECORD_BYTES", "UPSTREAM_HINT", "Compression", "Record", "count_records", "iter_records",
           "looks_like_tfrecord", "read_examples", "record_error"]
