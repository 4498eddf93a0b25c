"""The local cache: where zoo keeps downloads, extracted snapshots and converted weights.

Layout under :func:`home`::

    blobs/sha256/<hex>                      downloaded files, content-addressed, verified before they get here
    snapshots/<model>/<source-key>/         one extracted snapshot per (model, source)
    snapshots/<model>/<source-key>.json     its completion marker: written last, so a half-made entry is never used
    converted/<source-sha256>-c<version>/   converted weights (model.safetensors, config.json, vocab.txt, receipt.json)
    pins/<url-key>.json                     trust-on-first-use hashes of sources the manifest leaves unpinned
    partial/<url-key>/                      interrupted downloads (data + state.json), resumed by the next pull
    quarantine/                             downloads that failed verification, kept for inspection
    locks/, tmp/                            lock files; staging directories on the same file system

Every entry appears by an atomic rename of a fully written, verified file or directory, so no reader ever sees a
partial one, even where file locks do not work; locks only stop two processes downloading the same bytes.
A marker records each file's sha256 and a stat *stamp* (size, mtime_ns, inode): a cache hit compares stamps
instead of re-hashing, and :func:`verify` re-hashes everything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from zoo.errors import DiskSpaceError

if TYPE_CHECKING:
    from zoo.registry.schema import Manifest, Source

log = logging.getLogger("zoo.cache")

MARKER_VERSION = 1
_HASH_BLOCK = 4 << 20


def home() -> Path:
    """The cache root: ``$ZOO_HOME``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    if os.environ.get("ZOO_HOME"):
        return Path(os.environ["ZOO_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "zoo"
    return Path.home() / ".cache" / "zoo"


def converted_dir(source_sha256: str, converter_version: int) -> Path:
    """Where the conversion of the source with this sha256 by this converter version lives."""
    return home() / "converted" / f"{source_sha256}-c{converter_version}"


# ------------------------------------------------------------------------------------------------ paths
def blob_path(sha256: str) -> Path:
    return home() / "blobs" / "sha256" / sha256


def snapshot_path(model: str, key: str) -> Path:
    return home() / "snapshots" / model / key


def marker_path(model: str, key: str) -> Path:
    return home() / "snapshots" / model / f"{key}.json"


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def partial_dir(url: str) -> Path:
    """Where an interrupted download of ``url`` keeps its bytes and part state."""
    return home() / "partial" / url_key(url)


def source_key(source: Source) -> str:
    """A stable, readable directory name for one source: ``<host>-<hash of its location>``."""
    if source.kind == "hf":
        host = "hf"
    else:
        parts = urlsplit(str(source.url))
        host = parts.hostname or parts.scheme
    host = re.sub(r"[^A-Za-z0-9.-]", "_", host)[:40] or "src"
    return f"{host}-{hashlib.sha256(source.label.encode()).hexdigest()[:10]}"


def staging_dir() -> Path:
    """A fresh directory under ``tmp/`` (same file system as the cache, so renames out of it are atomic)."""
    path = home() / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir(parents=True)
    return path


# ----------------------------------------------------------------------------------------------- stamps
@dataclasses.dataclass(frozen=True)
class Stamp:
    """What ``stat`` says about a file; unchanged stamp = unchanged content, by convention."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> Stamp:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@dataclasses.dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int
    stamp: Stamp


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 hex and size of a file."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(_HASH_BLOCK):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


# --------------------------------------------------------------------------------------------- snapshots
@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A completed snapshot, as its marker records it."""

    model: str
    key: str
    source: str  # the source's label (URL or hf repo)
    sha256: str  # of the downloaded blob
    size: int
    archive: str
    files: dict[str, FileRecord]
    created: float

    @property
    def path(self) -> Path:
        return snapshot_path(self.model, self.key)

    @property
    def marker(self) -> Path:
        return marker_path(self.model, self.key)

    @property
    def last_used(self) -> float:
        try:
            return self.marker.stat().st_mtime
        except OSError:
            return self.created

    def to_json(self) -> dict[str, Any]:
        return {"version": MARKER_VERSION, "model": self.model, "key": self.key, "source": self.source,
                "sha256": self.sha256, "size": self.size, "archive": self.archive, "created": self.created,
                "files": {rel: {"sha256": r.sha256, "size": r.size, "stamp": dataclasses.astuple(r.stamp)}
                          for rel, r in sorted(self.files.items())}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Snapshot:
        files = {rel: FileRecord(r["sha256"], int(r["size"]), Stamp(*r["stamp"])) for rel, r in data["files"].items()}
        return cls(model=data["model"], key=data["key"], source=data["source"], sha256=data["sha256"],
                   size=int(data["size"]), archive=data["archive"], files=files, created=float(data["created"]))


def read_snapshot(model: str, key: str) -> Snapshot | None:
    """The completed snapshot of (model, source key), or None (missing, half-made or unreadable marker)."""
    try:
        data = json.loads(marker_path(model, key).read_text())
        if data.get("version") != MARKER_VERSION:
            return None
        return Snapshot.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_snapshot(snap: Snapshot) -> bool:
    """Whether every file of the snapshot is still what was extracted, by stamp; a changed stamp is re-hashed.

    On a hit this costs one ``stat`` per file. Content that no longer matches makes the snapshot invalid.
    """
    refreshed: dict[str, FileRecord] = {}
    for rel, record in snap.files.items():
        path = snap.path / rel
        try:
            stamp = Stamp.of(path)
        except OSError:
            log.warning("%s is missing from the cached snapshot", path)
            return False
        if stamp == record.stamp:
            continue
        if stamp.size != record.size or hash_file(path)[0] != record.sha256:
            log.warning("%s changed since it was extracted; the snapshot will be rebuilt", path)
            return False
        refreshed[rel] = dataclasses.replace(record, stamp=stamp)
    if refreshed:  # touched but identical: remember the new stamps so the next hit is free again
        _write_marker(dataclasses.replace(snap, files={**snap.files, **refreshed}))
    return True


def touch(snap: Snapshot) -> None:
    """Record a use (the marker's mtime is the entry's last-used time, for LRU pruning)."""
    with contextlib.suppress(OSError):
        os.utime(snap.marker)


def commit_snapshot(staged: Path, snap: Snapshot) -> Path:
    """Move a fully extracted and verified directory into place, then write the marker (last)."""
    final = snap.path
    final.parent.mkdir(parents=True, exist_ok=True)
    snap.marker.unlink(missing_ok=True)
    if final.exists():  # a half-made entry from a crashed run
        _rmtree(final)
    os.replace(staged, final)
    files = {rel: dataclasses.replace(r, stamp=Stamp.of(final / rel)) for rel, r in snap.files.items()}
    _write_marker(dataclasses.replace(snap, files=files))
    return final


def _write_marker(snap: Snapshot) -> None:
    _write_json(snap.marker, snap.to_json())


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def snapshots(model: str | None = None) -> list[Snapshot]:
    """Every completed snapshot (of one model), in name order."""
    root = home() / "snapshots"
    models = [root / model] if model else sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    found = []
    for model_dir in models:
        for marker in sorted(model_dir.glob("*.json")) if model_dir.is_dir() else []:
            snap = read_snapshot(model_dir.name, marker.stem)
            if snap is not None:
                found.append(snap)
    return found


def cached_snapshot(manifest: Manifest) -> Snapshot | None:
    """The first of the manifest's sources with a completed snapshot in the cache (markers only, no hashing)."""
    for source in manifest.sources:
        snap = read_snapshot(manifest.name, source_key(source))
        if snap is not None:
            return snap
    return None


# ------------------------------------------------------------------------------------------------ blobs
def add_blob(path: Path, sha256: str) -> Path:
    """Move a verified file into the blob store under its hash (atomic; an existing blob wins)."""
    target = blob_path(sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    return target


def quarantine(path: Path, reason: str) -> Path:
    """Set a file that failed verification aside (never deleted silently, never used)."""
    qdir = home() / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    target = qdir / f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    os.replace(path, target)
    (qdir / f"{target.name}.txt").write_text(reason + "\n")
    log.warning("quarantined %s: %s", target, reason)
    return target


# ------------------------------------------------------------------------------------------------- pins
@dataclasses.dataclass(frozen=True)
class Pin:
    url: str
    sha256: str
    size: int
    recorded: float


def get_pin(url: str) -> Pin | None:
    """The hash recorded on first use of an unpinned URL, if any."""
    try:
        data = json.loads((home() / "pins" / f"{url_key(url)}.json").read_text())
        return Pin(data["url"], data["sha256"], int(data["size"]), float(data["recorded"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_pin(url: str, sha256: str, size: int) -> Pin:
    pin = Pin(url, sha256, size, time.time())
    _write_json(home() / "pins" / f"{url_key(url)}.json", dataclasses.asdict(pin))
    return pin


# ------------------------------------------------------------------------------------------------ locks
@contextlib.contextmanager
def lock(name: str, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the cache-wide lock ``name`` (between processes and threads).

    An OS lock (``flock``) is released by the kernel when its holder dies, so a killed process never blocks the
    next one; where the file system lacks ``flock``, filelock falls back to a marker file that records the
    holder's pid and host and is broken once that process is gone. Waiting is reported through ``on_wait``.
    """
    from filelock import FileLock, Timeout

    path = home() / "locks" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(str(path))
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        started = time.monotonic()
        message = f"waiting for another zoo process to finish {name}"
        log.info(message)
        if on_wait is not None:
            on_wait(message)
        while True:
            try:
                file_lock.acquire(timeout=10)
                break
            except Timeout:
                log.info("%s (%.0fs so far)", message, time.monotonic() - started)
    try:
        yield
    finally:
        file_lock.release()


# ------------------------------------------------------------------------------------------- disk space
def require_free_space(directory: Path, needed: int, what: str) -> None:
    """Raise DiskSpaceError unless ``directory``'s file system has ``needed`` bytes free (plus a small margin)."""
    directory = Path(directory)
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = 16 << 20
    if needed + margin > free:
        raise DiskSpaceError(f"not enough disk space for {what}: need {_human(needed)}, "
                             f"{_human(free)} free on {probe}",
                             hint="free some space (`zoo cache prune --max-size SIZE`) or point ZOO_HOME elsewhere")


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


# ------------------------------------------------------------------------------------------- management
@dataclasses.dataclass(frozen=True)
class Entry:
    """One snapshot with what it costs on disk (snapshot + its blob + conversions of it)."""

    snapshot: Snapshot
    size: int
    paths: tuple[Path, ...]


def entries(model: str | None = None) -> list[Entry]:
    """Cached snapshots with their disk usage; a blob shared by several snapshots is counted with each."""
    out = []
    for snap in snapshots(model):
        paths = [snap.path, blob_path(snap.sha256), *sorted((home() / "converted").glob(f"{snap.sha256}-c*"))]
        out.append(Entry(snap, _disk_usage([p for p in paths if p.exists()]), tuple(paths)))
    return out


def remove(model: str) -> list[Snapshot]:
    """Delete a model's snapshots, and the blobs and conversions no other snapshot uses."""
    removed = []
    for snap in snapshots(model):
        _remove_snapshot(snap)
        removed.append(snap)
    return removed


def _remove_snapshot(snap: Snapshot) -> None:
    with lock(f"snapshot-{snap.model}-{snap.key}"):
        snap.marker.unlink(missing_ok=True)  # first: the entry stops being valid before its files go
        _rmtree(snap.path)
    if not any(s.sha256 == snap.sha256 for s in snapshots()):
        blob_path(snap.sha256).unlink(missing_ok=True)
        for conv in (home() / "converted").glob(f"{snap.sha256}-c*"):
            _rmtree(conv)
    model_dir = snap.path.parent
    with contextlib.suppress(OSError):
        model_dir.rmdir()


def total_size() -> int:
    """Bytes used by the whole cache (hard links counted once)."""
    root = home()
    return _disk_usage([root]) if root.exists() else 0


def prune(max_size: int) -> list[Snapshot]:
    """Drop leftovers (staging dirs, quarantine, orphan blobs), then least recently used snapshots until the
    cache fits in ``max_size`` bytes. Returns the snapshots removed."""
    root = home()
    for leftover in ("tmp", "quarantine"):
        _rmtree(root / leftover)
    # conversions staged by a process that was killed before renaming them into place
    for staged in (root / "converted").glob(".*.tmp-*") if (root / "converted").is_dir() else []:
        _rmtree(staged)
    used = {s.sha256 for s in snapshots()}
    blobs = root / "blobs" / "sha256"
    for blob in blobs.iterdir() if blobs.is_dir() else []:
        if blob.name not in used:
            blob.unlink(missing_ok=True)
    removed = []
    for snap in sorted(snapshots(), key=lambda s: s.last_used):
        if total_size() <= max_size:
            break
        _remove_snapshot(snap)
        removed.append(snap)
    return removed


@dataclasses.dataclass(frozen=True)
class Problem:
    path: Path
    problem: str


def verify(model: str | None = None, *, on_file: Callable[[Path], None] | None = None) -> list[Problem]:
    """Re-hash blobs and snapshot files against their recorded hashes.

    A damaged snapshot loses its marker and a damaged blob is quarantined, so the next pull rebuilds them.
    Intact files get fresh stamps.
    """
    problems: list[Problem] = []
    checked: set[str] = set()
    for snap in snapshots(model):
        bad = []
        blob = blob_path(snap.sha256)
        if blob.exists() and snap.sha256 not in checked:
            checked.add(snap.sha256)
            if on_file:
                on_file(blob)
            got, _ = hash_file(blob)
            if got != snap.sha256:
                problems.append(Problem(blob, f"sha256 is {got}, expected {snap.sha256}"))
                quarantine(blob, f"zoo verify: sha256 {got}, expected {snap.sha256}")
        refreshed = {}
        for rel, record in snap.files.items():
            path = snap.path / rel
            if on_file:
                on_file(path)
            if not path.exists():
                bad.append(Problem(path, "missing"))
                continue
            got, size = hash_file(path)
            if got != record.sha256:
                bad.append(Problem(path, f"sha256 is {got}, expected {record.sha256} ({size} vs {record.size} bytes)"))
            else:
                refreshed[rel] = dataclasses.replace(record, stamp=Stamp.of(path))
        if bad:
            problems += bad
            snap.marker.unlink(missing_ok=True)
        else:
            _write_marker(dataclasses.replace(snap, files=refreshed))
    if model is None:  # blobs no snapshot refers to are still named by their hash
        blobs = home() / "blobs" / "sha256"
        for blob in sorted(blobs.iterdir()) if blobs.is_dir() else []:
            if blob.name in checked or not re.fullmatch(r"[0-9a-f]{64}", blob.name):
                continue
            got, _ = hash_file(blob)
            if got != blob.name:
                problems.append(Problem(blob, f"sha256 is {got}, expected {blob.name}"))
                quarantine(blob, f"zoo verify: sha256 {got}, expected {blob.name}")
    return problems


# ---------------------------------------------------------------------------------------------- helpers
def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _disk_usage(paths: list[Path]) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        walker = os.walk(top) if top.is_dir() else [(str(top.parent), [], [top.name])]
        for dirpath, _, names in walker:
            for name in names:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def human_size(n: float) -> str:
    """``1.5 GiB``-style size."""
    return _human(n)


def parse_size(text: str) -> int:
    """``20G``, ``500M``, ``1.5GiB``, ``123`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"expected a size like 20G, 500M or 123456, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))
