"""Sequence (text) classification: a label per text or text pair — sentiment, intent, sentence matching.

As upstream ``run_classifier.py`` and transformers' ``*ForSequenceClassification``: ``[CLS] A [SEP] (B [SEP])``,
dropout on the pooled output, a linear layer; the loss of a global batch is the mean cross-entropy over its
examples. A text longer than ``--max-seq-length`` is truncated (the longer of a pair first) — and counted, with a
warning, never silently. Evaluation: accuracy, macro-F1, per-label precision/recall/F1 and the confusion matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from zoo.tokenizer import Tokenizer
from zoo.training.labelled import ClassificationData, LabelledPair
from zoo.training.metrics import classification_metrics
from zoo.training.settings import FinetuneSettings
from zoo.training.tasks.finetuning import Examples, Finetuning, chunks, gathered, logits_of, pad, share
from zoo.training.world import World

log = logging.getLogger("zoo.training")


def encode(pairs: Sequence[LabelledPair], tokenizer: Tokenizer, labels: tuple[str, ...],
           max_seq_length: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """Model inputs of every example, and how many had to be truncated."""
    ids = {label: i for i, label in enumerate(labels)}
    singles = [i for i, p in enumerate(pairs) if p.text_b is None]
    doubles = [i for i, p in enumerate(pairs) if p.text_b is not None]
    encoded: list[dict[str, np.ndarray]] = [{} for _ in pairs]
    truncated = 0
    for group, pair in ((singles, False), (doubles, True)):
        if not group:
            continue
        a = [pairs[i].text_a for i in group]
        b = [str(pairs[i].text_b) for i in group] if pair else None
        full = tokenizer(a, b, split_special_tokens=True)["input_ids"]
        cut = tokenizer(a, b, truncation=True, max_length=max_seq_length, split_special_tokens=True)
        for k, i in enumerate(group):
            truncated += len(full[k]) > max_seq_length
            encoded[i] = {"input_ids": np.asarray(cut["input_ids"][k], np.int64),
                          "token_type_ids": np.asarray(cut["token_type_ids"][k], np.int64),
                          "attention_mask": np.asarray(cut["attention_mask"][k], np.int64),
                          "labels": np.asarray(ids[pairs[i].label], np.int64)}
    return encoded, truncated


class SequenceClassification(Finetuning):
    """The :class:`~zoo.training.tasks.Task` of ``zoo finetune --task sequence-classification``."""

    name = "sequence-classification"
    count_names: tuple[str, ...] = ("examples",)

    def __init__(self, settings: FinetuneSettings, tokenizer: Tokenizer, labels: tuple[str, ...],
                 train: ClassificationData, dev: ClassificationData | None, test: ClassificationData | None, *,
                 micro_batch: int) -> None:
        assert settings.max_seq_length is not None
        self.settings, self.tokenizer, self.head_labels, self.micro_batch = settings, tokenizer, labels, micro_batch
        examples, truncated = encode(train.examples, tokenizer, labels, settings.max_seq_length)
        if truncated:
            log.warning("%d of %d training texts are longer than --max-seq-length %d tokens and were truncated "
                        "(raise --max-seq-length to keep more)", truncated, len(examples), settings.max_seq_length)
        self.held_out = {}
        for split, data in (("dev", dev), ("test", test)):
            if data is not None:
                self.held_out[split] = (data.examples, encode(data.examples, tokenizer, labels,
                                                              settings.max_seq_length)[0])
        self.data = Examples(examples, seed=settings.seed, pad_id=tokenizer.pad_token_id,
                             describe={"kind": "sequence-classification", "format": train.format,
                                       "texts": len(examples), "truncated": truncated})

    @torch.no_grad()
    def evaluate(self, model: Any, world: World, split: str = "dev") -> dict[str, Any] | None:
        """Accuracy, macro-F1, per-label scores and the confusion matrix on ``split``, and its mean loss."""
        if split not in self.held_out:
            return None
        pairs, encoded = self.held_out[split]
        mine = []
        for group in chunks(share(encoded, world), 2 * self.micro_batch):
            batch = {k: v.to(world.device) for k, v in pad([e for _, e in group], self.tokenizer.pad_token_id).items()}
            logits = logits_of(model, batch).float()
            nll = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
            mine += [(i, (int(p), float(n))) for (i, _), p, n in zip(group, logits.argmax(-1), nll)]
        results = gathered(mine, world)
        predicted = [self.head_labels[p] for p, _ in results]
        metrics = classification_metrics([p.label for p in pairs], predicted, self.head_labels).as_dict()
        return {"split": split, "loss": sum(n for _, n in results) / max(len(results), 1), **metrics}


__all__ = ["SequenceClassification", "encode"]
