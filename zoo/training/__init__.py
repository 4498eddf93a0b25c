"""Training: continued pretraining (``zoo.pretrain``) and fine-tuning (``zoo.finetune``), one loop for both.

- :mod:`~zoo.training.settings` — every setting, defined once (the CLI flags are generated from it);
- :mod:`~zoo.training.runner` — the entry points: inputs, ``--out``, base model, a session of the loop, the result;
- :mod:`~zoo.training.loop` — the training loop; :mod:`~zoo.training.tasks` — what it learns (data, loss, evaluation);
- :mod:`~zoo.training.feeding` — the deterministic example stream, shared out over processes and micro-batches;
- :mod:`~zoo.training.checkpoint`, :mod:`~zoo.training.outdir`, :mod:`~zoo.training.world`, :mod:`~zoo.training.optim`;
- pretraining data: :mod:`~zoo.training.corpus` (tokenize once), :mod:`~zoo.training.instances` (segment pairs),
  :mod:`~zoo.training.masking`, :mod:`~zoo.training.tfrecord` (upstream TFRecords).

Nothing here imports TensorFlow. docs/architecture.md follows a run through these modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from zoo.training.runner import finetune, pretrain
    from zoo.training.settings import FinetuneSettings, PretrainSettings

_LAZY = {"pretrain": "zoo.training.runner", "finetune": "zoo.training.runner",
         "PretrainSettings": "zoo.training.settings", "FinetuneSettings": "zoo.training.settings"}


def __getattr__(name: str) -> Any:
    """The entry points load torch: imported on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.training' has no attribute {name!r}")


__all__ = ["FinetuneSettings", "PretrainSettings", "finetune", "pretrain"]
