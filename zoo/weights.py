"""Whatever the user names → a directory of weights ready to load: the on-demand pipeline.

:func:`prepare` accepts

- a registry name or alias (a ``str`` without a path separator), or a :class:`~zoo.registry.Manifest`: the
  resolver pulls (or finds) the verified snapshot, and its TF checkpoint or transformers weights are converted
  once into the cache, keyed by the source's sha256 and the converter version;
- a path — a :class:`pathlib.Path`, or a string that looks like one (it contains ``/``, starts with ``.`` or
  ``~``, or is absolute): a converted directory (``zoo convert``, ``zoo pretrain`` output) is used as is; an
  upstream TF release directory or a transformers folder (``zoo export``, ``save_pretrained``) is converted
  once into the cache, keyed by its path and its files' stamps (size, mtime, ctime, inode). A folder with a
  receipt (anything zoo wrote) is first checked against it (:func:`zoo.converters.layout.check_outputs`):
  a file that changed since it was written is a :class:`~zoo.errors.CheckpointError`, never a silent load.

The rule is deliberate: a folder ``albert_base_zh/`` in the current directory (what unzipping a release gives)
never shadows the registry name; write ``./albert_base_zh`` to mean the folder.

A cached snapshot or conversion whose bytes rotted since they were verified is detected (stamps on every use,
CRC32C while converting), rebuilt from what is still intact — the verified download, then the network — and the
work continues, with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from zoo import cache
from zoo.cache.records import rehash_files
from zoo.converters.layout import (
    CONVERTER_VERSION,
    check_outputs,
    convert_once,
    is_converted_dir,
    output_records,
    read_receipt,
    rebuild_if_damaged,
    tokenizer_options,
)
from zoo.converters.transformers import is_transformers_dir
from zoo.errors import CheckpointError, IntegrityError, NotFoundError, UsageError, ZooError
from zoo.progress import ProgressCallback, ProgressEvent, waiting
from zoo.registry import Manifest, get_manifest
from zoo.resolver import Pulled, resolve

log = logging.getLogger("zoo.weights")

Model = str | os.PathLike[str] | Manifest


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A directory of weights ready to load, and where it came from."""

    path: Path
    manifest: Manifest | None = None  # when named through the registry
    pulled: Pulled | None = None  # the verified snapshot it was converted from
    #: the directory is a conversion in the cache (so it can be rebuilt when damaged)
    cached: bool = False
    #: the release directory a cached conversion was made from (paths only)
    release: Path | None = None

    @property
    def name(self) -> str:
        """What to call it: the manifest's name, else the name of the directory the user gave."""
        return self.manifest.name if self.manifest is not None else (self.release or self.path).name

    def tokenizer_options(self, receipt: dict[str, object] | None = None) -> tuple[bool, bool | None]:
        """``(lowercase, strip_accents)`` for its tokenizer: the manifest's, else the directory's
        (:func:`zoo.converters.layout.tokenizer_options`; ``receipt``: the directory's, when already read)."""
        if self.manifest is not None:
            return self.manifest.tokenizer.lowercase, self.manifest.tokenizer.strip_accents
        return tokenizer_options(self.path, receipt=receipt)


def looks_like_path(text: str) -> bool:
    """Whether a string names a path rather than a registry entry (see the module docstring)."""
    return "/" in text or os.sep in text or text.startswith((".", "~")) or os.path.isabs(text)


def target_of(model: Model, manifests: Sequence[str | os.PathLike[str]] = ()) -> Manifest | Path:
    """A :class:`Manifest` for registry names, a :class:`Path` for paths (the rule above)."""
    if isinstance(model, Manifest):
        return model
    if isinstance(model, os.PathLike):
        return Path(model).expanduser()
    if not isinstance(model, str) or not model.strip():
        raise UsageError(f"expected a registry name, a path or a Manifest, got {model!r}")
    if looks_like_path(model):
        return Path(model).expanduser()
    try:
        return get_manifest(model, manifests=manifests)
    except NotFoundError as exc:
        if Path(model).is_dir():
            raise NotFoundError(exc.message, hint=f"to use the directory {model}/ here, write ./{model}") from None
        raise


def prepare(model: Model, *, source: int | None = None, offline: bool | None = None,
            manifests: Sequence[str | os.PathLike[str]] = (), progress: ProgressCallback | None = None) -> Prepared:
    """The converted directory behind ``model`` (see the module docstring), converting on first use."""
    emit = progress or (lambda event: None)
    target = target_of(model, manifests)
    if isinstance(target, Path):
        if source is not None:
            raise UsageError("--source applies to registry names, not to paths")
        return _from_path(target, emit)
    return _from_registry(target, source=source, offline=offline, emit=emit)


def after_load_failure(prepared: Prepared, error: ZooError) -> bool:
    """A load of ``prepared`` failed with ``error``: when it is a cached conversion whose bytes are damaged,
    invalidate it (the caller prepares again, which rebuilds it) and return True."""
    if not prepared.cached or not isinstance(error, (CheckpointError, IntegrityError, NotFoundError)):
        return False
    if cache.read_conversion(prepared.path) is None:  # removed meanwhile (`zoo cache prune` elsewhere)
        log.warning("the cached conversion %s was removed while it was being loaded; making it again", prepared.path)
        return True
    return rebuild_if_damaged(prepared.path)


# ------------------------------------------------------------------------------------------------ paths
def _from_path(path: Path, emit: ProgressCallback) -> Prepared:
    if not path.exists():
        raise NotFoundError(f"{path}: no such directory",
                            hint="check the path; registry names are written without '/' (`zoo list`)")
    if not path.is_dir():
        raise NotFoundError(f"{path} is not a directory",
                            hint="pass a directory made by zoo convert/export/pretrain, or a TF release directory")
    verified = _check_receipt(path)
    if is_converted_dir(path) and not is_transformers_dir(path):
        return Prepared(path.resolve())
    return Prepared(convert_release_dir(path, emit, verified), cached=True, release=path.resolve())


def _check_receipt(path: Path) -> dict[str, str]:
    """Check a folder against its receipt, if it has one; ``{file: sha256}`` of what it verified. A file that
    changed since zoo wrote it is a :class:`CheckpointError` naming it and what to do."""
    receipt = read_receipt(path)
    problems = check_outputs(path, receipt=receipt)
    if problems:
        raise CheckpointError(f"{path} does not match its receipt: "
                              + "; ".join(f"{file} {what}" for file, what in problems),
                              hint="its files changed after zoo wrote them: restore them, or convert, export or train "
                                   f"it again (its receipt says how it was made); `zoo verify {path}` re-hashes "
                                   "every file")
    if receipt is None or problems is None:  # no receipt (of this version): nothing verified
        return {}
    return {name: r.sha256 for name, r in output_records(receipt).items()}


def convert_release_dir(directory: Path, emit: ProgressCallback | None = None,
                        known_sha256: Mapping[str, str] | None = None) -> Path:
    """Convert an upstream TF release directory or a transformers folder into the cache once; later calls reuse
    the result. ``known_sha256``: digests of its files already checked (its receipt), not hashed again."""
    from zoo.converters.transformers import convert_transformers_dir

    directory = directory.resolve()
    stamp = hashlib.sha256(str(directory).encode())
    for f in sorted(p for p in directory.iterdir() if p.is_file()):
        st = f.stat()
        stamp.update(f"\0{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}".encode())
    target = cache.converted_path(stamp.hexdigest(), CONVERTER_VERSION)
    if is_transformers_dir(directory):
        def make(out: Path) -> object:
            if emit is not None:
                emit(ProgressEvent("note", directory.name, message="converting the transformers folder"))
            return convert_transformers_dir(directory, out, known_sha256=known_sha256)
    else:
        from zoo.converters.tf import convert

        def make(out: Path) -> object:
            return convert(directory, out, progress=emit)
    return convert_once(target, make, origin=str(directory), source=str(directory),
                        on_wait=waiting(emit, directory.name))


# --------------------------------------------------------------------------------------------- registry
def _from_registry(manifest: Manifest, *, source: int | None, offline: bool | None,
                   emit: ProgressCallback) -> Prepared:
    pulled = resolve(manifest, source=source, offline=offline, progress=emit)
    try:
        path = _convert_held(pulled, emit, offline)
    except (IntegrityError, CheckpointError) as exc:
        if not _snapshot_rotted(pulled):
            raise _published_damage(exc, pulled) from None
        log.warning("%s: the cached download was damaged after it was verified (%s); rebuilding it",
                    manifest.name, exc.message)
        pulled = resolve(manifest, source=pulled.source.index, offline=offline, progress=emit)
        path = _convert_held(pulled, emit, offline)
    return Prepared(path, manifest, pulled, cached=True)


class _SnapshotGone(Exception):
    """The snapshot a conversion was about to read was removed (``zoo cache prune`` in another process)."""


def _convert_held(pulled: Pulled, emit: ProgressCallback | None, offline: bool | None) -> Path:
    """:func:`convert_snapshot`, pulling the snapshot again if it vanished before its lock was taken."""
    try:
        return convert_snapshot(pulled, emit)
    except _SnapshotGone:
        log.info("%s: the snapshot was removed before it could be converted; pulling it again", pulled.manifest.name)
        again = resolve(pulled.manifest, source=pulled.source.index, offline=offline, progress=emit)
        return convert_snapshot(again, emit)


def convert_snapshot(pulled: Pulled, emit: ProgressCallback | None = None) -> Path:
    """The converted directory of a verified snapshot, made once: a TF checkpoint or transformers weights.

    While a conversion is made the snapshot's lock is held, so ``zoo cache prune`` in another process skips the
    snapshot being read (and waits for nothing: it just leaves it)."""
    root, src, manifest = pulled.path, pulled.source, pulled.manifest
    target = cache.converted_path(pulled.sha256, CONVERTER_VERSION)
    if src.format == "tf-checkpoint":
        from zoo.converters.tf import Release, convert_release

        def make(out: Path) -> object:
            weights, vocab = src.find_checkpoint(root), src.find_vocab(root)
            return convert_release(Release(weights, None, vocab), out, scheme=str(src.scheme), config=manifest.config,
                                   source_sha256=pulled.sha256, progress=emit, label=manifest.name,
                                   # verified when the snapshot was made (stamps checked on use): not hashed again
                                   known_sha256={root / rel: r.sha256 for rel, r in pulled.snapshot.files.items()})
    else:
        from zoo.converters.transformers import convert_transformers

        def make(out: Path) -> object:
            weights, vocab = src.find_checkpoint(root), src.find_vocab(root)
            if emit is not None:
                emit(ProgressEvent("note", manifest.name, message=f"converting {weights.name}"))
            return convert_transformers(
                weights, vocab, out, config=manifest.config, fmt=src.format, source=src.label,
                source_sha256=pulled.sha256, inputs={rel: r.sha256 for rel, r in pulled.snapshot.files.items()},
                lowercase=manifest.tokenizer.lowercase, strip_accents=manifest.tokenizer.strip_accents)

    key = pulled.snapshot.key

    @contextlib.contextmanager
    def snapshot_in_use() -> Iterator[None]:
        with cache.lock(cache.snapshot_lock(manifest.name, key), on_wait=waiting(emit, manifest.name)):
            if cache.read_snapshot(manifest.name, key) is None:
                raise _SnapshotGone()
            yield

    return convert_once(target, make, origin=manifest.name, source=src.label,
                        on_wait=waiting(emit, manifest.name), hold=snapshot_in_use)


def _snapshot_rotted(pulled: Pulled) -> bool:
    """Re-hash the snapshot a conversion failed on; when its bytes changed since they were verified, invalidate
    it (and quarantine a damaged download) so the next resolve rebuilds it."""
    snap = pulled.snapshot
    problems, _ = rehash_files(snap.path, snap.files)
    if not problems:
        return False
    cache.invalidate(snap)
    if pulled.source.kind == "url":  # an hf source has no download blob (its archive is always "none")
        cache.verified_blob(snap.sha256)
    return True


def _published_damage(exc: ZooError, pulled: Pulled) -> ZooError:
    """The snapshot is exactly what was verified, so the published files themselves are bad: say so."""
    hint = (f"the files of {pulled.source.label} match their verified hashes, so the published checkpoint itself "
            "is damaged or does not match the manifest; try another source (--source N) or report it")
    return type(exc)(exc.message, hint=hint)


__all__ = ["Model", "Prepared", "after_load_failure", "convert_release_dir", "convert_snapshot", "looks_like_path",
           "prepare", "target_of"]
