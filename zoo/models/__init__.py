"""zoo's models: one encoder (:mod:`zoo.models.encoder`) for BERT and both ALBERTs, its heads
(:mod:`zoo.models.heads`) and the pretraining losses (:mod:`zoo.models.losses`). Importing this package is
cheap; the submodules import torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "Encoder": "zoo.models.encoder",
    "ModelOutput": "zoo.models.encoder",
    "MaskedLMHead": "zoo.models.heads",
}

if TYPE_CHECKING:  # pragma: no cover
    from zoo.models.encoder import Encoder, ModelOutput
    from zoo.models.heads import MaskedLMHead


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'zoo.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = ["Encoder", "MaskedLMHead", "ModelOutput"]
