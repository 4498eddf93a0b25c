"""Safe extraction of zip and tar.gz downloads.

zoo never calls ``extractall`` and does not depend on ``tarfile``'s extraction filters (absent or buggy on some
supported Pythons). Each member is checked before any byte of it is written: only regular files and
directories with relative, ``..``-free names are accepted; links, devices and fifos are refused; declared sizes
are bounded per file, in total and by compression ratio (zip bombs); and the bytes actually written are
counted against the declared sizes. Files are created with ``O_EXCL | O_NOFOLLOW`` inside a fresh staging
directory that is fsynced and renamed into place only when everything succeeded (:func:`zoo._fs.staged_directory`),
and each file's sha256 is computed while it is written.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from zoo._fs import disk_full_is_an_error, file_mode, require_free_space, staged_directory
from zoo.errors import UnsafeArchiveError, UnsupportedError

GiB = 1 << 30
_COPY_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what an archive may expand to. Checkpoints compress poorly (float weights: ratio ~1.1)."""

    max_total: int = 64 * GiB
    max_file: int = 32 * GiB
    max_members: int = 100_000
    #: Expanded/compressed size above which a member (or the whole archive) counts as a bomb...
    max_ratio: float = 100.0
    #: ...once it expands beyond this many bytes (tiny, very compressible text files are fine).
    ratio_floor: int = 8 << 20


@dataclasses.dataclass(frozen=True)
class Extracted:
    """A file written by :func:`extract`, hashed as it was written."""

    sha256: str
    size: int


def extract(archive: Path, dest: Path, kind: str, *, limits: Limits = Limits()) -> dict[str, Extracted]:
    """Extract ``archive`` (``"zip"`` or ``"tar.gz"``) into the new directory ``dest``.

    Returns the extracted regular files by relative POSIX path. Raises UnsafeArchiveError naming the member
    for anything hostile; on any failure nothing is left at ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    if kind not in ("zip", "tar.gz"):
        raise UnsupportedError(f"unknown archive type {kind!r}", hint="expected zip, tar.gz or none")
    with disk_full_is_an_error(f"extracting {archive.name} into {dest.parent}",
                               hint="free some space (`zoo cache prune`) and pull again: the verified download is "
                                    "kept, so only the extraction is repeated"), \
            staged_directory(dest) as staging:
        return (_extract_zip if kind == "zip" else _extract_tar)(archive, staging, limits)


# ------------------------------------------------------------------------------------------------ checks
def _safe_name(archive: Path, name: str) -> str | None:
    """The normalised relative path of a member, None for the archive root; refuses escaping names."""
    if "\x00" in name or "\\" in name:
        raise _refuse(archive, name, "has a backslash or NUL in its name")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _refuse(archive, name, "has an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, name, "has a '..' component (path traversal)")
    return "/".join(parts) or None


def _refuse(archive: Path, name: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{archive.name}: member {name!r} {why}; refusing to extract",
                              hint="the archive is damaged or hostile; report it to the mirror's owner")


class _Budget:
    """Running totals against :class:`Limits`."""

    def __init__(self, archive: Path, limits: Limits) -> None:
        self.archive, self.limits = archive, limits
        self.compressed = max(1, archive.stat().st_size)
        self.total = 0
        self.members = 0

    def admit(self, name: str, size: int, compressed: int | None = None) -> None:
        lim = self.limits
        self.members += 1
        if self.members > lim.max_members:
            raise _refuse(self.archive, name, f"is past the limit of {lim.max_members} members")
        if size > lim.max_file:
            raise _refuse(self.archive, name, f"expands to {size} bytes, over the per-file limit {lim.max_file}")
        self.total += size
        if self.total > lim.max_total:
            raise _refuse(self.archive, name, f"brings the expanded total to {self.total} bytes, over the "
                                              f"limit {lim.max_total}")
        if compressed is not None and size > lim.ratio_floor and size / max(1, compressed) > lim.max_ratio:
            raise _refuse(self.archive, name, f"expands {size / max(1, compressed):.0f}x "
                                              f"(limit {lim.max_ratio:.0f}x): a compression bomb")
        if self.total > lim.ratio_floor and self.total / self.compressed > lim.max_ratio:
            raise _refuse(self.archive, name, f"brings the archive's expansion to "
                                              f"{self.total / self.compressed:.0f}x (limit {lim.max_ratio:.0f}x): "
                                              "a compression bomb")


def _write(root: Path, rel: str, stream: IO[bytes], declared: int, archive: Path) -> Extracted:
    """Copy ``stream`` to ``root/rel`` (never following links, never overwriting), hashing as it goes."""
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise _refuse(archive, rel, "resolves outside the extraction directory")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), file_mode())
    sha, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        while block := stream.read(_COPY_BLOCK):
            size += len(block)
            if size > declared:
                raise _refuse(archive, rel, f"holds more bytes than the {declared} its header declares")
            sha.update(block)
            out.write(block)
    if size != declared:
        raise _refuse(archive, rel, f"holds {size} bytes, its header declares {declared}")
    return Extracted(sha.hexdigest(), size)


def _mkdir(root: Path, rel: str) -> None:
    (root / rel).mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------------- zip
def _extract_zip(archive: Path, root: Path, limits: Limits) -> dict[str, Extracted]:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise UnsafeArchiveError(f"{archive.name} is not a valid zip file: {exc}",
                                 hint="the download may be damaged: `zoo verify` then pull again") from exc
    files: dict[str, Extracted] = {}
    with zf:
        infos = zf.infolist()
        budget = _Budget(archive, limits)
        plan: list[tuple[zipfile.ZipInfo, str | None]] = []
        names: set[str] = set()
        for info in infos:  # check everything before writing anything
            rel = _safe_name(archive, info.filename)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.flag_bits & 0x1:
                raise UnsupportedError(f"{archive.name}: member {info.filename!r} is encrypted")
            if kind == stat.S_IFLNK:
                raise _refuse(archive, info.filename, "is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, info.filename, "is a device, fifo or socket")
            if not info.is_dir():
                budget.admit(info.filename, info.file_size, info.compress_size)
                if rel is None:
                    raise _refuse(archive, info.filename, "is a file without a name")
                if rel in names:
                    raise _refuse(archive, info.filename, "appears twice")
                names.add(rel)
            plan.append((info, rel))
        require_free_space(root, budget.total, f"extracting {archive.name}")
        for info, rel in plan:
            if rel is None:
                continue
            if info.is_dir():
                _mkdir(root, rel)
                continue
            try:
                with zf.open(info) as stream:
                    files[rel] = _write(root, rel, stream, info.file_size, archive)
            except (zipfile.BadZipFile, EOFError, ValueError) as exc:  # CRC or stream damage
                raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is damaged: {exc}",
                                         hint="the download may be damaged: `zoo verify` then pull again") from exc
    return files


# ------------------------------------------------------------------------------------------------ tar.gz
def _extract_tar(archive: Path, root: Path, limits: Limits) -> dict[str, Extracted]:
    try:
        with tarfile.open(archive, mode="r|gz") as tf:  # streaming: one pass, no seeking
            return _extract_tar_members(tf, archive, root, limits)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UnsafeArchiveError(f"{archive.name} is not a valid tar.gz file: {exc}",
                                 hint="the download may be damaged: `zoo verify` then pull again") from exc


def _extract_tar_members(tf: tarfile.TarFile, archive: Path, root: Path, limits: Limits) -> dict[str, Extracted]:
    budget = _Budget(archive, limits)
    files: dict[str, Extracted] = {}
    for member in tf:
        rel = _safe_name(archive, member.name)
        if member.issym() or member.islnk():
            raise _refuse(archive, member.name, f"is a {'symbolic' if member.issym() else 'hard'} link "
                                                f"(to {member.linkname!r})")
        if member.isdir():
            if rel is not None:
                _mkdir(root, rel)
            continue
        if not member.isreg() or member.issparse():
            raise _refuse(archive, member.name, "is a device, fifo or other special file")
        if rel is None:
            raise _refuse(archive, member.name, "is a file without a name")
        if rel in files:
            raise _refuse(archive, member.name, "appears twice")
        budget.admit(member.name, member.size)
        stream = tf.extractfile(member)
        assert stream is not None  # regular files always have one
        files[rel] = _write(root, rel, stream, member.size, archive)
    return files
