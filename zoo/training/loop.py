"""The training loop, one for every task: steps, accumulation, clipping, precision, DDP, evaluations,
checkpoints, metrics and progress. It knows nothing about objectives — a :class:`~zoo.training.tasks.Task`
supplies the loss and the evaluation.

One step, on every process (``torchrun`` starts several; a plain call is one)::

    micro-batches of this process's share of the global batch           (zoo.training.feeding)
    the task's counts of the whole global batch (one all_reduce)        e.g. predicted tokens, pair labels
    for each micro-batch: forward (autocast), loss = the task's share, backward (DDP syncs the last one)
    clip to the global norm, optimizer step, learning-rate schedule step (zoo.training.optim)

Every loss is divided by the counts of the whole global batch, so every split computes the gradient of the same
global batch. In float, a split that adds the same micro-batch gradients in the same order (2 processes × 1
micro-step, 1 process × 2, one thread each) ends bit for bit alike; other splits agree to rounding
(docs/pretraining.md gives the measured differences).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from zoo.errors import DataError
from zoo.loader import torch_dtype
from zoo.progress import ProgressCallback, ProgressEvent
from zoo.training import checkpoint as ckpt
from zoo.training.feeding import BatchSplit, MicroBatches, Position, TrainingData, close, feed, locate
from zoo.training.optim import clip_by_global_norm
from zoo.training.outdir import RunDir
from zoo.training.settings import TrainSettings
from zoo.training.tasks import Task
from zoo.training.world import World

if TYPE_CHECKING:  # pragma: no cover
    from zoo.models.encoder import Encoder

log = logging.getLogger("zoo.training")


@dataclasses.dataclass
class Trainer:
    """Everything the loop works with. Built by :mod:`zoo.training.runner`."""

    task: Task
    settings: TrainSettings
    steps: int
    model: Encoder
    ddp: torch.nn.Module
    #: the parameters the optimizer updates (what the gradient clipping measures)
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    world: World
    run: RunDir
    emit: ProgressCallback
    label: str
    workers: int = 1
    #: called after each evaluation: whether the run should stop (fine-tuning's patience)
    on_evaluation: Callable[[int, dict[str, Any]], bool] | None = None
    #: which steps evaluate: by default every checkpoint
    evaluate_at: Callable[[int], bool] | None = None
    #: the run's state saved with every checkpoint (best evaluation so far …), and how to restore it
    task_state: Callable[[], dict[str, Any]] = dict
    restore_state: Callable[[dict[str, Any]], None] = lambda state: None
    #: whether the run already stopped early (a resumed run that --patience ended trains nothing more)
    stopped: Callable[[], bool] = lambda: False
    #: also called with every record written to metrics.jsonl (e.g. a TensorBoard writer), on the first process
    observers: list[Callable[[dict[str, Any]], None]] = dataclasses.field(default_factory=list)
    #: the last logged record (the receipt's ``final``)
    final: dict[str, Any] = dataclasses.field(default_factory=dict)

    def save(self, step: int, position: Position, meter: dict[str, Any]) -> None:
        """A checkpoint of step ``step`` (the first process writes it); ``meter``: the sums since the last record,
        so a resumed run's records average the same steps as an uninterrupted run's."""
        if self.world.main:
            optimizer = {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                         "scaler": self.scaler.state_dict()}
            ckpt.save(self.run.path / "checkpoints", step=step, position=position,
                      settings=self.settings.to_dict(), model=self.model.state_dict(), optimizer=optimizer,
                      keep=self.settings.keep_checkpoints, metrics=self.final,
                      task={**self.task_state(), "meter": meter})
        self.world.barrier()

    def record(self, record: dict[str, Any]) -> None:
        """A record after the loop (the test evaluation) into metrics.jsonl and to the observers."""
        if self.world.main:
            with self.run.metrics() as metrics:
                _write(self, metrics, record)


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a run begins: step 0, or the checkpoint it resumes from."""

    step: int = 0
    position: Position = dataclasses.field(default_factory=Position)
    #: the sums since the last record when the checkpoint was taken
    meter: dict[str, Any] = dataclasses.field(default_factory=dict)


def train(t: Trainer, data: TrainingData, start: Start) -> int:
    """Train from ``start`` to ``t.steps`` (or until the task says stop); returns the last step trained."""
    s, world = t.settings, t.world
    step, position = start.step, start.position
    if step >= t.steps or t.stopped():
        log.info("%s: already at step %d of %d%s", t.run.path, step, t.steps, " (stopped early)" * t.stopped())
        return step
    split = BatchSplit(s.batch_size, world.size, world.rank, s.grad_accum)
    batches = feed(data, split, position, workers=t.workers)
    meter = _Meter(t.task, step, start.meter)
    # where this session starts: rates and time left are measured from here, not from step 0
    t.emit(ProgressEvent("train", t.label, done=step, total=t.steps, unit="step", initial=start.step))
    try:
        with t.run.metrics() if world.main else contextlib.nullcontext() as metrics:
            while step < t.steps:
                lr = _step(t, batches, step, meter)
                step += 1
                if step % s.log_every == 0 or step == t.steps:
                    t.final = meter.record(step, lr)
                    _write(t, metrics, t.final)
                t.emit(ProgressEvent("train", t.label, done=step, total=t.steps, unit="step", initial=start.step,
                                     postfix=meter.postfix(lr)))
                last = step == t.steps
                due_save = bool(s.save_every) and step % (s.save_every or 1) == 0
                # by default a run evaluates where it saves; fine-tuning evaluates per epoch and saves there
                evaluated = t.evaluate_at(step) if t.evaluate_at is not None else due_save or last
                stop = _evaluate(t, step, metrics) if evaluated else False
                if stop and step % s.log_every:  # the steps since the last record still get theirs
                    t.final = meter.record(step, lr)
                    _write(t, metrics, t.final)
                if due_save or stop or last or (evaluated and not s.save_every):
                    position = locate(data, step * s.batch_size, since=position)
                    t.save(step, position, meter.state())
                if stop:
                    break
    finally:
        close(batches)
    return step


def _step(t: Trainer, batches: MicroBatches, step: int, meter: _Meter) -> float:
    """One optimizer step over the micro-batches of global batch ``step``; returns its learning rate."""
    s, world, task = t.settings, t.world, t.task
    micro = [next(batches) for _ in range(s.grad_accum)]
    if any(k != step for k, _, _ in micro):
        raise AssertionError("data out of step")  # a bug, never user input
    counts = world.sum([sum(c) for c in zip(*(task.counts(m) for _, _, m in micro))])
    torch.manual_seed(_step_seed(s.seed, step, world.rank))  # dropout: a function of (seed, step, rank)
    compute = torch_dtype(s.dtype)
    sums = torch.zeros(len(task.sum_names) + 1, dtype=torch.float64, device=world.device)
    for i, (_, _, batch) in enumerate(micro):
        tensors = {k: v.to(world.device, non_blocking=True) for k, v in batch.items()}
        sync = i == len(micro) - 1 or world.size == 1
        with (contextlib.nullcontext() if sync else _no_sync(t.ddp)), \
                torch.autocast(world.device.type, dtype=compute, enabled=compute != torch.float32):
            loss, batch_sums = task.loss(t.ddp, tensors, counts)
        t.scaler.scale(loss * world.size).backward()  # type: ignore[no-untyped-call]
        sums[:-1] += batch_sums
        sums[-1] += tensors["attention_mask"].sum()
    t.scaler.unscale_(t.optimizer)
    norm = float(clip_by_global_norm(t.trainable, s.clip))
    lr = float(t.optimizer.param_groups[0]["lr"])
    if not math.isfinite(norm) and s.dtype != "float16":  # fp16: the scaler skips the step and lowers its scale
        raise _diverged(t, step, lr, f"the gradient norm is {norm}", gradients=True)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.optimizer.zero_grad(set_to_none=True)
    t.schedule.step()
    totals = world.sum(sums)
    if not math.isfinite(sum(totals)):
        raise _diverged(t, step, lr, "the loss is not finite", gradients=False)
    meter.add(totals, counts, norm, s.batch_size)
    return lr


def _diverged(t: Trainer, step: int, lr: float, what: str, *, gradients: bool) -> DataError:
    """Training broke at ``step``: say where — the first parameter whose weight is not finite (an earlier update
    overflowed it), else the first whose gradient is not finite — and how large the weights grew, with the learning
    rate and the clip norm, so the cause can be told from the symptom."""
    def broken(value: torch.Tensor | None) -> bool:
        return value is not None and not bool(torch.isfinite(value).all())

    params = list(t.model.named_parameters())
    weights = [name for name, p in params if broken(p.detach())]
    grads = [name for name, p in params if gradients and broken(p.grad)]
    where = ""
    if weights:
        where = f"; first non-finite weight: {weights[0]} ({len(weights)} of {len(params)} parameters)"
    elif grads:
        where = f"; first non-finite gradient: {grads[0]} ({len(grads)} of {len(params)} parameters)"
    largest = max(((float(p.detach().abs().max()), name) for name, p in params if p.numel() and name not in weights),
                  default=None)
    if largest is not None:
        where += f"; largest weight: {largest[1]} (|w| {largest[0]:.3g})"
    s = t.settings
    fixes = ["a lower --lr", "a longer --warmup"] + (["a smaller --clip"] if s.clip > 10 else []) + (
        [] if s.dtype == "float32" else ["--dtype fp32"])
    return DataError(f"training diverged at step {step + 1}: {what}{where} (lr {lr:.3g}, clip {s.clip:g})",
                     hint=f"start a new run (another --out) with {', '.join(fixes[:-1])} or {fixes[-1]}; "
                          "--resume would repeat the same steps exactly")


def _evaluate(t: Trainer, step: int, metrics: Any) -> bool:
    """Evaluate, record the results, and ask the run whether to stop."""
    t.model.eval()
    try:
        with torch.autocast(t.world.device.type, dtype=torch_dtype(t.settings.dtype),
                            enabled=t.settings.dtype != "float32"):
            results = t.task.evaluate(t.model, t.world)
    finally:
        t.model.train()
    if results is None:
        return False
    record = {"step": step, "split": results.pop("split", "eval"), **results, "time": time.time()}
    _write(t, metrics, record)
    t.emit(ProgressEvent("note", t.label, message=f"step {step}: {record['split']} {scores(record)}"))
    return bool(t.on_evaluation(step, record)) if t.on_evaluation is not None else False


def scores(record: dict[str, Any]) -> str:
    """A record's figures for a readable line (``f1 0.9412, loss 0.1023``)."""
    return ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float) and k != "time")


def _no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """DDP's ``no_sync``: accumulate this micro-batch's gradients locally, all-reduce on the last one."""
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    return model.no_sync()


def _write(t: Trainer, metrics: Any, record: dict[str, Any]) -> None:
    """A record into metrics.jsonl (and to the observers), on the first process."""
    if metrics is not None:
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        for observe in t.observers:
            observe(record)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()[:8], "little") >> 1


class _Meter:
    """Sums since the last record: each record holds averages over the steps since the previous one (losses
    and accuracies weighted by their counts, throughput over the elapsed time)."""

    def __init__(self, task: Task, step: int, state: dict[str, Any] | None = None) -> None:
        self.task = task
        self.names = (*task.sum_names, "tokens")
        self.last: dict[str, float] = {}  # the last step's figures, for the progress bar
        self.norms: list[float] = []
        self._reset(step)
        self.recent: list[tuple[float, float]] = []  # (time, tokens) of the last steps, for the progress bar
        if state:
            self._restore(state, step)

    def _restore(self, state: dict[str, Any], step: int) -> None:
        """The sums a checkpoint saved; ones that do not fit this task are left out (the first record after the
        resume then averages fewer steps), with a warning: they are bookkeeping, not training state."""
        try:
            sums = {name: float(state["sums"][name]) for name in self.names}
            counts = {name: float(state["counts"][name]) for name in self.task.count_names}
            norms, since = [float(n) for n in state["norms"]], int(state["since"])
            if not 0 <= since <= step:
                raise ValueError(since)
        except (KeyError, TypeError, ValueError):
            log.warning("the checkpoint's running sums do not fit this run: the first record after step %d "
                        "averages from there", step)
            return
        self.since, self.sums, self.counts, self.norms = since, sums, counts, norms

    def state(self) -> dict[str, Any]:
        """The sums since the last record, for a checkpoint (not the throughput: a resumed run's rates count
        from its own start)."""
        return {"since": self.since, "sums": self.sums, "counts": self.counts, "norms": self.norms}

    def _reset(self, step: int) -> None:
        self.since, self.started = step, time.monotonic()
        self.sums = dict.fromkeys(self.names, 0.0)
        self.counts = dict.fromkeys(self.task.count_names, 0.0)
        self.norms = []
        self.tokens, self.examples = 0.0, 0  # since ``started``, in this process's session

    def add(self, totals: list[float], counts: list[float], norm: float, examples: int) -> None:
        for name, value in zip(self.names, totals):
            self.sums[name] += value
        for name, value in zip(self.task.count_names, counts):
            self.counts[name] += value
        self.norms.append(norm)
        self.tokens += totals[-1]
        self.examples += examples
        self.last = self.task.summary(dict(zip(self.names, totals)), dict(zip(self.task.count_names, counts)))
        self.recent = [*self.recent[-19:], (time.monotonic(), totals[-1])]

    def record(self, step: int, lr: float) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        record = {"step": step, "split": "train", **self.task.summary(self.sums, self.counts), "lr": lr,
                  "grad_norm": sum(self.norms) / max(len(self.norms), 1), "steps": step - self.since,
                  "tokens_per_s": self.tokens / elapsed, "examples_per_s": self.examples / elapsed,
                  "time": time.time()}
        self._reset(step)
        return record

    def postfix(self, lr: float) -> dict[str, Any]:
        shown: dict[str, Any] = {"loss": round(self.last.get("loss", float("nan")), 4), "lr": f"{lr:.2e}"}
        if len(self.recent) > 1:
            elapsed = max(self.recent[-1][0] - self.recent[0][0], 1e-9)
            shown["tok/s"] = int(sum(tokens for _, tokens in self.recent[1:]) / elapsed)
        return shown


__all__ = ["Start", "Trainer", "train"]
