"""The ``--out`` directory of a training run: whose it is, what it holds, and what a run may do to it.

A run writes into a directory that is new, empty, or one an earlier run of the same kind made (its marker,
``run.json``, says so); anything else — a user's own files, an upstream release, zoo's cache — is refused before
anything is written. One run at a time holds ``run.lock``. A start that fails leaves the directory as it was.
The layout::

    run.json          the marker, written when a run claims the folder (its kind: the folder is zoo's even if
                      that run is killed), then every setting and the data's identity (files, sizes, sha256)
    run.lock          held while a run is going on
    metrics.jsonl     one record per --log-every steps (averages over those steps), evaluations too
    checkpoints/      step-NNNNNNNNN/ (see zoo.training.checkpoint)
    data/             the tokenized corpus (pretraining), reused by --resume
    best/             fine-tuning: the weights of the best evaluation so far
    model.safetensors, config.json, vocab.txt, receipt.json   the result, when the run is complete
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from zoo._fs import (
    disk_full_is_an_error,
    is_disk_full,
    remove_stale_staging,
    rmtree,
    sha256_file,
    write_json_atomic,
)
from zoo.converters.modeldir import RUN_MARKER
from zoo.errors import CheckpointError, DiskSpaceError, NotFoundError, UsageError, ZooError
from zoo.plotting import METRICS_FILE, whole_records
from zoo.training import checkpoint as ckpt

log = logging.getLogger("zoo.training")

MARKER, LOCK, METRICS = RUN_MARKER, "run.lock", METRICS_FILE
#: Files a user may open for writing new mode bits as ``cp`` would (0666 less the umask).
USER_MODE = 0o666
RUN_VERSION = 2


def _fail_on_fs_error(path: Path, exc: OSError) -> ZooError:
    if is_disk_full(exc):
        return DiskSpaceError(f"{path}: the disk is full", hint="free some space, or choose an --out directory on "
                                                                 "another disk")
    if exc.errno == errno.EROFS:
        return UsageError(f"{path}: the file system is read-only", hint="choose an --out directory you can write to")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UsageError(f"{path}: permission denied", hint="choose an --out directory you can write to")
    if exc.errno == errno.ENOTDIR:
        return UsageError(f"{path}: a part of this path is a file, not a directory", hint="choose another --out")
    return UsageError(f"{path}: cannot be used as the output directory ({exc.strerror or exc})",
                      hint="choose another --out directory")


class RunDir:
    """One run's output directory. ``kind``: ``pretraining`` or ``finetuning``."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        self.path = Path(path).expanduser().absolute()
        self.kind = kind
        self._lock: Any = None
        self._created: list[Path] = []
        self._fresh = False  # this run wrote the marker now: no earlier run was here

    # ---------------------------------------------------------------------------------------- checks
    def check(self, *, resume: bool) -> None:
        """Refuse, before anything is written, an output directory this run may not use."""
        from zoo.cache import home

        path = self.path
        try:
            resolved, cache = path.resolve(), home().resolve()
        except OSError as exc:
            raise _fail_on_fs_error(path, exc) from None
        if resolved == cache or resolved.is_relative_to(cache):
            raise UsageError(f"--out {path} is {'inside ' if resolved != cache else ''}zoo's cache ({cache})",
                             hint="write training runs outside the cache: `zoo cache prune` may delete anything "
                                  "in it")
        if path.exists() and not path.is_dir():
            raise UsageError(f"--out {path} is a file", hint="choose a directory (new or empty)")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UsageError(f"--out {path}: {parent} is a file, not a directory",
                                     hint="choose another --out")
                break
        marker = self.marker()
        if resume:
            if marker is None:
                raise UsageError(f"--resume: {path} holds no {self.kind} run to resume",
                                 hint="run without --resume to start a new run")
            if not ckpt.checkpoints(path / "checkpoints"):
                raise UsageError(f"--resume: {path} holds {self.state(marker)}: there is no checkpoint to resume from",
                                 hint="run the same command without --resume: it starts afresh")
            return
        if not path.is_dir() or not any(p.name != LOCK for p in path.iterdir()):
            return  # new, empty, or claimed by a run that is starting (its lock decides)
        if marker is None:
            self._refuse_foreign()
        if ckpt.checkpoints(path / "checkpoints") or (path / "model.safetensors").exists():
            raise UsageError(f"{path} already holds {self.state(marker)}",
                             hint="continue it with --resume, or choose another --out directory")

    def state(self, marker: dict[str, Any] | None) -> str:
        """What the directory holds, in words: for messages that tell the user where a run stands."""
        saved = ckpt.checkpoints(self.path / "checkpoints")
        steps = (marker or {}).get("settings", {}).get("steps")
        of = f" of {steps}" if isinstance(steps, int) else ""
        if (self.path / "model.safetensors").exists():
            return f"a finished {self.kind} run"
        if saved:
            return f"a {self.kind} run stopped at step {int(saved[-1].name[5:])}{of} (checkpoint {saved[-1].name})"
        return f"a {self.kind} run that stopped before its first checkpoint"

    def _refuse_foreign(self) -> None:
        names = sorted(p.name for p in self.path.iterdir())
        shown = ", ".join(names[:4]) + (" …" if len(names) > 4 else "")
        raise UsageError(f"--out {self.path} already holds files zoo did not write there ({shown})",
                         hint="choose a new or empty directory: zoo never overwrites your files")

    def marker(self) -> dict[str, Any] | None:
        """The run's ``run.json`` when the directory belongs to a run of this kind; None when there is none.
        A marker of another kind, or a damaged one, is an error."""
        path = self.path / MARKER
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CheckpointError(f"{path} is damaged ({exc})",
                                  hint="it records the run's settings: restore it, or start a new run elsewhere"
                                  ) from None
        if not isinstance(data, dict) or not isinstance(data.get("settings", {}), dict) or not _data_record(
                data.get("data")):
            raise CheckpointError(f"{path} is not a zoo run record",
                                  hint="restore it, or start a new run in another --out directory")
        if "run_version" not in data:  # written before zoo recorded kinds: a pretraining run
            data = {"run_version": 1, "kind": "pretraining", "settings": _legacy_settings(data), "data": None}
        if data.get("kind") != self.kind:
            raise UsageError(f"--out {self.path} holds a {data.get('kind')} run, not a {self.kind} run",
                             hint="choose another --out directory")
        return data

    # ------------------------------------------------------------------------------------ claiming it
    @contextlib.contextmanager
    def claimed(self) -> Iterator[RunDir]:
        """Create the directory if needed and hold ``run.lock`` for the block. When the block fails before
        :meth:`started` is called, everything the block created is removed again."""
        from filelock import FileLock, Timeout

        existed = self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _fail_on_fs_error(self.path, exc) from None
        if not existed:
            self._created.append(self.path)
        before = {p.name for p in self.path.iterdir()}
        lock = FileLock(str(self.path / LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            command = "pretrain" if self.kind == "pretraining" else "finetune"
            raise UsageError(f"another zoo {command} is running in {self.path}",
                             hint="wait for it to finish, or choose another --out directory") from None
        except OSError as exc:
            self._undo(before)
            raise _fail_on_fs_error(self.path, exc) from None
        self._lock = lock
        self._before: set[str] | None = before
        try:
            if not (self.path / MARKER).exists():  # the folder is zoo's from now on, even if this process is killed
                self._fresh = True
                try:
                    self.write_marker({}, None)  # a run that is starting: its settings come later
                except OSError as exc:
                    raise _fail_on_fs_error(self.path, exc) from None
            yield self
        except BaseException:
            failed_start = self._before is not None
            lock.release()
            if failed_start:
                self._undo(before)
                if LOCK not in before:
                    with contextlib.suppress(OSError):
                        (self.path / LOCK).unlink()
            raise
        lock.release()

    def started(self) -> None:
        """The run has begun for real (its first step): from now on a failure leaves its state in place."""
        self._before = None

    def _undo(self, before: set[str]) -> None:
        if self._created:
            rmtree(self.path)
            return
        for path in self.path.iterdir():
            if path.name not in before and path.name != LOCK:
                rmtree(path)

    def clean(self) -> None:
        """Remove what killed processes left half-written here, and the records of a run that stopped before its
        first checkpoint (there is nothing to continue)."""
        for sub in (self.path, self.path / "checkpoints", self.path / "data", self.path / "best"):
            for removed in remove_stale_staging(sub):
                log.info("removed %s, left by a process that no longer runs", removed)
        if not ckpt.checkpoints(self.path / "checkpoints") and (self.path / MARKER).exists():
            if not self._fresh:
                log.warning("%s: the run started there earlier stopped before its first checkpoint; starting afresh",
                            self.path)
            for name in (METRICS, "best"):
                rmtree(self.path / name)

    # ------------------------------------------------------------------------------------- the record
    def write_marker(self, settings: dict[str, Any], data: dict[str, Any] | None) -> None:
        write_json_atomic(self.path / MARKER, {"run_version": RUN_VERSION, "kind": self.kind, "settings": settings,
                                               "data": data}, mode=USER_MODE)

    # ---------------------------------------------------------------------------------------- metrics
    @contextlib.contextmanager
    def metrics(self) -> Iterator[IO[str]]:
        """``metrics.jsonl`` opened for appending; a full disk is a DiskSpaceError saying the run can resume."""
        with disk_full_is_an_error(f"appending to {self.path / METRICS}",
                                   hint="free some space and continue with --resume"):
            fd = os.open(self.path / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, USER_MODE)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                yield fh

    def keep_metrics_until(self, step: int) -> None:
        """Drop the records after ``step`` (steps trained again after a resume) and lines cut short by a crash."""
        path = self.path / METRICS
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [line for line, record in whole_records(lines)  # the test evaluation comes after the last step
                if record["step"] <= step and record.get("split") != "test"]
        with disk_full_is_an_error(f"rewriting {path}", hint="free some space and continue with --resume"):
            write_json_lines(path, kept)


def write_json_lines(path: Path, lines: list[str]) -> None:
    from zoo._fs import write_bytes_atomic

    write_bytes_atomic(path, "".join(line + "\n" for line in lines).encode("utf-8"), mode=USER_MODE)


def _data_record(data: Any) -> bool:
    """Whether a marker's ``data`` is what :func:`file_identity` records (or None: not recorded)."""
    if data is None:
        return True
    return isinstance(data, dict) and all(
        isinstance(files, list) and all(isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(
            f.get("size"), int) and isinstance(f.get("sha256"), str) for f in files) for files in data.values())


def _legacy_settings(data: dict[str, Any]) -> dict[str, Any]:
    """A run.json from before zoo 0.3 held the settings themselves; its ``adamw`` was upstream AdamWeightDecay."""
    settings = dict(data)
    if settings.get("optimizer") == "adamw":
        settings["optimizer"] = "adamweightdecay"
    return settings


# ------------------------------------------------------------------------------------------ zoo verify
def verify_state(path: Path) -> tuple[int, list[tuple[Path, str]]]:
    """``zoo verify`` of a run's own state: every checkpoint re-hashed against its ``state.json``, every tokenized
    corpus against its ``corpus.json`` (the full re-hash ``--resume`` leaves out). Returns how many files were
    hashed and what is damaged."""
    from zoo.errors import DataError
    from zoo.training.corpus import verify_corpus

    hashed, problems = 0, []
    for checkpoint in ckpt.checkpoints(path / "checkpoints"):
        try:
            ckpt.verify(ckpt.read(checkpoint))
            hashed += 2
        except CheckpointError as exc:
            problems.append((checkpoint, f"{exc.message}; {exc.hint}" if exc.hint else exc.message))
    data = path / "data"
    for corpus in sorted(p for p in data.iterdir() if p.is_dir() and p.name.startswith("corpus-")) \
            if data.is_dir() else ():
        try:
            hashed += verify_corpus(corpus)
        except DataError as exc:
            problems.append((corpus, f"{exc.message}; {exc.hint}" if exc.hint else exc.message))
    return hashed, problems


# ------------------------------------------------------------------------------------- data identity
def file_identity(paths: list[Path], what: str) -> list[dict[str, Any]]:
    """Name, size and sha256 of each input file, in order (what ``--resume`` compares)."""
    found = []
    for path in paths:
        try:
            digest, size = sha256_file(path)
        except FileNotFoundError:
            raise NotFoundError(f"{path}: {what} file does not exist") from None
        except OSError as exc:
            raise NotFoundError(f"{path}: {what} file cannot be read ({exc.strerror or exc})") from None
        found.append({"name": path.name, "size": size, "sha256": digest})
    return found


def data_changes(saved: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """What differs between the data a run was started with and the data given now (empty: the same)."""
    if saved is None:  # a legacy record: nothing to compare
        return []
    changes = []
    for key in sorted(set(saved) | set(now)):
        before, after = saved.get(key) or [], now.get(key) or []
        if [(f.get("size"), f.get("sha256")) for f in before] == [(f["size"], f["sha256"]) for f in after]:
            continue
        changes.append(f"{key}: {_files(before)} then, {_files(after)} now")
    return changes


def _files(files: list[dict[str, Any]]) -> str:
    if not files:
        return "none"
    return ", ".join(f"{f.get('name')} ({f.get('size')} bytes, sha256 {str(f.get('sha256'))[:12]}…)"
                     for f in files)


__all__ = ["MARKER", "METRICS", "USER_MODE", "RunDir", "data_changes", "file_identity", "verify_state",
           "write_json_lines"]
