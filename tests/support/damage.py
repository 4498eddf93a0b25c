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
