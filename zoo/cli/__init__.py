"""The ``zoo`` command line: a thin shell over the public API.

Each command group lives in its own module exposing ``register(subparsers, common)``. Command modules import
heavy dependencies (torch, transformers) only inside the functions that run a command, so ``zoo list`` and
``zoo --help`` start fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from zoo._version import __version__
from zoo.cli import cache, ckpt, hub, models, plot, registry, scratch, train
from zoo.cli._common import err_console
from zoo.errors import ZooError

_COMMAND_MODULES = (registry, cache, ckpt, models, hub, scratch, train, plot)

#: what zoo is, in one line (pyproject.toml's description says the same; a test keeps them together)
DESCRIPTION = ("Registry, verified downloader, TensorFlow-free converter and trainer (continued pretraining, "
               "fine-tuning) for Chinese ALBERT and BERT checkpoints.")

_EPILOG = """\
examples:
  zoo list --lang zh                      registered Chinese checkpoints
  zoo info albert_base_zh                 config, sources, pins, license, cache state
  zoo pull albert_large_zh                download, verify and extract; prints the local directory
  zoo convert ./albert_base_zh ./out      TensorFlow checkpoint -> safetensors, no TensorFlow needed
  zoo run albert_base_zh "今天天气很[MASK]。"  fill-mask
  zoo pretrain albert_base_zh --corpus my.txt --out ./adapted --steps 1000   continued pretraining
  zoo init --config albert_tiny_zh --train-vocab my.txt --vocab-size 8000 --out ./new   a new model, offline
  zoo plot ./adapted ./other --out curves.png   training and dev curves of runs, side by side

exit codes: 0 ok, 1 internal error, 2 usage, 3 not found, 4 bad manifest, 5 network, 6 integrity,
7 offline miss, 8 bad checkpoint, 9 unsupported, 10 disk space, 11 unsafe archive, 12 bad training data,
130 interrupted (docs/cli.md)."""


def build_parser() -> argparse.ArgumentParser:
    # Options accepted both before and after the command name. Subcommand copies default to SUPPRESS so a
    # value given before the command is not overwritten by the subcommand's default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--manifests", metavar="DIR", action="append", default=argparse.SUPPRESS,
                        help="also read *.yaml manifests from DIR (repeatable; adds to ZOO_MANIFEST_PATH)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log more (repeat for debug output)")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress output (also ZOO_PROGRESS=0)")

    parser = argparse.ArgumentParser(
        prog="zoo",
        description=DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zoo {__version__}")
    parser.add_argument("--manifests", metavar="DIR", action="append", default=[],
                        help="also read *.yaml manifests from DIR (repeatable; adds to ZOO_MANIFEST_PATH)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (repeat for debug output)")
    parser.add_argument("-q", "--quiet", action="store_true", default=False,
                        help="no progress output (also ZOO_PROGRESS=0)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(sub, common)
    return parser


def _setup_logging(verbosity: int) -> tuple[list[logging.Handler], int]:
    """Log zoo's messages to stderr for this command; returns what to restore afterwards."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("zoo")
    saved = (list(logger.handlers), logger.level)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    # huggingface_hub logs every connection retry as a warning and sets its own level when imported (later);
    # zoo's own error says what failed
    if verbosity <= 0:
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help/--version
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    saved_handlers, saved_level = _setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except ZooError as exc:
        from rich.markup import escape

        err_console().print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err_console().print(f"  hint: {exc.hint}", highlight=False, markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console().print("interrupted", highlight=False)
        return 130
    except BrokenPipeError:  # `zoo list | head`
        return 0
    finally:
        logger = logging.getLogger("zoo")
        logger.handlers[:] = saved_handlers
        logger.setLevel(saved_level)


def entrypoint() -> None:
    sys.exit(main())
