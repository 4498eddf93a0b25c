"""TF → canonical conversion of the TensorFlow-written fixtures (tests/fixtures/tf, see its README)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from support.damage import flip

import zoo
from zoo.cli import main
from zoo.config import ModelConfig
from zoo.converters import CONVERTER_VERSION, convert, detect_scheme
from zoo.errors import CheckpointError, DiskSpaceError, UnsupportedError, UsageError
from zoo.tf import list_variables
from zoo.tf.writer import write_checkpoint
from zoo.weights import convert_release_dir

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
SUMMARY = {f["name"]: f for f in json.loads((FIXTURES / "fixtures.json").read_text(encoding="utf-8"))["fixtures"]}
# written from docs/architecture.md, independently of zoo.config.SCHEME_ARCHITECTURE
ARCH = {"google-bert": "bert", "google-albert": "albert", "brightmart-albert": "albert-brightmart"}

# canonical → TF name, written from docs/architecture.md independently of zoo/converters/*.py
_LAYER = {
    "google-bert": {"attention.query": "attention/self/query", "attention.key": "attention/self/key",
                    "attention.value": "attention/self/value", "attention.output": "attention/output/dense",
                    "attention_norm": "attention/output/LayerNorm", "intermediate": "intermediate/dense",
                    "output": "output/dense", "output_norm": "output/LayerNorm"},
    "google-albert": {"attention.query": "attention_1/self/query", "attention.key": "attention_1/self/key",
                      "attention.value": "attention_1/self/value", "attention.output": "attention_1/output/dense",
                      "attention_norm": "LayerNorm", "intermediate": "ffn_1/intermediate/dense",
                      "output": "ffn_1/intermediate/output/dense", "output_norm": "LayerNorm_1"},
}
_LAYER["brightmart-albert"] = _LAYER["google-bert"]
_FIXED = {"embeddings.word": "bert/embeddings/word_embeddings", "embeddings.position": "bert/embeddings/position_embeddings",
          "embeddings.token_type": "bert/embeddings/token_type_embeddings", "embeddings.norm": "bert/embeddings/LayerNorm",
          "embeddings.word_proj": "bert/embeddings/word_embeddings_2",
          "embeddings.mapping_in": "bert/encoder/embedding_hidden_mapping_in", "pooler": "bert/pooler/dense",
          "mlm.transform": "cls/predictions/transform/dense", "mlm.norm": "cls/predictions/transform/LayerNorm",
          "seq_relationship": "cls/seq_relationship"}


def tf_name(canonical: str, scheme: str, inner_groups: int) -> tuple[str, bool]:
    """(TF variable, transposed?) for a canonical parameter."""
    if canonical == "mlm.bias":
        return "cls/predictions/output_bias", False
    module, leaf = canonical.rsplit(".", 1)
    if module == "seq_relationship":
        return f"cls/seq_relationship/output_{'weights' if leaf == 'weight' else 'bias'}", False
    if module in ("embeddings.word", "embeddings.position", "embeddings.token_type"):
        return _FIXED[module], False
    if module == "embeddings.word_proj":
        return _FIXED[module], True
    m = re.fullmatch(r"layers\.(\d+)\.(.+)", module)
    if m:
        k, part = int(m.group(1)), m.group(2)
        scope = {"google-bert": f"bert/encoder/layer_{k}", "brightmart-albert": "bert/encoder/layer_shared",
                 "google-albert": f"bert/encoder/transformer/group_{k // inner_groups}/inner_group_{k % inner_groups}"}[scheme]
        path = f"{scope}/{_LAYER[scheme][part]}"
    else:
        path = _FIXED[module]
    if module.endswith("norm"):
        return f"{path}/{'gamma' if leaf == 'weight' else 'beta'}", False
    return f"{path}/{'kernel' if leaf == 'weight' else 'bias'}", leaf == "weight"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("converted")
    return {name: convert(FIXTURES / name, out / name) for name in SUMMARY}


@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_converted_tensors_equal_the_tensorflow_values(converted: dict[str, Path], name: str) -> None:
    spec = SUMMARY[name]
    out = converted[name]
    config = ModelConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert config.architecture == ARCH[spec["scheme"]]
    tensors = load_file(out / "model.safetensors")
    values = dict(np.load(FIXTURES / name / "variables.npz"))
    used = set()
    for canonical, tensor in tensors.items():
        source, transpose = tf_name(canonical, spec["scheme"], config.inner_group_num)
        expected = values[source].T if transpose else values[source]
        assert tensor.dtype == getattr(torch, spec["dtype"]), canonical
        assert np.array_equal(tensor.numpy(), expected), f"{canonical} != {source}"
        used.add(source)
    model_vars = {n for n in values if n != "global_step"}
    assert used == model_vars  # every model variable landed somewhere, once
    expected_count = config.param_count() + (config.head_param_count() if spec["heads"] else 0)
    assert sum(t.numel() for t in tensors.values()) == expected_count


@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_config_is_read_with_upstream_meaning(converted: dict[str, Path], name: str) -> None:
    spec = SUMMARY[name]
    upstream = json.loads((FIXTURES / name / spec["config"]).read_text())
    config = json.loads((converted[name] / "config.json").read_text())
    assert config["hidden_act"] == {"gelu": "gelu_new", "relu": "relu"}[upstream["hidden_act"]]
    assert config["num_hidden_layers"] == upstream["num_hidden_layers"]
    assert config["ln_type"] == upstream.get("ln_type", "postln")
    if spec["scheme"] == "google-albert":
        assert (config["num_hidden_groups"], config["inner_group_num"]) == \
            (upstream["num_hidden_groups"], upstream["inner_group_num"])
    if spec["scheme"] == "google-bert":
        assert "embedding_size" not in config


def test_receipt_and_metadata(converted: dict[str, Path]) -> None:
    out = converted["albert_google_adam"]
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["scheme"] == "google-albert" and receipt["converter_version"] == CONVERTER_VERSION
    assert receipt["zoo_version"] == zoo.__version__ and receipt["kind"] == "conversion"
    assert receipt["skipped"]["by_kind"] == {"adam_m": 32, "adam_v": 32, "global_step": 1}
    assert receipt["skipped"]["count"] == 65 and "global_step" in receipt["skipped"]["names"]
    assert receipt["heads"] == ["mlm", "seq_relationship"]
    source = FIXTURES / "albert_google_adam"
    inputs = {r["path"]: r for r in receipt["inputs"]}
    assert set(inputs) == {"model.ckpt-1000.index", "model.ckpt-1000.data-00000-of-00001", "albert_config.json",
                           "vocab_chinese.txt"}
    for path, record in inputs.items():
        assert record["sha256"] == hashlib.sha256((source / path).read_bytes()).hexdigest()
    for path, record in inputs.items():
        assert record["size"] == (source / path).stat().st_size
    assert {r["path"] for r in receipt["outputs"]} == {"config.json", "model.safetensors", "vocab.txt"}
    for record in receipt["outputs"]:  # hashed while written: must equal a fresh hash of the file
        data = (out / record["path"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["size"] == len(data)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "receipt.json", "vocab.txt"]
    with safe_open(out / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["zoo.scheme"] == "google-albert" and meta["zoo.converter_version"] == str(CONVERTER_VERSION)
    assert "zoo.source_sha256" not in meta  # a release directory on disk has no source hash; the receipt has inputs
    lamb = json.loads((converted["albert_brightmart_lamb"] / "receipt.json").read_text())
    assert lamb["skipped"]["by_kind"] == {"global_step": 1, "lamb_m": 31, "lamb_v": 31}
    headless = json.loads((converted["bert_fp16_headless"] / "receipt.json").read_text())
    assert headless["heads"] == []


def test_vocab_normalization(converted: dict[str, Path]) -> None:
    source = (FIXTURES / "albert_google" / "vocab_chinese.txt").read_text(encoding="utf-8").splitlines()
    assert "\t" in source[0] and source[96].split("\t")[0] == source[10].split("\t")[0] == "了"
    tokens = (converted["albert_google"] / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    # google-research/albert's load_vocab: ids follow first appearance, so the repeated line is dropped, and the
    # last embedding row, which no token reaches any more, keeps its line as a placeholder (line = id, as always)
    assert len(source) == 97 and len(tokens) == 97
    assert all("\t" not in t and " " not in t for t in tokens)
    assert tokens[10] == "了" and tokens.count("了") == 1
    assert tokens[:96] == [line.split("\t")[0] for line in source[:96]] and tokens[96] == "[zoo-unused-96]"
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    receipt = json.loads((converted["albert_google"] / "receipt.json").read_text())
    assert receipt["vocab"]["duplicates"] == {"96": 10}
    plain = FIXTURES / "bert" / "vocab.txt"
    assert (converted["bert"] / "vocab.txt").read_bytes() == plain.read_bytes()


def test_vocab_duplicates_follow_the_upstream_tokenizer(tmp_path: Path) -> None:
    from zoo.converters.vocab import read_vocab

    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\t0\n你 -1.5\n好\n你\n\n们\n\n", encoding="utf-8")
    albert = read_vocab(path, compact=True)  # google-research/albert: ids in order of first appearance
    assert albert.tokens == ["[PAD]", "你", "好", "[zoo-empty]", "们"]
    assert albert.duplicates == {3: 1, 6: 3} and albert.empty == [4, 6]
    bert = read_vocab(path)  # google-research/bert: id = line number; first occurrence keeps the token
    assert bert.tokens == ["[PAD]", "你", "好", "[zoo-dup-3]", "[zoo-empty-4]", "们", "[zoo-empty-6]"]
    assert bert.duplicates == {3: 1}


def test_casing_is_inferred_from_the_vocab() -> None:
    from zoo.converters.vocab import looks_cased

    uncased = ["[PAD]", "[UNK]", "the", "##ing", "你", "好"] * 10
    assert not looks_cased(uncased)
    assert looks_cased(uncased + ["The", "He", "Paris", "##A"] * 5)


def test_receipt_records_the_inferred_casing(converted: dict[str, Path]) -> None:
    receipt = json.loads((converted["bert"] / "receipt.json").read_text())
    assert receipt["tokenizer"] == {"lowercase": True, "strip_accents": None, "inferred_from": "vocab"}


# ------------------------------------------------------------------------------------------- schemes
@pytest.mark.parametrize("name", sorted(SUMMARY))
def test_scheme_detection(name: str) -> None:
    assert detect_scheme(v.name for v in list_variables(FIXTURES / name)) == SUMMARY[name]["scheme"]


def test_scheme_detection_failures() -> None:
    with pytest.raises(UnsupportedError, match="TF2/Keras"):
        detect_scheme(["model/layer_with_weights-0/.ATTRIBUTES/VARIABLE_VALUE", "_CHECKPOINTABLE_OBJECT_GRAPH"])
    with pytest.raises(CheckpointError, match="cannot tell the naming scheme"):
        detect_scheme(["dense/kernel", "global_step"])
    with pytest.raises(CheckpointError, match="mix"):
        detect_scheme(["bert/encoder/layer_0/output/dense/kernel", "bert/encoder/layer_shared/output/dense/kernel"])
    # a name is brightmart's projection only when it is exactly that name (`$` would accept a trailing newline)
    assert detect_scheme(["bert/encoder/layer_0/output/dense/kernel", "bert/embeddings/word_embeddings_2\n"]) == \
        "google-bert"


def test_explicit_wrong_scheme_lists_unmapped_and_missing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as exc:
        convert(FIXTURES / "albert_brightmart", tmp_path / "out", scheme="google-albert",
                config=FIXTURES / "albert_google" / "albert_config.json")
    text = str(exc.value)
    assert "bert/encoder/layer_shared/attention/self/query/kernel" in text
    assert "bert/encoder/transformer/group_0/inner_group_0/LayerNorm/gamma" in text
    assert not (tmp_path / "out").exists()


def _variant(tmp_path: Path, source: str, change) -> Path:
    """A copy of a fixture whose checkpoint is rewritten with ``change(values)`` applied."""
    target = tmp_path / source
    shutil.copytree(FIXTURES / source, target)
    spec = SUMMARY[source]
    values = dict(np.load(FIXTURES / source / "variables.npz"))
    change(values)
    for path in target.glob(spec["prefix"] + ".*"):
        path.unlink()
    write_checkpoint(target / spec["prefix"], values)
    return target


def test_unmapped_variable_is_an_error(tmp_path: Path) -> None:
    src = _variant(tmp_path, "bert", lambda v: v.update({"output_bias": np.zeros(3, np.float32),
                                                        "bert/encoder/layer_0/extra/kernel": np.zeros((2, 2), np.float32)}))
    with pytest.raises(CheckpointError, match=r"2 variable\(s\) that the google-bert scheme does not map:\n"
                                              r"  bert/encoder/layer_0/extra/kernel\n  output_bias"):
        convert(src, tmp_path / "out")


def test_missing_variable_is_an_error(tmp_path: Path) -> None:
    src = _variant(tmp_path, "bert", lambda v: v.pop("bert/encoder/layer_1/output/LayerNorm/beta"))
    with pytest.raises(CheckpointError, match=r"1 expected variable\(s\) missing.*\n  bert/encoder/layer_1/output/LayerNorm/beta"):
        convert(src, tmp_path / "out")


def test_half_a_head_is_an_error(tmp_path: Path) -> None:
    src = _variant(tmp_path, "albert_google", lambda v: v.pop("cls/predictions/output_bias"))
    with pytest.raises(CheckpointError, match="cls/predictions/output_bias"):
        convert(src, tmp_path / "out")


def test_config_with_more_layers_than_weights(tmp_path: Path) -> None:
    config = json.loads((FIXTURES / "bert" / "bert_config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"missing.*\n(.*\n)*  bert/encoder/layer_2/attention/self/query/kernel"):
        convert(FIXTURES / "bert", tmp_path / "out", config=tmp_path / "c.json")


@pytest.mark.parametrize("key, value, message", [
    ("vocab_size", 120, r"bert/embeddings/word_embeddings: expected \[120, 16\], found \[97, 16\]"),
    ("intermediate_size", 48, r"ffn_1/intermediate/dense/kernel: expected \[32, 48\], found \[32, 64\]"),
    ("embedding_size", 8, r"bert/embeddings/word_embeddings: expected \[97, 8\], found \[97, 16\]"),
])
def test_shape_mismatch_names_variable_expected_and_found(tmp_path: Path, key: str, value: int, message: str) -> None:
    config = json.loads((FIXTURES / "albert_google" / "albert_config.json").read_text())
    config[key] = value
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        convert(FIXTURES / "albert_google", tmp_path / "out", config=tmp_path / "c.json")


def test_inconsistent_config_is_rejected(tmp_path: Path) -> None:
    config = json.loads((FIXTURES / "bert" / "bert_config.json").read_text())
    config["num_attention_heads"] = 5
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not divisible by num_attention_heads 5"):
        convert(FIXTURES / "bert", tmp_path / "out", config=tmp_path / "c.json")


def test_vocab_larger_than_the_model_is_rejected(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"t{i}\n" for i in range(200)))
    with pytest.raises(CheckpointError, match="200 tokens, but the model has vocab_size 97"):
        convert(FIXTURES / "bert", tmp_path / "out", vocab=vocab)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("layer_norm_eps", float("nan"), "expected a finite number, got nan"),
    ("num_attention_heads", True, "expected an integer, got a boolean"),
    ("hidden_size", "32", "expected an integer, got a string '32'"),
    ("intermediate_size", 64.0, "expected an integer, got a number 64.0"),
    ("initializer_range", -0.02, "must be > 0, got -0.02"),
    ("hidden_act", "swish", "expected one of relu, gelu, gelu_new, got 'swish'"),
    ("num_hidden_layers", None, "expected an integer, got null"),
])
@pytest.mark.parametrize("kind", ["upstream", "zoo"])
def test_config_values_are_checked(tmp_path: Path, converted: dict[str, Path], kind: str, key: str, value,
                                   message: str) -> None:
    """An upstream albert_config.json and a zoo config.json alike: every value's type and range, named by file
    and key, before any tensor is read."""
    source = FIXTURES / "albert_google" / "albert_config.json" if kind == "upstream" else \
        converted["albert_google"] / "config.json"
    config = json.loads(source.read_text())
    config[key] = value
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: {key}: {message}")):
        convert(FIXTURES / "albert_google", tmp_path / "out", config=path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["bert", "albert_google"])
def test_a_vocab_shorter_than_the_embedding_table_is_rejected(tmp_path: Path, name: str) -> None:
    """Fewer tokens than embedding rows is only what google-research/albert's load_vocab does with repeated lines;
    a 10-token vocab for 97 rows (2 repeated lines do not explain 87 rows) belongs to another model."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(f"t{i}\n" for i in range(10)) + "t3\nt4\n")
    dropped = " (2 repeated lines dropped)" if name == "albert_google" else ""
    tokens = 10 if name == "albert_google" else 12
    with pytest.raises(CheckpointError, match=re.escape(f"{vocab}: {tokens} tokens{dropped} for the 97 embedding "
                                                        "rows")):
        convert(FIXTURES / name, tmp_path / "out", vocab=vocab)


# --------------------------------------------------------------------------------------- inputs/outputs
def test_bare_prefix_with_modelconfig_and_dtype(tmp_path: Path) -> None:
    upstream = json.loads((FIXTURES / "albert_brightmart_lamb" / "albert_config_tiny.json").read_text())
    config = ModelConfig.from_upstream(upstream, "albert-brightmart")
    out = convert(FIXTURES / "albert_brightmart_lamb" / "model.ckpt-100", tmp_path / "out", config=config,
                  scheme="brightmart-albert", vocab=FIXTURES / "bert" / "vocab.txt", dtype="bfloat16")
    tensors = load_file(out / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    values = np.load(FIXTURES / "albert_brightmart_lamb" / "variables.npz")
    proj = torch.from_numpy(values["bert/embeddings/word_embeddings_2"].T.copy()).to(torch.bfloat16)
    assert torch.equal(tensors["embeddings.word_proj.weight"], proj)
    assert json.loads((out / "config.json").read_text()) == config.to_dict()


def test_zoo_config_json_is_accepted(tmp_path: Path, converted: dict[str, Path]) -> None:
    out = convert(FIXTURES / "albert_google_groups", tmp_path / "out", config=converted["albert_google_groups"] / "config.json")
    assert (out / "config.json").read_bytes() == (converted["albert_google_groups"] / "config.json").read_bytes()


def test_output_is_atomic_when_the_disk_fills_up(small_disk) -> None:
    disk = small_disk(512 << 10)
    (disk / "filler").write_bytes(b"\0" * ((512 << 10) - (60 << 10)))  # ~60 KiB left: the weights need more
    with pytest.raises(DiskSpaceError, match="filled up while writing"):
        convert(FIXTURES / "bert", disk / "out")
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # neither the output nor its staging is left
    assert main(["convert", str(FIXTURES / "bert"), str(disk / "out")]) == DiskSpaceError.exit_code


def test_existing_output_is_refused_but_an_empty_directory_is_filled(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(UsageError, match="already exists"):
        convert(FIXTURES / "bert", tmp_path / "full")
    (tmp_path / "empty").mkdir()
    assert (convert(FIXTURES / "bert", tmp_path / "empty") / "receipt.json").is_file()


def test_the_working_directory_as_output_is_filled_in_place(tmp_path: Path, monkeypatch) -> None:
    from zoo.weights import prepare

    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["convert", str(FIXTURES / "bert"), "."]) == 0
    assert Path.cwd().samefile(here)  # the directory the shell stands in was kept, not replaced
    assert {"receipt.json", "model.safetensors", "config.json"} <= {p.name for p in Path(".").iterdir()}
    assert not list(tmp_path.glob(".*tmp-*")) and not list(here.glob(".*tmp-*"))
    assert prepare(".").path == here  # one directory, one spelling


def test_release_layout_errors(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "bert", tmp_path / "r")
    (tmp_path / "r" / "vocab.txt").unlink()
    with pytest.raises(zoo.NotFoundError, match="no vocab"):
        convert(tmp_path / "r", tmp_path / "out")
    (tmp_path / "r" / "bert_config.json").unlink()
    with pytest.raises(zoo.NotFoundError, match="no \\*config\\*.json"):
        convert(tmp_path / "r", tmp_path / "out", vocab=FIXTURES / "bert" / "vocab.txt")
    with pytest.raises(UsageError, match="dtype"):
        convert(FIXTURES / "bert", tmp_path / "out", dtype="int8")


# ---------------------------------------------------------------------------------------- on demand
def test_a_release_directory_is_converted_once_into_the_cache(tmp_path: Path) -> None:
    release = tmp_path / "albert_google"
    shutil.copytree(FIXTURES / "albert_google", release)
    first = convert_release_dir(release)
    assert first.name.endswith(f"-c{CONVERTER_VERSION}") and first.parent.name == "converted"
    inode = (first / "model.safetensors").stat().st_ino
    assert convert_release_dir(release) == first and (first / "model.safetensors").stat().st_ino == inode
    (release / "albert_config.json").touch()  # the release changed (mtime): converted afresh
    assert convert_release_dir(release) != first


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_ckpt_ls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ckpt", "ls", str(FIXTURES / "dtypes")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 8
    assert re.fullmatch(r"f32\s+float32\s+\[3, 4\]", lines[2]) and re.fullmatch(r"i64\s+int64\s+\[\]", lines[5])
    assert main(["ckpt", "ls", str(FIXTURES / "bert"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"name": "bert/embeddings/word_embeddings", "dtype": "float32", "shape": [97, 32]} in listed
    assert len(listed) == 46


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["convert", str(FIXTURES / "albert_google_adam"), str(out), "--dtype", "float16"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert "google-albert" in captured.err and "skipped 65" in captured.err
    assert load_file(out / "model.safetensors")["pooler.weight"].dtype == torch.float16
    assert main(["convert", str(FIXTURES / "bert"), str(out)]) == UsageError.exit_code
    assert main(["convert", str(FIXTURES / "bert"), str(tmp_path / "o2"), "--scheme", "brightmart-albert"]) == \
        CheckpointError.exit_code
    assert "bert_config.json: embedding_size: required for ALBERT" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the fast path
def test_convert_does_not_import_torch(tmp_path: Path) -> None:
    code = ("import sys; from zoo.cli import main; rc = main(['convert', '-q', sys.argv[1], sys.argv[2]]); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(FIXTURES / "albert_google_adam"), str(tmp_path / "out")],
                   check=True)


def test_small_reads_and_bands_give_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   converted: dict[str, Path]) -> None:
    """Reads of 24 bytes and transposes in bands of 96 bytes (three recycled buffers, every kernel in many
    pieces): the same file as the default sizes."""
    import zoo.converters.tf as tf_converter

    monkeypatch.setattr(tf_converter, "_READ_CHUNK", 24)
    monkeypatch.setattr(tf_converter, "_BAND_BYTES", 96)
    for name in ("albert_google_groups", "albert_brightmart_lamb", "bert_fp16_headless"):
        out = convert(FIXTURES / name, tmp_path / name)
        assert (out / "model.safetensors").read_bytes() == (converted[name] / "model.safetensors").read_bytes()
    out = convert(FIXTURES / "bert", tmp_path / "bf16", dtype="bfloat16")
    values = dict(np.load(FIXTURES / "bert" / "variables.npz"))
    tensors = load_file(out / "model.safetensors")
    kernel = torch.from_numpy(values["bert/encoder/layer_1/intermediate/dense/kernel"].T.copy())
    assert torch.equal(tensors["layers.1.intermediate.weight"], kernel.to(torch.bfloat16))


def test_casts_match_torch() -> None:
    from zoo.converters.arrays import cast

    rng = np.random.default_rng(0)
    special = [0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-7 + 2**-9, 3.4e38, -3.4e38, np.inf, -np.inf, 1e-40,
               1e-45, 65504.0, 65520.0, 6e-8, 2.9e-8, 1 / 3]
    x = np.concatenate([np.array(special, np.float32),
                        (rng.standard_normal(20000) * 10.0 ** rng.integers(-40, 38, 20000)).astype(np.float32)])
    t = torch.from_numpy(x)
    bits = lambda b: b.view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(cast(x, "float32", "bfloat16"), bits(t.to(torch.bfloat16)))
    assert np.array_equal(cast(x, "float32", "float16"), t.to(torch.float16).numpy())
    b = t.to(torch.bfloat16)
    assert np.array_equal(cast(bits(b), "bfloat16", "float32"), b.float().numpy())
    assert np.array_equal(cast(bits(b), "bfloat16", "float16"), b.to(torch.float16).numpy())
    h = t.to(torch.float16)
    assert np.array_equal(cast(h.numpy(), "float16", "bfloat16"), bits(h.to(torch.bfloat16)))
    d = torch.from_numpy(np.array([1 + 2**-11 + 2**-40, 1 + 2**-8 + 2**-40, 1e-300, 1e300, -7.1]))
    assert np.array_equal(cast(d.numpy(), "float64", "float16"), d.to(torch.float16).numpy())
    assert np.array_equal(cast(d.numpy(), "float64", "bfloat16"), bits(d.to(torch.bfloat16)))
    assert cast(np.array([np.nan], np.float32), "float32", "bfloat16")[0] == 0x7FC0


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 256), (65, 257), (300, 7), (7, 1000)])
def test_tiled_transpose(shape: tuple[int, int]) -> None:
    from zoo.converters.arrays import transposed, transposed_bands

    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    assert np.array_equal(transposed(x), x.T)
    for band_bytes in (1, 100, 4096, 1 << 20):
        assert np.array_equal(np.concatenate(list(transposed_bands(x, band_bytes=band_bytes))), x.T)


def test_verified_input_hashes_are_not_recomputed(tmp_path: Path) -> None:
    """convert_release(known_sha256=...) (a cache snapshot's verified record) records those digests instead of
    hashing again; each tensor's CRC32C is still checked."""
    from zoo.converters.tf import convert_release, find_release

    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "bert", src)
    release = find_release(src)
    known = {p: f"{i:064x}" for i, p in enumerate(sorted(src.iterdir()))}
    out = convert_release(release, tmp_path / "out", known_sha256=known)
    inputs = {r["path"]: r for r in json.loads((out / "receipt.json").read_text())["inputs"]}
    for path, digest in known.items():
        if path.name in inputs:
            assert inputs[path.name]["sha256"] == digest and inputs[path.name]["hashed"] == "verified snapshot"
    data = src / "bert_model.ckpt.data-00000-of-00001"
    flip(data, data.stat().st_size // 2, keep_stamp=False)
    with pytest.raises(zoo.IntegrityError, match="CRC32C mismatch"):
        convert_release(release, tmp_path / "out2", known_sha256=known)
    assert not (tmp_path / "out2").exists()
