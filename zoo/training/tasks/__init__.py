"""Tasks: what a training run learns. The loop (:mod:`zoo.training.loop`) knows nothing of objectives; a task
provides the data, the loss and the evaluation. A new task is one new module here implementing :class:`Task`.

- :mod:`~zoo.training.tasks.pretraining` — masked LM plus SOP/NSP, as upstream ``run_pretraining.py``;
- :mod:`~zoo.training.tasks.token_classification` — per-character tags (dish names, NER);
- :mod:`~zoo.training.tasks.sequence_classification` — text (and text-pair) classification;
- :mod:`~zoo.training.tasks.finetuning` — what the fine-tuning tasks share (examples, padding, the best checkpoint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from zoo.config import ModelConfig
    from zoo.models.encoder import Encoder
    from zoo.training.feeding import TrainingData
    from zoo.training.world import World


class Task(Protocol):
    """One kind of training, as the loop sees it."""

    #: what the receipt calls the run: ``pretraining`` or the fine-tuning task's name
    name: str
    #: names of the per-batch sums :meth:`loss` returns, and of the counts :meth:`counts` returns
    sum_names: tuple[str, ...]
    count_names: tuple[str, ...]

    def heads_for(self, present: set[str]) -> str:
        """The Encoder heads to build, given the pretraining heads the base checkpoint holds."""
        ...

    def prepare(self, model: torch.nn.Module) -> None:
        """Adjust the freshly built model (e.g. freeze what the task does not train)."""
        ...

    def training_data(self) -> TrainingData: ...

    def output_config(self, config: ModelConfig) -> ModelConfig:
        """The config the trained model is built and written with (a task head's labels …), from the base's."""
        ...

    def counts(self, batch: dict[str, torch.Tensor]) -> list[float]:
        """The denominators of this (CPU) micro-batch's losses; summed over the global batch by the loop."""
        ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
             totals: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch's share of the global batch's loss (divided by the global ``totals`` of
        :meth:`counts`), and its sums (float64, on the device) in the order of :attr:`sum_names`."""
        ...

    def summary(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        """Averages over any number of steps from their summed sums and counts (``loss`` among them)."""
        ...

    def evaluate(self, model: Encoder, world: World) -> dict[str, Any] | None:
        """Held-out results, with the ``split`` they are of (``None``: the task has nothing to evaluate on).
        Every process calls it; each may take a share of the work and gather the results."""
        ...


__all__ = ["Task"]
