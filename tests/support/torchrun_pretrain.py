"""``zoo ARGV...`` in one process that ``torchrun`` starts, reporting what the process group left behind.

Usage: ``python -m torch.distributed.run ... tests/support/torchrun_pretrain.py REPORT_DIR pretrain ...``. Each
process runs the CLI in-process, then writes ``REPORT_DIR/rank-N.json``: the exit code, whether a process group
is still initialized, and the names of the process's native threads while the group existed and after the
command returned (Linux: /proc/self/task). gloo's threads alive when the interpreter exits can abort it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch.distributed

from zoo.cli import main


def thread_names() -> list[str]:
    tasks = Path("/proc/self/task")
    return sorted((task / "comm").read_text().strip() for task in tasks.iterdir())


def run(report_dir: Path, argv: list[str]) -> int:
    seen: dict[str, Any] = {}
    init = torch.distributed.init_process_group

    def recording_init(*args: Any, **kwargs: Any) -> None:
        init(*args, **kwargs)
        seen["during"] = thread_names()

    torch.distributed.init_process_group = recording_init  # type: ignore[assignment]
    code = main(argv)
    report = {"code": code, "initialized": torch.distributed.is_initialized(), "during": seen.get("during"),
              "after": thread_names()}
    (report_dir / f"rank-{os.environ['RANK']}.json").write_text(json.dumps(report), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), sys.argv[2:]))
