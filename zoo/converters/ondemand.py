"""Converted weights on demand: whatever the user names, the directory the loader and the exporter read.

:func:`resolve_weights` accepts

- a registry name or :class:`~zoo.registry.Manifest`: the resolver pulls (or finds) the verified snapshot, and
  its TF checkpoint or transformers weights are converted once, cached by the source's sha256 and the
  converter version (:func:`convert_snapshot`);
- a directory holding ``model.safetensors`` + ``config.json`` (``zoo convert`` or ``zoo export`` output): as is;
- an upstream TF release directory: converted once into the cache, keyed by its path and its files' sizes and
  modification times, so loading it again costs no hashing (:func:`convert_release`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from zoo import cache
from zoo.errors import NotFoundError

if TYPE_CHECKING:
    from zoo.registry import Manifest
    from zoo.resolver import Pulled

log = logging.getLogger("zoo.converters")

#: The files of a converted directory (zoo convert, convert-on-demand) and of an export.
WEIGHTS, CONFIG, VOCAB, RECEIPT = "model.safetensors", "config.json", "vocab.txt", "receipt.json"


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A directory of weights ready to load, and where it came from."""

    path: Path
    manifest: Manifest | None = None  # when named through the registry
    pulled: Pulled | None = None  # the verified snapshot it was converted from


def resolve_weights(name_or_path: str | os.PathLike[str] | Manifest, *, source: int | None = None,
                    offline: bool | None = None) -> Resolved:
    """The converted directory behind ``name_or_path`` (see the module docstring), converting on first use."""
    if not isinstance(name_or_path, (str, os.PathLike)):  # a Manifest already looked up
        return _from_registry(name_or_path, source=source, offline=offline)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
            return Resolved(path)
        return Resolved(convert_release(path))
    if isinstance(name_or_path, Path) or any(sep in str(name_or_path) for sep in ("/", "\\")) or path.exists():
        raise NotFoundError(f"{name_or_path} is not a directory",
                            hint="pass a registry name, a directory made by zoo convert, or a TF release directory")
    from zoo.registry import get_manifest

    return _from_registry(get_manifest(str(name_or_path)), source=source, offline=offline)


def _from_registry(manifest: Manifest, *, source: int | None, offline: bool | None) -> Resolved:
    from zoo import resolver

    pulled = resolver.resolve(manifest, source=source, offline=offline)
    return Resolved(convert_snapshot(pulled), manifest, pulled)


def convert_snapshot(pulled: Pulled) -> Path:
    """The converted directory of a verified snapshot: a TF checkpoint (three schemes) or transformers weights."""
    root, src, manifest = Path(pulled.path), pulled.source, pulled.manifest
    if src.format == "tf-checkpoint":
        from zoo.converters.api import ensure_converted

        return Path(ensure_converted(
            root, manifest_config=manifest.config, scheme=str(src.scheme),
            checkpoint_prefix=src.find_checkpoint(root).relative_to(root).as_posix(),
            vocab=src.find_vocab(root).relative_to(root).as_posix(), source_sha256=pulled.sha256))
    from zoo.converters import transformers

    return transformers.ensure_converted(root, manifest=manifest, source=src)


def convert_release(directory: Path) -> Path:
    """Convert an upstream TF release directory into the cache once; later calls reuse the result."""
    from zoo.converters.api import CONVERTER_VERSION, convert

    stamp = hashlib.sha256(str(directory.resolve()).encode())
    for f in sorted(p for p in directory.iterdir() if p.is_file()):
        st = f.stat()
        stamp.update(f"\0{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    target = cache.converted_dir(stamp.hexdigest(), CONVERTER_VERSION)
    return convert_once(target, lambda out: convert(directory, out), what=str(directory))


def convert_once(target: Path, make: Callable[[Path], object], *, what: str) -> Path:
    """``target`` if a complete conversion is there, else ``make(target)`` under a file lock.

    ``make`` must create ``target`` atomically (stage, then rename), so a directory with ``receipt.json`` is
    complete; concurrent callers wait on the lock and then reuse it. Anything else found at ``target`` (a
    directory without a receipt) is removed and converted again.
    """
    from filelock import FileLock

    if (target / RECEIPT).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / RECEIPT).is_file():
            return target
        if target.exists():
            log.warning("%s holds no %s: converting again", target, RECEIPT)
            shutil.rmtree(target)
        log.info("converting %s once into %s", what, target)
        make(target)
    return target
