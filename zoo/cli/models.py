"""``zoo run`` (fill-mask) and ``zoo embed`` (sentence vectors). torch is imported inside the commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from zoo.cli._common import (
    Subcommands,
    command,
    emit_json,
    err_console,
    manifest_dirs,
    out_console,
    progress,
    registry_from_args,
)

if TYPE_CHECKING:
    from zoo.loader import Loaded


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    model_opts = argparse.ArgumentParser(add_help=False)
    from zoo.config import DTYPES

    model_opts.add_argument("model", metavar="NAME_OR_PATH",
                            help="registry name/alias, or a path (with a '/', e.g. ./dir) to a directory made by "
                                 "zoo convert/export/pretrain or an upstream TF release")
    model_opts.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    model_opts.add_argument("--dtype", choices=tuple(DTYPES), default=None, metavar="DTYPE",
                            help="float32 (default), float16, bfloat16 (or fp32, fp16, bf16)")
    model_opts.add_argument("--source", type=int, default=None, metavar="N",
                            help="download from the manifest's source N only (see zoo info)")
    model_opts.add_argument("--offline", action="store_true", default=None, help="never touch the network")
    model_opts.add_argument("--json", action="store_true", help="print JSON")

    p = command(sub, "run", _run, parents=[common, model_opts], help="fill in [MASK] tokens",
                description="Predict the most likely tokens for each [MASK] in the text(s).",
                epilog='examples:\n  zoo run albert_base_zh "今天天气很[MASK]。"\n'
                       '  zoo run ./converted "北京是中国的[MASK][MASK]。" --top-k 3 --json')
    p.add_argument("texts", nargs="+", metavar="TEXT", help="text with one or more [MASK] tokens")
    p.add_argument("--top-k", type=int, default=5, help="candidates per [MASK] (default 5)")

    p = command(sub, "embed", _embed, parents=[common, model_opts], help="sentence vectors",
                description="Encode texts into vectors: the last layer's [CLS] state or the mean over tokens.",
                epilog='examples:\n  zoo embed bert_base_zh "你好" "今天天气很好" --json\n'
                       '  zoo embed ./converted "你好" --pooling mean')
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--pooling", choices=["cls", "mean"], default="cls", help="cls (default) or mean")


def _load(args: argparse.Namespace) -> Loaded:
    from zoo.loader import load

    registry_from_args(args)  # notes about user manifests that override built-ins
    with progress(args) as emit:
        return load(args.model, device=args.device, dtype=args.dtype, source=args.source, offline=args.offline,
                    manifests=manifest_dirs(args), progress=emit)


def _run(args: argparse.Namespace) -> int:
    from zoo.errors import UsageError

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    _refuse_untrained_mlm_head(args)
    loaded = _load(args)
    results = [{"text": text, "masks": loaded.fill_mask(text, top_k=args.top_k)} for text in args.texts]
    if args.json:
        emit_json(results)
        return 0
    from rich.table import Table

    console = out_console()
    for result in results:
        table = Table(title=result["text"], title_justify="left")
        table.add_column("mask", justify="right")
        table.add_column("rank", justify="right")
        table.add_column("token")
        table.add_column("score", justify="right")
        for m, ranked in enumerate(result["masks"], 1):
            for rank, item in enumerate(ranked, 1):
                table.add_row(str(m) if rank == 1 else "", str(rank), item["token"], f"{item['score']:.4f}")
        console.print(table)
    return 0


def _refuse_untrained_mlm_head(args: argparse.Namespace) -> None:
    """A registry model whose MLM head its manifest records as untrained or absent is refused before anything is
    downloaded (``Loaded.fill_mask`` refuses it too; a path is checked by nothing but its weights)."""
    from zoo.errors import NotFoundError
    from zoo.loader import check_fill_mask
    from zoo.weights import looks_like_path

    if looks_like_path(args.model):
        return
    try:
        manifest = registry_from_args(args).get(args.model)
    except NotFoundError:
        return  # loading says so, with its hints
    check_fill_mask(manifest, warn=False)


def _embed(args: argparse.Namespace) -> int:
    loaded = _load(args)
    vectors = loaded.embed(args.texts, pooling=args.pooling).cpu()
    if args.json:
        emit_json([{"text": t, "pooling": args.pooling, "vector": [round(x, 7) for x in v.tolist()]}
                   for t, v in zip(args.texts, vectors)])
        return 0
    from rich.table import Table

    table = Table()
    table.add_column("text")
    table.add_column("dim", justify="right")
    table.add_column("norm", justify="right")
    table.add_column("first values")
    for text, v in zip(args.texts, vectors):
        head = " ".join(f"{x:+.4f}" for x in v[:4].tolist())
        table.add_row(text, str(v.numel()), f"{float(v.norm()):.4f}", head + " …")
    out_console().print(table)
    err_console().print("full vectors: --json")
    return 0
