"""CLI commands: ``pull``, ``pin``, ``verify`` and ``cache ls|rm|prune``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from zoo.cli._common import emit_json, err_console, out_console, registry_from_args
from zoo.errors import IntegrityError, NotFoundError, UsageError

if TYPE_CHECKING:
    from zoo.fetch import ProgressEvent


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the parser."""
    p = sub.add_parser("pull", parents=[common], help="download, verify and extract a checkpoint",
                       description="Download, verify and extract NAME; print its local directory (last line of "
                                   "stdout). Progress goes to stderr.")
    p.add_argument("name", metavar="NAME")
    _source_options(p)
    p.add_argument("--connections", type=int, default=8, metavar="N",
                   help="parallel connections for large files (default 8)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_pull)

    p = sub.add_parser("pin", parents=[common], help="print the sha256/size lines to pin a source in its manifest",
                       description="Pull NAME (or use the cache) and print the YAML lines (sha256, size, inner "
                                   "files) to paste into its manifest's source entry.")
    p.add_argument("name", metavar="NAME")
    _source_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_pin)

    p = sub.add_parser("verify", parents=[common], help="re-hash cached files against their recorded hashes",
                       description="Re-hash every cached blob and extracted file (of NAME) against the hashes "
                                   "recorded when they were verified. Damaged entries are invalidated so the next "
                                   "pull repairs them; exits 6 when anything is damaged.")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.set_defaults(func=_verify)

    cache_p = sub.add_parser("cache", parents=[common], help="list, remove and prune cached checkpoints")
    cache_sub = cache_p.add_subparsers(dest="cache_command", metavar="COMMAND")
    p = cache_sub.add_parser("ls", parents=[common], help="cached snapshots: name, source, size, last used")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cache_ls)
    p = cache_sub.add_parser("rm", parents=[common], help="remove a model's snapshots, downloads and conversions")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(func=_cache_rm)
    p = cache_sub.add_parser("prune", parents=[common], help="remove least recently used entries down to a size")
    p.add_argument("--max-size", required=True, metavar="SIZE", help="target cache size, e.g. 20G, 500M")
    p.set_defaults(func=_cache_prune)
    cache_p.set_defaults(func=lambda args: (cache_p.print_help(sys.stderr), 2)[1])


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
    reporter = None if args.quiet else _Reporter()
    try:
        return resolve(manifest, source=args.source, connections=getattr(args, "connections", 8),
                       require_hashes=args.require_hashes, offline=args.offline,
                       progress=reporter)
    finally:
        if reporter is not None:
            reporter.close()


def _pull(args: argparse.Namespace) -> int:
    if args.connections < 1:
        raise UsageError(f"--connections must be at least 1, got {args.connections}")
    pulled = _resolve(args)
    sys.stdout.write(f"{pulled.path}\n")
    return 0


def _pin(args: argparse.Namespace) -> int:
    from zoo import cache

    args.connections = 8
    pulled = _resolve(args)
    snap = cache.read_snapshot(pulled.manifest.name, cache.source_key(pulled.source))
    lines = [f"# {pulled.manifest.name}, source {pulled.source.index}: {pulled.source.label}",
             f"sha256: {pulled.sha256}"]
    if snap is not None:
        lines.append(f"size: {snap.size}")
        if snap.archive != "none" and snap.files:
            lines.append("files:")
            lines += [f"  {rel}: {{sha256: {r.sha256}, size: {r.size}}}" for rel, r in sorted(snap.files.items())]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


class _Reporter:
    """Turns progress events into a rich bar on a terminal, or sparse log lines otherwise (stderr)."""

    def __init__(self) -> None:
        self.console = err_console()
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self.lines: dict[str, tuple[float, float, int]] = {}  # label -> (start, last line, bytes then)
        self.finished: set[str] = set()
        if self.console.is_terminal:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=self.console, transient=False)
            self.bar.start()

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "download":
            self._download(event)
        elif event.message and event.stage != "done":
            (self.bar.console if self.bar else self.console).print(f"{event.label}: {event.message}")

    def _download(self, event: ProgressEvent) -> None:
        if self.bar is not None:
            task = self.tasks.get(event.label)
            if task is None:
                task = self.tasks[event.label] = self.bar.add_task(event.label, total=event.total)
            self.bar.update(task, completed=event.done, total=event.total)
            return
        now = time.monotonic()
        if event.label not in self.lines:
            self.lines[event.label] = (now, now, event.done)
            self.console.print(f"downloading {event.label} ({_size(event.total)})")
        start, last_t, last_done = self.lines[event.label]
        if event.total is not None and event.done >= event.total:
            if event.label not in self.finished:
                self.finished.add(event.label)
                secs = max(now - start, 1e-3)
                self.console.print(f"{event.label}: {_size(event.done)} in {secs:.1f}s "
                                   f"({_size(event.done / secs)}/s)")
        elif now - last_t >= 5:
            rate = (event.done - last_done) / (now - last_t)
            pct = f"{100 * event.done / event.total:.0f}% " if event.total else ""
            self.console.print(f"{event.label}: {pct}{_size(event.done)} of {_size(event.total)} "
                               f"({_size(rate)}/s)")
            self.lines[event.label] = (start, now, event.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _size(n: float | None) -> str:
    from zoo.cache import human_size

    return "unknown size" if n is None else human_size(n)


# ---------------------------------------------------------------------------------------------- verify
def _cached_name(args: argparse.Namespace, name: str) -> str:
    """The canonical model name for NAME (an alias is resolved through the registry when it is known)."""
    registry = registry_from_args(args)
    return registry.get(name).name if name in registry else name


def _verify(args: argparse.Namespace) -> int:
    from zoo import cache

    model = _cached_name(args, args.name) if args.name else None
    entries = cache.snapshots(model)
    if model and not entries:
        raise NotFoundError(f"{model} is not in the cache ({cache.home()})", hint=f"zoo pull {model}")
    count = 0

    def on_file(path: Any) -> None:
        nonlocal count
        count += 1

    problems = cache.verify(model, on_file=on_file)
    for problem in problems:
        err_console().print(f"damaged: {problem.path}: {problem.problem}")
    if problems:
        raise IntegrityError(f"{len(problems)} damaged file(s) in the cache; the affected entries were invalidated",
                             hint=f"`zoo pull {model or 'NAME'}` repairs them")
    sys.stdout.write(f"ok: {len(entries)} snapshot(s), {count} file(s) re-hashed, no damage\n")
    return 0


# ----------------------------------------------------------------------------------------------- cache
def _cache_ls(args: argparse.Namespace) -> int:
    from zoo import cache

    rows = [{"name": e.snapshot.model, "source": e.snapshot.source, "key": e.snapshot.key,
             "sha256": e.snapshot.sha256, "size": e.size,
             "last_used": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(e.snapshot.last_used)),
             "path": str(e.snapshot.path)} for e in cache.entries()]
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        err_console().print(f"the cache ({cache.home()}) is empty")
        return 0
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("name", "source", "size", "last used"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for row in rows:
        table.add_row(row["name"], row["source"], cache.human_size(row["size"]), row["last_used"].replace("T", " "))
    out_console().print(table)
    err_console().print(f"total {cache.human_size(cache.total_size())} in {cache.home()}")
    return 0


def _cache_rm(args: argparse.Namespace) -> int:
    from zoo import cache

    model = _cached_name(args, args.name)
    before = cache.total_size()
    removed = cache.remove(model)
    if not removed:
        raise NotFoundError(f"{model} is not in the cache ({cache.home()})", hint="`zoo cache ls` lists what is")
    freed = before - cache.total_size()
    sys.stdout.write(f"removed {model} ({len(removed)} snapshot(s), {cache.human_size(freed)} freed)\n")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    from zoo import cache

    try:
        limit = cache.parse_size(args.max_size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    before = cache.total_size()
    removed = cache.prune(limit)
    for snap in removed:
        sys.stdout.write(f"removed {snap.model} ({snap.source})\n")
    after = cache.total_size()
    sys.stdout.write(f"cache: {cache.human_size(before)} -> {cache.human_size(after)} "
                     f"(limit {cache.human_size(limit)})\n")
    return 0
