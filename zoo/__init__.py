"""zoo: a registry and downloader for Chinese ALBERT and BERT checkpoints.

The public API is re-exported here lazily, so ``import zoo`` stays fast and never imports torch::

    import zoo
    zoo.list_models()                       # registered checkpoints
    path = zoo.pull("albert_large_zh")      # download, verify, extract; returns the local directory
    loaded = zoo.load("albert_base_zh")     # ready-to-run model + tokenizer
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo.errors import (
    CheckpointError,
    DiskSpaceError,
    IntegrityError,
    ManifestError,
    NetworkError,
    NotFoundError,
    OfflineError,
    UnsafeArchiveError,
    UnsupportedError,
    UsageError,
    ZooError,
)

__version__ = "0.1.0"

# public name -> "module:attribute"; resolved on first access
_LAZY: dict[str, str] = {
    "ModelConfig": "zoo.config:ModelConfig",
    "Manifest": "zoo.registry:Manifest",
    "Source": "zoo.registry:Source",
    "list_models": "zoo.registry:list_models",
    "get_manifest": "zoo.registry:get_manifest",
    "pull": "zoo.resolver:pull",
    "read_tf_checkpoint": "zoo.tf:read_tf_checkpoint",
    "convert": "zoo.converters:convert",
    "load": "zoo.loader:load",
    "Loaded": "zoo.loader:Loaded",
    "export": "zoo.hub:export",
    "mirror": "zoo.hub:mirror",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from zoo.config import ModelConfig
    from zoo.converters import convert
    from zoo.hub import export, mirror
    from zoo.loader import Loaded, load
    from zoo.registry import Manifest, Source, get_manifest, list_models
    from zoo.resolver import pull
    from zoo.tf import read_tf_checkpoint


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CheckpointError",
    "DiskSpaceError",
    "IntegrityError",
    "Loaded",
    "Manifest",
    "ManifestError",
    "ModelConfig",
    "NetworkError",
    "NotFoundError",
    "OfflineError",
    "Source",
    "UnsafeArchiveError",
    "UnsupportedError",
    "UsageError",
    "ZooError",
    "__version__",
    "convert",
    "export",
    "get_manifest",
    "list_models",
    "load",
    "mirror",
    "pull",
    "read_tf_checkpoint",
]
