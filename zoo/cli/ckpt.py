"""``zoo ckpt ls`` (list a TensorFlow checkpoint's variables) and ``zoo convert`` (a TF checkpoint or a
transformers folder → zoo's converted directory)."""

from __future__ import annotations

import argparse

from zoo.cli._common import Subcommands, command, command_group, emit_json, err_console, progress


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the parser."""
    ckpt_sub = command_group(sub, "ckpt", parents=[common], help="inspect TensorFlow checkpoints",
                             description="Inspect TensorFlow checkpoints without TensorFlow.")
    ls = command(ckpt_sub, "ls", _ls, parents=[common], help="list variables (name, dtype, shape)",
                 description="List a checkpoint's variables like tf.train.list_variables.")
    ls.add_argument("path", metavar="PATH",
                    help="checkpoint prefix, one of its files, or a directory with one checkpoint")
    ls.add_argument("--json", action="store_true", help='print a JSON list of {"name", "dtype", "shape"}')

    from zoo.config import DTYPES, SCHEMES  # pure Python, no torch

    convert = command(sub, "convert", _convert, parents=[common],
                      help="convert a TensorFlow checkpoint to safetensors (no TensorFlow needed)",
                      description="Convert an upstream TF release (google-research/bert, google-research/albert, "
                                  "brightmart/albert_zh), or a transformers folder, into model.safetensors + "
                                  "config.json + vocab.txt + receipt.json.")
    convert.add_argument("src", metavar="SRC", help="release directory (checkpoint + *config*.json + vocab*.txt), "
                                                    "a checkpoint prefix, or a transformers folder")
    convert.add_argument("out", metavar="OUT", help="output directory: new or empty, outside zoo's cache")
    convert.add_argument("--scheme", choices=("auto", *SCHEMES), default="auto",
                         help="TF naming scheme (default: detect from the variable names)")
    convert.add_argument("--config", metavar="CONFIG.json", help="model config (upstream or zoo format); "
                                                                 "default: the *config*.json next to the checkpoint")
    convert.add_argument("--vocab", metavar="VOCAB", help="vocab file; default: the vocab*.txt next to the checkpoint")
    convert.add_argument("--dtype", choices=tuple(DTYPES), metavar="DTYPE",
                         help="cast weights: float32, float16, bfloat16 (or fp32, fp16, bf16); default: as stored")
    convert.add_argument("--labels", nargs="+", metavar="LABEL",
                         help="a checkpoint fine-tuned by run_classifier.py (output_weights): its labels in id order "
                              "(default: the labels.txt next to it, else LABEL_0 … LABEL_{n-1})")


def _ls(args: argparse.Namespace) -> int:
    from zoo.tf import list_variables

    variables = list_variables(args.path)
    if args.json:
        emit_json([{"name": v.name, "dtype": v.dtype, "shape": list(v.shape)} for v in variables])
        return 0
    width = max((len(v.name) for v in variables), default=0)
    for v in variables:
        note = "  (partitioned)" if v.partitioned else ""
        print(f"{v.name:<{width}}  {v.dtype:<8}  [{', '.join(map(str, v.shape))}]{note}")
    total = sum(v.numel for v in variables)
    err_console().print(f"{len(variables)} variables, {total:,} values")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from zoo.converters import convert
    from zoo.converters.modeldir import read_receipt

    with progress(args) as emit:
        out = convert(args.src, Path(args.out), scheme=args.scheme, config=args.config, vocab=args.vocab,
                      dtype=args.dtype, progress=emit, labels=args.labels)
    receipt = read_receipt(out)
    assert receipt is not None  # convert writes one
    heads = receipt["heads"]
    skipped = receipt.get("skipped") or {"count": 0, "by_kind": {}}  # a transformers folder skips nothing
    kinds = ", ".join(f"{k} {n}" for k, n in skipped["by_kind"].items())
    what = receipt.get("scheme") or f"transformers {receipt.get('format')}"
    task = f"; task: {receipt['task']}" if receipt.get("task") else ""
    err_console().print(f"{what}: {receipt['tensors']} tensors, {receipt['parameters']:,} parameters; "
                        f"heads: {', '.join(heads) or 'none'}{task}; skipped {skipped['count']}"
                        + (f" ({kinds})" if kinds else ""), markup=False)
    print(out)
    return 0
