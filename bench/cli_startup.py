"""Figure: wall time of `zoo list` (goal ≤ 0.25 s), next to `python -c pass` as the floor.

    python bench/cli_startup.py [--runs 20]

Each command runs in a fresh process; the median of the runs is reported.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    zoo = shutil.which("zoo") or sys.exit("zoo is not on PATH: pip install -e . first")
    floor = median_seconds([sys.executable, "-c", "pass"], args.runs)
    listing = median_seconds([zoo, "list"], args.runs)
    as_json = median_seconds([zoo, "list", "--json"], args.runs)
    print(f"python -c pass     {floor * 1000:7.1f} ms")
    print(f"zoo list           {listing * 1000:7.1f} ms   (goal <= 250 ms)")
    print(f"zoo list --json    {as_json * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
