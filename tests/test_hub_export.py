"""zoo export: every config kind round-trips through transformers, checked against TensorFlow's own outputs.

The references are the TF outputs recorded with each fixture (tests/fixtures/tf/*/reference.npz); token ids are
compared with zoo's tokenizer (the same vocab and options).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pytest.importorskip("transformers")

import zoo
from zoo.errors import UnsupportedError, UsageError
from zoo.hub import export

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
ATOL = 1e-5
KINDS = {  # fixture: (model_type, architectures, hidden_act, embedding_size)
    "albert_google": ("albert", "AlbertForPreTraining", "relu", 16),
    "albert_google_groups": ("albert", "AlbertForPreTraining", "gelu_new", 16),
    "albert_brightmart": ("albert", "AlbertForPreTraining", "gelu_new", 32),  # word embeddings multiplied out
    "bert": ("bert", "BertForPreTraining", "gelu_new", None),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(out / "zoo_home"))
        return {name: export(FIXTURES / name, out / name).path for name in KINDS}


@pytest.mark.parametrize("fixture", sorted(KINDS))
def test_transformers_reproduces_tensorflow(exported: dict[str, Path], fixture: str) -> None:
    from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoTokenizer

    folder = exported[fixture]
    model_type, arch, act, embedding_size = KINDS[fixture]
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["architectures"], config["hidden_act"]) == (model_type, [arch], act)
    assert config.get("embedding_size") == embedding_size and config["pad_token_id"] == 0

    ref = np.load(FIXTURES / fixture / "reference.npz")
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "token_type_ids"))
    real = mask.bool()
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    with torch.no_grad():
        base = AutoModel.from_pretrained(folder).eval()(**inputs)
        mlm = AutoModelForMaskedLM.from_pretrained(folder).eval()(**inputs)
        pre = AutoModelForPreTraining.from_pretrained(folder).eval()(**inputs)
    sop = pre.sop_logits if model_type == "albert" else pre.seq_relationship_logits

    def close(ours: torch.Tensor, key: str, tokens: bool = True) -> None:
        theirs = torch.from_numpy(ref[key])
        if tokens:
            ours, theirs = ours[real], theirs[real]
        assert float((ours - theirs).abs().max()) <= ATOL, key

    close(base.last_hidden_state, "sequence_output")
    close(base.pooler_output, "pooled_output", tokens=False)
    close(mlm.logits, "mlm_logits")
    close(pre.prediction_logits, "mlm_logits")
    close(sop, "seq_relationship_logits", tokens=False)

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = zoo.load(folder, device="cpu").tokenizer
    assert type(tokenizer).__name__ == "BertTokenizer"
    for text in ("今天天气很好。", "The models 很好", ("你好", "天气")):
        args = text if isinstance(text, tuple) else (text,)
        assert tokenizer(*args)["input_ids"] == ours(*args)["input_ids"]


def test_folder_files_and_model_card(exported: dict[str, Path]) -> None:
    folder = exported["albert_google"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                        "receipt.json", "special_tokens_map.json",
                                                        "tokenizer_config.json", "vocab.txt"]
    receipt = json.loads((folder / "receipt.json").read_text())
    assert receipt["kind"] == "export" and receipt["transformers_class"] == "AlbertForPreTraining"
    for item in receipt["outputs"]:
        assert item["sha256"] == hashlib.sha256((folder / item["path"]).read_bytes()).hexdigest()
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "BertTokenizer" and tok["do_lower_case"] is True
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["library_name"] == "transformers" and "albert" in front["tags"] and "license" in front
    weights_sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert f"| `model.safetensors` | `{weights_sha}` |" in card
    index_sha = hashlib.sha256((FIXTURES / "albert_google" / "model.ckpt-best.index").read_bytes()).hexdigest()
    assert index_sha in card  # the original release's files, from the conversion receipt
    assert "AutoModelForMaskedLM.from_pretrained" in card and "zoo.load(" in card


def test_export_of_an_export_is_identical(exported: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    first = exported["albert_brightmart"]
    again = export(first, tmp_path / "again").path
    a, b = load_file(str(first / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((first / "config.json").read_text()) == json.loads((again / "config.json").read_text())


def test_pre_ln_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="pre-LN"):
        export(FIXTURES / "albert_brightmart_preln", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_refuses_a_non_empty_directory_and_unknown_formats(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        export(FIXTURES / "bert", tmp_path / "out")
    with pytest.raises(UsageError, match="unknown export format"):
        export(FIXTURES / "bert", tmp_path / "other", format="onnx")
