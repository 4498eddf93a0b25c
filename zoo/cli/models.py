"""``zoo run`` (fill-mask; tags or labels from a fine-tuned model) and ``zoo embed`` (sentence vectors). torch is
imported inside the commands."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

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

    p = command(sub, "run", _run, parents=[common, model_opts],
                help="fill in [MASK] tokens, or tag or classify with a fine-tuned model",
                description="Run the model on the text(s): a fine-tuned tagger lists the entities of each text (with "
                            "character offsets), a fine-tuned classifier gives each text a label and its probability; "
                            "any other model predicts the most likely tokens for each [MASK].",
                epilog='examples:\n  zoo run albert_base_zh "今天天气很[MASK]。"\n'
                       '  zoo run ./converted "北京是中国的[MASK][MASK]。" --top-k 3 --json\n'
                       '  zoo run ./dish_tagger "我很喜欢这家的麻辣香锅和酸菜鱼"\n'
                       '  zoo run ./sentiment "服务太慢了" "菜很好吃" --json\n'
                       '  zoo run ./matcher "今天天气怎么样" "今天天气如何" --pairs')
    p.add_argument("texts", nargs="+", metavar="TEXT", help="texts (with [MASK] tokens, for fill-mask)")
    p.add_argument("--top-k", type=int, default=5, help="fill-mask: candidates per [MASK] (default 5)")
    p.add_argument("--pairs", action="store_true",
                   help="a classifier of text pairs: the texts are read two by two (text, pair)")

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
    from zoo.weights import looks_like_path

    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    if args.pairs and len(args.texts) % 2:
        raise UsageError(f"--pairs reads the texts two by two, but {len(args.texts)} were given")
    if not looks_like_path(args.model):
        _refuse_untrained_mlm_head(args)
    loaded = _load(args)
    if loaded.config.task == "token-classification":
        return _print_entities(args, loaded.tag(args.texts))
    if loaded.config.task == "sequence-classification":
        items = list(zip(args.texts[::2], args.texts[1::2])) if args.pairs else args.texts
        return _print_labels(args, items, loaded.classify(items))
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


def _print_entities(args: argparse.Namespace, found: list[list[dict[str, Any]]]) -> int:
    if args.json:
        emit_json([{"text": text, "entities": entities} for text, entities in zip(args.texts, found)])
        return 0
    from rich.table import Table

    console = out_console()
    for text, entities in zip(args.texts, found):
        table = Table(title=text, title_justify="left")
        for column, justify in (("entity", "left"), ("label", "left"), ("start", "right"), ("end", "right"),
                                ("score", "right")):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        for e in entities:
            table.add_row(e["text"], e["label"], str(e["start"]), str(e["end"]),
                          "" if e["score"] is None else f"{e['score']:.4f}")
        console.print(table if entities else f"{text}\n  (no entities)")
    return 0


def _print_labels(args: argparse.Namespace, items: list[Any], labels: list[dict[str, Any]]) -> int:
    shown = [" | ".join(i) if isinstance(i, tuple) else i for i in items]
    if args.json:
        emit_json([{"text": text, **result} for text, result in zip(shown, labels)])
        return 0
    from rich.table import Table

    table = Table()
    table.add_column("text")
    table.add_column("label")
    table.add_column("score", justify="right")
    for text, result in zip(shown, labels):
        table.add_row(text, result["label"], f"{result['score']:.4f}")
    out_console().print(table)
    return 0


def _refuse_untrained_mlm_head(args: argparse.Namespace) -> None:
    """A registry model whose MLM head its manifest records as untrained or absent is refused before anything is
    downloaded (``Loaded.fill_mask`` refuses it too; a path is checked by nothing but its weights)."""
    from zoo.errors import NotFoundError
    from zoo.loader import check_fill_mask

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
