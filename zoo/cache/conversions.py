"""Conversions in the cache: ``converted/<key>-c<version>/`` plus a marker written last.

The directory's contents (weights, config, vocab, receipt) are the converters' business; the cache records who
it belongs to (a model name, or the path of the release directory it was made from), and each file's sha256,
size and stamp, exactly as it does for snapshots, so every load checks stamps and ``zoo verify`` re-hashes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from zoo.cache.paths import conversion_marker_path, home
from zoo.cache.records import FileRecord, Marked, commit, files_from_json, files_to_json

MARKER_VERSION = 1
_NAME = re.compile(r"(?P<key>[0-9a-f]{64})-c(?P<version>\d+)")


@dataclasses.dataclass(frozen=True)
class Conversion(Marked):
    path: Path
    origin: str  # the registry model it belongs to, or the absolute path of the release directory
    source: str  # the source label (URL / hf repo) or the release directory
    files: dict[str, FileRecord]
    created: float

    @property
    def marker(self) -> Path:
        return conversion_marker_path(self.path)

    @property
    def version(self) -> int:
        m = _NAME.fullmatch(self.path.name)
        return int(m.group("version")) if m else -1

    def to_json(self) -> dict[str, Any]:
        return {"version": MARKER_VERSION, "origin": self.origin, "source": self.source, "created": self.created,
                "files": files_to_json(self.files)}


def read_conversion(path: Path) -> Conversion | None:
    """The complete conversion at ``path`` (its marker readable), else None."""
    try:
        data = json.loads(conversion_marker_path(path).read_text(encoding="utf-8"))
        if data.get("version") != MARKER_VERSION:
            return None
        return Conversion(path, str(data["origin"]), str(data["source"]), files_from_json(data["files"]),
                          float(data["created"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def conversions() -> list[Conversion]:
    """Every complete conversion in the cache."""
    root = home() / "converted"
    found = []
    for marker in sorted(root.glob("*.json")) if root.is_dir() else []:
        conv = read_conversion(marker.with_suffix(""))
        if conv is not None:
            found.append(conv)
    return found


def commit_conversion(staged: Path, final: Path, *, origin: str, source: str,
                      files: dict[str, FileRecord]) -> Conversion:
    """Move a complete conversion into place, then write its marker (last)."""
    return commit(staged, Conversion(final, origin, source, files, time.time()))
