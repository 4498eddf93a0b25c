"""``zoo pretrain``: continued pretraining with the original objectives. torch is imported inside the command."""

from __future__ import annotations

import argparse
import sys

from zoo.cli._common import manifest_dirs, progress, registry_from_args

_EPILOG = """\
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add ``pretrain`` to the parser."""
    from zoo.config import DTYPES

    p = sub.add_parser("pretrain", parents=[common], help="continue pretraining a model on your own corpus",
                       description="Continue pretraining MODEL (a registry name, or a path to a zoo or upstream TF "
                                   "directory) with the original objectives — masked LM plus sentence order (ALBERT) "
                                   "or next sentence (BERT) — and LAMB (ALBERT) or AdamW (BERT). The result in --out "
                                   "is a zoo model directory. Prints --out.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL")
    data = p.add_argument_group("data")
    data.add_argument("--corpus", nargs="+", metavar="FILE", default=[],
                      help="UTF-8 text, one sentence per line, a blank line between documents (.gz too)")
    data.add_argument("--tfrecord", nargs="+", metavar="FILE", default=[],
                      help="TFRecords written by upstream create_pretraining_data.py (instead of --corpus)")
    data.add_argument("--objective", choices=("sop", "nsp", "mlm"),
                      help="sentence pair objective (default: sop for ALBERT, nsp for BERT)")
    data.add_argument("--max-seq-length", type=int, metavar="N",
                      help="tokens per example (default 128; TFRecords: their length)")
    data.add_argument("--masked-lm-prob", type=float, default=0.15, metavar="P", help="masked fraction (0.15)")
    data.add_argument("--max-predictions", type=int, default=20, metavar="N",
                      help="most masked positions per example (20)")
    data.add_argument("--short-seq-prob", type=float, default=0.1, metavar="P",
                      help="probability of a shorter example (0.1)")
    data.add_argument("--ngram", type=int, metavar="N", help="longest masked n-gram (default: 3 ALBERT, 1 BERT)")
    data.add_argument("--whole-word", action="store_true",
                      help="Chinese whole-word masking: words from jieba are masked together")
    data.add_argument("--seed", type=int, default=12345, help="seed of data, masks and dropout (12345)")
    opt = p.add_argument_group("optimization")
    opt.add_argument("--out", required=True, metavar="DIR", help="output directory (checkpoints, metrics, result)")
    opt.add_argument("--steps", type=int, required=True, metavar="N", help="training steps (global batches)")
    opt.add_argument("--batch-size", type=int, default=128, metavar="N",
                     help="global batch: split over processes and --grad-accum micro-steps (128)")
    opt.add_argument("--grad-accum", type=int, default=1, metavar="N", help="micro-steps per step (1)")
    opt.add_argument("--lr", type=float, metavar="LR", help="peak learning rate (default: 1.76e-3 ALBERT, 1e-4 BERT)")
    opt.add_argument("--warmup", type=int, metavar="N", help="linear warmup steps (default: 10%% of --steps)")
    opt.add_argument("--optimizer", choices=("lamb", "lamb-brightmart", "adamw"),
                     help="default: lamb (ALBERT), lamb-brightmart (brightmart's ALBERT), adamw (BERT)")
    opt.add_argument("--clip", type=float, default=1.0, metavar="NORM", help="global gradient norm clip (1.0)")
    opt.add_argument("--dtype", choices=tuple(DTYPES), default="float32", metavar="DTYPE",
                     help="compute precision: fp32 (default), bf16, fp16 (CUDA; with a loss scaler)")
    opt.add_argument("--gradient-checkpointing", action="store_true",
                     help="recompute activations in the backward pass (less memory, ~30%% slower)")
    model = p.add_argument_group("model")
    model.add_argument("--max-position-embeddings", type=int, metavar="N",
                       help="extend the position table to N before training (for longer --max-seq-length)")
    model.add_argument("--position-init", choices=("copy", "random"), default="copy",
                       help="new positions: copies of the learned table (default) or random")
    run = p.add_argument_group("run")
    run.add_argument("--save-every", type=int, default=1000, metavar="N", help="checkpoint every N steps (1000)")
    run.add_argument("--keep-checkpoints", type=int, default=2, metavar="N", help="checkpoints kept (2)")
    run.add_argument("--log-every", type=int, default=10, metavar="N",
                     help="metrics.jsonl record every N steps (10)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda (torchrun: one GPU per process)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="data worker processes (1; 0 builds batches in the training process)")
    run.add_argument("--source", type=int, metavar="N", help="use only source N of a registry model")
    run.add_argument("--offline", action="store_true", default=None, help="never touch the network")
    p.set_defaults(func=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    from zoo.training import pretrain

    registry_from_args(args)  # notes about user manifests that override built-ins
    with progress(args) as emit:
        out = pretrain(args.model, out=args.out, steps=args.steps, corpus=args.corpus, tfrecords=args.tfrecord,
                       resume=args.resume, device=args.device, workers=args.workers, source=args.source,
                       offline=args.offline, manifests=manifest_dirs(args), progress=emit,
                       batch_size=args.batch_size, max_seq_length=args.max_seq_length, lr=args.lr,
                       warmup=args.warmup, objective=args.objective, optimizer=args.optimizer,
                       grad_accum=args.grad_accum, clip=args.clip, dtype=args.dtype, seed=args.seed,
                       masked_lm_prob=args.masked_lm_prob, max_predictions=args.max_predictions,
                       short_seq_prob=args.short_seq_prob, ngram=args.ngram, whole_word=args.whole_word,
                       max_position_embeddings=args.max_position_embeddings, position_init=args.position_init,
                       gradient_checkpointing=args.gradient_checkpointing, save_every=args.save_every,
                       log_every=args.log_every, keep_checkpoints=args.keep_checkpoints)
    import os

    if int(os.environ.get("RANK", "0") or 0) == 0:
        sys.stdout.write(f"{out}\n")
    return 0
