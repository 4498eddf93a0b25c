"""``file://`` sources: copy a local (air-gapped, LAN-mounted) file into the cache, hashing while copying."""

from __future__ import annotations

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from zoo.cache import is_disk_full, require_free_space
from zoo.errors import DiskSpaceError, IntegrityError, NetworkError
from zoo.fetch.base import Download, FetchOptions, ProgressCallback, ProgressEvent

_BLOCK = 4 << 20


def local_path(url: str) -> Path:
    """The local path of a ``file://`` URL (``file:///abs/path`` or ``file://localhost/abs/path``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise NetworkError(f"{url}: file:// URLs on another host are not supported",
                           hint="mount the share and use file:///mount/point/...")
    return Path(url2pathname(unquote(parts.path)))


def download(url: str, workdir: Path, *, options: FetchOptions | None = None,
             progress: ProgressCallback | None = None, label: str | None = None,
             expected_size: int | None = None) -> Download:
    """Copy the file behind ``url`` to ``workdir/data``."""
    src = local_path(url)
    label = label or src.name
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise NetworkError(f"{url}: cannot read {src}: {exc.strerror or exc}",
                           hint="is the share mounted? try another source (--source N)") from exc
    if expected_size is not None and size != expected_size:
        raise IntegrityError(f"{src} has {size} bytes, the manifest pins {expected_size}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    require_free_space(workdir, size, f"copying {label}")
    out_path = workdir / "data"
    sha, done = hashlib.sha256(), 0
    try:
        with open(src, "rb", buffering=0) as fin, open(out_path, "wb") as fout:
            while block := fin.read(_BLOCK):
                sha.update(block)
                fout.write(block)
                done += len(block)
                if progress is not None:
                    progress(ProgressEvent("download", label, done=done, total=size))
    except OSError as exc:
        out_path.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskSpaceError(f"disk full while copying {src}") from exc
        raise NetworkError(f"{url}: reading {src} failed: {exc.strerror or exc}") from exc
    return Download(path=out_path, sha256=sha.hexdigest(), size=done, url=url, fetched=done)
