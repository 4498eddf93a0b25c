"""``zoo.pretrain`` and ``zoo.finetune``: one way to run a training job, for every task.

Read it top to bottom: an entry point checks its settings and inputs and the ``--out`` directory before anything
else, joins the processes, prepares the base model, claims ``--out``, opens the task's data and settles the
settings once; :func:`_session` then checks ``--resume`` against the run's record, builds the model and the
optimizer, restores the checkpoint, runs :func:`zoo.training.loop.train` and writes the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo._fs import write_json_atomic
from zoo.config import ModelConfig, present_heads
from zoo.converters.modeldir import (
    CONFIG,
    VOCAB,
    WEIGHTS,
    read_config,
    read_receipt,
    staged_into,
)
from zoo.converters.safetensors_out import write_state
from zoo.errors import CheckpointError, Interrupted, UsageError
from zoo.loader import build_tokenizer, load_model
from zoo.progress import Progress, ProgressCallback, ProgressEvent, reporting
from zoo.tokenizer import Tokenizer
from zoo.training import checkpoint as ckpt
from zoo.training.feeding import BatchSplit
from zoo.training.inputs import check_files
from zoo.training.loop import Start, Trainer, _step_seed, scores, train
from zoo.training.optim import create_optimizer, param_groups
from zoo.training.outdir import USER_MODE, RunDir, data_changes, file_identity
from zoo.training.settings import FinetuneSettings, PretrainSettings, TrainSettings, flag, make
from zoo.training.tasks import Task
from zoo.training.tasks.finetuning import Best, Finetuning
from zoo.training.world import World, joined
from zoo.weights import Model, Prepared, prepare

log = logging.getLogger("zoo.training")

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------------- pretrain
def pretrain(model: Model, *, out: PathLike, corpus: Sequence[PathLike] = (), tfrecords: Sequence[PathLike] = (),
             eval_corpus: Sequence[PathLike] = (), resume: bool = False, device: str = "auto", workers: int = 1,
             source: int | None = None, offline: bool | None = None, manifests: Sequence[PathLike] = (),
             progress: Progress = None, tensorboard: PathLike | None = None, **settings: Any) -> Path:
    """Continue pretraining ``model`` (anything :func:`zoo.load` takes) and write the result into ``out``.

    Data: ``corpus`` — plain-text files (UTF-8, one sentence per line, a blank line between documents; ``.gz``
    too) — or ``tfrecords`` written by upstream ``create_pretraining_data.py``; ``eval_corpus``: held-out text
    evaluated at every checkpoint. ``settings`` are the fields of :class:`~zoo.training.settings.PretrainSettings`
    (``steps`` is required; ``batch_size`` is the global batch, ``lr``, ``warmup``, ``objective``
    ``sop``/``nsp``/``mlm``, ``optimizer``, ``dtype``, ``max_position_embeddings``, ``save_every`` …).
    ``resume=True`` continues the run in ``out`` from its newest checkpoint, exactly. ``tensorboard``: a directory
    to write TensorBoard scalars into as well (needs ``tensorboard``). Under ``torchrun`` every process calls this;
    only the first writes. Returns ``out`` (absolute): a directory :func:`zoo.load`,
    ``zoo run``, ``zoo export`` and ``zoo finetune`` accept, with ``receipt.json`` saying how it was made.
    """
    from zoo.training.tasks import pretraining as task_module

    config = make(PretrainSettings, settings)
    if bool(corpus) == bool(tfrecords):
        raise UsageError("give the training data as corpus files or as TFRecord files (one of the two)",
                         hint="zoo pretrain MODEL --corpus FILE... or --tfrecord FILE...")
    inputs = {"corpus": check_files(corpus, "corpus"), "tfrecord": check_files(tfrecords, "tfrecord"),
              "eval_corpus": check_files(eval_corpus, "eval_corpus")}
    run = RunDir(out, "pretraining")
    def settle(base: ModelConfig) -> TrainSettings:  # TFRecords tell their length later
        return config if tfrecords else config.resolved(base.architecture)

    with _begun(run, model, inputs, settle, resume=resume, device=device, source=source, offline=offline,
                manifests=manifests, progress=progress) as (world, emit, base, identity):
        config, task = task_module.open_task(config, inputs, base.tokenizer, base.config, run.path, world, emit,
                                             label=base.name, identity=identity)
        if tfrecords:  # their sequence length is known only now; a corpus run's was checked at the start
            _check_positions(config, base.config)
        _session(task, config, config.steps or 0, base, run, world, emit, identity=identity, resume=resume,
                 workers=workers, tensorboard=tensorboard)
    return run.path


@contextlib.contextmanager
def _begun(run: RunDir, model: Model, inputs: dict[str, list[Path]], settle: Callable[[ModelConfig], TrainSettings],
           *, resume: bool, device: str, source: int | None, offline: bool | None, manifests: Sequence[PathLike],
           progress: Progress) -> Iterator[tuple[World, ProgressCallback, Base, dict[str, Any]]]:
    """Every run's start, in order: ``--out`` judged (before anything is written), the processes joined, the base
    model prepared, the settings checked against it and the processes (``settle``: the settings as far as the
    model decides them), ``--out`` claimed (a failure inside the block removes what it made) and the data's identity
    checked against the run's on ``--resume`` — all before any data is read."""
    run.check(resume=resume)
    with joined(device) as world, reporting(progress if world.main else False) as emit:
        base = _base(model, world, source=source, offline=offline, manifests=manifests, emit=emit)
        _check_setup(settle(base.config), base.config, world)
        with run.claimed() if world.main else contextlib.nullcontext():
            yield world, emit, base, _same_data(run, inputs, resume, world)
        world.barrier()


# ------------------------------------------------------------------------------------------- finetune
def finetune(model: Model, *, task: str | None = None, train: PathLike, dev: PathLike | None = None,
             test: PathLike | None = None, out: PathLike, resume: bool = False, device: str = "auto",
             workers: int = 1, source: int | None = None, offline: bool | None = None,
             manifests: Sequence[PathLike] = (), progress: Progress = None, tensorboard: PathLike | None = None,
             **settings: Any) -> Path:
    """Fine-tune ``model`` (anything :func:`zoo.load` takes: a registry name, a ``zoo pretrain`` output, a TF
    release, a transformers folder, a ``zoo init`` model) on labelled data, and write the result into ``out``.

    ``task``: ``"token-classification"`` (``train``/``dev``/``test``: CoNLL columns, JSON lines with character
    offsets, or CSV/TSV with entity strings) or ``"sequence-classification"`` (TSV/CSV with ``label``,
    ``text_a``, ``text_b``, or JSON lines). ``settings`` are the fields of
    :class:`~zoo.training.settings.FinetuneSettings` (``epochs``, ``batch_size``, ``lr``, ``max_seq_length``,
    ``labels``, ``metric``, ``patience`` …). Evaluates on ``dev`` after every epoch and keeps the best; evaluates
    the best on ``test`` at the end; ``resume``, ``device``, ``tensorboard`` and the rest as in :func:`pretrain`.
    Returns ``out`` (absolute): ``zoo.load(out)`` tags or classifies.
    """
    config = make(FinetuneSettings, {**settings, "task": task if task is not None else settings.get("task")})
    if config.patience is not None and not dev:
        raise UsageError("--patience needs --dev: it counts evaluations on the dev set without improvement")
    inputs = {"train": check_files([train], "train"), "dev": check_files([dev], "dev") if dev else [],
              "test": check_files([test], "test") if test else []}
    run = RunDir(out, "finetune")
    def settle(base: ModelConfig) -> TrainSettings:
        return config.resolved(base.architecture, examples=1, positions=base.max_position_embeddings)

    with _begun(run, model, inputs, settle, resume=resume, device=device, source=source, offline=offline,
                manifests=manifests, progress=progress) as (world, emit, base, identity):
        config, fine = _finetuning_task(config, inputs, base, world, emit)
        emit(ProgressEvent("note", base.name, message=_plan(config, fine)))
        best = Best(str(config.metric), config.patience, run.path, world)
        _session(fine, config, config.steps or 0, base, run, world, emit, identity=identity, resume=resume,
                 workers=workers, on_model=lambda t: _keep_best(t, best, config, fine.examples),
                 finish=lambda t: _test_best(t, best, fine), tensorboard=tensorboard)
    return run.path


def _finetuning_task(settings: FinetuneSettings, inputs: dict[str, list[Path]], base: Base, world: World,
                     emit: ProgressCallback) -> tuple[FinetuneSettings, Any]:
    """Read the labelled files, settle the label set and the settings (the steps follow from the examples), and
    encode the data for the task. What the readers noticed (columns ignored, spaces trimmed) is said, and kept in
    the receipt."""
    from zoo.training import labelled

    arch, positions = base.config.architecture, base.config.max_position_embeddings
    first = settings.resolved(arch, examples=1, positions=positions)  # the window length and stride to encode with
    micro = BatchSplit(settings.batch_size, world.size, world.rank, settings.grad_accum).micro
    files = {split: paths[0] for split, paths in inputs.items() if paths}
    fine: Any
    if settings.task == "token-classification":
        from zoo.tagging import TagSet
        from zoo.training.tasks.token_classification import TokenClassification

        options: dict[str, Any] = {"text_column": settings.text_column or "text", "format": settings.format,
                                   "entity_column": settings.entity_column, "entity_label": settings.entity_label,
                                   "entity_sep": settings.entity_sep}
        read: dict[str, Any] = {"train": labelled.read_tagged(files["train"], scheme=settings.input_scheme,
                                                              **options)}
        read |= {s: labelled.read_tagged(f, scheme=read["train"].scheme, **options) for s, f in files.items()
                 if s != "train"}
        labels = _labels(read, settings)
        fine = TokenClassification(first, base.tokenizer, TagSet(labels, settings.tag_scheme), read["train"],
                                   read.get("dev"), read.get("test"), micro_batch=micro)
    else:
        from zoo.training.tasks.sequence_classification import SequenceClassification

        read = {s: labelled.read_classification(f, format=settings.format) for s, f in files.items()}
        labels = _labels(read, settings)
        fine = SequenceClassification(first, base.tokenizer, labels, read["train"], read.get("dev"), read.get("test"),
                                      micro_batch=micro)
    notes = [f"{files[split].name}: {note}" for split, data in read.items() for note in data.notes]
    for note in notes:
        emit(ProgressEvent("note", base.name, message=note))
    fine.data.notes = notes
    resolved = settings.resolved(arch, examples=fine.examples, positions=positions)
    fine.settings = resolved
    if base.config.is_albert and resolved.lr is not None and not 1e-6 <= resolved.lr <= 1e-4:
        log.warning("--lr %g: ALBERT fine-tunes best between 1e-6 and 1e-4 (the ALBERT paper used 1e-5 to 5e-5)",
                    resolved.lr)
    return resolved, fine


def _labels(read: dict[str, Any], settings: FinetuneSettings) -> tuple[str, ...]:
    """The label set (the training file's, or ``--labels``); dev and test may hold no other label."""
    from zoo.training import labelled

    labels = labelled.label_set(read["train"], settings.labels)
    for split, data in read.items():
        if split != "train":
            labelled.check_labels(data, labels)
    return labels


def _plan(settings: FinetuneSettings, fine: Any) -> str:
    epochs = (settings.steps or 0) * settings.batch_size / max(fine.examples, 1)
    return (f"{settings.task}: {fine.examples} training examples, {settings.steps} steps of {settings.batch_size} "
            f"({epochs:.3g} epochs), lr {settings.lr:g}, {fine.num_labels} labels")


def _keep_best(t: Trainer, best: Best, settings: FinetuneSettings, examples: int) -> None:
    """Fine-tuning's evaluation schedule and best checkpoint, wired into the loop."""
    from zoo.training.tasks.finetuning import evaluation_steps

    best.model = t.model
    t.evaluate_at, t.on_evaluation = evaluation_steps(settings, examples), best
    t.task_state, t.restore_state, t.stopped = best.state, best.restore, lambda: best.stopped


def _test_best(t: Trainer, best: Best, fine: Finetuning) -> dict[str, Any]:
    """After training: the best dev checkpoint's weights become the model's; then the test set is evaluated with
    them. Returns what ``results.json`` and the receipt report."""
    best.load_into(t.model, t.world.device)
    t.model.eval()
    test = fine.evaluate(t.model, t.world, "test")
    results: dict[str, Any] = {"metric": best.metric, "best": best.record, "best_step": best.step}
    if test is not None:
        results["test"] = test
        t.emit(ProgressEvent("note", t.label, message="test (best checkpoint): " + scores(test)))
        t.record({"step": best.step or t.steps, **test, "time": time.time()})
    if t.world.main:
        write_json_atomic(t.run.path / "results.json", results, mode=USER_MODE)
    return results


# ----------------------------------------------------------------------------------------- base model
@dataclasses.dataclass(frozen=True)
class Base:
    """The model a run starts from, read once: a cache prune during a long run may remove its directory."""

    prepared: Prepared
    config: ModelConfig
    tokenizer: Tokenizer
    vocab: bytes
    heads: frozenset[str]
    identity: dict[str, Any]

    @property
    def name(self) -> str:
        return self.prepared.name


def _base(model: Model, world: World, *, source: int | None, offline: bool | None,
          manifests: Sequence[PathLike], emit: ProgressCallback) -> Base:
    """Download and convert the base model once: the first process does it, the others find it in the cache."""
    prepared = None
    if world.main:
        prepared = prepare(model, source=source, offline=offline, manifests=manifests, progress=emit)
    world.barrier()
    if prepared is None:
        prepared = prepare(model, source=source, offline=offline, manifests=manifests)
    config, _ = read_config(prepared.path)  # zoo's layout: zoo.weights.prepare converts every folder it accepts
    receipt = read_receipt(prepared.path) or {}
    tokenizer = build_tokenizer(prepared, config, receipt=receipt)
    from safetensors import safe_open

    with safe_open(str(prepared.path / WEIGHTS), framework="pt") as f:
        heads = frozenset(present_heads(f.keys()))
    weights = next((o["sha256"] for o in receipt.get("outputs", []) if o.get("path") == WEIGHTS), None)
    pulled = prepared.pulled
    identity = {"model": prepared.name,
                "source": pulled.source.label if pulled else (prepared.release or prepared.path).name,
                "source_sha256": pulled.sha256 if pulled else None, "weights_sha256": weights,
                "license": prepared.manifest.license if prepared.manifest else (receipt.get("base") or {}).get(
                    "license")}
    return Base(prepared, config, tokenizer, (prepared.path / VOCAB).read_bytes(), heads, identity)


def _check_setup(settings: TrainSettings, config: ModelConfig, world: World) -> None:
    """What the settings ask of the model and the processes, checked before any data is read: the batch splits
    evenly, fp16 has a GPU, the sequences fit the positions."""
    BatchSplit(settings.batch_size, world.size, world.rank, settings.grad_accum)
    if settings.dtype == "float16" and world.device.type != "cuda":
        raise UsageError("--dtype fp16 trains with a loss scaler on CUDA GPUs only",
                         hint="use --dtype bf16 (or fp32) on the CPU")
    _check_positions(settings, config)


def _check_positions(settings: TrainSettings, config: ModelConfig) -> None:
    wanted = getattr(settings, "max_position_embeddings", None)
    if wanted is not None and wanted < config.max_position_embeddings:
        raise UsageError(f"--max-position-embeddings {wanted} is smaller than the model's "
                         f"{config.max_position_embeddings}", hint="it can only grow; leave it out to keep the model's")
    limit = wanted or config.max_position_embeddings
    if settings.max_seq_length is not None and settings.max_seq_length > limit:
        extend = (f"add --max-position-embeddings {settings.max_seq_length} to extend the table (--position-init "
                  "copy|random) and train the new positions") if isinstance(settings, PretrainSettings) else \
            f"use --max-seq-length {limit} or less: longer texts are split into windows"
        raise UsageError(f"--max-seq-length {settings.max_seq_length} is longer than the model's {limit} positions",
                         hint=extend)


# ------------------------------------------------------------------------------------------- a session
def _same_data(run: RunDir, inputs: dict[str, list[Path]], resume: bool, world: World) -> dict[str, Any]:
    """The data's identity (names, sizes, sha256 of every input file); ``--resume`` refuses other data, before
    anything is read or rebuilt."""
    if not world.main:  # the first process checks and records the data; the others need not read it
        return {}
    identity = {key: file_identity(paths, key) for key, paths in inputs.items() if paths}
    if resume:
        marker = run.marker()
        changes = data_changes(marker.get("data") if marker else None, identity)
        if changes:
            raise UsageError(f"--resume: the data differ from the run's in {run.path}: {'; '.join(changes)}",
                             hint="resume with the same files, unchanged; for other data start a new run (another "
                                  "--out), e.g. from this run's last checkpoint")
    return identity


def _session(task: Task, settings: TrainSettings, steps: int, base: Base, run: RunDir, world: World,
             emit: ProgressCallback, *, identity: dict[str, Any], resume: bool, workers: int,
             on_model: Callable[[Trainer], None] | None = None,
             finish: Callable[[Trainer], dict[str, Any]] | None = None, tensorboard: PathLike | None = None) -> Trainer:
    """Check ``--resume``, build, restore, train, write: the part every task shares."""
    record = {**settings.to_dict(), "base": base.identity, "world_size": world.size}
    if world.main:
        _check_record(run, record, identity, resume, type(settings).resumable())
    world.barrier()
    positions = getattr(settings, "max_position_embeddings", None)  # pretraining may extend the table
    t = _trainer(task, settings, steps, base, run, world, emit, workers, positions)
    if on_model is not None:
        on_model(t)
    with _tensorboard(t, tensorboard):
        return _train_and_write(t, base, identity, resume, finish)


@contextlib.contextmanager
def _tensorboard(t: Trainer, directory: PathLike | None) -> Iterator[None]:
    """Every metrics record also goes to TensorBoard while the block runs (first process only)."""
    if directory is None or not t.world.main:
        yield
        return
    from zoo.plotting import TensorBoardSink

    with TensorBoardSink(directory) as sink:
        t.observers.append(sink)
        yield


def _train_and_write(t: Trainer, base: Base, identity: dict[str, Any], resume: bool,
                     finish: Callable[[Trainer], dict[str, Any]] | None) -> Trainer:
    run, world, emit = t.run, t.world, t.emit
    start = _restore(t, resume)
    run.started()
    began = time.monotonic()
    try:
        last = train(t, t.task.training_data(), start)
    except KeyboardInterrupt:
        raise _interrupted(run) from None
    results = finish(t) if finish is not None else None
    if world.main:
        _write_output(t, base, identity, last, results)
        emit(ProgressEvent("note", base.name, message=_summary(t, last, start.step, time.monotonic() - began)))
    return t


def _check_record(run: RunDir, record: dict[str, Any], identity: dict[str, Any], resume: bool,
                  resumable: frozenset[str]) -> None:
    """``--resume`` continues the same run: same settings (but the ``resumable`` ones), same data, byte for byte."""
    marker = run.marker()
    if not resume:
        run.clean()
        run.write_marker(record, identity)
        return
    assert marker is not None  # RunDir.check made sure
    saved = marker.get("settings") or {}
    record = json.loads(json.dumps(record))  # as run.json holds it (tuples are lists there)
    differ = [k for k in sorted(set(saved) | set(record)) if saved.get(k) != record.get(k)
              and k not in resumable and not (k == "base" and _same_base(saved.get(k), record.get(k)))]
    if differ:
        shown = "; ".join(f"{_what(k)}: {_shown(k, saved.get(k))} then, {_shown(k, record.get(k))} now"
                          for k in differ[:4])
        raise UsageError(f"--resume: this command differs from the run in {run.path} ({shown})",
                         hint="resume with the same settings (see its run.json), or start a new run elsewhere")
    run.clean()


def _what(key: str) -> str:
    """How a key of the run's record is named to the user."""
    return {"world_size": "processes", "base": "the base model"}.get(key) or flag(key)


def _shown(key: str, value: Any) -> str:
    if key == "base" and isinstance(value, dict):
        return f"{value.get('model')} (weights sha256 {str(value.get('weights_sha256'))[:12]}…)"
    return repr(value)


def _same_base(saved: Any, now: Any) -> bool:
    """The base is the same when its weights are (the source it was read from may move)."""
    if not isinstance(saved, dict) or not isinstance(now, dict):
        return False
    return saved.get("weights_sha256") == now.get("weights_sha256") and saved.get("model") == now.get("model")


def _trainer(task: Task, settings: TrainSettings, steps: int, base: Base, run: RunDir, world: World,
             emit: ProgressCallback, workers: int, positions: int | None) -> Trainer:
    """The model on its device (heads as the task needs, fresh weights a function of the seed), the optimizer,
    the schedule, the loss scaler and, under torchrun, DDP."""
    torch.manual_seed(_step_seed(settings.seed, -1, 0))
    config = task.output_config(base.config)  # a task head: its labels, its dropout
    same_head = (config.task, config.labels) == (base.config.task, base.config.labels)
    model = load_model(base.prepared.path / WEIGHTS, config, device=world.device, dtype="float32",
                       heads=task.heads_for(set(base.heads)), max_position_embeddings=positions,
                       position_init=getattr(settings, "position_init", "copy"), init_missing_heads=True,
                       fresh_task_head=not same_head)
    model.train().requires_grad_(True)
    task.prepare(model)
    model.gradient_checkpointing = settings.gradient_checkpointing
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer, schedule = create_optimizer(param_groups(trainable, weight_decay=settings.weight_decay),
                                           optimizer=str(settings.optimizer),  # type: ignore[arg-type]
                                           init_lr=float(settings.lr or 0), num_train_steps=steps,
                                           num_warmup_steps=settings.warmup_steps(steps),
                                           schedule="upstream" if task.name == "pretraining" else "linear")
    ddp: torch.nn.Module = model
    if world.size > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler("cuda", enabled=settings.dtype == "float16")
    return Trainer(task=task, settings=settings, steps=steps, model=model, ddp=ddp,
                   trainable=[p for _, p in trainable], optimizer=optimizer,
                   schedule=schedule, scaler=scaler, world=world, run=run, emit=emit, label=base.name,
                   workers=workers)


def _restore(t: Trainer, resume: bool) -> Start:
    """The newest checkpoint's state (re-hashed first), or step 0."""
    if not resume:
        return Start()
    latest = ckpt.read(ckpt.checkpoints(t.run.path / "checkpoints")[-1])
    if t.world.main:
        ckpt.verify(latest)
    _check_position(t, latest)
    model_state, state = ckpt.load(latest, t.world.device)
    differ = set(t.model.state_dict()) ^ set(model_state)
    if differ:
        raise CheckpointError(f"{latest.path} does not match the model ({', '.join(sorted(differ)[:3])} …)",
                              hint="the checkpoint belongs to another run")
    t.model.load_state_dict(model_state)
    t.optimizer.load_state_dict(state["optimizer"])
    t.schedule.load_state_dict(state["schedule"])
    if "scaler" in state:
        t.scaler.load_state_dict(state["scaler"])
    t.final = dict(latest.metrics)
    t.restore_state(latest.task)
    t.emit(ProgressEvent("note", t.label, message=f"resuming from step {latest.step} of {t.steps} "
                                                  f"({latest.path.name})"))
    log.info("resuming %s from step %d (%s)", t.run.path, latest.step, latest.path.name)
    if t.world.main:  # the steps after the checkpoint are trained again: their records go
        t.run.keep_metrics_until(latest.step)
    return Start(latest.step, latest.position, dict(latest.task.get("meter") or {}))


def _check_position(t: Trainer, latest: ckpt.Checkpoint) -> None:
    """The checkpoint's step and data position fit this run and its data (a position past its epoch would feed
    other examples than the run saw, silently)."""
    position = latest.position
    problem = None
    if latest.step > t.steps:
        problem = f"it records step {latest.step}, beyond --steps {t.steps}"
    elif position.consumed != latest.step * t.settings.batch_size:
        problem = f"its data position does not match step {latest.step}"
    elif position.index >= t.task.training_data().epoch_size(position.epoch):
        problem = f"its data position (example {position.index} of epoch {position.epoch}) lies beyond that epoch"
    if problem is not None:
        raise CheckpointError(f"{latest.path / ckpt.STATE}: {problem}", hint=ckpt.fallback_hint(latest.path))


# ------------------------------------------------------------------------------------------ the result
def _write_output(t: Trainer, base: Base, identity: dict[str, Any], last: int,
                  results: dict[str, Any] | None) -> None:
    """The trained model as a zoo directory in ``--out`` (weights, config, vocab) and a receipt recording the base
    model, the data (names, sizes, sha256), every setting, the final averaged metrics and evaluation results."""
    state = {k: v.detach().to("cpu", torch.float32) for k, v in t.model.state_dict().items()}
    config = t.model.config  # the task's config, with the positions trained
    kind = "pretraining" if t.task.name == "pretraining" else "finetune"
    with staged_into(t.run.path, kind=kind) as staged:
        with staged.open(WEIGHTS, "weights") as fh:
            write_state(fh, state, {"format": "pt", "zoo.trained_from": base.name})
        staged.write_json(CONFIG, config.to_dict(), "config")
        staged.write_bytes(VOCAB, base.vocab, "vocab")
        s = t.settings
        staged.receipt.update({
            "task": t.task.name,
            "base": base.identity,
            "architecture": config.architecture,
            "data": {**t.task.training_data().describe(),
                     "files": [{**f, "role": role} for role, files in identity.items() for f in files]},
            "settings": s.to_dict(),
            "world_size": t.world.size,
            "device": t.world.device.type,
            "steps": last,
            "examples": last * s.batch_size,
            "final": {k: v for k, v in t.final.items() if k not in ("time", "split")},
            "heads": sorted(present_heads(state)),
            "tokenizer": {"lowercase": base.tokenizer.lowercase, "strip_accents": base.tokenizer.strip_accents},
        })
        if kind == "finetune":
            staged.receipt.update({"labels": list(config.labels or ()), "classifier_dropout":
                                   config.classifier_dropout_prob, "results": results})
    log.info("wrote %s", t.run.path)


def _interrupted(run: RunDir) -> Interrupted:
    saved = ckpt.checkpoints(run.path / "checkpoints")
    where = (f"the last checkpoint is {saved[-1].name} in {run.path / 'checkpoints'}" if saved
             else "no checkpoint was saved yet")
    return Interrupted(f"interrupted: {where}",
                       hint="run the same command with --resume to continue" if saved else
                       "run the same command again (nothing to continue from)")


def _summary(t: Trainer, last: int, first: int, seconds: float) -> str:
    shown = ", ".join(f"{k} {v:.4g}" for k, v in t.final.items()
                      if k.endswith(("loss", "accuracy")) and isinstance(v, float))
    return (f"trained steps {first + 1}-{last} of {t.steps} in {seconds:.0f} s; last {t.final.get('steps', 1)} "
            f"step(s): {shown}; model in {t.run.path}")


__all__ = ["finetune", "pretrain"]
