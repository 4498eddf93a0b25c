"""Whatever the user names → a directory of weights ready to load: the on-demand pipeline.

:func:`prepare` accepts

- a registry name or alias (a ``str`` without a path separator), or a :class:`~zoo.registry.Manifest`: the
  resolver pulls (or finds) the verified snapshot, and its TF checkpoint or transformers weights are converted
  once into the cache, keyed by the source's sha256 and the converter version;
- a path — a :class:`pathlib.Path`, or a string that looks like one (it contains ``/``, starts with ``.`` or
  ``~``, or is absolute): a converted directory (``zoo convert``, ``zoo pretrain`` output) is used as is; an
  upstream TF release directory or a transformers folder (``zoo export``, ``save_pretrained``) is converted
  once into the cache, keyed by its path and its files' stamps (size, mtime, ctime, inode). A folder with a
  receipt (anything zoo wrote) is first checked against it (:func:`zoo.converters.modeldir.check_outputs`):
  a file that changed since it was written is a :class:`~zoo.errors.CheckpointError`, never a silent load.

The rule is deliberate: a folder ``albert_base_zh/`` in the current directory (what unzipping a release gives)
never shadows the registry name; write ``./albert_base_zh`` to mean the folder.

The load path reads top to bottom in :func:`use`: the name becomes a manifest or a path (:func:`target_of`); a
manifest is resolved to a verified snapshot (:func:`zoo.resolver.resolve`), a folder is checked against its
receipt; a snapshot, a TF release or a transformers folder is converted once into the cache
(:func:`cached_conversion`, which owns the conversion cache: a lock, stamps checked on every use, a damaged entry
made again); then the caller's work runs on the directory. When a cached entry behind it turns out damaged or gone
on the way — a snapshot failing its CRC32C while it is converted, a conversion failing to load, an entry another
process pruned meanwhile — :func:`repair` re-hashes it and invalidates what changed, and the path runs once more:
the snapshot is rebuilt from what is still intact (the verified download, then the network), the conversion from
the snapshot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from zoo import cache
from zoo._fs import rmtree, sha256_file
from zoo.converters.modeldir import (
    CONVERTER_VERSION,
    RECEIPT,
    check_outputs,
    incomplete_run_error,
    is_converted_dir,
    output_records,
    read_receipt,
    tokenizer_options,
    training_run,
)
from zoo.converters.transformers import is_transformers_dir
from zoo.errors import CheckpointError, IntegrityError, NotFoundError, UsageError, ZooError
from zoo.progress import ProgressCallback, ProgressEvent, waiting
from zoo.registry import Manifest, get_manifest
from zoo.resolver import Pulled, resolve

log = logging.getLogger("zoo.weights")

Model = str | os.PathLike[str] | Manifest
T = TypeVar("T")


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

    def tokenizer_options(self, receipt: Mapping[str, object] | None = None) -> tuple[bool, bool | None]:
        """``(lowercase, strip_accents)`` for its tokenizer: the manifest's, else the directory's
        (:func:`zoo.converters.modeldir.tokenizer_options`; ``receipt``: the directory's, when already read)."""
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
    return use(model, lambda prepared: prepared, source=source, offline=offline, manifests=manifests,
               progress=progress)


def use(model: Model, work: Callable[[Prepared], T], *, source: int | None = None, offline: bool | None = None,
        manifests: Sequence[str | os.PathLike[str]] = (), progress: ProgressCallback | None = None) -> T:
    """``work(prepared)`` on the directory behind ``model``: the load path of the module docstring, with its one
    repair — a cached entry found damaged or gone on the way is repaired (:func:`repair`) and the path runs once
    more."""
    emit = progress or (lambda event: None)
    target = target_of(model, manifests)
    if isinstance(target, Path) and source is not None:
        raise UsageError("--source applies to registry names, not to paths")
    for last in (False, True):
        try:
            prepared = _from_path(target, emit) if isinstance(target, Path) else \
                _from_registry(target, source=source, offline=offline, emit=emit)
            return _work(prepared, work)
        except _Damaged as damage:
            if last or not repair(damage.entry, damage.error):
                raise damage.final() from None
    raise AssertionError("unreachable")  # pragma: no cover


class _Damaged(Exception):
    """A cached entry behind the directory turned out damaged or gone (``error`` None) while it was used."""

    def __init__(self, entry: Pulled | Prepared, error: ZooError | None) -> None:
        super().__init__(entry)
        self.entry, self.error = entry, error

    def final(self) -> ZooError:
        """What to report when repairing cannot help."""
        if isinstance(self.entry, Pulled):
            if self.error is None:
                return NotFoundError(f"{self.entry.manifest.name}: the cached snapshot was removed while it was "
                                     "being converted", hint="another zoo process pruned the cache; run it again")
            return _published_damage(self.error, self.entry)
        assert self.error is not None  # a conversion is reported gone by the error of its use
        return self.error


def _work(prepared: Prepared, work: Callable[[Prepared], T]) -> T:
    try:
        return work(prepared)
    except (CheckpointError, IntegrityError, NotFoundError) as exc:
        if prepared.cached:  # the conversion may be what is damaged: repair() re-hashes it
            raise _Damaged(prepared, exc) from exc
        raise


def repair(entry: Pulled | Prepared, error: ZooError | None) -> bool:
    """The one repair of the load path: ``entry`` — a snapshot a conversion read, or a cached conversion — failed
    with ``error`` (None: it was removed meanwhile). Re-hash it; when its bytes changed since they were verified or
    written, invalidate it (and quarantine a damaged download), so that running the path again rebuilds it from what
    is intact. Returns whether running the path again can help."""
    if isinstance(entry, Pulled):
        name = entry.manifest.name
        if error is None:
            log.info("%s: the snapshot was removed before it could be converted; pulling it again", name)
            return True
        if not entry.snapshot.rehash():
            return False  # the snapshot is what was verified: the published files themselves are bad
        cache.recheck_blob(entry.snapshot.sha256)  # a damaged download is quarantined: the network has it
        log.warning("%s: the cached download was damaged after it was verified (%s); rebuilding it", name,
                    error.message)
        return True
    conv = cache.read_conversion(entry.path)
    if conv is None:  # removed meanwhile (`zoo cache prune` elsewhere)
        log.warning("the cached conversion %s was removed while it was being loaded; making it again", entry.path)
        return True
    problems = conv.rehash()
    if problems:
        log.warning("the cached conversion %s is damaged (%s); rebuilding it from the cached download", entry.path,
                    "; ".join(f"{p}: {what}" for p, what in problems))
    return bool(problems)


# ------------------------------------------------------------------------------------------------ paths
def _from_path(path: Path, emit: ProgressCallback) -> Prepared:
    if not path.exists():
        raise NotFoundError(f"{path}: no such directory",
                            hint="check the path; registry names are written without '/' (`zoo list`)")
    if not path.is_dir():
        raise NotFoundError(f"{path} is not a directory",
                            hint="pass a directory made by zoo convert/export/pretrain, or a TF release directory")
    run = training_run(path)
    if run is not None:
        raise incomplete_run_error(path, *run)
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
        st = cache.FolderStamp.of(f)  # the stamp its receipt checks use: an edit that keeps the mtime moves the ctime
        stamp.update(f"\0{f.name}\0{st.size}\0{st.mtime_ns}\0{st.ctime_ns}\0{st.inode}".encode())
    target = cache.converted_path(stamp.hexdigest(), CONVERTER_VERSION)
    if is_transformers_dir(directory):
        def make(out: Path) -> object:
            if emit is not None:
                emit(ProgressEvent("note", directory.name, message="converting the transformers folder"))
            return convert_transformers_dir(directory, out, known_sha256=known_sha256)
    else:
        from zoo.converters.tf import convert_release, find_release

        def make(out: Path) -> object:
            return convert_release(find_release(directory), out, progress=emit)
    return cached_conversion(target, make, origin=str(directory), source=str(directory),
                             on_wait=waiting(emit, directory.name))


# --------------------------------------------------------------------------------------------- registry
def _from_registry(manifest: Manifest, *, source: int | None, offline: bool | None,
                   emit: ProgressCallback) -> Prepared:
    pulled = resolve(manifest, source=source, offline=offline, progress=emit)
    return Prepared(_convert_snapshot(pulled, emit), manifest, pulled, cached=True)


def _convert_snapshot(pulled: Pulled, emit: ProgressCallback | None = None) -> Path:
    """The converted directory of a verified snapshot, made once: a TF checkpoint or transformers weights.

    While a conversion is made the snapshot's lock is held, so ``zoo cache prune`` in another process skips the
    snapshot being read (and waits for nothing: it just leaves it). A conversion that fails on the snapshot's bytes,
    or a snapshot removed before its lock was taken, is a :class:`_Damaged` for :func:`repair`."""
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
                raise _Damaged(pulled, None)  # removed meanwhile (`zoo cache prune` in another process)
            yield

    try:
        return cached_conversion(target, make, origin=manifest.name, source=src.label,
                                 on_wait=waiting(emit, manifest.name), hold=snapshot_in_use)
    except (IntegrityError, CheckpointError) as exc:
        raise _Damaged(pulled, exc) from exc


# ------------------------------------------------------------------------------------ cached conversions
def cached_conversion(target: Path, make: Callable[[Path], object], *, origin: str, source: str,
                      on_wait: Callable[[str], None] | None = None,
                      hold: Callable[[], contextlib.AbstractContextManager[object]] | None = None) -> Path:
    """The conversion at ``target`` in the cache, made by ``make(out)`` once.

    A complete conversion whose files still match their stamps is reused without hashing. One that is damaged
    or incomplete is made again, with a warning. ``make`` writes a zoo model directory at ``out``
    (:func:`zoo.converters.modeldir.staged_output`); concurrent callers wait on the lock and reuse the result.
    ``hold``, when given, is entered (before the conversion's own lock) for as long as a conversion is made: the
    caller locks what ``make`` reads, such as the cached snapshot, so ``zoo cache prune`` leaves it alone meanwhile.
    """
    if _usable(target):
        return target
    with hold() if hold is not None else contextlib.nullcontext(), \
            cache.lock(cache.conversion_lock(target), on_wait=on_wait):
        if _usable(target):  # another process made it while we waited
            return target
        rmtree(target)  # what a damaged or half-made conversion holds: its space is needed now
        staging = cache.staging_dir()
        try:
            out = staging / "out"
            log.info("converting %s once into %s", source, target)
            make(out)
            cache.commit_conversion(out, target, origin=origin, source=source, files=_written(out))
        finally:
            rmtree(staging)
    return target


def _usable(target: Path) -> bool:
    """Whether the conversion at ``target`` is complete and its files match their stamps (a use is recorded);
    a damaged one is invalidated."""
    conv = cache.read_conversion(target)
    if conv is None:
        if target.exists():
            log.warning("%s is an incomplete conversion; converting again", target)
        return False
    check = conv.check()
    if check.problem is not None:
        log.warning("the cached conversion is damaged (%s); rebuilding it from the cached download", check.problem)
        conv.invalidate()
        return False
    conv.touch()
    return True


def _written(out: Path) -> dict[str, cache.FileRecord]:
    """Every file of a directory a converter just wrote, as its receipt records them (and the receipt itself)."""
    receipt = read_receipt(out)
    if receipt is None:
        raise AssertionError(f"{out}: a converter wrote no receipt")  # a bug, not a user error
    files = output_records(receipt)
    files[RECEIPT] = cache.FileRecord(*sha256_file(out / RECEIPT))
    return files


def _published_damage(exc: ZooError, pulled: Pulled) -> ZooError:
    """The snapshot is exactly what was verified, so the published files themselves are bad: say so."""
    hint = (f"the files of {pulled.source.label} match their verified hashes, so the published checkpoint itself "
            "is damaged or does not match the manifest; try another source (--source N) or report it")
    return type(exc)(exc.message, hint=hint)


__all__ = ["Model", "Prepared", "cached_conversion", "convert_release_dir", "looks_like_path", "prepare", "repair",
           "target_of", "use"]
