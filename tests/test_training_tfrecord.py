"""zoo.training.tfrecord: upstream pretraining TFRecords read without TensorFlow.

Files are built with the independent writer in tests/support/tfrecord.py; the last tests compare against
real upstream files and TensorFlow's own parse of them (tests/fixtures/pretraining, when present).
"""

from __future__ import annotations

import json
import os
import random
import struct
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import tfrecord as W

from zoo.errors import DataError, NotFoundError, UsageError
from zoo.tf import tfrecord as tfrecord_module
from zoo.tf.example import parse_example
from zoo.tf.proto import ProtoError
from zoo.tf.tfrecord import count_records, iter_records, read_examples
from zoo.training.tfrecord import IGNORE_INDEX, _fast_batch, read_pretraining_examples

FIXTURES = Path(__file__).parent / "fixtures" / "pretraining"
UPSTREAM = ["bert", "albert"]


def upstream_like(n: int, seed: int = 0, **kwargs: Any) -> list[dict[str, tuple[str, list[object]]]]:
    rng = random.Random(seed)
    return [W.pretraining_features(rng, **kwargs) for _ in range(n)]


def expected(features: dict[str, tuple[str, list[object]]]) -> dict[str, np.ndarray]:
    """The zoo example for upstream features, computed the obvious (slow) way."""
    ids = features["input_ids"][1]
    labels = [IGNORE_INDEX] * len(ids)
    for pos, tok, weight in zip(features["masked_lm_positions"][1], features["masked_lm_ids"][1],
                                features["masked_lm_weights"][1]):
        if weight > 0:
            labels[pos] = tok  # type: ignore[index]
    return {
        "input_ids": np.array(ids, np.int64),
        "attention_mask": np.array(features["input_mask"][1], np.int64),
        "token_type_ids": np.array(features["segment_ids"][1], np.int64),
        "labels": np.array(labels, np.int64),
        "seq_relationship_label": np.array(features["next_sentence_labels"][1][0], np.int64),
    }


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == np.int64, key
        assert got[key].shape == want[key].shape, key
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def write(tmp_path: Path, features_list: list[dict[str, Any]], name: str = "data.tfrecord", *,
          compression: str = "none", packed: bool = True) -> Path:
    return W.write_tfrecord(tmp_path / name, [W.example(f, packed=packed) for f in features_list],
                            compression=compression)


# --------------------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("compression", ["none", "gzip", "zlib"])
def test_upstream_records_become_zoo_examples(tmp_path: Path, compression: str) -> None:
    # 300 records: a full fast-path batch of 256 and a partial one
    features = upstream_like(300, seq_length=32, max_predictions=5, albert=True)
    path = write(tmp_path, features, compression=compression)
    examples = list(read_pretraining_examples(path, seq_length=32, max_predictions=5, vocab_size=21128))
    assert len(examples) == 300
    for got, feats in zip(examples, features):
        assert_same(got, expected(feats))
    assert count_records(path) == 300


def test_unpacked_and_irregular_encodings_give_the_same_examples(tmp_path: Path) -> None:
    """Unpacked lists and records of varying length take the record-by-record path; same results."""
    features = upstream_like(40, seed=1)
    mixed = upstream_like(3, seed=2, seq_length=24, max_predictions=3)
    packed = list(read_pretraining_examples(write(tmp_path, features + mixed, "a.tfrecord")))
    unpacked = list(read_pretraining_examples(write(tmp_path, features + mixed, "b.tfrecord", packed=False)))
    for a, b, feats in zip(packed, unpacked, features + mixed):
        assert_same(a, expected(feats))
        assert_same(b, expected(feats))


def test_example_decoding_covers_the_wire_format() -> None:
    features = {
        "ints": ("int64", [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -2**63, -300]),
        "floats": ("float", [0.0, 1.5, -2.25, float("inf"), 3.4e38]),
        "bytes": ("bytes", [b"", b"\x00\xff", "汉字".encode()]),
        "empty_ints": ("int64", []),
        "汉字": ("int64", [5]),
    }
    for packed in (True, False):
        got = parse_example(W.example(features, packed=packed))
        np.testing.assert_array_equal(got["ints"], np.array(features["ints"][1], np.int64))
        assert got["ints"].dtype == np.int64
        np.testing.assert_array_equal(got["floats"], np.array(features["floats"][1], np.float32))
        assert got["floats"].dtype == np.float32
        assert got["bytes"] == features["bytes"][1]
        assert got["empty_ints"].dtype == np.int64 and got["empty_ints"].size == 0
        assert got["汉字"].tolist() == [5]
    # only the requested features are decoded
    assert list(parse_example(W.example(features), ["floats"])) == ["floats"]
    # a Feature with no list set, unknown fields everywhere, and a split list that protobuf merges
    odd = W.key(1, 0) + W.varint(7) + W.length_delimited(1, W.varint(8) + W.varint(9)) + W.key(15, 0) + W.varint(1)
    merged = W.length_delimited(3, W.key(1, 0) + W.varint(1)) + W.length_delimited(3, W.key(1, 0) + W.varint(2))
    blob = W.example({"none": b"", "odd": W.length_delimited(3, odd), "merged": merged}) + W.key(9, 5) + b"1234"
    got = parse_example(blob)
    assert got["none"] is None
    assert got["odd"].tolist() == [7, 8, 9]
    assert got["merged"].tolist() == [1, 2]


def test_later_feature_entries_win_like_protobuf_maps() -> None:
    first = W.example({"x": ("int64", [1])})
    second = W.example({"x": ("float", [2.0]), "y": ("int64", [3])})
    got = parse_example(first + second)  # concatenated messages merge
    assert got["x"].tolist() == [2.0] and got["x"].dtype == np.float32
    assert got["y"].tolist() == [3]


def test_unknown_features_like_albert_token_boundary_are_ignored(tmp_path: Path) -> None:
    features = upstream_like(3, albert=True)
    for f in features:
        f["something_else"] = ("bytes", [b"x"])
    path = write(tmp_path, features)
    assert all("token_boundary" not in ex for ex in read_pretraining_examples(path))
    assert "token_boundary" in next(read_examples(path))


def test_reading_is_streamed(tmp_path: Path) -> None:
    """Records before a damaged one are yielded before the error; nothing needs the whole file."""
    features = upstream_like(300)
    blob = b"".join(W.frame(W.example(f)) for f in features) + W.frame(b"garbage", bad_data_crc=True)
    path = W.write_bytes(tmp_path / "x.tfrecord", blob)
    examples = read_pretraining_examples(path)
    got = [next(examples) for _ in range(300)]
    assert_same(got[-1], expected(features[-1]))
    with pytest.raises(DataError, match="record 300"):
        next(examples)


# ------------------------------------------------------------------------------------- damaged files


def located(exc: pytest.ExceptionInfo[DataError], path: Path, index: int, offset: int) -> None:
    text = str(exc.value)
    assert str(path) in text
    assert f"record {index} " in text
    assert f"byte {offset})" in text
    assert exc.value.hint


def offsets(features: list[dict[str, Any]]) -> list[int]:
    sizes = [16 + len(W.example(f)) for f in features]
    return [sum(sizes[:i]) for i in range(len(sizes) + 1)]


@pytest.mark.parametrize("damage", ["length", "data"])
def test_crc_mismatch(tmp_path: Path, damage: str) -> None:
    features = upstream_like(3)
    frames = [W.frame(W.example(f)) for f in features]
    frames[2] = W.frame(W.example(features[2]), bad_length_crc=damage == "length", bad_data_crc=damage == "data")
    path = W.write_bytes(tmp_path / "x.tfrecord", b"".join(frames))
    with pytest.raises(DataError, match=f"{damage} CRC mismatch") as exc:
        list(read_pretraining_examples(path))
    located(exc, path, 2, offsets(features)[2])


def test_flipped_data_byte_is_caught(tmp_path: Path) -> None:
    features = upstream_like(2)
    blob = bytearray(b"".join(W.frame(W.example(f)) for f in features))
    blob[offsets(features)[1] + 40] ^= 0x10
    path = W.write_bytes(tmp_path / "x.tfrecord", bytes(blob))
    with pytest.raises(DataError, match="data CRC mismatch") as exc:
        list(iter_records(path))
    located(exc, path, 1, offsets(features)[1])


@pytest.mark.parametrize("cut", [1, 5, 11, 12, 13, 100, 3])
@pytest.mark.parametrize("compression", ["none", "gzip", "zlib"])
def test_truncated_final_record_is_an_error(tmp_path: Path, cut: int, compression: str) -> None:
    """Any cut inside the last record — header, data or footer CRC — fails; nothing is silently dropped."""
    features = upstream_like(3)
    blob = b"".join(W.frame(W.example(f)) for f in features)
    start = offsets(features)[2]
    cut_at = len(blob) - cut if cut == 3 else start + cut  # 3: inside the data CRC
    path = W.write_bytes(tmp_path / "x.tfrecord", blob[:cut_at], compression=compression)
    examples = read_pretraining_examples(path)
    assert len([next(examples), next(examples)]) == 2
    with pytest.raises(DataError, match="ends inside the record") as exc:
        next(examples)
    located(exc, path, 2, start)
    if compression != "none":
        assert "decompressed byte" in str(exc.value)


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_cut_or_damaged_compressed_stream(tmp_path: Path, compression: str) -> None:
    features = upstream_like(50)
    blob = W.write_bytes(tmp_path / "full", b"".join(W.frame(W.example(f)) for f in features),
                         compression=compression).read_bytes()
    path = tmp_path / f"x.tfrecord.{compression}"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=f"{compression} stream is cut short") as exc:
        list(read_pretraining_examples(path))
    assert str(path) in str(exc.value) and "record " in str(exc.value)
    damaged = bytearray(blob)
    damaged[len(blob) // 2] ^= 0xFF  # deflate data or (gzip) the CRC32 trailer catch it
    damaged[-3] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=f"{compression} stream is damaged|CRC mismatch|not a valid"):
        list(read_pretraining_examples(path))


def test_decompressed_garbage_is_not_a_tfrecord(tmp_path: Path) -> None:
    path = W.write_bytes(tmp_path / "x.gz", "今天天气很好。\n".encode() * 20, compression="gzip")
    with pytest.raises(DataError, match="not a TFRecord file") as exc:
        list(iter_records(path))
    located(exc, path, 0, 0)


def test_not_a_tfrecord_file(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("今天天气很好。\n这是第二句。\n" * 10, encoding="utf-8")
    with pytest.raises(DataError, match="not a TFRecord file") as exc:
        list(read_pretraining_examples(path))
    located(exc, path, 0, 0)


def test_garbled_example(tmp_path: Path) -> None:
    features = upstream_like(2)
    good = W.example(features[0])
    path = W.write_tfrecord(tmp_path / "x.tfrecord", [good, good[:-7] + b"\x0a\xff\xff\x03"])
    with pytest.raises(DataError, match="not a valid tf.train.Example") as exc:
        list(read_pretraining_examples(path))
    located(exc, path, 1, 16 + len(good))


@pytest.mark.parametrize("blob", [
    b"\x0a\x05\x0a\x03\x0a\x01",  # lengths run past their message
    b"\x08\x01",  # Example.features as a varint
    b"\x0a\x04\x0a\x02\x12\x00" + b"\x80" * 11,  # overlong varint
    W.example({"x": W.length_delimited(3, W.length_delimited(1, b"\x80"))}),  # packed list ends mid-value
    W.example({"x": W.length_delimited(2, W.length_delimited(1, b"\x00\x00\x80"))}),  # 3-byte float list
    W.example({"x": W.key(3, 0) + W.varint(1)}),  # int64_list with the wrong wire type
    W.length_delimited(1, W.length_delimited(1, W.length_delimited(1, b"\xff\xfe"))),  # name not UTF-8
])
def test_parse_example_rejects_garbage(blob: bytes) -> None:
    with pytest.raises(ProtoError):
        parse_example(blob)


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.pop("masked_lm_weights"), "missing feature 'masked_lm_weights'"),
    (lambda f: f.update(input_mask=("int64", f["input_mask"][1][:-1])), "inconsistent lengths"),
    (lambda f: f.update(masked_lm_ids=("int64", f["masked_lm_ids"][1] + [1])), "inconsistent lengths"),
    (lambda f: f.update(next_sentence_labels=("int64", [0, 1])), "next_sentence_labels has 2 values"),
    (lambda f: f.update(next_sentence_labels=("int64", [2])), "'next_sentence_labels' holds 2"),
    (lambda f: f.update(segment_ids=("int64", [-1] + f["segment_ids"][1][1:])), "'segment_ids' holds -1"),
    (lambda f: f.update(input_ids=("float", [float(x) for x in f["input_ids"][1]])), "is a float_list"),
    (lambda f: f.update(input_ids=("bytes", [b"1"])), "is a bytes_list"),
    (lambda f: f.update(input_ids=b""), "is no list"),
    (lambda f: f.update(input_ids=("int64", [30000] + f["input_ids"][1][1:])), "input_ids holds 30000"),
    (lambda f: f.update(masked_lm_ids=("int64", [-5] + f["masked_lm_ids"][1][1:])), "masked_lm_ids holds -5"),
    (lambda f: f.update(masked_lm_positions=("int64", [16] + f["masked_lm_positions"][1][1:])),
     "masked_lm_positions holds 16"),
    (lambda f: f.update(masked_lm_positions=("int64", [1, 1] + f["masked_lm_positions"][1][2:]),
                        masked_lm_weights=("float", [1.0, 1.0] + f["masked_lm_weights"][1][2:])),
     "repeats a position"),
    (lambda f: f.update(masked_lm_weights=("float", [0.5] + f["masked_lm_weights"][1][1:])),
     "masked_lm_weights holds 0.5"),
])
def test_invalid_pretraining_record(tmp_path: Path, change: Any, message: str) -> None:
    features = upstream_like(270, seq_length=16, max_predictions=4)
    change(features[260])  # in the second batch: the first one goes through the fast path
    path = write(tmp_path, features)
    examples = read_pretraining_examples(path, vocab_size=21128)
    assert len([next(examples) for _ in range(260)]) == 260
    with pytest.raises(DataError, match=message) as exc:
        next(examples)
    located(exc, path, 260, offsets(features)[260])


def test_expected_shapes_are_enforced(tmp_path: Path) -> None:
    path = write(tmp_path, upstream_like(2, seq_length=16, max_predictions=4))
    with pytest.raises(DataError, match="sequence length 16, expected 128") as exc:
        list(read_pretraining_examples(path, seq_length=128))
    assert "max_seq_length" in str(exc.value.hint)
    with pytest.raises(DataError, match="4 masked-LM slots, expected 20"):
        list(read_pretraining_examples(path, max_predictions=20))


def test_padding_slots_with_zero_weight_are_not_labels(tmp_path: Path) -> None:
    """Upstream pads masked_lm_* with position 0, id 0, weight 0.0: position 0 ([CLS]) stays unlabelled."""
    path = write(tmp_path, upstream_like(5, seq_length=16, max_predictions=4))
    for ex in read_pretraining_examples(path):
        assert ex["labels"][0] == IGNORE_INDEX


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        list(read_pretraining_examples(tmp_path / "nope.tfrecord"))
    with pytest.raises(NotFoundError, match="is a directory"):
        list(iter_records(tmp_path))
    with pytest.raises(UsageError, match="compression"):
        list(iter_records(tmp_path / "x", compression="snappy"))  # type: ignore[arg-type]


def test_empty_file_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.tfrecord"
    path.write_bytes(b"")
    assert list(read_pretraining_examples(path)) == []


def test_huge_bogus_length_is_not_allocated(tmp_path: Path) -> None:
    header = struct.pack("<Q", 1 << 60)
    blob = header + struct.pack("<I", W.masked_crc(header)) + b"x" * 10
    for compression in ("none", "gzip"):
        path = W.write_bytes(tmp_path / f"x.{compression}", blob, compression=compression)
        with pytest.raises(DataError, match="ends inside the record"):
            list(iter_records(path))


def peak_bytes(read: Any) -> int:
    """The most memory Python objects held at once while ``read()`` ran (tracemalloc traces every bytes object)."""
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def expect_error(path: Path, match: str) -> Any:
    def read() -> None:
        with pytest.raises(DataError, match=match):
            list(iter_records(path))
    return read


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
@pytest.mark.parametrize("length", [1 << 60, 40 << 20])
def test_a_huge_length_in_a_compressed_stream_is_refused_before_reading(tmp_path: Path, compression: str,
                                                                       length: int) -> None:
    """A 40 KiB file that inflates to 40 MiB of zeros behind a header claiming 2^60 bytes (more than any deflate
    stream of that size holds) or 40 MiB (more than the largest record zoo reads): refused before any is read."""
    features = upstream_like(2)
    header = struct.pack("<Q", length)
    blob = b"".join(W.frame(W.example(f)) for f in features) + header + struct.pack("<I", W.masked_crc(header))
    path = W.write_bytes(tmp_path / f"x.{compression}", blob + bytes(40 << 20), compression=compression)
    assert path.stat().st_size < 100 << 10
    problem = "ends inside the record" if length == 1 << 60 else "larger than the largest record zoo reads"
    assert peak_bytes(expect_error(path, f"record 2 .*{problem}")) < 8 << 20


@pytest.mark.parametrize("compression", ["gzip", "zlib"])
def test_decompression_is_incremental(tmp_path: Path, compression: str) -> None:
    """Record 3 is damaged and 40 MiB of zeros follow: the error comes with little memory held, however well the
    rest of the stream compresses."""
    features = upstream_like(4)
    frames = [W.frame(W.example(f)) for f in features]
    frames[3] = W.frame(W.example(features[3]), bad_data_crc=True)
    path = W.write_bytes(tmp_path / f"x.{compression}", b"".join(frames) + bytes(40 << 20), compression=compression)
    assert peak_bytes(expect_error(path, "record 3 .*data CRC mismatch")) < 8 << 20


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_record_larger_than_the_maximum_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     compression: str) -> None:
    features = upstream_like(2)
    path = write(tmp_path, features, compression=compression)
    monkeypatch.setattr(tfrecord_module, "MAX_RECORD_BYTES", len(W.example(features[0])) - 1)
    with pytest.raises(DataError, match="larger than the largest record zoo reads") as exc:
        list(iter_records(path))
    located(exc, path, 0, 0)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """--tfrecord on a named pipe: refused at once like --corpus refuses it, instead of blocking in open."""
    fifo = tmp_path / "x.tfrecord"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            list(read_pretraining_examples(fifo))
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked reader go
        thread.join(10)
        pytest.fail("opening a FIFO blocked until a writer came")
    assert len(errors) == 1 and isinstance(errors[0], NotFoundError), errors
    assert f"{fifo}: is a fifo, not a regular file" in str(errors[0])


# --------------------------------------------------------------------------- real upstream files


@pytest.mark.parametrize("name", UPSTREAM)
def test_matches_tensorflow_on_upstream_files(name: str) -> None:
    """Every record of a file written by upstream create_pretraining_data.py decodes to exactly the values
    TensorFlow parsed from it (tests/fixtures/pretraining/<name>.tfrecord{,.json})."""
    path, reference = FIXTURES / f"{name}.tfrecord", FIXTURES / f"{name}.tfrecord.json"
    if not (path.is_file() and reference.is_file()):
        pytest.skip(f"{path.name} and its JSON are not generated yet (tests/fixtures/pretraining)")
    tf_records = json.loads(reference.read_text(encoding="utf-8"))  # [{feature: [numbers]}], file order
    ours = list(read_examples(path))
    assert len(ours) == len(tf_records)
    for index, (got, want) in enumerate(zip(ours, tf_records)):
        for feature, values in want.items():
            array = got[feature]
            assert isinstance(array, np.ndarray), (index, feature)
            expect = np.array(values, np.float32 if array.dtype == np.float32 else np.int64).reshape(-1)
            np.testing.assert_array_equal(array, expect, err_msg=f"record {index}, {feature}")
    examples = list(read_pretraining_examples(path))
    assert len(examples) == len(tf_records)
    for got_example, want in zip(examples, tf_records):
        features = {key: ("float" if key == "masked_lm_weights" else "int64", list(np.reshape(value, -1)))
                    for key, value in want.items()}
        assert_same(got_example, expected(features))  # type: ignore[arg-type]
    # and real upstream files take the batched fast path, not the record-by-record fallback
    assert _fast_batch(list(iter_records(path)), None, None, None) is not None
