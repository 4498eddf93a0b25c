"""``hf:`` sources: files in a Hugging Face repo (or any Hub-compatible mirror), verified by zoo's own sha256.

huggingface_hub does the transfer, so ``HF_ENDPOINT`` (read at call time), ``HF_TOKEN`` and the usual proxy
variables apply. It names blobs by their hash but never re-hashes them, so every file is hashed here and
compared with the manifest's ``files:`` pins; a file the manifest leaves unpinned is pinned on first use in
the cache's pin store, and a later download must match. The verified files become an ordinary cache snapshot
whose ``sha256`` is the *combined hash*: the sha256 of the ``sha256sum``-style listing of its files::

    printf '%s  %s\\n' <sha256> <path> ...   (sorted by path)  | sha256sum

Turning the snapshot's transformers-named weights into zoo's converted layout is
:mod:`zoo.converters.transformers`'s job.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import cache
from zoo.errors import IntegrityError, NetworkError, OfflineError, first_line
from zoo.fetch.base import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from zoo.registry.schema import Manifest, Source

log = logging.getLogger("zoo.fetch.hf")

def wanted_files(source: Source) -> list[str]:
    """Every repo file the source needs: its pinned ``files`` plus checkpoint and vocab."""
    return sorted(set(source.files) | {str(source.checkpoint), str(source.vocab)})


def combined_sha256(files: Mapping[str, str]) -> str:
    """sha256 of the ``sha256sum`` listing (``<hex>  <path>\\n``, sorted by path) of ``{path: sha256}``."""
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def pin_label(source: Source, rel: str) -> str:
    """The pin-store key of one file of an hf source."""
    return f"{source.label}/{rel}"


# ---------------------------------------------------------------------------------------------- download
def download(source: Source, target: Path, *, progress: ProgressCallback | None = None,
             label: str | None = None) -> dict[str, tuple[str, int]]:
    """Download the source's files into ``target`` and verify them; returns ``{path: (sha256, size)}``.

    A file that disagrees with its pin (manifest or trust-on-first-use) is quarantined and raises
    :class:`~zoo.errors.IntegrityError`; transfer failures raise :class:`~zoo.errors.NetworkError`.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo = str(source.hf)
    if not source.revision_is_commit:
        log.warning("%s: revision %r is not a 40-hex commit; a branch or tag can move, so this download is not "
                    "reproducible (pin the commit in the manifest)", repo, source.revision or "main")
    emit = progress or (lambda event: None)
    label = label or source.label
    endpoint = os.environ.get("HF_ENDPOINT") or None  # at call time: huggingface_hub reads it only on import
    got: dict[str, tuple[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="hf-", dir=target.parent) as scratch:
        for rel in wanted_files(source):
            emit(ProgressEvent("download", label, message=rel))
            try:
                path = Path(hf_hub_download(repo, rel, revision=source.revision, endpoint=endpoint,
                                            local_dir=scratch, tqdm_class=_forwarding_tqdm(emit, label, rel)))
            except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: catch it first
                raise NetworkError(f"{source.label}: cannot reach {endpoint or 'the Hub'} for {rel}: "
                                   f"{first_line(exc)}",
                                   hint="check the network, HF_ENDPOINT and proxy settings") from None
            except EntryNotFoundError:
                raise NetworkError(f"{source.label}: the repo has no file {rel!r}",
                                   hint="check the manifest's files/checkpoint/vocab and revision") from None
            except HfHubHTTPError as exc:
                raise NetworkError(f"{source.label}: {rel}: {first_line(exc)}",
                                   hint="a private or gated repo needs HF_TOKEN; check the repo id and "
                                        "revision") from None
            emit(ProgressEvent("verify", label, message=rel))
            sha, size = cache.hash_file(path)
            _check_pin(source, rel, path, sha, size)
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
            got[rel] = (sha, size)
    for rel, (sha, size) in got.items():  # only once everything verified
        if not (source.files.get(rel) and source.files[rel].sha256) and cache.get_pin(pin_label(source, rel)) is None:
            cache.record_pin(pin_label(source, rel), sha, size)
            log.info("recorded trust-on-first-use pin for %s: sha256 %s", pin_label(source, rel), sha)
    return got


def _check_pin(source: Source, rel: str, path: Path, sha: str, size: int) -> None:
    pin = source.files.get(rel)
    tofu = None if pin and pin.sha256 else cache.get_pin(pin_label(source, rel))
    expected_sha = pin.sha256 if pin and pin.sha256 else (tofu.sha256 if tofu else None)
    expected_size = pin.size if pin and pin.size is not None else (tofu.size if tofu else None)
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"size {size} bytes, expected {expected_size}"
    elif expected_sha is not None and sha != expected_sha:
        problem = f"sha256 {sha}, expected {expected_sha}"
    if problem is None:
        return
    where = cache.quarantine(path, f"{source.label}: {rel}: {problem}")
    if tofu is not None:
        raise IntegrityError(
            f"{source.label}: {rel} changed upstream: {problem} (trust-on-first-use pin recorded "
            f"{time.strftime('%Y-%m-%d', time.localtime(tofu.recorded))}); quarantined at {where}",
            hint="if the new file is legitimate, pin its sha256 in the manifest's files:")
    raise IntegrityError(f"{source.label}: {rel}: {problem}; quarantined at {where}",
                         hint="the repo serves different bytes than the manifest pins: a tampered mirror, or "
                              "the manifest names a moving revision")


def pull(manifest: Manifest, source: Source, key: str, *, offline: bool = False,
         progress: ProgressCallback | None = None) -> cache.Snapshot:
    """Download and verify an hf source into a new cache snapshot (the caller holds the snapshot lock)."""
    if offline:
        raise OfflineError(f"{source.label}: not in the cache")
    staging = cache.staging_dir()
    try:
        target = staging / "snapshot"
        target.mkdir()
        got = download(source, target, progress=progress, label=manifest.name)
        records = {rel: cache.FileRecord(sha, size, cache.Stamp(0, 0, 0)) for rel, (sha, size) in got.items()}
        snap = cache.Snapshot(model=manifest.name, key=key, source=source.label,
                              sha256=combined_sha256({rel: sha for rel, (sha, _) in got.items()}),
                              size=sum(size for _, size in got.values()), archive="none", files=records,
                              created=time.time())
        cache.commit_snapshot(target, snap)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: %d files verified (combined sha256 %s)", source.label, len(got), snap.sha256)
    return snap


def _forwarding_tqdm(emit: ProgressCallback, label: str, rel: str) -> type:
    """A silent tqdm class that reports huggingface_hub's byte counts as zoo progress events."""
    from tqdm.auto import tqdm

    class Forwarding(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            emit(ProgressEvent("download", label, self.done, self.total, message=rel))
            return None

    return Forwarding

