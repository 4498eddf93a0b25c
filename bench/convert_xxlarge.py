"""`zoo convert` of an albert_xxlarge-sized TF checkpoint vs `cp` of its data file (time and peak RSS).

    .venv/bin/python bench/convert_xxlarge.py                       # zoo convert vs cp
    .venv/bin/python bench/convert_xxlarge.py --tf /work/tfenv/bin/python   # + TensorFlow anchor (dev only)

The checkpoint is synthesized without TensorFlow (zoo.tf.writer, byte-compatible with TF's BundleWriter):
google-albert names, Chinese albert_xxlarge shapes (V 21128, E 128, H 4096, I 16384, 64 heads, 12 layers in
one shared group) with MLM + SOP heads: 221M parameters, 0.88 GB. Files go to bench/out/ (git-ignored).
Every timing is the best of --repeat runs with a warm page cache; peak RSS is the child's ru_maxrss.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "convert_xxlarge"
CONFIG = {"vocab_size": 21128, "embedding_size": 128, "hidden_size": 4096, "num_hidden_layers": 12,
          "num_attention_heads": 64, "intermediate_size": 16384, "hidden_act": "relu",
          "max_position_embeddings": 512, "type_vocab_size": 2, "num_hidden_groups": 1, "inner_group_num": 1}

# Runs `argv` in a child and prints its own peak RSS (KiB) as the last line.
_MEASURED = """
import resource, subprocess, sys, time
t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True); dt = time.perf_counter() - t
print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

_TF_ANCHOR = """
import sys, time, numpy as np
t = time.perf_counter()
import tensorflow as tf
from safetensors.numpy import save_file
reader = tf.train.load_checkpoint(sys.argv[1])
tensors = {}
for name in reader.get_variable_to_shape_map():
    value = reader.get_tensor(name)
    tensors[name] = np.ascontiguousarray(value.T) if name.endswith("/kernel") else value
save_file(tensors, sys.argv[2])
"""


def synthesize(src: Path) -> None:
    import numpy as np

    from zoo.config import ModelConfig
    from zoo.tf.writer import write_checkpoint

    from zoo.converters import google_albert
    from zoo.converters.canonical import encoder_shapes, head_shapes
    from zoo.converters.names import HEADS, transposed

    config = ModelConfig.from_upstream(CONFIG, "albert")
    canonical = {**encoder_shapes(config), **head_shapes(config)["mlm"], **head_shapes(config)["seq_relationship"]}
    names = {**google_albert.encoder_names(config), **HEADS["mlm"], **HEADS["seq_relationship"]}
    shapes = {tf: tuple(reversed(canonical[c])) if transposed(tf) else canonical[c] for tf, c in names.items()}
    rng = np.random.default_rng(0)
    values = {name: rng.standard_normal(shape, dtype=np.float32) * 0.02 for name, shape in shapes.items()}
    assert sum(v.size for v in values.values()) == config.param_count() + config.head_param_count()
    src.mkdir(parents=True)
    write_checkpoint(src / "model.ckpt-best", values)
    (src / "albert_config.json").write_text(json.dumps(CONFIG))
    (src / "vocab_chinese.txt").write_text("".join(f"tok{i}\n" for i in range(CONFIG["vocab_size"])))


def measured(argv: list[str]) -> tuple[float, int]:
    result = subprocess.run([sys.executable, "-c", _MEASURED, *argv], check=True, capture_output=True, text=True)
    seconds, rss_kib = result.stdout.split()[-2:]
    return float(seconds), int(rss_kib) * 1024


def best(argv: list[str], repeat: int, cleanup: Path) -> tuple[float, int]:
    runs = []
    for _ in range(repeat):
        if cleanup.is_dir():
            shutil.rmtree(cleanup)
        cleanup.unlink(missing_ok=True)
        runs.append(measured(argv))
    return min(r[0] for r in runs), max(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tf", metavar="PYTHON", help="python with TensorFlow + safetensors for the anchor run")
    args = parser.parse_args()

    src = OUT / "src"
    if not (src / "model.ckpt-best.index").is_file():
        shutil.rmtree(src, ignore_errors=True)
        print("synthesizing checkpoint ...", file=sys.stderr)
        synthesize(src)
    data = src / "model.ckpt-best.data-00000-of-00001"
    subprocess.run(["cat", str(data)], check=True, stdout=subprocess.DEVNULL)  # warm the page cache

    copy = OUT / "copy.data"
    converted = OUT / "converted"
    cp_time, cp_rss = best(["cp", str(data), str(copy)], args.repeat, copy)
    zoo_cmd = [sys.executable, "-c", "import sys; from zoo.cli import main; sys.exit(main(sys.argv[1:]))",
               "convert", str(src), str(converted)]
    zoo_time, zoo_rss = best(zoo_cmd, args.repeat, converted)
    output = (converted / "model.safetensors").stat().st_size
    rows = [("cp data file", cp_time, cp_rss), ("zoo convert", zoo_time, zoo_rss)]
    if args.tf:
        tf_out = OUT / "tf.safetensors"
        tf_time, tf_rss = best([args.tf, "-c", _TF_ANCHOR, str(src / "model.ckpt-best"), str(tf_out)], 1, tf_out)
        rows.append(("TF load_checkpoint + safetensors save", tf_time, tf_rss))

    print(f"checkpoint data {data.stat().st_size / 1e9:.3f} GB, output model.safetensors {output / 1e9:.3f} GB")
    print(f"{'command':<40} {'time (s)':>9} {'× cp':>6} {'peak RSS (MB)':>14} {'× output':>9}")
    for label, seconds, rss in rows:
        print(f"{label:<40} {seconds:9.2f} {seconds / cp_time:6.2f} {rss / 1e6:14.0f} {rss / output:9.2f}")


if __name__ == "__main__":
    main()
