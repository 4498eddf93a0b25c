"""Shared setup for the pull benchmarks: a 1 GiB file under /tmp served by nginx, a throwaway ZOO_HOME."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from servers.nginx import Nginx as Nginx  # re-exported: the pull benches serve the file with it

WORK = Path(os.environ.get("ZOO_BENCH_DIR", "/tmp/zoo-bench"))
SIZE = 1 << 30


def big_file() -> Path:
    """/tmp/zoo-bench/www/model.bin: 1 GiB of random bytes (made once)."""
    path = WORK / "www" / "model.bin"
    if not path.exists() or path.stat().st_size != SIZE:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            for _ in range(SIZE >> 24):
                f.write(os.urandom(1 << 24))
    return path


def manifest_dir(url: str) -> Path:
    """A user manifest ``bench`` with one archive-less source at ``url``."""
    d = Path(tempfile.mkdtemp(prefix="zoo-bench-manifests-"))
    (d / "bench.yaml").write_text(f"""schema: 1
name: bench
family: bert
language: zh
description: benchmark file
license: Apache-2.0
config: {{vocab_size: 100, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16}}
sources:
  - url: {url}
    archive: none
    format: safetensors
    checkpoint: model.bin
    vocab: vocab.txt
""")
    return d


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall time of ``cmd``, started after dirty pages of earlier runs are flushed (else the previous tool's
    1 GiB of writeback throttles the next one)."""
    os.sync()
    time.sleep(0.5)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def zoo_pull_cmd() -> list[str]:
    return [sys.executable, "-c", "import sys; from zoo.cli import main; sys.exit(main(['pull', 'bench', '-q']))"]


def zoo_env(home: Path, manifests: Path) -> dict[str, str]:
    return {**os.environ, "ZOO_HOME": str(home), "ZOO_MANIFEST_PATH": str(manifests), "PYTHONPATH": str(REPO)}


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def drop(path: Path) -> None:
    path.unlink(missing_ok=True)
