"""Every bench/ script still imports: the figures in docs/benchmarks.md can be reproduced with the recorded commands.

The benchmarks themselves are too big for the suite; this runs each script's module body (imports, definitions),
not its ``__main__`` block, in one fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_every_bench_script_imports() -> None:
    scripts = sorted(BENCH.glob("*.py"))
    assert len(scripts) >= 5
    code = ("import runpy, sys\n"
            f"sys.path.insert(0, {str(BENCH)!r})\n"
            "for path in sys.argv[1:]:\n"
            "    runpy.run_path(path, run_name='bench_import_check')\n")
    done = subprocess.run([sys.executable, "-c", code, *map(str, scripts)], capture_output=True, text=True,
                          timeout=240, cwd=BENCH)
    assert done.returncode == 0, done.stderr[-3000:]
