"""``zoo init`` / ``zoo.init_model``: a new model from a config and a vocab, initialised as upstream does.

References: the architecture of each upstream config is the scheme its TF fixture was written with
(tests/fixtures/tf/fixtures.json); the initial weights are checked against the statistics of a normal truncated at
±2σ, computed here from the error function; the trained vocab against transformers' pure-Python BERT tokenizer."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import pytest
import torch
from support.cli import run
from support.fixtures import zoo_env  # noqa: F401
from support.models import FIXTURE as BERT_FIXTURE
from support.models import register_tiny

import zoo
from zoo.config import SCHEME_ARCHITECTURE, ModelConfig
from zoo.converters.modeldir import check_outputs, read_receipt
from zoo.converters.tf import load_config
from zoo.converters.transformers import expected_shapes
from zoo.errors import CheckpointError, DataError, NotFoundError, UsageError
from zoo.scratch import initial_weights, read_model_config
from zoo.tokenizer import SPECIAL_TOKENS, Tokenizer, train_wordpiece

TF_FIXTURES = Path(__file__).parent / "fixtures" / "tf"
CORPUS = Path(__file__).parent / "fixtures" / "tokenizer_corpus.txt"
POEMS = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n"


def small(architecture: str = "bert", **values: object) -> ModelConfig:
    data: dict[str, object] = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                               "intermediate_size": 128, "max_position_embeddings": 64, "initializer_range": 0.05}
    if architecture != "bert":
        data["embedding_size"] = 32 if architecture == "albert" else 16
    if architecture == "albert-brightmart":
        data["num_hidden_layers"] = 1
    return ModelConfig(architecture=architecture, **{**data, **values})  # type: ignore[arg-type]


@pytest.fixture
def poems(tmp_path: Path) -> Path:
    path = tmp_path / "poems.txt"
    path.write_text(POEMS, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("fixture", json.loads((TF_FIXTURES / "fixtures.json").read_text())["fixtures"],
                         ids=lambda f: f["name"])
def test_the_architecture_of_an_upstream_config_is_told_from_its_keys(fixture: dict[str, str]) -> None:
    path = TF_FIXTURES / fixture["name"] / fixture["config"]
    config, source = read_model_config(path)
    architecture = SCHEME_ARCHITECTURE[fixture["scheme"]]
    assert config.architecture == architecture
    assert config == load_config(path, architecture)  # as the converter reads it when the checkpoint tells
    assert source.record["format"] == "upstream" and source.record["vocab_size"] == json.loads(path.read_text())["vocab_size"]


def test_a_registry_name_gives_its_architecture_without_downloading(tmp_path: Path, poems: Path) -> None:
    config, source = read_model_config("albert_tiny_zh")
    assert config == zoo.get_manifest("albert_tiny_zh").config
    assert source.record == {"source": "registry", "model": "albert_tiny_zh", "vocab_size": 21128}
    out = zoo.init_model("albert_tiny_zh", out=tmp_path / "o", train_vocab=[poems], vocab_size=50, offline=True,
                         progress=False)
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 312
    home = Path(os.environ["ZOO_HOME"])
    # nothing downloaded or converted: only the stamps of the new folder (zoo.cache.record_folder)
    assert [p.parent.name for p in home.rglob("*") if p.is_file()] == ["folders"]


def test_zoo_config_json_and_a_model_directory_give_the_same_config(tmp_path: Path, poems: Path) -> None:
    first = zoo.init_model(small("albert"), out=tmp_path / "a", train_vocab=[poems], vocab_size=100, progress=False)
    written = json.loads((first / "config.json").read_text())
    for given in (first / "config.json", first, str(first)):
        config, source = read_model_config(given)
        assert config.to_dict() == written
        assert source.record["format"] == "zoo" and source.record["vocab_size"] == written["vocab_size"]


def test_a_transformers_config_keeps_transformers_meaning(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "albert", "vocab_size": 21128, "embedding_size": 128,
                                "hidden_size": 312, "num_hidden_layers": 4, "num_attention_heads": 12,
                                "intermediate_size": 1248, "hidden_act": "gelu"}))
    config, source = read_model_config(path)
    assert (config.architecture, config.hidden_act, source.record["format"]) == ("albert", "gelu", "transformers")
    upstream = {k: v for k, v in json.loads(path.read_text()).items() if k != "model_type"}
    path.write_text(json.dumps(upstream))  # the same keys as an upstream config: TF's tanh GELU, brightmart's keys
    config, source = read_model_config(path)
    assert (config.architecture, config.hidden_act, source.record["format"]) == ("albert-brightmart", "gelu_new",
                                                                                 "upstream")


# ------------------------------------------------------------------------------------------------ weights
def truncated_std(bound: float = 2.0) -> float:
    """Standard deviation of a standard normal truncated to [-bound, bound]."""
    pdf = math.exp(-bound * bound / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))
    return math.sqrt(1 - 2 * bound * pdf / mass)


@pytest.mark.parametrize("architecture", ["bert", "albert", "albert-brightmart"])
def test_initial_weights_follow_upstream_initialisation(architecture: str) -> None:
    config = small(architecture)
    sigma = config.initializer_range
    state = initial_weights(config, seed=7)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(config)  # canonical names, both heads
    drawn = []
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32
        owner, _, kind = name.rpartition(".")
        if owner.endswith("norm"):
            assert torch.all(tensor == (1.0 if kind == "weight" else 0.0)), name
        elif kind == "bias":
            assert torch.all(tensor == 0), name
        else:
            assert tensor.abs().max() <= 2 * sigma, name  # never beyond two standard deviations
            if tensor.numel() >= 8192:  # each large table on its own
                assert tensor.std().item() == pytest.approx(truncated_std() * sigma, rel=0.03), name
            drawn.append(tensor.flatten())
    values = torch.cat(drawn).double()
    assert values.mean().item() == pytest.approx(0, abs=sigma * 0.01)
    assert values.std().item() == pytest.approx(truncated_std() * sigma, rel=0.01)
    # a truncated normal, not a clipped one: P(|x| < σ | |x| < 2σ) = erf(1/√2) / erf(√2)
    inside = (values.abs() < sigma).double().mean().item()
    assert inside == pytest.approx(math.erf(1 / math.sqrt(2)) / math.erf(math.sqrt(2)), abs=0.01)
    assert (values.abs() > 1.9 * sigma).double().mean().item() < 0.02  # no pile-up at the bound


def test_the_seed_decides_the_weights() -> None:
    config = small()
    a, b, c = initial_weights(config, seed=1), initial_weights(config, seed=1), initial_weights(config, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embeddings.word.weight"], c["embeddings.word.weight"])
    assert set(initial_weights(config, heads=None)) == {k for k in a if not k.startswith(("mlm.", "seq_rel"))}


# -------------------------------------------------------------------------------------------------- vocab
def test_a_trained_vocab_tokenizes_its_text_as_bert_does_without_unk(tmp_path: Path) -> None:
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    events: list[zoo.ProgressEvent] = []
    tokens = train_wordpiece([CORPUS], 300, progress=events.append)
    assert tokens[:5] == list(SPECIAL_TOKENS) and len(set(tokens)) == len(tokens)
    assert any(e.stage == "tokenize" and e.done == e.total == CORPUS.stat().st_size for e in events)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    ours, reference = Tokenizer.from_file(vocab), BertTokenizerLegacy(str(vocab), do_lower_case=True)
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        pieces = ours.tokenize(line)
        assert pieces == reference.tokenize(line), line
        assert "[UNK]" not in pieces or "[MASK]" in line, line  # every character of the text is in the vocab
        words = reference.basic_tokenizer.tokenize(line)
        for word in words:  # BERT splits every CJK character off: each is a token of its own
            if len(word) == 1 and 0x4E00 <= ord(word) <= 0x9FFF:
                assert word in tokens, word
    assert {"北", "京", "##ing"} <= set(tokens)


def test_the_vocab_size_limits_what_is_learned_beyond_the_characters(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("playing played player replay " * 50 + "\n你好世界\n", encoding="utf-8")
    few, more = train_wordpiece([text], 6), train_wordpiece([text], 200)
    characters = {t.removeprefix("##") for t in few[5:]}
    assert all(len(c) == 1 for c in characters)  # only the alphabet: nothing merged
    assert "playing" in more and len(more) <= 200 and set(few) < set(more)


def test_gz_text_and_several_files(tmp_path: Path, poems: Path) -> None:
    import gzip

    packed = tmp_path / "more.txt.gz"
    packed.write_bytes(gzip.compress("春眠不觉晓\n".encode()))
    tokens = train_wordpiece([poems, packed], 100)
    assert {"床", "春", "晓"} <= set(tokens)


# --------------------------------------------------------------------------------------------- directory
def test_init_writes_a_zoo_model_directory_that_loads(tmp_path: Path, poems: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "bert_config.json"
    config_file.write_text(json.dumps({"vocab_size": 21128, "hidden_size": 32, "num_hidden_layers": 2,
                                       "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "gelu",
                                       "max_position_embeddings": 64, "type_vocab_size": 2,
                                       "initializer_range": 0.02}))
    code, out, err = run(capsys, "init", "--config", str(config_file), "--train-vocab", str(poems),
                         "--vocab-size", "100", "--out", str(tmp_path / "new"), "--seed", "3")
    assert code == 0 and out.strip() == str(tmp_path / "new")
    assert "the config says 21128" in err  # the vocab decides vocab_size, and that is said
    new = tmp_path / "new"
    assert sorted(p.name for p in new.iterdir()) == ["config.json", "model.safetensors", "receipt.json", "vocab.txt"]
    assert check_outputs(new) == []  # a receipt, and every file as it records
    receipt = read_receipt(new)
    assert receipt is not None and receipt["kind"] == "init" and receipt["architecture"] == "bert"
    tokens = (new / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert receipt["vocab"]["source"] == "trained" and receipt["vocab"]["tokens"] == len(tokens)
    assert receipt["vocab"]["sha256"] == hashlib.sha256((new / "vocab.txt").read_bytes()).hexdigest()
    assert receipt["config"]["sha256"] == hashlib.sha256(config_file.read_bytes()).hexdigest()
    assert receipt["init"]["seed"] == 3 and receipt["heads"] == ["mlm", "seq_relationship"]
    assert [i["role"] for i in receipt["inputs"]] == ["config", "vocab-training-text"]

    loaded = zoo.load(new, heads="pretraining", device="cpu")
    assert loaded.config.vocab_size == len(tokens) and loaded.config.hidden_act == "gelu_new"  # upstream meaning
    assert loaded.tokenizer.tokenize("床前明月光") == list("床前明月光")
    want = initial_weights(loaded.config, seed=3)
    assert all(torch.equal(t, want[name]) for name, t in loaded.model.state_dict().items())
    assert len(loaded.fill_mask("床前明[MASK]光", top_k=3)[0]) == 3
    exported = zoo.export(new, tmp_path / "tf", format="tf", progress=False)  # back to an upstream release
    assert json.loads((exported.path / "bert_config.json").read_text())["vocab_size"] == len(tokens)


def test_a_config_may_leave_vocab_size_out(tmp_path: Path, poems: Path) -> None:
    (tmp_path / "albert_config.json").write_text(json.dumps(
        {"hidden_size": 32, "embedding_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64, "num_hidden_groups": 1, "inner_group_num": 1, "hidden_act": "relu"}))
    notes: list[str] = []
    out = zoo.init_model(tmp_path / "albert_config.json", out=tmp_path / "o", train_vocab=str(poems), vocab_size=50,
                         progress=lambda e: notes.append(e.message))
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "albert" and config["vocab_size"] == len((out / "vocab.txt").read_text().split())
    assert not [n for n in notes if "vocab_size" in n]  # nothing overridden, nothing to say
    assert read_receipt(out)["config"]["vocab_size"] is None  # type: ignore[index]


def test_vocab_from_a_file_a_registered_model_and_a_directory(zoo_env: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    register_tiny(zoo_env, tmp_path)
    fixture_vocab = (BERT_FIXTURE / "vocab.txt").read_text(encoding="utf-8").splitlines()
    for out, option, value, source in (("by_file", "--vocab", str(BERT_FIXTURE / "vocab.txt"), "file"),
                                       ("by_name", "--vocab-from", "tiny", "model"),
                                       ("by_dir", "--vocab-from", str(tmp_path / "by_file"), "model")):
        out = tmp_path / out
        code, _, err = run(capsys, "init", "--config", "tiny", option, value, "--out", str(out))
        assert code == 0, err
        assert (out / "vocab.txt").read_text(encoding="utf-8").splitlines() == fixture_vocab
        receipt = read_receipt(out)
        assert receipt is not None and receipt["vocab"]["source"] == source
        assert receipt["config"] == {"source": "registry", "model": "tiny", "vocab_size": 97}
    assert read_receipt(tmp_path / "by_name")["vocab"]["model"] == "tiny"  # type: ignore[index]


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("argv", "message"), [
    ([], "no vocab"),
    (["--vocab", "v.txt", "--vocab-from", "bert_base_zh"], "--vocab and --vocab-from together"),
    (["--train-vocab", "poems.txt"], "needs --vocab-size"),
    (["--vocab", "v.txt", "--vocab-size", "100"], "applies to --train-vocab only"),
])
def test_the_vocab_is_given_exactly_one_way(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "init", "--config", "albert_tiny_zh", "--out", str(tmp_path / "o"), *argv)
    assert code == 2 and message in err and "hint:" in err
    assert not (tmp_path / "o").exists()


def test_bad_configs_are_clear_errors(tmp_path: Path, poems: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vocab = ["--train-vocab", str(poems), "--vocab-size", "50"]
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "partial.json").write_text('{"hidden_size": 64}')
    (tmp_path / "odd.json").write_text('{"vocab_size": 9, "hidden_size": 60, "num_hidden_layers": 1, '
                                       '"num_attention_heads": 7, "intermediate_size": 8}')
    (tmp_path / "typed.json").write_text('{"hidden_size": "64", "num_hidden_layers": 1, '
                                         '"num_attention_heads": 4, "intermediate_size": 8}')
    for name, code, text in (("broken.json", 8, "not valid JSON"), ("partial.json", 8, "missing required key"),
                             ("odd.json", 8, "not divisible by num_attention_heads"),
                             ("typed.json", 8, "expected an integer, got a string"), ("missing.json", 3, "does not exist"),
                             ("albert_tiny", 3, "unknown model")):
        got, _, err = run(capsys, "init", "--config", str(tmp_path / name) if name.endswith(".json") else name,
                          "--out", str(tmp_path / "o"), *vocab)
        assert (got, text in err) == (code, True), (name, err)
        assert not (tmp_path / "o").exists()
    assert "albert_tiny_zh" in err  # the unknown name comes with suggestions


def test_a_bare_name_that_is_a_file_here_gets_the_path_hint(tmp_path: Path, poems: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myconfig").write_text("{}")
    with pytest.raises(NotFoundError) as info:
        zoo.init_model("myconfig", out="o", train_vocab=[poems], vocab_size=50)
    assert info.value.hint == "to use the file myconfig here, write ./myconfig"


def test_an_existing_directory_is_left_alone(tmp_path: Path, poems: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "init", "--config", "albert_tiny_zh", "--train-vocab", str(poems), "--vocab-size",
                       "50", "--out", str(out))
    assert code == 2 and "already exists and is not empty" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert zoo.init_model("albert_tiny_zh", out=empty, train_vocab=[poems], vocab_size=50,
                          progress=False) == empty and (empty / "receipt.json").is_file()


def test_unusable_vocab_inputs(tmp_path: Path, poems: Path) -> None:
    blank, latin1, bare = tmp_path / "blank.txt", tmp_path / "latin1.txt", tmp_path / "vocab.txt"
    blank.write_text("\n  \n")
    latin1.write_bytes("ok\ncafé\n".encode("latin-1"))
    bare.write_text("a\nb\n")
    with pytest.raises(DataError, match="no text to learn a vocab from"):
        zoo.init_model("albert_tiny_zh", out=tmp_path / "o", train_vocab=[blank], vocab_size=50)
    with pytest.raises(DataError, match="line 2 is not UTF-8"):
        zoo.init_model("albert_tiny_zh", out=tmp_path / "o", train_vocab=[latin1], vocab_size=50)
    with pytest.raises(NotFoundError, match="no such text file"):
        zoo.init_model("albert_tiny_zh", out=tmp_path / "o", train_vocab=[tmp_path / "nope.txt"], vocab_size=50)
    with pytest.raises(UsageError, match="too small"):
        zoo.init_model("albert_tiny_zh", out=tmp_path / "o", train_vocab=[poems], vocab_size=3)
    with pytest.raises(CheckpointError, match=r"lacks the special token\(s\) \[PAD\]"):
        zoo.init_model("albert_tiny_zh", out=tmp_path / "o", vocab=bare)
    with pytest.raises(UsageError, match="cannot be initialised here"):
        zoo.init_model("albert_tiny_zh", out=tmp_path / "o", vocab=bare, heads="question-answering")
    assert not (tmp_path / "o").exists()
