"""Whole-process cost of "import, load the weights, one forward of 2×32 tokens": zoo.load vs transformers'
AutoModel.from_pretrained on the same random weights (bert_base_zh and albert_xxlarge sizes), each run in a
fresh subprocess, alternating, warm page cache. Also the peak RSS the load adds over the imports.

    .venv/bin/python bench/load_bert_base.py [--size bert_base|albert_xxlarge|all] [--runs 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _weights import SIZES, make

# VmHWM (peak resident set of this process image; unlike ru_maxrss it is not inherited across exec)
_HWM = "def hwm():\n    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
CHILD = {
    "zoo": _HWM + """
import sys
import torch, zoo
base = hwm()
loaded = zoo.load(sys.argv[1], device="cpu")
peak = hwm()
ids = torch.randint(5, 21000, (2, 32))
with torch.inference_mode():
    loaded.model(ids, attention_mask=torch.ones_like(ids))
print(base, peak, hwm())
""",
    "transformers": _HWM + """
import sys
import torch, transformers
base = hwm()
model = transformers.AutoModel.from_pretrained(sys.argv[1]).eval()
peak = hwm()
ids = torch.randint(5, 21000, (2, 32))
with torch.inference_mode():
    model(input_ids=ids, attention_mask=torch.ones_like(ids))
print(base, peak, hwm())
""",
}


def run_once(kind: str, path: Path) -> dict[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD[kind], str(path)], capture_output=True, text=True,
                          check=True)
    wall = time.perf_counter() - start
    base, peak, final = map(int, done.stdout.split()[-3:])
    return {"wall": wall, "base": base, "peak": peak, "final": final}


def bench(size: str, runs: int, workdir: Path) -> dict:
    zoo_dir, hf_dir, weight_bytes = make(size, workdir / size)
    paths = {"zoo": zoo_dir, "transformers": hf_dir}
    for kind in paths:  # warm the page cache and any compiled kernels
        run_once(kind, paths[kind])
    results: dict[str, list[dict[str, float]]] = {k: [] for k in paths}
    for _ in range(runs):
        for kind in paths:
            results[kind].append(run_once(kind, paths[kind]))
    summary = {"size": size, "weight_bytes": weight_bytes, "runs": runs}
    for kind, rows in results.items():
        summary[kind] = {
            "wall_s": statistics.median(r["wall"] for r in rows),
            "peak_rss_bytes": statistics.median(r["peak"] for r in rows),
            "load_rss_over_weights": statistics.median((r["peak"] - r["base"]) / weight_bytes for r in rows),
            "load_and_forward_rss_over_weights": statistics.median((r["final"] - r["base"]) / weight_bytes
                                                                   for r in rows),
        }
    summary["wall_ratio_zoo_over_transformers"] = summary["zoo"]["wall_s"] / summary["transformers"]["wall_s"]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=[*SIZES, "all"], default="all")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "zoo-bench")
    args = parser.parse_args()
    for size in SIZES if args.size == "all" else [args.size]:
        s = bench(size, args.runs, args.workdir)
        print(json.dumps(s))
        z, t = s["zoo"], s["transformers"]
        print(f"{size}: weights {s['weight_bytes'] / 1e6:.0f} MB | wall zoo {z['wall_s']:.2f} s, transformers "
              f"{t['wall_s']:.2f} s, ratio {s['wall_ratio_zoo_over_transformers']:.2f} | load RSS / weights: zoo "
              f"{z['load_rss_over_weights']:.2f}, transformers {t['load_rss_over_weights']:.2f} | with the forward: zoo "
              f"{z['load_and_forward_rss_over_weights']:.2f}, transformers "
              f"{t['load_and_forward_rss_over_weights']:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
