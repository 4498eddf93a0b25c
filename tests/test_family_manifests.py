"""The Chinese BERT family's manifests (issue 13): what they record, how the CLI shows it, and the head check.

The facts themselves and their sources are in docs/manifests.md ("The Chinese BERT family"); these tests pin what
the research established, so that an edit contradicting it fails. Fidelity against transformers is in
tests/test_family_chinese_bert.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from support.cli import run

from zoo import cache
from zoo.errors import UsageError
from zoo.registry import builtin_manifest_dir, get_manifest, list_manifests, list_models, parse_manifest

HFL = ["bert_wwm_zh", "bert_wwm_ext_zh", "roberta_wwm_ext_zh", "roberta_wwm_ext_large_zh", "rbt3_zh", "rbtl3_zh",
       "macbert_base_zh", "macbert_large_zh"]
UER = ["roberta_tiny_zh_uer", "roberta_mini_zh_uer", "roberta_small_zh_uer", "roberta_medium_zh_uer",
       "roberta_base_zh_uer"]
FAMILY = sorted(["bert_base_zh", *HFL, *UER])

#: name -> (layers, hidden, heads, intermediate, Hub repo)
SHAPES = {
    "bert_wwm_zh": (12, 768, 12, 3072, "hfl/chinese-bert-wwm"),
    "bert_wwm_ext_zh": (12, 768, 12, 3072, "hfl/chinese-bert-wwm-ext"),
    "roberta_wwm_ext_zh": (12, 768, 12, 3072, "hfl/chinese-roberta-wwm-ext"),
    "roberta_wwm_ext_large_zh": (24, 1024, 16, 4096, "hfl/chinese-roberta-wwm-ext-large"),
    "rbt3_zh": (3, 768, 12, 3072, "hfl/rbt3"),
    "rbtl3_zh": (3, 1024, 16, 4096, "hfl/rbtl3"),
    "macbert_base_zh": (12, 768, 12, 3072, "hfl/chinese-macbert-base"),
    "macbert_large_zh": (24, 1024, 16, 4096, "hfl/chinese-macbert-large"),
    "roberta_tiny_zh_uer": (2, 128, 2, 512, "uer/chinese_roberta_L-2_H-128"),
    "roberta_mini_zh_uer": (4, 256, 4, 1024, "uer/chinese_roberta_L-4_H-256"),
    "roberta_small_zh_uer": (4, 512, 8, 2048, "uer/chinese_roberta_L-4_H-512"),
    "roberta_medium_zh_uer": (8, 512, 8, 2048, "uer/chinese_roberta_L-8_H-512"),
    "roberta_base_zh_uer": (12, 768, 12, 3072, "uer/chinese_roberta_L-12_H-768"),
}
#: name -> (mlm, seq_relationship, pooler) as recorded
HEADS = {
    "bert_wwm_zh": ("unknown", "unknown", "trained"),
    "bert_wwm_ext_zh": ("unknown", "unknown", "trained"),
    "roberta_wwm_ext_zh": ("unknown", "untrained", "untrained"),
    "roberta_wwm_ext_large_zh": ("untrained", "untrained", "untrained"),
    "rbt3_zh": ("unknown", "unknown", "unknown"),
    "rbtl3_zh": ("unknown", "unknown", "unknown"),
    "macbert_base_zh": ("trained", "trained", "trained"),
    "macbert_large_zh": ("trained", "trained", "trained"),
    **dict.fromkeys(UER, ("trained", "absent", "absent")),
}
#: published parameter counts, in millions: HFL's README (小参数量模型 table) and MacBERT's README (which counts
#: without the pooler: RoBERTa-wwm-ext-large is 325M in the one, 324M in the other)
PUBLISHED_M = {"roberta_wwm_ext_large_zh": 325, "roberta_wwm_ext_zh": 102, "rbtl3_zh": 61, "rbt3_zh": 38,
               "macbert_large_zh": 324, "macbert_base_zh": 102}


@pytest.mark.parametrize("name", HFL + UER)
def test_manifest_parses_and_records_the_researched_facts(name: str) -> None:
    m = get_manifest(name)
    layers, hidden, heads, intermediate, repo = SHAPES[name]
    c = m.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (
        layers, hidden, heads, intermediate)
    assert (c.vocab_size, c.max_position_embeddings, c.type_vocab_size) == (21128, 512, 2)
    assert m.params == c.param_count() and m.architecture == "bert" and m.tokenizer.lowercase
    if name in PUBLISHED_M:  # within rounding, counted with or without the pooler
        counts = (c.param_count(), c.param_count() - hidden * hidden - hidden)
        assert min(abs(n / 1e6 - PUBLISHED_M[name]) for n in counts) < 0.6
    # the activation each was trained with: Google's TF code (tanh) for HFL, UER-py's erf gelu for UER
    assert c.hidden_act == ("gelu" if name in UER else "gelu_new")
    assert m.license == ("NOASSERTION" if name in UER else "Apache-2.0")
    assert (m.heads.mlm, m.heads.seq_relationship, m.heads.pooler) == HEADS[name] and m.heads.note
    assert m.citation and m.homepage
    [source] = m.sources  # no stable URL for any original TF/UER-py archive: the Hub copy only
    assert (source.kind, source.hf, source.format, source.checkpoint, source.vocab) == (
        "hf", repo, "pytorch", "pytorch_model.bin", "vocab.txt")
    # a commit only where one was found, and then every file pinned; otherwise main and trust on first use
    assert source.revision_is_commit == source.pinned
    if not source.revision_is_commit:
        assert source.revision == "main" and not any(pin.sha256 or pin.size for pin in source.files.values())
    assert source.pinned or "zoo pin" in m.path.read_text(encoding="utf-8")  # says how to pin it


def test_only_pins_that_were_substantiated_are_recorded() -> None:
    large = get_manifest("roberta_wwm_ext_large_zh").sources[0]
    assert large.revision == "a25cc9e05974bd9687e528edd516f2cfdb3f5db9"
    assert large.files["pytorch_model.bin"].sha256 == "4ac62d49144d770c5ca9a5d1d3039c4995665a080febe63198189857c6bd11cd"
    assert large.files["pytorch_model.bin"].size == 1306484351
    # its vocab is Google's Chinese vocab, byte for byte the one pinned for bert_base_zh (NVIDIA's list)
    google = get_manifest("bert_base_zh").sources[0].files["chinese_L-12_H-768_A-12/vocab.txt"]
    assert large.files["vocab.txt"] == google
    assert [n for n in HFL + UER if get_manifest(n).sources[0].pinned] == ["roberta_wwm_ext_large_zh"]


@pytest.mark.parametrize(("alias", "name"), [
    ("chinese-roberta-wwm-ext", "roberta_wwm_ext_zh"),
    ("roberta_wwm_ext_zh", "roberta_wwm_ext_zh"),
    ("Chinese-RoBERTa-wwm-ext", "roberta_wwm_ext_zh"),
    ("chinese_roberta_wwm_ext_l-12_h-768_a-12", "roberta_wwm_ext_zh"),
    ("chinese-roberta-wwm-ext-large", "roberta_wwm_ext_large_zh"),
    ("chinese-bert-wwm", "bert_wwm_zh"),
    ("chinese-bert-wwm-ext", "bert_wwm_ext_zh"),
    ("chinese_wwm_ext_L-12_H-768_A-12", "bert_wwm_ext_zh"),
    ("rbt3", "rbt3_zh"),
    ("RBTL3", "rbtl3_zh"),
    ("chinese-macbert-base", "macbert_base_zh"),
    ("chinese-macbert-large", "macbert_large_zh"),
    ("chinese_roberta_L-2_H-128", "roberta_tiny_zh_uer"),
    ("chinese_roberta_L-8_H-512", "roberta_medium_zh_uer"),
    ("roberta-base-zh-uer", "roberta_base_zh_uer"),
])
def test_aliases_users_type_resolve(alias: str, name: str) -> None:
    assert get_manifest(alias).name == name


def test_list_shows_exactly_the_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert list_models(family="bert", language="zh") == FAMILY
    code, out, _ = run(capsys, "list", "--family", "bert", "--language", "zh", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == FAMILY
    large = next(r for r in rows if r["name"] == "roberta_wwm_ext_large_zh")
    assert large["heads"]["mlm"] == "untrained" and large["params"] == 325_522_432 and large["cached"] is False
    assert next(r for r in rows if r["name"] == "bert_base_zh")["heads"]["mlm"] == "trained"
    code, out, _ = run(capsys, "list", "--family", "bert", "--lang", "zh")
    assert code == 0 and all(name in out for name in FAMILY)


def test_info_shows_the_head_status(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "info", "chinese-roberta-wwm-ext-large", "--json")
    data = json.loads(out)
    assert code == 0 and data["name"] == "roberta_wwm_ext_large_zh"
    assert data["heads"] == {"mlm": "untrained", "seq_relationship": "untrained", "pooler": "untrained",
                             "note": get_manifest("roberta_wwm_ext_large_zh").heads.note}
    code, out, _ = run(capsys, "info", "roberta_wwm_ext_large_zh")
    text = " ".join(out.split())
    assert code == 0
    assert "heads: mlm untrained (fill-mask refused), seq_relationship untrained, pooler untrained" in text
    assert "ymcui/Chinese-BERT-wwm#76" in text
    code, out, _ = run(capsys, "info", "roberta_tiny_zh_uer")
    assert "mlm trained, seq_relationship absent, pooler absent" in " ".join(out.split())
    code, out, _ = run(capsys, "info", "bert_base_zh")
    assert "mlm trained, seq_relationship trained, pooler trained" in " ".join(out.split())
    assert "google-research/bert#102" in " ".join(out.split())
    data = yaml.safe_load((builtin_manifest_dir() / "bert_base_zh.yaml").read_text(encoding="utf-8"))
    del data["heads"]
    data.update(name="my_bert", aliases=[])
    (tmp_path / "my_bert.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    code, out, _ = run(capsys, "--manifests", str(tmp_path), "info", "my_bert")  # a user manifest without heads
    assert code == 0 and "mlm not recorded, seq_relationship not recorded, pooler not recorded" in " ".join(out.split())


def test_zoo_run_refuses_an_untrained_mlm_head_before_downloading(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "run", "chinese-roberta-wwm-ext-large", "今天天气很[MASK]。", "--offline")
    text = " ".join(err.split())
    assert code == 2 and not out
    assert "roberta_wwm_ext_large_zh: the MLM head of this release is untrained" in text
    assert "zoo pretrain roberta_wwm_ext_large_zh --corpus FILE --objective mlm --steps N --out DIR" in text
    assert not cache.snapshots() and not cache.conversions()  # nothing fetched, nothing converted
    # a model whose head is merely of unknown state is not refused (here it fails later: offline, not cached)
    code, _, err = run(capsys, "run", "bert_wwm_zh", "今天天气很[MASK]。", "--offline")
    assert code == 7 and "MLM head" not in err


def _manifest(mlm: str | None) -> object:
    data = {"schema": 1, "name": "t", "family": "bert", "language": "zh", "description": "d", "license": "x",
            "config": {"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 16},
            "sources": [{"hf": "o/r", "format": "pytorch", "checkpoint": "m.bin", "vocab": "v.txt"}]}
    if mlm is not None:
        data["heads"] = {"mlm": mlm, "note": "why"}
    return parse_manifest(data, Path("/m/t.yaml"))


@pytest.mark.parametrize("state", ["untrained", "absent"])
def test_check_fill_mask_refuses_untrained_and_absent_heads(state: str) -> None:
    from zoo.loader import check_fill_mask

    with pytest.raises(UsageError, match=f"MLM head of this release is {state}.*\\(why\\)"):
        check_fill_mask(_manifest(state))  # type: ignore[arg-type]


def test_check_fill_mask_warns_on_unknown_and_passes_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    from zoo.loader import check_fill_mask

    with caplog.at_level(logging.WARNING, logger="zoo"):
        for state in ("trained", None):
            check_fill_mask(_manifest(state))  # type: ignore[arg-type]
        check_fill_mask(None)
        assert not caplog.records
        check_fill_mask(_manifest("unknown"), warn=False)  # type: ignore[arg-type]
        assert not caplog.records
        check_fill_mask(_manifest("unknown"))  # type: ignore[arg-type]
    assert ["is not established" in r.getMessage() for r in caplog.records] == [True]


def test_every_family_manifest_is_listed_in_the_docs() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "manifests.md").read_text(encoding="utf-8")
    section = docs[docs.index("## The Chinese BERT family"):]
    for name in HFL + UER:
        assert f"`{name}`" in section, name
    assert "### The `heads:` key" in docs or "## The `heads:` key" in docs
    assert [m.name for m in list_manifests(family="bert", language="zh")] == FAMILY
