"""A tiny registered model for end-to-end tests: the BERT fixture release (tests/fixtures/tf/bert), zipped and
described by a user manifest, so ``zoo.load(NAME)`` runs the whole chain (registry → resolver → converter →
model) in well under a second."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf" / "bert"
DATA = "bert/bert_model.ckpt.data-00000-of-00001"

MANIFEST = """\
schema: 1
name: {name}
family: bert
language: zh
description: "the tiny BERT fixture release, zipped"
license: Apache-2.0
config:
  vocab_size: 97
  hidden_size: 32
  num_hidden_layers: 2
  num_attention_heads: 4
  intermediate_size: 64
  hidden_act: gelu
  max_position_embeddings: 64
  type_vocab_size: 2
tokenizer:
  lowercase: true
sources:
{sources}"""

SOURCE = """\
  - url: {url}
    sha256: {sha256}
    archive: zip
    format: tf-checkpoint
    scheme: google-bert
    checkpoint: bert/bert_model.ckpt
    vocab: bert/vocab.txt
"""


def release_files() -> dict[str, bytes]:
    """The release's files as the zip holds them (``bert/...``), without the test references."""
    return {f"bert/{f.name}": f.read_bytes() for f in sorted(FIXTURE.iterdir()) if f.suffix != ".npz"}


def release_zip(files: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in (files or release_files()).items():
            zf.writestr(name, data)
    return buf.getvalue()


def write_tiny_manifest(directory: Path, name: str, urls: list[str], *, pinned: bytes | None = None) -> None:
    """A manifest ``name`` for the tiny BERT with these source URLs (sha256-pinned to ``pinned`` if given)."""
    sha = hashlib.sha256(pinned).hexdigest() if pinned is not None else "null"
    sources = "".join(SOURCE.format(url=url, sha256=sha) for url in urls)
    (directory / f"{name}.yaml").write_text(MANIFEST.format(name=name, sources=sources), encoding="utf-8")
    from zoo.registry import clear_cache

    clear_cache()


def register_tiny(manifests: Path, folder: Path, name: str = "tiny") -> Path:
    """Register the tiny BERT release as model ``name`` in ``manifests``, from a file:// source: the release
    zipped to ``folder/release.zip``, unpinned. Returns the archive."""
    archive = folder / "release.zip"
    archive.write_bytes(release_zip())
    write_tiny_manifest(manifests, name, [archive.as_uri()])
    return archive


def vocab() -> list[str]:
    return (FIXTURE / "vocab.txt").read_text(encoding="utf-8").splitlines()
