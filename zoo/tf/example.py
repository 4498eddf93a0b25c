"""``tf.train.Example`` decoded from the wire format without TensorFlow, on :mod:`zoo.tf.proto`'s primitives.

``Example{features = 1: Features}``, ``Features{feature = 1: map<string, Feature>}``, ``Feature{oneof: bytes_list
= 1, float_list = 2, int64_list = 3}``, each list's values in field 1, packed or not; unknown fields are skipped
and repeated messages merged as protobuf does (tensorflow ``core/example/{example,feature}.proto``). Packed
integers are decoded with numpy, and :func:`parse_regular_batch` decodes many records written the usual way at
once: that is what lets one process feed a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal

import numpy as np

from zoo.tf.proto import ProtoError, read_length, read_varint, skip_field

#: A decoded ``Feature``: int64 list, float list, bytes list, or ``None`` for a Feature with no list set.
FeatureValue = np.ndarray | list[bytes] | None
#: The list type of a feature in :func:`parse_regular_batch`.
ListKind = Literal["int64", "float"]


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
        start, stop = read_length(buf, pos + 1, end, "int64_list")
        if stop == end:
            return _packed_varints(buf[start:stop])
    parts: list[np.ndarray] = []
    loose: list[int] = []
    while pos < end:
        key, pos = read_varint(buf, pos)
        if key == 0x0A:  # field 1, packed
            start, pos = read_length(buf, pos, end, "int64_list")
            if loose:
                parts.append(np.array(loose, np.uint64).view(np.int64))
                loose = []
            parts.append(_packed_varints(buf[start:pos]))
        elif key == 0x08:  # field 1, one unpacked value
            value, pos = read_varint(buf, pos)
            if pos > end:
                raise ProtoError("int64_list: value runs past the end of its message")
            loose.append(value & 0xFFFFFFFFFFFFFFFF)
        elif key >> 3 == 1:
            raise ProtoError(f"int64_list value has wire type {key & 7}")
        else:
            pos = skip_field(buf, pos, key, end)
    if loose:
        parts.append(np.array(loose, np.uint64).view(np.int64))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _float_list(buf: bytes, pos: int, end: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    while pos < end:
        key, pos = read_varint(buf, pos)
        if key == 0x0A:  # field 1, packed
            start, pos = read_length(buf, pos, end, "float_list")
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
            pos = skip_field(buf, pos, key, end)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _bytes_list(buf: bytes, pos: int, end: int) -> list[bytes]:
    values: list[bytes] = []
    while pos < end:
        key, pos = read_varint(buf, pos)
        if key == 0x0A:
            start, pos = read_length(buf, pos, end, "bytes_list")
            values.append(buf[start:pos])
        elif key >> 3 == 1:
            raise ProtoError(f"bytes_list value has wire type {key & 7}")
        else:
            pos = skip_field(buf, pos, key, end)
    return values


_LISTS: dict[int, Callable[[bytes, int, int], np.ndarray | list[bytes]]] = {
    1: _bytes_list, 2: _float_list, 3: _int64_list,
}


def _feature(buf: bytes, pos: int, end: int) -> FeatureValue:
    """Decode one ``Feature``. The oneof's last list wins; a repeated list field merges, as in protobuf."""
    if pos < end and buf[pos] in (0x0A, 0x12, 0x1A):  # the usual encoding: one list filling the Feature
        start, stop = read_length(buf, pos + 1, end, "Feature")
        if stop == end:
            return _LISTS[buf[pos] >> 3](buf, start, stop)
    kind = 0
    spans: list[tuple[int, int]] = []
    while pos < end:
        key, pos = read_varint(buf, pos)
        number = key >> 3
        if number in _LISTS:
            if key & 7 != 2:
                raise ProtoError(f"Feature field {number} has wire type {key & 7}, expected 2")
            span = read_length(buf, pos, end, "Feature")
            pos = span[1]
            if number != kind:
                kind, spans = number, []
            spans.append(span)
        else:
            pos = skip_field(buf, pos, key, end)
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
            key, pos = read_varint(buf, pos)
            if key != 0x0A:  # anything but Example.features
                if key >> 3 == 1:
                    raise ProtoError(f"Example.features has wire type {key & 7}, expected 2")
                pos = skip_field(buf, pos, key, end)
                continue
            fpos, fend = read_length(buf, pos, end, "Example.features")
            pos = fend
            while fpos < fend:
                if buf[fpos] != 0x0A:  # anything but Features.feature (a map entry)
                    fkey, fpos = read_varint(buf, fpos)
                    if fkey >> 3 == 1:
                        raise ProtoError(f"Features.feature has wire type {fkey & 7}, expected 2")
                    fpos = skip_field(buf, fpos, fkey, fend)
                    continue
                epos, eend = read_length(buf, fpos + 1, fend, "feature map entry")
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
                            start, epos = read_length(buf, epos + 1, eend, "feature name")
                            name = buf[start:epos]
                    elif ekey == 0x12:  # map value: the Feature
                        value = read_length(buf, epos + 1, eend, "feature value")
                        epos = value[1]
                    else:
                        ekey, epos = read_varint(buf, epos)
                        if ekey >> 3 in (1, 2):
                            raise ProtoError(f"feature map entry field {ekey >> 3} has wire type {ekey & 7}")
                        epos = skip_field(buf, epos, ekey, eend)
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


def _packed_run(buf: bytes, span: tuple[int, int] | None, list_key: int) -> bytes | None:
    """The packed values of a Feature encoded the usual way — one list holding one packed run — or None."""
    if span is None:
        return None
    pos, end = span
    if pos >= end or buf[pos] != list_key:
        return None
    start, stop = read_length(buf, pos + 1, end, "Feature")
    if stop != end:
        return None
    if start == stop:
        return b""
    if buf[start] != 0x0A:
        return None
    start, pos = read_length(buf, start + 1, stop, "value list")
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


def parse_regular_batch(records: Sequence[bytes], lists: Mapping[str, ListKind]) -> dict[str, np.ndarray] | None:
    """Decode the features ``lists`` names (``{name: "int64" | "float"}``) of many Examples at once: ``{name:
    [len(records), n] array}``.

    Only for records encoded the usual way — every named feature present as one packed list, every record the same
    shape — as ``create_pretraining_data.py`` writes them; anything else returns ``None`` (garbled bytes too), and
    the caller decodes record by record with :func:`parse_example`, which handles every valid encoding.
    """
    keys = {name.encode(): 0x12 if kind == "float" else 0x1A for name, kind in lists.items()}
    runs: dict[bytes, list[bytes]] = {name: [] for name in keys}
    try:
        for record in records:
            spans = _entries(record, keys)
            for name, key in keys.items():
                run = _packed_run(record, spans.get(name), key)
                if run is None:
                    return None
                runs[name].append(run)
        arrays: dict[str, np.ndarray] = {}
        for name, key in keys.items():
            rows = _rows(runs[name], key)
            if rows is None:
                return None
            arrays[name.decode()] = rows
    except (ProtoError, IndexError):
        return None
    return arrays


__all__ = ["FeatureValue", "ListKind", "parse_example", "parse_regular_batch"]
