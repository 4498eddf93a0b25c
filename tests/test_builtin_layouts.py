"""Every built-in manifest's first source, end to end, with its real archive layout.

No test may reach the real upstream URLs, so each manifest is copied as a user manifest that overrides the
built-in one and differs only where it must: the URL points at a local archive laid out exactly as the
manifest describes (file names, directories, archive type), filled with the TF fixture of the manifest's scheme,
and the config is that fixture's. Unpublished hashes stay null (trust on first use). What this proves: the
archive type, the checkpoint and vocab paths (including the basename fallback for archives whose top-level
directory is unverified), the scheme and the converter agree, so `zoo.load(NAME)` works on the first try, and
its outputs match TensorFlow's.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
import yaml

import zoo
from zoo.config import ModelConfig
from zoo.registry import builtin_manifest_dir, clear_cache

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
#: manifests whose first source is an upstream TF archive; those with only hf: sources (the Chinese BERT family) are
#: covered the same way, with transformers-format fixtures, by tests/test_family_chinese_bert.py
BUILTIN = sorted(p for p in builtin_manifest_dir().glob("*.yaml")
                 if "url" in yaml.safe_load(p.read_text(encoding="utf-8"))["sources"][0])
FIXTURE_FOR_SCHEME = {"google-bert": "bert", "google-albert": "albert_google", "brightmart-albert": "albert_brightmart"}
UPSTREAM_CONFIG = {"google-bert": "bert_config.json", "google-albert": "albert_config.json",
                   "brightmart-albert": "albert_config_tiny.json"}


def _archive_members(source: dict, fixture: Path, top: str | None) -> dict[str, bytes]:
    """The files of an upstream release laid out as the manifest's paths say (``top`` renames the
    first directory, to exercise the basename fallback)."""
    prefix, vocab = PurePosixPath(source["checkpoint"]), PurePosixPath(source["vocab"])
    if top is not None:
        prefix, vocab = PurePosixPath(top, *prefix.parts[1:]), PurePosixPath(top, *vocab.parts[1:])
    meta = json.loads((FIXTURES / "fixtures.json").read_text())["fixtures"]
    fx = next(f for f in meta if f["name"] == fixture.name)
    members = {str(vocab): (fixture / fx["vocab"]).read_bytes(),
               str(prefix.parent / UPSTREAM_CONFIG[source["scheme"]]): (fixture / fx["config"]).read_bytes()}
    for f in fixture.iterdir():
        if f.name.startswith(fx["prefix"] + "."):
            members[str(prefix.parent / (prefix.name + f.name[len(fx["prefix"]):]))] = f.read_bytes()
    return members


def _write_archive(path: Path, kind: str, members: dict[str, bytes]) -> None:
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
        return
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("path", BUILTIN, ids=[p.stem for p in BUILTIN])
def test_builtin_manifest_layout_loads_and_matches_tensorflow(path: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    source = data["sources"][0]
    fixture = FIXTURES / FIXTURE_FOR_SCHEME[source["scheme"]]
    # Google's zh ALBERT tarballs: the top-level directory's name is unverified; use another one on purpose
    top = "albert_release" if data["homepage"].endswith("google-research/albert") else None
    archive = tmp_path / PurePosixPath(source["url"]).name
    _write_archive(archive, source["archive"], _archive_members(source, fixture, top))

    architecture = {"google-bert": "bert", "google-albert": "albert", "brightmart-albert": "albert-brightmart"}
    tiny = ModelConfig.from_upstream(json.loads((fixture / UPSTREAM_CONFIG[source["scheme"]]).read_text()),
                                     architecture[source["scheme"]]).to_dict()
    tiny.pop("architecture")
    data.update(config=tiny, params=None,
                sources=[{**source, "url": archive.as_uri(), "sha256": None, "size": None, "files": {}}])
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / path.name).write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    clear_cache()

    loaded = zoo.load(data["name"], device="cpu", heads="pretraining")
    assert loaded.manifest is not None and not loaded.manifest.builtin
    ref = np.load(fixture / "reference.npz")
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "token_type_ids"))
    with torch.no_grad():
        out = loaded.model(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    assert float((out.last_hidden_state[real] - torch.from_numpy(ref["sequence_output"])[real]).abs().max()) <= 1e-5
    assert float((out.mlm_logits[real] - torch.from_numpy(ref["mlm_logits"])[real]).abs().max()) <= 1e-5
