"""Pretraining data written by upstream ``create_pretraining_data.py``, read without TensorFlow.

google-research/bert and google-research/albert (and brightmart/albert_zh, a copy of them) write their
masked-LM examples as TFRecord files of ``tf.train.Example`` protos. zoo reads those files directly so
people can continue pretraining on the data they already have, and so zoo does not need TensorFlow.

TFRecord framing (tensorflow ``core/lib/io/record_writer.cc``), repeated until the end of the file::

    uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data

Both CRCs are checked, and a file that ends inside a record is an error, as in TensorFlow's reader: dropping
a cut-off last record silently would hide a broken copy. Files are streamed record by record (never read
whole); GZIP-compressed files are recognised by their magic bytes and ZLIB-compressed ones (no magic, so
recognised by a valid zlib header where a valid TFRecord header is not) are decompressed on the fly. In
compressed files, byte offsets in messages count bytes of the decompressed stream.

``tf.train.Example`` (tensorflow ``core/example/{example,feature}.proto``) is decoded here from the wire
format: ``Example{features = 1: Features}``, ``Features{feature = 1: map<string, Feature>}``,
``Feature{oneof: bytes_list = 1, float_list = 2, int64_list = 3}``, each list's values in field 1, packed or
not, unknown fields skipped, repeated messages merged as protobuf merges them. Packed integer lists are
decoded with numpy rather than one varint at a time, and :func:`read_pretraining_examples` decodes and checks
the records the upstream writer produces (every list one packed run, every record the same shape) 256 at a
time with whole-batch numpy operations, falling back to record-by-record decoding for anything else; that is
what lets one process feed a GPU (about 25-35k records/s at sequence length 128).

:func:`read_pretraining_examples` turns upstream records into zoo training examples::

    input_ids                                   -> input_ids
    input_mask                                  -> attention_mask
    segment_ids                                 -> token_type_ids
    masked_lm_positions/_ids/_weights           -> labels: -100 except at the masked positions
    next_sentence_labels                        -> seq_relationship_label (0 = in order / real next)

Features other than these (ALBERT writes ``token_boundary``) are ignored, as ``run_pretraining.py`` does.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import os
import struct
import zlib
from collections.abc import Callable, Collection, Generator, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from zoo.config import IGNORE_INDEX
from zoo.errors import DataError, NotFoundError, UsageError, first_line
from zoo.tf.proto import ProtoError, read_varint
from zoo.tf.table import crc32c, mask_crc

log = logging.getLogger("zoo.training")

Compression = Literal["auto", "none", "gzip", "zlib"]
#: A decoded ``Feature``: int64 list, float list, bytes list, or ``None`` for a Feature with no list set.
FeatureValue = np.ndarray | list[bytes] | None

#: Features ``run_pretraining.py`` reads (``input_fn_builder``), with the list type each must have.
PRETRAINING_FEATURES: dict[str, str] = {
    "input_ids": "int64",
    "input_mask": "int64",
    "segment_ids": "int64",
    "masked_lm_positions": "int64",
    "masked_lm_ids": "int64",
    "masked_lm_weights": "float",
    "next_sentence_labels": "int64",
}

_HEADER = 12  # uint64 length + uint32 masked CRC
_FOOTER = 4
_PIECE = 1 << 26  # records larger than this are read in pieces, so a bogus length cannot allocate it all
_GZIP_MAGIC = b"\x1f\x8b"
_DAMAGED_HINT = ("the file is damaged (a bad disk, or a copy or download that went wrong); copy it again "
                 "or regenerate it with create_pretraining_data.py")
_TRUNCATED_HINT = ("the file was cut short, usually by an interrupted create_pretraining_data.py run or "
                   "copy; regenerate or copy it again")
_RECORD_HINT = ("zoo expects records as create_pretraining_data.py of google-research/bert or albert writes "
                "them; this one was written by other code or has been altered")
_UPSTREAM_HINT = ("zoo reads TFRecord files written by create_pretraining_data.py of google-research/bert, "
                  "google-research/albert or brightmart/albert_zh")


@dataclasses.dataclass(frozen=True)
class Record:
    """One TFRecord record: its 0-based index, the byte offset of its header, and its payload."""

    index: int
    offset: int
    data: bytes


# --------------------------------------------------------------------------------------------- framing


class _ZlibReader(io.RawIOBase):
    """A raw stream decompressing a ZLIB-wrapped file, so the record loop reads it like any other file."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._z = zlib.decompressobj()
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            if self._z.eof:
                if self._z.unused_data or self._raw.read(1):
                    raise zlib.error("data after the end of the zlib stream")
                return 0
            chunk = self._raw.read(1 << 20)
            if not chunk:
                raise EOFError("compressed file ended before the end of the zlib stream")
            self._pending = self._z.decompress(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


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
        raw: BinaryIO = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed by the caller
    except FileNotFoundError:
        raise NotFoundError(f"{path}: TFRecord file does not exist") from None
    except IsADirectoryError:
        raise NotFoundError(f"{path}: is a directory, not a TFRecord file",
                            hint="name the .tfrecord files themselves") from None
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
    """Up to ``n`` bytes; fewer only at the end of the stream. Large ``n`` is read in pieces."""
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


def iter_records(path: str | os.PathLike[str], *,
                 compression: Compression = "auto") -> Generator[Record, None, None]:
    """Stream the records of a TFRecord file, checking both CRCs of each.

    Raises :class:`~zoo.errors.DataError` (naming the file, the record index and its byte offset) for a bad
    length or data CRC and for a file that ends inside a record, after yielding every record before it.
    """
    path = Path(path)
    raw, stream, kind = _open(path, compression)
    where = "byte" if kind == "none" else "decompressed byte"
    size = os.fstat(raw.fileno()).st_size if kind == "none" else None
    index = offset = 0

    def fail(problem: str, hint: str) -> DataError:
        return DataError(f"{path}: record {index} ({where} {offset}): {problem}", hint=hint)

    try:
        while True:
            header = stream.read(_HEADER)
            if not header:
                return
            if len(header) < _HEADER:
                raise fail(f"file ends inside the record header ({len(header)} of {_HEADER} bytes)",
                           _TRUNCATED_HINT)
            (length,) = struct.unpack_from("<Q", header)
            if not _length_crc_ok(header):
                if index == 0:
                    raise fail("not a TFRecord file (the first record's length CRC does not match)",
                               f"{_UPSTREAM_HINT} (uncompressed, GZIP or ZLIB); this file holds something "
                               "else, such as the text corpus itself")
                raise fail("length CRC mismatch", _DAMAGED_HINT)
            if size is not None and offset + _HEADER + length + _FOOTER > size:
                raise fail(f"file ends inside the record: it claims {length} data bytes, the file has "
                           f"{size - offset - _HEADER} after the header", _TRUNCATED_HINT)
            data = _read(stream, length)
            footer = stream.read(_FOOTER)
            if len(data) < length or len(footer) < _FOOTER:
                got = len(data) + len(footer)
                raise fail(f"file ends inside the record ({got} of {length + _FOOTER} bytes after the "
                           "header)", _TRUNCATED_HINT)
            stored = struct.unpack("<I", footer)[0]
            actual = mask_crc(crc32c(data))
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


# ------------------------------------------------------------------------------------ tf.train.Example


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A varint with a fast path for the common one-byte case (field keys, short lengths)."""
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    return read_varint(buf, pos)


def _skip(buf: bytes, pos: int, key: int, end: int) -> int:
    """Position after the value of an unknown field, as protobuf parsers skip them."""
    wire = key & 7
    if key >> 3 == 0:
        raise ProtoError("field number 0 is invalid")
    if wire == 0:
        _, pos = read_varint(buf, pos)
    elif wire == 1:
        pos += 8
    elif wire == 2:
        n, pos = _varint(buf, pos)
        pos += n
    elif wire == 5:
        pos += 4
    else:
        raise ProtoError(f"field {key >> 3}: unsupported wire type {wire}")
    if pos > end:
        raise ProtoError(f"field {key >> 3}: value runs past the end of its message")
    return pos


def _length(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read a length prefix at ``pos``; return ``(start, stop)`` of the value, checked against ``end``."""
    n = buf[pos]
    if n < 0x80:
        pos += 1
    elif buf[pos + 1] < 0x80:  # two bytes: lengths up to 16 KiB, i.e. every list of a pretraining record
        n = (n & 0x7F) | buf[pos + 1] << 7
        pos += 2
    else:
        n, pos = read_varint(buf, pos)
    if pos + n > end:
        raise ProtoError(f"{what}: {n}-byte value runs past the end of its message")
    return pos, pos + n


def _packed_varints(chunk: bytes) -> np.ndarray:
    """Decode packed varints as int64 (two's complement, like protobuf's int64) with numpy.

    The value ends at each byte below 0x80; each byte contributes its low 7 bits shifted by 7 × its place
    in the value. Bits past 64 are dropped, as protobuf does.
    """
    if chunk.isascii():  # every byte < 0x80: one byte per value (masks, segment ids, short positions)
        return np.frombuffer(chunk, np.uint8).astype(np.int64)
    raw = np.frombuffer(chunk, np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if not len(ends) or ends[-1] != len(raw) - 1:
        raise ProtoError("a packed int64 list ends in the middle of a value")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    sizes = ends - starts + 1
    if sizes.max() > 10:
        raise ProtoError("varint longer than 10 bytes in a packed int64 list")
    place = np.arange(len(raw)) - np.repeat(starts, sizes)
    bits = (raw & 0x7F).astype(np.uint64) << (place * 7).astype(np.uint64)
    return np.add.reduceat(bits, starts).view(np.int64)


def _int64_list(buf: bytes, pos: int, end: int) -> np.ndarray:
    if pos < end and buf[pos] == 0x0A:  # the usual encoding: one packed run filling the list
        start, stop = _length(buf, pos + 1, end, "int64_list")
        if stop == end:
            return _packed_varints(buf[start:stop])
    parts: list[np.ndarray] = []
    loose: list[int] = []
    while pos < end:
        key, pos = _varint(buf, pos)
        if key == 0x0A:  # field 1, packed
            start, pos = _length(buf, pos, end, "int64_list")
            if loose:
                parts.append(np.array(loose, np.uint64).view(np.int64))
                loose = []
            parts.append(_packed_varints(buf[start:pos]))
        elif key == 0x08:  # field 1, one unpacked value
            value, pos = _varint(buf, pos)
            if pos > end:
                raise ProtoError("int64_list: value runs past the end of its message")
            loose.append(value & 0xFFFFFFFFFFFFFFFF)
        elif key >> 3 == 1:
            raise ProtoError(f"int64_list value has wire type {key & 7}")
        else:
            pos = _skip(buf, pos, key, end)
    if loose:
        parts.append(np.array(loose, np.uint64).view(np.int64))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _float_list(buf: bytes, pos: int, end: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    while pos < end:
        key, pos = _varint(buf, pos)
        if key == 0x0A:  # field 1, packed
            start, pos = _length(buf, pos, end, "float_list")
            if (pos - start) % 4:
                raise ProtoError(f"float_list: packed length {pos - start} is not a multiple of 4")
            parts.append(np.frombuffer(buf, "<f4", (pos - start) // 4, start).astype(np.float32))
        elif key == 0x0D:  # field 1, one unpacked fixed32
            if pos + 4 > end:
                raise ProtoError("float_list: value runs past the end of its message")
            parts.append(np.frombuffer(buf, "<f4", 1, pos).astype(np.float32))
            pos += 4
        elif key >> 3 == 1:
            raise ProtoError(f"float_list value has wire type {key & 7}")
        else:
            pos = _skip(buf, pos, key, end)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _bytes_list(buf: bytes, pos: int, end: int) -> list[bytes]:
    values: list[bytes] = []
    while pos < end:
        key, pos = _varint(buf, pos)
        if key == 0x0A:
            start, pos = _length(buf, pos, end, "bytes_list")
            values.append(buf[start:pos])
        elif key >> 3 == 1:
            raise ProtoError(f"bytes_list value has wire type {key & 7}")
        else:
            pos = _skip(buf, pos, key, end)
    return values


_LISTS: dict[int, Callable[[bytes, int, int], np.ndarray | list[bytes]]] = {
    1: _bytes_list, 2: _float_list, 3: _int64_list,
}


def _feature(buf: bytes, pos: int, end: int) -> FeatureValue:
    """Decode one ``Feature``. The oneof's last list wins; a repeated list field merges, as in protobuf."""
    if pos < end and buf[pos] in (0x0A, 0x12, 0x1A):  # the usual encoding: one list filling the Feature
        start, stop = _length(buf, pos + 1, end, "Feature")
        if stop == end:
            return _LISTS[buf[pos] >> 3](buf, start, stop)
    kind = 0
    spans: list[tuple[int, int]] = []
    while pos < end:
        key, pos = _varint(buf, pos)
        number = key >> 3
        if number in _LISTS:
            if key & 7 != 2:
                raise ProtoError(f"Feature field {number} has wire type {key & 7}, expected 2")
            span = _length(buf, pos, end, "Feature")
            pos = span[1]
            if number != kind:
                kind, spans = number, []
            spans.append(span)
        else:
            pos = _skip(buf, pos, key, end)
    if not kind:
        return None
    if kind == 1:
        return [value for start, stop in spans for value in _bytes_list(buf, start, stop)]
    arrays = [(_float_list if kind == 2 else _int64_list)(buf, start, stop) for start, stop in spans]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _entries(buf: bytes, wanted: Collection[bytes] | None) -> dict[bytes, tuple[int, int] | None]:
    """Walk ``Example`` → ``Features`` → map entries; return each (wanted) name's ``Feature`` span in ``buf``.

    ``None`` marks an entry without a value (an empty ``Feature``). Later entries and later ``features``
    fields win, as protobuf merges maps. Every length is checked, wanted or not. This loop runs for every
    feature of every record, so one-byte keys and name lengths are read inline rather than by calls.
    """
    out: dict[bytes, tuple[int, int] | None] = {}
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key, pos = _varint(buf, pos)
            if key != 0x0A:  # anything but Example.features
                if key >> 3 == 1:
                    raise ProtoError(f"Example.features has wire type {key & 7}, expected 2")
                pos = _skip(buf, pos, key, end)
                continue
            fpos, fend = _length(buf, pos, end, "Example.features")
            pos = fend
            while fpos < fend:
                if buf[fpos] != 0x0A:  # anything but Features.feature (a map entry)
                    fkey, fpos = _varint(buf, fpos)
                    if fkey >> 3 == 1:
                        raise ProtoError(f"Features.feature has wire type {fkey & 7}, expected 2")
                    fpos = _skip(buf, fpos, fkey, fend)
                    continue
                epos, eend = _length(buf, fpos + 1, fend, "feature map entry")
                fpos = eend
                name = b""
                value: tuple[int, int] | None = None
                while epos < eend:
                    ekey = buf[epos]
                    if ekey == 0x0A:  # map key: the feature name
                        n = buf[epos + 1]
                        if n < 0x80 and epos + 2 + n <= eend:
                            name = buf[epos + 2:epos + 2 + n]
                            epos += 2 + n
                        else:
                            start, epos = _length(buf, epos + 1, eend, "feature name")
                            name = buf[start:epos]
                    elif ekey == 0x12:  # map value: the Feature
                        value = _length(buf, epos + 1, eend, "feature value")
                        epos = value[1]
                    else:
                        ekey, epos = _varint(buf, epos)
                        if ekey >> 3 in (1, 2):
                            raise ProtoError(f"feature map entry field {ekey >> 3} has wire type {ekey & 7}")
                        epos = _skip(buf, epos, ekey, eend)
                if wanted is None or name in wanted:
                    out[name] = value
    except IndexError:
        raise ProtoError("a value runs past the end of its message") from None
    return out


def parse_example(data: bytes, features: Collection[str] | None = None) -> dict[str, FeatureValue]:
    """Decode a serialized ``tf.train.Example`` into ``{name: values}``.

    int64 lists become ``np.int64`` arrays (negative values from their two's-complement varints), float
    lists ``np.float32`` arrays, bytes lists ``list[bytes]``, and a Feature with no list set ``None``.
    With ``features``, only those names are decoded (the others are skipped undecoded, which is faster).
    Raises :class:`zoo.tf.proto.ProtoError` (a ``ValueError``) for bytes that are not a valid Example.
    """
    wanted = None if features is None else {name.encode() for name in features}
    out: dict[str, FeatureValue] = {}
    for name, span in _entries(data, wanted).items():
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtoError(f"feature name {name!r} is not UTF-8") from None
        try:
            out[text] = None if span is None else _feature(data, *span)
        except IndexError:
            raise ProtoError(f"feature {text!r}: a value runs past the end of its message") from None
    return out


def read_examples(path: str | os.PathLike[str], *, features: Collection[str] | None = None,
                  compression: Compression = "auto") -> Iterator[dict[str, FeatureValue]]:
    """Every record of a TFRecord file decoded with :func:`parse_example`; garbled ones raise DataError."""
    for record in iter_records(path, compression=compression):
        try:
            yield parse_example(record.data, features)
        except ProtoError as exc:
            raise _record_error(path, record, f"not a valid tf.train.Example: {exc}", _UPSTREAM_HINT) from None


def _record_error(path: str | os.PathLike[str], record: Record, problem: str, hint: str | None) -> DataError:
    return DataError(f"{Path(path)}: record {record.index} (byte {record.offset}): {problem}", hint=hint)


# ----------------------------------------------------------------------------------- training examples


class _Invalid(Exception):
    """An Example that decodes but is not a usable pretraining example; becomes a located DataError."""

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint or _RECORD_HINT


_VOCAB_HINT = "the file was written with a different vocab file than this model's"


def _require(features: Mapping[str, FeatureValue], name: str) -> np.ndarray:
    value = features.get(name)
    kind = PRETRAINING_FEATURES[name]
    if name not in features:
        present = ", ".join(sorted(features)) or "none"
        raise _Invalid(f"missing feature {name!r} (features present: {present})", _UPSTREAM_HINT)
    want = np.int64 if kind == "int64" else np.float32
    if not isinstance(value, np.ndarray) or value.dtype != want:
        got = "no list" if value is None else "a bytes_list" if isinstance(value, list) else \
            "a float_list" if value.dtype == np.float32 else "an int64_list"
        raise _Invalid(f"feature {name!r} is {got}, expected a {kind}_list", _UPSTREAM_HINT)
    return value


def _check(arrays: Mapping[str, np.ndarray], seq_length: int | None, max_predictions: int | None,
           vocab_size: int | None) -> np.ndarray:
    """Validate one example's (``[T]``) or a batch's (``[B, T]``) upstream arrays; return the active mask.

    The same checks serve both shapes, so the batched fast path and the per-record path cannot drift apart.
    """
    ids, mask, segments = arrays["input_ids"], arrays["input_mask"], arrays["segment_ids"]
    positions, masked, weights = arrays["masked_lm_positions"], arrays["masked_lm_ids"], arrays["masked_lm_weights"]
    nsp = arrays["next_sentence_labels"]
    length, count = ids.shape[-1], positions.shape[-1]
    if not length:
        raise _Invalid("input_ids is empty")
    if mask.shape != ids.shape or segments.shape != ids.shape:
        raise _Invalid(f"inconsistent lengths: input_ids {length}, input_mask {mask.shape[-1]}, "
                       f"segment_ids {segments.shape[-1]}")
    if seq_length is not None and length != seq_length:
        raise _Invalid(f"sequence length {length}, expected {seq_length}",
                       "the file was written with another --max_seq_length; pass that length or regenerate")
    if masked.shape != positions.shape or weights.shape != positions.shape:
        raise _Invalid(f"inconsistent lengths: masked_lm_positions {count}, masked_lm_ids {masked.shape[-1]}, "
                       f"masked_lm_weights {weights.shape[-1]}")
    if max_predictions is not None and count != max_predictions:
        raise _Invalid(f"{count} masked-LM slots, expected {max_predictions}",
                       "the file was written with another --max_predictions_per_seq; pass that number or "
                       "regenerate")
    if nsp.shape[-1] != 1:
        raise _Invalid(f"next_sentence_labels has {nsp.shape[-1]} values, expected 1")
    for name, values in (("input_mask", mask), ("segment_ids", segments), ("next_sentence_labels", nsp)):
        if (values & ~1).any():  # anything but 0 and 1, negatives included
            raise _Invalid(f"feature {name!r} holds {values[(values & ~1) != 0][0]}; upstream writes only 0 and 1 "
                           "there")
    limit = np.iinfo(np.int64).max if vocab_size is None else vocab_size
    if ids.min() < 0 or ids.max() >= limit:
        raise _Invalid(f"input_ids holds {ids[(ids < 0) | (ids >= limit)][0]}, outside the vocabulary "
                       f"(size {vocab_size})", _VOCAB_HINT)
    active: np.ndarray = weights == 1
    if np.count_nonzero(active) + np.count_nonzero(weights == 0) != weights.size:
        raise _Invalid(f"masked_lm_weights holds {weights[(weights != 0) & (weights != 1)][0]}; upstream writes "
                       "only 1.0 (real) and 0.0 (padding), and zoo's labels carry no per-position weight")
    where, labels = positions[active], masked[active]
    if len(where):
        if where.min() < 0 or where.max() >= length:
            raise _Invalid(f"masked_lm_positions holds {where[(where < 0) | (where >= length)][0]}, outside the "
                           f"sequence of length {length}")
        if labels.min() < 0 or labels.max() >= limit:
            raise _Invalid(f"masked_lm_ids holds {labels[(labels < 0) | (labels >= limit)][0]}, outside the "
                           f"vocabulary (size {vocab_size})", _VOCAB_HINT)
    return active


def _labels(arrays: Mapping[str, np.ndarray], active: np.ndarray) -> np.ndarray:
    """``-100`` everywhere, the masked token's id at each masked position; a repeated position is an error."""
    ids = arrays["input_ids"]
    labels = np.full(ids.shape, IGNORE_INDEX, np.int64)
    if ids.ndim == 1:
        labels[arrays["masked_lm_positions"][active]] = arrays["masked_lm_ids"][active]
    else:
        rows = np.nonzero(active)[0]
        labels[rows, arrays["masked_lm_positions"][active]] = arrays["masked_lm_ids"][active]
    if np.count_nonzero(labels != IGNORE_INDEX) != np.count_nonzero(active):
        raise _Invalid("masked_lm_positions repeats a position; upstream masks each position once")
    return labels


def _training_example(features: Mapping[str, FeatureValue], seq_length: int | None,
                      max_predictions: int | None, vocab_size: int | None) -> dict[str, np.ndarray]:
    arrays = {name: _require(features, name) for name in PRETRAINING_FEATURES}
    active = _check(arrays, seq_length, max_predictions, vocab_size)
    return {
        "input_ids": arrays["input_ids"],
        "attention_mask": arrays["input_mask"],
        "token_type_ids": arrays["segment_ids"],
        "labels": _labels(arrays, active),
        "seq_relationship_label": arrays["next_sentence_labels"].reshape(()),
    }


_BATCH = 256  # records decoded together on the fast path
_WANTED = frozenset(name.encode() for name in PRETRAINING_FEATURES)
#: The list field each feature must use: float_list (field 2) or int64_list (field 3), length-delimited.
_LIST_KEYS = {name.encode(): 0x12 if kind == "float" else 0x1A for name, kind in PRETRAINING_FEATURES.items()}


def _packed_run(buf: bytes, span: tuple[int, int] | None, list_key: int) -> bytes | None:
    """The packed values of a Feature encoded the usual way — one list holding one packed run — or None."""
    if span is None:
        return None
    pos, end = span
    if pos >= end or buf[pos] != list_key:
        return None
    start, stop = _length(buf, pos + 1, end, "Feature")
    if stop != end:
        return None
    if start == stop:
        return b""
    if buf[start] != 0x0A:
        return None
    start, pos = _length(buf, start + 1, stop, "value list")
    return buf[start:pos] if pos == stop else None


def _rows(chunks: list[bytes], kind: int) -> np.ndarray | None:
    """Decode the packed runs of a batch at once into a ``[B, n]`` array; None unless all hold n values."""
    sizes = {len(chunk) for chunk in chunks}
    joined = b"".join(chunks)
    if kind == 0x12:  # float32, 4 bytes per value
        if len(sizes) != 1 or next(iter(sizes)) % 4:
            return None
        return np.frombuffer(joined, "<f4").astype(np.float32).reshape(len(chunks), -1)
    if joined.isascii():  # one byte per value
        if len(sizes) != 1:
            return None
        return np.frombuffer(joined, np.uint8).astype(np.int64).reshape(len(chunks), -1)
    if 0 in sizes:
        return None
    lengths = np.fromiter(map(len, chunks), np.intp, len(chunks))
    ends = np.cumsum(lengths)
    stops = np.frombuffer(joined, np.uint8) < 0x80
    if not stops[ends - 1].all():  # a run ends mid-value: let the per-record path say where
        return None
    counts = np.add.reduceat(stops.astype(np.intp), ends - lengths)
    if (counts != counts[0]).any():
        return None
    return _packed_varints(joined).reshape(len(chunks), -1)


def _fast_batch(records: list[Record], seq_length: int | None, max_predictions: int | None,
                vocab_size: int | None) -> list[dict[str, np.ndarray]] | None:
    """Convert a batch of regular upstream records with whole-batch numpy operations.

    "Regular" means what ``create_pretraining_data.py`` writes: every required feature present as one packed
    list and every record the same shape. Anything else — or any invalid value — returns None, and the
    caller converts record by record, which handles every valid encoding and locates every error.
    """
    runs: dict[bytes, list[bytes]] = {name: [] for name in _LIST_KEYS}
    try:
        for record in records:
            spans = _entries(record.data, _WANTED)
            for name, key in _LIST_KEYS.items():
                run = _packed_run(record.data, spans.get(name), key)
                if run is None:
                    return None
                runs[name].append(run)
        arrays: dict[str, np.ndarray] = {}
        for name, key in _LIST_KEYS.items():
            rows = _rows(runs[name], key)
            if rows is None:
                return None
            arrays[name.decode()] = rows
        active = _check(arrays, seq_length, max_predictions, vocab_size)
        labels = _labels(arrays, active)
    except (ProtoError, _Invalid, IndexError):
        return None
    ids, mask, segments = arrays["input_ids"], arrays["input_mask"], arrays["segment_ids"]
    nsp = arrays["next_sentence_labels"].reshape(-1)
    return [{"input_ids": ids[i], "attention_mask": mask[i], "token_type_ids": segments[i], "labels": labels[i],
             "seq_relationship_label": nsp[i:i + 1].reshape(())} for i in range(len(records))]


def _convert(path: str | os.PathLike[str], records: list[Record], seq_length: int | None,
             max_predictions: int | None, vocab_size: int | None) -> Iterator[dict[str, np.ndarray]]:
    fast = _fast_batch(records, seq_length, max_predictions, vocab_size)
    if fast is not None:
        yield from fast
        return
    names = tuple(PRETRAINING_FEATURES)
    for record in records:
        try:
            features = parse_example(record.data, names)
            example = _training_example(features, seq_length, max_predictions, vocab_size)
        except ProtoError as exc:
            raise _record_error(path, record, f"not a valid tf.train.Example: {exc}", _UPSTREAM_HINT) from None
        except _Invalid as exc:
            raise _record_error(path, record, exc.problem, exc.hint) from None
        yield example


def read_pretraining_examples(path: str | os.PathLike[str], *, seq_length: int | None = None,
                              max_predictions: int | None = None, vocab_size: int | None = None,
                              compression: Compression = "auto") -> Iterator[dict[str, np.ndarray]]:
    """Stream zoo training examples from an upstream pretraining TFRecord file.

    Each example is a dict of ``np.int64`` arrays: ``input_ids``, ``attention_mask``, ``token_type_ids``,
    ``labels`` (all ``[T]``; ``labels`` is ``-100`` except at the masked positions, which hold the original
    token id) and ``seq_relationship_label`` (0-d: 0 = A then B, 1 = random next (NSP) / swapped (SOP)).

    ``seq_length``, ``max_predictions`` and ``vocab_size``, when given, are checked against every record,
    so a file written for another configuration fails at its first record instead of mid-training.
    Every problem is a :class:`~zoo.errors.DataError` naming the file, the record index and its byte offset;
    the examples before a bad record are yielded first. Records are decoded a batch at a time (up to
    256, read ahead), and the arrays of one batch's examples are views of shared arrays.
    """
    records = iter_records(path, compression=compression)
    try:
        while True:
            batch: list[Record] = []
            failure: DataError | None = None
            try:
                for record in records:
                    batch.append(record)
                    if len(batch) == _BATCH:
                        break
            except DataError as exc:  # yield the records before the damage first, then report it
                failure = exc
            yield from _convert(path, batch, seq_length, max_predictions, vocab_size)
            if failure is not None:
                raise failure
            if len(batch) < _BATCH:
                return
    finally:
        records.close()  # a consumer that stops early closes the file now, not at garbage collection


__all__ = [
    "IGNORE_INDEX",
    "PRETRAINING_FEATURES",
    "Compression",
    "FeatureValue",
    "Record",
    "count_records",
    "iter_records",
    "parse_example",
    "read_examples",
    "read_pretraining_examples",
]
