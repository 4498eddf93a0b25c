"""Manifest schema validation, the registry's lookup rules, and the built-in manifests' consistency."""

from __future__ import annotations

import ast
import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from zoo.config import ModelConfig
from zoo.errors import ManifestError, NotFoundError
from zoo.registry import (
    Registry,
    builtin_manifest_dir,
    get_manifest,
    list_models,
    load_registry,
    parse_manifest,
    read_manifest,
)
from zoo.registry.schema import find_in_snapshot

VALID: dict[str, Any] = {
    "schema": 1,
    "name": "albert_test_zh",
    "aliases": ["albert-test-zh"],
    "family": "albert",
    "language": "zh",
    "description": "a test manifest",
    "license": "Apache-2.0",
    "homepage": "https://example.org",
    "citation": "arXiv:1909.11942",
    "params": None,
    "config": {
        "vocab_size": 100, "embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "relu", "max_position_embeddings": 64,
        "type_vocab_size": 2, "num_hidden_groups": 1, "inner_group_num": 1, "ln_type": "postln",
        "layer_norm_eps": 1e-12, "initializer_range": 0.02,
    },
    "tokenizer": {"lowercase": True},
    "sources": [
        {"url": "https://example.org/albert_test.tar.gz", "sha256": None, "size": None, "archive": "tar.gz",
         "format": "tf-checkpoint", "scheme": "google-albert", "checkpoint": "albert_test/model.ckpt-best",
         "vocab": "albert_test/vocab_chinese.txt",
         "files": {"albert_test/vocab_chinese.txt": {"sha256": "a" * 64, "size": 10}}},
        {"hf": "org/albert-test", "revision": "0" * 40, "format": "pytorch", "checkpoint": "pytorch_model.bin",
         "vocab": "vocab.txt", "files": {"pytorch_model.bin": {"sha256": "b" * 64, "size": 0},
                                          "vocab.txt": {"sha256": "c" * 64, "size": 5}}},
    ],
}


def manifest(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        node: Any = data
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        last = keys[-1]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


_DELETE = object()


def parse(data: dict[str, Any]):
    return parse_manifest(data, Path("/m/test.yaml"))


def test_valid_manifest_parses_with_derived_fields() -> None:
    m = parse(manifest())
    assert m.name == "albert_test_zh"
    assert m.architecture == "albert"
    assert m.config.embedding_size == 16 and m.config.hidden_act == "relu"
    assert [s.kind for s in m.sources] == ["url", "hf"]
    assert m.sources[0].archive == "tar.gz" and m.sources[0].scheme == "google-albert"
    assert m.sources[1].label == f"hf:org/albert-test@{'0' * 40}"
    assert m.sources[1].revision_is_commit and m.sources[1].pinned and not m.sources[0].pinned
    assert m.sources[0].files["albert_test/vocab_chinese.txt"].size == 10
    # an hf source is pinned only when its checkpoint and vocab are
    unpinned_vocab = manifest()
    del unpinned_vocab["sources"][1]["files"]["vocab.txt"]
    assert not parse(unpinned_vocab).sources[1].pinned


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"colour": "red"}, "colour", "unknown key"),
        ({"name": _DELETE}, "name", "missing required key"),
        ({"name": "Albert Test"}, "name", r"\[a-z0-9_\]\+"),
        ({"schema": 2}, "schema", "expected 1, got 2"),
        ({"family": "gpt"}, "family", "expected one of albert, bert, got 'gpt'"),
        ({"language": "fr"}, "language", "expected one of zh, en, multi"),
        ({"params": "ten"}, "params", "expected an integer, got a string"),
        ({"params": 12345}, "params", "disagrees with the config, which gives"),
        ({"aliases": ["Bad Alias"]}, r"aliases\[0\]", "expected a lowercase name"),
        ({"config__hidden_size": "32"}, "config.hidden_size", "expected an integer, got a string"),
        ({"config__hidden_size": True}, "config.hidden_size", "expected an integer, got a boolean"),
        ({"config__num_attention_heads": 5}, "config.num_attention_heads", "not divisible"),
        ({"config__hidden_act": "swish"}, "config.hidden_act", "expected one of relu, gelu, gelu_new"),
        ({"config__ln_type": "preln"}, "config.ln_type", "only in brightmart"),
        ({"config__embedding_size": _DELETE}, "config.embedding_size", "missing required key"),
        ({"config__vocab_size": 0}, "config.vocab_size", "positive integer"),
        ({"config__num_hidden_groups": 3}, "config.num_hidden_groups", "never run"),
        ({"config__dropout": 0.1}, "config.dropout", "unknown key"),
        ({"config__layer_norm_eps": float("nan")}, "config.layer_norm_eps", "expected a finite number, got nan"),
        ({"config__initializer_range": float("inf")}, "config.initializer_range", "expected a finite number"),
        ({"config__layer_norm_eps": 0.0}, "config.layer_norm_eps", "must be > 0"),
        ({"config__layer_norm_eps": True}, "config.layer_norm_eps", "expected a number, got a boolean"),
        ({"config__intermediate_size": 64.0}, "config.intermediate_size", "expected an integer, got a number 64.0"),
        ({"config__hidden_dropout_prob": 1.0}, "config.hidden_dropout_prob", r"must be in \[0, 1\)"),
        ({"config__hidden_act": ["relu"]}, "config.hidden_act", "expected one of relu, gelu, gelu_new, got"),
        ({"sources": []}, "sources", "at least one source"),
        ({"sources__0__hf": "org/repo"}, r"sources\[0\]", "exactly one of 'url' or 'hf'"),
        ({"sources__0__url": _DELETE}, r"sources\[0\]", "exactly one of 'url' or 'hf'"),
        ({"sources__0__url": "ftp://x/y.zip"}, r"sources\[0\]\.url", "http://, https:// or file://"),
        ({"sources__0__scheme": _DELETE}, r"sources\[0\]\.scheme", "needs a scheme"),
        ({"sources__0__scheme": "bert"}, r"sources\[0\]\.scheme", "expected one of google-albert"),
        ({"sources__1__scheme": "google-albert"}, r"sources\[1\]\.scheme", "only tf-checkpoint sources"),
        ({"sources__0__sha256": "ABC"}, r"sources\[0\]\.sha256", "64 lowercase hex digits"),
        ({"sources__0__size": -1}, r"sources\[0\]\.size", ">= 0"),
        ({"sources__0__archive": "rar"}, r"sources\[0\]\.archive", "expected one of zip, tar.gz, none"),
        ({"sources__0__format": "onnx"}, r"sources\[0\]\.format", "expected one of tf-checkpoint"),
        ({"sources__0__checkpoint": "../x"}, r"sources\[0\]\.checkpoint", "relative path"),
        ({"sources__0__vocab": "/etc/passwd"}, r"sources\[0\]\.vocab", "relative path"),
        ({"sources__0__checkpoint": _DELETE}, r"sources\[0\]\.checkpoint", "missing required key"),
        ({"sources__0__revision": "0" * 40}, r"sources\[0\]\.revision", "only hf sources"),
        ({"sources__0__extra": 1}, r"sources\[0\]\.extra", "unknown key"),
        ({"sources__1__hf": "not a repo"}, r"sources\[1\]\.hf", "org/name"),
        ({"sources__1__archive": "zip"}, r"sources\[1\]\.archive", "expected 'none'"),
        ({"sources__1__sha256": "0" * 64}, r"sources\[1\]\.sha256", "pin each file under 'files'"),
        ({"sources__1__size": 10}, r"sources\[1\]\.size", "pin each file under 'files'"),
        ({"sources__1__files__pytorch_model.bin__sha256": "xyz"}, r"sources\[1\]\.files\.pytorch_model\.bin\.sha256",
         "64 lowercase hex"),
        ({"sources__1__files__pytorch_model.bin__md5": "x"}, r"sources\[1\]\.files\.pytorch_model\.bin\.md5",
         "unknown key"),
        ({"sources__0__scheme": "google-bert"}, "sources", "family albert cannot use scheme google-bert"),
        ({"tokenizer__lowercase": "yes"}, "tokenizer.lowercase", "expected true/false"),
        ({"heads": "untrained"}, "heads", "expected a mapping, got a string"),
        ({"heads": {"mlm": "random"}}, "heads.mlm", "expected one of trained, untrained, absent, unknown"),
        ({"heads": {"mlm": True}}, "heads.mlm", "expected a string, got a boolean"),
        ({"heads": {"nsp": "trained"}}, "heads.nsp", "unknown key"),
        ({"heads": {"note": "  "}}, "heads.note", "non-empty string"),
        ({"heads": {"note": 3}}, "heads.note", "expected a string, got an integer"),
        # patterns match the whole string: `$` would accept a trailing newline (issue 17, item 14)
        ({"name": "albert_test_zh\n"}, "name", r"\[a-z0-9_\]\+"),
        ({"aliases": ["albert-test\n"]}, r"aliases\[0\]", "expected a lowercase name"),
        ({"sources__0__sha256": "a" * 64 + "\n"}, r"sources\[0\]\.sha256", "64 lowercase hex digits"),
        ({"sources__1__files__vocab.txt__sha256": "c" * 64 + "\n"}, r"sources\[1\]\.files\.vocab\.txt\.sha256",
         "64 lowercase hex"),
        ({"sources__1__hf": "org/albert-test\n"}, r"sources\[1\]\.hf", "org/name"),
        ({"sources__1__revision": "0" * 40 + "\n"}, r"sources\[1\]\.revision", "branch or tag name"),
        ({"sources__1__revision": "my branch"}, r"sources\[1\]\.revision", "branch or tag name"),
        # every string is bounded: a huge value is a clear error, never a traceback further down
        ({"sources__1__revision": "a" * 100_000}, r"sources\[1\]\.revision", "at most 255 characters, got 100000"),
        ({"name": "a" * 101}, "name", "at most 100 characters"),
        ({"aliases": ["a" * 101]}, r"aliases\[0\]", "at most 100 characters"),
        ({"description": "d" * 100_000}, "description", "at most 1000 characters"),
        ({"license": "L" * 201}, "license", "at most 200 characters"),
        ({"homepage": "https://e.org/" + "p" * 5000}, "homepage", "at most 2048 characters"),
        ({"citation": "c" * 1001}, "citation", "at most 1000 characters"),
        ({"sources__0__url": "https://e.org/" + "u" * 5000}, r"sources\[0\]\.url", "at most 2048 characters"),
        ({"sources__1__hf": "org/" + "r" * 100}, r"sources\[1\]\.hf", "at most 96 characters"),
        ({"sources__0__checkpoint": "c/" * 600}, r"sources\[0\]\.checkpoint", "at most 1024 characters"),
        ({"sources__0__vocab": "v" * 1025}, r"sources\[0\]\.vocab", "at most 1024 characters"),
        ({"sources__0__files": {"f" * 1025: {"sha256": None}}}, r"sources\[0\]\.files\.f{59}…", "at most 1024"),
        ({"config__hidden_act": "x" * 100_000}, "config.hidden_act", "at most 100 characters"),
        ({"heads": {"note": "n" * 2001}}, "heads.note", "at most 2000 characters"),
    ],
)
def test_invalid_manifests_name_file_key_and_expectation(changes: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse(manifest(**changes))
    text = str(info.value)
    assert text.startswith("/m/test.yaml: ")
    assert re.search(rf"^/m/test\.yaml: {key}: ", text), text
    assert re.search(message, text), text


def test_download_size_is_what_the_pins_add_up_to() -> None:
    m = parse(manifest())
    assert m.sources[0].download_size is None and m.sources[1].download_size == 0 + 5
    assert m.download_size == 5  # the first source that knows
    assert parse(manifest(sources__0__size=123)).download_size == 123
    unsized = manifest()
    unsized["sources"][1]["files"]["vocab.txt"]["size"] = None
    assert parse(unsized).download_size is None  # one file of unknown size: the total is unknown


def test_only_a_40_hex_revision_is_a_commit() -> None:
    source = parse(manifest()).sources[1]
    assert source.revision_is_commit
    # even if one got past the schema, a commit id with a trailing newline is not an immutable commit
    assert not dataclasses.replace(source, revision="0" * 40 + "\n").revision_is_commit
    assert not dataclasses.replace(source, revision="main").revision_is_commit


def test_no_pattern_in_zoo_anchors_with_a_dollar() -> None:
    """``$`` also matches before a trailing newline: zoo anchors with ``fullmatch`` or ``\\Z`` (issue 17)."""
    calls = {"compile", "match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer"}
    found = []
    for path in sorted((Path(__file__).resolve().parents[1] / "zoo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "re" and node.args):
                continue
            pattern = node.args[0]
            multiline = "MULTILINE" in ast.dump(node) or "re.M" in ast.unparse(node)
            if isinstance(pattern, ast.Constant) and isinstance(pattern.value, str) and not multiline \
                    and re.search(r"(?<!\\)\$", pattern.value):
                found.append(f"{path.name}:{node.lineno}: {pattern.value}")
    assert not found, found


def test_heads_key_is_optional_and_records_each_head() -> None:
    plain = parse(manifest())
    assert plain.heads.to_dict() == {"mlm": None, "seq_relationship": None, "pooler": None, "note": None}
    assert plain.heads.describe("mlm") == "not recorded" and not plain.heads.unusable("mlm")
    m = parse(manifest(heads={"mlm": "untrained", "pooler": "absent", "note": " released random "}))
    assert (m.heads.mlm, m.heads.seq_relationship, m.heads.pooler) == ("untrained", None, "absent")
    assert m.heads.note == "released random" and m.heads.unusable("mlm") and m.heads.unusable("pooler")
    assert m.heads.describe("seq_relationship") == "not recorded"
    assert not parse(manifest(heads={"mlm": "unknown"})).heads.unusable("mlm")
    assert parse(manifest(heads=None)).heads == plain.heads
    with pytest.raises(ValueError, match="head must be one of"):
        m.heads.state("nsp")


def test_bert_rejects_albert_only_keys_and_albert_schemes() -> None:
    data = manifest(family="bert", name="bert_test")
    data["sources"][0]["scheme"] = "google-bert"
    with pytest.raises(ManifestError, match=r"config\.embedding_size: albert only"):
        parse(data)
    for key in ("embedding_size", "num_hidden_groups", "inner_group_num", "ln_type"):
        data["config"].pop(key)
    assert parse(data).architecture == "bert"
    data["sources"][0]["scheme"] = "brightmart-albert"
    with pytest.raises(ManifestError, match="family bert needs scheme google-bert"):
        parse(data)


def test_brightmart_scheme_selects_architecture_and_allows_preln() -> None:
    data = manifest(config__ln_type="preln")
    data["sources"][0]["scheme"] = "brightmart-albert"
    m = parse(data)
    assert m.architecture == "albert-brightmart" and m.config.ln_type == "preln"


def test_mixed_schemes_in_one_manifest_are_refused() -> None:
    data = manifest()
    data["sources"].append(dict(data["sources"][0], scheme="brightmart-albert"))
    with pytest.raises(ManifestError, match="incompatible schemes"):
        parse(data)


def test_archive_defaults_from_url_suffix() -> None:
    data = manifest(sources__0__archive=_DELETE)
    data["sources"][0]["url"] = "file:///x/model.zip"
    assert parse(data).sources[0].archive == "zip"
    data["sources"][0]["url"] = "https://x/model.bin?download=1"
    data["sources"][0]["format"] = "pytorch"
    del data["sources"][0]["scheme"]
    assert parse(data).sources[0].archive == "none"


def _write(directory: Path, data: dict[str, Any], filename: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (filename or f"{data['name']}.yaml")
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_read_manifest_reports_yaml_errors_with_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema: 1\nname: [unclosed\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"bad\.yaml: not valid YAML: line \d+, column \d+"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="expected a mapping"):
        parse_manifest(["a list"], bad)


def test_alias_lookup_is_case_insensitive_and_unknown_names_get_suggestions() -> None:
    registry = Registry([parse(manifest())])
    assert registry.get("ALBERT-Test-ZH").name == "albert_test_zh"
    assert "albert-test-zh" in registry
    with pytest.raises(NotFoundError) as info:
        registry.get("albert_tset_zh")
    assert info.value.exit_code == 3
    assert "did you mean albert_test_zh" in str(info.value)
    with pytest.raises(NotFoundError, match="zoo list"):
        registry.get("gpt2")


def test_duplicate_names_and_aliases_are_refused() -> None:
    first = parse(manifest())
    with pytest.raises(ManifestError, match="duplicate name 'albert_test_zh'"):
        Registry([first, parse(manifest(aliases=[]))])
    with pytest.raises(ManifestError, match=r"aliases\[0\]: alias 'albert-test-zh' is already used by albert_test_zh"):
        Registry([first, parse(manifest(name="other"))])
    with pytest.raises(ManifestError, match="name: name 'albert_test' is already an alias of albert_test_zh"):
        Registry([parse(manifest(aliases=["albert_test"])), parse(manifest(name="albert_test", aliases=[]))])


def test_user_manifests_join_and_override_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builtin = get_manifest("albert_base_zh")
    override = manifest(name="albert_base_zh", aliases=[], description="my mirror of albert_base_zh")
    env_dir, cli_dir = tmp_path / "env", tmp_path / "cli"
    _write(env_dir, override)
    _write(cli_dir, manifest(name="my_model", aliases=["mine"]))
    monkeypatch.setenv("ZOO_MANIFEST_PATH", f"{tmp_path / 'missing'}:{env_dir}")
    registry = load_registry([cli_dir])
    assert registry.get("albert_base_zh").description == "my mirror of albert_base_zh"
    assert registry.get("albert-base-zh").description == "my mirror of albert_base_zh"  # built-in aliases now lead to the override
    assert registry.get("mine").name == "my_model" and not registry.get("mine").builtin
    assert registry.overrides == [("albert_base_zh", env_dir / "albert_base_zh.yaml")]
    assert len(registry) == len(load_registry([])) + 1
    assert builtin.builtin and builtin.path.parent == builtin_manifest_dir()


def test_two_user_manifests_with_one_name_are_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "a", manifest(name="dup", aliases=[]))
    _write(tmp_path / "b", manifest(name="dup", aliases=[]))
    monkeypatch.setenv("ZOO_MANIFEST_PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    registry = load_registry()  # the second one is set aside with a warning; the registry still works
    [error] = registry.broken
    assert re.search(r"b/dup\.yaml: name: duplicate name 'dup'", str(error))
    assert registry.get("dup").path == tmp_path / "a" / "dup.yaml" and "albert_base_zh" in registry


def test_locate_falls_back_to_a_unique_basename(tmp_path: Path) -> None:
    (tmp_path / "albert_base").mkdir()
    (tmp_path / "albert_base" / "model.ckpt-best.index").write_bytes(b"x")
    (tmp_path / "albert_base" / "vocab_chinese.txt").write_text("[PAD]\n")
    assert find_in_snapshot(tmp_path, "albert_base_zh/model.ckpt-best", suffix=".index") == tmp_path / "albert_base" / "model.ckpt-best"
    assert find_in_snapshot(tmp_path, "albert_base/vocab_chinese.txt") == tmp_path / "albert_base" / "vocab_chinese.txt"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "vocab_chinese.txt").write_text("[PAD]\n")
    with pytest.raises(NotFoundError, match="files named vocab_chinese.txt: albert_base/vocab_chinese.txt, other/"):
        find_in_snapshot(tmp_path, "x/vocab_chinese.txt")


# ------------------------------------------------------------------------------------- built-in content
BUILTIN = sorted(builtin_manifest_dir().glob("*.yaml"))
REQUIRED = {
    "albert_tiny_zh", "albert_tiny_zh_489k", "albert_small_zh", "albert_base_zh", "albert_large_zh",
    "albert_xlarge_zh", "albert_xxlarge_zh", "albert_base_zh_brightmart", "albert_large_zh_brightmart",
    "albert_xlarge_zh_brightmart", "bert_base_zh", "bert_base_uncased", "bert_base_cased", "bert_large_uncased",
    "bert_large_cased", "bert_large_uncased_wwm", "bert_large_cased_wwm", "bert_base_multilingual_cased",
}
#: the Chinese BERT family (issue 13): HFL's whole-word-masking models and UER's RoBERTa miniatures
BERT_ZH = ["bert_base_zh", "bert_wwm_ext_zh", "bert_wwm_zh", "macbert_base_zh", "macbert_large_zh", "rbt3_zh",
           "rbtl3_zh", "roberta_base_zh_uer", "roberta_medium_zh_uer", "roberta_mini_zh_uer", "roberta_small_zh_uer",
           "roberta_tiny_zh_uer", "roberta_wwm_ext_large_zh", "roberta_wwm_ext_zh"]


#: releases whose files hold the heads of their own pretraining (MLM + NSP for BERT, MLM + SOP for ALBERT):
#: docs/manifests.md, "Pretraining heads of the Google and brightmart releases"
GOOGLE_BERT = ["bert_base_zh", "bert_base_uncased", "bert_base_cased", "bert_large_uncased", "bert_large_cased",
               "bert_large_uncased_wwm", "bert_large_cased_wwm", "bert_base_multilingual_cased",
               "bert_base_multilingual_uncased"]
GOOGLE_ALBERT = ["albert_base_zh", "albert_large_zh", "albert_xlarge_zh", "albert_xxlarge_zh"]
BRIGHTMART = ["albert_tiny_zh", "albert_small_zh", "albert_tiny_zh_brightmart", "albert_tiny_zh_489k",
              "albert_base_zh_brightmart", "albert_base_zh_brightmart_36k", "albert_large_zh_brightmart",
              "albert_xlarge_zh_brightmart", "albert_xlarge_zh_brightmart_177k"]
#: how a note names its source: an issue (owner/repo#N or #N), a model card, a README or a source file
SOURCE = re.compile(r"[\w.-]+/[\w.-]+#\d+|#\d+|model card|README|\.py\b")


@pytest.mark.parametrize("name", GOOGLE_BERT + GOOGLE_ALBERT + BRIGHTMART)
def test_google_and_brightmart_releases_record_their_trained_heads(name: str) -> None:
    heads = get_manifest(name).heads
    assert (heads.mlm, heads.seq_relationship, heads.pooler) == ("trained", "trained", "trained")
    assert heads.note and SOURCE.search(heads.note), heads.note


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_every_builtin_manifest_records_each_head_and_why(path: Path) -> None:
    """No built-in release says "not recorded" (issue 16); every record has a note naming its source, and
    "unknown" is kept only with a note that says why nothing is established."""
    heads = read_manifest(path, builtin=True).heads
    states = [heads.state(head) for head in ("mlm", "seq_relationship", "pooler")]
    assert None not in states and heads.note and SOURCE.search(heads.note), heads.note
    if "unknown" in states:
        assert re.search(r"undocumented|no one|not established|disagree|unmeasured|unverified", heads.note)


def test_every_required_checkpoint_is_registered() -> None:
    assert set(list_models()) >= REQUIRED


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_manifest_is_valid_and_consistent(path: Path) -> None:
    m = read_manifest(path, builtin=True)
    assert m.name == path.stem
    # params, when given, equals the count recomputed from the config (parse checks it; assert it is given)
    assert m.params == m.config.param_count()
    if m.sources[0].kind == "url":  # Google's releases; the Chinese BERT family's TF archives have no stable URL
        assert m.sources[0].url.startswith("https://storage.googleapis.com/")
        assert m.sources[0].format == "tf-checkpoint"
    else:  # the Chinese BERT family: a commit only where one was found, and then every file is pinned too;
        # otherwise main, trust on first use, and a comment on how to pin it (docs/manifests.md)
        assert m.name in BERT_ZH
        for source in m.sources:
            assert source.revision_is_commit == source.pinned
            assert source.revision_is_commit or source.revision == "main"
    for source in m.sources:
        if source.kind == "hf":
            assert source.format in ("pytorch", "safetensors") and source.checkpoint in source.files
    if m.language == "zh":
        assert m.config.vocab_size == 21128 and m.tokenizer.lowercase
    # known facts the research pins down
    if m.architecture == "albert" and m.language == "zh" and "google-research" in (m.homepage or ""):
        assert m.config.hidden_act == "relu"  # Google's Chinese ALBERT uses relu
    if (m.family == "bert" and "UER" not in m.description) or "brightmart" in (m.homepage or ""):
        assert m.config.hidden_act == "gelu_new"  # TF's gelu is the tanh approximation
    if "UER" in m.description:
        assert m.config.hidden_act == "gelu"  # UER-py (PyTorch) computes gelu with erf


def test_known_configuration_facts() -> None:
    assert get_manifest("albert_xxlarge_zh").config.num_attention_heads == 16
    assert get_manifest("albert_xlarge_zh").config.num_attention_heads == 16
    assert get_manifest("albert_tiny_zh").config.num_hidden_layers == 4
    assert get_manifest("albert_tiny_zh").architecture == "albert"  # google naming
    assert get_manifest("albert_tiny_zh_489k").architecture == "albert-brightmart"
    assert get_manifest("bert_base_multilingual_cased").config.vocab_size == 119547
    assert not get_manifest("bert_base_cased").tokenizer.lowercase
    # a pinned file hash traced to NVIDIA's downloader
    pins = get_manifest("bert_base_zh").sources[0].files
    assert pins["chinese_L-12_H-768_A-12/vocab.txt"].sha256 == (
        "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c")


def test_param_counts_match_published_backbone_sizes() -> None:
    # keras-nlp's published backbone counts (research section 5) validate the formula
    published = {"bert_base_zh": 102_267_648, "bert_base_uncased": 109_482_240, "bert_base_cased": 108_310_272,
                  "bert_base_multilingual_cased": 177_853_440, "bert_large_uncased": 335_141_888}
    for name, count in published.items():
        assert get_manifest(name).config.param_count() == count
    english_albert_base = ModelConfig("albert", 30000, 768, 12, 12, 3072, embedding_size=128)
    assert english_albert_base.param_count() == 11_683_584
