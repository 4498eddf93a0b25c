"""Inter-process locks on cache entries.

Locks save bandwidth and CPU (two processes never download or convert the same thing at once) and keep
``zoo cache prune``/``rm`` away from entries in use; correctness
comes from atomic renames. An OS lock (``flock``, through filelock) is released by the kernel when its holder
dies, so a killed process never blocks the next one.

``zoo cache prune`` deletes lock files of entries that are gone. It does so while holding the lock, and a
process that acquired a lock checks afterwards that the file it locked is still the one at the path, so a lock
file removed under a waiting process is never mistaken for a held lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator

from zoo.cache.paths import ensure_home, lock_path

log = logging.getLogger("zoo.cache")


def _same_file_still_there(path: str, before: os.stat_result | None) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return before is None or (now.st_ino, now.st_dev) == (before.st_ino, before.st_dev)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def lock(name: str, *, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the cache-wide lock ``name``; waiting is reported through ``on_wait`` (once) and the log."""
    from filelock import FileLock, Timeout  # not at import time: `zoo list` never locks

    ensure_home()
    path = lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    started, told = time.monotonic(), False
    while True:
        file_lock = FileLock(str(path))
        before = _stat(str(path))
        try:
            file_lock.acquire(timeout=0 if not told else 10)
        except Timeout:
            if not told:
                told = True
                message = f"waiting for another zoo process to finish {name}"
                log.info(message)
                if on_wait is not None:
                    on_wait(message)
            else:
                log.info("still waiting for %s (%.0fs so far)", name, time.monotonic() - started)
            continue
        if _same_file_still_there(str(path), before):
            break
        file_lock.release()  # the file was removed (prune) while we waited on it: lock the new one
    try:
        yield
    finally:
        file_lock.release()


@contextlib.contextmanager
def try_lock(name: str) -> Iterator[bool]:
    """Hold ``name`` if nobody else does; yields whether it was acquired (never waits)."""
    from filelock import FileLock, Timeout

    path = lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(str(path))
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        file_lock.release()


def remove_lock_file(name: str) -> bool:
    """Delete the lock file of an entry that no longer exists, if nobody holds it; whether it was removed."""
    from filelock import FileLock, Timeout

    path = lock_path(name)
    if not path.exists():
        return False
    file_lock = FileLock(str(path))
    try:
        file_lock.acquire(timeout=0)
    except Timeout:
        return False
    try:
        path.unlink(missing_ok=True)
        return True
    finally:
        file_lock.release()
