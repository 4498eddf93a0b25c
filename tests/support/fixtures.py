"""Shared pieces of the download/cache tests: an isolated zoo environment and user manifests."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from zoo.registry import clear_cache, get_manifest
from zoo.registry.schema import Manifest


@pytest.fixture
def zoo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """ZOO_HOME and ZOO_MANIFEST_PATH in tmp_path; offline/require-hashes unset. Yields the manifests dir."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    for var in ("ZOO_OFFLINE", "ZOO_REQUIRE_HASHES", "ZOO_STALL_TIMEOUT", "ZOO_MAX_ATTEMPTS"):
        monkeypatch.delenv(var, raising=False)
    clear_cache()
    yield manifests
    clear_cache()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_of(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (a snapshot, a conversion) by its relative POSIX path, with its bytes."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def source(url: str, *, archive: str = "zip", sha: str | None = None, size: int | None = None,
           files: dict[str, Any] | None = None) -> dict[str, Any]:
    """One manifest source entry."""
    entry: dict[str, Any] = {"url": url, "sha256": sha, "size": size, "archive": archive,
                             "format": "tf-checkpoint", "scheme": "google-bert",
                             "checkpoint": "m/model.ckpt", "vocab": "m/vocab.txt"}
    if files:
        entry["files"] = files
    return entry


def write_manifest(directory: Path, name: str, sources: list[dict[str, Any]]) -> Manifest:
    """Write a tiny BERT manifest with these sources and return it as the registry sees it."""
    data = {"schema": 1, "name": name, "family": "bert", "language": "zh", "description": f"test model {name}",
            "license": "Apache-2.0",
            "config": {"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "intermediate_size": 16},
            "sources": sources}
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    clear_cache()
    return get_manifest(name)


def make_zip(files: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def checkpoint_files(size: int = 300_000, seed: int = 0) -> dict[str, bytes]:
    """A fake checkpoint layout (random, incompressible bytes)."""
    import random

    rnd = random.Random(seed)
    return {"m/model.ckpt.index": rnd.randbytes(2000), "m/model.ckpt.data-00000-of-00001": rnd.randbytes(size),
            "m/vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n" + "的\n一\n".encode()}
