"""The files a training run reads, checked before anything else happens: they exist, are regular files that can
be read, and are of the kind the option names (a TFRecord given as a corpus is recognised and pointed to
``--tfrecord``). A FIFO or a device is refused: reading one could block forever."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from zoo.errors import DataError, NotFoundError, UsageError

_OPTIONS = {"corpus": "--corpus", "tfrecord": "--tfrecord", "train": "--train", "dev": "--dev", "test": "--test",
            "eval_corpus": "--eval-corpus"}


def check_files(files: Sequence[str | os.PathLike[str]] | str | os.PathLike[str], kind: str) -> list[Path]:
    """``files`` as paths, each checked (see the module docstring); ``kind`` is the option's name."""
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    option = _OPTIONS.get(kind, kind)
    paths = [Path(f).expanduser() for f in files]
    for path in paths:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise NotFoundError(f"{option} {path}: no such file") from None
        except OSError as exc:
            raise NotFoundError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
        if stat.S_ISDIR(mode):
            raise NotFoundError(f"{option} {path}: is a directory", hint="name the files themselves")
        if not stat.S_ISREG(mode):
            raise UsageError(f"{option} {path}: is not a regular file (a FIFO, socket or device)",
                             hint="save the data to a file first: zoo reads its inputs more than once")
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise NotFoundError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
        if kind in ("corpus", "eval_corpus") and _is_tfrecord(head):
            raise DataError(f"{option} {path}: this is a TFRecord file, not text",
                            hint=f"pass upstream TFRecords with --tfrecord {path}")
    return paths


def _is_tfrecord(head: bytes) -> bool:
    """A TFRecord starts with a uint64 length and the masked CRC32C of those 8 bytes."""
    from zoo.training.tfrecord import _length_crc_ok

    return _length_crc_ok(head)


__all__ = ["check_files"]
