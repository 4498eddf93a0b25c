"""File hashing and the ``receipt.json`` written next to converted weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

_CHUNK = 4 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: Path, role: str, sha256: str | None = None) -> dict[str, Any]:
    return {"path": path.name, "role": role, "size": path.stat().st_size, "sha256": sha256 or sha256_file(path)}
