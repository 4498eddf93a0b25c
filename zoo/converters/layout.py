"""The converted directory — the one format every zoo writer produces and every zoo reader accepts::

    model.safetensors   weights (canonical names; transformers names in an ``hf`` export)
    config.json         zoo's ModelConfig (transformers' config in an ``hf`` export)
    vocab.txt           one token per line, line number = id
    receipt.json        what it was made from and how, and every other file's sha256 and size

Writers (the TF and transformers converters, ``zoo export``, ``zoo pretrain``) go through :func:`staged_output`:
files are written into a staging sibling — hashed while they are written — then the receipt, then one rename puts
the directory in place, so a directory with a receipt is complete. A folder the user named gets the modes ``cp``
would give it (the umask decides); one in the cache keeps the cache's (:func:`zoo._fs.file_mode`). The writer
records the stamps of what it wrote (:func:`zoo.cache.record_folder`), and every load compares them
(:func:`check_outputs`): a file changed since is hashed again and checked against the receipt.
:func:`convert_once` keeps conversions in the cache: made once under a lock, checked by stamp on every use,
rebuilt (with a warning) when damaged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from zoo import cache
from zoo._fs import HashingWriter, dir_mode, disk_full_is_an_error, file_mode, rmtree, sha256_file
from zoo._version import __version__
from zoo.config import InvalidConfig, ModelConfig
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.vocab import fit_rows, read_vocab

log = logging.getLogger("zoo.converters")

WEIGHTS, CONFIG, VOCAB, RECEIPT = "model.safetensors", "config.json", "vocab.txt", "receipt.json"
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


def require_new_dir(out: Path) -> None:
    """``out`` must not exist, or be an empty directory: anything else is a :class:`UsageError`."""
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UsageError(f"{out}: already exists and is not empty", hint="remove it or choose another directory")


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


def _staging_dir(parent: Path, prefix: str, mode: int) -> Path:
    """A new directory in ``parent`` (``tempfile.mkdtemp`` would make it 0700 whatever the umask)."""
    while True:
        path = parent / f"{prefix}{uuid.uuid4().hex[:8]}"
        try:
            path.mkdir(mode)
            return path
        except FileExistsError:
            continue


def _remember(out: Path, staging: Staged) -> None:
    """Record the stamps of a folder outside the cache just written, with the hashes taken while writing it."""
    if not out.is_relative_to(cache.home().resolve()):
        cache.record_folder(out, {name: cache.FileRecord(item["sha256"], item["size"])
                                  for name, item in staging.outputs.items() if name != RECEIPT})


@contextlib.contextmanager
def staged_output(out: Path, *, kind: str) -> Iterator[Staged]:
    """Write a directory atomically: yields a :class:`Staged` in a temporary sibling of ``out``; when the block
    succeeds the receipt is written and the sibling renamed to ``out``. ``out`` must not exist, or be an empty
    directory — which is kept (it may be the working directory): the files are moved into it, the receipt last."""
    out = Path(out).resolve()  # "." or "run/.." has no usable name or parent
    if out.exists():
        require_new_dir(out)
        with staged_into(out, kind=kind) as staged:
            yield staged
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    files, dirs = _modes(out)
    staging = Staged(_staging_dir(out.parent, f".{out.name}.tmp-", dirs), files)
    try:
        with disk_full_is_an_error(f"writing {out}", hint="free some space and run it again; nothing was kept"):
            yield staging
            staging.write_json(RECEIPT, _final_receipt(staging, kind), "receipt")
            os.rename(staging.path, out)
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    _remember(out, staging)


@contextlib.contextmanager
def staged_into(out: Path, *, kind: str) -> Iterator[Staged]:
    """Like :func:`staged_output`, for a directory that holds other things too (a training run's ``--out``):
    the files are staged in a hidden subdirectory, then each is renamed into ``out``, the receipt last — an
    older receipt is removed first, so ``out`` never looks complete with a mix of old and new files."""
    out = Path(out).resolve()  # "." or "run/.." has no usable name or parent
    files, dirs = _modes(out)
    out.mkdir(dirs, parents=True, exist_ok=True)
    staging = Staged(_staging_dir(out, ".final.tmp-", 0o700), files)
    try:
        with disk_full_is_an_error(f"writing {out}", hint="free some space and run it again"):
            yield staging
            staging.write_json(RECEIPT, _final_receipt(staging, kind), "receipt")
            (out / RECEIPT).unlink(missing_ok=True)
            for name in sorted(staging.outputs):
                if name != RECEIPT:
                    os.replace(staging.path / name, out / name)
            os.replace(staging.path / RECEIPT, out / RECEIPT)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
    _remember(out, staging)


# --------------------------------------------------------------------------------------------- reading
def read_receipt(directory: Path) -> dict[str, Any] | None:
    """The directory's receipt, or None when it has none (a bare transformers folder, an older layout)."""
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


# ------------------------------------------------------------------------------------ cached conversions
def convert_once(target: Path, make: Callable[[Path], object], *, origin: str, source: str,
                 on_wait: Callable[[str], None] | None = None,
                 hold: Callable[[], contextlib.AbstractContextManager[object]] | None = None) -> Path:
    """The conversion at ``target`` in the cache, made by ``make(out)`` once.

    A complete conversion whose files still match their stamps is reused without hashing. One that is damaged
    or incomplete is rebuilt, with a warning. ``make`` writes a directory at ``out`` through
    :func:`staged_output`; concurrent callers wait on the lock and reuse the result. ``hold``, when given, is
    entered (before the conversion's own lock) for as long as a conversion is made: the caller locks what
    ``make`` reads, such as the cached snapshot, so ``zoo cache prune`` leaves it alone meanwhile.
    """
    if _usable(target):
        return target
    with hold() if hold is not None else contextlib.nullcontext(), \
            cache.lock(cache.conversion_lock(target), on_wait=on_wait):
        if _usable(target):  # another process made it while we waited
            return target
        if target.exists():
            rmtree(target)
        staging = cache.staging_dir()
        try:
            out = staging / "out"
            log.info("converting %s once into %s", source, target)
            make(out)
            receipt = read_receipt(out)
            if receipt is None:
                raise AssertionError(f"{out}: a converter wrote no receipt")  # a bug, not a user error
            files = output_records(receipt)
            files[RECEIPT] = cache.FileRecord(*sha256_file(out / RECEIPT))
            cache.commit_conversion(out, target, origin=origin, source=source, files=files)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _usable(target: Path) -> bool:
    conv = cache.read_conversion(target)
    if conv is None:
        if target.exists():
            log.warning("%s is an incomplete conversion; converting again", target)
        return False
    check = cache.check_conversion(conv)
    if check.problem is not None:
        log.warning("the cached conversion is damaged (%s); rebuilding it from the cached download", check.problem)
        cache.invalidate_conversion(conv)
        return False
    cache.touch_conversion(conv)
    return True


def rebuild_if_damaged(target: Path) -> bool:
    """After a load failed on a cached conversion: re-hash it, and when its bytes are not what was written,
    invalidate it so the next :func:`convert_once` rebuilds it. Returns whether it was damaged."""
    conv = cache.read_conversion(target)
    if conv is None:
        return False
    from zoo.cache.records import rehash_files

    problems, _ = rehash_files(conv.path, conv.files)
    if problems:
        log.warning("the cached conversion %s is damaged (%s); rebuilding it from the cached download",
                    target, "; ".join(f"{p}: {what}" for p, what in problems))
        cache.invalidate_conversion(conv)
        return True
    return False


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
    "VOCAB",
    "WEIGHTS",
    "Staged",
    "check_outputs",
    "convert_once",
    "is_converted_dir",
    "output_records",
    "read_config",
    "read_directory_vocab",
    "read_json",
    "read_receipt",
    "rebuild_if_damaged",
    "require_new_dir",
    "staged_into",
    "staged_output",
    "tokenizer_options",
]
