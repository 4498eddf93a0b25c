"""zoo: a registry, verified downloader, converter and trainer for Chinese ALBERT and BERT checkpoints.

The public API is re-exported here lazily, so ``import zoo`` stays fast and never imports torch::

    import zoo
    zoo.list_models()                       # registered checkpoint names
    path = zoo.pull("albert_large_zh")      # download, verify, extract; returns the local directory
    loaded = zoo.load("albert_base_zh")     # ready-to-run model + tokenizer
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zoo._version import __version__
from zoo.errors import (
    CheckpointError,
    DataError,
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

# The one list of the public API: name -> "module:attribute", resolved on first access. __all__ is made from
# it and from the eagerly imported errors above.
_LAZY: dict[str, str] = {
    "ModelConfig": "zoo.config:ModelConfig",
    "Manifest": "zoo.registry:Manifest",
    "Source": "zoo.registry:Source",
    "list_models": "zoo.registry:list_models",
    "list_manifests": "zoo.registry:list_manifests",
    "get_manifest": "zoo.registry:get_manifest",
    "pull": "zoo.resolver:pull",
    "read_tf_checkpoint": "zoo.tf:read_tf_checkpoint",
    "convert": "zoo.converters:convert",
    "load": "zoo.loader:load",
    "Loaded": "zoo.loader:Loaded",
    "Tokenizer": "zoo.tokenizer:Tokenizer",
    "ProgressEvent": "zoo.progress:ProgressEvent",
    "export": "zoo.hub:export",
    "Exported": "zoo.hub:Exported",
    "mirror": "zoo.hub:mirror",
    "pretrain": "zoo.training:pretrain",
    "finetune": "zoo.training:finetune",
    "init_model": "zoo.scratch:init_model",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from zoo.config import ModelConfig
    from zoo.converters import convert
    from zoo.hub import Exported, export, mirror
    from zoo.loader import Loaded, load
    from zoo.progress import ProgressEvent
    from zoo.registry import Manifest, Source, get_manifest, list_manifests, list_models
    from zoo.resolver import pull
    from zoo.scratch import init_model
    from zoo.tf import read_tf_checkpoint
    from zoo.tokenizer import Tokenizer
    from zoo.training import finetune, pretrain


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


_ERRORS = [CheckpointError, DataError, DiskSpaceError, IntegrityError, ManifestError, NetworkError, NotFoundError,
           OfflineError, UnsafeArchiveError, UnsupportedError, UsageError, ZooError]
__all__ = sorted([*_LAZY, *(e.__name__ for e in _ERRORS), "__version__"])
