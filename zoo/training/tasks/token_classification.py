"""Token classification: a tag per character (or per given token) — dish names in reviews, named entities.

Labels belong to the text's units, never to WordPiece pieces (:mod:`zoo.tagging`): each unit's tag trains the
first token that covers it, the other tokens are ignored by the loss; long texts are split into overlapping
windows. The model learns one internal scheme (``--tag-scheme``: BIO, or BIOES) whatever the files use. The loss of
a global batch is the mean cross-entropy over its labelled tokens (transformers' token-classification loss).
Evaluation decodes the predictions back into character spans — the one decoder ``Loaded.tag`` uses too — and
scores exact spans with seqeval's default (conlleval) mode.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import torch

from zoo.models.losses import nll_sum
from zoo.tagging import Alignment, TagSet, Window, align_batch, batched, encode_tagged, predict_spans
from zoo.tokenizer import Tokenizer
from zoo.training.labelled import LabelledText, TaggedData
from zoo.training.metrics import span_metrics
from zoo.training.settings import FinetuneSettings
from zoo.training.tasks.finetuning import Examples, Finetuning, gathered, logits_of, pad, share
from zoo.training.world import World

log = logging.getLogger("zoo.training")


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One text ready for the model: its alignment, its windows (with training labels) and its gold spans."""

    example: LabelledText
    alignment: Alignment
    windows: list[Window]


def encode(data: TaggedData, tokenizer: Tokenizer, tagset: TagSet, settings: FinetuneSettings) -> list[Encoded]:
    """Tokenize, align and window every text of ``data``; the gold tags become training labels."""
    assert settings.max_seq_length is not None
    assert settings.stride is not None
    alignments = align_batch(tokenizer, [e.text for e in data.examples],
                             [e.units for e in data.examples])
    encoded = []
    for example, alignment in zip(data.examples, alignments):
        tags = tagset.unit_ids(example.spans, alignment.units)
        windows = encode_tagged(tokenizer, alignment, tags, max_seq_length=settings.max_seq_length,
                                stride=settings.stride)
        encoded.append(Encoded(example, alignment, windows))
    return encoded


def _window_arrays(window: Window) -> dict[str, np.ndarray]:
    return {"input_ids": window.input_ids, "token_type_ids": window.token_type_ids,
            "attention_mask": window.attention_mask, "labels": window.labels}


class TokenClassification(Finetuning):
    """The :class:`~zoo.training.tasks.Task` of ``zoo finetune --task token-classification``."""

    name = "token-classification"
    count_names: tuple[str, ...] = ("tokens",)

    def __init__(self, settings: FinetuneSettings, tokenizer: Tokenizer, tagset: TagSet, train: TaggedData,
                 dev: TaggedData | None, test: TaggedData | None, *, micro_batch: int) -> None:
        self.settings, self.tokenizer, self.tagset, self.micro_batch = settings, tokenizer, tagset, micro_batch
        self.head_labels, self.tag_scheme = tagset.tags, tagset.scheme
        self.train = encode(train, tokenizer, tagset, settings)
        self.held_out = {split: encode(data, tokenizer, tagset, settings)
                         for split, data in (("dev", dev), ("test", test)) if data is not None}
        windows = [_window_arrays(w) for e in self.train for w in e.windows]
        self.data = Examples(windows, seed=settings.seed, pad_id=tokenizer.pad_token_id,
                             describe={"kind": "token-classification", "format": train.format,
                                       "scheme": train.scheme, "texts": len(self.train), "windows": len(windows)})
        split = sum(1 for e in self.train if len(e.windows) > 1)
        if split:
            log.info("%d of %d training texts are longer than --max-seq-length %s: split into overlapping "
                     "windows (--stride %s)", split, len(self.train), settings.max_seq_length, settings.stride)

    def prepare(self, model: torch.nn.Module) -> None:
        """The pooler feeds no token head: it stays as it is (and out of the gradient all-reduce)."""
        model.pooler.requires_grad_(False)

    # ------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, model: Any, world: World, split: str = "dev") -> dict[str, Any] | None:
        """Entity precision/recall/F1 (micro and per label, seqeval's default mode) on ``split``, and the mean
        loss over its labelled tokens. Every process predicts a share of the texts."""
        texts = self.held_out.get(split)
        if not texts:
            return None
        mine = share(texts, world)
        summed = [0.0, 0.0]  # this process's loss sum and labelled tokens

        def run(group: list[Window]) -> list[np.ndarray]:
            batch = {k: v.to(world.device) for k, v in pad([_window_arrays(w) for w in group],
                                                           self.tokenizer.pad_token_id).items()}
            logits = logits_of(model, batch).float()
            nll, count = nll_sum(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
            summed[0], summed[1] = summed[0] + float(nll), summed[1] + int(count)
            return list(logits.cpu().numpy())

        # windows of every text of this share batched together (a dev sentence is rarely more than one window)
        outputs = batched([e.windows for _, e in mine], 2 * self.micro_batch, run)
        predicted = gathered([(i, predict_spans(e.alignment, e.windows, out, self.tagset))
                              for (i, e), out in zip(mine, outputs)], world)
        nll, tokens = world.sum(summed)
        metrics = span_metrics([(e.alignment.units, e.example.spans, spans) for e, spans in zip(texts, predicted)])
        return {"split": split, "loss": nll / max(tokens, 1), **metrics.micro.as_dict(), "texts": len(texts),
                "per_label": {k: v.as_dict() for k, v in metrics.per_label.items()}}


__all__ = ["Encoded", "TokenClassification", "encode"]
