"""``zoo init``: a new model from a config and a vocab, ready for ``zoo pretrain``. torch is imported inside the
command."""

from __future__ import annotations

import argparse
import sys

from zoo.cli._common import Subcommands, command, err_console, manifest_dirs, progress, registry_from_args

_EPILOG = """\
examples:
  zoo init --config albert_tiny_zh --train-vocab poems.txt --vocab-size 300 --out ./my_albert
  zoo init --config bert_config.json --vocab vocab.txt --out ./my_bert
  zoo init --config ./albert_config.json --vocab-from bert_base_zh --out ./my_albert   (downloads bert_base_zh once)
  zoo pretrain ./my_albert --corpus poems.txt --out ./my_albert_trained --steps 100    train it

CONFIG is an upstream albert_config.json / bert_config.json (the architecture is told from its keys), zoo's
config.json, or a registry name (its architecture only: nothing is downloaded). The model's vocab_size is the
vocab's size. docs/cli.md#zoo-init describes the output and the initialisation."""


_DESCRIPTION = """\
Write a new model into --out: the architecture of CONFIG, a vocab (a file, another model's, or WordPiece learned
from your text), weights initialised as the upstream TF code does (truncated normal with initializer_range, zero
biases, unit LayerNorm), MLM and SOP/NSP heads included. The result is a zoo model directory (zoo pretrain,
zoo run, zoo export take it). Prints --out."""


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add ``init`` to the parser."""
    p = command(sub, "init", _init, parents=[common], help="a new, randomly initialised model to pretrain",
                description=_DESCRIPTION, epilog=_EPILOG)
    p.add_argument("--config", required=True, metavar="CONFIG",
                   help="albert_config.json / bert_config.json / zoo config.json, or a registry name")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory: new or empty, outside zoo's cache")
    vocab = p.add_argument_group("vocab (exactly one)")
    vocab.add_argument("--vocab", metavar="FILE", help="a vocab file: one token per line, line number = id")
    vocab.add_argument("--vocab-from", metavar="MODEL",
                       help="the vocab of a model: registry name (downloaded once) or a local directory")
    vocab.add_argument("--train-vocab", nargs="+", metavar="TEXT", default=[],
                       help="learn a WordPiece vocab from these UTF-8 text files (.gz too), BERT's rules")
    vocab.add_argument("--vocab-size", type=int, metavar="N", help="tokens to learn with --train-vocab")
    p.add_argument("--seed", type=int, default=12345, help="seed of the initial weights (12345)")
    p.add_argument("--heads", choices=("pretraining", "mlm", "none"), default="pretraining",
                   help="heads to initialise: MLM + SOP/NSP (default), MLM only, or none")
    p.add_argument("--source", type=int, metavar="N", help="--vocab-from a registry model: use only its source N")
    p.add_argument("--offline", action="store_true", default=None, help="never touch the network")


def _init(args: argparse.Namespace) -> int:
    from zoo.converters.modeldir import read_receipt
    from zoo.scratch import init_model

    registry_from_args(args)  # notes about user manifests that override built-ins
    with progress(args) as emit:
        out = init_model(args.config, out=args.out, vocab=args.vocab, vocab_from=args.vocab_from,
                         train_vocab=args.train_vocab, vocab_size=args.vocab_size, seed=args.seed,
                         heads=None if args.heads == "none" else args.heads, source=args.source,
                         offline=args.offline, manifests=manifest_dirs(args), progress=emit)
    receipt = read_receipt(out) or {}
    err_console().print(f"{receipt.get('architecture')}: {receipt.get('parameters', 0):,} parameters, vocab "
                        f"{receipt.get('vocab', {}).get('tokens')} tokens; heads: "
                        f"{', '.join(receipt.get('heads', ())) or 'none'}; seed {args.seed}")
    sys.stdout.write(f"{out}\n")
    return 0
