"""SHA-256 of a file being written out of order, computed while it downloads.

Parallel parts land at different offsets, but SHA-256 needs the bytes in order. :class:`OrderedHasher` keeps a
*frontier*: bytes written exactly at the frontier are hashed straight from memory as they arrive; bytes written
ahead of it are remembered as intervals and read back (from the page cache, just written) once the frontier
reaches them. Hashing runs in its own thread (hashlib releases the GIL), so it overlaps the transfer and the
digest is ready the moment the last byte lands: there is no second pass over the file.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading

_READBACK = 4 << 20


class OrderedHasher:
    """Hash the byte stream ``[0, size)`` of the open file ``fd`` as regions of it are reported written."""

    def __init__(self, fd: int, *, depth: int = 4096) -> None:
        self._fd = fd
        self._sha = hashlib.sha256()
        self._lock = threading.Lock()
        self._frontier = 0  # everything below has been handed to the hashing thread
        self._starts: dict[int, int] = {}  # written-ahead intervals: start -> end
        self._ends: dict[int, int] = {}  # and end -> start, to merge adjacent writes
        self._queue: queue.Queue[bytes | tuple[int, int] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zoo-sha256", daemon=True)
        self._thread.start()

    @property
    def frontier(self) -> int:
        return self._frontier

    def wrote(self, offset: int, data: bytes | None = None, length: int | None = None) -> None:
        """Report that ``data`` (or ``length`` bytes already on disk) now sits at ``offset``."""
        size = len(data) if data is not None else int(length or 0)
        if size == 0:
            return
        with self._lock:
            if offset == self._frontier:
                self._queue.put(data if data is not None else (offset, offset + size))
                self._frontier += size
                self._catch_up()
            elif offset > self._frontier:
                self._remember(offset, offset + size)
            else:  # pragma: no cover - a caller bug, never silently ignore it
                raise ValueError(f"bytes at {offset} reported twice (frontier {self._frontier})")

    def _remember(self, start: int, end: int) -> None:
        if start in self._ends:
            start = self._ends.pop(start)
            del self._starts[start]
        if end in self._starts:
            new_end = self._starts.pop(end)
            del self._ends[new_end]
            end = new_end
        self._starts[start] = end
        self._ends[end] = start

    def _catch_up(self) -> None:
        while self._frontier in self._starts:
            end = self._starts.pop(self._frontier)
            del self._ends[end]
            self._queue.put((self._frontier, end))
            self._frontier = end

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # keep draining so writers never block on a dead hasher
            try:
                if isinstance(item, tuple):
                    self._read_back(*item)
                else:
                    self._sha.update(item)
            except BaseException as exc:
                self._error = exc

    def _read_back(self, start: int, end: int) -> None:
        while start < end:
            block = os.pread(self._fd, min(_READBACK, end - start), start)
            if not block:
                raise OSError(f"file ended at {start} while hashing up to {end}")
            self._sha.update(block)
            start += len(block)

    def close(self) -> None:
        """Stop the hashing thread (after it digests what it was given)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self, size: int) -> str:
        """The digest of ``[0, size)``; every byte of it must have been reported."""
        self.close()
        if self._error is not None:
            raise self._error
        if self._frontier != size:
            raise RuntimeError(f"hashed {self._frontier} of {size} bytes")  # pragma: no cover - caller bug
        return self._sha.hexdigest()
