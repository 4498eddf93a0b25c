"""Heads on top of the encoder.

Pretraining heads come from the checkpoint: the masked-LM head (``mlm``) and the sentence-order / next-sentence
classifier (``seq_relationship``, a plain ``nn.Linear(H, 2)`` on the pooled output). Task heads (``classifier``,
``qa_outputs``) are plain ``nn.Linear`` layers initialised fresh by ``Encoder.init_task_heads``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import ModelConfig
from zoo.models.activations import ACTIVATION_FUNCTIONS

#: Attribute names of the task heads (never in a checkpoint).
TASK_HEAD_NAMES: tuple[str, ...] = ("classifier", "qa_outputs")


class MaskedLMHead(nn.Module):
    """transform → activation → LayerNorm → decoder tied to the word embeddings, plus an output bias.

    The transform maps H→M (M = E for Google ALBERT, H otherwise). The decoder is the word embedding table; for
    brightmart it is the transpose of the factorised embedding: ``logits = (x @ word_proj) @ wordᵀ + bias``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.mlm_width)
        self.act = ACTIVATION_FUNCTIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.mlm_width, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, word: torch.Tensor, word_proj: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the vocabulary for hidden states ``x`` (any leading shape); ``word`` is the embedding
        table, ``word_proj`` brightmart's E→H projection weight."""
        x = self.norm(self.act(self.transform(x)))
        if word_proj is not None:
            x = x @ word_proj  # H -> E (the projection's transpose)
        return F.linear(x, word, self.bias)


__all__ = ["TASK_HEAD_NAMES", "MaskedLMHead"]
