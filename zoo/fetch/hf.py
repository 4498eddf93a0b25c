"""``hf:`` sources: files of a Hugging Face repo (or any Hub-compatible mirror such as olah), hashed by zoo.

huggingface_hub does the transfer, so ``HF_ENDPOINT`` (read at call time), ``HF_TOKEN`` and the usual proxy
variables apply. It names blobs by their hash but never re-hashes them, so every file is hashed here after it
arrives. Whether those hashes are the expected ones, what is pinned on first use and what is quarantined is
decided by :mod:`zoo.resolver`, exactly as for URL sources.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._fs import sha256_file
from zoo.errors import NetworkError, first_line
from zoo.fetch.base import Fetched, FetchOptions
from zoo.fetch.probe import UNREACHABLE_HINT, check_reachable
from zoo.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from zoo.registry.schema import Source

log = logging.getLogger("zoo.fetch.hf")

DEFAULT_ENDPOINT = "https://huggingface.co"


def combined_sha256(files: Mapping[str, str]) -> str:
    """sha256 of the ``sha256sum`` listing (``<hex>  <path>\\n``, sorted by path) of ``{path: sha256}``: the
    hash that names an hf snapshot (and its conversion) as one thing."""
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def fetch(source: Source, workdir: Path, *, options: FetchOptions | None = None,
          progress: ProgressCallback | None = None) -> Fetched:
    """Download the source's files into ``workdir`` (repo paths kept) and hash each one."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo = str(source.hf)
    if not source.revision_is_commit:
        log.warning("%s: revision %r is not a 40-hex commit; a branch or tag can move, so this download is not "
                    "reproducible (pin the commit in the manifest)", repo, source.revision or "main")
    emit = progress or (lambda event: None)
    endpoint = os.environ.get("HF_ENDPOINT") or None  # at call time: huggingface_hub reads it only on import
    try:  # fail in a moment, naming the host, where huggingface_hub would retry for half a minute
        check_reachable(endpoint or DEFAULT_ENDPOINT, timeout=(options or FetchOptions()).connect_timeout,
                        what=f"HF_ENDPOINT={endpoint}" if endpoint else "the Hugging Face Hub", hint=UNREACHABLE_HINT)
    except NetworkError as exc:
        raise NetworkError(f"{source.label}: {exc.message}", hint=exc.hint) from None
    workdir.mkdir(parents=True, exist_ok=True)
    got: dict[str, tuple[str, int]] = {}
    fetched = 0
    for rel in source.repo_files:
        try:
            path = Path(hf_hub_download(repo, rel, revision=source.revision, endpoint=endpoint,
                                        local_dir=workdir, tqdm_class=_forwarding_tqdm(emit, source.label, rel)))
        except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: catch it first
            raise NetworkError(f"{source.label}: cannot reach {endpoint or DEFAULT_ENDPOINT} for {rel}: "
                               f"{first_line(exc)}", hint=UNREACHABLE_HINT) from None
        except EntryNotFoundError:
            raise NetworkError(f"{source.label}: the repo has no file {rel!r}",
                               hint="check the manifest's files/checkpoint/vocab and revision") from None
        except HfHubHTTPError as exc:
            raise NetworkError(f"{source.label}: {rel}: {first_line(exc)}",
                               hint="a private or gated repo needs HF_TOKEN; check the repo id and "
                                    "revision") from None
        emit(ProgressEvent("note", source.label, message=f"hashing {rel}"))
        sha, size = sha256_file(path)
        if path != workdir / rel:
            os.replace(path, workdir / rel)
        got[rel] = (sha, size)
        fetched += size
    _drop_hf_metadata(workdir)
    return Fetched(got, fetched)


def _drop_hf_metadata(workdir: Path) -> None:
    """huggingface_hub keeps ``.cache/huggingface`` bookkeeping in ``local_dir``; it is not part of the files."""
    from zoo._fs import rmtree

    rmtree(workdir / ".cache")


def _forwarding_tqdm(emit: ProgressCallback, label: str, rel: str) -> type:
    """A silent tqdm class that reports huggingface_hub's byte counts as zoo progress events."""
    from tqdm.auto import tqdm

    class Forwarding(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            emit(ProgressEvent("download", f"{label}/{rel}", self.done, self.total))
            return None

    return Forwarding
