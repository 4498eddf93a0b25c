"""A pure-Python ``tf.train.Example`` / TFRecord writer for tests: valid files and deliberately damaged ones.

Independent of zoo's reader (it shares no code with it beyond the CRC32C package), so a test that writes
with this module and reads with zoo checks the two against the wire format, not against each other's bugs.
Features are given as ``(kind, values)`` with kind ``"int64"``, ``"float"`` or ``"bytes"``, or as plain
lists (ints → int64, floats → float, bytes → bytes).
"""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import google_crc32c

FeatureSpec = tuple[str, Sequence[object]] | Sequence[object]


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def varint(value: int) -> bytes:
    """Base-128 varint; negative ints as their 64-bit two's complement (10 bytes), like protobuf int64."""
    value = int(value) & ((1 << 64) - 1)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def _kind(spec: FeatureSpec) -> tuple[str, Sequence[object]]:
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] in ("int64", "float", "bytes"):
        return spec  # type: ignore[return-value]
    values = list(spec)  # type: ignore[arg-type]
    if values and isinstance(values[0], bytes):
        return "bytes", values
    if values and isinstance(values[0], float):
        return "float", values
    return "int64", values


def feature(spec: FeatureSpec, *, packed: bool = True) -> bytes:
    """A serialized ``Feature`` (bytes_list = 1, float_list = 2, int64_list = 3; values in field 1)."""
    kind, values = _kind(spec)
    if kind == "bytes":
        body = b"".join(length_delimited(1, v) for v in values)  # type: ignore[arg-type]
        return length_delimited(1, body)
    if kind == "float":
        if packed:
            body = length_delimited(1, struct.pack(f"<{len(values)}f", *values)) if values else b""
        else:
            body = b"".join(key(1, 5) + struct.pack("<f", v) for v in values)  # type: ignore[arg-type]
        return length_delimited(2, body)
    if packed:
        body = length_delimited(1, b"".join(varint(v) for v in values)) if values else b""  # type: ignore[arg-type]
    else:
        body = b"".join(key(1, 0) + varint(v) for v in values)  # type: ignore[arg-type]
    return length_delimited(3, body)


def example(features: Mapping[str, FeatureSpec | bytes], *, packed: bool = True) -> bytes:
    """A serialized ``Example``; a ``bytes`` value is used as an already serialized ``Feature``."""
    entries = b""
    for name, spec in features.items():
        value = spec if isinstance(spec, bytes) else feature(spec, packed=packed)
        entries += length_delimited(1, length_delimited(1, name.encode()) + length_delimited(2, value))
    return length_delimited(1, entries)


def frame(data: bytes, *, bad_length_crc: bool = False, bad_data_crc: bool = False) -> bytes:
    """One TFRecord record: length, masked CRC of the length, data, masked CRC of the data."""
    header = struct.pack("<Q", len(data))
    length_crc = masked_crc(header) ^ (1 if bad_length_crc else 0)
    data_crc = masked_crc(data) ^ (1 if bad_data_crc else 0)
    return header + struct.pack("<I", length_crc) + data + struct.pack("<I", data_crc)


def write_tfrecord(path: Path, records: Iterable[bytes], *, compression: str = "none") -> Path:
    """Frame each payload with :func:`frame` and write the file (optionally gzip- or zlib-compressed)."""
    blob = b"".join(frame(r) for r in records)
    return write_bytes(path, blob, compression=compression)


def write_bytes(path: Path, blob: bytes, *, compression: str = "none") -> Path:
    """Write a TFRecord byte stream as is, gzip'ed or zlib'ed."""
    if compression == "gzip":
        blob = gzip.compress(blob)
    elif compression == "zlib":
        blob = zlib.compress(blob)
    elif compression != "none":
        raise ValueError(compression)
    Path(path).write_bytes(blob)
    return Path(path)


def pretraining_features(rng: random.Random, *, seq_length: int = 16, max_predictions: int = 4,
                         vocab_size: int = 21128, albert: bool = False) -> dict[str, tuple[str, list[object]]]:
    """Features shaped like ``write_instance_to_example_files`` output: padded ids, 1.0/0.0 weights."""
    used = rng.randint(5, seq_length)
    ids = [2] + [rng.randrange(5, vocab_size) for _ in range(used - 2)] + [3] + [0] * (seq_length - used)
    split = rng.randint(1, used - 1)
    segments = [0] * split + [1] * (used - split) + [0] * (seq_length - used)
    count = rng.randint(1, min(max_predictions, used - 2))
    positions = sorted(rng.sample(range(1, used - 1), count))
    masked = [rng.randrange(5, vocab_size) for _ in positions]
    pad = max_predictions - count
    features: dict[str, tuple[str, list[object]]] = {
        "input_ids": ("int64", ids),
        "input_mask": ("int64", [1] * used + [0] * (seq_length - used)),
        "segment_ids": ("int64", segments),
        "masked_lm_positions": ("int64", positions + [0] * pad),
        "masked_lm_ids": ("int64", masked + [0] * pad),
        "masked_lm_weights": ("float", [1.0] * count + [0.0] * pad),
        "next_sentence_labels": ("int64", [rng.randint(0, 1)]),
    }
    if albert:
        features["token_boundary"] = ("int64", [rng.randint(0, 1) for _ in range(seq_length)])
    return features


__all__ = ["example", "feature", "frame", "masked_crc", "pretraining_features", "varint", "write_bytes",
           "write_tfrecord"]
