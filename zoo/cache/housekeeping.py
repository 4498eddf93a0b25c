"""Seeing and cleaning the whole cache: ``zoo cache ls`` / ``rm`` / ``prune`` and ``zoo verify``.

Everything under the cache root is accounted for: snapshots, conversions (of registry models and of release
directories on disk), downloads in progress or interrupted, blobs no snapshot uses, quarantined files and staging
directories. Removal takes the same lock the pull or conversion of that entry takes, and skips what another
process is using.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from zoo._fs import disk_usage, mtime, owner_alive, rmtree, staging_owner
from zoo.cache.blobs import rehash_blob
from zoo.cache.conversions import Conversion, conversions
from zoo.cache.locks import remove_lock_file, try_lock
from zoo.cache.paths import (
    blob_path,
    conversion_lock,
    home,
    model_snapshots,
    partial_dir,
    snapshot_lock,
    snapshot_marker_path,
)
from zoo.cache.records import Marked
from zoo.cache.snapshots import Snapshot, read_snapshot, snapshots

log = logging.getLogger("zoo.cache")

KINDS = ("snapshot", "conversion", "download", "blob", "quarantine", "staging")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One thing in the cache, with what it costs on disk."""

    kind: str  # one of KINDS
    name: str  # model name, release directory, URL, or file name
    detail: str  # the source, the converter version, ...
    size: int
    last_used: float
    paths: tuple[Path, ...]


# ---------------------------------------------------------------------------------------------- listing
def entries() -> list[Entry]:
    """Everything under the cache root (a blob shared by several snapshots is counted with each)."""
    out: list[Entry] = []
    snaps = snapshots()
    out += [_snapshot_entry(snap) for snap in snaps]
    out += [_conversion_entry(conv, f"{conv.source} (converter v{conv.version})") for conv in conversions()]
    for work in _partials():
        name, source = _partial_names(work)
        out.append(Entry("download", name, source, disk_usage([work]), mtime(work), (work,)))
    for blob in _orphan_blobs(snaps):
        out.append(Entry("blob", blob.name, "no snapshot uses it", disk_usage([blob]), mtime(blob), (blob,)))
    root = home()
    for kind, folder in (("quarantine", root / "quarantine"), ("staging", root / "tmp")):
        for item in sorted(folder.iterdir()) if folder.is_dir() else []:
            out.append(Entry(kind, item.name, "", disk_usage([item]), mtime(item), (item,)))
    half = [p for p in (root / "converted").iterdir() if p.is_dir() and not p.with_name(p.name + ".json").exists()] \
        if (root / "converted").is_dir() else []
    for item in half:
        out.append(Entry("staging", item.name, "incomplete conversion", disk_usage([item]), mtime(item), (item,)))
    out += [_half_snapshot_entry(item) for item in _half_snapshots(snaps=snaps)]
    return out


def _snapshot_entry(snap: Snapshot) -> Entry:
    paths = [p for p in (snap.path, blob_path(snap.sha256)) if p.exists()]
    return Entry("snapshot", snap.model, snap.source, disk_usage(paths), snap.last_used, tuple(paths))


def _conversion_entry(conv: Conversion, detail: str | None = None) -> Entry:
    """The entry of a conversion; ``detail`` defaults to its source."""
    return Entry("conversion", conv.origin, conv.source if detail is None else detail, disk_usage([conv.path]),
                 conv.last_used, (conv.path,))


def _half_snapshot_entry(path: Path) -> Entry:
    return Entry("staging", path.parent.name, "incomplete snapshot", disk_usage([path]), mtime(path), (path,))


def _half_snapshots(model: str | None = None, snaps: list[Snapshot] | None = None) -> list[Path]:
    """Snapshot directories without a valid marker: a pull stopped between extracting and committing, or a
    damaged snapshot that lost its marker (the next pull of the model rebuilds it). ``snaps``: the completed
    snapshots (of ``model``), when the caller has just read them."""
    root = home() / "snapshots"
    complete = {s.path for s in (snapshots(model) if snaps is None else snaps)}
    if model is not None:
        folder = model_snapshots(model)
        models = [folder] if folder is not None else []
    else:
        models = sorted(root.iterdir()) if root.is_dir() else []
    return [p for d in models if d.is_dir() for p in sorted(d.iterdir()) if p.is_dir() and p not in complete]


def total_size() -> int:
    """Bytes used by the whole cache (hard links counted once)."""
    root = home()
    return disk_usage([root]) if root.exists() else 0



def _partials() -> list[Path]:
    root = home() / "partial"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _partial_names(work: Path) -> tuple[str, str]:
    try:
        data = json.loads((work / "source.json").read_text(encoding="utf-8"))
        return str(data.get("model") or data["url"]), str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return work.name, "unknown source"


def _journaled_blobs() -> set[str]:
    """Blobs named by the journal of a download that stored them but has not built its snapshot yet."""
    names = set()
    for work in _partials():
        try:
            names.add(str(json.loads((work / "verified.json").read_text(encoding="utf-8"))["sha256"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return names


def _orphan_blobs(snaps: list[Snapshot] | None = None) -> list[Path]:
    """Blobs no snapshot (of ``snaps``, else of the cache) or download journal names."""
    blobs = home() / "blobs" / "sha256"
    if not blobs.is_dir():
        return []
    used = {s.sha256 for s in (snapshots() if snaps is None else snaps)} | _journaled_blobs()
    return sorted(b for b in blobs.iterdir() if b.name not in used)


# ---------------------------------------------------------------------------------------------- removal
def remove(name: str, *, sources: Iterable[str] = ()) -> list[Entry]:
    """Delete a model's snapshots and conversions (or, for an absolute path, the conversions of that release
    directory), downloads of its ``sources`` (labels) nobody is running, and blobs no other snapshot uses.

    Trust-on-first-use pins are kept: they are what the next download is checked against.
    """
    removed: list[Entry] = []
    for snap in snapshots(name):
        entry = _snapshot_entry(snap)
        gone = _remove_snapshot(snap)
        if gone is not None:
            removed += [entry, *gone]
    for conv in conversions():
        if conv.origin == name:
            entry = _conversion_entry(conv)
            if _remove_conversion(conv):
                removed.append(entry)
    for item in _half_snapshots(name):
        entry = _half_snapshot_entry(item)
        if _remove_half_snapshot(item):
            removed.append(entry)
    wanted = {partial_dir(label) for label in sources}
    for work in _partials():
        owner, source = _partial_names(work)
        if work in wanted or owner == name:
            entry = Entry("download", owner, source, disk_usage([work]), mtime(work), (work,))
            if _remove_partial(work, source):
                removed.append(entry)
    return removed


def _remove_snapshot(snap: Snapshot) -> list[Entry] | None:
    """Remove a snapshot, and its blob and conversions when no other snapshot shares them. None when another
    process holds the snapshot (pulling or converting it); else the conversions that went with it."""
    with try_lock(snapshot_lock(snap.model, snap.key)) as mine:
        if not mine:
            log.warning("skipped %s (%s): another zoo process is using it", snap.model, snap.source)
            return None
        snap.invalidate()  # first: the entry stops being valid before its files go
        rmtree(snap.path)
    gone = []
    if not any(s.sha256 == snap.sha256 for s in snapshots()):
        blob_path(snap.sha256).unlink(missing_ok=True)
        for conv in conversions():
            if conv.path.name.startswith(f"{snap.sha256}-c"):
                entry = _conversion_entry(conv)
                if _remove_conversion(conv):
                    gone.append(entry)
    try:
        snap.path.parent.rmdir()
    except OSError:
        pass
    return gone


def _remove_conversion(conv: Conversion) -> bool:
    with try_lock(conversion_lock(conv.path)) as mine:
        if not mine:
            log.warning("skipped conversion %s: another zoo process is using it", conv.path)
            return False
        conv.invalidate()
        rmtree(conv.path)
    return True


def _remove_partial(work: Path, source: str) -> bool:
    """Remove a download nobody is running (``source``: its URL, as :func:`_partial_names` read it)."""
    # partial/<url_key(url)>/ is the download of `url`, and download_lock(url) is "download-<url_key(url)>"
    with try_lock(f"download-{work.name}") as mine:
        if not mine:
            log.warning("skipped download %s: it is in progress", source)
            return False
        rmtree(work)
    return True


def prune(max_size: int | None = None, *, partials: bool = False,
          converter_version: int | None = None) -> list[Entry]:
    """Free space without losing anything a pull or load would need again, or anything in use.

    Always removes what nothing will use: staging directories of processes that are gone, quarantined files,
    snapshots and conversions left without their marker, downloads nobody is running that cannot resume, blobs
    nothing refers to, conversions made by other converter versions (given ``converter_version``), then lock files
    nobody holds and empty folders. ``partials`` also removes downloads that could resume (and verified downloads
    a killed pull left to finish). ``max_size`` then removes the least recently used snapshots and conversions
    until the cache fits in that many bytes. What another process holds is skipped. Returns what was removed.
    """
    removed = _remove_leftovers(partials=partials, converter_version=converter_version)
    if max_size is not None:
        removed += _evict(max_size)
    _remove_unheld_locks()  # last: removing entries above took (and so created) their lock files
    root = home()
    for folder in ("partial", "tmp", "quarantine", "locks"):
        try:
            (root / folder).rmdir()  # only when empty
        except OSError:
            pass
    return removed


def _remove_leftovers(*, partials: bool, converter_version: int | None) -> list[Entry]:
    removed: list[Entry] = []
    for entry in entries():
        path = entry.paths[0]
        if entry.kind == "staging":
            gone = _remove_staging(entry)
        elif entry.kind == "quarantine":
            rmtree(path)
            gone = True
        elif entry.kind == "download":
            gone = (partials or not _resumable(path)) and _remove_partial(path, entry.detail)
        else:
            continue  # blobs below; snapshots and conversions only by converter version or size
        if gone:
            removed.append(entry)
    if converter_version is not None:
        for conv in conversions():
            if conv.version != converter_version and _remove_conversion(conv):
                removed.append(Entry("conversion", conv.origin, f"converter v{conv.version}", 0, 0, (conv.path,)))
    orphans = _orphan_blobs()  # after the downloads: a journal removed above no longer keeps its blob
    if orphans and not _downloads_running():  # a running pull may be about to reuse a blob it found by its pin
        for blob in orphans:
            removed.append(Entry("blob", blob.name, "no snapshot uses it", disk_usage([blob]), mtime(blob), (blob,)))
            blob.unlink(missing_ok=True)
    return removed


def _remove_staging(entry: Entry) -> bool:
    """Remove a staging entry unless its owner may still be using it."""
    path = entry.paths[0]
    if entry.detail == "incomplete conversion":
        return _remove_half_conversion(path)
    if entry.detail == "incomplete snapshot":
        return _remove_half_snapshot(path)
    owner = staging_owner(path)
    if owner is not None and owner_alive(owner):
        return False
    rmtree(path)
    return True


def _resumable(work: Path) -> bool:
    """Whether a download left in ``partial/`` can continue: a verified download recorded in its journal (the next
    pull finishes from it, even offline), or bytes with the part state a ranged resume needs."""
    from zoo.fetch.http import resumable  # not at import time: `zoo list` never loads requests

    return (work / "verified.json").is_file() or resumable(work)


def _evict(max_size: int) -> list[Entry]:
    """The least recently used snapshots and conversions, until the cache fits in ``max_size`` bytes."""
    removed: list[Entry] = []
    candidates: list[tuple[float, Snapshot | Conversion]] = [(s.last_used, s) for s in snapshots()]
    candidates += [(c.last_used, c) for c in conversions()]
    for _, item in sorted(candidates, key=lambda pair: pair[0]):
        if total_size() <= max_size:
            break
        if isinstance(item, Snapshot):
            gone = _remove_snapshot(item) if item.marker.exists() else None
            if gone is not None:
                removed += [Entry("snapshot", item.model, item.source, 0, item.last_used, (item.path,)), *gone]
        elif item.marker.exists() and _remove_conversion(item):
            removed.append(Entry("conversion", item.origin, item.source, 0, item.last_used, (item.path,)))
    return removed


def _remove_half_conversion(path: Path) -> bool:
    with try_lock(conversion_lock(path)) as mine:
        if not mine:
            return False
        rmtree(path)
    return True


def _remove_half_snapshot(path: Path) -> bool:
    """Remove a marker-less snapshot directory unless a pull holds it (it commits the marker under the lock)."""
    with try_lock(snapshot_lock(path.parent.name, path.name)) as mine:
        if not mine or read_snapshot(path.parent.name, path.name) is not None:  # committed meanwhile
            return False
        snapshot_marker_path(path.parent.name, path.name).unlink(missing_ok=True)  # an unreadable one
        rmtree(path)
    try:
        path.parent.rmdir()
    except OSError:
        pass
    return True


def _downloads_running() -> bool:
    """Whether another process holds a download lock (it is pulling a URL source right now)."""
    locks = home() / "locks"
    for path in sorted(locks.glob("download-*.lock")) if locks.is_dir() else []:
        with try_lock(path.stem) as mine:
            if not mine:
                log.info("kept unreferenced downloads: a pull is running")
                return True
    return False


def _remove_unheld_locks() -> None:
    locks = home() / "locks"
    for path in sorted(locks.glob("*.lock")) if locks.is_dir() else []:
        remove_lock_file(path.stem)


# ------------------------------------------------------------------------------------------------ verify
@dataclasses.dataclass(frozen=True)
class Problem:
    path: Path
    problem: str


def verify(model: str | None = None, *, on_file: Callable[[Path], None] | None = None) -> list[Problem]:
    """Re-hash blobs, snapshot files and conversions against their recorded hashes.

    A damaged snapshot or conversion loses its marker (the next pull or load rebuilds it — a conversion from
    the cached snapshot, without network) and a damaged blob is quarantined. Intact files get fresh stamps.
    """
    problems: list[Problem] = []
    checked: set[str] = set()
    snaps = snapshots(model)
    for snap in snaps:
        blob = blob_path(snap.sha256)
        if blob.exists() and snap.sha256 not in checked:
            checked.add(snap.sha256)
            problems += _verify_blob(blob, snap.sha256, on_file)
    entries: list[Marked] = [*snaps, *(c for c in conversions() if model is None or c.origin == model)]
    for entry in entries:
        problems += [Problem(path, what) for path, what in entry.rehash(on_file)]
    if model is None:  # blobs no snapshot refers to are still named by their hash
        blobs = home() / "blobs" / "sha256"
        for blob in sorted(blobs.iterdir()) if blobs.is_dir() else []:
            if blob.name in checked or not re.fullmatch(r"[0-9a-f]{64}", blob.name):
                continue
            problems += _verify_blob(blob, blob.name, on_file)
    return problems


def _verify_blob(blob: Path, expected: str, on_file: Callable[[Path], None] | None) -> list[Problem]:
    """Re-hash one blob; a damaged one is quarantined and reported."""
    if on_file:
        on_file(blob)
    got, _ = rehash_blob(blob, expected, lambda got: f"zoo verify: sha256 {got}, expected {expected}")
    return [] if got == expected else [Problem(blob, f"sha256 is {got}, expected {expected}")]
