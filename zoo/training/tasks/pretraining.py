"""Pretraining: masked LM plus sentence order (ALBERT) or next sentence (BERT), as upstream ``run_pretraining.py``.

Data comes from a plain-text corpus (tokenized once into ``OUT/data``; segmentation and masks drawn anew every
epoch) or from upstream TFRecords (masks as written). The loss of a global batch is upstream's: the mean masked-LM
NLL over its predicted positions plus the mean SOP/NSP NLL over its examples — each micro-batch divides its sums
by the global counts, so the gradient is that of the whole batch whatever the processes and accumulation steps.
``--eval-corpus`` adds held-out masked-LM loss and accuracy and SOP/NSP accuracy (upstream's ``--do_eval``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from zoo.config import IGNORE_INDEX, ModelConfig
from zoo.errors import DataError, UsageError
from zoo.models.losses import accuracy_count
from zoo.progress import ProgressCallback, ProgressEvent
from zoo.tf.tfrecord import count_records
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import TokenizedCorpus, prepare_corpus
from zoo.training.feeding import BatchSplit, stack
from zoo.training.instances import Instance, InstanceSampler
from zoo.training.masking import EXAMPLE_KEYS, ExampleBuilder, MaskingConfig
from zoo.training.settings import PretrainSettings
from zoo.training.tfrecord import read_pretraining_examples
from zoo.training.world import World

log = logging.getLogger("zoo.training")


# ------------------------------------------------------------------------------------------------- data
class CorpusData:
    """Examples drawn from a tokenized corpus: fresh segmentation and masks every epoch."""

    def __init__(self, corpus: TokenizedCorpus, sampler: InstanceSampler, builder: ExampleBuilder) -> None:
        self.corpus, self.sampler, self.builder = corpus, sampler, builder

    def epoch_size(self, epoch: int) -> int:
        return self.sampler.count(epoch)

    def items(self, epoch: int, start: int) -> Iterator[Instance]:
        return self.sampler.epoch(epoch, start=start)

    def build(self, item: Instance, epoch: int) -> dict[str, np.ndarray]:
        return self.builder.build(self.corpus, item, epoch).as_dict()

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return stack(examples)

    def describe(self) -> dict[str, Any]:
        return {"kind": "corpus", "objective": self.sampler.objective, "documents": self.corpus.num_documents,
                "tokens": self.corpus.num_tokens}


class TFRecordData:
    """Examples read from upstream TFRecord files (masks as written; every epoch reads the files again, in an
    order drawn from ``(seed, epoch)``)."""

    def __init__(self, files: Sequence[Path], *, seed: int, vocab_size: int) -> None:
        self.files, self.seed, self.vocab_size = [Path(f) for f in files], seed, vocab_size
        self._sizes = [count_records(f) for f in self.files]  # verifies every CRC once, up front
        if not sum(self._sizes):
            raise DataError(f"{', '.join(map(str, self.files))}: no records", hint="check the files")
        first = next(read_pretraining_examples(self.files[self._sizes.index(next(s for s in self._sizes if s))],
                                               vocab_size=vocab_size))
        self.max_seq_length = int(first["input_ids"].shape[0])

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

    def collate(self, examples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        return stack(examples)

    def describe(self) -> dict[str, Any]:
        return {"kind": "tfrecord", "records": sum(self._sizes)}


def tokenized(files: Sequence[Path], tokenizer: Tokenizer, out: Path, *, whole_word: bool, world: World,
              emit: ProgressCallback, label: str, known: Sequence[dict[str, Any]] = ()) -> TokenizedCorpus:
    """The corpus ``files`` tokenized into ``out/data`` (the first process builds it or finds it current, the
    others open it). ``known``: the files' records (``sha256``) the run already made, not hashed again."""
    words: Literal["wordpiece", "jieba"] = "jieba" if whole_word else "wordpiece"
    key = hashlib.sha256(json.dumps([str(Path(f).resolve()) for f in files]).encode()).hexdigest()[:16]
    directory = out / "data" / f"corpus-{key}-{words}"

    def tokenizing(done: int, total: int | None) -> None:
        emit(ProgressEvent("tokenize", label, done=done, total=total))

    corpus = None
    if world.main:
        digests = [f["sha256"] for f in known] if len(known) == len(files) else None
        corpus = prepare_corpus(list(files), tokenizer, directory, words=words, on_progress=tokenizing,
                                sha256=digests)
        emit(ProgressEvent("done", label))
    world.barrier()
    return corpus if corpus is not None else TokenizedCorpus.open(directory)


def corpus_data(corpus: TokenizedCorpus, tokenizer: Tokenizer, settings: PretrainSettings) -> CorpusData:
    assert settings.max_seq_length is not None
    assert settings.objective is not None
    sampler = InstanceSampler(corpus, objective=settings.objective,  # type: ignore[arg-type]
                              max_seq_length=settings.max_seq_length, short_seq_prob=settings.short_seq_prob,
                              seed=settings.seed)
    ngram = int(settings.ngram or 1)
    masking = MaskingConfig(max_seq_length=settings.max_seq_length, masked_lm_prob=settings.masked_lm_prob,
                            max_predictions_per_seq=settings.max_predictions, ngram=ngram,
                            whole_word=settings.whole_word or ngram > 1)
    return CorpusData(corpus, sampler, ExampleBuilder.from_tokenizer(tokenizer, masking, seed=settings.seed))


# ------------------------------------------------------------------------------------------------- task
class Pretraining:
    """The :class:`~zoo.training.tasks.Task` of ``zoo pretrain``."""

    name = "pretraining"
    sum_names: tuple[str, ...] = ("mlm_nll", "pair_nll", "mlm_correct", "pair_correct")
    count_names: tuple[str, ...] = ("mlm", "pair")

    def __init__(self, settings: PretrainSettings, data: CorpusData | TFRecordData,
                 held_out: CorpusData | None = None, *, micro_batch: int = 8) -> None:
        self.settings, self.data, self.held_out, self.micro_batch = settings, data, held_out, micro_batch
        self.objective = str(settings.objective)
        self.pair = self.objective != "mlm"

    def heads_for(self, present: set[str]) -> str:
        """MLM + SOP/NSP; MLM alone only when the objective is ``mlm`` and the base has no SOP/NSP head to keep."""
        return "pretraining" if self.pair or "seq_relationship" in present else "mlm"

    def prepare(self, model: torch.nn.Module) -> None:
        """Without a pair objective nothing trains the pooler and the SOP/NSP head: leave them as they are (and
        out of the gradient all-reduce)."""
        if not self.pair:
            for module in (model.pooler, getattr(model, "seq_relationship", None)):
                if module is not None:
                    module.requires_grad_(False)

    def training_data(self) -> CorpusData | TFRecordData:
        return self.data

    def output_config(self, config: ModelConfig) -> ModelConfig:
        """The base's: pretraining changes no head."""
        return config

    def counts(self, batch: dict[str, torch.Tensor]) -> list[float]:
        return [float((batch["labels"] != IGNORE_INDEX).sum()),
                float((batch["seq_relationship_label"] != IGNORE_INDEX).sum()) if self.pair else 0.0]

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor],
             totals: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], labels=batch["labels"],
                    seq_relationship_labels=batch["seq_relationship_label"] if self.pair else None,
                    loss_reduction="sum")
        loss = out.mlm_loss / max(totals[0], 1.0)
        zero = torch.zeros((), dtype=torch.float64, device=out.mlm_loss.device)
        pair_nll = zero
        if self.pair:
            loss = loss + out.seq_relationship_loss / max(totals[1], 1.0)
            pair_nll = out.seq_relationship_loss.detach().double()
        labels = batch["labels"]
        sums = torch.stack([out.mlm_loss.detach().double(), pair_nll,
                            _correct(out.masked_lm_logits, labels[labels != IGNORE_INDEX]),
                            _correct(out.seq_relationship_logits, batch["seq_relationship_label"])
                            if self.pair else zero])
        return loss, sums

    def summary(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        mlm = sums["mlm_nll"] / max(counts["mlm"], 1.0)
        record = {"mlm_loss": mlm, "mlm_accuracy": sums["mlm_correct"] / max(counts["mlm"], 1.0)}
        loss = mlm
        if self.pair:
            pair = sums["pair_nll"] / max(counts["pair"], 1.0)
            record[f"{self.objective}_loss"] = pair
            record[f"{self.objective}_accuracy"] = sums["pair_correct"] / max(counts["pair"], 1.0)
            loss += pair
        return {"loss": loss, **record}

    @torch.no_grad()
    def evaluate(self, model: Any, world: World) -> dict[str, Any] | None:
        """Held-out losses and accuracies on epoch 0 of the evaluation corpus (masks from ``--seed``), each process
        taking every ``world.size``-th example."""
        if self.held_out is None:
            return None
        data = self.held_out
        totals = torch.zeros(len(self.sum_names) + len(self.count_names), dtype=torch.float64, device=world.device)
        batch: list[dict[str, np.ndarray]] = []
        examples = 0

        def run(examples: list[dict[str, np.ndarray]]) -> None:
            tensors = {k: v.to(world.device) for k, v in data.collate(examples).items()}
            counts = self.counts(tensors)
            _, sums = self.loss(model, tensors, [1.0, 1.0])
            totals.add_(torch.cat([sums, torch.tensor(counts, dtype=torch.float64, device=world.device)]))

        for index, item in enumerate(data.items(0, 0)):
            examples += 1
            if index % world.size == world.rank:
                batch.append(data.build(item, 0))
                if len(batch) == self.micro_batch:
                    run(batch)
                    batch = []
        if batch:
            run(batch)
        summed = world.sum(totals)
        n = len(self.sum_names)
        record = self.summary(dict(zip(self.sum_names, summed[:n])), dict(zip(self.count_names, summed[n:])))
        return {**{f"eval_{k}": v for k, v in record.items()}, "eval_examples": examples}


def _correct(logits: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """How many of ``targets`` the logits predict (float64, on their device); 0 without logits or targets."""
    if logits is None or not targets.numel():
        return torch.zeros((), dtype=torch.float64, device=targets.device)
    return accuracy_count(logits, targets).double()


def check_length(settings: PretrainSettings, data: TFRecordData) -> None:
    """TFRecords hold sequences of one length: ``--max-seq-length`` may only repeat it."""
    if settings.max_seq_length not in (None, data.max_seq_length):
        raise UsageError(f"--max-seq-length {settings.max_seq_length}, but the TFRecords hold sequences of "
                         f"{data.max_seq_length}", hint=f"drop the option or pass {data.max_seq_length}")


def open_task(settings: PretrainSettings, inputs: dict[str, list[Path]], tokenizer: Tokenizer,
              config: Any, out: Path, world: World, emit: ProgressCallback, *, label: str,
              identity: dict[str, Any] | None = None) -> tuple[PretrainSettings, Pretraining]:
    """Open the run's data (tokenizing a corpus once) and settle its settings: the family's defaults, and the
    TFRecords' sequence length. ``identity``: the input files' records the run made (their sha256 are reused)."""
    known = identity or {}
    data: CorpusData | TFRecordData
    if inputs.get("tfrecord"):
        records = TFRecordData(inputs["tfrecord"], seed=settings.seed, vocab_size=config.vocab_size)
        check_length(settings, records)
        settings = settings.resolved(config.architecture, max_seq_length=records.max_seq_length)
        data = records
    else:
        settings = settings.resolved(config.architecture)
        corpus = tokenized(inputs["corpus"], tokenizer, out, whole_word=settings.whole_word, world=world, emit=emit,
                           label=f"{label} corpus", known=known.get("corpus", ()))
        data = corpus_data(corpus, tokenizer, settings)
    held_out = None
    if inputs.get("eval_corpus"):
        corpus = tokenized(inputs["eval_corpus"], tokenizer, out, whole_word=settings.whole_word, world=world,
                           emit=emit, label=f"{label} eval corpus", known=known.get("eval_corpus", ()))
        held_out = corpus_data(corpus, tokenizer, settings)
    micro = BatchSplit(settings.batch_size, world.size, world.rank, settings.grad_accum).micro
    return settings, Pretraining(settings, data, held_out, micro_batch=micro)


__all__ = ["CorpusData", "Pretraining", "TFRecordData", "check_length", "corpus_data", "open_task", "tokenized"]
