"""The README's main jobs, executed: its console commands and its Python example, against a tiny fixture model
registered under the README's names (a user manifest overrides the built-in, pointing at a local archive of the
TensorFlow-written fixture); and its "Try it offline" block, run by bash as written, with the network forbidden."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import zoo
from zoo.cli import main
from zoo.converters.modeldir import read_receipt
from zoo.registry import clear_cache

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tf" / "albert_google"
#: appended to `zoo pretrain`/`zoo finetune` so the README's commands fit the fixture (64 positions) and run in seconds
SMALL = {"pretrain": ["--steps", "3", "--batch-size", "4", "--max-seq-length", "32", "--workers", "0"],
         "finetune": ["--batch-size", "4", "--max-seq-length", "32", "--workers", "0"]}


def blocks(kind: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(rf"```{kind}\n(.*?)```", text, re.DOTALL)


@pytest.fixture
def registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    archive = Path(shutil.make_archive(str(tmp_path / "albert_fixture"), "gztar", FIXTURE))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    config = yaml.safe_load((ROOT / "manifests" / "albert_base_zh.yaml").read_text(encoding="utf-8"))
    upstream = {"vocab_size": 97, "embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 3,
                "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "relu",
                "max_position_embeddings": 64}
    for name in ("albert_base_zh", "albert_large_zh"):
        data = {**config, "name": name, "aliases": [], "params": None, "config": upstream,
                "sources": [{"url": archive.as_uri(), "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                             "archive": "tar.gz", "format": "tf-checkpoint", "scheme": "google-albert",
                             "checkpoint": "model.ckpt-best", "vocab": "vocab_chinese.txt"}]}
        (manifests / f"{name}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews.txt").write_text("今天天气很好。\n我们是中国人。\n\n他说了一个大国的事。\n这是好的。\n" * 5,
                                          encoding="utf-8")
    dishes = "".join(f"{c} {t}\n" for c, t in zip("我很喜欢麻辣香锅", ["O"] * 4 + ["B-DISH"] + ["I-DISH"] * 3))
    (tmp_path / "dishes.conll").write_text((dishes + "\n") * 8, encoding="utf-8")
    clear_cache()
    return tmp_path


def test_readme_console_commands_run(registered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands = [line.split("#")[0].strip()[2:] for block in blocks("console") for line in block.splitlines()
                if line.startswith("$ zoo ")]
    assert [shlex.split(c)[1] for c in commands[:6]] == ["pull", "run", "pretrain", "run", "finetune", "run"]
    for command in commands:
        argv = shlex.split(command)[1:]
        argv += SMALL.get(argv[0], [])
        code = main(argv)
        out = capsys.readouterr().out
        assert code == 0, command
        assert out.strip(), command  # every main job prints its result
    assert (registered / "albert_reviews" / "receipt.json").is_file()
    tagger = read_receipt(registered / "dish_tagger")
    assert tagger is not None and tagger["kind"] == "finetune" and tagger["base"]["model"] == "albert_reviews"


def test_readme_python_example_runs(registered: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [example] = [b for b in blocks("python") if "zoo.load(\"albert_base_zh\")" in b]
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    loaded = namespace["loaded"]
    assert isinstance(loaded, zoo.Loaded) and loaded.manifest.name == "albert_base_zh"
    assert "token" in capsys.readouterr().out  # fill_mask printed its predictions
    assert tuple(namespace["vectors"].shape) == (2, 32)  # type: ignore[attr-defined]


def test_readme_offline_block_runs(tmp_path: Path) -> None:
    """Every line of the block through bash, `zoo` being this checkout's ``python -m zoo``; `zoo pretrain` gets
    ``--steps 3`` appended so that the test takes seconds (the last --steps wins)."""
    [block] = [b for b in blocks("sh") if "zoo init" in b]
    assert [line.split()[1] for line in block.splitlines() if line.startswith("zoo ")] == ["init", "pretrain", "run"]
    shell = ('zoo() { if [ "$1" = pretrain ]; then set -- "$@" --steps 3; fi; "$PYTHON" -m zoo "$@"; }\n'
             "set -euo pipefail\n" + block)
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "ZOO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "ZOO_HOME": str(tmp_path / "home"),
        "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr
    init, trained = read_receipt(tmp_path / "my_albert"), read_receipt(tmp_path / "my_albert_trained")
    assert init is not None and init["kind"] == "init" and init["config"]["model"] == "albert_tiny_zh"
    assert trained is not None and trained["kind"] == "pretraining" and trained["steps"] == 3
    lines = done.stdout.splitlines()
    # each printed its result: paths every zoo command accepts (absolute), so `dir=$(zoo init ...)` works
    assert lines[:2] == [str(tmp_path / "my_albert"), str(tmp_path / "my_albert_trained")]
    assert "床前明[MASK]光" in lines[2]
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file() and "blobs" in p.parts]  # nothing downloaded
