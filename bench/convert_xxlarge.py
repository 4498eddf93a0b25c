"""`zoo convert` of an albert_xxlarge-sized TF checkpoint vs `cp` of its data file (time and peak RSS), side by side.

    .venv/bin/python bench/convert_xxlarge.py --runs 5
    .venv/bin/python bench/convert_xxlarge.py --runs 5 --baseline /path/to/older/checkout   # + that zoo's convert
    .venv/bin/python bench/convert_xxlarge.py --tf /work/tfenv/bin/python                    # + TensorFlow anchor

The checkpoint is synthesized without TensorFlow (zoo.tf.writer, TensorFlow's own bytes): google-albert names,
Chinese albert_xxlarge shapes (V 21128, E 128, H 4096, I 16384, 64 heads, 12 layers in one shared group) with
MLM + SOP heads: 222M parameters, 0.888 GB. Files go to bench/out/ (git-ignored).

Rows (each a fresh process; wall time includes interpreter start and imports):

* ``cp`` of the data file (the floor the issue measures against);
* ``zoo convert`` — hashes every input for the receipt while reading it;
* ``zoo convert, inputs verified`` — the on-demand path: the cache snapshot's marker already holds the inputs'
  sha256, which ``convert_release(known_sha256=...)`` records instead of hashing again (CRC32Cs still checked);
* with ``--baseline DIR``: ``zoo convert`` of the zoo package found in DIR (PYTHONPATH=DIR);
* with ``--tf PYTHON``: TensorFlow's ``tf.train.load_checkpoint``, kernels transposed, written as safetensors.

Runs are interleaved (cp, zoo, zoo verified, ... then again) and each starts after removing the previous output
and a ``sync``, so every command sees the same page-cache state; the input stays in the page cache (read once
before). The table shows the best and the median of ``--runs``; peak RSS is the child's ``ru_maxrss`` (max over
runs). zoo's modules are byte-compiled first (``compileall``), as an installed package is.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "convert_xxlarge"
CONFIG = {"vocab_size": 21128, "embedding_size": 128, "hidden_size": 4096, "num_hidden_layers": 12,
          "num_attention_heads": 64, "intermediate_size": 16384, "hidden_act": "relu",
          "max_position_embeddings": 512, "type_vocab_size": 2, "num_hidden_groups": 1, "inner_group_num": 1}

# Runs `argv` in a child and prints its wall time and peak RSS (KiB) as the last line.
_MEASURED = """
import resource, subprocess, sys, time
t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True); dt = time.perf_counter() - t
print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

_ZOO = "import sys; from zoo.cli import main; sys.exit(main(sys.argv[1:]))"

_ZOO_VERIFIED = """
import json, sys
from pathlib import Path
from zoo.converters.tf import convert_release, find_release
known = json.loads(Path(sys.argv[3]).read_text())
convert_release(find_release(sys.argv[1]), Path(sys.argv[2]), known_sha256=known)
"""

# TensorFlow's reader, kernels transposed, written as safetensors (inline: the TF venv need not have safetensors)
_TF_ANCHOR = """
import json, struct, sys, numpy as np
import tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
tensors = {}
for name in sorted(reader.get_variable_to_shape_map()):
    value = reader.get_tensor(name)
    tensors[name] = np.ascontiguousarray(value.T) if name.endswith("/kernel") else value
header, offset = {}, 0
for name, value in tensors.items():
    header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + value.nbytes]}
    offset += value.nbytes
raw = json.dumps(header).encode()
raw += b" " * (-len(raw) % 8)
with open(sys.argv[2], "wb") as fh:
    fh.write(struct.pack("<Q", len(raw)) + raw)
    for value in tensors.values():
        fh.write(value.tobytes())
"""


def synthesize(src: Path) -> None:
    import numpy as np

    from zoo.config import ModelConfig
    from zoo.converters import google_albert
    from zoo.converters.canonical import encoder_shapes, head_shapes
    from zoo.converters.names import HEAD_NAME_MAPS, transposed
    from zoo.tf.writer import write_checkpoint

    config = ModelConfig.from_upstream(CONFIG, "albert")
    canonical = {**encoder_shapes(config), **head_shapes(config)["mlm"], **head_shapes(config)["seq_relationship"]}
    names = {**google_albert.encoder_names(config), **HEAD_NAME_MAPS["mlm"], **HEAD_NAME_MAPS["seq_relationship"]}
    shapes = {tf: tuple(reversed(canonical[c])) if transposed(tf) else canonical[c] for tf, c in names.items()}
    rng = np.random.default_rng(0)
    values = {name: rng.standard_normal(shape, dtype=np.float32) * 0.02 for name, shape in shapes.items()}
    assert sum(v.size for v in values.values()) == config.param_count() + config.head_param_count()
    src.mkdir(parents=True)
    write_checkpoint(src / "model.ckpt-best", values)
    (src / "albert_config.json").write_text(json.dumps(CONFIG))
    (src / "vocab_chinese.txt").write_text("".join(f"tok{i}\n" for i in range(CONFIG["vocab_size"])))


def measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    # cwd: not the repository, so `python -c` imports the installed zoo (or --baseline's), not ./zoo
    result = subprocess.run([sys.executable, "-c", _MEASURED, *argv], check=True, capture_output=True, text=True,
                            env=env, cwd=OUT)
    seconds, rss_kib = result.stdout.split()[-2:]
    return float(seconds), int(rss_kib) * 1024


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="DIR", help="also time `zoo convert` of the zoo package in DIR")
    parser.add_argument("--tf", metavar="PYTHON", help="python with TensorFlow for the anchor run")
    args = parser.parse_args()

    src = OUT / "src"
    if not (src / "model.ckpt-best.index").is_file():
        shutil.rmtree(src, ignore_errors=True)
        print("synthesizing checkpoint ...", file=sys.stderr)
        synthesize(src)
    data = src / "model.ckpt-best.data-00000-of-00001"
    subprocess.run(["cat", str(data)], check=True, stdout=subprocess.DEVNULL)  # warm the page cache
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "zoo")], check=True,
                   stdout=subprocess.DEVNULL)
    known = OUT / "known.json"  # what a snapshot marker holds: every input's sha256
    if not known.is_file():
        import hashlib

        known.write_text(json.dumps({str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                                     for p in sorted(src.iterdir())}))

    converted = OUT / "converted"
    rows: list[tuple[str, list[str], Path, dict[str, str] | None]] = [
        ("cp data file", ["cp", str(data), str(OUT / "copy.data")], OUT / "copy.data", None),
        ("zoo convert", [sys.executable, "-c", _ZOO, "convert", "-q", str(src), str(converted)], converted, None),
        ("zoo convert, inputs verified", [sys.executable, "-c", _ZOO_VERIFIED, str(src), str(converted), str(known)],
         converted, None),
    ]
    if args.baseline:
        env = dict(os.environ, PYTHONPATH=str(Path(args.baseline).resolve()))
        rows.append((f"zoo convert ({Path(args.baseline).name})",
                     [sys.executable, "-c", _ZOO, "convert", "-q", str(src), str(converted)], converted, env))
    if args.tf:
        tf_out = OUT / "tf.safetensors"
        rows.append(("TF load_checkpoint + write safetensors", [args.tf, "-c", _TF_ANCHOR, str(src / "model.ckpt-best"),
                                                                str(tf_out)], tf_out, None))
    times: dict[str, list[float]] = {label: [] for label, *_ in rows}
    rss: dict[str, int] = {label: 0 for label, *_ in rows}
    output = 0
    for _ in range(args.runs):
        for label, argv, out, env in rows:
            remove(out)
            subprocess.run(["sync"], check=True)
            seconds, peak = measured(argv, env)
            times[label].append(seconds)
            rss[label] = max(rss[label], peak)
            if out == converted:
                output = (converted / "model.safetensors").stat().st_size
            remove(out)
    cp_best, cp_median = min(times["cp data file"]), statistics.median(times["cp data file"])
    print(f"checkpoint data {data.stat().st_size / 1e9:.3f} GB, output model.safetensors {output / 1e9:.3f} GB, "
          f"{args.runs} runs; {os.cpu_count()} CPUs")
    print(f"{'command':<40} {'best (s)':>9} {'× cp':>6} {'median (s)':>11} {'× cp':>6} {'peak RSS (MB)':>14} "
          f"{'× output':>9}")
    for label, *_ in rows:
        best, median = min(times[label]), statistics.median(times[label])
        print(f"{label:<40} {best:9.2f} {best / cp_best:6.2f} {median:11.2f} {median / cp_median:6.2f} "
              f"{rss[label] / 1e6:14.0f} {rss[label] / output:9.2f}")


if __name__ == "__main__":
    main()
