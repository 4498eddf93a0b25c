"""``zoo plot``: training curves of runs as an image (matplotlib) or TensorBoard logs. Both are optional extras,
imported inside the command."""

from __future__ import annotations

import argparse
import re
import sys

from zoo.errors import UsageError

_EPILOG = """\
examples:
  zoo plot ./dish_tagger --out curves.png
  zoo plot ./dish_tagger ./dish_tagger_scratch --out curves.png       two runs side by side
  zoo plot ./adapted --out adapted.svg --metric eval_sop_accuracy
  zoo plot ./dish_tagger --tensorboard ./tb && tensorboard --logdir ./tb

RUN is a --out folder of zoo pretrain or zoo finetune, finished or still running. Panels: training loss, dev (or
eval) loss, the dev metric (the run's --metric, else f1, accuracy or eval_mlm_accuracy), its best point marked.
Needs matplotlib: pip install 'zoo-checkpoints[plot]'. More in docs/cli.md (zoo plot)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Add ``plot`` to the parser."""
    p = sub.add_parser("plot", parents=[common], help="draw training runs' loss and dev metric against step",
                       description="Draw the training loss, the dev/eval loss and the dev metric of one or more "
                                   "training runs against step, into one image (PNG, SVG or PDF by the suffix of "
                                   "--out), and/or write them as TensorBoard logs. Prints what it wrote.",
                       epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="a training run's folder (its metrics.jsonl)")
    p.add_argument("--out", metavar="FILE", help="the image to write: .png, .svg or .pdf")
    p.add_argument("--metric", metavar="NAME",
                   help="the dev metric to draw (default: each run's --metric, else f1, accuracy, eval_mlm_accuracy)")
    p.add_argument("--size", metavar="WxH", type=_size, help="image size in pixels (default: 500x420 per panel)")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="write the runs' records as TensorBoard logs, one folder per run (needs tensorboard)")
    p.set_defaults(func=_plot)


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not m or not 50 <= int(m.group(1)) <= 20000 or not 50 <= int(m.group(2)) <= 20000:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels (50 to 20000 each), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _plot(args: argparse.Namespace) -> int:
    from zoo.plotting import plot_runs, write_tensorboard

    if not args.out and not args.tensorboard:
        raise UsageError("zoo plot needs --out FILE (an image), --tensorboard DIR, or both",
                         hint="e.g. zoo plot ./my_run --out curves.png")
    if args.out:
        sys.stdout.write(f"{plot_runs(args.runs, args.out, metric=args.metric, size=args.size)}\n")
    if args.tensorboard:
        for folder in write_tensorboard(args.runs, args.tensorboard):
            sys.stdout.write(f"{folder}\n")
    return 0
