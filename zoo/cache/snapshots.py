"""Snapshots: one extracted, verified source per (model, source key), with a marker written last.

A snapshot directory is complete exactly when its marker exists: the directory is renamed into place first,
then the marker (the downloaded file's sha256, and every extracted file's sha256, size and stamp) is written.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.cache.paths import home, model_snapshots, snapshot_marker_path, snapshot_path, source_key
from zoo.cache.records import FileRecord, Marked, commit, files_from_json, files_to_json

if TYPE_CHECKING:
    from zoo.registry.schema import Manifest

MARKER_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Snapshot(Marked):
    """A completed snapshot, as its marker records it."""

    model: str
    key: str
    source: str  # the source's label (URL or hf repo)
    sha256: str  # of the downloaded blob (url sources) or the combined hash of the files (hf sources)
    size: int
    archive: str
    files: dict[str, FileRecord]
    created: float

    @property
    def path(self) -> Path:
        return snapshot_path(self.model, self.key)

    @property
    def marker(self) -> Path:
        return snapshot_marker_path(self.model, self.key)

    def to_json(self) -> dict[str, Any]:
        return {"version": MARKER_VERSION, "model": self.model, "key": self.key, "source": self.source,
                "sha256": self.sha256, "size": self.size, "archive": self.archive, "created": self.created,
                "files": files_to_json(self.files)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        return cls(model=data["model"], key=data["key"], source=data["source"], sha256=data["sha256"],
                   size=int(data["size"]), archive=data["archive"], files=files_from_json(data["files"]),
                   created=float(data["created"]))


def read_snapshot(model: str, key: str) -> Snapshot | None:
    """The completed snapshot of (model, source key), or None (missing, half-made or unreadable marker)."""
    try:
        data = json.loads(snapshot_marker_path(model, key).read_text(encoding="utf-8"))
        if data.get("version") != MARKER_VERSION:
            return None
        return Snapshot.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def commit_snapshot(staged: Path, snap: Snapshot) -> Snapshot:
    """Move a fully extracted and verified directory into place, then write the marker (last); the snapshot
    as its marker records it (with the files' stamps)."""
    return commit(staged, snap)


def snapshots(model: str | None = None) -> list[Snapshot]:
    """Every completed snapshot (of one model), in name order."""
    root = home() / "snapshots"
    if model is not None:
        folder = model_snapshots(model)
        models = [folder] if folder is not None else []
    else:
        models = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = []
    for model_dir in models:
        for marker in sorted(model_dir.glob("*.json")) if model_dir.is_dir() else []:
            snap = read_snapshot(model_dir.name, marker.stem)
            if snap is not None:
                found.append(snap)
    return found


def cached_snapshot(manifest: Manifest) -> Snapshot | None:
    """The first of the manifest's sources with a completed snapshot (markers only, no hashing)."""
    for source in manifest.sources:
        snap = read_snapshot(manifest.name, source_key(source))
        if snap is not None:
            return snap
    return None


def new_snapshot(model: str, key: str, source: str, sha256: str, size: int, archive: str,
                 files: dict[str, FileRecord]) -> Snapshot:
    return Snapshot(model=model, key=key, source=source, sha256=sha256, size=size, archive=archive, files=files,
                    created=time.time())
