"""zoo.load by registry name: a user manifest whose file:// source is a zip of a TF fixture release. The
whole chain (registry → resolver → converter → model) must reproduce TensorFlow's outputs."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

import zoo

FIXTURE = Path(__file__).parent / "fixtures" / "tf" / "albert_brightmart_preln"

MANIFEST = """\
schema: 1
name: tiny_preln_test
family: albert
language: zh
description: "brightmart pre-LN fixture, zipped"
license: Apache-2.0
config:
  vocab_size: 97
  embedding_size: 16
  hidden_size: 32
  num_hidden_layers: 3
  num_attention_heads: 4
  intermediate_size: 64
  hidden_act: gelu_new
  max_position_embeddings: 64
  type_vocab_size: 2
  ln_type: preln
tokenizer:
  lowercase: true
sources:
  - url: {url}
    sha256: {sha256}
    archive: zip
    format: tf-checkpoint
    scheme: brightmart-albert
    checkpoint: albert_preln/albert_model.ckpt
    vocab: albert_preln/vocab.txt
"""


@pytest.fixture
def manifest_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = tmp_path / "albert_preln.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(FIXTURE.iterdir()):
            if f.suffix != ".npz":
                zf.write(f, f"albert_preln/{f.name}")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "tiny_preln_test.yaml").write_text(MANIFEST.format(url=archive.as_uri(), sha256=sha),
                                                   encoding="utf-8")
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    from zoo.registry import clear_cache

    clear_cache()
    return manifests


def test_load_by_name_matches_tensorflow(manifest_dir: Path) -> None:
    loaded = zoo.load("tiny_preln_test", device="cpu", heads="pretraining")
    assert loaded.manifest is not None and loaded.manifest.name == "tiny_preln_test"
    assert loaded.config.ln_type == "preln"
    ref = np.load(FIXTURE / "reference.npz")
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "token_type_ids"))
    with torch.no_grad():
        out = loaded.model(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    seq = torch.from_numpy(ref["sequence_output"])
    assert float((out.last_hidden_state[real] - seq[real]).abs().max()) <= 1e-5
    assert float((out.mlm_logits[real] - torch.from_numpy(ref["mlm_logits"])[real]).abs().max()) <= 1e-5
    # second load: offline, from the cache, converted once
    again = zoo.load("tiny_preln_test", device="cpu", offline=True)
    assert again.path == loaded.path
