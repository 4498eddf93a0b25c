"""Where everything lives under the cache root.

::

    $ZOO_HOME  (else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo)
      blobs/sha256/<hex>                       downloads, verified before they get here
      snapshots/<model>/<source-key>/ + .json  extracted snapshot; its marker (hashes + stat stamps) written last
      converted/<key>-c<version>/ + .json      converted weights; its marker written last
      pins/<url-key>.json                      trust-on-first-use hashes of sources the manifest leaves unpinned
      partial/<url-key>/                       downloads in progress or interrupted (data, state.json, verified.json)
      quarantine/                              files that failed verification, kept for inspection
      folders/<path-key>.json                  stamps of verified folders outside the cache (zoo outputs)
      locks/<name>.lock                        inter-process locks
      tmp/.work.staging-<host>-<pid>-<id>/     staging directories (same file system: renames out are atomic)
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from zoo._fs import dir_mode, staging_path

if TYPE_CHECKING:
    from zoo.registry.schema import Source


def home() -> Path:
    """The cache root: ``$ZOO_HOME``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    if os.environ.get("ZOO_HOME"):
        return Path(os.environ["ZOO_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "zoo"
    return Path.home() / ".cache" / "zoo"


def ensure_home() -> Path:
    """The cache root, created private (0700; ``ZOO_CACHE_MODE=shared`` follows the umask) if it is new."""
    root = home()
    if not root.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        if dir_mode() == 0o700:
            os.chmod(root, 0o700)
    return root


def blob_path(sha256: str) -> Path:
    return home() / "blobs" / "sha256" / sha256


def model_snapshots(model: str) -> Path | None:
    """The folder of ``model``'s snapshots; None when ``model`` is not a plain name (a release directory's path,
    given to ``zoo cache rm``, has no snapshots — and must never be looked into as if it were that folder)."""
    if model in ("", ".", "..") or Path(model).name != model:
        return None
    return home() / "snapshots" / model


def snapshot_path(model: str, key: str) -> Path:
    return home() / "snapshots" / model / key


def snapshot_marker_path(model: str, key: str) -> Path:
    return home() / "snapshots" / model / f"{key}.json"


def converted_path(key: str, converter_version: int) -> Path:
    """Where the conversion keyed ``key`` (a source sha256, or a hash of a release directory) lives."""
    return home() / "converted" / f"{key}-c{converter_version}"


def conversion_marker_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".json")


def folder_record_path(directory: Path) -> Path:
    """Where the stamps of a folder outside the cache are recorded (keyed by its resolved path)."""
    key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]
    return home() / "folders" / f"{key}.json"


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:32]


def partial_dir(url: str) -> Path:
    """Where a download of ``url`` keeps its bytes, its part state and (once verified) its journal."""
    return home() / "partial" / url_key(url)


def pin_path(label: str) -> Path:
    return home() / "pins" / f"{url_key(label)}.json"


def lock_path(name: str) -> Path:
    return home() / "locks" / f"{name}.lock"


def source_key(source: Source) -> str:
    """A stable, readable directory name for one source: ``<host>-<hash of its location>`` (the host of a URL,
    else the scheme of the location: ``file``, ``hf``)."""
    parts = urlsplit(source.label)
    host = parts.hostname or parts.scheme
    host = re.sub(r"[^A-Za-z0-9.-]", "_", host)[:40] or "src"
    return f"{host}-{hashlib.sha256(source.label.encode()).hexdigest()[:10]}"


def staging_dir() -> Path:
    """A fresh work directory under ``tmp/``, named as all staging is (:func:`zoo._fs.staging_path`:
    ``.work.staging-HOST-PID-RANDOM``), so ``prune`` can tell whether its owner is still running."""
    ensure_home()
    (home() / "tmp").mkdir(exist_ok=True)
    path = staging_path(home() / "tmp" / "work")
    path.mkdir()
    return path


# ------------------------------------------------------------------------------------------ lock names
def snapshot_lock(model: str, key: str) -> str:
    return f"snapshot-{model}-{key}"


def download_lock(label: str) -> str:
    return f"download-{url_key(label)}"


def conversion_lock(directory: Path) -> str:
    return f"convert-{directory.name}"
