"""Helpers shared by the command modules: consoles, JSON output, the registry with ``--manifests``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from rich.console import Console

    from zoo.registry import Registry


#: what ``add_subparsers`` returns (generic only for type checkers)
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command(sub: Subcommands, name: str, run: Callable[[argparse.Namespace], int] | None, *,
            parents: Sequence[argparse.ArgumentParser], help: str, description: str | None = None,
            epilog: str | None = None) -> argparse.ArgumentParser:
    """The subcommand ``name``, which calls ``run(args)``: ``parents`` give the options it shares (the common ones
    first), ``help`` its line in the parent's help, ``description`` the text of its own, and ``epilog`` examples,
    printed with their line breaks."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, parents=list(parents), help=help, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter)
    if run is not None:
        p.set_defaults(func=run)
    return p


def command_group(sub: Subcommands, name: str, *, parents: Sequence[argparse.ArgumentParser], help: str,
                  description: str | None = None) -> Subcommands:
    """A command made of subcommands (``zoo cache``, ``zoo ckpt``); given alone it prints its help on stderr and
    exits 2."""
    group = command(sub, name, None, parents=parents, help=help, description=description)

    def usage(args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return 2

    group.set_defaults(func=usage)
    return group.add_subparsers(dest=f"{name}_command", metavar="COMMAND")


@lru_cache(maxsize=1)
def err_console() -> Console:
    """Progress, notes and errors go to stderr; stdout carries only results."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def print_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Plain aligned columns for a pipe: an upper-case header, every value whole (never cut to a width)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    for cells in ([h.upper() for h in header], *rows):
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(cells, widths)).rstrip() + "\n")


def progress(args: argparse.Namespace) -> Any:
    """The progress callback for a command: bars on a terminal, plain periodic lines otherwise (stderr);
    nothing with ``--quiet`` or ``ZOO_PROGRESS=0``. Use as a context manager."""
    from zoo.progress import env_setting, reporting

    quiet = getattr(args, "quiet", False) or env_setting() is False
    return reporting(not quiet)


def manifest_dirs(args: argparse.Namespace) -> tuple[Path, ...]:
    return tuple(Path(d) for d in getattr(args, "manifests", None) or ())


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


_override_notes_shown = False


def registry_from_args(args: argparse.Namespace) -> Registry:
    """The registry with built-in, ``ZOO_MANIFEST_PATH`` and ``--manifests`` entries.

    When a user manifest overrides a built-in one, say so once per process (on stderr).
    """
    global _override_notes_shown
    from zoo.registry import load_registry

    registry = load_registry(manifest_dirs(args))
    if registry.overrides and not _override_notes_shown:
        _override_notes_shown = True
        for name, path in registry.overrides:
            err_console().print(f"note: {name} is overridden by user manifest {path}")
    return registry
