"""Two real processes writing the same output directory at the same moment, many times over."""

from __future__ import annotations

import multiprocessing
import os
import traceback
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tf" / "bert"


def write(command: str, out: Path) -> dict[str, str]:
    """One zoo command writing ``out``; ``{file: sha256}`` of what it says it wrote."""
    import zoo
    from zoo.converters.modeldir import output_records, read_receipt

    if command == "convert":
        zoo.convert(FIXTURE, out)
    elif command == "export":
        return dict(zoo.export(FIXTURE, out, format="tf", progress=False).files)
    else:
        zoo.init_model(FIXTURE / "bert_config.json", out=out, vocab=FIXTURE / "vocab.txt", progress=False)
    return {name: record.sha256 for name, record in output_records(read_receipt(out) or {}).items()}


def _worker(command: str, targets: list[str], barrier: Any, results: Any) -> None:
    from zoo.errors import UsageError

    for i, target in enumerate(targets):
        barrier.wait()
        try:
            outcome: tuple[str, Any] = ("ok", write(command, Path(target)))
        except UsageError as exc:
            outcome = ("refused", exc.message)
        except BaseException as exc:  # anything else is what the test is about
            outcome = ("error", "".join(traceback.format_exception_only(type(exc), exc)).strip())
        results.put((i, os.getpid(), *outcome))


def race(command: str, targets: list[Path]) -> list[list[tuple[str, Any]]]:
    """Two processes run ``command`` into each target at once (a barrier before each); per target, the two
    outcomes: ``("ok", files)``, ``("refused", message)`` or ``("error", what)``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(command, [str(t) for t in targets], barrier, results))
               for _ in range(2)]
    for w in workers:
        w.start()
    outcomes: list[list[tuple[str, Any]]] = [[] for _ in targets]
    for _ in range(2 * len(targets)):
        i, _, kind, detail = results.get(timeout=300)
        outcomes[i].append((kind, detail))
    for w in workers:
        w.join(timeout=60)
    return outcomes
