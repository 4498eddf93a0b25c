"""Content-addressed downloads (``blobs/sha256/<hex>``) and the quarantine for files that failed verification."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from zoo._fs import sha256_file
from zoo.cache.paths import blob_path, home

log = logging.getLogger("zoo.cache")


def add_blob(path: Path, sha256: str) -> Path:
    """Move a verified file into the blob store under its hash (atomic; an existing blob is replaced by the
    same bytes)."""
    target = blob_path(sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def verified_blob(sha256: str | None) -> tuple[Path, int] | None:
    """The blob with this hash and its size, re-hashed first (this path is rare: a snapshot is being rebuilt); a
    blob whose bytes no longer match its name is quarantined, and None returned."""
    if sha256 is None:
        return None
    path = blob_path(sha256)
    if not path.is_file():
        return None
    got, size = rehash_blob(path, sha256, lambda got: f"blob named {sha256} hashes to {got}")
    return (path, size) if got == sha256 else None


def recheck_blob(sha256: str) -> bool:
    """Re-hash the blob with this hash, if there is one, and quarantine it when its bytes changed (so the next
    pull downloads it again); whether it was damaged."""
    return blob_path(sha256).is_file() and verified_blob(sha256) is None


def rehash_blob(path: Path, expected: str, reason: Callable[[str], str]) -> tuple[str, int]:
    """Re-hash a blob: its sha256 and size. One that does not hash to ``expected`` (its name) is quarantined,
    with ``reason(sha256 it has)`` as the note."""
    got, size = sha256_file(path)
    if got != expected:
        quarantine(path, reason(got))
    return got, size


def quarantine(path: Path, reason: str) -> Path:
    """Set a file that failed verification aside (never deleted silently, never used)."""
    qdir = home() / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    target = qdir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    os.replace(path, target)
    (qdir / f"{target.name}.txt").write_text(reason + "\n", encoding="utf-8")
    log.warning("quarantined %s: %s", target, reason)
    return target
