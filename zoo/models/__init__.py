"""zoo's models: one encoder (:mod:`zoo.models.encoder`) for BERT and both ALBERTs, and its heads
(:mod:`zoo.models.heads`). Importing this package is cheap; the submodules import torch."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Encoder": "zoo.models.encoder",
    "ModelOutput": "zoo.models.encoder",
    "HEADS": "zoo.models.heads",
    "MaskedLMHead": "zoo.models.heads",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = sorted(_LAZY)
