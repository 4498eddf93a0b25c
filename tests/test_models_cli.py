"""``zoo run`` and ``zoo embed`` on a converted directory (the Python API is checked against transformers in
tests/test_load.py; here: the commands, their output formats and errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file

import zoo
from zoo.cli import main
from zoo.config import ModelConfig
from zoo.models.encoder import Encoder

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"今天气很好冷热我你们的。"]
CONFIG = ModelConfig(architecture="bert", vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=24, max_position_embeddings=16)


@pytest.fixture
def converted(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = Encoder(CONFIG, heads="pretraining")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(CONFIG.to_dict()), encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return tmp_path


def test_run_json(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(converted), "今天天气很[MASK]。", "我[MASK][MASK]", "--top-k", "3", "--json",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in result] == ["今天天气很[MASK]。", "我[MASK][MASK]"]
    assert [len(r["masks"]) for r in result] == [1, 2]
    want = zoo.load(converted, device="cpu", heads="mlm").fill_mask("我[MASK][MASK]", top_k=3)
    assert result[1]["masks"] == want
    scores = [item["score"] for item in result[0]["masks"][0]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)


def test_run_table_and_errors(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(converted), "今天天气很[MASK]。", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    top = zoo.load(converted, device="cpu", heads="mlm").fill_mask("今天天气很[MASK]。")[0][0]["token"]
    assert top in captured.out and "score" in captured.out and "loading on cpu" in captured.err
    assert main(["run", str(converted), "没有掩码"]) == 2
    assert "no [MASK]" in capsys.readouterr().err
    assert main(["run", str(converted), "很[MASK]", "--dtype", "float64"]) == 2  # argparse usage error


def test_embed_json_and_table(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(converted), "你好", "今天很冷", "--pooling", "mean", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    want = zoo.load(converted, device="cpu").embed(["你好", "今天很冷"], pooling="mean")
    assert [r["text"] for r in result] == ["你好", "今天很冷"]
    assert torch.allclose(torch.tensor([r["vector"] for r in result]), want, atol=1e-6)
    assert main(["embed", str(converted), "你好"]) == 0
    assert "16" in capsys.readouterr().out  # the dimension column


def test_unknown_model_is_not_found(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no_such_model_anywhere", "很[MASK]"]) == 3


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, zoo.cli, zoo.cli.models; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
