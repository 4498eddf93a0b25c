"""``zoo.pretrain``: continue pretraining a released checkpoint on your own corpus, with the original objectives.

Read it top to bottom: :func:`pretrain` sets up (processes, output directory, base model, data, optimizer, a
checkpoint to resume from), :func:`_train` is the loop, :func:`_write_output` the result.

One step, on every process (``torchrun`` starts several; a plain call is one)::

    micro-batches of this process's share of the global batch  (zoo.training.data)
    count the predicted tokens and pair labels of the whole global batch (one all_reduce)
    for each micro-batch: forward (autocast), loss = Σnll / global count × world size, backward
    clip to global norm 1.0, LAMB/AdamW step, learning-rate schedule step     (zoo.training.optim)

Dividing by the global counts makes the gradient the gradient of upstream's loss on the whole global batch — mean
masked-LM NLL over its predicted positions plus mean SOP/NSP NLL over its examples — whatever the number of
processes and accumulation steps. In float, a split that adds the same micro-batch gradients in the same order
(2 processes × 1 micro-step, 1 process × 2, one thread each) ends bit for bit alike; other splits agree to
rounding (docs/pretraining.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import importlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from zoo._fs import sha256_file, write_bytes_atomic, write_json_atomic
from zoo.config import IGNORE_INDEX, ModelConfig, normalize_dtype, present_heads
from zoo.converters.layout import CONFIG, VOCAB, WEIGHTS, read_config, read_receipt, staged_into
from zoo.converters.safetensors_out import write_state
from zoo.errors import CheckpointError, DataError, UnsupportedError, UsageError
from zoo.loader import load_model, pick_device, torch_dtype
from zoo.models.losses import accuracy_count
from zoo.progress import Progress, ProgressCallback, ProgressEvent, reporting
from zoo.tokenizer import Tokenizer
from zoo.training import checkpoint as ckpt
from zoo.training.data import CorpusSource, Layout, Position, Source, TFRecordSource, loader, locate
from zoo.training.instances import OBJECTIVES
from zoo.training.optim import clip_by_global_norm, create_optimizer, param_groups
from zoo.weights import Model, Prepared, prepare

log = logging.getLogger("zoo.training")

OPTIMIZERS = ("lamb", "lamb-brightmart", "adamw")
#: Settings that may change when a run is resumed (they do not change what is computed).
_RESUMABLE_CHANGES = frozenset({"save_every", "log_every", "keep_checkpoints", "workers", "device"})


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Every setting of a run (``None``: the model family's upstream default, filled in by :meth:`resolved`)."""

    steps: int
    batch_size: int = 128
    #: tokens per example; ``None``: 128 for a corpus, the records' length for TFRecords
    max_seq_length: int | None = None
    lr: float | None = None
    warmup: int | None = None
    objective: str | None = None
    optimizer: str | None = None
    grad_accum: int = 1
    clip: float = 1.0
    dtype: str = "float32"
    seed: int = 12345
    masked_lm_prob: float = 0.15
    max_predictions: int = 20
    short_seq_prob: float = 0.1
    ngram: int | None = None
    whole_word: bool = False
    max_position_embeddings: int | None = None
    position_init: str = "copy"
    gradient_checkpointing: bool = False
    save_every: int = 1000
    log_every: int = 10
    keep_checkpoints: int = 2

    def resolved(self, architecture: str) -> TrainingConfig:
        """Fill in the family defaults: ALBERT — SOP, n-gram masking (n ≤ 3), LAMB, lr 1.76e-3 (the ALBERT
        paper's for batch 4096; scale it for smaller batches); BERT — NSP, token masking, AdamW, lr 1e-4;
        warmup 10% of the steps."""
        albert = architecture != "bert"
        values: dict[str, Any] = {
            "objective": self.objective or ("sop" if albert else "nsp"),
            "optimizer": self.optimizer or ("lamb-brightmart" if architecture == "albert-brightmart"
                                            else "lamb" if albert else "adamw"),
            "lr": self.lr if self.lr is not None else (1.76e-3 if albert else 1e-4),
            "warmup": self.warmup if self.warmup is not None else self.steps // 10,
            "ngram": self.ngram if self.ngram is not None else (3 if albert else 1),
            "dtype": normalize_dtype(self.dtype),
        }
        return dataclasses.replace(self, **values)

    def check(self) -> None:
        def positive(name: str, value: float | int) -> None:
            if not value > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")

        for name in ("steps", "batch_size", "grad_accum", "save_every", "log_every", "clip"):
            positive(name, getattr(self, name))
        if self.max_seq_length is not None:
            positive("max_seq_length", self.max_seq_length)
        if self.lr is not None and not (self.lr >= 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr must be a finite number >= 0, got {self.lr}")
        if self.warmup is not None and not 0 <= self.warmup <= self.steps:
            raise UsageError(f"--warmup must lie in [0, --steps], got {self.warmup}")
        if self.objective is not None and self.objective not in OBJECTIVES:
            raise UsageError(f"--objective {self.objective!r}", hint=f"use one of {', '.join(OBJECTIVES)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer {self.optimizer!r}", hint=f"use one of {', '.join(OPTIMIZERS)}")
        if self.position_init not in ("copy", "random"):
            raise UsageError(f"--position-init {self.position_init!r}", hint="use copy or random")
        if not 0 <= self.masked_lm_prob <= 1 or self.max_predictions < 0 or not 0 <= self.short_seq_prob <= 1:
            raise UsageError("--masked-lm-prob and --short-seq-prob lie in [0, 1]; --max-predictions is >= 0")
        if self.keep_checkpoints < 1:
            raise UsageError(f"--keep-checkpoints must be at least 1, got {self.keep_checkpoints}")


# ------------------------------------------------------------------------------------------- processes
@dataclasses.dataclass(frozen=True)
class _World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float] | torch.Tensor) -> list[float]:
        """Element-wise sum over the processes (float64 on the process's device)."""
        t = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        if self.size > 1:
            torch.distributed.all_reduce(t)
        totals: list[float] = t.tolist()
        return totals


@contextlib.contextmanager
def _joined(device: str | torch.device) -> Iterator[_World]:
    """This process's place: one process, or one of ``torchrun``'s (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``).

    A process group created here is destroyed on the way out, success or failure. Left alive until the interpreter
    exits, a gloo worker thread still releasing the last collective's tensors needs the GIL while Python finalizes,
    and the process dies of SIGABRT ("terminate called without an active exception").
    """
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        yield _World(0, 1, 0, pick_device(device))
        return
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    created = not torch.distributed.is_initialized()
    if created:
        # DDP imports it; imported after the group exists, its functions' `group=WORLD` defaults would keep it alive
        importlib.import_module("torch.distributed.nn")
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield _World(rank, size, local, dev)
    finally:
        if created:
            gc.collect()  # the DDP wrapper (let go by _Run.close) holds the group in a reference cycle
            torch.distributed.destroy_process_group()  # last reference: joins the group's threads


# -------------------------------------------------------------------------------------------- pretrain
def pretrain(model: Model, *, out: str | os.PathLike[str], steps: int, corpus: Sequence[str | os.PathLike[str]] = (),
             tfrecords: Sequence[str | os.PathLike[str]] = (), resume: bool = False, device: str = "auto",
             workers: int = 1, source: int | None = None, offline: bool | None = None,
             manifests: Sequence[str | os.PathLike[str]] = (), progress: Progress = None,
             **settings: Any) -> Path:
    """Continue pretraining ``model`` (anything :func:`zoo.load` takes) and write the result into ``out``.

    Data: ``corpus`` — plain-text files (UTF-8, one sentence per line, a blank line between documents; ``.gz``
    too) — or ``tfrecords`` written by upstream ``create_pretraining_data.py``. ``settings`` are the fields of
    :class:`TrainingConfig` (``batch_size`` is the global batch, ``lr``, ``warmup``, ``objective`` ``sop``/``nsp``
    /``mlm``, ``optimizer`` ``lamb``/``adamw``, ``dtype``, ``max_position_embeddings``, ``save_every`` …).
    ``resume=True`` continues the run in ``out`` from its newest checkpoint, exactly. Under ``torchrun`` every
    process calls this; only the first writes. Returns ``out``: a directory :func:`zoo.load`, ``zoo run``,
    ``zoo export`` and ``zoo mirror`` accept, with ``receipt.json`` saying how it was made.
    """
    config = TrainingConfig(steps=steps, **settings)
    config.check()
    if bool(corpus) == bool(tfrecords):
        raise UsageError("give the training data as corpus files or as TFRecord files (one of the two)",
                         hint="zoo pretrain MODEL --corpus FILE... or --tfrecord FILE...")
    out_dir = Path(out)
    with _joined(device) as world, reporting(progress if world.main else False) as emit:
        prepared = _prepare_base(model, world, source=source, offline=offline, manifests=manifests, emit=emit)
        base_config, layout = read_config(prepared.path)
        if layout != "zoo":
            raise UnsupportedError(f"{prepared.path} holds transformers-named weights (an hf export)",
                                   hint="train from the registry model or from the `zoo convert` directory it "
                                        "came from")
        config = config.resolved(base_config.architecture)
        if corpus and config.max_seq_length is None:
            config = dataclasses.replace(config, max_seq_length=128)
        run = _Run(config, base_config, prepared, out_dir, world, emit)
        run.check_positions()
        Layout(config.batch_size, world.size, world.rank, config.grad_accum)  # a bad split fails before anything
        if config.dtype == "float16" and world.device.type != "cuda":
            raise UsageError("--dtype fp16 trains with a loss scaler on CUDA GPUs only",
                             hint="use --dtype bf16 (or fp32) on the CPU")
        run.open_output(resume)
        try:
            source_data = run.data(corpus, tfrecords)
            if config.max_seq_length is None:  # from the TFRecords
                run.config = config = dataclasses.replace(config, max_seq_length=source_data.max_seq_length)
                run.check_positions()
            run.build_model()
            start = run.restore(resume)
            _train(run, source_data, start, workers=workers)
            if world.main:
                _write_output(run)
        finally:
            run.close()
        world.barrier()
    return out_dir


def _prepare_base(model: Model, world: _World, *, source: int | None, offline: bool | None,
                  manifests: Sequence[str | os.PathLike[str]], emit: ProgressCallback) -> Prepared:
    """Download and convert the base model once: the first process does it, the others find it in the cache."""
    prepared = None
    if world.main:
        prepared = prepare(model, source=source, offline=offline, manifests=manifests, progress=emit)
    world.barrier()
    if prepared is None:
        prepared = prepare(model, source=source, offline=offline, manifests=manifests)
    return prepared


class _Run:
    """The state of one training run: settings, base model, output directory, model, optimizer."""

    def __init__(self, config: TrainingConfig, base_config: ModelConfig, prepared: Prepared, out: Path,
                 world: _World, emit: ProgressCallback) -> None:
        self.config, self.base_config, self.prepared, self.out, self.world, self.emit = (
            config, base_config, prepared, out, world, emit)
        self.name = prepared.name
        self.model_config = base_config
        if config.max_position_embeddings is not None:
            self.model_config = dataclasses.replace(base_config,
                                                    max_position_embeddings=config.max_position_embeddings)
        receipt = read_receipt(prepared.path) or {}
        lowercase, strip_accents = prepared.tokenizer_options(receipt)
        self.tokenizer = Tokenizer.from_file(prepared.path / VOCAB, lowercase=lowercase, strip_accents=strip_accents,
                                             model_max_length=self.model_config.max_position_embeddings)
        # read now what the result needs from the base directory: a cache prune during a long run may remove it
        self.vocab_bytes = (prepared.path / VOCAB).read_bytes()
        self.base = self._base_identity(receipt)
        self.data_description: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self.lock: Any = None

    # ------------------------------------------------------------------------------------- settings
    def settings(self) -> dict[str, Any]:
        """What defines the run (compared on resume)."""
        return {**dataclasses.asdict(self.config), "base": self.base, "world_size": self.world.size}

    def _base_identity(self, receipt: dict[str, Any]) -> dict[str, Any]:
        weights = next((o["sha256"] for o in receipt.get("outputs", []) if o.get("path") == WEIGHTS), None)
        return {"model": self.name, "source": self.prepared.pulled.source.label if self.prepared.pulled else
                str(self.prepared.release or self.prepared.path),
                "source_sha256": self.prepared.pulled.sha256 if self.prepared.pulled else None,
                "weights_sha256": weights}

    def check_positions(self) -> None:
        limit = self.model_config.max_position_embeddings
        if self.config.max_position_embeddings is not None and \
                self.config.max_position_embeddings < self.base_config.max_position_embeddings:
            raise UsageError(f"--max-position-embeddings {self.config.max_position_embeddings} is smaller than the "
                             f"model's {self.base_config.max_position_embeddings}",
                             hint="it can only grow; leave it out to keep the model's")
        if self.config.max_seq_length is not None and self.config.max_seq_length > limit:
            raise UsageError(f"--max-seq-length {self.config.max_seq_length} is longer than the model's {limit} "
                             "positions",
                             hint=f"add --max-position-embeddings {self.config.max_seq_length} to extend the table "
                                  "(--position-init copy|random) and train the new positions")

    # --------------------------------------------------------------------------------------- output
    def open_output(self, resume: bool) -> None:
        """Claim ``out`` for this run (one run at a time: ``out/run.lock``), check it against ``--resume``."""
        run_file = self.out / "run.json"
        if self.world.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self.lock = _claim(self.out)
            existing = ckpt.checkpoints(self.out / "checkpoints")
            if resume:
                if not existing:
                    raise UsageError(f"{self.out} holds no checkpoint to resume from",
                                     hint="run without --resume to start a new run")
                _check_same_run(json.loads(run_file.read_text(encoding="utf-8")) if run_file.is_file() else {},
                                self.settings(), self.out)
            elif existing or (self.out / WEIGHTS).exists():
                raise UsageError(f"{self.out} already holds a training run",
                                 hint="continue it with --resume, or choose another --out directory")
            elif run_file.exists():  # a run that stopped before its first checkpoint: nothing to keep
                log.info("%s: the previous run stopped before its first checkpoint; starting afresh", self.out)
                (self.out / "metrics.jsonl").unlink(missing_ok=True)
            ckpt.clean_staging(self.out / "checkpoints")
            write_json_atomic(run_file, self.settings())
        self.world.barrier()

    def close(self) -> None:
        self.__dict__.pop("ddp", None)  # it holds the process group, which _joined destroys
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ----------------------------------------------------------------------------------------- data
    def data(self, corpus: Sequence[str | os.PathLike[str]], tfrecords: Sequence[str | os.PathLike[str]]) -> Source:
        from zoo.training.corpus import TokenizedCorpus, prepare_corpus
        from zoo.training.instances import InstanceSampler
        from zoo.training.masking import ExampleBuilder, MaskingConfig

        cfg = self.config
        if tfrecords:
            source: Source = TFRecordSource([Path(f) for f in tfrecords], seed=cfg.seed,
                                            vocab_size=self.model_config.vocab_size,
                                            max_seq_length=cfg.max_seq_length)
        else:
            words: Literal["wordpiece", "jieba"] = "jieba" if cfg.whole_word else "wordpiece"
            key = hashlib.sha256(json.dumps([str(Path(f).resolve()) for f in corpus]).encode()).hexdigest()[:16]
            directory = self.out / "data" / f"corpus-{key}-{words}"

            def tokenizing(done: int, total: int | None) -> None:
                self.emit(ProgressEvent("tokenize", "corpus", done=done, total=total))

            tokenized = None
            if self.world.main:
                tokenized = prepare_corpus([Path(f) for f in corpus], self.tokenizer, directory, words=words,
                                           on_progress=tokenizing)
                self.emit(ProgressEvent("done", "corpus"))
            self.world.barrier()
            if tokenized is None:  # the first process built or checked it
                tokenized = TokenizedCorpus.open(directory)
            assert cfg.max_seq_length is not None
            sampler = InstanceSampler(tokenized, objective=cfg.objective, max_seq_length=cfg.max_seq_length,  # type: ignore[arg-type]
                                      short_seq_prob=cfg.short_seq_prob, seed=cfg.seed)
            masking = MaskingConfig(max_seq_length=cfg.max_seq_length, masked_lm_prob=cfg.masked_lm_prob,
                                    max_predictions_per_seq=cfg.max_predictions, ngram=int(cfg.ngram or 1),
                                    whole_word=cfg.whole_word or int(cfg.ngram or 1) > 1)
            builder = ExampleBuilder.from_tokenizer(self.tokenizer, masking, seed=cfg.seed)
            source = CorpusSource(tokenized, sampler, builder)
        self.data_description = source.describe()
        return source

    # ---------------------------------------------------------------------------------------- model
    def build_model(self) -> None:
        cfg, world = self.config, self.world
        pair = cfg.objective != "mlm"
        heads = "pretraining" if (pair or "seq_relationship" in _heads_in(self.prepared.path / WEIGHTS)) else "mlm"
        torch.manual_seed(_step_seed(cfg.seed, -1, 0))  # fresh heads and new positions: a function of --seed
        self.model = load_model(self.prepared.path / WEIGHTS, self.base_config, device=world.device, dtype="float32",
                                heads=heads, max_position_embeddings=cfg.max_position_embeddings,
                                position_init=cfg.position_init, init_missing_heads=True)
        self.model.train().requires_grad_(True)
        if not pair:  # nothing trains them: leave them as they are (and out of the gradient all-reduce)
            for module in (self.model.pooler, getattr(self.model, "seq_relationship", None)):
                if module is not None:
                    module.requires_grad_(False)
        self.model.gradient_checkpointing = cfg.gradient_checkpointing
        trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.optimizer, self.schedule = create_optimizer(param_groups(trainable), optimizer=cfg.optimizer,  # type: ignore[arg-type]
                                                         init_lr=float(cfg.lr or 0), num_train_steps=cfg.steps,
                                                         num_warmup_steps=int(cfg.warmup or 0))
        self.trainable = [p for _, p in trainable]
        self.ddp: torch.nn.Module = self.model
        if world.size > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.dtype == "float16")

    # --------------------------------------------------------------------------------------- resume
    def restore(self, resume: bool) -> tuple[int, Position]:
        if not resume:
            return 0, Position()
        latest = ckpt.checkpoints(self.out / "checkpoints")[-1]
        model_state, state = ckpt.load(latest, self.world.device)
        missing = set(self.model.state_dict()) ^ set(model_state)
        if missing:
            raise CheckpointError(f"{latest.path} does not match the model ({', '.join(sorted(missing)[:3])} …)",
                                  hint="the checkpoint belongs to another run")
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        log.info("resuming %s from step %d (%s)", self.out, latest.step, latest.path.name)
        self.final = dict(latest.metrics)
        if self.world.main:  # the steps after the checkpoint are trained again: their records go
            metrics = self.out / "metrics.jsonl"
            if metrics.is_file():
                kept = []
                for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
                    try:
                        if json.loads(line).get("step", 0) <= latest.step:
                            kept.append(line)
                    except (ValueError, AttributeError):
                        continue  # a line cut short by a crash or a full disk
                write_bytes_atomic(metrics, "".join(line + "\n" for line in kept).encode("utf-8"))
        return latest.step, latest.position

    def save(self, step: int, position: Position) -> None:
        if not self.world.main:
            return
        optimizer = {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                     "scaler": self.scaler.state_dict()}
        ckpt.save(self.out / "checkpoints", step=step, position=position, settings=self.settings(),
                  model=self.model.state_dict(), optimizer=optimizer, keep=self.config.keep_checkpoints,
                  metrics=self.final)


def _claim(out: Path) -> Any:
    """An exclusive lock on ``out/run.lock`` for the whole run: two runs never share an output directory."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / "run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(f"another zoo pretrain is running in {out}",
                         hint="wait for it to finish, or choose another --out directory") from None
    return lock


def _check_same_run(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    differ = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} then, {now.get(k)!r} now" for k in differ[:4])
        raise UsageError(f"--resume: this command differs from the run in {out} ({shown})",
                         hint="resume with the same settings (see its run.json), or start a new run elsewhere")


def _heads_in(weights: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return present_heads(f.keys())


# -------------------------------------------------------------------------------------------- the loop
def _train(run: _Run, source: Source, start: tuple[int, Position], *, workers: int) -> None:
    cfg, world = run.config, run.world
    step, position = start
    layout = Layout(cfg.batch_size, world.size, world.rank, cfg.grad_accum)
    if step >= cfg.steps:
        log.info("%s: already at step %d of %d", run.out, step, cfg.steps)
        return
    batches = loader(source, layout, position, workers=workers)
    metrics = open(run.out / "metrics.jsonl", "a", encoding="utf-8") if world.main else None  # noqa: SIM115
    compute_dtype = torch_dtype(cfg.dtype)
    window = _Window()
    try:
        while step < cfg.steps:
            micro = [next(batches) for _ in range(cfg.grad_accum)]
            assert all(s == step for s, _, _ in micro), "data out of step"  # a bug, never user input
            n_mlm, n_pair = world.sum([  # counted on the CPU tensors: no wait for the device
                float(sum(int((m["labels"] != IGNORE_INDEX).sum()) for _, _, m in micro)),
                float(sum(int((m["seq_relationship_label"] != IGNORE_INDEX).sum()) for _, _, m in micro))])
            tensors = [{k: v.to(world.device, non_blocking=True) for k, v in m.items()} for _, _, m in micro]
            torch.manual_seed(_step_seed(cfg.seed, step, world.rank))  # dropout: a function of (seed, step, rank)
            # mlm nll, pair nll, mlm correct, pair correct, real tokens: kept on the device, read once a step
            sums = torch.zeros(5, dtype=torch.float64, device=world.device)
            for i, batch in enumerate(tensors):
                sync = i == len(tensors) - 1
                with (contextlib.nullcontext() if sync or world.size == 1 else _no_sync(run.ddp)), \
                        torch.autocast(world.device.type, dtype=compute_dtype,
                                       enabled=compute_dtype != torch.float32):
                    out = run.ddp(batch["input_ids"], attention_mask=batch["attention_mask"],
                                  token_type_ids=batch["token_type_ids"], labels=batch["labels"],
                                  seq_relationship_labels=batch["seq_relationship_label"]
                                  if cfg.objective != "mlm" else None, loss_reduction="sum")
                    loss = out.mlm_loss / max(n_mlm, 1.0)
                    if out.seq_relationship_loss is not None:
                        loss = loss + out.seq_relationship_loss / max(n_pair, 1.0)
                run.scaler.scale(loss * world.size).backward()
                pair_nll = out.seq_relationship_loss if out.seq_relationship_loss is not None else sums.new_zeros(())
                sums += torch.stack([
                    out.mlm_loss.detach().double(), pair_nll.detach().double(),
                    _correct(out.masked_lm_logits, batch["labels"][batch["labels"] != IGNORE_INDEX]),
                    _correct(out.seq_relationship_logits if cfg.objective != "mlm" else None,
                             batch["seq_relationship_label"]),
                    batch["attention_mask"].sum().double()])
            run.scaler.unscale_(run.optimizer)
            norm = float(clip_by_global_norm(run.trainable, cfg.clip))
            lr = run.optimizer.param_groups[0]["lr"]
            if math.isfinite(norm) or cfg.dtype == "float16":
                run.scaler.step(run.optimizer)
            else:
                log.warning("step %d: the gradient norm is %s; the update is skipped", step, norm)
            run.scaler.update()
            run.optimizer.zero_grad(set_to_none=True)
            run.schedule.step()
            step += 1
            totals = world.sum(sums)
            window.add(totals[4], cfg.batch_size)
            record = _metrics(step, totals, n_mlm, n_pair, lr, norm, window, cfg.objective)
            run.final = record
            if metrics is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            run.emit(ProgressEvent("train", run.name, done=step, total=cfg.steps, unit="step",
                                   postfix={"loss": round(record["loss"], 4), "tok/s": int(record["tokens_per_s"])}))
            if not math.isfinite(record["loss"]):
                raise DataError(f"training diverged at step {step} (loss {record['loss']})",
                                hint="start a new run (another --out) with a lower --lr or a longer --warmup"
                                     + ("" if cfg.dtype == "float32" else ", or --dtype fp32")
                                     + "; --resume would repeat the same steps exactly")
            if step % cfg.save_every == 0 or step == cfg.steps:
                position = locate(source, step * cfg.batch_size, since=position)
                run.save(step, position)
    finally:
        if metrics is not None:
            metrics.close()
        close = getattr(batches, "close", None)
        if callable(close):
            close()
    run.emit(ProgressEvent("done", run.name))


def _no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
    """DDP's ``no_sync``: accumulate this micro-batch's gradients locally, all-reduce on the last one."""
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    return model.no_sync()


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{step}:{rank}".encode()).digest()[:8], "little") >> 1


def _correct(logits: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """How many of ``targets`` the logits predict (float64, on their device); 0 without logits or targets."""
    if logits is None or not targets.numel():
        return torch.zeros((), dtype=torch.float64, device=targets.device)
    return accuracy_count(logits, targets).double()


class _Window:
    """Throughput over the last few steps."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, int]] = []

    def add(self, tokens: float, examples: int) -> None:
        self.samples.append((time.monotonic(), tokens, examples))
        self.samples = self.samples[-20:]

    def rates(self) -> tuple[float, float]:
        if len(self.samples) < 2:
            return 0.0, 0.0
        elapsed = max(self.samples[-1][0] - self.samples[0][0], 1e-9)
        tokens = sum(t for _, t, _ in self.samples[1:])
        examples = sum(e for _, _, e in self.samples[1:])
        return tokens / elapsed, examples / elapsed


def _metrics(step: int, totals: list[float], n_mlm: float, n_pair: float, lr: float, norm: float,
             window: _Window, objective: str | None) -> dict[str, Any]:
    mlm = totals[0] / max(n_mlm, 1.0)
    record: dict[str, Any] = {"step": step, "mlm_loss": mlm, "mlm_accuracy": totals[2] / max(n_mlm, 1.0)}
    loss = mlm
    if objective != "mlm":
        pair = totals[1] / max(n_pair, 1.0)
        record[f"{objective}_loss"] = pair
        record[f"{objective}_accuracy"] = totals[3] / max(n_pair, 1.0)
        loss += pair
    tokens_per_s, examples_per_s = window.rates()
    record.update(loss=loss, lr=lr, grad_norm=norm, tokens_per_s=tokens_per_s, examples_per_s=examples_per_s,
                  time=time.time())
    return record


# ------------------------------------------------------------------------------------------ the result
def _write_output(run: _Run) -> None:
    """The trained model as a zoo directory in ``out`` (weights with the pretraining heads, config, vocab) and a
    receipt recording the base model, the data, every setting and the final losses."""
    cfg = run.config
    state = {k: v.detach().to("cpu", torch.float32) for k, v in run.model.state_dict().items()}
    vocab = run.vocab_bytes
    with staged_into(run.out, kind="pretraining") as staged:
        with staged.open(WEIGHTS, "weights") as fh:
            write_state(fh, state, {"format": "pt", "zoo.trained_from": run.name})
        staged.write_json(CONFIG, run.model_config.to_dict(), "config")
        staged.write_bytes(VOCAB, vocab, "vocab")
        lowercase, strip_accents = run.tokenizer.lowercase, run.tokenizer.strip_accents
        staged.receipt.update({
            "base": run.base,
            "architecture": run.model_config.architecture,
            "data": _data_receipt(run.data_description),
            "settings": dataclasses.asdict(cfg),
            "world_size": run.world.size,
            "device": run.world.device.type,
            "steps": cfg.steps,
            "examples": cfg.steps * cfg.batch_size,
            "final": {k: v for k, v in run.final.items() if k != "time"},
            "heads": sorted(present_heads(state)),
            "tokenizer": {"lowercase": lowercase, "strip_accents": strip_accents},
        })
    log.info("wrote %s", run.out)


def _data_receipt(description: dict[str, Any]) -> dict[str, Any]:
    data = dict(description)
    if data.get("kind") == "tfrecord":
        data["files"] = [{"path": f, "sha256": sha256_file(Path(f))[0]} for f in data["files"]]
    return data


def iter_metrics(out: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``."""
    with open(Path(out) / "metrics.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


__all__ = ["OBJECTIVES", "OPTIMIZERS", "TrainingConfig", "iter_metrics", "pretrain"]
