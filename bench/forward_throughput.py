"""CPU forward throughput (tokens/s) at batch 32 × 128 on bert_base_zh-sized random weights: zoo's encoder vs
transformers' BertModel on the same weights, same process, alternating, after one warm-up each. A quarter of
the rows are padded (attention mask) so both masked-attention paths run.

    .venv/bin/python bench/forward_throughput.py [--size bert_base|albert_xxlarge] [--iters 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _weights import SIZES, make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="bert_base")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "zoo-bench")
    args = parser.parse_args()

    import torch
    import transformers

    import zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    zoo_dir, hf_dir, _ = make(args.size, args.workdir / args.size)
    ours = zoo.load(zoo_dir, device="cpu").model
    theirs = transformers.AutoModel.from_pretrained(hf_dir).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 21000, (32, 128), generator=gen)
    mask = torch.ones_like(ids)
    mask[::4, 100:] = 0
    runs = {
        "zoo": lambda: ours(ids, attention_mask=mask).last_hidden_state,
        "transformers": lambda: theirs(input_ids=ids, attention_mask=mask).last_hidden_state,
    }
    with torch.inference_mode():
        a, b = runs["zoo"](), runs["transformers"]()  # warm-up, and a sanity check on the outputs
        real = mask.bool()
        assert torch.allclose(a[real], b[real], atol=1e-4), float((a[real] - b[real]).abs().max())
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.iters):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    tokens = ids.numel()
    result = {"size": args.size, "batch": list(ids.shape), "threads": torch.get_num_threads(), "iters": args.iters}
    for name, t in times.items():
        result[name] = {"median_s": statistics.median(t), "tokens_per_s": tokens / statistics.median(t)}
    result["speedup_zoo_over_transformers"] = result["zoo"]["tokens_per_s"] / result["transformers"]["tokens_per_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
