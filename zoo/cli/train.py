"""``zoo pretrain`` and ``zoo finetune``: their flags are generated from :mod:`zoo.training.settings`, the one
definition of every setting. torch is imported inside the commands."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from zoo.cli._common import Subcommands, command, manifest_dirs, progress, registry_from_args
from zoo.errors import Interrupted

_PRETRAIN_EPILOG = """\
examples:
  zoo pretrain albert_base_zh --corpus reviews/*.txt --out ./albert_base_reviews --steps 10000 \\
      --batch-size 128 --max-seq-length 128 --lr 1.76e-3 --warmup 500
  zoo pretrain bert_base_zh --tfrecord data/*.tfrecord --out ./bert_adapted --steps 5000
  zoo pretrain albert_base_zh --corpus long.txt --out ./albert_1024 --steps 2000 \\
      --max-seq-length 1024 --max-position-embeddings 1024
  zoo pretrain albert_base_zh --corpus reviews/*.txt --out ./albert_base_reviews --steps 10000 --resume
  torchrun --nproc-per-node 8 -m zoo pretrain albert_base_zh --corpus ... --out ...    many GPUs / nodes
  zoo run ./albert_base_reviews "这家店的[MASK]很好吃"                                    use the result

docs/pretraining.md describes the corpus format, the objectives and every option."""

_GROUPS = {"data": "data", "task": "task", "optimization": "optimization", "model": "model", "run": "run"}


_PRETRAIN = """\
Continue pretraining MODEL (a registry name, or a path to a zoo, transformers or upstream TF directory) with the
original objectives — masked LM plus sentence order (ALBERT) or next sentence (BERT) — and LAMB (ALBERT) or
AdamWeightDecay (BERT). The result in --out is a zoo model directory. Prints its path."""


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add ``pretrain`` and ``finetune`` to the parser."""
    register_pretrain(sub, common)
    register_finetune(sub, common)


def register_pretrain(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add ``pretrain`` to the parser."""
    from zoo.training.settings import PretrainSettings

    p = command(sub, "pretrain", _pretrain, parents=[common], help="continue pretraining a model on your own corpus",
                description=_PRETRAIN, epilog=_PRETRAIN_EPILOG)
    p.add_argument("model", metavar="MODEL")
    groups = _groups(p)
    groups["data"].add_argument("--corpus", nargs="+", metavar="FILE", default=[],
                                help="UTF-8 text, one sentence per line, a blank line between documents (.gz too)")
    groups["data"].add_argument("--tfrecord", nargs="+", metavar="FILE", default=[],
                                help="TFRecords written by upstream create_pretraining_data.py (instead of --corpus)")
    groups["data"].add_argument("--eval-corpus", nargs="+", metavar="FILE", default=[],
                                help="held-out text: masked-LM loss/accuracy and SOP/NSP accuracy at every checkpoint")
    _add_run_options(p, groups, PretrainSettings)


_FINETUNE_EPILOG = """\
examples:
  zoo finetune ./albert_reviews --task token-classification --train train.conll --dev dev.conll \\
      --test test.conll --out ./dish_tagger --epochs 3 --batch-size 32 --lr 5e-5
  zoo finetune albert_base_zh --task sequence-classification --train train.tsv --dev dev.tsv --out ./sentiment
  zoo finetune bert_base_zh --task token-classification --train reviews.csv --text-column review \\
      --entity-column dishes --entity-label DISH --entity-sep "," --out ./dishes
  torchrun --nproc-per-node 4 -m zoo finetune ...                                    many GPUs / nodes
  zoo run ./dish_tagger "我很喜欢这家的麻辣香锅和酸菜鱼"                                 use the result

docs/finetuning.md describes the data formats, the metrics and every option."""


_FINETUNE = """\
Fine-tune MODEL (a registry name, a zoo pretrain/init output, a transformers or upstream TF directory) on labelled
data: token classification (tags per character: CoNLL, JSON lines, CSV with entity strings) or sequence
classification (TSV/CSV label,text_a[,text_b], JSON lines). Evaluates on --dev after every epoch, keeps the best
checkpoint, evaluates it on --test. The result in --out is a zoo model directory that tags or classifies. Prints
its path."""


def register_finetune(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add ``finetune`` to the parser."""
    from zoo.training.settings import FinetuneSettings

    p = command(sub, "finetune", _finetune, parents=[common], help="fine-tune a model on your labelled data",
                description=_FINETUNE, epilog=_FINETUNE_EPILOG)
    p.add_argument("model", metavar="MODEL")
    groups = _groups(p)
    data = groups["data"]
    data.add_argument("--train", required=True, metavar="FILE", help="training data")
    data.add_argument("--dev", metavar="FILE", help="evaluated after every epoch; picks the best checkpoint")
    data.add_argument("--test", metavar="FILE", help="evaluated once, with the best checkpoint")
    _add_run_options(p, groups, FinetuneSettings)


def _finetune(args: argparse.Namespace) -> int:
    from zoo.training import finetune
    from zoo.training.settings import FinetuneSettings, from_arguments

    registry_from_args(args)
    with progress(args) as emit, _continuing(args):
        out = finetune(args.model, train=args.train, dev=args.dev, test=args.test, out=args.out, resume=args.resume,
                       device=args.device, workers=args.workers, source=args.source, offline=args.offline,
                       manifests=manifest_dirs(args), progress=emit, tensorboard=args.tensorboard,
                       **from_arguments(args, FinetuneSettings))
    if int(os.environ.get("RANK", "0") or 0) == 0:
        sys.stdout.write(f"{out}\n")
    return 0


def _groups(p: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    return {key: p.add_argument_group(title) for key, title in _GROUPS.items()}


def _add_run_options(p: argparse.ArgumentParser, groups: dict[str, argparse._ArgumentGroup], cls: Any) -> None:
    from zoo.training.settings import add_arguments

    groups["run"].add_argument("--out", required=True, metavar="DIR",
                               help="output directory: new, empty, or an earlier run's (with --resume)")
    add_arguments(p, cls, groups)
    run = groups["run"]
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda (torchrun: one GPU per process)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="data worker processes (1; 0 builds batches in the training process)")
    run.add_argument("--source", type=int, metavar="N", help="use only source N of a registry model")
    run.add_argument("--offline", action="store_true", default=None, help="never touch the network")
    run.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard scalars into DIR (needs tensorboard)")


def _pretrain(args: argparse.Namespace) -> int:
    from zoo.training import pretrain
    from zoo.training.settings import PretrainSettings, from_arguments

    registry_from_args(args)  # notes about user manifests that override built-ins
    with progress(args) as emit, _continuing(args):
        out = pretrain(args.model, out=args.out, corpus=args.corpus, tfrecords=args.tfrecord,
                       eval_corpus=args.eval_corpus, resume=args.resume, device=args.device, workers=args.workers,
                       source=args.source, offline=args.offline, manifests=manifest_dirs(args), progress=emit,
                       tensorboard=args.tensorboard, **from_arguments(args, PretrainSettings))
    if int(os.environ.get("RANK", "0") or 0) == 0:
        sys.stdout.write(f"{out}\n")
    return 0


class _continuing:
    """Ctrl-C in a run: the error says where it stopped; its hint gets the exact command that continues."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.argv: list[str] = list(getattr(args, "argv", None) or sys.argv[1:])

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, Interrupted) and exc.hint and "--resume" in exc.hint:
            argv = [a for a in self.argv if a != "--resume"]
            exc.hint = "continue with: " + shlex.join(["zoo", *argv, "--resume"])
