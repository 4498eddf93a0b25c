"""The pretraining losses, defined as upstream ``run_pretraining.py`` defines them.

- Masked LM: the negative log-likelihood of the true token at each predicted position, averaged over the
  predicted positions (upstream: ``Σ w·nll / (Σ w + 1e-5)`` with weights 1 on real predictions — the same mean to
  about 1e-6 relative; zoo omits the 1e-5, which only guards an empty batch).
- Sentence order (ALBERT, SOP) / next sentence (BERT, NSP): NLL of the 2-way label, averaged over the batch.
- Total = MLM + SOP/NSP.

Each function returns the *sum* and the *count*, so a training step spread over processes and micro-batches can
divide by the global count and get exactly the loss of the whole batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.config import IGNORE_INDEX

#: ``labels`` value marking positions (or examples) with nothing to predict.
IGNORE = IGNORE_INDEX


def nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of negative log-likelihoods of ``targets`` under ``logits`` (rows with target ``IGNORE`` skipped),
    computed in float32, and how many rows counted."""
    keep = targets != IGNORE
    if logits.shape[0] == 0:
        zero = logits.float().sum()
        return zero, keep.sum()
    nll = F.cross_entropy(logits.float(), targets.clamp_min(0), reduction="none")
    return (nll * keep).sum(), keep.sum()


def accuracy_count(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How many rows' argmax equals their target (rows with target ``IGNORE`` excluded)."""
    keep = targets != IGNORE
    return ((logits.argmax(-1) == targets) & keep).sum()


__all__ = ["IGNORE", "accuracy_count", "nll_sum"]
