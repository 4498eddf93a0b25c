"""CLI commands about what zoo downloads and keeps: ``pull``, ``pin``, ``verify`` and ``cache ls|rm|prune``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from zoo.cli._common import (
    Subcommands,
    command,
    command_group,
    emit_json,
    err_console,
    out_console,
    print_columns,
    progress,
    registry_from_args,
    stdout_is_tty,
)
from zoo.errors import IntegrityError, NotFoundError, UsageError


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the parser."""
    p = command(sub, "pull", _pull, parents=[common], help="download, verify and extract a checkpoint",
                description="Download, verify and extract NAME; print its local directory (last line of stdout). "
                            "Progress goes to stderr.")
    p.add_argument("name", metavar="NAME")
    _source_options(p)
    p.add_argument("--connections", type=int, default=8, metavar="N",
                   help="parallel connections for large files (default 8)")

    p = command(sub, "pin", _pin, parents=[common], help="print the sha256/size lines to pin a source in its manifest",
                description="Pull NAME (or use the cache) and print the YAML lines (sha256, size, inner files) to "
                            "paste into its manifest's source entry.")
    p.add_argument("name", metavar="NAME")
    _source_options(p)

    p = command(sub, "verify", _verify, parents=[common],
                help="re-hash cached files, or a folder zoo wrote, against their recorded hashes",
                description=_VERIFY)
    p.add_argument("name", metavar="NAME_OR_PATH", nargs="?")

    cache_sub = command_group(sub, "cache", parents=[common], help="list, remove and prune what the cache holds")
    p = command(cache_sub, "ls", _cache_ls, parents=[common],
                help="everything in the cache: kind, name, source, size, last used")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command(cache_sub, "rm", _cache_rm, parents=[common],
                help="remove a model's snapshots, downloads and conversions (or a release directory's conversions)")
    p.add_argument("name", metavar="NAME_OR_PATH")
    p = command(cache_sub, "prune", _cache_prune, parents=[common], description=_PRUNE,
                help="remove what nothing will use; --max-size: then least recently used entries",
                epilog="examples:\n  zoo cache prune\n  zoo cache prune --partials\n  zoo cache prune --max-size 20G")
    p.add_argument("--partials", action="store_true",
                   help="also remove interrupted downloads that could resume (the next pull starts over)")
    p.add_argument("--max-size", metavar="SIZE",
                   help="then remove least recently used snapshots and conversions until the cache fits in SIZE "
                        "(e.g. 20G, 500M, 0)")


_VERIFY = ("Re-hash every cached download, extracted file and conversion (of NAME) against the hashes recorded when "
           "they were verified or written. Damaged entries are invalidated: the next pull or load rebuilds them (a "
           "conversion from the cached download, without network). A PATH (./run_a) is a folder zoo wrote (convert, "
           "export, pretrain): every file is re-hashed against its receipt.json. Exits 6 when anything was damaged.")
_PRUNE = """\
Remove what no pull or load will use again: staging directories of processes that are gone,
quarantined files, snapshots and conversions without their marker, downloads that cannot
resume, blobs nothing refers to, conversions by other converter versions, unheld lock files.
Snapshots, conversions, pins, downloads that can resume and anything another zoo process
holds are kept."""


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", type=int, metavar="N", help="use only source N (0-based, see `zoo info NAME`)")
    p.add_argument("--require-hashes", action="store_true", default=None,
                   help="refuse sources without a sha256 pin (also ZOO_REQUIRE_HASHES=1)")
    p.add_argument("--offline", action="store_true", default=None,
                   help="never touch the network (also ZOO_OFFLINE=1)")


# ------------------------------------------------------------------------------------------------ pull
def _resolve(args: argparse.Namespace) -> Any:
    from zoo.resolver import resolve

    manifest = registry_from_args(args).get(args.name)
    with progress(args) as emit:
        return resolve(manifest, source=args.source, connections=getattr(args, "connections", 8),
                       require_hashes=args.require_hashes, offline=args.offline, progress=emit)


def _pull(args: argparse.Namespace) -> int:
    if args.connections < 1:
        raise UsageError(f"--connections must be at least 1, got {args.connections}")
    pulled = _resolve(args)
    sys.stdout.write(f"{pulled.path}\n")
    return 0


def _pin(args: argparse.Namespace) -> int:
    pulled = _resolve(args)
    snap = pulled.snapshot
    lines = [f"# {pulled.manifest.name}, source {pulled.source.index}: {pulled.source.label}"]
    if pulled.source.kind == "url":
        lines += [f"sha256: {pulled.sha256}", f"size: {snap.size}"]
    if snap.files and (snap.archive != "none" or pulled.source.kind == "hf"):
        lines.append("files:")
        lines += [f"  {rel}: {{sha256: {r.sha256}, size: {r.size}}}" for rel, r in sorted(snap.files.items())]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------- verify
def _cached_name(args: argparse.Namespace, name: str) -> str:
    """The canonical model name for NAME (an alias is resolved through the registry when it is known)."""
    registry = registry_from_args(args)
    return registry.get(name).name if name in registry else name


def _verify(args: argparse.Namespace) -> int:
    from zoo import cache
    from zoo.weights import looks_like_path

    if args.name and looks_like_path(args.name):
        return _verify_folder(Path(args.name).expanduser())
    model = _cached_name(args, args.name) if args.name else None
    snaps = cache.snapshots(model)
    convs = [c for c in cache.conversions() if model is None or c.origin == model]
    if model and not snaps and not convs:
        if model not in registry_from_args(args):
            hint = f"to verify the folder {model}/ here, write ./{model}" if Path(model).is_dir() else \
                "`zoo list` shows the registry's models; a folder is verified by its path (./run_a)"
            raise NotFoundError(f"{model} is not in the cache ({cache.home()}), and no model has that name", hint=hint)
        raise NotFoundError(f"{model} is not in the cache ({cache.home()})", hint=f"zoo pull {model}")
    count = 0

    def on_file(path: Any) -> None:
        nonlocal count
        count += 1

    problems = cache.verify(model, on_file=on_file)
    for problem in problems:
        err_console().print(f"damaged: {problem.path}: {problem.problem}", markup=False)
    if problems:
        raise IntegrityError(f"{len(problems)} damaged file(s) in the cache; the affected entries were invalidated",
                             hint=f"the next `zoo pull {model or 'NAME'}` or load rebuilds them (conversions from "
                                  "the cached download; a damaged download is downloaded again)")
    sys.stdout.write(f"ok: {len(snaps)} snapshot(s), {len(convs)} conversion(s), {count} file(s) re-hashed, "
                     "no damage\n")
    return 0


def _verify_folder(path: Path) -> int:
    """``zoo verify ./folder``: re-hash every file its receipt lists, and a training run's checkpoints and corpus."""
    from zoo.converters.modeldir import check_outputs, incomplete_run_error, training_run

    if not path.is_dir():
        raise NotFoundError(f"{path}: no such directory", hint="check the path (`zoo verify` with no argument checks "
                                                               "the whole cache)")
    state_files, state_problems = _verify_run_state(path)
    run = training_run(path)
    if run is not None:  # no model yet: its state is all there is to check
        if state_problems:
            raise IntegrityError(f"{len(state_problems)} damaged part(s) of the run's state in {path}",
                                 hint="each damaged part above says what to do")
        sys.stdout.write(f"ok: {path}: {state_files} file(s) of the run's checkpoints and data re-hashed, no damage\n")
        raise incomplete_run_error(path, *run)
    hashed: list[Path] = []
    problems = check_outputs(path, rehash=True, on_file=hashed.append)
    if problems is None:
        raise NotFoundError(f"{path} has no receipt.json: there is nothing to check its files against",
                            hint="zoo records every file's sha256 in the receipt of what it writes (convert, export, "
                                 "pretrain); a folder without one (an upstream release, a transformers folder) "
                                 "loads as it is, unchecked")
    for file, what in problems:
        err_console().print(f"damaged: {file}: {what}", markup=False)
    if problems or state_problems:
        raise IntegrityError(f"{len(problems) + len(state_problems)} damaged part(s) of {path}",
                             hint="restore them, or write the folder again (convert, export or train it: its receipt "
                                  "says how it was made)" if problems else "each damaged part above says what to do")
    extra = f" and {state_files} of the run's checkpoints and data" if state_files else ""
    sys.stdout.write(f"ok: {path}: {len(hashed)} file(s) re-hashed against its receipt{extra}, no damage\n")
    return 0


def _verify_run_state(path: Path) -> tuple[int, list[tuple[Path, str]]]:
    """A training run's checkpoints and tokenized corpus, re-hashed (their messages printed); nothing elsewhere."""
    if not (path / "run.json").is_file():
        return 0, []
    from zoo.training.outdir import verify_state

    hashed, problems = verify_state(path)
    for part, what in problems:
        err_console().print(f"damaged: {part}: {what}", markup=False)
    return hashed, problems


# ----------------------------------------------------------------------------------------------- cache
def _cache_ls(args: argparse.Namespace) -> int:
    from zoo import cache
    from zoo._fs import human_size

    rows: list[dict[str, Any]] = [{"kind": e.kind, "name": e.name, "source": e.detail, "size": e.size,
             "last_used": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e.last_used)),
             "paths": [str(p) for p in e.paths]} for e in cache.entries()]
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        err_console().print(f"the cache ({cache.home()}) is empty")
        return 0
    columns = ("kind", "name", "source", "size", "last used")
    cells = [(row["kind"], row["name"], row["source"], human_size(row["size"]), row["last_used"].replace("T", " "))
             for row in rows]
    if not stdout_is_tty():  # a pipe gets every path and URL whole
        print_columns(columns, cells)
    else:
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in columns:
            table.add_column(column, justify="right" if column == "size" else "left")
        for c in cells:
            table.add_row(*c)
        out_console().print(table)
    err_console().print(f"total {human_size(cache.total_size())} in {cache.home()}")
    return 0


def _cache_rm(args: argparse.Namespace) -> int:
    from zoo import cache
    from zoo._fs import human_size
    from zoo.weights import looks_like_path

    if looks_like_path(args.name):
        name, sources = str(Path(args.name).expanduser().resolve()), []
    else:
        registry = registry_from_args(args)
        manifest = registry.get(args.name) if args.name in registry else None
        name = manifest.name if manifest else args.name
        sources = [s.label for s in manifest.sources] if manifest else []
    before = cache.total_size()
    removed = cache.remove(name, sources=sources)
    if not removed:
        raise NotFoundError(f"{name} is not in the cache ({cache.home()})", hint="`zoo cache ls` lists what is")
    freed = before - cache.total_size()
    kinds = ", ".join(f"{sum(1 for e in removed if e.kind == k)} {k}(s)" for k in cache.KINDS
                      if any(e.kind == k for e in removed))
    sys.stdout.write(f"removed {name} ({kinds}, {human_size(freed)} freed)\n")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    from zoo import cache
    from zoo._fs import human_size, parse_size
    from zoo.converters.modeldir import CONVERTER_VERSION

    try:
        limit = None if args.max_size is None else parse_size(args.max_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    before = cache.total_size()
    removed = cache.prune(limit, partials=args.partials, converter_version=CONVERTER_VERSION)
    for entry in removed:
        sys.stdout.write(f"removed {entry.kind} {entry.name}" + (f" ({entry.detail})" if entry.detail else "") + "\n")
    after = cache.total_size()
    sys.stdout.write(f"cache: {human_size(before)} -> {human_size(after)}"
                     + (f" (limit {human_size(limit)})" if limit is not None else "") + "\n")
    left = sum(1 for entry in cache.entries() if entry.kind == "download")
    if left and not args.partials:
        err_console().print(f"kept {left} download{'s' if left > 1 else ''} that can resume or are in progress "
                            "(`zoo cache prune --partials` removes those nobody is running)", markup=False)
    return 0
