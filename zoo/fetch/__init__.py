"""Fetchers move a source's bytes onto local disk, hashing them on the way; they decide nothing.

Every fetcher has the same shape — ``fetch(source, workdir, options=..., progress=...)`` — and returns what it
brought with each file's sha256 and size. Which hash is expected, what is trusted on first use, what is
quarantined and whether the network may be used at all is the resolver's business (:mod:`zoo.resolver`).

``http`` (parallel ranged parts, resume, retries, stall and slow-server detection), ``file`` (``file://``
copies), ``hf`` (files of a Hugging Face repo through huggingface_hub).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zoo.fetch.base import DATA, Download, Fetched, FetchOptions
from zoo.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from zoo.registry.schema import Source


def fetch(source: Source, workdir: Path, *, options: FetchOptions | None = None,
          progress: ProgressCallback | None = None) -> Fetched:
    """Download ``source`` into ``workdir``: a URL source's one file as ``workdir/data`` (resuming what an
    interrupted run left there), an ``hf:`` source's repo files under their repo paths."""
    if source.kind == "hf":
        from zoo.fetch import hf

        return hf.fetch(source, workdir, options=options, progress=progress)
    from zoo.fetch import file, http

    url = str(source.url)
    label = url.rsplit("/", 1)[-1] or url
    fetcher = file.download if url.startswith("file://") else http.download
    got = fetcher(url, workdir, options=options, progress=progress, label=label, expected_size=source.size)
    return Fetched({DATA: (got.sha256, got.size)}, got.fetched)


__all__ = ["DATA", "Download", "FetchOptions", "Fetched", "ProgressCallback", "ProgressEvent", "fetch"]
