"""What the cache remembers about each file it trusts: sha256, size and a stat *stamp*; and what snapshots and
conversions share (:class:`Marked`): a directory that is complete exactly when its marker exists.

A stamp (size, mtime_ns, inode) that is unchanged means unchanged content, by convention; a hit therefore costs
one ``stat`` per file. A changed stamp is not trusted: the file is re-hashed, and only its sha256 decides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from zoo._fs import move_into_place, mtime, sha256_file, write_json_atomic


@dataclasses.dataclass(frozen=True)
class Stamp:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> Stamp:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


UNSTAMPED = Stamp(0, 0, 0)


@dataclasses.dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int
    stamp: Stamp = UNSTAMPED

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "stamp": dataclasses.astuple(self.stamp)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileRecord:
        sha, size = data["sha256"], int(data["size"])
        if not (isinstance(sha, str) and len(sha) == 64):
            raise ValueError("bad sha256")
        return cls(sha, size, Stamp(*(int(x) for x in data["stamp"])))


def files_to_json(files: Mapping[str, FileRecord]) -> dict[str, Any]:
    return {rel: r.to_json() for rel, r in sorted(files.items())}


def files_from_json(data: Mapping[str, Any]) -> dict[str, FileRecord]:
    return {str(rel): FileRecord.from_json(r) for rel, r in data.items()}


def stamped(root: Path, files: Mapping[str, FileRecord]) -> dict[str, FileRecord]:
    """The records with the files' current stamps (after they were written or verified)."""
    return {rel: dataclasses.replace(r, stamp=Stamp.of(root / rel)) for rel, r in files.items()}


@dataclasses.dataclass(frozen=True)
class Check:
    """The outcome of checking files against their records: ``problem`` is None when all are intact;
    ``refreshed`` holds records whose stamp changed while their content did not."""

    problem: str | None
    refreshed: dict[str, FileRecord]


def check_files(root: Path, files: Mapping[str, FileRecord]) -> Check:
    """Cheap check: stat every file; re-hash only those whose stamp changed."""
    refreshed: dict[str, FileRecord] = {}
    for rel, record in files.items():
        path = root / rel
        try:
            stamp = Stamp.of(path)
        except OSError:
            return Check(f"{path} is missing", {})
        if stamp == record.stamp:
            continue
        if stamp.size != record.size:
            return Check(f"{path} has {stamp.size} bytes, {record.size} were recorded", {})
        if sha256_file(path)[0] != record.sha256:
            return Check(f"{path} changed (sha256 differs from the one recorded)", {})
        refreshed[rel] = dataclasses.replace(record, stamp=stamp)
    return Check(None, refreshed)


def rehash_files(root: Path, files: Mapping[str, FileRecord],
                 on_file: Callable[[Path], None] | None = None) -> tuple[list[tuple[Path, str]], dict[str, FileRecord]]:
    """Full check: re-hash every file. Returns ``(problems, records with fresh stamps)``."""
    problems: list[tuple[Path, str]] = []
    fresh: dict[str, FileRecord] = {}
    for rel, record in sorted(files.items()):
        path = root / rel
        if on_file is not None:
            on_file(path)
        try:
            got, size = sha256_file(path)
        except FileNotFoundError:
            problems.append((path, "missing"))
            continue
        if got != record.sha256:
            problems.append((path, f"sha256 is {got}, expected {record.sha256} ({size} vs {record.size} bytes)"))
        else:
            fresh[rel] = dataclasses.replace(record, stamp=Stamp.of(path))
    return problems, fresh


M = TypeVar("M", bound="Marked")


class Marked:
    """A directory in the cache (a snapshot, a conversion) that is complete exactly when its marker exists: the
    directory is put in place first, then the marker — each file's sha256, size and stamp — is written. The
    marker's mtime is the entry's last use (for LRU pruning)."""

    files: dict[str, FileRecord]
    created: float
    if TYPE_CHECKING:  # a field of a conversion, a property of a snapshot (never a default of a dataclass field)
        @property
        def path(self) -> Path: ...

    @property
    def marker(self) -> Path:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def last_used(self) -> float:
        return mtime(self.marker, default=self.created)

    def write_marker(self) -> None:
        write_json_atomic(self.marker, self.to_json())

    def invalidate(self) -> None:
        """Make the entry incomplete (its marker goes first); the next pull or load rebuilds it."""
        self.marker.unlink(missing_ok=True)

    def touch(self) -> None:
        """Record a use."""
        with contextlib.suppress(OSError):
            os.utime(self.marker)

    def check(self) -> Check:
        """Whether every file is still what was recorded (stat; re-hash only changed stamps). Identical files with
        new stamps are recorded again, so the next check is free again."""
        check = check_files(self.path, self.files)
        if check.problem is None and check.refreshed:
            dataclasses.replace(self, files={**self.files, **check.refreshed}).write_marker()  # type: ignore[type-var]
        return check

    def rehash(self, on_file: Callable[[Path], None] | None = None) -> list[tuple[Path, str]]:
        """Re-hash every file: a damaged entry is invalidated (its problems returned), an intact one gets fresh
        stamps."""
        problems, fresh = rehash_files(self.path, self.files, on_file)
        if problems:
            self.invalidate()
        else:
            dataclasses.replace(self, files=fresh).write_marker()  # type: ignore[type-var]
        return problems


def commit(staged: Path, entry: M) -> M:
    """Move the complete directory ``staged`` into place as ``entry`` (its old marker goes first, a half-made
    directory there is replaced), then write the marker, last; the entry as its marker records it (with the
    files' stamps)."""
    entry.path.parent.mkdir(parents=True, exist_ok=True)
    entry.invalidate()
    move_into_place(staged, entry.path, replace=True)
    committed = dataclasses.replace(entry, files=stamped(entry.path, entry.files))  # type: ignore[type-var]
    committed.write_marker()
    return committed
