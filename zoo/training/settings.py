"""Every setting of a training run, defined once: its type, default, bounds, choices and help.

``zoo pretrain`` and ``zoo finetune`` generate their command-line flags from these dataclasses
(:func:`add_arguments`), ``zoo.pretrain``/``zoo.finetune`` take the same names as keywords, the run's
``run.json`` and receipt record them, and ``--resume`` compares them. Pure Python: the CLI imports it without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Any, Literal

from zoo.config import DTYPES, normalize_dtype
from zoo.errors import UsageError

#: Optimizers by name. ``adamweightdecay`` is google-research/bert's AdamWeightDecay (no bias correction);
#: ``adamw`` is torch's AdamW (with bias correction); ``lamb`` google-research/albert's; ``lamb-brightmart``
#: brightmart's albert_zh LAMB (trust ratio on every parameter).
OPTIMIZERS: tuple[str, ...] = ("lamb", "lamb-brightmart", "adamweightdecay", "adamw")
OBJECTIVES: tuple[str, ...] = ("sop", "nsp", "mlm")
POSITION_INITS: tuple[str, ...] = ("copy", "random")
#: Fine-tuning tasks; each is also the name of the head it trains (``zoo.load(..., heads=TASK)``).
TASKS: tuple[str, ...] = ("token-classification", "sequence-classification")
TAG_SCHEMES: tuple[str, ...] = ("bio", "bioes")
#: The longest position table ``--max-position-embeddings`` may ask for (its memory grows linearly with it).
MAX_POSITIONS = 32768


@dataclasses.dataclass(frozen=True)
class Option:
    """What the command line and the checks need to know about a setting."""

    help: str
    group: str = "optimization"
    minimum: float | None = None
    maximum: float | None = None
    #: the minimum itself is not allowed (e.g. a positive clip norm)
    above: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    #: may differ when a run is resumed: it does not change what is computed
    resumable: bool = False


def option(default: Any, help: str, **meta: Any) -> Any:
    return dataclasses.field(default=default, metadata={"zoo": Option(help, **meta)})


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Settings every training job shares. ``None`` means: the task's and the model family's default, filled in
    by :meth:`resolved` before the run starts."""

    batch_size: int = option(32, "global batch: split over processes and --grad-accum micro-steps",
                             minimum=1, maximum=1 << 20, metavar="N")
    grad_accum: int = option(1, "micro-steps per step", minimum=1, maximum=4096, metavar="N")
    max_seq_length: int | None = option(None, "tokens per example", group="data", minimum=8, maximum=MAX_POSITIONS,
                                        metavar="N")
    lr: float | None = option(None, "peak learning rate", minimum=0.0, maximum=10.0, metavar="LR")
    warmup: int | None = option(None, "linear warmup steps (default: --warmup-ratio of the steps)", minimum=0,
                                metavar="N")
    warmup_ratio: float = option(0.1, "warmup as a fraction of the steps, when --warmup is not given", minimum=0.0,
                                 maximum=1.0, metavar="R")
    optimizer: str | None = option(None, "optimizer", choices=OPTIMIZERS)
    weight_decay: float = option(0.01, "weight decay (not on LayerNorm and bias parameters)", minimum=0.0,
                                 maximum=1.0, metavar="W")
    clip: float = option(1.0, "global gradient norm clip", minimum=0.0, above=True, maximum=1e6, metavar="NORM")
    dtype: str = option("float32", "compute precision: fp32, bf16, fp16 (CUDA; with a loss scaler)",
                        choices=tuple(DTYPES), metavar="DTYPE")
    seed: int = option(12345, "seed of data order, masks, fresh weights and dropout", group="data", minimum=0,
                       maximum=2**63 - 1)
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory, ~30%% "
                                                 "slower)")
    save_every: int | None = option(None, "checkpoint every N steps", group="run", minimum=1, metavar="N",
                                    resumable=True)
    log_every: int = option(10, "a metrics.jsonl record (averages since the last one) every N steps", group="run",
                            minimum=1, metavar="N", resumable=True)
    keep_checkpoints: int = option(2, "checkpoints kept", group="run", minimum=1, maximum=10_000, metavar="N",
                                   resumable=True)

    # ------------------------------------------------------------------------------------------ checks
    def check(self) -> None:
        """Every value of its type, within its bounds and among its choices (a :class:`UsageError` naming the
        flag otherwise)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_value(f, hints[f.name], getattr(self, f.name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def resumable(cls) -> frozenset[str]:
        """The settings that may change when a run is resumed: they do not change what is computed."""
        return frozenset(f.name for f in dataclasses.fields(cls) if _meta(f).resumable)

    def warmup_steps(self, steps: int) -> int:
        return self.warmup if self.warmup is not None else int(steps * self.warmup_ratio + 1e-9)


@dataclasses.dataclass(frozen=True)
class PretrainSettings(TrainSettings):
    """``zoo pretrain``: continued pretraining with the original objectives."""

    steps: int | None = option(None, "training steps (global batches); required", minimum=1, maximum=10**9,
                               metavar="N")
    batch_size: int = option(128, "global batch: split over processes and --grad-accum micro-steps",
                             minimum=1, maximum=1 << 20, metavar="N")
    max_seq_length: int | None = option(None, "tokens per example (default 128; TFRecords: their length)",
                                        group="data", minimum=8, maximum=MAX_POSITIONS, metavar="N")
    lr: float | None = option(None, "peak learning rate (default: 1.76e-3 ALBERT, 1e-4 BERT)", minimum=0.0,
                              maximum=10.0, metavar="LR")
    optimizer: str | None = option(None, "default: lamb (ALBERT), lamb-brightmart (brightmart's ALBERT), "
                                         "adamweightdecay (BERT)", choices=OPTIMIZERS)
    objective: str | None = option(None, "sentence pair objective (default: sop for ALBERT, nsp for BERT)",
                                   group="data", choices=OBJECTIVES)
    masked_lm_prob: float = option(0.15, "masked fraction", group="data", minimum=0.0, above=True, maximum=1.0,
                                   metavar="P")
    max_predictions: int = option(20, "most masked positions per example", group="data", minimum=1,
                                  maximum=MAX_POSITIONS, metavar="N")
    short_seq_prob: float = option(0.1, "probability of a shorter example", group="data", minimum=0.0, maximum=1.0,
                                   metavar="P")
    ngram: int | None = option(None, "longest masked n-gram (default: 3 ALBERT, 1 BERT)", group="data", minimum=1,
                               maximum=8, metavar="N")
    whole_word: bool = option(False, "Chinese whole-word masking: words from jieba are masked together",
                              group="data")
    max_position_embeddings: int | None = option(None, "extend the position table to N before training (for a "
                                                       "longer --max-seq-length)", group="model", minimum=8,
                                                 maximum=MAX_POSITIONS, metavar="N")
    position_init: str = option("copy", "new positions: copies of the learned table, or random", group="model",
                                choices=POSITION_INITS)
    save_every: int | None = option(1000, "checkpoint (and held-out evaluation) every N steps", group="run",
                                    minimum=1, metavar="N", resumable=True)

    def check(self) -> None:
        super().check()
        if self.steps is None:
            raise UsageError("--steps is required: how many global batches to train",
                             hint="e.g. --steps 1000 (docs/pretraining.md)")
        if self.warmup is not None and self.warmup > self.steps:
            raise UsageError(f"--warmup must lie in [0, --steps], got {self.warmup}")

    def resolved(self, architecture: str, *, max_seq_length: int | None = None) -> PretrainSettings:
        """The family defaults filled in: ALBERT — SOP, n-gram masking (n ≤ 3), LAMB, lr 1.76e-3 (the ALBERT
        paper's for batch 4096; scale it for smaller batches); BERT — NSP, token masking, AdamWeightDecay, lr 1e-4;
        warmup 10% of the steps; ``max_seq_length`` 128, or the TFRecords' length."""
        albert = architecture != "bert"
        assert self.steps is not None
        values: dict[str, Any] = {
            "objective": self.objective or ("sop" if albert else "nsp"),
            "optimizer": self.optimizer or ("lamb-brightmart" if architecture == "albert-brightmart"
                                            else "lamb" if albert else "adamweightdecay"),
            "lr": self.lr if self.lr is not None else (1.76e-3 if albert else 1e-4),
            "warmup": self.warmup_steps(self.steps),
            "ngram": self.ngram if self.ngram is not None else (3 if albert else 1),
            "dtype": normalize_dtype(self.dtype),
            "max_seq_length": self.max_seq_length or max_seq_length or 128,
        }
        return dataclasses.replace(self, **values)


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(TrainSettings):
    """``zoo finetune``: train a task head (and the encoder) on labelled data."""

    task: str | None = option(None, "what to learn; required", group="task", choices=TASKS)
    epochs: float = option(3.0, "passes over the training data", minimum=0.0, above=True, maximum=10_000,
                           metavar="N")
    steps: int | None = option(None, "training steps (global batches) instead of --epochs", minimum=1,
                               maximum=10**9, metavar="N")
    lr: float | None = option(None, "peak learning rate (5e-5)", minimum=0.0, maximum=10.0, metavar="LR")
    optimizer: str | None = option(None, "adamw (torch's, with bias correction; default) or adamweightdecay "
                                         "(upstream TF's run_classifier.py)", choices=OPTIMIZERS)
    max_seq_length: int | None = option(None, "tokens per window: longer texts are split into overlapping windows "
                                              "(default 128, or the model's positions when fewer)", group="data",
                                        minimum=8, maximum=MAX_POSITIONS, metavar="N")
    stride: int | None = option(None, "tokens two windows of a long text share (default: a quarter of "
                                      "--max-seq-length)", group="data", minimum=0, maximum=MAX_POSITIONS,
                                metavar="N")
    classifier_dropout: float = option(0.1, "dropout before the task head", group="model", minimum=0.0,
                                       maximum=0.99, metavar="P")
    labels: tuple[str, ...] | None = option(None, "the label set, in id order (default: as they appear in --train)",
                                            group="task", metavar="LABEL")
    tag_scheme: str = option("bio", "the tags the model learns, whatever the files use (bio: transformers pipelines "
                                    "can aggregate them)", group="task", choices=TAG_SCHEMES)
    format: str | None = option(None, "the data files' format (default: told from extension and content)",
                                group="task", choices=("conll", "jsonl", "csv", "tsv"))
    input_scheme: str | None = option(None, "CoNLL: the files' tag scheme (default: told from the tags)",
                                      group="task", choices=("bio", "iob1", "io", "bioes", "bmes"))
    text_column: str | None = option(None, "CSV/TSV: the column holding the text", group="task", metavar="NAME")
    entity_column: str | None = option(None, "CSV/TSV: the column holding the entity strings", group="task",
                                       metavar="NAME")
    entity_label: str | None = option(None, "CSV/TSV: the label of those entities", group="task", metavar="LABEL")
    entity_sep: str | None = option(None, "CSV/TSV: separator of several entities in one cell", group="task",
                                    metavar="SEP")
    eval_every: int | None = option(None, "evaluate on --dev every N steps (default: after each epoch)",
                                    group="run", minimum=1, metavar="N")
    metric: str | None = option(None, "dev metric that picks the best checkpoint (default: f1 for tags, accuracy "
                                      "for texts)", group="run", choices=("f1", "precision", "recall", "accuracy",
                                                                          "macro_f1", "loss"))
    patience: int | None = option(None, "stop after K evaluations without improvement", group="run", minimum=1,
                                  metavar="K")

    def check(self) -> None:
        super().check()
        if self.task is None:
            raise UsageError("--task is required", hint=f"use one of {', '.join(TASKS)}")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise UsageError("--labels names a label twice")
        length = self.max_seq_length or 128
        if self.stride is not None and self.stride > length // 2:
            raise UsageError(f"--stride {self.stride} must be at most half of --max-seq-length ({length // 2})")
        allowed = _TASK_METRICS[self.task]
        if self.metric is not None and self.metric not in allowed:
            raise UsageError(f"--metric {self.metric} is not a {self.task} metric",
                             hint=f"use one of {', '.join(allowed)}")

    def resolved(self, architecture: str, *, examples: int, positions: int = 512) -> FinetuneSettings:
        """Defaults filled in from the model and the data: windows of 128 tokens (fewer when the model has fewer
        ``positions``), the steps of ``epochs`` passes over ``examples`` training examples (or windows), warmup,
        lr 5e-5, AdamW (torch), the stride, the metric."""
        steps = self.steps or max(1, math.ceil(self.epochs * examples / self.batch_size))
        length = self.max_seq_length or min(128, positions)
        values: dict[str, Any] = {
            "steps": steps,
            "warmup": self.warmup_steps(steps),
            "lr": self.lr if self.lr is not None else 5e-5,
            "optimizer": self.optimizer or "adamw",
            "stride": self.stride if self.stride is not None else length // 4,
            "metric": self.metric or ("f1" if self.task == "token-classification" else "accuracy"),
            "dtype": normalize_dtype(self.dtype),
            "max_seq_length": length,
        }
        resolved = dataclasses.replace(self, **values)
        if resolved.warmup is not None and resolved.warmup > steps:
            raise UsageError(f"--warmup {resolved.warmup} is longer than the run ({steps} steps)",
                             hint="give fewer warmup steps, or --warmup-ratio")
        return resolved


#: The evaluation metrics of each fine-tuning task (``--metric`` picks the best checkpoint by one of them).
_TASK_METRICS = {"token-classification": ("f1", "precision", "recall", "loss"),
                 "sequence-classification": ("accuracy", "macro_f1", "loss")}


# ------------------------------------------------------------------------------------ the command line
def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser, cls: type[TrainSettings],
                  groups: dict[str, argparse._ArgumentGroup]) -> None:
    """One flag per field of ``cls``, in ``groups`` by each option's group. Every default is ``None`` on the
    parser, so :func:`from_arguments` passes on only what was given (the dataclass holds the defaults)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta, kind = _meta(f), _base_type(hints[f.name])
        default = "" if f.default is None or f.default is False else f" ({f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": meta.help + default}
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=kind if kind in (int, float) else str, metavar=meta.metavar)
            if meta.choices and f.name != "dtype":
                kwargs.update(choices=meta.choices, metavar=None)
            if _is_sequence(hints[f.name]):
                kwargs["nargs"] = "+"
        groups[meta.group].add_argument(flag(f.name), **kwargs)


def from_arguments(args: argparse.Namespace, cls: type[TrainSettings]) -> dict[str, Any]:
    """The settings given on the command line, as keywords for ``cls``."""
    given = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None and value is not False:
            given[f.name] = tuple(value) if isinstance(value, list) else value
    return given


def make(cls: type[SettingsT], settings: dict[str, Any]) -> SettingsT:
    """``cls(**settings)``, with unknown names a :class:`UsageError` (a typo in a keyword is not ignored), checked;
    the dtype by its one name (``FP16``, ``fp16`` → ``float16``), so no later check depends on its spelling."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(unknown)}", hint=f"settings are: {', '.join(sorted(names))}")
    value = cls(**settings)
    value.check()
    return dataclasses.replace(value, dtype=normalize_dtype(value.dtype))


SettingsT = typing.TypeVar("SettingsT", bound=TrainSettings)


# -------------------------------------------------------------------------------------------- internals
def _meta(f: dataclasses.Field[Any]) -> Option:
    meta: Option = f.metadata["zoo"]
    return meta


def _base_type(hint: Any) -> type:
    """``int`` for ``int | None``, ``str`` for ``tuple[str, ...] | None``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    first = args[0]
    if typing.get_origin(first) is tuple:
        first = typing.get_args(first)[0]
    return first if isinstance(first, type) else str


def _is_sequence(hint: Any) -> bool:
    return any(typing.get_origin(a) is tuple for a in (*typing.get_args(hint), hint))


def _check_value(f: dataclasses.Field[Any], hint: Any, value: Any) -> None:
    meta, name = _meta(f), flag(f.name)
    if value is None:
        if type(None) in typing.get_args(hint):
            return
        raise UsageError(f"{name} needs a value")
    kind = _base_type(hint)
    if _is_sequence(hint):
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) and v for v in value):
            raise UsageError(f"{name} takes a list of non-empty names, got {value!r}")
        return
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UsageError(f"{name} must be {'a finite number' if kind is float else 'an ' + kind.__name__}, "
                         f"got {value!r}")
    if f.name == "dtype":
        normalize_dtype(value)
        return
    if meta.choices is not None and value not in meta.choices:
        raise UsageError(f"{name} {value!r} is not one of the choices", hint=f"use one of {', '.join(meta.choices)}")
    low, high = meta.minimum, meta.maximum
    if low is not None and (value < low or (meta.above and value == low)):
        raise UsageError(f"{name} must be {'above' if meta.above else 'at least'} {_show(low)}, got {value}")
    if high is not None and value > high:
        raise UsageError(f"{name} must be at most {_show(high)}, got {value}")


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


Objective = Literal["sop", "nsp", "mlm"]

__all__ = ["MAX_POSITIONS", "OBJECTIVES", "OPTIMIZERS", "POSITION_INITS", "TAG_SCHEMES", "TASKS",
           "FinetuneSettings", "Option", "PretrainSettings", "TrainSettings", "add_arguments", "flag",
           "from_arguments", "make"]
