"""CLI commands: ``export`` (a transformers-ready folder) and ``mirror`` (to the Hub or a self-hosted mirror)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from zoo.cli._common import Subcommands, command, emit_json, err_console, manifest_dirs, progress, registry_from_args
from zoo.errors import UsageError

if TYPE_CHECKING:
    from zoo.hub.mirroring import Mirrored

_EXPORT_EPILOG = """\
examples:
  zoo export albert_base_zh ./albert_base_zh-hf       registry name: pulled, verified, converted, exported
  zoo export ./converted ./out --format hf            a `zoo convert` output (or an upstream TF release dir)
  zoo export ./pretrained ./out-tf --format tf         an upstream TF release: checkpoint, config JSON, vocab.txt"""

_MIRROR_EPILOG = """\
examples:
  zoo mirror albert_base_zh --to hf://my-org/albert_base_zh --private
  zoo mirror albert_base_zh bert_base_zh --repo-prefix my-org/
  zoo mirror --all --to /srv/hf-mirror                 git repos at /srv/hf-mirror/models/zoo/<name> (olah)
  zoo mirror --all --to /srv/hf-mirror --dry-run      list what would change"""


_EXPORT = ("Export NAME_OR_PATH (a registry name, a `zoo convert` output or an upstream TF release directory) as a "
           "folder that transformers' Auto* classes load: config.json, model.safetensors, vocab.txt, tokenizer files "
           "and a README.md model card; a fine-tuned model as its task class (*ForTokenClassification, "
           "*ForSequenceClassification, with id2label). With --format tf: what an upstream TensorFlow release holds "
           "(checkpoint, bert_config.json/albert_config.json, vocab.txt; a sequence classifier's "
           "output_weights/output_bias and labels.txt), written without TensorFlow. Prints the folder.")
_MIRROR = ("Export each NAME and mirror it: to a Hugging Face Hub repo (one commit per model; unchanged files are "
           "skipped), or into git repositories at DIR/models/ORG/NAME that a self-hosted Hub mirror such as olah "
           "serves. Prints one line per model.")


def register(sub: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add this group's commands to the parser."""
    p = command(sub, "export", _export, parents=[common], description=_EXPORT, epilog=_EXPORT_EPILOG,
                help="write a folder transformers loads, or an upstream TF release (--format tf)")
    p.add_argument("name", metavar="NAME_OR_PATH")
    p.add_argument("out", metavar="DIR", help="output directory: new or empty, outside zoo's cache")
    p.add_argument("--format", default="hf", choices=("hf", "tf"),
                   help="output format: hf (default; transformers) or tf (an upstream TensorFlow release)")
    from zoo.config import SCHEMES  # pure Python, no torch

    p.add_argument("--scheme", choices=SCHEMES, help="--format tf: the upstream naming scheme (default: the one the "
                                                     "model came from; only schemes of its architecture)")
    p.add_argument("--global-step", type=int, metavar="N",
                   help="--format tf: the global_step written (default: the steps zoo trained, else 0)")
    _source_options(p)

    p = command(sub, "mirror", _mirror, parents=[common], description=_MIRROR, epilog=_MIRROR_EPILOG,
                help="upload exports to the Hugging Face Hub or a mirror directory")
    p.add_argument("names", metavar="NAME_OR_PATH", nargs="*")
    p.add_argument("--all", action="store_true", help="every registered model")
    p.add_argument("--to", metavar="TARGET", help="hf://org/repo (one model) or a directory")
    p.add_argument("--repo-prefix", metavar="ORG/", help="mirror each model to the Hub repo ORG/<prefix><name>")
    p.add_argument("--org", default="zoo", help="organisation directory of a local mirror (default zoo)")
    p.add_argument("--private", action="store_true", help="create Hub repos as private")
    p.add_argument("--dry-run", action="store_true", help="export and compare, but send nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _source_options(p)


def _source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", type=int, metavar="N", help="use only source N of a registry model")
    p.add_argument("--offline", action="store_true", default=None, help="use only the cache (also ZOO_OFFLINE=1)")


def _export(args: argparse.Namespace) -> int:
    from zoo.hub.exporting import export

    registry_from_args(args)  # notes about user manifests that override built-ins
    with progress(args) as emit:
        exported = export(args.name, args.out, format=args.format, source=args.source, offline=args.offline,
                          manifests=manifest_dirs(args), progress=emit, scheme=args.scheme,
                          global_step=args.global_step)
    sys.stdout.write(f"{exported.path}\n")
    return 0


def _mirror(args: argparse.Namespace) -> int:
    from zoo.hub.mirroring import mirror
    from zoo.weights import target_of

    registry = registry_from_args(args)
    if args.all and args.names:
        raise UsageError("give model names or --all, not both")
    models = list(registry) if args.all else [target_of(name, manifest_dirs(args)) for name in args.names]
    if not models:
        raise UsageError("no models to mirror", hint="name one or more models, or use --all")
    with progress(args) as emit:
        results = mirror(models, args.to, repo_prefix=args.repo_prefix, org=args.org, private=args.private,
                         dry_run=args.dry_run, source=args.source, offline=args.offline,
                         manifests=manifest_dirs(args), progress=emit,
                         on_model=None if args.json else _print_result)
    if args.json:
        emit_json([{"name": r.name, "target": r.target, "commit": r.commit, "url": r.url, "changed": r.changed,
                    "dry_run": r.dry_run,
                    "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "action": f.action}
                              for f in r.files]} for r in results])
    return 0


def _print_result(result: Mirrored) -> None:
    sent = [f for f in result.files if f.action != "skip"]
    for f in result.files:
        err_console().print(f"  {f.action:6} {f.path}" + (f" ({f.size} bytes)" if f.action == "upload" else ""),
                            markup=False)
    if result.dry_run:
        status = f"would send {len(sent)} of {len(result.files)} files" if sent else "up to date"
        line = f"{result.name}\t{result.target}\t{status} (dry run)"
    elif result.commit is None:
        line = f"{result.name}\t{result.target}\tup to date"
    else:
        line = f"{result.name}\t{result.url or result.target}\t{result.commit}"
    sys.stdout.write(line + "\n")
