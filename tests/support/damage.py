"""Hostile edits to cached files: a flipped bit that may keep the file's size and mtime (bit rot, a bad disk)."""

from __future__ import annotations

import os
from pathlib import Path


def flip(path: Path, offset: int, *, keep_stamp: bool, mask: int = 0x01) -> None:
    """XOR one byte of ``path`` in place (same inode). With ``keep_stamp`` the size and mtime stay as they were,
    so only a re-hash can see the change; without it the mtime moves on, as after any ordinary write."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        assert byte, f"{path} has no byte at {offset}"
        f.seek(offset)
        f.write(bytes([byte[0] ^ mask]))
    mtime = st.st_mtime_ns if keep_stamp else st.st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(st.st_atime_ns, mtime))


def edit_keeping_mtime(path: Path, old: bytes, new: bytes) -> None:
    """Replace the first ``old`` in ``path`` by ``new`` (same length) in place, then set the mtime back: the size,
    mtime and inode stay; only the contents (and the ctime, which no one can set back) change."""
    assert len(old) == len(new), "a same-size edit"
    st = path.stat()
    data = path.read_bytes()
    at = data.index(old)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(new)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
