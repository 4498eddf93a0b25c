"""The one protobuf wire-format decoder of zoo: varints, fixed32/fixed64 and length-delimited fields.

TensorFlow's formats are protobuf messages: a TensorBundle index holds ``BundleHeaderProto`` and
``BundleEntryProto`` (decoded here into small dataclasses), a TFRecord of pretraining data holds
``tf.train.Example`` (:mod:`zoo.tf.example`, on the same primitives). Unknown fields are skipped, as protobuf
readers do; malformed bytes raise :class:`ProtoError`.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator

# wire types
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class ProtoError(ValueError):
    """The bytes are not a valid protobuf message; callers wrap it into a CheckpointError or a DataError."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; return ``(value, next position)``."""
    try:
        byte = buf[pos]
    except IndexError:
        raise ProtoError("varint runs past the end of the data") from None
    if byte < 0x80:  # the common case: field keys, short lengths, small values
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    pos += 1
    while True:
        if pos >= len(buf):
            raise ProtoError("varint runs past the end of the data")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint longer than 10 bytes")


def read_length(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read the length prefix at ``pos``; return ``(start, stop)`` of the value, checked against ``end``."""
    n = buf[pos]
    if n < 0x80:
        pos += 1
    elif buf[pos + 1] < 0x80:  # two bytes: lengths below 16 KiB, e.g. every list of a pretraining example
        n = (n & 0x7F) | buf[pos + 1] << 7
        pos += 2
    else:
        n, pos = read_varint(buf, pos)
    if pos + n > end:
        raise ProtoError(f"{what}: {n}-byte value runs past the end of its message")
    return pos, pos + n


def skip_field(buf: bytes, pos: int, key: int, end: int) -> int:
    """The position after the value of field ``key`` (a field number and wire type) that starts at ``pos``."""
    wire = key & 7
    if key >> 3 == 0:
        raise ProtoError("field number 0 is invalid")
    if wire == VARINT:
        _, pos = read_varint(buf, pos)
    elif wire == FIXED64:
        pos += 8
    elif wire == LENGTH:
        pos = read_length(buf, pos, end, f"field {key >> 3}")[1]
    elif wire == FIXED32:
        pos += 4
    else:
        raise ProtoError(f"field {key >> 3}: unsupported wire type {wire}")
    if pos > end:
        raise ProtoError(f"field {key >> 3}: value runs past the end of its message")
    return pos


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield ``(field number, wire type, value)`` for each field of a serialized message."""
    pos, end = 0, len(buf)
    try:
        while pos < end:
            key, pos = read_varint(buf, pos)
            number, wire = key >> 3, key & 7
            start, pos = pos, skip_field(buf, pos, key, end)
            value: int | bytes
            if wire == VARINT:
                value = read_varint(buf, start)[0]
            elif wire == LENGTH:
                value = bytes(buf[read_length(buf, start, end, f"field {number}")[0]:pos])
            else:
                (value,) = struct.unpack_from("<Q" if wire == FIXED64 else "<I", buf, start)
            yield number, wire, value
    except IndexError:
        raise ProtoError("a value runs past the end of the data") from None


def _int64(value: int) -> int:
    """Reinterpret a decoded varint as a two's-complement int64 (negative sizes mean 'unknown')."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _expect(number: int, wire: int, want: int) -> None:
    if wire != want:
        raise ProtoError(f"field {number}: wire type {wire}, expected {want}")


@dataclasses.dataclass(frozen=True)
class BundleHeader:
    """``BundleHeaderProto``: number of data shards, byte order, format version."""

    num_shards: int = 0
    endianness: int = 0  # 0 little, 1 big
    producer: int = 0
    min_consumer: int = 0

    @classmethod
    def parse(cls, buf: bytes) -> BundleHeader:
        values: dict[str, int] = {}
        for number, wire, value in fields(buf):
            if number == 1:
                _expect(number, wire, VARINT)
                values["num_shards"] = _int64(value)  # type: ignore[arg-type]
            elif number == 2:
                _expect(number, wire, VARINT)
                values["endianness"] = int(value)
            elif number == 3:
                _expect(number, wire, LENGTH)
                for sub, sub_wire, sub_value in fields(value):  # type: ignore[arg-type]
                    if sub in (1, 2):
                        _expect(sub, sub_wire, VARINT)
                        values["producer" if sub == 1 else "min_consumer"] = _int64(sub_value)  # type: ignore[arg-type]
        return cls(**values)


def parse_shape(buf: bytes) -> tuple[int, ...] | None:
    """``TensorShapeProto`` → dims, or ``None`` when the rank is unknown."""
    dims: list[int] = []
    unknown_rank = False
    for number, wire, value in fields(buf):
        if number == 2:
            _expect(number, wire, LENGTH)
            size = 0
            for sub, sub_wire, sub_value in fields(value):  # type: ignore[arg-type]
                if sub == 1:
                    _expect(sub, sub_wire, VARINT)
                    size = _int64(sub_value)  # type: ignore[arg-type]
            dims.append(size)
        elif number == 3:
            _expect(number, wire, VARINT)
            unknown_rank = bool(value)
    return None if unknown_rank else tuple(dims)


@dataclasses.dataclass(frozen=True)
class BundleEntry:
    """``BundleEntryProto``: where one variable's bytes live and how to check them."""

    dtype: int = 0
    shape: tuple[int, ...] | None = ()
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0  # masked
    num_slices: int = 0

    @classmethod
    def parse(cls, buf: bytes) -> BundleEntry:
        values: dict[str, object] = {}
        slices = 0
        for number, wire, value in fields(buf):
            if number == 1:
                _expect(number, wire, VARINT)
                values["dtype"] = value
            elif number == 2:
                _expect(number, wire, LENGTH)
                values["shape"] = parse_shape(value)  # type: ignore[arg-type]
            elif number in (3, 4, 5):
                _expect(number, wire, VARINT)
                values[("shard_id", "offset", "size")[number - 3]] = _int64(value)  # type: ignore[arg-type]
            elif number == 6:
                _expect(number, wire, FIXED32)
                values["crc32c"] = value
            elif number == 7:
                slices += 1
        return cls(num_slices=slices, **values)  # type: ignore[arg-type]
