"""What zoo verified of folders outside the cache: ``zoo convert``/``export``/``pretrain`` outputs.

Such a folder is the user's, so zoo writes nothing into it when it reads it; what it knows about its files lives
in the cache instead, at ``folders/<key of the folder's resolved path>.json``: each file's sha256 (as the
folder's receipt records it) and the stamp the file had when its bytes were last seen to match — size, mtime_ns,
ctime_ns and inode. The ctime cannot be set back (``touch -d`` and ``os.utime`` set the mtime only), so an
edit that keeps the size and the mtime still moves the stamp, and the file is hashed again before it is trusted.

The receipt decides, never this record: a file is trusted without hashing only when its stamp *and* the sha256
its receipt lists now are the ones recorded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from zoo._fs import sha256_file, write_json_atomic
from zoo.cache.paths import ensure_home, folder_record_path
from zoo.cache.records import FileRecord

log = logging.getLogger("zoo.cache")

RECORD_VERSION = 1


@dataclasses.dataclass(frozen=True)
class FolderStamp:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FolderStamp:
        st = path.stat()
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


Known = dict[str, tuple[str, FolderStamp]]  # file -> (sha256, stamp) when it last matched


def check_folder(directory: Path, expected: Mapping[str, FileRecord], *, rehash: bool = False,
                 on_file: Callable[[Path], None] | None = None) -> list[tuple[Path, str]]:
    """Compare the files of ``directory`` with ``expected`` (its receipt's sha256 and size of each): a file whose
    stamp is the one recorded when it last matched that sha256 costs one ``stat``; any other is hashed (every
    file, with ``rehash``). Returns ``(path, what is wrong)`` for each file that does not match; the stamps of
    those that do are recorded, so the next check of an unchanged folder hashes nothing."""
    known = _read(directory)
    now = dict(known)
    problems: list[tuple[Path, str]] = []
    for rel, record in sorted(expected.items()):
        path = directory / rel
        now.pop(rel, None)
        try:
            stamp = FolderStamp.of(path)
        except FileNotFoundError:
            problems.append((path, "is missing"))
            continue
        if stamp.size != record.size:
            problems.append((path, f"has {stamp.size} bytes; its receipt records {record.size}"))
            continue
        if rehash or known.get(rel) != (record.sha256, stamp):
            if on_file is not None:
                on_file(path)
            got, _ = sha256_file(path)
            if got != record.sha256:
                problems.append((path, f"changed since it was written (sha256 {got}, receipt {record.sha256})"))
                continue
        now[rel] = (record.sha256, stamp)
    if now != known:
        _write(directory, now)
    return problems


def record_folder(directory: Path, files: Mapping[str, FileRecord]) -> None:
    """Record the stamps of files just written with these hashes (the writer hashed them as it wrote them), so
    the first load of a fresh output hashes nothing."""
    _write(directory, {rel: (r.sha256, FolderStamp.of(directory / rel)) for rel, r in files.items()})


def _read(directory: Path) -> Known:
    path = folder_record_path(directory)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != RECORD_VERSION or data.get("path") != str(directory.resolve()):
            return {}
        return {str(rel): (str(item["sha256"]), FolderStamp(*(int(x) for x in item["stamp"])))
                for rel, item in data["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # nothing known: every file is hashed, and the record written again


def _write(directory: Path, files: Known) -> None:
    """Best effort: a cache that cannot be written costs hashing next time, never a failure."""
    data = {"version": RECORD_VERSION, "path": str(directory.resolve()),
            "files": {rel: {"sha256": sha, "stamp": dataclasses.astuple(stamp)}
                      for rel, (sha, stamp) in sorted(files.items())}}
    try:
        ensure_home()
        write_json_atomic(folder_record_path(directory), data)
    except OSError as exc:
        log.debug("could not record the stamps of %s: %s", directory, exc)
