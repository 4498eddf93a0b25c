"""zoo → upstream TensorFlow releases (``zoo export --format tf``) and the TensorBundle writer, against what
TensorFlow and the upstream modeling code recorded (tests/fixtures/tf_export, made by
tests/fixtures/make_tf_export_fixtures.py; see tests/fixtures/README.md). No TensorFlow here."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.fixtures import sha256

import zoo
from zoo.cli import main
from zoo.config import ModelConfig
from zoo.converters import convert
from zoo.converters.arrays import cast
from zoo.converters.tf_export import choose_scheme, export_tf, upstream_config
from zoo.errors import CheckpointError, UnsupportedError, UsageError
from zoo.hub.exporting import weights_of
from zoo.tf import list_variables
from zoo.tf.writer import BundleWriter, write_checkpoint
from zoo.weights import prepare

HERE = Path(__file__).parent / "fixtures"
FIXTURES = HERE / "tf_export"
TF_FIXTURES = HERE / "tf"
SUMMARY = json.loads((FIXTURES / "summary.json").read_text(encoding="utf-8"))
CASES = SUMMARY["cases"]
#: the TensorFlow-written fixtures (tests/fixtures/tf/fixtures.json) by name: scheme, checkpoint prefix, config
TF_SPECS = {f["name"]: f for f in json.loads((TF_FIXTURES / "fixtures.json").read_text())["fixtures"]}
ATOL = 1e-5
RECORDED_FILES = ("index", "data", "checkpoint", "config", "vocab.txt")  # everything but the receipt


# ------------------------------------------------------------------------------ independent expectations
def expected_variables(scheme: str, config: dict, heads: list[str], global_step: bool) -> dict[str, list[int]]:
    """TF name → shape of an upstream release of ``config``, written from the upstream modeling code
    (independently of zoo/converters)."""
    v, h, i = config["vocab_size"], config["hidden_size"], config["intermediate_size"]
    p, t = config["max_position_embeddings"], config["type_vocab_size"]
    e = config.get("embedding_size") or h
    d = e if scheme == "google-albert" else h
    out: dict[str, list[int]] = {
        "bert/embeddings/word_embeddings": [v, e], "bert/embeddings/token_type_embeddings": [t, d],
        "bert/embeddings/position_embeddings": [p, d], "bert/embeddings/LayerNorm/gamma": [d],
        "bert/embeddings/LayerNorm/beta": [d]}

    def dense(scope: str, n_in: int, n_out: int) -> None:
        out[f"{scope}/kernel"], out[f"{scope}/bias"] = [n_in, n_out], [n_out]

    def ln(scope: str, width: int = h) -> None:
        out[f"{scope}/gamma"], out[f"{scope}/beta"] = [width], [width]

    def bert_layer(scope: str) -> None:
        for part in ("query", "key", "value"):
            dense(f"{scope}/attention/self/{part}", h, h)
        dense(f"{scope}/attention/output/dense", h, h)
        ln(f"{scope}/attention/output/LayerNorm")
        dense(f"{scope}/intermediate/dense", h, i)
        dense(f"{scope}/output/dense", i, h)
        ln(f"{scope}/output/LayerNorm")

    if scheme == "google-bert":
        for n in range(config["num_hidden_layers"]):
            bert_layer(f"bert/encoder/layer_{n}")
    elif scheme == "google-albert":
        if e != h:
            dense("bert/encoder/embedding_hidden_mapping_in", e, h)
        for g in range(config.get("num_hidden_groups", 1)):
            for k in range(config.get("inner_group_num", 1)):
                scope = f"bert/encoder/transformer/group_{g}/inner_group_{k}"
                for part in ("query", "key", "value"):
                    dense(f"{scope}/attention_1/self/{part}", h, h)
                dense(f"{scope}/attention_1/output/dense", h, h)
                ln(f"{scope}/LayerNorm")
                dense(f"{scope}/ffn_1/intermediate/dense", h, i)
                dense(f"{scope}/ffn_1/intermediate/output/dense", i, h)
                ln(f"{scope}/LayerNorm_1")
    else:
        out["bert/embeddings/word_embeddings_2"] = [e, h]
        bert_layer("bert/encoder/layer_shared")
    dense("bert/pooler/dense", h, h)
    if "mlm" in heads:
        m = e if scheme == "google-albert" else h
        dense("cls/predictions/transform/dense", h, m)
        ln("cls/predictions/transform/LayerNorm", m)
        out["cls/predictions/output_bias"] = [v]
    if "seq_relationship" in heads:
        out["cls/seq_relationship/output_weights"], out["cls/seq_relationship/output_bias"] = [2, h], [2]
    if global_step:
        out["global_step"] = []
    return out


# ------------------------------------------------------------------------------------------- exports
def export_as_recorded(source: Path, out: Path, *, scheme: str | None = None, global_step: int | None) -> Path:
    """``zoo.export(source, out, format="tf")``, leaving out ``global_step`` when it is None: the recorded
    TensorFlow files were saved without one (zoo.export writes it by default — tests/test_outputs.py)."""
    if global_step is not None:
        exported = zoo.export(source, out, format="tf", scheme=scheme, global_step=global_step)
        assert exported.format == "tf" and exported.path == out
        return exported.path
    weights = weights_of(prepare(source))
    export_tf(weights.path, out, config=weights.config, layout=weights.layout, scheme=scheme, global_step=None,
              receipt=weights.provenance.receipt)
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case's source exported again now."""
    out = tmp_path_factory.mktemp("exports")
    result = {}
    for case, record in CASES.items():
        source = FIXTURES / "models" / case / "source"
        scheme = record["scheme"] if case == "brightmart" else None  # explicit for one case, default elsewhere
        result[case] = export_as_recorded(source, out / case, scheme=scheme, global_step=record["global_step"])
    return result


def _recorded(case: str, export: Path) -> dict[str, Path]:
    files = {p.name: p for p in export.iterdir()}
    return {name: files[name] for name in CASES[case]["zoo_files"]}


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_writes_the_bytes_tensorflow_was_shown(exports: dict[str, Path], case: str) -> None:
    """Every file but the receipt is exactly what the fixture script exported and fed to TensorFlow, so the
    recorded TensorFlow results below are about today's bytes."""
    record = CASES[case]
    files = _recorded(case, exports[case])
    assert {name: sha256(path.read_bytes()) for name, path in files.items()} == record["zoo_files"]
    assert sorted(p.name for p in exports[case].iterdir()) == sorted([*record["zoo_files"], "receipt.json"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpoint_bytes_equal_what_tensorflow_writes(exports: dict[str, Path], case: str) -> None:
    """TensorFlow's SaveV2 of the variables it read back from the export produced the same two files."""
    tf_hashes = CASES[case]["tensorflow_resave_sha256"]
    prefix = json.loads((exports[case] / "receipt.json").read_text())["checkpoint"]
    assert {suffix: sha256((exports[case] / (prefix + suffix)).read_bytes()) for suffix in tf_hashes} == tf_hashes


@pytest.mark.parametrize("case", sorted(CASES))
def test_tensorflow_lists_exactly_the_upstream_variables(exports: dict[str, Path], case: str) -> None:
    record = CASES[case]
    config = json.loads((FIXTURES / "models" / case / "source" / "config.json").read_text())
    config = ModelConfig.from_dict(config).to_dict() if "architecture" in config else \
        dict(config, embedding_size=config.get("embedding_size"))
    expected = expected_variables(record["scheme"], config, record["heads"], record["global_step"] is not None)
    tf_listing = {v["name"]: (v["dtype"], v["shape"]) for v in record["load_checkpoint"]}
    assert tf_listing == {name: ("int64" if name == "global_step" else "float32", shape)
                          for name, shape in expected.items()}
    zoo_listing = {v.name: (v.dtype, list(v.shape)) for v in list_variables(exports[case])}
    assert zoo_listing == tf_listing
    assert record["list_variables_of_folder"] == sorted(tf_listing)  # the `checkpoint` state file works
    assert record["latest_checkpoint"] == json.loads((exports[case] / "receipt.json").read_text())["checkpoint"]
    assert not any(n.endswith(("adam_m", "adam_v", "lamb_m", "lamb_v")) for n in tf_listing)
    assert record["upstream"]["restored"] == record["upstream"]["model_variables"] == \
        len(tf_listing) - (record["global_step"] is not None)


def test_global_step_as_asked_and_none_without_it(exports: dict[str, Path]) -> None:
    steps = {case: r["global_step"] for case, r in CASES.items()}
    assert steps["bert_bf16_headless_step"] == 12345 and sum(s is not None for s in steps.values()) == 1
    receipt = json.loads((exports["bert_bf16_headless_step"] / "receipt.json").read_text())
    assert receipt["global_step"] == 12345
    assert {"name": "global_step", "dtype": "int64", "shape": []} in receipt["variables"]
    assert "global_step" not in {v.name for v in list_variables(exports["bert"])}  # export_tf(global_step=None)


@pytest.mark.parametrize("case", sorted(CASES))
def test_upstream_tensorflow_code_computes_what_zoo_computes(case: str) -> None:
    """The upstream modeling code ran on the export (restored like run_pretraining.py); zoo runs the source."""
    record = CASES[case]
    ref = np.load(FIXTURES / "models" / case / "tensorflow.npz")
    heads = {("mlm", "seq_relationship"): "pretraining", ("mlm",): "mlm", (): None}[tuple(record["heads"])]
    loaded = zoo.load(FIXTURES / "models" / case / "source", device="cpu", dtype="float32", heads=heads)
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "segment_ids"))
    with torch.no_grad():
        out = loaded.model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    real = mask.bool()

    def check(ours: torch.Tensor, name: str, tokens: bool = True) -> None:
        theirs = torch.from_numpy(ref[name])
        if tokens:  # outputs at padded positions carry no meaning
            ours, theirs = ours[real], theirs[real]
        err = float((ours.float() - theirs).abs().max())
        assert err <= ATOL, f"{case} {name}: max |zoo - TF| = {err:.2e}"

    check(out.last_hidden_state, "sequence_output")
    check(out.pooler_output, "pooled_output", tokens=False)
    # upstream returns one output per parameter set applied (ALBERT: per inner group of each layer)
    assert len(ref["layer_outputs"]) == len(loaded.config.layer_schedule()) == len(out.hidden_states) - 1
    for step, theirs in enumerate(ref["layer_outputs"]):
        err = float((out.hidden_states[step + 1][real] - torch.from_numpy(theirs)[real]).abs().max())
        assert err <= ATOL, f"{case} layer output {step}: {err:.2e}"
    if not loaded.config.has_mapping_in:
        check(out.hidden_states[0], "embedding_output")
    if "mlm" in record["heads"]:
        check(torch.log_softmax(out.mlm_logits.double(), -1), "mlm_log_probs")
    if "seq_relationship" in record["heads"]:
        check(torch.log_softmax(out.seq_relationship_logits.double(), -1), "seq_relationship_log_probs",
              tokens=False)


def test_receipt_of_a_tf_export(exports: dict[str, Path]) -> None:
    export = exports["albert_hf_fp16"]
    receipt = json.loads((export / "receipt.json").read_text())
    assert receipt["kind"] == "export" and receipt["format"] == "tf"
    assert receipt["scheme"] == "google-albert"  # transformers-layout ALBERT: the scheme of its architecture
    assert receipt["dtype"] == "float32" and receipt["source_dtypes"] == ["float16"]
    assert receipt["heads"] == ["mlm", "seq_relationship"] and receipt["approximations"] == []
    assert [v["name"] for v in receipt["variables"]] == sorted(v["name"] for v in receipt["variables"])
    assert {r["path"]: r["role"] for r in receipt["outputs"]} == {
        "model.ckpt-best.index": "checkpoint-index", "model.ckpt-best.data-00000-of-00001": "checkpoint-data",
        "checkpoint": "checkpoint-state", "albert_config.json": "config", "vocab.txt": "vocab"}
    for record in receipt["outputs"]:  # hashed while written
        path = export / record["path"]
        assert record["sha256"] == sha256(path.read_bytes()) and record["size"] == path.stat().st_size
    assert (export / "checkpoint").read_text() == \
        'model_checkpoint_path: "model.ckpt-best"\nall_model_checkpoint_paths: "model.ckpt-best"\n'


# ------------------------------------------------------------------------------------------ round trip
ROUND_TRIP = ["bert", "albert_google", "albert_google_groups", "albert_brightmart", "albert_brightmart_preln"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_is_bit_for_bit(tmp_path: Path, name: str) -> None:
    """TF (written by TensorFlow) → zoo convert → zoo export --format tf gives TensorFlow's files back byte for
    byte; zoo convert of that gives the same tensors, config and vocab."""
    spec = TF_SPECS[name]
    first = convert(TF_FIXTURES / name, tmp_path / "first")
    exported = export_as_recorded(first, tmp_path / "export", global_step=None)  # the fixtures have none
    assert json.loads((first / "receipt.json").read_text())["scheme"] == spec["scheme"]
    for suffix in (".index", ".data-00000-of-00001"):
        ours = exported / (json.loads((exported / "receipt.json").read_text())["checkpoint"] + suffix)
        assert ours.read_bytes() == (TF_FIXTURES / name / (spec["prefix"] + suffix)).read_bytes(), suffix
    second = convert(exported, tmp_path / "second")
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape
        assert a[key].view(torch.uint8).numpy().tobytes() == b[key].view(torch.uint8).numpy().tobytes(), key
    for file in ("config.json", "vocab.txt"):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file


@pytest.mark.parametrize(("name", "dtype"), [("bert_fp16_headless", "float16"), ("bert", "bfloat16")])
def test_round_trip_of_half_precision_weights(tmp_path: Path, name: str, dtype: str) -> None:
    """Upstream variables are float32: half-precision weights are widened exactly, and converting the export back
    with --dtype gives the same bits."""
    first = convert(TF_FIXTURES / name, tmp_path / "first", dtype=dtype)
    exported = zoo.export(first, tmp_path / "export", format="tf")
    listed = {v.name: v.dtype for v in list_variables(exported.path)}
    assert listed.pop("global_step") == "int64" and set(listed.values()) == {"float32"}
    second = convert(exported.path, tmp_path / "second", dtype=dtype)
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert all(torch.equal(a[k].view(torch.int16), b[k].view(torch.int16)) for k in a) and a.keys() == b.keys()


# -------------------------------------------------------------------------------------- config, schemes
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_upstream_config_is_the_inverse_of_from_upstream(name: str) -> None:
    spec = TF_SPECS[name]
    original = json.loads((TF_FIXTURES / name / spec["config"]).read_text())
    arch = {"google-bert": "bert", "google-albert": "albert", "brightmart-albert": "albert-brightmart"}[spec["scheme"]]
    config = ModelConfig.from_upstream(original, arch)
    written, notes = upstream_config(config, spec["scheme"])
    assert notes == [] and ModelConfig.from_upstream(written, arch) == config
    for key, value in written.items():  # upstream keys, upstream values ("gelu" = the tanh form = gelu_new)
        if key in original:
            assert value == original[key], key
    assert written["hidden_act"] == original["hidden_act"] and config.hidden_act in ("gelu_new", "relu")
    if spec["scheme"] == "brightmart-albert":
        assert written["ln_type"] == original["ln_type"] and "num_hidden_groups" not in written
    if spec["scheme"] == "google-bert":
        assert "embedding_size" not in written


def test_exact_gelu_and_other_epsilon_are_noted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "src"
    shutil.copytree(FIXTURES / "models" / "bert" / "source", source)
    data = json.loads((source / "config.json").read_text())
    data.update(hidden_act="gelu", layer_norm_eps=1e-5)  # transformers' erf GELU
    (source / "config.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="zoo.converters"):
        exported = zoo.export(source, tmp_path / "out", format="tf")
    receipt = json.loads((exported.path / "receipt.json").read_text())
    assert [n.split(":")[0] for n in receipt["approximations"]] == ["hidden_act", "layer_norm_eps"]
    assert json.loads((exported.path / "bert_config.json").read_text())["hidden_act"] == "gelu"
    assert "approximates" in caplog.text


@pytest.mark.parametrize(("source", "scheme"), [("brightmart", "google-albert"), ("albert_groups", "brightmart-albert"),
                                            ("bert", "google-albert"), ("albert_groups", "google-bert")])
def test_a_scheme_of_another_architecture_is_refused(tmp_path: Path, source: str, scheme: str) -> None:
    with pytest.raises(UnsupportedError, match=f"cannot be exported as {scheme}"):
        zoo.export(FIXTURES / "models" / source / "source", tmp_path / "out", format="tf", scheme=scheme)
    assert not (tmp_path / "out").exists()


def test_scheme_choice() -> None:
    albert = ModelConfig.from_dict(json.loads((FIXTURES / "models" / "albert_groups" / "source" / "config.json")
                                              .read_text()))
    assert choose_scheme(albert) == "google-albert"
    assert choose_scheme(albert, receipt={"scheme": "google-albert"}) == "google-albert"
    with pytest.raises(UnsupportedError):  # a receipt that contradicts the config is not trusted
        choose_scheme(albert, receipt={"scheme": "brightmart-albert"})
    with pytest.raises(UsageError, match="unknown scheme"):
        choose_scheme(albert, "google")
    with pytest.raises(UsageError, match="apply to format 'tf'"):
        zoo.export(FIXTURES / "models" / "bert" / "source", "/nonexistent/out", scheme="google-bert")


def test_weights_that_are_not_a_release_are_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from safetensors.torch import save_file

    source = tmp_path / "src"
    shutil.copytree(FIXTURES / "models" / "bert" / "source", source)
    state = load_file(source / "model.safetensors")

    def rewrite(change) -> Path:
        new = dict(state)
        change(new)
        save_file(new, str(source / "model.safetensors"))
        return source

    config = ModelConfig.from_dict(json.loads((source / "config.json").read_text()))
    rewrite(lambda s: s.pop("layers.1.output.bias"))
    with pytest.raises(CheckpointError, match="missing layers.1.output.bias"):
        export_tf(source, tmp_path / "a", config=config)
    rewrite(lambda s: s.pop("seq_relationship.bias"))
    with pytest.raises(CheckpointError, match="seq_relationship head is incomplete"):
        export_tf(source, tmp_path / "b", config=config)
    rewrite(lambda s: s.update({"classifier.weight": torch.zeros(2, 32), "classifier.bias": torch.zeros(2)}))
    with caplog.at_level(logging.WARNING, logger="zoo.converters"):
        zoo.export(source, tmp_path / "c", format="tf")
    assert "classifier.bias, classifier.weight" in caplog.text
    assert not any(v.name.startswith("classifier") for v in list_variables(tmp_path / "c"))
    caplog.clear()
    rewrite(lambda s: [s.pop(k) for k in ("pooler.weight", "pooler.bias")])
    with caplog.at_level(logging.WARNING, logger="zoo.converters"):  # a transformers *ForMaskedLM has none
        zoo.export(source, tmp_path / "p", format="tf")
    assert "has no pooler" in caplog.text
    assert not any(v.name.startswith("bert/pooler") for v in list_variables(tmp_path / "p"))
    assert json.loads((tmp_path / "p" / "receipt.json").read_text())["pooler"] is False
    rewrite(lambda s: s.pop("pooler.bias"))
    with pytest.raises(CheckpointError, match="missing pooler.bias"):
        zoo.export(source, tmp_path / "q", format="tf")
    rewrite(lambda s: s.update({"extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match="unexpected extra.weight"):
        zoo.export(source, tmp_path / "d", format="tf")
    assert not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_cli_export_tf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = str(FIXTURES / "models" / "brightmart" / "source")
    assert main(["export", source, str(tmp_path / "out"), "--format", "tf", "--global-step", "7", "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "albert_config.json", "albert_model.ckpt.data-00000-of-00001", "albert_model.ckpt.index", "checkpoint",
        "receipt.json", "vocab.txt"]
    listed = {v.name: v for v in list_variables(tmp_path / "out")}
    assert listed["global_step"].dtype == "int64" and listed["global_step"].shape == ()
    assert main(["export", source, str(tmp_path / "o2"), "--format", "tf", "--scheme", "google-albert"]) == \
        UnsupportedError.exit_code
    assert "brightmart-albert (the default)" in capsys.readouterr().err
    assert main(["export", source, str(tmp_path / "o3"), "--global-step", "7"]) == UsageError.exit_code


# ----------------------------------------------------------------------------------------------- writer
def _writer_values() -> dict[str, tuple[str, np.ndarray]]:
    raw = json.loads((FIXTURES / "writer" / "dtypes" / "variables.json").read_text(encoding="utf-8"))
    values = {}
    for name, (dtype, shape, data) in raw.items():
        if dtype in ("float32", "float16", "float64", "bfloat16"):
            array = np.array(data, np.float64).reshape(shape)
            array = (cast(array.astype(np.float32), "float32", "bfloat16") if dtype == "bfloat16"
                     else array.astype(dtype))
        else:
            array = np.array(data, dtype).reshape(shape)
        values[name] = (dtype, array)
    return values


def test_writer_matches_tensorflow_for_every_dtype(tmp_path: Path) -> None:
    """Scalars, an empty tensor, non-ASCII names, more than 16 keys, every dtype: TensorFlow's bytes."""
    with open(tmp_path / "model.ckpt.data-00000-of-00001", "wb") as fh:
        writer = BundleWriter([fh])
        for name, (dtype, array) in sorted(_writer_values().items()):
            writer.add_array(name, array, dtype=dtype)
    (tmp_path / "model.ckpt.index").write_bytes(writer.index())
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tmp_path / f"model.ckpt{suffix}").read_bytes() == \
            (FIXTURES / "writer" / "dtypes" / f"model.ckpt{suffix}").read_bytes(), suffix
    assert SUMMARY["writer"]["dtypes"]["model.ckpt.index"] == sha256((FIXTURES / "writer" / "dtypes" / "model.ckpt.index").read_bytes())


def test_writer_matches_tensorflow_for_an_index_of_several_blocks(tmp_path: Path) -> None:
    """3000 long names: the index spans several 256 KiB blocks (separator keys, restart interval 1 in the index
    block) — TensorFlow's sha256 recorded by the fixture script."""
    names = [f"v{i:05d}/{'abcdefghij'[i % 10] * (100 + i % 97)}/kernel" for i in range(3000)]
    write_checkpoint(tmp_path / "model.ckpt", {n: np.array(np.float32(i)) for i, n in enumerate(names)})
    recorded = SUMMARY["writer"]["many"]
    index = tmp_path / "model.ckpt.index"
    assert index.stat().st_size == recorded["index_bytes"] > 2 * 262144
    assert sha256(index.read_bytes()) == recorded["model.ckpt.index"]
    assert sha256((tmp_path / "model.ckpt.data-00000-of-00001").read_bytes()) == recorded["model.ckpt.data-00000-of-00001"]
    assert [v.name for v in list_variables(tmp_path)] == sorted(names)


def test_writer_streams_and_checks_what_it_is_given(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with open(tmp_path / "a", "wb") as a, open(tmp_path / "b", "wb") as b:
        whole, streamed = BundleWriter([a]), BundleWriter([b])
        whole.add_array("x", x)
        raw = x.tobytes()
        streamed.add("x", "float32", (3, 4), (raw[i:i + 5] for i in range(0, len(raw), 5)))  # uneven chunks
        with pytest.raises(ValueError, match="got 8 bytes"):
            streamed.add("y", "float32", (3,), [b"\0" * 8])
        with pytest.raises(ValueError, match="already written"):
            streamed.add("x", "float32", (1,), [b"\0" * 4])
        with pytest.raises(ValueError, match="cannot be written"):
            streamed.add("s", "string", (1,), [b"a"])
        streamed.add("z", "float32", (1,), [b"\1\2\3\4"])  # after the refused bytes: its entry says where
    (tmp_path / "b.index").write_bytes(streamed.index())
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()[:48]
    (tmp_path / "b.data-00000-of-00001").write_bytes((tmp_path / "b").read_bytes())
    ckpt = zoo.read_tf_checkpoint(tmp_path / "b")
    assert sorted(ckpt) == ["x", "z"] and ckpt["x"].tolist() == x.tolist() and ckpt.variables["z"].offset == 56


def test_export_of_a_zoo_directory_does_not_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys, zoo; zoo.export(sys.argv[1], sys.argv[2], format='tf'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(FIXTURES / "models" / "albert_groups" / "source"),
                    str(tmp_path / "out")], check=True)
    assert (tmp_path / "out" / "model.ckpt-best.index").is_file()
