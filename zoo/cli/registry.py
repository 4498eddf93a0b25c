"""``zoo list`` and ``zoo info``: what the registry holds. Never imports torch."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from zoo.cli._common import (
    Subcommands,
    command,
    emit_json,
    out_console,
    print_columns,
    registry_from_args,
    stdout_is_tty,
)

if TYPE_CHECKING:
    from zoo.registry import Manifest


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    p = command(sub, "list", _list, parents=[common], help="list registered checkpoints",
                description="List registered checkpoints: a table on a terminal, plain columns when piped, JSON "
                            "with --json.",
                epilog="examples:\n  zoo list\n  zoo list --family albert --lang zh\n  zoo list --json | jq '.[].name'")
    p.add_argument("--family", choices=["albert", "bert"])
    p.add_argument("--language", "--lang", dest="lang", choices=["zh", "en", "multi"])
    p.add_argument("--json", action="store_true", help="print a JSON list")

    p = command(sub, "info", _info, parents=[common],
                help="show one checkpoint's config, sources, pins, license and cache state",
                epilog="examples:\n  zoo info albert_base_zh\n  zoo info albert-base-zh --json")
    p.add_argument("name", help="registered name or alias")
    p.add_argument("--json", action="store_true", help="print JSON")


def _human_size(n: int | None) -> str:
    """A size, or "—" where neither a pin nor the cache knows it."""
    from zoo._fs import human_size

    return "—" if n is None else human_size(n)


def _human_params(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f}M"


def _row(manifest: Manifest) -> dict[str, Any]:
    from zoo.cache import cached_snapshot, download_size

    cached = cached_snapshot(manifest)
    return {
        "name": manifest.name,
        "aliases": list(manifest.aliases),
        "family": manifest.family,
        "architecture": manifest.architecture,
        "language": manifest.language,
        "params": manifest.config.param_count(),
        "size": cached.size if cached else download_size(manifest),
        "license": manifest.license,
        "cached": cached is not None,
        "description": manifest.description,
        "builtin": manifest.builtin,
        "heads": manifest.heads.to_dict(),
    }


def _list(args: argparse.Namespace) -> int:
    manifests = registry_from_args(args).filter(family=args.family, language=args.lang)
    rows = [_row(m) for m in manifests]
    if args.json:
        emit_json(rows)
        return 0
    columns = ("name", "family", "lang", "params", "size", "cached")
    cells = [(r["name"], r["family"] + (" (brightmart)" if r["architecture"] == "albert-brightmart" else ""),
              r["language"], _human_params(r["params"]), _human_size(r["size"]),
              "yes" if r["cached"] else "-") for r in rows]
    if not stdout_is_tty():
        print_columns(columns, cells)
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in columns:
        table.add_column(col, justify="right" if col in ("params", "size") else "left")
    for c in cells:
        table.add_row(*c)
    out_console().print(table)
    return 0


def _info(args: argparse.Namespace) -> int:
    manifest = registry_from_args(args).get(args.name)
    data = _row(manifest)
    data.update(
        manifest=str(manifest.path),
        homepage=manifest.homepage,
        citation=manifest.citation,
        config=manifest.config.to_dict(),
        tokenizer={"lowercase": manifest.tokenizer.lowercase, "strip_accents": manifest.tokenizer.strip_accents},
        sources=[_source_dict(s) for s in manifest.sources],
    )
    if args.json:
        emit_json(data)
        return 0
    from rich.table import Table

    console = out_console()
    console.print(f"[bold]{manifest.name}[/]  {manifest.description}")
    if manifest.aliases:
        console.print(f"aliases:  {', '.join(manifest.aliases)}")
    console.print(f"family:   {manifest.family} ({manifest.architecture}), language {manifest.language}")
    console.print(f"params:   {data['params']:,} (encoder incl. pooler)")
    console.print(f"license:  {manifest.license}")
    if manifest.homepage:
        console.print(f"homepage: {manifest.homepage}")
    if manifest.citation:
        console.print(f"citation: {manifest.citation}")
    console.print(f"heads:    {_heads_line(manifest)}")
    if manifest.heads.note:
        console.print(f"          {manifest.heads.note}", markup=False, highlight=False)
    console.print(f"cached:   {'yes' if data['cached'] else 'no'}")
    console.print(f"manifest: {manifest.path}{'' if manifest.builtin else ' (user)'}")
    table = Table(title="config", box=None, show_header=False, title_justify="left")
    for key, value in data["config"].items():
        table.add_row(key, str(value))
    console.print(table)
    for s in data["sources"]:
        console.print(f"[bold]source {s['index']}[/]: {s['location']}")
        console.print(f"  format {s['format']}" + (f", scheme {s['scheme']}" if s["scheme"] else "")
                      + f", archive {s['archive']}")
        console.print(f"  sha256 {s['sha256'] or 'not published (trust on first use)'}"
                      + (f", size {_human_size(s['size'])} ({s['size']:,} bytes)" if s["size"] is not None else ""))
        console.print(f"  checkpoint {s['checkpoint']}, vocab {s['vocab']}")
        for rel, pin in s["files"].items():
            console.print(f"  file {rel}: sha256 {pin['sha256'] or '?'}"
                          + (f", size {pin['size']:,} bytes" if pin["size"] is not None else ""))
    return 0


def _heads_line(manifest: Manifest) -> str:
    """``mlm untrained (fill-mask refused), seq_relationship untrained, pooler untrained`` for ``zoo info``."""
    heads = manifest.heads
    parts = []
    for head in ("mlm", "seq_relationship", "pooler"):
        text = f"{head} {heads.describe(head)}"
        if head == "mlm" and heads.unusable("mlm"):
            text += " (fill-mask refused)"
        parts.append(text)
    return ", ".join(parts)


def _source_dict(source: Any) -> dict[str, Any]:
    return {
        "index": source.index,
        "location": source.label,
        "url": source.url,
        "hf": source.hf,
        "revision": source.revision,
        "sha256": source.sha256,
        "size": source.size,
        "archive": source.archive,
        "format": source.format,
        "scheme": source.scheme,
        "checkpoint": source.checkpoint,
        "vocab": source.vocab,
        "files": {rel: {"sha256": pin.sha256, "size": pin.size} for rel, pin in source.files.items()},
    }
