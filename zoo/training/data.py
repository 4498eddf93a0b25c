"""Feeding the training loop: one deterministic stream of examples, cut into global batches and shared out.

The stream is the concatenation of epochs ``0, 1, 2, …`` of a source — a plain-text corpus (instances from
:mod:`~zoo.training.instances`, masks drawn per epoch by :mod:`~zoo.training.masking`) or upstream TFRecord files
(static masks, as written). Step ``s`` trains on stream examples ``[s·B, (s+1)·B)`` of the global batch ``B``;
process ``r`` of ``W`` takes the contiguous ``B/W`` of them at offset ``r·B/W`` and splits its share into
``accum`` micro-batches. Every process enumerates the same stream (enumerating is cheap; building — masking,
parsing — happens only for its own share), so the examples of a step do not depend on how many processes
share it, and a run resumes from a recorded :class:`Position` exactly.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from zoo import errors
from zoo.errors import DataError, UsageError, ZooError
from zoo.tf.tfrecord import count_records
from zoo.training.corpus import TokenizedCorpus
from zoo.training.instances import Instance, InstanceSampler
from zoo.training.masking import EXAMPLE_KEYS, ExampleBuilder
from zoo.training.tfrecord import read_pretraining_examples

log = logging.getLogger("zoo.training")


@dataclasses.dataclass(frozen=True)
class Position:
    """Where the stream stands: the next example is ``index`` of ``epoch``; ``consumed`` examples came before."""

    epoch: int = 0
    index: int = 0
    consumed: int = 0


class Source(Protocol):
    """Where examples come from."""

    max_seq_length: int

    def epoch_size(self, epoch: int) -> int: ...

    def items(self, epoch: int, start: int) -> Iterator[Any]:
        """The epoch's items from index ``start``, in order: cheap to produce, built by :meth:`build`."""
        ...

    def build(self, item: Any, epoch: int) -> dict[str, np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class CorpusSource:
    """Examples drawn from a tokenized corpus: fresh segmentation and masks every epoch."""

    def __init__(self, corpus: TokenizedCorpus, sampler: InstanceSampler, builder: ExampleBuilder) -> None:
        self.corpus, self.sampler, self.builder = corpus, sampler, builder
        self.max_seq_length = sampler.max_seq_length

    def epoch_size(self, epoch: int) -> int:
        return self.sampler.count(epoch)

    def items(self, epoch: int, start: int) -> Iterator[Instance]:
        return self.sampler.epoch(epoch, start=start)

    def build(self, item: Instance, epoch: int) -> dict[str, np.ndarray]:
        return self.builder.build(self.corpus, item, epoch).as_dict()

    def describe(self) -> dict[str, Any]:
        return {"kind": "corpus", "objective": self.sampler.objective, "documents": self.corpus.num_documents,
                "tokens": self.corpus.num_tokens, "files": self.corpus.meta.get("files")}


class TFRecordSource:
    """Examples read from upstream TFRecord files (masks as written; every epoch reads the files again, in an
    order drawn from ``(seed, epoch)``)."""

    def __init__(self, files: Sequence[Path], *, seed: int, vocab_size: int,
                 max_seq_length: int | None = None) -> None:
        if not files:
            raise UsageError("no TFRecord files given")
        self.files, self.seed, self.vocab_size = [Path(f) for f in files], seed, vocab_size
        self._sizes = [count_records(f) for f in self.files]  # verifies every CRC once, up front
        if not sum(self._sizes):
            raise DataError(f"{', '.join(map(str, self.files))}: no records", hint="check the files")
        first = next(read_pretraining_examples(self.files[self._sizes.index(next(s for s in self._sizes if s))],
                                               vocab_size=vocab_size))
        self.max_seq_length = int(first["input_ids"].shape[0])
        if max_seq_length is not None and max_seq_length != self.max_seq_length:
            raise UsageError(f"--max-seq-length {max_seq_length}, but the TFRecords hold sequences of "
                             f"{self.max_seq_length}", hint=f"drop the option or pass {self.max_seq_length}")

    def _order(self, epoch: int) -> list[int]:
        order: list[int] = np.random.default_rng([0x7466_7263, self.seed, epoch]).permutation(len(self.files)).tolist()
        return order

    def epoch_size(self, epoch: int) -> int:
        return sum(self._sizes)

    def items(self, epoch: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        skip = start
        for f in self._order(epoch):
            if skip >= self._sizes[f]:
                skip -= self._sizes[f]
                continue
            examples = read_pretraining_examples(self.files[f], seq_length=self.max_seq_length,
                                                 vocab_size=self.vocab_size)
            for n, example in enumerate(examples):
                if n >= skip:
                    yield example
            skip = 0

    def build(self, item: dict[str, np.ndarray], epoch: int) -> dict[str, np.ndarray]:
        return {key: np.array(item[key], np.int64) for key in EXAMPLE_KEYS}

    def describe(self) -> dict[str, Any]:
        return {"kind": "tfrecord", "files": [str(f) for f in self.files], "records": sum(self._sizes)}


def _empty_epoch() -> DataError:
    return DataError("an epoch of the training data holds no example",
                     hint="the corpus is too small for this max_seq_length: add text or shorten sequences")


def locate(source: Source, consumed: int, since: Position = Position()) -> Position:
    """The position after ``consumed`` examples of the stream, counted on from ``since`` (an earlier position:
    the epochs before it are not counted again)."""
    if consumed < since.consumed:
        raise AssertionError("locate() goes forward only")  # a bug, never user input
    epoch, left = since.epoch, since.index + consumed - since.consumed
    while True:
        size = source.epoch_size(epoch)
        if size <= 0:
            raise _empty_epoch()
        if left < size:
            return Position(epoch, left, consumed)
        left -= size
        epoch += 1


@dataclasses.dataclass(frozen=True)
class Layout:
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


def micro_batches(source: Source, layout: Layout, start: Position) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:  # noqa: E501
    """``(step, micro index, tensors)`` for this process, from the step that begins at ``start`` on, forever.

    ``start.consumed`` must be a multiple of the global batch (checkpoints are taken between steps).
    """
    if start.consumed % layout.batch:
        raise AssertionError("a position inside a step")  # a bug: checkpoints are taken between steps
    lo, hi = layout.share
    step, offset = start.consumed // layout.batch, 0
    pending: list[dict[str, np.ndarray]] = []
    epoch, index = start.epoch, start.index
    while True:
        produced = False
        for item in source.items(epoch, index):
            produced = True
            if lo <= offset < hi:
                pending.append(source.build(item, epoch))
                if len(pending) == layout.micro:
                    micro = (offset - lo) // layout.micro
                    yield step, micro, collate(pending)
                    pending = []
            offset += 1
            if offset == layout.batch:
                step, offset = step + 1, 0
        if not produced and index == 0:
            raise _empty_epoch()
        epoch, index = epoch + 1, 0


def collate(examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.stack([e[key] for e in examples])) for key in EXAMPLE_KEYS}


MicroBatches = Iterator[tuple[int, int, dict[str, torch.Tensor]]]


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
    def __init__(self, source: Source, layout: Layout, start: Position) -> None:
        self.source, self.layout, self.start = source, layout, start

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from micro_batches(self.source, self.layout, self.start)
        except ZooError as exc:  # DataLoader would wrap it in a traceback text; send it over as it is
            yield _Failure(type(exc).__name__, exc.message, exc.hint)


def _unwrap(batches: Iterator[Any]) -> MicroBatches:
    for item in batches:
        if isinstance(item, _Failure):
            raise item.error()
        yield item


def loader(source: Source, layout: Layout, start: Position, *, workers: int) -> MicroBatches:
    """:func:`micro_batches`, built in ``workers`` background processes (1 keeps the model fed: building a
    micro-batch costs far less than a training step) or in this process (0)."""
    if workers <= 0:
        return micro_batches(source, layout, start)
    if workers > 1:
        log.info("one data worker keeps the order deterministic; using 1 instead of %d", workers)
    data = torch.utils.data.DataLoader(_Stream(source, layout, start), batch_size=None, num_workers=1,
                                       prefetch_factor=max(4, 2 * layout.accum), persistent_workers=False)
    return _unwrap(iter(data))
