"""The TensorFlow checkpoint reader against checkpoints written by real TensorFlow (tests/fixtures/tf)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.damage import flip

import zoo
from zoo.errors import CheckpointError, IntegrityError, NotFoundError, UnsupportedError, UsageError
from zoo.tf import ShardReader, TensorBundle, find_prefix, list_variables, read_tf_checkpoint
from zoo.tf.table import crc32c, mask_crc
from zoo.tf.writer import entry_proto, header_proto, table_bytes, write_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
MODEL_FIXTURES = sorted(p.name for p in FIXTURES.iterdir() if (p / "reference.npz").is_file())


def recorded(name: str) -> dict[str, np.ndarray]:
    """Every stored variable's value as recorded by make_tf_fixtures.py (slots derived as documented)."""
    return dict(np.load(FIXTURES / name / "variables.npz"))


def expected_slot(values: dict[str, np.ndarray], name: str) -> np.ndarray:
    base, slot = name.rsplit("/", 1)
    value = values[base]
    return value * value.dtype.type(0.5) if slot.endswith("_m") else value * value


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()


@pytest.mark.parametrize("name", MODEL_FIXTURES + ["dtypes", "sharded"])
def test_every_variable_round_trips_exactly(name: str) -> None:
    values = recorded(name)
    ckpt = read_tf_checkpoint(FIXTURES / name)
    checked = 0
    for var in ckpt:
        if var == "text":
            continue
        expected = values[var] if var in values else expected_slot(values, var)
        got = ckpt[var]
        assert tuple(got.shape) == expected.shape, var
        assert np.array_equal(as_numpy(got), expected), var
        checked += 1
    assert checked == len(ckpt) - (name == "dtypes")
    assert checked >= len(values)


def test_dtypes_are_reported_and_mapped() -> None:
    info = {v.name: v for v in list_variables(FIXTURES / "dtypes")}
    assert {n: v.dtype for n, v in info.items()} == {
        "bf16": "bfloat16", "f16": "float16", "f32": "float32", "f64": "float64", "i32": "int32",
        "i64": "int64", "scope/nested/empty": "float32", "text": "string"}
    assert info["i64"].shape == () and info["scope/nested/empty"].shape == (0, 3)
    ckpt = read_tf_checkpoint(FIXTURES / "dtypes")
    assert ckpt["bf16"].dtype == torch.bfloat16 and ckpt["f16"].dtype == torch.float16
    assert ckpt["i64"].item() == 2**40 + 3
    assert ckpt["scope/nested/empty"].shape == (0, 3)


def test_unsupported_dtype_is_a_clear_error() -> None:
    ckpt = read_tf_checkpoint(FIXTURES / "dtypes")
    with pytest.raises(UnsupportedError, match=r"'text' has unsupported dtype string"):
        ckpt["text"]


def test_multiple_data_shards() -> None:
    ckpt = read_tf_checkpoint(FIXTURES / "sharded")
    assert len(ckpt.data_files) == 2
    assert {v.shard for v in ckpt.variables.values()} == {0, 1}
    assert ckpt["layer_b/kernel"].tolist() == [[-0.0, -1.0], [-2.0, -3.0]]


def test_partitioned_variable_is_listed_but_unsupported() -> None:
    info = {v.name: v for v in list_variables(FIXTURES / "partitioned")}
    assert info["w"].partitioned and info["w"].shape == (4, 2)
    ckpt = read_tf_checkpoint(FIXTURES / "partitioned")
    assert ckpt["plain"].tolist() == [1.0, 2.0]
    with pytest.raises(UnsupportedError, match="partitioned"):
        ckpt["w"]


def test_reads_are_zero_copy_views_and_writes_stay_private(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "bert", tmp_path / "bert")
    data = tmp_path / "bert" / "bert_model.ckpt.data-00000-of-00001"
    before = data.read_bytes()
    ckpt = read_tf_checkpoint(tmp_path / "bert")
    a = ckpt["bert/pooler/dense/kernel"]
    b = ckpt["bert/pooler/dense/kernel"]
    assert a.data_ptr() == b.data_ptr()  # both view the same mapped bytes: no copy was made
    a.add_(1.0)
    ckpt.close()
    assert data.read_bytes() == before


def test_mapping_protocol_and_public_entry_point() -> None:
    ckpt = zoo.read_tf_checkpoint(FIXTURES / "bert")
    assert isinstance(ckpt, TensorBundle)
    assert "bert/pooler/dense/bias" in ckpt and "nope" not in ckpt
    assert len(ckpt) == len(list(ckpt)) == 46
    with pytest.raises(KeyError):
        ckpt["nope"]


def test_path_resolution(tmp_path: Path) -> None:
    prefix = FIXTURES / "bert" / "bert_model.ckpt"
    for given in (FIXTURES / "bert", prefix, f"{prefix}.index", f"{prefix}.data-00000-of-00001"):
        assert find_prefix(given) == prefix
    # several checkpoints: the `checkpoint` file decides, otherwise it is ambiguous
    for name in ("a", "b"):
        write_checkpoint(tmp_path / name, {"x": np.zeros(2, np.float32)})
    with pytest.raises(UsageError, match="holds 2 checkpoints"):
        find_prefix(tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "b"\n')
    assert find_prefix(tmp_path) == tmp_path / "b"
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no TensorFlow checkpoint"):
        find_prefix(tmp_path / "empty")
    with pytest.raises(NotFoundError, match="no such checkpoint index"):
        read_tf_checkpoint(tmp_path / "missing")


def test_list_variables_does_not_import_torch() -> None:
    code = ("import sys, zoo.tf; v = zoo.tf.list_variables(sys.argv[1]); "
            "assert len(v) == 46, v; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(FIXTURES / "bert")], check=True)


def test_writer_matches_tensorflow_bytes(tmp_path: Path) -> None:
    """The writer reproduces TensorFlow's own files, so damaged copies below are realistic (more in
    test_tf_export.py)."""
    write_checkpoint(tmp_path / "bert_model.ckpt", recorded("bert"))
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / f"bert_model.ckpt{suffix}").read_bytes() == \
            (FIXTURES / "bert" / f"bert_model.ckpt{suffix}").read_bytes()


# --------------------------------------------------------------------------------------- damaged files
@pytest.fixture
def bert_copy(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURES / "bert", tmp_path / "bert")
    return tmp_path / "bert" / "bert_model.ckpt"


def test_corrupted_tensor_bytes_fail_the_crc(bert_copy: Path) -> None:
    ckpt = read_tf_checkpoint(bert_copy)
    var = ckpt.variables["bert/encoder/layer_1/output/dense/kernel"]
    flip(Path(f"{bert_copy}.data-00000-of-00001"), var.offset + var.size // 2, keep_stamp=False, mask=0x40)
    ckpt = read_tf_checkpoint(bert_copy)
    with pytest.raises(IntegrityError, match=r"CRC32C mismatch for variable 'bert/encoder/layer_1/output/dense/kernel'") as exc:
        ckpt[var.name]
    assert "data-00000-of-00001" in str(exc.value)
    ckpt["bert/pooler/dense/kernel"]  # other variables still read fine
    unverified = TensorBundle(bert_copy, verify=False)
    assert unverified[var.name].shape == var.shape


def test_corrupted_index_block_fails_the_crc(bert_copy: Path) -> None:
    flip(Path(f"{bert_copy}.index"), 40, keep_stamp=False, mask=0x40)
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index: CRC32C mismatch in data block"):
        read_tf_checkpoint(bert_copy)


@pytest.mark.parametrize("keep", [0, 10, 47, 500, -30])
def test_truncated_index_is_a_clear_error(bert_copy: Path, keep: int) -> None:
    index = Path(f"{bert_copy}.index")
    data = index.read_bytes()
    index.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(CheckpointError, match=r"bert_model\.ckpt\.index: .*(too short|truncated|bad magic)"):
        read_tf_checkpoint(bert_copy)


def test_truncated_data_file_names_the_variable(bert_copy: Path) -> None:
    data = Path(f"{bert_copy}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"data-00000-of-00001: truncated: variable '.*' needs bytes"):
        read_tf_checkpoint(bert_copy)


def test_wrong_magic(tmp_path: Path) -> None:
    bogus = tmp_path / "model.ckpt.index"
    bogus.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(CheckpointError, match="not a TensorFlow checkpoint index.*bad magic"):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_missing_shard(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "sharded", tmp_path / "s")
    (tmp_path / "s" / "model.ckpt.data-00001-of-00002").unlink()
    with pytest.raises(CheckpointError, match=r"model\.ckpt\.data-00001-of-00002: data shard is missing"):
        read_tf_checkpoint(tmp_path / "s")


def _index_with(tmp_path: Path, entries: list[tuple[bytes, bytes]]) -> Path:
    (tmp_path / "m.data-00000-of-00001").write_bytes(b"\x00" * 16)
    (tmp_path / "m.index").write_bytes(table_bytes(entries))
    return tmp_path / "m"


def test_big_endian_checkpoint_is_unsupported(tmp_path: Path) -> None:
    prefix = _index_with(tmp_path, [(b"", header_proto(1, endianness=1)),
                                    (b"x", entry_proto("float32", [2], 0, 0, 8, 0))])
    with pytest.raises(UnsupportedError, match="big-endian"):
        read_tf_checkpoint(prefix)


def test_garbled_entry_and_inconsistent_size(tmp_path: Path) -> None:
    prefix = _index_with(tmp_path, [(b"", header_proto()), (b"x", b"\x08\xff")])
    with pytest.raises(CheckpointError, match=r"garbled entry for key b'x'"):
        read_tf_checkpoint(prefix)
    prefix = _index_with(tmp_path, [(b"", header_proto()), (b"x", entry_proto("float32", [3], 0, 0, 8, 0))])
    with pytest.raises(CheckpointError, match=r"'x' \(float32\[3\]\) should take 12 bytes, the index says 8"):
        read_tf_checkpoint(prefix)
    prefix = _index_with(tmp_path, [(b"x", entry_proto("float32", [2], 0, 0, 8, 0))])
    with pytest.raises(CheckpointError, match="no bundle header entry"):
        read_tf_checkpoint(prefix)


# ------------------------------------------------------------------------------------ streaming reads
def _collect(reader: ShardReader) -> dict[str, bytes]:
    got: dict[str, bytes] = {}
    for var, chunk in reader:
        got[var.name] = got.get(var.name, b"") + chunk
    return got


def test_shard_reader_hashes_every_shard_while_reading(tmp_path: Path) -> None:
    ckpt = read_tf_checkpoint(FIXTURES / "sharded")
    wanted = ["layer_a/kernel", "layer_b/kernel"]  # one per shard; the others are read for the hash only
    with ShardReader(ckpt, wanted, chunk=8) as reader:
        assert [v.name for v in reader.order] == wanted
        got = _collect(reader)
    values = recorded("sharded")
    assert {k: np.frombuffer(v, np.float32).reshape(values[k].shape).tolist() for k, v in got.items()} == \
        {k: values[k].tolist() for k in wanted}
    assert [(d.path, d.sha256, d.size) for d in reader.digests] == \
        [(p, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size) for p in ckpt.data_files]
    with ShardReader(ckpt, wanted, sha256=False) as reader:
        assert _collect(reader) == got and reader.digests == []


def test_shard_reader_checks_crcs_of_what_it_returns(bert_copy: Path) -> None:
    ckpt = read_tf_checkpoint(bert_copy)
    var = ckpt.variables["bert/encoder/layer_1/output/dense/kernel"]
    flip(Path(f"{bert_copy}.data-00000-of-00001"), var.offset + 3, keep_stamp=False, mask=0x40)
    ckpt = read_tf_checkpoint(bert_copy)
    others = [n for n in ckpt if n != var.name]
    with ShardReader(ckpt, others) as reader:  # the damaged variable is hashed, not checked
        assert set(_collect(reader)) == set(others)
    with ShardReader(ckpt, list(ckpt), chunk=64) as reader, \
            pytest.raises(IntegrityError, match=f"CRC32C mismatch for variable '{var.name}'"):
        _collect(reader)
    with ShardReader(ckpt, list(ckpt), chunk=64) as reader:  # abandoned half way: close() stops the thread
        next(iter(reader))
    assert not reader._thread.is_alive()


def test_shard_reader_handles_gaps_and_overlaps(tmp_path: Path) -> None:
    """TensorFlow never writes them, but an index may place variables with gaps or overlaps: every byte of the
    file is still hashed once, and every variable gets its own bytes."""
    data = bytes(range(24))
    (tmp_path / "m.data-00000-of-00001").write_bytes(data)

    def entry(offset: int, size: int) -> bytes:
        return entry_proto("float32", [size // 4], 0, offset, size, mask_crc(crc32c(data[offset:offset + size])))

    (tmp_path / "m.index").write_bytes(table_bytes([(b"", header_proto()), (b"a", entry(0, 8)),
                                                    (b"b", entry(4, 8)), (b"c", entry(16, 4)),
                                                    (b"empty", entry(20, 0))]))
    ckpt = read_tf_checkpoint(tmp_path / "m")
    with ShardReader(ckpt, ["a", "b", "c", "empty"], chunk=8) as reader:
        got = _collect(reader)
    assert got == {"a": data[0:8], "b": data[4:12], "c": data[16:20], "empty": b""}
    assert reader.digests[0].sha256 == hashlib.sha256(data).hexdigest() and reader.digests[0].size == 24
