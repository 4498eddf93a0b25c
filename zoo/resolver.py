"""From a manifest to a verified snapshot on disk: cache lookup, download, verification, extraction.

All trust decisions live here, for URL and ``hf:`` sources alike; the fetchers only move and hash bytes.

- :func:`resolve` tries the manifest's sources in order. A source that fails — network error, hash mismatch,
  hostile archive — is recorded and the next one is tried; if all fail, the error lists every source.
- Pins: a source's ``sha256``/``size`` (and per-file ``files:`` pins) must match. A source the manifest leaves
  unpinned is trusted on first use: the first verified download records its hash (:mod:`zoo.cache.pins`) and
  later downloads must match it. ``require_hashes`` refuses unpinned sources.
- A file that fails verification is quarantined, never deleted silently and never used.
- Offline mode never touches the network: only snapshots, blobs and verified downloads already in the cache.
- Journal: a verified download is recorded (``partial/<key>/verified.json``) before it is stored and removed
  only after its snapshot and pin exist, so a process killed in between loses nothing: the next pull (online or
  offline) finishes the job from the stored bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from zoo import archive, cache
from zoo._fs import rmtree, sha256_file, write_json_atomic
from zoo.errors import (
    IntegrityError,
    NetworkError,
    OfflineError,
    UnsafeArchiveError,
    UnsupportedError,
    UsageError,
    ZooError,
)
from zoo.fetch import DATA, FetchOptions, fetch
from zoo.fetch.hf import combined_sha256
from zoo.progress import Progress, ProgressCallback, ProgressEvent, reporting, waiting
from zoo.registry import Manifest, Source, get_manifest
from zoo.registry.schema import FilePin

log = logging.getLogger("zoo.resolver")

#: Failures after which the next source is tried; anything else (disk full, Ctrl-C, bugs) stops the pull.
_SOURCE_FAILURES = (NetworkError, IntegrityError, UnsafeArchiveError, UnsupportedError)
_JOURNAL = "verified.json"


@dataclasses.dataclass(frozen=True)
class Pulled:
    """A source ready on disk."""

    path: Path  # the extracted snapshot directory
    source: Source  # the source it came from
    sha256: str  # of the downloaded file (url) or the combined hash of the files (hf)
    manifest: Manifest
    snapshot: cache.Snapshot


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def offline_default(offline: bool | None) -> bool:
    """``offline`` as given, else ``ZOO_OFFLINE``."""
    return _env_flag("ZOO_OFFLINE") if offline is None else offline


def resolve(manifest: Manifest, *, source: int | None = None, connections: int = 8,
            require_hashes: bool | None = None, offline: bool | None = None,
            progress: ProgressCallback | None = None, options: FetchOptions | None = None) -> Pulled:
    """Make one of ``manifest``'s sources available locally and return where (see the module docstring).

    ``source`` picks one source by index instead of trying them in order. ``require_hashes`` (default:
    ``ZOO_REQUIRE_HASHES``) refuses sources without a sha256 pin; ``offline`` (default: ``ZOO_OFFLINE``) never
    touches the network. ``progress`` receives :class:`~zoo.progress.ProgressEvent`s; ``options`` tunes the
    downloader (timeouts, retries).
    """
    require = _env_flag("ZOO_REQUIRE_HASHES") if require_hashes is None else require_hashes
    offline = offline_default(offline)
    emit = progress or (lambda event: None)
    candidates = _candidates(manifest, source)
    for src in candidates:  # any complete snapshot wins, without a lock or a network call
        if require and not src.pinned:
            continue
        hit = _cached(manifest, src)
        if hit is not None:
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
            log.info("%s: source %d (%s) failed: %s", manifest.name, src.index, src.label, exc.message)
            failures.append((src, exc))
            continue
        for failed, error in failures:  # the final error would list them; say so when a later source rescues
            log.warning("%s: source %d (%s) failed (%s); used source %d (%s)", manifest.name, failed.index,
                        failed.label, error.message, src.index, src.label)
        emit(ProgressEvent("done", manifest.name, message=str(pulled.path)))
        return pulled
    raise _all_failed(manifest, failures)


def pull(model: str | os.PathLike[str] | Manifest, *, source: int | None = None, connections: int = 8,
         require_hashes: bool | None = None, offline: bool | None = None, progress: Progress = None,
         manifests: Sequence[str | os.PathLike[str]] = ()) -> Path:
    """Download, verify and extract the registered checkpoint ``model`` (a name, alias or
    :class:`~zoo.registry.Manifest`); return its local directory.

    ``progress``: ``None`` shows bars when a person is watching (``ZOO_PROGRESS=0`` turns them off), ``False``
    is silent, a callable receives every :class:`~zoo.progress.ProgressEvent`. ``manifests`` adds directories of
    user manifests.
    """
    manifest = manifest_for(model, manifests)
    with reporting(progress) as emit:
        return resolve(manifest, source=source, connections=connections, require_hashes=require_hashes,
                       offline=offline, progress=emit).path


def manifest_for(model: str | os.PathLike[str] | Manifest,
                 manifests: Sequence[str | os.PathLike[str]] = ()) -> Manifest:
    """The manifest behind a registry name/alias or a Manifest; a path is a usage error (nothing to pull)."""
    if isinstance(model, Manifest):
        return model
    if isinstance(model, os.PathLike):
        raise UsageError(f"{model} is a path; pull downloads registered models",
                         hint="pass a registry name (`zoo list`), or load the directory directly with zoo.load")
    return get_manifest(model, manifests=manifests)


# ------------------------------------------------------------------------------------------------ cache
def _candidates(manifest: Manifest, source: int | None) -> list[Source]:
    if source is None:
        return list(manifest.sources)
    if not 0 <= source < len(manifest.sources):
        raise UsageError(f"{manifest.name} has sources 0..{len(manifest.sources) - 1}, got --source {source}",
                         hint=f"`zoo info {manifest.name}` lists them")
    return [manifest.sources[source]]


def _cached(manifest: Manifest, src: Source) -> Pulled | None:
    """The source's snapshot if it is complete and still agrees with the manifest's pins (stat only)."""
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
    _check_tofu_still_agrees(src, snap)
    check = snap.check()
    if check.problem is not None:
        log.warning("%s: %s; rebuilding the snapshot", manifest.name, check.problem)
        snap.invalidate()
        return None
    snap.touch()
    return Pulled(snap.path, src, snap.sha256, manifest, snap)


def _check_tofu_still_agrees(src: Source, snap: cache.Snapshot) -> None:
    """A snapshot made on first use must agree with the pins; a pin lost to a crash is recorded again."""
    for name, (sha256, size) in _fetched_files(src, snap).items():
        if src.pins.get(name, FilePin()).sha256:
            continue
        label = src.pin_label(name)
        pin = cache.get_pin(label)
        if pin is None:
            cache.record_pin(label, sha256, size)
        elif pin.sha256 != sha256:
            raise _pin_mismatch(label, f"sha256 {sha256}, expected {pin.sha256}", pin, where=None)


def _fetched_files(src: Source, snap: cache.Snapshot) -> dict[str, tuple[str, int]]:
    """What the fetch that made ``snap`` brought, as it brought it (:attr:`Source.pins` names the same files): a URL
    source's one download, or a repo's files."""
    if src.kind == "url":
        return {DATA: (snap.sha256, snap.size)}
    return {rel: (record.sha256, record.size) for rel, record in snap.files.items()}


# --------------------------------------------------------------------------------------------- one source
def _pull_source(manifest: Manifest, src: Source, opts: FetchOptions, emit: ProgressCallback,
                 offline: bool) -> Pulled:
    key = cache.source_key(src)
    with cache.lock(cache.snapshot_lock(manifest.name, key), on_wait=waiting(emit, manifest.name)):
        hit = _cached(manifest, src)  # another process may have finished it while we waited
        if hit is not None:
            return hit
        if src.kind == "hf":
            return _pull_hf(manifest, src, key, opts, emit, offline)
        return _pull_url(manifest, src, key, opts, emit, offline)


def _pull_url(manifest: Manifest, src: Source, key: str, opts: FetchOptions, emit: ProgressCallback,
              offline: bool) -> Pulled:
    # The download lock is held until the journal is gone: `zoo cache prune` in another process skips
    # partial/<key>/ (and the verified download it names) for as long as this pull may still need it.
    with cache.lock(cache.download_lock(src.label)):
        pin = cache.get_pin(src.label) if src.sha256 is None else None
        expected = src.sha256 or (pin.sha256 if pin else None)
        found = cache.verified_blob(expected) or _from_journal(src, expected)
        if found is not None:
            blob, size = found
            sha = blob.name
        elif offline:
            raise OfflineError(f"{src.label}: not in the cache")
        else:
            blob, sha, size = _download(manifest, src, expected, pin, opts, emit)
        pulled = _build_snapshot(manifest, src, key, blob, sha, size, emit)
        if src.sha256 is None and pin is None:
            cache.record_pin(src.label, sha, size)
            log.info("recorded trust-on-first-use pin for %s: sha256 %s", src.label, sha)
        rmtree(cache.partial_dir(src.label))  # the journal's job is done
    return pulled


def _from_journal(src: Source, expected: str | None) -> tuple[Path, int] | None:
    """Finish what a killed pull left: a verified download recorded in the journal, stored or not yet."""
    work = cache.partial_dir(src.label)
    try:
        journal = json.loads((work / _JOURNAL).read_text(encoding="utf-8"))
        sha = str(journal["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if expected is not None and sha != expected:
        return None
    found = cache.verified_blob(sha)
    if found is None and (work / DATA).is_file():
        got, size = sha256_file(work / DATA)
        if got == sha:
            found = (cache.add_blob(work / DATA, sha), size)
    if found is not None:
        log.info("%s: reusing the verified download an interrupted pull left (sha256 %s)", src.label, sha)
    return found


def _download(manifest: Manifest, src: Source, expected: str | None, pin: cache.Pin | None, opts: FetchOptions,
              emit: ProgressCallback) -> tuple[Path, str, int]:
    workdir = cache.partial_dir(src.label)
    workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(workdir / "source.json", {"url": src.label, "model": manifest.name})
    try:
        got = fetch(src, workdir, options=opts, progress=emit)
    except BaseException:
        if all(p.name == "source.json" for p in workdir.iterdir()):
            rmtree(workdir)  # nothing to resume from: leave no empty folder behind
        raise
    sha, size = got.files[DATA]
    data = workdir / DATA
    problem = None
    if src.size is not None and size != src.size:
        problem = f"size {size} bytes, expected {src.size}"
    elif expected is not None and sha != expected:
        problem = f"sha256 {sha}, expected {expected}"
    if problem is not None:
        hint = _diagnose(data, size, src.size)
        where = cache.quarantine(data, f"{src.label}: {problem}")
        rmtree(workdir)
        if pin is not None:
            raise _pin_mismatch(src.label, problem, pin, where=where)
        raise IntegrityError(f"{problem}; download quarantined at {where}", hint=hint)
    if expected is None:
        _refuse_html(data, src, workdir)
    write_json_atomic(workdir / _JOURNAL, {"url": src.label, "sha256": sha, "size": size})
    blob = cache.add_blob(data, sha)
    log.info("%s: %d bytes verified (sha256 %s), %d fetched this run", src.label, size, sha, got.fetched)
    return blob, sha, size


def _refuse_html(path: Path, src: Source, workdir: Path) -> None:
    """An unpinned download that is an HTML page is a login/portal page, not a checkpoint: never pin it."""
    if _looks_like_html(path):
        where = cache.quarantine(path, f"{src.label}: an HTML page instead of the file")
        rmtree(workdir)
        raise IntegrityError(f"{src.label}: the server sent an HTML page instead of the file; quarantined at {where}",
                             hint="a proxy, captive portal or login page is in the way; open the URL in a browser")


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _diagnose(path: Path, size: int, expected_size: int | None) -> str:
    """A guess at why a download does not match, with what to do next."""
    if size == 0:
        return "the server sent an empty file: a proxy, captive portal or login page is likely in the way"
    if _looks_like_html(path):
        return "the server sent an HTML page instead of the file: a proxy, captive portal or login page?"
    if expected_size is not None and size < expected_size:
        return "the file is truncated; pull again (another source is tried automatically)"
    if expected_size is not None and size == expected_size:
        return "same size, different bytes: the file was corrupted in transit or on the mirror"
    return "the mirror serves a different file than the manifest pins; try another source (--source N)"


def _pin_mismatch(label: str, problem: str, pin: cache.Pin, *, where: Path | None) -> IntegrityError:
    """The one message for a download that contradicts its trust-on-first-use pin."""
    kept = f"; quarantined at {where}" if where is not None else ""
    return IntegrityError(
        f"{label} changed upstream: {problem} (trust-on-first-use pin recorded {pin.recorded_on}){kept}",
        hint=f"if the new file is legitimate, pin its sha256 in the manifest (or delete {pin.path} to trust the "
             "next download anew)")


def _build_snapshot(manifest: Manifest, src: Source, key: str, blob: Path, sha: str, size: int,
                    emit: ProgressCallback) -> Pulled:
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
        _check_file_pins(src, {rel: (e.sha256, e.size) for rel, e in files.items()})
        records = {rel: cache.FileRecord(e.sha256, e.size) for rel, e in files.items()}
        snap = cache.new_snapshot(manifest.name, key, src.label, sha, size, src.archive, records)
        snap = cache.commit_snapshot(target, snap)  # as its marker records it: with the files' stamps
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Pulled(snap.path, src, sha, manifest, snap)


def _check_file_pins(src: Source, files: dict[str, tuple[str, int]]) -> None:
    problems = []
    for rel, pin in sorted(src.files.items()):
        got = files.get(rel)
        if got is None:
            problems.append(f"{rel}: missing from the download")
        elif pin.size is not None and got[1] != pin.size:
            problems.append(f"{rel}: size {got[1]}, expected {pin.size}")
        elif pin.sha256 and got[0] != pin.sha256:
            problems.append(f"{rel}: sha256 {got[0]}, expected {pin.sha256}")
    if problems:
        raise IntegrityError("files inside the download do not match the manifest's files: pins: "
                             + "; ".join(problems), hint="the manifest or the mirror is wrong; report it")


def _pull_hf(manifest: Manifest, src: Source, key: str, opts: FetchOptions, emit: ProgressCallback,
             offline: bool) -> Pulled:
    if offline:
        raise OfflineError(f"{src.label}: not in the cache")
    staging = cache.staging_dir()
    try:
        target = staging / "snapshot"
        got = fetch(src, target, options=opts, progress=emit)
        tofu: dict[str, tuple[str, int]] = {}
        for rel, (sha, size) in sorted(got.files.items()):
            pin = src.files.get(rel)
            if pin is not None and pin.sha256:
                problem = (f"size {size} bytes, expected {pin.size}" if pin.size is not None and size != pin.size
                           else f"sha256 {sha}, expected {pin.sha256}" if sha != pin.sha256 else None)
                if problem is not None:
                    where = cache.quarantine(target / rel, f"{src.label}: {rel}: {problem}")
                    raise IntegrityError(f"{src.label}: {rel}: {problem}; quarantined at {where}",
                                         hint="the repo serves different bytes than the manifest pins: a tampered "
                                              "mirror, or the manifest names a moving revision")
                continue
            label = src.pin_label(rel)
            recorded = cache.get_pin(label)
            if recorded is not None and (recorded.sha256, recorded.size) != (sha, size):
                where = cache.quarantine(target / rel, f"{src.label}: {rel}: changed upstream")
                raise _pin_mismatch(label, f"sha256 {sha}, expected {recorded.sha256}", recorded, where=where)
            if recorded is None:
                tofu[rel] = (sha, size)
        combined = combined_sha256({rel: sha for rel, (sha, _) in got.files.items()})
        records = {rel: cache.FileRecord(sha, size) for rel, (sha, size) in got.files.items()}
        snap = cache.new_snapshot(manifest.name, key, src.label, combined,
                                  sum(size for _, size in got.files.values()), "none", records)
        snap = cache.commit_snapshot(target, snap)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for rel, (sha, size) in tofu.items():  # only once everything verified and stored
        cache.record_pin(src.pin_label(rel), sha, size)
        log.info("recorded trust-on-first-use pin for %s: sha256 %s", src.pin_label(rel), sha)
    log.info("%s: %d files verified (combined sha256 %s)", src.label, len(got.files), combined)
    return Pulled(snap.path, src, combined, manifest, snap)


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


__all__ = ["Pulled", "manifest_for", "offline_default", "pull", "resolve"]
