"""Heads on top of the encoder.

Pretraining heads (``mlm``, ``seq_relationship``) come from the checkpoint; task heads (``classifier``,
``qa_outputs``) are plain ``nn.Linear`` layers initialised fresh by ``Encoder.init_task_heads``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import ModelConfig

if TYPE_CHECKING:
    from zoo.models.encoder import Embeddings

#: Accepted values of ``heads`` (``zoo.load(heads=...)``, ``Encoder(heads=...)``).
HEADS: tuple[str | None, ...] = (None, "mlm", "pretraining", "sequence-classification",
                                 "token-classification", "question-answering")
#: Heads that load from a checkpoint.
PRETRAINING_HEADS: tuple[str, ...] = ("mlm", "pretraining")
#: Attribute names of the task heads (never in a checkpoint).
TASK_HEAD_NAMES: tuple[str, ...] = ("classifier", "qa_outputs")


class MaskedLMHead(nn.Module):
    """transform → activation → LayerNorm → decoder tied to the word embeddings, plus an output bias.

    The transform maps H→M (M = E for Google ALBERT, H otherwise). For brightmart the decoder is the
    transpose of the factorised embedding: ``logits = (x @ word_proj.weight) @ word.weightᵀ + bias``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from zoo.models.encoder import ACTIVATIONS

        self.transform = nn.Linear(config.hidden_size, config.mlm_width)
        self.act = ACTIVATIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.mlm_width, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, embeddings: Embeddings) -> torch.Tensor:
        x = self.norm(self.act(self.transform(x)))
        if hasattr(embeddings, "word_proj"):
            x = x @ embeddings.word_proj.weight  # H -> E (the projection's transpose)
        return F.linear(x, embeddings.word.weight, self.bias)


__all__ = ["HEADS", "PRETRAINING_HEADS", "TASK_HEAD_NAMES", "MaskedLMHead"]
