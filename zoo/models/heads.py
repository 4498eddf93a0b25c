"""Heads on top of the encoder.

Pretraining heads come from the checkpoint: the masked-LM head (``mlm``) and the sentence-order / next-sentence
classifier (``seq_relationship``, a plain ``nn.Linear(H, 2)`` on the pooled output). Task heads — a
:class:`Classifier` on the pooled output (sequence classification) or on every token (token classification), and
``qa_outputs`` — come from a fine-tuned checkpoint, or are initialised fresh for fine-tuning.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import ModelConfig
from zoo.models.activations import ACTIVATION_FUNCTIONS


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


class Classifier(nn.Linear):
    """Dropout (in training mode), then a linear map to the labels: the head of upstream ``run_classifier.py``
    (``output_weights``/``output_bias`` on the dropped-out pooled output) and of transformers'
    ``*ForSequenceClassification``/``*ForTokenClassification``. Its parameters are ``classifier.weight``/``.bias``."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__(hidden_size, num_labels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(x))


__all__ = ["Classifier", "MaskedLMHead"]
