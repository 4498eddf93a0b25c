"""Dispatch a URL source (http, https, file) to the fetcher for its scheme."""

from __future__ import annotations

from pathlib import Path

from zoo.errors import UnsupportedError
from zoo.fetch import file, http
from zoo.fetch.base import Download, FetchOptions, ProgressCallback
from zoo.registry.schema import Source


def fetch(source: Source, workdir: Path, *, options: FetchOptions | None = None,
          progress: ProgressCallback | None = None) -> Download:
    """Download a URL source's single file into ``workdir/data``, hashing it on the way.

    ``hf:`` sources are several files in a repo, not one download: the resolver hands them to
    :mod:`zoo.fetch.hf`, and this single-file entry point refuses them.
    """
    if source.kind == "hf":
        raise UnsupportedError(f"{source.label}: an hf source is a set of repo files, not one download",
                               hint="fetch it with zoo.fetch.hf.pull, as zoo.resolver does")
    url = str(source.url)
    label = url.rsplit("/", 1)[-1] or url
    fetcher = file.download if url.startswith("file://") else http.download
    return fetcher(url, workdir, options=options, progress=progress, label=label, expected_size=source.size)
