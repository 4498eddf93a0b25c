"""What the fine-tuning tasks share: labelled examples as a training stream, padding, the evaluation schedule,
and keeping the best checkpoint.

Training examples are encoded once, in memory (labelled data sets are small next to a pretraining corpus), and
each epoch visits them in an order drawn from ``(seed, epoch)``; the stream runs on across epochs, so a step's
batch may hold the end of one epoch and the start of the next, and ``steps = ceil(epochs × examples / batch)``.
Evaluations happen at every epoch's end (or every ``--eval-every`` steps); the best by ``--metric`` is kept in
``OUT/best/`` and becomes the output's weights; ``--patience K`` stops after K evaluations without improvement.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo._fs import sha256_file, staged_directory
from zoo.config import IGNORE_INDEX, ModelConfig
from zoo.errors import CheckpointError
from zoo.models.losses import accuracy_count, nll_sum
from zoo.plotting import lower_is_better
from zoo.training.settings import FinetuneSettings
from zoo.training.world import World

log = logging.getLogger("zoo.training")

#: What each key is padded with; keys of one value per example (a class label) are not padded.
_PAD = {"input_ids": 0, "token_type_ids": 0, "attention_mask": 0, "labels": IGNORE_INDEX}
BEST, BEST_WEIGHTS, BEST_RECORD = "best", "model.safetensors", "best.json"


class Examples:
    """Encoded examples as :class:`~zoo.training.feeding.TrainingData`: every epoch all of them, shuffled."""

    def __init__(self, examples: list[dict[str, np.ndarray]], *, seed: int, pad_id: int,
                 describe: dict[str, Any]) -> None:
        self.examples, self.seed, self.pad_id, self._describe = examples, seed, pad_id, describe
        #: what the readers noticed about the files (for the receipt)
        self.notes: list[str] = []

    def epoch_size(self, epoch: int) -> int:
        return len(self.examples)

    def items(self, epoch: int, start: int) -> Iterator[int]:
        order = np.random.default_rng([0x66696E65, self.seed, epoch]).permutation(len(self.examples))
        return iter(order[start:].tolist())

    def build(self, item: int, epoch: int) -> dict[str, np.ndarray]:
        return self.examples[item]

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return pad(examples, self.pad_id)

    def describe(self) -> dict[str, Any]:
        return {**self._describe, "notes": self.notes} if self.notes else dict(self._describe)


class Finetuning:
    """What both fine-tuning tasks are: labelled examples (:class:`Examples`), a task head named like the task,
    and records of the mean loss and accuracy over what the loss counts (tokens or texts)."""

    name: str
    sum_names: tuple[str, ...] = ("nll", "correct")
    count_names: tuple[str, ...]
    data: Examples
    settings: FinetuneSettings
    #: the head's outputs in id order (tags for a tagger, classes for a classifier), and a tagger's scheme
    head_labels: tuple[str, ...]
    tag_scheme: str | None = None

    @property
    def examples(self) -> int:
        return len(self.data.examples)

    @property
    def num_labels(self) -> int:
        return len(self.head_labels)

    def heads_for(self, present: set[str]) -> str:
        return self.name

    def prepare(self, model: torch.nn.Module) -> None:
        return None

    def training_data(self) -> Examples:
        return self.data

    def counts(self, batch: dict[str, torch.Tensor]) -> list[float]:
        """What the loss averages over: the labelled tokens (a tagger) or the texts (a classifier)."""
        return [float((batch["labels"] != IGNORE_INDEX).sum())]

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
             totals: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy summed over the labelled positions, divided by the global batch's count of them
        (transformers' loss for either head)."""
        logits = logits_of(model, batch)
        flat, labels = logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1)
        nll, _ = nll_sum(flat, labels)
        sums = torch.stack([nll.detach().double(), accuracy_count(flat.detach(), labels).double()])
        return nll / max(totals[0], 1.0), sums

    def summary(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        n = max(counts[self.count_names[0]], 1.0)
        return {"loss": sums["nll"] / n, "accuracy": sums["correct"] / n}

    def evaluate(self, model: Any, world: World, split: str = "dev") -> dict[str, Any] | None:
        """The scores on ``split`` (``None`` when the run has no such file): each task computes its own."""
        raise NotImplementedError

    def output_config(self, config: ModelConfig) -> ModelConfig:
        """The trained model's config: its head's task, labels (tags for a tagger), scheme and dropout."""
        return dataclasses.replace(config, task=self.name, labels=self.head_labels, tag_scheme=self.tag_scheme,
                                   classifier_dropout_prob=self.settings.classifier_dropout)


def pad(examples: Sequence[dict[str, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack examples, padding sequences to the longest (ids with ``pad_id``, labels with IGNORE_INDEX)."""
    width = max(len(e["input_ids"]) for e in examples)
    batch = {}
    for key in examples[0]:
        if examples[0][key].ndim == 0:
            batch[key] = torch.from_numpy(np.stack([e[key] for e in examples]))
            continue
        fill = pad_id if key == "input_ids" else _PAD.get(key, 0)
        out = np.full((len(examples), width), fill, dtype=np.int64)
        for row, example in enumerate(examples):
            out[row, :len(example[key])] = example[key]
        batch[key] = torch.from_numpy(out)
    return batch


def logits_of(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The task head's logits for a padded batch."""
    logits: torch.Tensor = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                                 token_type_ids=batch["token_type_ids"]).logits
    return logits


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def share(items: Sequence[Any], world: World) -> list[tuple[int, Any]]:
    """This process's share of an evaluation set: every ``world.size``-th item, with its index."""
    return [(i, item) for i, item in enumerate(items) if i % world.size == world.rank]


def gathered(parts: list[tuple[int, Any]], world: World) -> list[Any]:
    """The shares of every process back in the original order."""
    merged = sorted((pair for part in world.gather(parts) for pair in part), key=lambda pair: pair[0])
    return [value for _, value in merged]


# ------------------------------------------------------------------------------------------ schedule
def evaluation_steps(settings: FinetuneSettings, examples: int) -> Any:
    """When to evaluate: every ``--eval-every`` steps, else at the end of every epoch; always at the last step."""
    steps, batch = int(settings.steps or 0), settings.batch_size

    def due(step: int) -> bool:
        if step == steps:
            return True
        if settings.eval_every:
            return step % settings.eval_every == 0
        return (step * batch) // examples > ((step - 1) * batch) // examples

    return due


# ------------------------------------------------------------------------------------------ the best
@dataclasses.dataclass
class Best:
    """The best evaluation so far by ``metric``; its weights live in ``OUT/best/`` (their sha256 recorded with the
    run's checkpoints). With ``patience``, asks the loop to stop after that many evaluations without improvement —
    and remembers it, so a resumed run that stopped trains no further."""

    metric: str
    patience: int | None
    out: Path
    world: World
    model: torch.nn.Module | None = None
    value: float | None = None
    step: int | None = None
    record: dict[str, Any] | None = None
    stale: int = 0
    stopped: bool = False
    weights_sha256: str | None = None

    def __call__(self, step: int, record: dict[str, Any]) -> bool:
        if record.get("split") != "dev":
            return False
        value = record.get(self.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            log.warning("step %d: the dev metric %s is %r; the best checkpoint is unchanged", step, self.metric, value)
            value = None
        better = value is not None and (self.value is None or (value < self.value if lower_is_better(self.metric)
                                                               else value > self.value))
        if better:
            record = {k: v for k, v in record.items() if k != "time"}  # what it scored, not when
            self.value, self.step, self.record, self.stale = float(value), step, record, 0  # type: ignore[arg-type]
            self.weights_sha256 = self._save(record) if self.world.main else None
            self.world.barrier()
        else:
            self.stale += 1
        self.stopped = self.patience is not None and self.stale >= self.patience
        return self.stopped

    def _save(self, record: dict[str, Any]) -> str:
        from safetensors.torch import save_file

        assert self.model is not None
        with staged_directory(self.out / BEST, replace=True) as staging:
            save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.model.state_dict().items()},
                      str(staging / BEST_WEIGHTS))
            (staging / BEST_RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            return sha256_file(staging / BEST_WEIGHTS)[0]

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "step": self.step, "record": self.record,
                "stale": self.stale, "stopped": self.stopped, "weights_sha256": self.weights_sha256}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("metric") == self.metric:
            self.value, self.step = state.get("value"), state.get("step")
            self.record, self.stale = state.get("record"), int(state.get("stale") or 0)
            self.stopped, self.weights_sha256 = bool(state.get("stopped")), state.get("weights_sha256")

    def load_into(self, model: torch.nn.Module, device: torch.device) -> bool:
        """Put the best weights into ``model``, checked against the sha256 recorded when they were saved; False when
        there were no evaluations (the last weights stay)."""
        if self.step is None:
            return False
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.out / BEST / BEST_WEIGHTS
        hint = (f"delete {self.out / 'checkpoints'} and {self.out / BEST} and train again, or use the last weights: "
                f"the checkpoint of the last step in {self.out / 'checkpoints'} holds them")
        try:
            if self.world.main and self.weights_sha256 and sha256_file(path)[0] != self.weights_sha256:
                raise CheckpointError(f"{path} is damaged: its sha256 is not the one recorded when it was saved",
                                      hint=hint)
            model.load_state_dict(load_file(str(path), device=str(device)))
        except (OSError, SafetensorError, RuntimeError) as exc:
            raise CheckpointError(f"{path}: the best checkpoint cannot be read ({exc})", hint=hint) from None
        return True


__all__ = ["BEST", "Best", "Examples", "Finetuning", "chunks", "evaluation_steps", "gathered", "logits_of", "pad",
           "share"]
