"""``file://`` sources: copy a local (air-gapped, LAN-mounted) file into the cache, hashing while copying."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from zoo._fs import BLOCK, HashingWriter, file_mode, is_disk_full, require_free_space, special_kind
from zoo.errors import DiskSpaceError, IntegrityError, NetworkError, UnsupportedError
from zoo.fetch.base import DATA, Fetched, FetchOptions, url_label
from zoo.progress import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    from zoo.registry.schema import Source


def local_path(url: str) -> Path:
    """The local path of a ``file://`` URL (``file:///abs/path`` or ``file://localhost/abs/path``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise NetworkError(f"{url}: file:// URLs on another host are not supported",
                           hint="mount the share and use file:///mount/point/...")
    return Path(url2pathname(unquote(parts.path)))


def fetch(source: Source, workdir: Path, *, options: FetchOptions | None = None,
          progress: ProgressCallback | None = None) -> Fetched:
    """Copy the regular file behind the source's ``file://`` URL to ``workdir/data`` (private to the user, whatever
    its mode was), hashing while copying."""
    url, expected_size = str(source.url), source.size
    src = local_path(url)
    label = url_label(url)
    try:
        fd_in = os.open(src, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise NetworkError(f"{url}: cannot read {src}: {exc.strerror or exc}",
                           hint="is the share mounted? try another source (--source N)") from exc
    st = os.fstat(fd_in)  # of what was opened: no swap between the check and the copy
    what = special_kind(st.st_mode)
    if what is not None:
        os.close(fd_in)
        raise UnsupportedError(f"{url}: {src} is not a regular file ({what})",
                               hint="a file:// source must name the downloaded archive or checkpoint file")
    with os.fdopen(fd_in, "rb", buffering=0) as fin:
        os.set_blocking(fin.fileno(), True)
        size = st.st_size
        if expected_size is not None and size != expected_size:
            raise IntegrityError(f"{src} has {size} bytes, the manifest pins {expected_size}")
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        require_free_space(workdir, size, f"copying {label}")
        out_path = workdir / DATA
        done = 0
        emit = progress or (lambda event: None)
        try:
            fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode())
            with os.fdopen(fd_out, "wb") as fout:
                out = HashingWriter(fout)
                while done < size and (block := fin.read(min(BLOCK, size - done))):
                    out.write(block)
                    done = out.size
                    emit(ProgressEvent("download", label, done=done, total=size))
        except OSError as exc:
            out_path.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskSpaceError(f"the disk filled up while copying {src} into the cache",
                                     hint="free some space (zoo cache prune) and pull again; nothing was kept"
                                     ) from None
            raise NetworkError(f"{url}: reading {src} failed: {exc.strerror or exc}") from exc
    if done != size:
        out_path.unlink(missing_ok=True)
        raise NetworkError(f"{url}: {src} shrank while it was copied ({done} of {size} bytes)",
                           hint="the file is being rewritten; try again when it is complete")
    return Fetched({DATA: (out.hexdigest(), done)}, done)
