"""Issue 16, outputs that tell the truth: model cards of exported outputs, the modes of folders the user names,
``global_step`` in TF exports, the SOP/classifier dropout of ALBERT exports, and transformers folders accepted
everywhere ``zoo.load`` accepts them (load, pretrain, convert, export)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from support.cli import run
from support.fixtures import sha256
from support.models import register_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import zoo
from zoo.cli import main
from zoo.config import InvalidConfig, ModelConfig
from zoo.converters import convert
from zoo.converters.modeldir import read_config, read_receipt, staged_output
from zoo.tf import read_tf_checkpoint

FIXTURES = Path(__file__).parent / "fixtures"
TF = FIXTURES / "tf"
TINY = ["--batch-size", "8", "--max-seq-length", "32", "--workers", "0", "-q"]
CORPUS = "今天天气很好。\n我们是中国人。\n\n他说了一个大国的事。\n今天天气很好。\n" * 10
STEPS = 3


@dataclass(frozen=True)
class Trained:
    root: Path  # every local path lives under it
    manifests: Path
    run: Path  # a pretraining output of the registered model "tiny", written with umask 022
    corpus: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("trained")
    manifests = root / "manifests"
    manifests.mkdir()
    corpus = root / "wiki_zh.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(root / "home"))
        mp.setenv("ZOO_MANIFEST_PATH", str(manifests))
        register_tiny(manifests, root)
        old = os.umask(0o022)
        try:
            assert main(["pretrain", "tiny", "--corpus", str(corpus), "--out", str(root / "run_a"),
                         "--steps", str(STEPS), *TINY]) == 0
        finally:
            os.umask(old)
    return Trained(root, manifests, root / "run_a", corpus)


@pytest.fixture
def registry(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry that knows "tiny" (the base model of the trained output)."""
    from zoo.registry import clear_cache

    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(trained.manifests))
    clear_cache()


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _card(folder: Path) -> tuple[dict, str]:
    card = (folder / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(card.split("---")[1]), card


def _section(card: str, title: str) -> str:
    return card.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _run_usage(card: str, where: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Run every Python block of the card in ``where``; the names they define."""
    monkeypatch.chdir(where)
    scope: dict[str, object] = {}
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)
    return scope


# --------------------------------------------------------------------------------------------- cards
def test_the_card_of_a_pretraining_export_describes_the_run(trained: Trained, registry: None, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    out = zoo.export(trained.run, tmp_path / "run_a-hf").path
    front, card = _card(out)
    assert front["license"] == "apache-2.0"  # the base model's (tiny's manifest)
    assert "no retraining" not in card and "original release" not in card
    origin = _section(card, "Origin")
    assert "`tiny`" in origin and "pretraining" in origin and f"{STEPS} steps" in origin and "nsp" in origin
    assert "wiki_zh.txt" in origin and sha256(trained.corpus.read_bytes()) in origin
    assert str(trained.root) not in card and str(tmp_path) not in card and "file://" not in card
    assert not re.search(r"(?<![\w.])/(tmp|home|work)/", card)
    scope = _run_usage(card, tmp_path, monkeypatch)  # the transformers block, then zoo's
    assert type(scope["model"]).__name__ == "BertForMaskedLM" and scope["loaded"].fill_mask("今天[MASK]")[0]
    assert 'zoo.load("./run_a-hf"' in card


def test_the_card_of_a_registry_export_keeps_local_paths_out(trained: Trained, registry: None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = zoo.export("tiny", tmp_path / "tiny-hf").path
    front, card = _card(out)
    assert front["license"] == "apache-2.0"
    assert "original release (no retraining, no fine-tuning)" in card
    assert "file://" not in card and str(trained.root) not in card and "release.zip" in _section(card, "Origin")
    scope = _run_usage(card, tmp_path, monkeypatch)
    assert 'zoo.load("tiny"' in card and scope["loaded"].manifest.name == "tiny"
    assert type(scope["model"]).__name__ == "BertForMaskedLM"


def test_an_export_of_an_export_still_says_what_the_model_is(trained: Trained, registry: None,
                                                             tmp_path: Path) -> None:
    first = zoo.export(trained.run, tmp_path / "first").path
    again = zoo.export(first, tmp_path / "again").path
    front, card = _card(again)
    assert front["license"] == "apache-2.0" and "no retraining" not in card
    assert "wiki_zh.txt" in _section(card, "Origin") and "`tiny`" in _section(card, "Origin")


# --------------------------------------------------------------------------------------------- modes
def test_outputs_follow_the_umask_and_the_cache_stays_private(trained: Trained, umask: None,
                                                              tmp_path: Path) -> None:
    folders = [zoo.export(TF / "albert_google", tmp_path / "hf").path,
               zoo.export(TF / "albert_google", tmp_path / "tf", format="tf").path,
               convert(TF / "albert_google", tmp_path / "converted"), trained.run]
    for folder in folders:
        assert _mode(folder) == 0o755, folder
        for name in ("config.json", "vocab.txt", "receipt.json"):
            if (folder / name).exists():
                assert _mode(folder / name) == 0o644, folder / name
    for name in ("model.safetensors",):
        assert _mode(trained.run / name) == 0o644
    os.umask(0o027)
    strict = zoo.export(TF / "bert", tmp_path / "team").path
    assert _mode(strict) == 0o750 and {_mode(p) for p in strict.iterdir()} == {0o640}
    conversions = zoo.cache.conversions()
    assert conversions  # the release directories were converted once into the cache: private there
    for conv in conversions:
        assert _mode(conv.path) == 0o700 and {_mode(p) for p in conv.path.iterdir()} == {0o600}


# ---------------------------------------------------------------------------------------- global_step
def test_tf_exports_carry_global_step(trained: Trained, registry: None, tmp_path: Path) -> None:
    def step(folder: Path) -> int:
        bundle = read_tf_checkpoint(folder)
        try:
            assert bundle.variables["global_step"].dtype == "int64"
            return int(bundle["global_step"])
        finally:
            bundle.close()

    assert step(zoo.export(TF / "bert", tmp_path / "release", format="tf").path) == 0
    assert step(zoo.export(trained.run, tmp_path / "trained", format="tf").path) == STEPS
    assert step(zoo.export(trained.run, tmp_path / "asked", format="tf", global_step=7).path) == 7
    assert json.loads((tmp_path / "trained" / "receipt.json").read_text())["global_step"] == STEPS


# ------------------------------------------------------------------------------------ classifier dropout
def test_an_albert_export_has_the_sop_head_upstream_has(tmp_path: Path) -> None:
    out = zoo.export(TF / "albert_google", tmp_path / "hf").path
    assert json.loads((out / "config.json").read_text())["classifier_dropout_prob"] == 0
    model = transformers.AutoModelForPreTraining.from_pretrained(out)
    assert model.sop_classifier.dropout.p == 0  # upstream's SOP head has no dropout


def test_a_classifier_export_writes_the_dropout_it_was_trained_with(tmp_path: Path) -> None:
    config, _ = read_config(convert(TF / "albert_google", tmp_path / "base"))
    tuned = convert(TF / "albert_google", tmp_path / "tuned",
                    config=dataclasses.replace(config, classifier_dropout_prob=0.2))
    assert json.loads((tuned / "config.json").read_text())["classifier_dropout_prob"] == 0.2
    out = zoo.export(tuned, tmp_path / "hf").path
    assert json.loads((out / "config.json").read_text())["classifier_dropout_prob"] == 0.2
    classifier = transformers.AutoModelForSequenceClassification.from_pretrained(out, num_labels=2)
    assert classifier.dropout.p == 0.2

    # a fine-tuning output that records its classifier dropout in its receipt
    base = tmp_path / "base"
    with staged_output(tmp_path / "finetuned", kind="finetune") as staged:
        for name in ("model.safetensors", "config.json", "vocab.txt"):
            staged.write_bytes(name, (base / name).read_bytes(), name.split(".")[0])
        staged.receipt.update({"classifier_dropout": 0.3, "steps": 5})
    out = zoo.export(tmp_path / "finetuned", tmp_path / "finetuned-hf").path
    assert json.loads((out / "config.json").read_text())["classifier_dropout_prob"] == 0.3


def test_model_config_validates_the_classifier_dropout() -> None:
    with pytest.raises(InvalidConfig) as caught:
        ModelConfig("bert", 10, 8, 1, 2, 16, classifier_dropout_prob=1.5)
    assert ("classifier_dropout_prob", "must be in [0, 1), got 1.5") in caught.value.problems
    assert "classifier_dropout_prob" not in ModelConfig("bert", 10, 8, 1, 2, 16).to_dict()


# --------------------------------------------------------------------------------- transformers folders
@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders transformers itself wrote (no receipt): safetensors, and a pickle ``pytorch_model.bin``."""
    root = tmp_path_factory.mktemp("plain")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(root / "home"))
        hf = zoo.export(TF / "albert_google", root / "export").path
    folders = {}
    for kind in ("safetensors", "pickle"):
        folder = root / kind
        model = transformers.AutoModelForPreTraining.from_pretrained(hf)
        model.save_pretrained(folder)
        transformers.AutoTokenizer.from_pretrained(hf).save_pretrained(folder)
        if not (folder / "vocab.txt").exists():  # transformers 5 saves tokenizer.json only; hub repos have both
            shutil.copy(hf / "vocab.txt", folder / "vocab.txt")
        if kind == "pickle":  # what transformers 4 and older wrote by default (5 writes safetensors only)
            torch.save(model.state_dict(), folder / "pytorch_model.bin")
            (folder / "model.safetensors").unlink()
        assert not (folder / "receipt.json").exists()
        folders[kind] = folder
    return folders


@pytest.mark.parametrize("kind", ["safetensors", "pickle"])
def test_a_transformers_folder_is_converted_once_into_the_cache(plain: dict[str, Path], kind: str) -> None:
    folder = plain[kind]
    loaded = zoo.load(folder, device="cpu", heads="pretraining")
    converted = zoo.cache.home() / "converted"
    assert loaded.path.parent == converted and read_config(loaded.path)[1] == "zoo"
    reference = transformers.AutoModelForPreTraining.from_pretrained(folder).eval()
    batch = loaded.encode(["今天天气很好。", "我们"])
    with torch.no_grad():
        theirs = reference(**batch)
    ours = loaded(["今天天气很好。", "我们"])
    real = batch["attention_mask"].bool()
    assert torch.allclose(ours.mlm_logits[real], theirs.prediction_logits[real], atol=1e-5, rtol=0)
    assert torch.allclose(ours.seq_relationship_logits, theirs.sop_logits, atol=1e-5, rtol=0)
    markers = sorted(converted.glob("*.json"))
    assert zoo.load(folder, device="cpu").path == loaded.path and sorted(converted.glob("*.json")) == markers


def test_pretrain_convert_and_export_take_a_transformers_folder(plain: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = plain["safetensors"]
    code, _, err = run(capsys, "pretrain", str(folder), "--corpus", str(FIXTURES / "pretraining" / "corpus.txt"),
                       "--out", str(tmp_path / "run"), "--steps", "2", *TINY)
    assert code == 0, err
    assert read_receipt(tmp_path / "run")["kind"] == "pretraining"
    code, out, err = run(capsys, "convert", str(folder), str(tmp_path / "converted"))
    assert code == 0, err
    assert out.strip() == str(tmp_path / "converted") and read_config(tmp_path / "converted")[1] == "zoo"
    assert read_receipt(tmp_path / "converted")["kind"] == "conversion"
    original, again = zoo.load(folder, device="cpu"), zoo.load(tmp_path / "converted", device="cpu")
    assert torch.equal(original.embed(["今天"]), again.embed(["今天"]))
    code, _, err = run(capsys, "export", str(folder), str(tmp_path / "tf"), "--format", "tf", "-q")
    assert code == 0, err
    code, _, err = run(capsys, "convert", str(folder), str(tmp_path / "c2"), "--scheme", "google-albert")
    assert code == 2 and "transformers folder" in err
    code, _, err = run(capsys, "convert", str(folder), str(tmp_path / "bf16"), "--dtype", "bf16")
    assert code == 0, err
    assert {t.dtype for t in load_file(tmp_path / "bf16" / "model.safetensors").values()} == {torch.bfloat16}
