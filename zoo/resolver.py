"""From a manifest to a ready local directory: cache lookup, download, verification, extraction.

:func:`resolve` tries the manifest's sources in order. A source that fails — network error, hash mismatch,
hostile archive — is recorded and the next one is tried; if all fail, the error lists every source with its
reason. A source with ``sha256: null`` is trust-on-first-use: the first verified download records the hash in
the cache's pin store and later downloads must match it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from zoo import archive, cache
from zoo.errors import (
    IntegrityError,
    NetworkError,
    OfflineError,
    UnsafeArchiveError,
    UnsupportedError,
    UsageError,
    ZooError,
)
from zoo.fetch import FetchOptions, ProgressEvent, fetch
from zoo.registry.schema import Manifest, Source

log = logging.getLogger("zoo.resolver")

#: Failures after which the next source is tried; anything else (disk full, Ctrl-C, bugs) stops the pull.
_SOURCE_FAILURES = (NetworkError, IntegrityError, UnsafeArchiveError, UnsupportedError)


@dataclasses.dataclass(frozen=True)
class Pulled:
    """A source ready on disk."""

    path: Path  # the extracted snapshot directory
    source: Source  # the source it came from
    sha256: str  # of the downloaded file
    manifest: Manifest


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def resolve(manifest: Manifest, *, source: int | None = None, connections: int = 8,
            require_hashes: bool | None = None, offline: bool | None = None,
            progress: Callable[[ProgressEvent], None] | None = None,
            options: FetchOptions | None = None) -> Pulled:
    """Make one of ``manifest``'s sources available locally and return where.

    ``source`` picks one source by index instead of trying them in order. ``require_hashes`` (default:
    ``ZOO_REQUIRE_HASHES``) refuses sources without a sha256 pin; ``offline`` (default: ``ZOO_OFFLINE``) never
    touches the network. ``progress`` receives :class:`~zoo.fetch.ProgressEvent`s; ``options`` tunes the
    downloader (timeouts, retries).
    """
    require = _env_flag("ZOO_REQUIRE_HASHES") if require_hashes is None else require_hashes
    offline = _env_flag("ZOO_OFFLINE") if offline is None else offline
    emit = progress or (lambda event: None)
    candidates = _candidates(manifest, source)
    for src in candidates:  # any complete snapshot wins, without a lock or a network call
        hit = _cached(manifest, src, require)
        if hit is not None:
            emit(ProgressEvent("done", manifest.name, message=f"cached: {hit.path}"))
            return hit
    opts = options or FetchOptions.from_env(connections=connections)
    failures: list[tuple[Source, ZooError]] = []
    for src in candidates:
        try:
            if require and not src.pinned:
                raise IntegrityError("no sha256 pin in the manifest and hashes are required (--require-hashes / "
                                     "ZOO_REQUIRE_HASHES)", hint="pin it: `zoo pin NAME` prints the lines to add")
            pulled = _pull_source(manifest, src, opts, emit, offline)
        except _SOURCE_FAILURES as exc:
            # the final error lists every failure; say more only when a later source rescues the pull
            log.info("%s: source %d (%s) failed: %s", manifest.name, src.index, src.label, exc.message)
            failures.append((src, exc))
            continue
        for failed, exc in failures:
            log.warning("%s: source %d (%s) failed (%s); used source %d (%s)", manifest.name, failed.index,
                        failed.label, exc.message, src.index, src.label)
        emit(ProgressEvent("done", manifest.name, message=str(pulled.path)))
        return pulled
    raise _all_failed(manifest, failures)


def pull(name: str, *, source: int | None = None, connections: int = 8, require_hashes: bool | None = None,
         offline: bool | None = None, progress: Callable[[ProgressEvent], None] | None = None,
         manifests: Sequence[Path] = ()) -> Path:
    """Download, verify and extract the registered checkpoint ``name``; return its local directory."""
    from zoo.registry import get_manifest

    return resolve(get_manifest(name, manifests=manifests), source=source, connections=connections,
                   require_hashes=require_hashes, offline=offline, progress=progress).path


# ------------------------------------------------------------------------------------------------ cache
def _candidates(manifest: Manifest, source: int | None) -> list[Source]:
    if source is None:
        return list(manifest.sources)
    if not 0 <= source < len(manifest.sources):
        raise UsageError(f"{manifest.name} has sources 0..{len(manifest.sources) - 1}, got --source {source}",
                         hint=f"`zoo info {manifest.name}` lists them")
    return [manifest.sources[source]]


def _cached(manifest: Manifest, src: Source, require: bool) -> Pulled | None:
    """The source's snapshot if it is complete and still agrees with the manifest's pins (stat only)."""
    if require and not src.pinned:
        return None
    snap = cache.read_snapshot(manifest.name, cache.source_key(src))
    if snap is None or snap.source != src.label:
        return None
    if (src.sha256 and snap.sha256 != src.sha256) or (src.size is not None and snap.size != src.size):
        return None  # the manifest's pin changed since this snapshot was made
    for rel, pin in src.files.items():
        record = snap.files.get(rel)
        if record is None or (pin.sha256 and pin.sha256 != record.sha256) or (
                pin.size is not None and pin.size != record.size):
            return None
    if not cache.check_snapshot(snap):
        return None
    cache.touch(snap)
    return Pulled(snap.path, src, snap.sha256, manifest)


# --------------------------------------------------------------------------------------------- one source
def _pull_source(manifest: Manifest, src: Source, opts: FetchOptions, emit: Callable[[ProgressEvent], None],
                 offline: bool) -> Pulled:
    key = cache.source_key(src)

    def waiting(message: str) -> None:
        emit(ProgressEvent("wait", manifest.name, message=message))

    with cache.lock(f"snapshot-{manifest.name}-{key}", on_wait=waiting):
        hit = _cached(manifest, src, require=False)  # another process may have finished it while we waited
        if hit is not None:
            return hit
        if src.kind == "hf":  # several repo files, each verified: zoo.fetch.hf builds the snapshot
            from zoo.fetch import hf

            snap = hf.pull(manifest, src, key, offline=offline, progress=emit)
            return Pulled(snap.path, src, snap.sha256, manifest)
        pin = cache.get_pin(src.label) if src.sha256 is None and src.kind == "url" else None
        expected = src.sha256 or (pin.sha256 if pin else None)
        found = _cached_blob(expected)
        if found is not None:
            blob, size = found
            sha = str(expected)
        elif offline:
            raise OfflineError(f"{src.label}: not in the cache")
        else:
            blob, sha, size = _download(manifest, src, expected, pin, opts, emit)
        pulled = _build_snapshot(manifest, src, key, blob, sha, size, emit)
        if src.sha256 is None and pin is None and src.kind == "url":
            cache.record_pin(src.label, sha, size)
            log.info("recorded trust-on-first-use pin for %s: sha256 %s", src.label, sha)
        return pulled


def _cached_blob(sha256: str | None) -> tuple[Path, int] | None:
    """An existing blob with this hash, re-hashed first (this path is rare: the snapshot was removed)."""
    if sha256 is None:
        return None
    path = cache.blob_path(sha256)
    if not path.exists():
        return None
    got, size = cache.hash_file(path)
    if got != sha256:
        cache.quarantine(path, f"blob named {sha256} hashes to {got}")
        return None
    return path, size


def _download(manifest: Manifest, src: Source, expected: str | None, pin: cache.Pin | None, opts: FetchOptions,
              emit: Callable[[ProgressEvent], None]) -> tuple[Path, str, int]:
    workdir = cache.partial_dir(src.label)
    with cache.lock(f"download-{cache.url_key(src.label)}"):
        got = fetch(src, workdir, options=opts, progress=emit)
        problem = None
        if src.size is not None and got.size != src.size:
            problem = f"size {got.size} bytes, expected {src.size}"
        elif expected is not None and got.sha256 != expected:
            problem = f"sha256 {got.sha256}, expected {expected}"
        if problem is not None:
            hint = _diagnose(got.path, got.size, src.size)
            where = cache.quarantine(got.path, f"{src.label}: {problem}")
            shutil.rmtree(workdir, ignore_errors=True)
            if pin is not None:
                raise IntegrityError(
                    f"upstream changed: {problem} (trust-on-first-use pin recorded "
                    f"{time.strftime('%Y-%m-%d', time.localtime(pin.recorded))}); download quarantined at {where}",
                    hint="if the new file is legitimate, pin its sha256 in the manifest (or delete "
                         f"{cache.home() / 'pins'}/{cache.url_key(src.label)}.json)")
            raise IntegrityError(f"{problem}; download quarantined at {where}", hint=hint)
        blob = cache.add_blob(got.path, got.sha256)
        shutil.rmtree(workdir, ignore_errors=True)
        log.info("%s: %d bytes verified (sha256 %s), %d fetched this run", src.label, got.size, got.sha256,
                 got.fetched)
        return blob, got.sha256, got.size


def _diagnose(path: Path, size: int, expected_size: int | None) -> str:
    """A guess at why a download does not match, with what to do next."""
    if size == 0:
        return "the server sent an empty file: a proxy, captive portal or login page is likely in the way"
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "the server sent an HTML page instead of the file: a proxy, captive portal or login page?"
    if expected_size is not None and size < expected_size:
        return "the file is truncated; pull again (another source is tried automatically)"
    if expected_size is not None and size == expected_size:
        return "same size, different bytes: the file was corrupted in transit or on the mirror"
    return "the mirror serves a different file than the manifest pins; try another source (--source N)"


def _build_snapshot(manifest: Manifest, src: Source, key: str, blob: Path, sha: str, size: int,
                    emit: Callable[[ProgressEvent], None]) -> Pulled:
    staging = cache.staging_dir()
    try:
        target = staging / "snapshot"
        if src.archive == "none":
            name = _basename(src)
            target.mkdir()
            _link_or_copy(blob, target / name)
            files = {name: archive.Extracted(sha, size)}
        else:
            emit(ProgressEvent("extract", manifest.name, message=f"extracting {blob.name[:12]} ({src.archive})"))
            files = archive.extract(blob, target, src.archive)
        _check_file_pins(src, files)
        records = {rel: cache.FileRecord(e.sha256, e.size, cache.Stamp(0, 0, 0)) for rel, e in files.items()}
        snap = cache.Snapshot(model=manifest.name, key=key, source=src.label, sha256=sha, size=size,
                              archive=src.archive, files=records, created=time.time())
        path = cache.commit_snapshot(target, snap)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Pulled(path, src, sha, manifest)


def _check_file_pins(src: Source, files: dict[str, archive.Extracted]) -> None:
    problems = []
    for rel, pin in sorted(src.files.items()):
        got = files.get(rel)
        if got is None:
            problems.append(f"{rel}: missing from the download")
        elif pin.size is not None and got.size != pin.size:
            problems.append(f"{rel}: size {got.size}, expected {pin.size}")
        elif pin.sha256 and got.sha256 != pin.sha256:
            problems.append(f"{rel}: sha256 {got.sha256}, expected {pin.sha256}")
    if problems:
        raise IntegrityError("files inside the download do not match the manifest's files: pins: "
                             + "; ".join(problems), hint="the manifest or the mirror is wrong; report it")


def _basename(src: Source) -> str:
    name = unquote(urlsplit(str(src.url)).path.rsplit("/", 1)[-1])
    return name if name not in ("", ".", "..") else "download"


def _link_or_copy(blob: Path, target: Path) -> None:
    """Hard-link the blob into the snapshot (no extra disk), copying where links are not possible."""
    try:
        os.link(blob, target)
    except OSError:
        shutil.copyfile(blob, target)


def _all_failed(manifest: Manifest, failures: list[tuple[Source, ZooError]]) -> ZooError:
    lines = "\n".join(f"  source {src.index} ({src.label}): {exc.message.removeprefix(f'{src.label}: ')}"
                      for src, exc in failures)
    message = f"could not pull {manifest.name}; every source failed:\n{lines}"
    hints = list(dict.fromkeys(exc.hint for _, exc in failures if exc.hint))
    hint = " | ".join(hints) or None
    kinds = [type(exc) for _, exc in failures]
    if kinds and all(issubclass(k, OfflineError) for k in kinds):
        return OfflineError(f"{manifest.name} is not in the cache ({cache.home()}) and offline mode is on "
                            "(--offline / ZOO_OFFLINE=1):\n" + lines,
                            hint="pull it once with network access, or unset ZOO_OFFLINE")
    for cls in (IntegrityError, UnsafeArchiveError):
        if any(issubclass(k, cls) for k in kinds):
            return cls(message, hint=hint)
    if kinds and all(issubclass(k, UnsupportedError) for k in kinds):
        return UnsupportedError(message, hint=hint)
    return NetworkError(message, hint=hint)
