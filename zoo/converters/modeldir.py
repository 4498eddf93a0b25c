"""The zoo model directory — the one format every zoo writer produces and every zoo reader accepts::

    model.safetensors   weights (canonical names; transformers names in an ``hf`` export)
    config.json         zoo's ModelConfig (transformers' config in an ``hf`` export)
    vocab.txt           one token per line, line number = id
    receipt.json        what it was made from and how, and every other file's sha256 and size

Writers (the TF and transformers converters, ``zoo export``, ``zoo init``, ``zoo pretrain``) go through
:func:`staged_output` (or :func:`staged_into`, for a training run's ``--out``): files are written into staging —
hashed while they are written — then the receipt, then they are fsynced and put in place by one rename
(:func:`zoo._fs.staged_directory`; into an existing empty directory, file by file with the receipt last:
:func:`zoo._fs.staged_files`), so a directory with a receipt is complete. A folder the user names is claimed
while it is written (a second writer is refused) and must be new or empty, and outside the cache
(:func:`check_output_dir`); it gets the modes ``cp`` would give it (the umask decides), one in the cache keeps
the cache's (:func:`zoo._fs.file_mode`). The writer records the stamps of what it wrote
(:func:`zoo.cache.record_folder`), and every use compares them (:func:`check_outputs`): a file changed since is
hashed again and checked against the receipt. Caching conversions is :mod:`zoo.weights`' business.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from zoo import cache
from zoo._fs import (
    HashingWriter,
    dir_mode,
    disk_full_is_an_error,
    file_mode,
    is_staging,
    staged_directory,
    staged_files,
)
from zoo._version import __version__
from zoo.config import InvalidConfig, ModelConfig
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.vocab import fit_rows, read_vocab

log = logging.getLogger("zoo.converters")

WEIGHTS, CONFIG, VOCAB, RECEIPT = "model.safetensors", "config.json", "vocab.txt", "receipt.json"
#: The marker of a training run's ``--out`` (:mod:`zoo.training.outdir`): its result is complete once the
#: receipt is there.
RUN_MARKER = "run.json"
_CHECKPOINT = re.compile(r"step-(\d{9})")
#: Bump when what a conversion writes changes: cached conversions are keyed by it.
CONVERTER_VERSION = 4
RECEIPT_VERSION = 2


class Staged:
    """A directory being written: every file added through it is hashed on the way in."""

    def __init__(self, path: Path, file_mode: int = 0o600) -> None:
        self.path = path
        self.file_mode = file_mode
        self.outputs: dict[str, dict[str, Any]] = {}
        #: extra top-level receipt fields the writer sets (what was converted, how)
        self.receipt: dict[str, Any] = {}

    @contextlib.contextmanager
    def open(self, name: str, role: str) -> Iterator[HashingWriter]:
        """A binary file to stream into; its sha256 and size are recorded when it is closed."""
        fd = os.open(self.path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        with os.fdopen(fd, "wb") as fh:
            writer = HashingWriter(fh)
            yield writer
        self.outputs[name] = {"path": name, "role": role, "size": writer.size, "sha256": writer.hexdigest()}

    def write_bytes(self, name: str, data: bytes, role: str) -> None:
        with self.open(name, role) as fh:
            fh.write(data)

    def write_text(self, name: str, text: str, role: str) -> None:
        self.write_bytes(name, text.encode("utf-8"), role)

    def write_json(self, name: str, data: Any, role: str) -> None:
        self.write_text(name, json.dumps(data, indent=2, ensure_ascii=False) + "\n", role)

    def record(self, name: str, role: str, sha256: str, size: int) -> None:
        """Record a file written through :meth:`raw_file` whose bytes the writer hashed as it wrote them."""
        self.outputs[name] = {"path": name, "role": role, "size": size, "sha256": sha256}

    def raw_file(self, name: str) -> IO[bytes]:
        """A plain file handle for writers that need to seek (call :meth:`record` with what they hashed)."""
        fd = os.open(self.path / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, self.file_mode)
        return os.fdopen(fd, "w+b")


def check_output_dir(out: str | os.PathLike[str]) -> Path:
    """The rule for a directory a user names for zoo to write (``zoo convert`` OUT, ``zoo export`` DIR, ``zoo init
    --out``): a new directory or an empty one, never inside zoo's cache (``zoo cache prune`` deletes what is
    there). Anything else is a :class:`UsageError` saying what the folder holds and what to do. Returns ``out``
    (``~`` expanded)."""
    out = Path(out).expanduser()
    home = cache.home().resolve()
    resolved = out.resolve()
    if resolved == home or resolved.is_relative_to(home):
        raise UsageError(f"{out} is {'inside ' if resolved != home else ''}zoo's cache ({home})",
                         hint="write it outside the cache: `zoo cache prune` may delete anything in it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: is a file, not a directory", hint="choose a new or empty directory")
    if out.is_dir() and not _holds_nothing(out):
        raise UsageError(f"{out}: already exists and is not empty: it holds {folder_state(out)}",
                         hint="remove it or choose another directory: zoo never writes over a folder's contents")
    return out


def _holds_nothing(path: Path) -> bool:
    """An empty directory (staging of a zoo process aside: :func:`zoo._fs.staged_directory` judges those)."""
    return all(is_staging(p) for p in path.iterdir())


def folder_state(path: Path) -> str:
    """What a folder holds, in words: a complete zoo directory (its receipt's kind), a training run's ``--out``
    (complete or not), a model folder, or files zoo did not write."""
    run = training_run(path)
    if run is not None:
        kind, step = run
        return f"an incomplete {kind} run ({_last_checkpoint(step)})"
    try:
        receipt = read_receipt(path)
    except CheckpointError:
        receipt = None
    if receipt is not None:
        return f"a zoo {receipt.get('kind') or 'output'} (its receipt.json says how it was made)"
    names = sorted(p.name for p in path.iterdir() if not is_staging(p))
    return "files zoo did not write (" + ", ".join(names[:4]) + (" …" if len(names) > 4 else "") + ")"


def training_run(path: Path) -> tuple[str, int | None] | None:
    """``(kind, last checkpoint step)`` when ``path`` is a training run's ``--out`` without its result (a run
    going on, stopped, or killed while writing it: the receipt comes last); None otherwise."""
    marker = path / RUN_MARKER
    if not marker.is_file() or (path / RECEIPT).is_file():
        return None
    try:
        kind = json.loads(marker.read_text(encoding="utf-8")).get("kind") or "pretraining"
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        kind = "training"
    folder = path / "checkpoints"
    steps = [int(m.group(1)) for p in (folder.iterdir() if folder.is_dir() else ())
             if (m := _CHECKPOINT.fullmatch(p.name))]
    return str(kind), max(steps, default=None)


def incomplete_run_error(path: Path, kind: str, step: int | None) -> NotFoundError:
    """What a training run's ``--out`` without its result is, and how to finish it."""
    command = "finetune" if kind in ("finetune", "finetuning") else "pretrain"
    if step is None:
        return NotFoundError(f"{path} is an incomplete {kind} run ({_last_checkpoint(step)}): it holds no model yet",
                             hint=f"run `zoo {command}` again with --out {path} (it starts afresh)")
    return NotFoundError(f"{path} is an incomplete {kind} run ({_last_checkpoint(step)}): it holds no model yet",
                         hint=f"continue it with `zoo {command} ... --out {path} --resume` (the same options); "
                              "the model is written when the run finishes")


def _last_checkpoint(step: int | None) -> str:
    return "no checkpoint yet" if step is None else f"last checkpoint step {step}"


def _final_receipt(staging: Staged, kind: str) -> dict[str, Any]:
    """The receipt of a finished staging directory: zoo's fields, the writer's, and every output's record."""
    return {"receipt_version": RECEIPT_VERSION, "kind": kind, "zoo_version": __version__,
            **staging.receipt, "outputs": [staging.outputs[k] for k in sorted(staging.outputs)]}


def _modes(out: Path) -> tuple[int, int]:
    """``(file mode, directory mode)`` for writing ``out``: the cache's inside the cache (private unless
    ``ZOO_CACHE_MODE=shared``); elsewhere 0666/0777, less the umask, as ``cp`` and every other tool writes a
    folder the user named (a shared model folder stays readable by the team)."""
    if out.is_relative_to(cache.home().resolve()):
        return file_mode(), dir_mode()
    return 0o666, 0o777


def _remember(out: Path, staging: Staged) -> None:
    """Record the stamps of a folder outside the cache just written, with the hashes taken while writing it."""
    if not out.is_relative_to(cache.home().resolve()):
        cache.record_folder(out, {name: cache.FileRecord(item["sha256"], item["size"])
                                  for name, item in staging.outputs.items() if name != RECEIPT})


@contextlib.contextmanager
def staged_output(out: Path, *, kind: str) -> Iterator[Staged]:
    """Write a zoo model directory at ``out`` atomically: yields a :class:`Staged`; when the block succeeds the
    receipt is written and everything is put in place at once. ``out`` must not exist, or be an empty directory —
    which is kept (it may be the working directory): the files are moved into it, the receipt last. ``out`` is
    claimed meanwhile: another process writing it at the same time is refused."""
    out = Path(out).resolve()  # "." or "run/.." has no usable name or parent
    files, dirs = _modes(out)
    if out.exists():
        writing = staged_files(out, last=RECEIPT, exclusive=True)
    else:
        writing = staged_directory(out, mode=dirs, exclusive=True)
    with disk_full_is_an_error(f"writing {out}", hint="free some space and run it again; nothing was kept"), \
            writing as staging:
        staged = Staged(staging, files)
        yield staged
        staged.write_json(RECEIPT, _final_receipt(staged, kind), "receipt")
    _remember(out, staged)


@contextlib.contextmanager
def staged_into(out: Path, *, kind: str) -> Iterator[Staged]:
    """Like :func:`staged_output`, for a directory that holds other things too (a training run's ``--out``, whose
    run holds its lock): the files are staged in a hidden subdirectory (a staging name, so a later run's cleanup
    removes what a killed one left), then each is renamed into ``out``, the receipt last — an older receipt is
    removed first, so ``out`` never looks complete with a mix of old and new files."""
    out = Path(out).resolve()  # "." or "run/.." has no usable name or parent
    files, dirs = _modes(out)
    with disk_full_is_an_error(f"writing {out}", hint="free some space and run it again"), \
            staged_files(out, last=RECEIPT, mode=dirs) as staging:
        staged = Staged(staging, files)
        yield staged
        staged.write_json(RECEIPT, _final_receipt(staged, kind), "receipt")
    _remember(out, staged)


# --------------------------------------------------------------------------------------------- reading
def read_receipt(directory: Path) -> dict[str, Any] | None:
    """The directory's receipt, or None when it has none (a bare transformers folder, an older format)."""
    path = directory / RECEIPT
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc})",
                              hint="the directory is damaged; convert or export it again") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def output_records(receipt: Mapping[str, Any]) -> dict[str, cache.FileRecord]:
    """``{file: FileRecord}`` for every output a receipt lists."""
    records = {}
    for item in receipt.get("outputs") or ():
        try:
            records[str(item["path"])] = cache.FileRecord(str(item["sha256"]), int(item["size"]))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError("a receipt lists an output without path, sha256 and size") from None
    return records


def is_converted_dir(path: Path) -> bool:
    return (path / WEIGHTS).is_file() and (path / CONFIG).is_file()


#: Outputs that are about a model, not part of it: a load does not check them (``zoo verify`` does).
DESCRIPTIVE_ROLES = frozenset({"model card"})


def check_outputs(directory: Path, *, receipt: Mapping[str, Any] | None = None, rehash: bool = False,
                  on_file: Callable[[Path], None] | None = None) -> list[tuple[Path, str]] | None:
    """Check a folder outside the cache against its receipt: ``(path, what is wrong)`` for every output that is
    missing or whose bytes are not those the receipt records; None when it has no receipt (a plain transformers
    or TF folder). A file whose stamp (size, mtime, ctime, inode) is the one recorded when it last matched costs
    a ``stat``; the others are hashed (all of them, with ``rehash``: ``zoo verify``; a load leaves out the model
    card, which a user may well edit). ``receipt``: the folder's, when the caller has read it already."""
    receipt = receipt if receipt is not None else read_receipt(directory)
    if receipt is None or receipt.get("receipt_version") != RECEIPT_VERSION:
        return None
    records = output_records(receipt)
    if not rehash:
        roles = {str(item.get("path")): item.get("role") for item in receipt.get("outputs") or ()}
        records = {name: r for name, r in records.items() if roles.get(name) not in DESCRIPTIVE_ROLES}
    return cache.check_folder(directory, records, rehash=rehash, on_file=on_file)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a missing file or anything but an object is a clear error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_config(directory: Path) -> tuple[ModelConfig, str]:
    """The directory's config and its layout: ``"zoo"`` (canonical names) or ``"transformers"`` (an hf export).
    Every value is checked (:class:`~zoo.config.ModelConfig`); a bad one is a CheckpointError naming file and key."""
    path = directory / CONFIG
    data = read_json(path)
    transformers = "model_type" in data and "architecture" not in data
    try:
        if transformers:
            from zoo.converters import hf_names

            return hf_names.config_from_transformers(data), "transformers"
        return ModelConfig.from_dict(data), "zoo"
    except InvalidConfig as exc:
        raise CheckpointError(exc.message(path), hint=_CONFIG_HINT) from None


_CONFIG_HINT = ("config.json describes the weights next to it: restore it as it was written (by zoo convert, "
                "zoo export, zoo pretrain or transformers)")


def read_directory_vocab(directory: Path, config: ModelConfig) -> list[str]:
    """The tokens of the directory's vocab.txt: one line per embedding row, line = id, as every writer of the
    directory writes it; any other line count is a CheckpointError (:func:`zoo.vocab.fit_rows`)."""
    path = directory / VOCAB
    if not path.is_file():
        raise missing_file(directory, VOCAB)
    return fit_rows(read_vocab(path), config.vocab_size, path).tokens


def tokenizer_options(directory: Path, *, receipt: Mapping[str, Any] | None = None) -> tuple[bool, bool | None]:
    """Casing for a directory without a manifest: ``tokenizer_config.json`` (an hf export) or the receipt's
    (``zoo convert``), else lower-case (Chinese). ``receipt``: the directory's receipt when the caller has read it
    already (``None``: read here, if there is one)."""
    for name, keys in (("tokenizer_config.json", ("do_lower_case", "strip_accents")),
                       (RECEIPT, ("lowercase", "strip_accents"))):
        data: Any
        if name == RECEIPT and receipt is not None:
            data = receipt
        else:
            path = directory / name
            if not path.is_file():
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
        if name == RECEIPT:
            data = data.get("tokenizer", {}) if isinstance(data, Mapping) else {}
        if isinstance(data, Mapping) and keys[0] in data:
            return bool(data[keys[0]]), data.get(keys[1])
    return True, None


def missing_file(directory: Path, name: str) -> NotFoundError:
    return NotFoundError(f"{directory / name} does not exist",
                         hint=f"a converted directory holds {WEIGHTS}, {CONFIG}, {VOCAB} and {RECEIPT}")


__all__ = [
    "CONFIG",
    "CONVERTER_VERSION",
    "RECEIPT",
    "RECEIPT_VERSION",
    "RUN_MARKER",
    "VOCAB",
    "WEIGHTS",
    "Staged",
    "check_output_dir",
    "check_outputs",
    "folder_state",
    "incomplete_run_error",
    "is_converted_dir",
    "output_records",
    "read_config",
    "read_directory_vocab",
    "read_json",
    "read_receipt",
    "staged_into",
    "staged_output",
    "tokenizer_options",
    "training_run",
]
