"""The files a training run reads, checked before anything else happens: they exist, are regular files that can
be read, and are of the kind the option names (a TFRecord given as a corpus is recognised and pointed to
``--tfrecord``). A FIFO or a device is refused: reading one could block forever."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from zoo._fs import open_regular
from zoo.errors import DataError, NotFoundError
from zoo.tf.tfrecord import looks_like_tfrecord

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
            with open_regular(path, f"{option} {kind.replace('_', ' ')}") as fh:
                head = fh.read(16)
        except IsADirectoryError:
            raise NotFoundError(f"{option} {path}: is a directory", hint="name the files themselves") from None
        except OSError as exc:
            raise NotFoundError(f"{option} {path}: cannot be read ({exc.strerror or exc})") from None
        if kind in ("corpus", "eval_corpus") and looks_like_tfrecord(head):
            raise DataError(f"{option} {path}: this is a TFRecord file, not text",
                            hint=f"pass upstream TFRecords with --tfrecord {path}")
    return paths


__all__ = ["check_files"]
