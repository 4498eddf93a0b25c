"""Fetchers move a source's bytes onto local disk, hashing them on the way; they decide nothing.

Every fetcher is a module with the same function — ``fetch(source, workdir, *, options, progress) -> Fetched`` —
which returns what it brought with each file's sha256 and size; :func:`fetch` here picks the module the source's
kind is registered with (:data:`zoo.registry.schema.FETCHERS`). Which hash is expected, what is trusted on first
use, what is quarantined and whether the network may be used at all is the resolver's business
(:mod:`zoo.resolver`).

``http`` (parallel ranged parts, resume, retries, stall and slow-server detection), ``file`` (``file://``
copies), ``hf`` (files of a Hugging Face repo through huggingface_hub).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.fetch.base import DATA, Fetched, FetchOptions
from zoo.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from zoo.registry.schema import Source


def fetch(source: Source, workdir: Path, *, options: FetchOptions | None = None,
          progress: ProgressCallback | None = None) -> Fetched:
    """Bring ``source`` into ``workdir``: a URL source's one file as ``workdir/data`` (resuming what an
    interrupted run left there), an ``hf:`` source's repo files under their repo paths."""
    fetcher = importlib.import_module(f"zoo.fetch.{source.fetcher}")
    got: Fetched = fetcher.fetch(source, workdir, options=options, progress=progress)
    return got


__all__ = ["DATA", "FetchOptions", "Fetched", "ProgressCallback", "ProgressEvent", "fetch"]
