"""File-system helpers every layer uses: one way to hash a file, to write a file or a directory atomically, to
check free space, to remove trees and to print sizes.

Nothing here knows about models or where the cache keeps things; it is the floor the rest of zoo stands on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from zoo.errors import DiskSpaceError, UsageError

#: Bytes read per call when hashing or copying.
BLOCK = 4 << 20
#: Free space kept in reserve beyond what a write needs.
_MARGIN = 16 << 20


# ---------------------------------------------------------------------------------------------- hashing
def sha256_file(path: Path) -> tuple[str, int]:
    """sha256 hex digest and size of a file, in one pass."""
    sha, size = hashlib.sha256(), 0
    with open(path, "rb", buffering=0) as f:
        while block := f.read(BLOCK):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


class HashingWriter:
    """A binary file being written, with the sha256 and size of everything written so far.

    Writers that stream their output (converters, exporters, the trainer) hash it on the way out, so a
    receipt never needs a second pass over the file.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._sha.update(data)
        written = self._fh.write(data)
        self.size += memoryview(data).nbytes
        return written if written is not None else 0

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


# ---------------------------------------------------------------------------------------------- writing
def write_json_atomic(path: Path, data: Any, *, mode: int | None = None) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary sibling and a rename (never half-written)."""
    write_bytes_atomic(path, (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode(),
                       mode=mode)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary sibling, fsync and a rename. ``mode``: the new file's mode
    before the umask (default :func:`file_mode`, the cache's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode() if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_mode() -> int:
    """Mode for files zoo creates: private (0600) unless ``ZOO_CACHE_MODE=shared`` (0666 less the umask)."""
    return 0o666 if os.environ.get("ZOO_CACHE_MODE", "").strip().lower() == "shared" else 0o600


def dir_mode() -> int:
    """Mode for directories zoo creates at the top of its cache (see :func:`file_mode`)."""
    return 0o777 if os.environ.get("ZOO_CACHE_MODE", "").strip().lower() == "shared" else 0o700


# ---------------------------------------------------------------------------------- staged directories
#: This machine, as it appears in staging names (so a process can tell whether their owner still runs).
HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:40] or "host"
_TOKEN = r"(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]{12}"
_STAGING = re.compile(r"\.(?P<name>.+)\.staging-(?P<owner>.+-\d+-[0-9a-f]{12})")


def owner_token() -> str:
    """``HOST-PID-RANDOM``: names what this process stages, so others can tell when its owner is gone."""
    return f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def owner_alive(token: str) -> bool:
    """Whether the process named by an :func:`owner_token` may still be running (another host: assume so)."""
    m = re.fullmatch(_TOKEN, token)
    if m is None:
        return False
    if m.group("host") != HOST:
        return True  # another machine sharing the folder: never guess
    try:
        os.kill(int(m.group("pid")), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_path(target: Path, where: Path | None = None) -> Path:
    """A fresh staging name for ``target``: ``.NAME.staging-HOST-PID-RANDOM`` in ``where`` (default: beside it)."""
    return (target.parent if where is None else where) / f".{target.name}.staging-{owner_token()}"


def is_staging(path: Path) -> bool:
    return _STAGING.fullmatch(path.name) is not None


def staging_owner(path: Path) -> str | None:
    """The owner token in a staging name (:func:`staging_path`), or a bare token (how the cache's ``tmp/`` work
    folders were named before); None for any other name."""
    m = _STAGING.fullmatch(path.name)
    if m is not None:
        return m.group("owner")
    return path.name if re.fullmatch(_TOKEN, path.name) else None


def remove_stale_staging(parent: Path, *, of: str | None = None) -> list[Path]:
    """Remove the staging entries in ``parent`` (of the target named ``of`` only, when given) whose owner process
    is gone; returns what was removed."""
    removed = []
    for path in parent.iterdir() if parent.is_dir() else ():
        m = _STAGING.fullmatch(path.name)
        if m is not None and (of is None or m.group("name") == of) and not owner_alive(m.group("owner")):
            rmtree(path)
            removed.append(path)
    return removed


def fsync_tree(path: Path) -> None:
    """Flush every file under ``path`` and every directory to disk, so a rename that follows never exposes an
    empty or half-written file after a power loss."""
    for dirpath, _, names in os.walk(path):
        for name in names:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory; the data is still written
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_directory(target: Path, *, replace: bool = False, mode: int | None = None,
                     staging_in: Path | None = None, exclusive: bool = False) -> Iterator[Path]:
    """Write the directory ``target`` atomically.

    Yields an empty staging directory (:func:`staging_path`: beside ``target``, or in ``staging_in``); when the
    block succeeds its files are fsynced and it is renamed to ``target`` — which must not exist, or be an empty
    directory (replaced), or anything when ``replace`` — and the parent is fsynced. On any error the staging is
    removed and ``target`` is as it was. ``mode``: the staging directory's mode (default: the umask's).
    ``exclusive`` claims the target (:func:`_new_staging`): a second writer is refused instead of racing this one.
    Staging a killed process left for the same target is removed first (:func:`remove_stale_staging`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    where = target.parent if staging_in is None else Path(staging_in)
    with _staged(target, where, mode, exclusive, lambda staging: _rename_into_place(staging, target, replace),
                 target.parent) as staging:
        yield staging


def move_into_place(staging: Path, target: Path, *, replace: bool = False) -> None:
    """Put the complete directory ``staging`` at ``target`` for good: every file and directory in it is fsynced,
    then one rename puts it in place — an existing ``target`` (an empty directory, or anything with ``replace``)
    is renamed aside first and removed after — and the parent is fsynced. Fails (``ENOTEMPTY``/``EEXIST``) when
    ``target`` is anything else."""
    fsync_tree(staging)
    _rename_into_place(staging, target, replace)
    fsync_path(target.parent)


def _rename_into_place(staging: Path, target: Path, replace: bool) -> None:
    if target.exists() and (replace or _empty_dir(target)):
        doomed = staging_path(target, staging.parent)
        os.rename(target, doomed)
        os.rename(staging, target)
        rmtree(doomed)
    else:
        os.rename(staging, target)


@contextlib.contextmanager
def staged_files(directory: Path, *, last: str | None = None, mode: int | None = None,
                 exclusive: bool = False) -> Iterator[Path]:
    """Add files to ``directory`` (created with ``mode`` if missing; kept when it exists: it may be a working
    directory, or hold other things), each appearing whole.

    Yields an empty staging directory inside ``directory``; when the block succeeds its files are fsynced and
    renamed into ``directory`` — ``last`` (say, a receipt that vouches for the others) last, after an older
    ``last`` was removed first, so the directory never looks complete with a mix of old and new files — and the
    directory is fsynced. The staging is removed whatever happens (a killed process leaves it for
    :func:`remove_stale_staging`). ``exclusive``: as for :func:`staged_directory`; the directory must then be
    empty."""
    directory = Path(directory)
    directory.mkdir(0o777 if mode is None else mode, parents=True, exist_ok=True)

    def move_files(staging: Path) -> None:
        if last is not None:
            (directory / last).unlink(missing_ok=True)
        for name in sorted((p.name for p in staging.iterdir()), key=lambda n: (n == last, n)):
            os.replace(staging / name, directory / name)

    with _staged(directory, directory, 0o700, exclusive, move_files, directory) as staging:
        yield staging


@contextlib.contextmanager
def _staged(target: Path, where: Path, mode: int | None, exclusive: bool, put: Callable[[Path], None],
            receiver: Path) -> Iterator[Path]:
    """What both ways of staging share: a new staging directory for ``target`` in ``where``; when the block
    succeeds, its files fsynced, ``put(staging)`` (under the claim, with ``exclusive``), then ``receiver`` — the
    directory whose entries changed — fsynced; the staging is removed whatever happens."""
    staging = _new_staging(target, where, mode, exclusive)
    try:
        yield staging
        fsync_tree(staging)
        with _parent_locked(target) if exclusive else contextlib.nullcontext():
            if exclusive:
                _require_new_or_empty(target)
            put(staging)
        fsync_path(receiver)
    finally:
        rmtree(staging)  # gone already once it was renamed into place


def _new_staging(target: Path, where: Path, mode: int | None, exclusive: bool) -> Path:
    """A new staging directory for ``target`` in ``where``, after removing what dead processes left there for it.
    ``exclusive`` claims ``target`` under a lock on its parent: refused (:class:`UsageError`) while another
    process's staging for it exists (beside it or inside it), or when it is not new or an empty directory."""
    where.mkdir(parents=True, exist_ok=True)
    with _parent_locked(target) if exclusive else contextlib.nullcontext():
        remove_stale_staging(where, of=target.name)
        if exclusive:
            _refuse_busy(target)
            _require_new_or_empty(target)
        staging = staging_path(target, where)
        staging.mkdir() if mode is None else staging.mkdir(mode)
    return staging


def _refuse_busy(target: Path) -> None:
    for folder in (target.parent, target):
        remove_stale_staging(folder, of=target.name)
        for path in folder.iterdir() if folder.is_dir() else ():
            m = _STAGING.fullmatch(path.name)
            if m is not None and m.group("name") == target.name:
                raise UsageError(f"{target}: another zoo process is writing it ({m.group('owner')})",
                                 hint="wait for it to finish, or choose another directory")


def _require_new_or_empty(target: Path) -> None:
    if target.exists() and not _empty_dir(target):
        raise UsageError(f"{target}: already exists and is not empty (written meanwhile by another process?)",
                         hint="remove it or choose another directory")


def _empty_dir(path: Path) -> bool:
    """A directory with nothing in it but zoo's staging."""
    return path.is_dir() and not path.is_symlink() and all(is_staging(p) for p in path.iterdir())


@contextlib.contextmanager
def _parent_locked(target: Path) -> Iterator[None]:
    """Hold an OS lock on ``target``'s parent directory for a moment (a claim, a final rename), so two processes
    never decide about the same target at once. Released by the kernel if the holder dies; where the file system
    cannot lock, the claim falls back to the staging names alone."""
    import fcntl

    try:
        fd = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EINVAL, errno.ENOTSUP, errno.EBADF):
                raise
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------- disk space
def require_free_space(directory: Path, needed: int, what: str) -> None:
    """Raise :class:`DiskSpaceError` unless ``directory``'s file system has ``needed`` bytes free (plus a
    margin)."""
    probe = Path(directory)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed + _MARGIN > free:
        raise DiskSpaceError(f"not enough disk space for {what}: need {human_size(needed)}, "
                             f"{human_size(free)} free on {probe}",
                             hint="free some space (`zoo cache prune --max-size SIZE`) or point ZOO_HOME elsewhere")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def disk_full_is_an_error(what: str, *, hint: str) -> Iterator[None]:
    """Turn ``ENOSPC``/``EDQUOT`` inside the block into a :class:`DiskSpaceError` saying what was being written."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskSpaceError):
            raise DiskSpaceError(f"the disk filled up while {what}", hint=hint) from None
        raise


# -------------------------------------------------------------------------------------------- removing
def rmtree(path: Path) -> None:
    """Remove a file or a directory tree; missing is fine, links are removed, never followed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def mtime(path: Path, default: float = 0.0) -> float:
    """``path``'s modification time, or ``default`` when it is gone or unreadable."""
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def disk_usage(paths: list[Path]) -> int:
    """Bytes used by files under ``paths``; a file with several hard links is counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        walker = os.walk(top) if top.is_dir() else [(str(top.parent), [], [top.name])]
        for dirpath, _, names in walker:
            for name in names:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


# ---------------------------------------------------------------------------------------------- reading
def special_kind(mode: int) -> str | None:
    """``"a directory"``, ``"a fifo"``, ``"a device"``, ``"a special file"`` for a stat mode; None: a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"


def open_regular(path: Path, what: str, *, buffering: int = -1) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file: checked on what was opened, which never
    blocks (a FIFO without a writer would block ``open`` forever). A missing file, a directory, a FIFO or a device
    is a NotFoundError naming ``what`` file was expected; other OSErrors (permissions) are the caller's."""
    from zoo.errors import NotFoundError

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise NotFoundError(f"{path}: {what} file does not exist") from None
    try:
        kind = special_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotFoundError(f"{path}: is {kind}, not a regular file", hint=f"name the {what} files themselves")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a UTF-8 text file (a BOM is dropped; a final newline ends the last line, it does not start an
    empty one). A missing file, a directory or bytes that are not UTF-8 are zoo errors naming the file."""
    from zoo.errors import CheckpointError, NotFoundError

    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise NotFoundError(f"{path}: {what} file does not exist") from None
    except IsADirectoryError:
        raise NotFoundError(f"{path}: is a directory, not a {what} file") from None
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ---------------------------------------------------------------------------------------------- sizes
def human_size(n: float | None) -> str:
    """``1.5 GiB``-style size (binary units everywhere zoo shows a size); ``unknown size`` for None."""
    if n is None:
        return "unknown size"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def parse_size(text: str) -> int:
    """``20G``, ``500M``, ``1.5GiB``, ``123`` -> bytes (binary units). Raises ValueError."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"expected a size like 20G, 500M or 123456, got {text!r}")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def cut(text: str, limit: int = 120) -> str:
    """``text`` shortened to ``limit`` characters for an error message (values in messages are never whole)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
