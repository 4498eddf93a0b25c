"""Fidelity of the Chinese BERT family (issue 13): zoo against transformers on the same files, served like the Hub.

Every distinct shape of the family gets a tiny fixture in the format of its Hub copy: a transformers-named
``pytorch_model.bin`` with the head keys that copy holds, a ``config.json`` declaring what the Hub copy declares
(``"hidden_act": "gelu"``) and a ``vocab.txt``. It keeps what matters of the real models (the layer count, 64
dimensions per head, the intermediate/hidden ratio, the type vocab, the manifest's activation, which heads and pooler
the files hold) and scales width and vocab down. zoo's own ``write_git_repo`` puts the fixtures into a git mirror,
olah (offline, 127.0.0.1, one server for the module) serves it with the Hub's API, and zoo pulls each through an
``hf:`` source pinned to the commit and to every file's sha256, converts it and loads it by name, as a user would.

"Equal" means: zoo computes with the manifest's config; transformers reads the same files (their sha256 are the
pins zoo verified) with the Hub copy's ``config.json``, except ``hidden_act``, which is set to the manifest's.
HFL trained with Google's TF code (tanh gelu: ``gelu_new`` in the manifests) while its Hub configs say ``"gelu"``
(erf in transformers), so transformers run as published differs from zoo on purpose; the test shows that
difference too. UER trained with erf gelu, which is what its Hub configs say, so there nothing is overridden.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers.olah import OLAH, serve_mirror

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import zoo
from zoo import cache
from zoo.cli import main
from zoo.config import ModelConfig
from zoo.hub.mirroring import write_git_repo
from zoo.registry import Manifest, get_manifest

VOCAB = Path(__file__).parent / "fixtures" / "tf" / "bert" / "vocab.txt"
ATOL = 1e-5
ORG = "family"

pytestmark = pytest.mark.skipif(not OLAH.exists() or shutil.which("git") is None,
                                reason="needs olah (pip install olah) and git")

#: fixture shape -> the registered models it stands for (the same layers, heads, ratios, activation, file format
#: and head keys); test_every_member_of_the_family_has_a_fixture_of_its_shape keeps this honest
SHAPES: dict[str, tuple[str, ...]] = {
    "hfl_base": ("bert_wwm_zh", "bert_wwm_ext_zh", "roberta_wwm_ext_zh", "macbert_base_zh"),
    "hfl_large": ("roberta_wwm_ext_large_zh", "macbert_large_zh"),
    "rbt3": ("rbt3_zh",),
    "rbtl3": ("rbtl3_zh",),
    "uer_tiny": ("roberta_tiny_zh_uer",),
    "uer_mini": ("roberta_mini_zh_uer",),
    "uer_small": ("roberta_small_zh_uer",),
    "uer_medium": ("roberta_medium_zh_uer",),
    "uer_base": ("roberta_base_zh_uer",),
}
#: the shape's extra fixture: a UER-style checkpoint whose MLM decoder is NOT the word embeddings
UNTIED = "uer_tiny_untied"
TEXTS: list[Any] = ["今天天气很好。", ("中国人", "我们的工作"), "the model zoo 是 bert", "好"]


# ------------------------------------------------------------------------------------------------ shapes
def parts(manifest: Manifest) -> frozenset[str]:
    """What the Hub copy's weights hold besides the encoder: ``pooler``, ``mlm``, ``seq_relationship`` (a head
    the manifest records as ``absent`` is not in the files; every other one is, trained or not)."""
    return frozenset(h for h in ("pooler", "mlm", "seq_relationship") if manifest.heads.state(h) != "absent")


def signature(manifest: Manifest) -> tuple[Any, ...]:
    """What a fixture must keep of a family member."""
    c, src = manifest.config, manifest.sources[0]
    return (c.num_hidden_layers, c.num_attention_heads, c.hidden_size // c.num_attention_heads,
            c.intermediate_size // c.hidden_size, c.hidden_act, c.type_vocab_size, src.format, src.checkpoint,
            parts(manifest), "UER" in manifest.description)


def shrink(config: ModelConfig, vocab_size: int) -> ModelConfig:
    """The same structure, narrow: 64 dimensions per head as in every member, an eighth of the heads (at least
    one), the same intermediate/hidden ratio, 64 positions, the fixture's vocab."""
    heads = max(1, config.num_attention_heads // 8)
    hidden = heads * (config.hidden_size // config.num_attention_heads)
    return dataclasses.replace(config, vocab_size=vocab_size, hidden_size=hidden, num_attention_heads=heads,
                               intermediate_size=hidden * (config.intermediate_size // config.hidden_size),
                               max_position_embeddings=64)


def hub_config(config: ModelConfig) -> dict[str, Any]:
    """The ``config.json`` of a Hub copy: transformers' BertConfig fields, ``hidden_act`` as the Hub declares it."""
    return {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": config.vocab_size,
            "hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
            "hidden_act": "gelu", "max_position_embeddings": config.max_position_embeddings,
            "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.layer_norm_eps,
            "initializer_range": config.initializer_range, "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1, "pad_token_id": 0}


def hub_state(config: ModelConfig, held: frozenset[str], seed: int, *, untied: bool = False) -> dict[str, Any]:
    """A transformers-named state dict with the keys the family's Hub copies hold: BertForPreTraining's names;
    no ``cls.predictions.decoder.bias`` (neither HFL's conversions nor UER's converter write one); the decoder
    weight stored under its own name, equal to the word embeddings (tied) unless ``untied``. Random weights that
    keep every layer's activations of order 1, so that every layer (and the choice of gelu) matters."""
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(seed)
    model = BertForPreTraining(BertConfig(**hub_config(config)))
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("position_ids") or name == "cls.predictions.decoder.bias":
            continue
        if name.endswith("LayerNorm.weight"):
            value = 1 + 0.1 * torch.randn_like(tensor)
        elif tensor.dim() == 1 or "embeddings" in name:  # embeddings also decode: logits of order 1, so
            value = 0.1 * torch.randn_like(tensor)  # float32 rounding stays well below 1e-5 after 24 layers
        else:
            value = torch.randn_like(tensor) / tensor.shape[1] ** 0.5
        state[name] = value
    state["cls.predictions.decoder.weight"] = (0.1 * torch.randn_like(state["bert.embeddings.word_embeddings.weight"])
                                              if untied else state["bert.embeddings.word_embeddings.weight"])
    drop = {"pooler": ("bert.pooler.",), "mlm": ("cls.predictions.",), "seq_relationship": ("cls.seq_relationship.",)}
    for part, prefixes in drop.items():
        if part not in held:
            state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
    return state


@dataclasses.dataclass
class Fixture:
    shape: str
    member: Manifest  # the registered model whose structure and head record it copies
    config: ModelConfig  # the fixture manifest's config (the member's, shrunk)
    held: frozenset[str]
    folder: Path  # the files as served
    commit: str = ""

    @property
    def name(self) -> str:
        return f"fx_{self.shape}"

    @property
    def repo(self) -> str:
        return f"{ORG}/{self.shape}"

    def manifest(self) -> dict[str, Any]:
        """A user manifest like the member's, for the fixture: an hf: source pinned to the commit and sha256s."""
        heads = {h: s for h in ("mlm", "seq_relationship", "pooler") if (s := self.member.heads.state(h))}
        files = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "size": p.stat().st_size}
                 for p in sorted(self.folder.iterdir())}
        return {"schema": 1, "name": self.name, "family": "bert", "language": "zh",
                "description": f"tiny fixture of {self.member.name} ({self.member.description})",
                "license": self.member.license,
                "config": {k: v for k, v in self.config.to_dict().items() if k != "architecture"},
                "tokenizer": {"lowercase": self.member.tokenizer.lowercase},
                "heads": heads | {"note": self.member.heads.note},
                "sources": [{"hf": self.repo, "revision": self.commit, "format": "pytorch",
                             "checkpoint": "pytorch_model.bin", "vocab": "vocab.txt", "files": files}]}


def make_fixture(shape: str, root: Path, seed: int) -> Fixture:
    member = get_manifest(SHAPES.get(shape, SHAPES["uer_tiny"])[0])
    vocab = VOCAB.read_text(encoding="utf-8").splitlines()
    config = shrink(member.config, len(vocab))
    fixture = Fixture(shape, member, config, parts(member), root / "files" / shape)
    fixture.folder.mkdir(parents=True)
    shutil.copy(VOCAB, fixture.folder / "vocab.txt")
    (fixture.folder / "config.json").write_text(json.dumps(hub_config(config), indent=2) + "\n")
    torch.save(hub_state(config, fixture.held, seed, untied=shape == UNTIED), fixture.folder / "pytorch_model.bin")
    repo = root / "mirror" / "models" / ORG / shape
    fixture.commit = str(write_git_repo(fixture.folder, repo, message=f"{shape} fixture").commit)
    return fixture


# --------------------------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    """One olah server for the module, serving every fixture; yields ``(endpoint, {shape: Fixture})``."""
    root = tmp_path_factory.mktemp("family_hub")
    fixtures = {shape: make_fixture(shape, root, seed) for seed, shape in enumerate([*SHAPES, UNTIED])}
    with serve_mirror(root / "mirror", root, probe=f"{ORG}/hfl_base") as endpoint:
        yield endpoint, fixtures


@pytest.fixture
def family(hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Fixture]:
    """zoo pointed at the server (HF_ENDPOINT), with a user manifest per fixture; an empty cache per test."""
    endpoint, fixtures = hub
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for fixture in fixtures.values():
        (manifests / f"{fixture.name}.yaml").write_text(yaml.safe_dump(fixture.manifest(), allow_unicode=True),
                                                        encoding="utf-8")
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    zoo.registry.clear_cache()
    return fixtures


def _batch(loaded: Any) -> dict[str, Any]:
    singles = [t for t in TEXTS if isinstance(t, str)]
    pairs = [t for t in TEXTS if isinstance(t, tuple)]
    a, b = loaded.tokenizer_batch(singles, truncation=True), loaded.tokenizer_batch(pairs, truncation=True)
    width = max(a["input_ids"].shape[1], b["input_ids"].shape[1])
    pad = {k: torch.nn.functional.pad(v, (0, width - v.shape[1])) for k, v in a.items()}
    pad_b = {k: torch.nn.functional.pad(v, (0, width - v.shape[1])) for k, v in b.items()}
    return {k: torch.cat([pad[k], pad_b[k]]) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _diff(theirs: Any, mine: Any, real: Any) -> float:
    """The largest difference at real positions, relative to the values' magnitude (at least 1): two
    implementations round differently, and their differences grow with the values (logits of a large model under
    ``ATEN_CPU_CAPABILITY=default`` differed by 1.04e-5 at magnitudes near 10)."""
    scale = max(1.0, float(theirs[real].abs().max()))
    return float((theirs[real] - mine[real]).abs().max()) / scale


# ------------------------------------------------------------------------------------------------- tests
def test_every_member_of_the_family_has_a_fixture_of_its_shape() -> None:
    family = {m.name for m in zoo.list_manifests(family="bert", language="zh")} - {"bert_base_zh"}
    members = [name for names in SHAPES.values() for name in names]
    assert sorted(members) == sorted(family) and len(set(members)) == len(members)
    for shape, names in SHAPES.items():
        signatures = {signature(get_manifest(name)) for name in names}
        assert len(signatures) == 1, (shape, signatures)
        member = get_manifest(names[0])
        small = shrink(member.config, 97)
        assert small.num_hidden_layers == member.config.num_hidden_layers
        assert small.hidden_size // small.num_attention_heads == 64
        assert small.intermediate_size * member.config.hidden_size == member.config.intermediate_size * small.hidden_size
        assert (small.hidden_act, small.type_vocab_size) == (member.config.hidden_act, member.config.type_vocab_size)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_zoo_load_equals_transformers_on_the_same_files(family: dict[str, Fixture], shape: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from transformers import BertForMaskedLM, BertForPreTraining, BertModel

    fixture = family[shape]
    held = fixture.held
    heads = "pretraining" if "seq_relationship" in held else "mlm" if "mlm" in held else None
    with caplog.at_level(logging.WARNING, logger="zoo"):
        loaded = zoo.load(fixture.name, device="cpu", heads=heads, progress=False)
    # the files zoo verified (the manifest pins their sha256) are the files transformers reads below
    snapshot = cache.snapshots(fixture.name)[0]
    assert {rel: r.sha256 for rel, r in snapshot.files.items()} == {
        rel: pin["sha256"] for rel, pin in fixture.manifest()["sources"][0]["files"].items()}
    assert loaded.config.hidden_act == fixture.member.config.hidden_act
    batch = _batch(loaded)
    real = batch["attention_mask"].bool()
    act = {"hidden_act": fixture.config.hidden_act}  # the manifest's activation (see the module docstring)
    with torch.no_grad():
        ours = loaded.model(**batch, output_hidden_states=True)
        base = BertModel.from_pretrained(fixture.folder, **act).eval()(**batch, output_hidden_states=True)
    assert len(ours.hidden_states) == len(base.hidden_states) == fixture.config.num_hidden_layers + 1
    for mine, theirs in zip(ours.hidden_states, base.hidden_states):
        assert _diff(theirs, mine, real) <= ATOL
    assert _diff(base.last_hidden_state, ours.last_hidden_state, real) <= ATOL
    if "pooler" in held:
        assert float((base.pooler_output - ours.pooler_output).abs().max()) <= ATOL
    else:  # both initialise the missing pooler at random: nothing to compare, but zoo says so
        assert any("has no pooler" in r.getMessage() for r in caplog.records)
    if "mlm" in held:
        with torch.no_grad():
            mlm = BertForMaskedLM.from_pretrained(fixture.folder, **act).eval()(**batch)
        assert _diff(mlm.logits, ours.mlm_logits, real) <= ATOL
    if "seq_relationship" in held:
        with torch.no_grad():
            pre = BertForPreTraining.from_pretrained(fixture.folder, **act).eval()(**batch)
        assert float((pre.seq_relationship_logits - ours.seq_relationship_logits).abs().max()) <= ATOL
        assert _diff(pre.prediction_logits, ours.mlm_logits, real) <= ATOL
    if fixture.config.hidden_act != "gelu":  # transformers as published (erf gelu) is not what HFL trained
        with torch.no_grad():
            published = BertModel.from_pretrained(fixture.folder).eval()(**batch)
        assert _diff(published.last_hidden_state, ours.last_hidden_state, real) > ATOL


def test_fill_mask_refuses_an_untrained_mlm_head(family: dict[str, Fixture], capsys: pytest.CaptureFixture[str]) -> None:
    fixture = family["hfl_large"]  # records roberta_wwm_ext_large_zh's heads: mlm untrained
    assert fixture.manifest()["heads"]["mlm"] == "untrained"
    # zoo run refuses before downloading anything: exit 2 (usage), a hint that works, an empty cache
    assert main(["run", fixture.name, "今天[MASK]气很好。"]) == 2
    err = capsys.readouterr().err
    assert "untrained" in err and f"zoo pretrain {fixture.name}" in err and "--objective mlm" in err
    assert not cache.snapshots(fixture.name)
    loaded = zoo.load(fixture.name, device="cpu", progress=False)
    with pytest.raises(zoo.UsageError, match="MLM head of this release is untrained") as info:
        loaded.fill_mask("今天[MASK]气很好。")
    assert "zoo pretrain" in (info.value.hint or "")
    assert loaded.embed(["今天天气很好"]).shape == (1, fixture.config.hidden_size)  # the encoder is fine
    # the same weights loaded by path carry no manifest, so nothing is refused there
    assert zoo.load(loaded.path, device="cpu", progress=False).fill_mask("今天[MASK]气很好。", top_k=2)


def test_fill_mask_warns_once_about_a_head_of_unknown_state(family: dict[str, Fixture],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    fixture = family["hfl_base"]  # records bert_wwm_zh's heads: mlm unknown
    loaded = zoo.load(fixture.name, device="cpu", progress=False)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        first = loaded.fill_mask("今天天气很[MASK]。", top_k=3)
        loaded.fill_mask("中国[MASK]", top_k=1)
    assert len(first[0]) == 3
    warnings = [r.getMessage() for r in caplog.records if "is not established" in r.getMessage()]
    assert len(warnings) == 1 and fixture.name in warnings[0]


def test_fill_mask_works_for_a_trained_mlm_head_without_a_pooler(family: dict[str, Fixture]) -> None:
    loaded = zoo.load(family["uer_small"].name, device="cpu", progress=False)
    ranked = loaded.fill_mask("今天天气很[MASK]。", top_k=4)
    assert [len(r) for r in ranked] == [4] and all(0 < item["score"] <= 1 for item in ranked[0])


def test_an_untied_mlm_decoder_is_left_out_not_replaced(family: dict[str, Fixture],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    from transformers import BertModel

    fixture = family[UNTIED]  # trained untied (UER-py without --tie_weights could publish such a file)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        loaded = zoo.load(fixture.name, device="cpu", progress=False)
    assert any("not tied to the word embeddings" in r.getMessage() for r in caplog.records)
    receipt = json.loads((loaded.path / "receipt.json").read_text())
    assert receipt["heads"] == []  # zoo's head would decode with the embeddings: a different model, so none
    batch = _batch(loaded)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ours = loaded.model(**batch)
        base = BertModel.from_pretrained(fixture.folder).eval()(**batch)
    assert _diff(base.last_hidden_state, ours.last_hidden_state, real) <= ATOL  # the encoder is unaffected
    with pytest.raises(zoo.UsageError, match="no MLM head"):
        loaded.fill_mask("今天[MASK]")
