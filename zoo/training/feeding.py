"""Feeding the training loop: one deterministic stream of examples, cut into global batches and shared out.

The stream is the concatenation of epochs ``0, 1, 2, …`` of a task's :class:`TrainingData`. Step ``s`` trains on
stream examples ``[s·B, (s+1)·B)`` of the global batch ``B``; process ``r`` of ``W`` takes the contiguous ``B/W``
of them at offset ``r·B/W`` and splits its share into ``accum`` micro-batches. Every process enumerates the same
stream (cheap) but builds only its own share, so a step's examples do not depend on the number of processes, and
a run resumes from a recorded :class:`Position` exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from zoo import errors
from zoo.errors import DataError, UsageError, ZooError

log = logging.getLogger("zoo.training")


@dataclasses.dataclass(frozen=True)
class Position:
    """Where the stream stands: the next example is ``index`` of ``epoch``; ``consumed`` examples came before."""

    epoch: int = 0
    index: int = 0
    consumed: int = 0


class TrainingData(Protocol):
    """A task's training examples, epoch by epoch (each epoch may order, cut or mask them anew)."""

    def epoch_size(self, epoch: int) -> int: ...

    def items(self, epoch: int, start: int) -> Iterator[Any]:
        """The epoch's items from index ``start``, in order: cheap to produce, built by :meth:`build`."""
        ...

    def build(self, item: Any, epoch: int) -> dict[str, np.ndarray]: ...

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]: ...

    def describe(self) -> dict[str, Any]: ...


def _empty_epoch() -> DataError:
    return DataError("an epoch of the training data holds no example",
                     hint="the corpus is too small for this max_seq_length: add text or shorten sequences")


def locate(data: TrainingData, consumed: int, since: Position = Position()) -> Position:
    """The position after ``consumed`` examples of the stream, counted on from ``since`` (an earlier position:
    the epochs before it are not counted again)."""
    if consumed < since.consumed:
        raise AssertionError("locate() goes forward only")  # a bug, never user input
    epoch, left = since.epoch, since.index + consumed - since.consumed
    while True:
        size = data.epoch_size(epoch)
        if size <= 0:
            raise _empty_epoch()
        if left < size:
            return Position(epoch, left, consumed)
        left -= size
        epoch += 1


@dataclasses.dataclass(frozen=True)
class BatchSplit:
    """How a global batch is shared: ``world`` processes × ``accum`` micro-batches of ``micro`` examples."""

    batch: int
    world: int
    rank: int
    accum: int

    def __post_init__(self) -> None:
        if self.batch % (self.world * self.accum):
            raise UsageError(f"--batch-size {self.batch} does not split evenly over {self.world} process(es) × "
                             f"{self.accum} accumulation step(s)",
                             hint=f"use a multiple of {self.world * self.accum}")

    @property
    def micro(self) -> int:
        return self.batch // (self.world * self.accum)

    @property
    def share(self) -> tuple[int, int]:
        """This process's offsets ``[lo, hi)`` within a global batch."""
        lo = self.rank * self.batch // self.world
        return lo, lo + self.batch // self.world


MicroBatches = Iterator[tuple[int, int, dict[str, torch.Tensor]]]


def micro_batches(data: TrainingData, split: BatchSplit, start: Position) -> MicroBatches:
    """``(step, micro index, tensors)`` for this process, from the step that begins at ``start`` on, forever.

    ``start.consumed`` must be a multiple of the global batch (checkpoints are taken between steps).
    """
    if start.consumed % split.batch:
        raise AssertionError("a position inside a step")  # a bug: checkpoints are taken between steps
    lo, hi = split.share
    step, offset = start.consumed // split.batch, 0
    pending: list[dict[str, np.ndarray]] = []
    epoch, index = start.epoch, start.index
    while True:
        produced = False
        for item in data.items(epoch, index):
            produced = True
            if lo <= offset < hi:
                pending.append(data.build(item, epoch))
                if len(pending) == split.micro:
                    micro = (offset - lo) // split.micro
                    yield step, micro, data.collate(pending)
                    pending = []
            offset += 1
            if offset == split.batch:
                step, offset = step + 1, 0
        if not produced and index == 0:
            raise _empty_epoch()
        epoch, index = epoch + 1, 0


def stack(examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Examples of equal shapes → one tensor per key."""
    return {key: torch.from_numpy(np.stack([e[key] for e in examples])) for key in examples[0]}


@dataclasses.dataclass(frozen=True)
class _Failure:
    """A zoo error raised in the data worker, carried to the training process whole (message and hint)."""

    kind: str
    message: str
    hint: str | None

    def error(self) -> ZooError:
        cls = getattr(errors, self.kind, ZooError)
        if not (isinstance(cls, type) and issubclass(cls, ZooError)) or cls is errors.ManifestError:
            cls = ZooError
        return cls(self.message, hint=self.hint)


class _Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    def __init__(self, data: TrainingData, split: BatchSplit, start: Position) -> None:
        self.data, self.split, self.start = data, split, start

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from micro_batches(self.data, self.split, self.start)
        except ZooError as exc:  # DataLoader would wrap it in a traceback text; send it over as it is
            yield _Failure(type(exc).__name__, exc.message, exc.hint)


def _unwrap(batches: Iterator[Any]) -> MicroBatches:
    for item in batches:
        if isinstance(item, _Failure):
            raise item.error()
        yield item


def feed(data: TrainingData, split: BatchSplit, start: Position, *, workers: int) -> MicroBatches:
    """:func:`micro_batches`, built in a background process (``workers`` ≥ 1: building a micro-batch costs far
    less than a training step, so one keeps the model fed and the order deterministic) or in this one (0)."""
    if workers <= 0:
        return micro_batches(data, split, start)
    if workers > 1:
        log.info("one data worker keeps the order deterministic; using 1 instead of %d", workers)
    loader = torch.utils.data.DataLoader(_Stream(data, split, start), batch_size=None, num_workers=1,
                                         prefetch_factor=max(4, 2 * split.accum), persistent_workers=False)
    return _unwrap(iter(loader))


def close(batches: MicroBatches) -> None:
    """Stop a feed (its worker process too)."""
    stop = getattr(batches, "close", None)
    if callable(stop):
        stop()


__all__ = ["BatchSplit", "MicroBatches", "Position", "TrainingData", "close", "feed", "locate", "micro_batches",
           "stack"]
