"""zoo finetune: a tiny model learns a tagging and a classification task; the output tags and classifies (API,
zoo run); exact resume after kill -9; two processes end where one does; bad input; init → pretrain → finetune.

The data is made here: reviews naming dishes (token classification, BIO over characters) and short verdicts
(sequence classification), drawn from fixed word lists with a seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo.cli import main
from zoo.errors import DataError, UsageError

FIXTURES = Path(__file__).parent / "fixtures"
BERT_CONFIG = FIXTURES / "tf" / "bert" / "bert_config.json"
DISHES = ["麻辣香锅", "酸菜鱼", "宫保鸡丁", "红烧肉", "小笼包"]
BEFORE = ["我很喜欢这家的", "今天吃了", "推荐", "最难忘的是", "朋友点了"]
AFTER = ["。", "，味道不错。", "！", "和米饭。"]


def _review(rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """A review and the character spans of the dishes it names (one or two)."""
    text, spans = rng.choice(BEFORE), []
    for k in range(rng.choice((1, 1, 2))):
        if k:
            text += "和"
        dish = rng.choice(DISHES)
        spans.append((len(text), len(text) + len(dish)))
        text += dish
    return text + rng.choice(AFTER), spans


def write_conll(path: Path, n: int, seed: int) -> list[tuple[str, list[tuple[int, int]]]]:
    rng = random.Random(seed)
    reviews = [_review(rng) for _ in range(n)]
    with open(path, "w", encoding="utf-8") as fh:
        for text, spans in reviews:
            tags = ["O"] * len(text)
            for start, end in spans:
                tags[start:end] = ["B-DISH"] + ["I-DISH"] * (end - start - 1)
            fh.writelines(f"{c} {t}\n" for c, t in zip(text, tags))
            fh.write("\n")
    return reviews


def write_tsv(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("label\ttext_a\n")
        for _ in range(n):
            good = rng.random() < 0.5
            verdict = rng.choice(["很好吃", "真香", "推荐"] if good else ["太难吃", "很失望", "不推荐"])
            fh.write(f"{'good' if good else 'bad'}\t{rng.choice(DISHES)}{verdict}\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finetune_data")
    for name, n, seed in (("train", 240, 1), ("dev", 40, 2), ("test", 40, 3)):
        write_conll(folder / f"{name}.conll", n, seed)
        write_tsv(folder / f"{name}.tsv", n, seed)
    text = "".join(line.split(" ")[0] if line.strip() else "\n" for line in
                   (folder / "train.conll").read_text(encoding="utf-8").splitlines(keepends=False))
    (folder / "text.txt").write_text(text + "\n" + (folder / "train.tsv").read_text(encoding="utf-8"),
                                     encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def tiny(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT made here (the fixture's architecture, a vocab trained on the data), without dropout, so runs
    are comparable bit for bit where the same kernels run."""
    config = json.loads(BERT_CONFIG.read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    path = tmp_path_factory.mktemp("tiny_config") / "bert_config.json"
    path.write_text(json.dumps(config))
    return zoo.init_model(path, out=tmp_path_factory.mktemp("tiny") / "bert", train_vocab=[data / "text.txt"],
                          vocab_size=120, progress=False)


TAG = ["--task", "token-classification", "--max-seq-length", "32", "--batch-size", "16", "--workers", "0", "-q"]


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ learning
def test_a_tiny_model_learns_to_tag_dishes(tiny: Path, data: Path, tmp_path: Path) -> None:
    out = zoo.finetune(tiny, task="token-classification", train=data / "train.conll", dev=data / "dev.conll",
                       test=data / "test.conll", out=tmp_path / "tagger", epochs=8, batch_size=16, lr=2e-3,
                       max_seq_length=32, workers=0, classifier_dropout=0.0, progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "f1" and results["test"]["f1"] >= 0.9, results
    dev = [r for r in _records(out) if r["split"] == "dev"]
    assert len(dev) == 8 and results["best"]["f1"] == max(r["f1"] for r in dev)  # one evaluation per epoch
    assert results["best_step"] == results["best"]["step"]
    tagger = zoo.load(out, device="cpu")
    assert tagger.config.task == "token-classification" and tagger.config.labels == ("O", "B-DISH", "I-DISH")
    text = "推荐宫保鸡丁和小笼包。"
    [entities] = tagger.tag([text])
    assert [(e["text"], e["label"]) for e in entities] == [("宫保鸡丁", "DISH"), ("小笼包", "DISH")]
    assert all(text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1 for e in entities)
    # a review far longer than a window: tagged through overlapping windows, every dish found, none truncated away
    long = "".join(f"朋友点了{dish}，味道不错。" for dish in DISHES * 4)
    [found] = tagger.tag(long, max_seq_length=16, stride=4)
    assert [e["text"] for e in found] == DISHES * 4
    assert all(long[e["start"]:e["end"]] == e["text"] for e in found)


def test_a_tiny_model_learns_to_classify(tiny: Path, data: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["finetune", str(tiny), "--task", "sequence-classification", "--train", str(data / "train.tsv"),
                 "--dev", str(data / "dev.tsv"), "--test", str(data / "test.tsv"), "--out", str(tmp_path / "cls"),
                 "--epochs", "6", "--lr", "2e-3", "--batch-size", "16", "--max-seq-length", "32", "--workers", "0",
                 "-q"]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == (tmp_path / "cls").absolute()  # a path every zoo command accepts
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "accuracy" and results["test"]["accuracy"] >= 0.9, results
    assert results["test"]["labels"] == ["bad", "good"] or results["test"]["labels"] == ["good", "bad"]
    assert np.asarray(results["test"]["confusion"]).sum() == 40
    assert main(["run", str(out), "麻辣香锅很好吃", "酸菜鱼太难吃", "--json", "-q"]) == 0
    labels = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in labels] == ["good", "bad"] and all(0.5 < r["score"] <= 1 for r in labels)
    scores = zoo.load(out, device="cpu").classify(["红烧肉真香"], all_scores=True)[0]["scores"]
    assert set(scores) == {"good", "bad"} and abs(sum(scores.values()) - 1) < 1e-5
    classifier = zoo.load(out, device="cpu")
    for bad in ([("红烧肉", 3)], [123], [("a", "b", "c")]):  # a user's mistake is a clear error, not a traceback
        with pytest.raises(UsageError, match="classify"):
            classifier.classify(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="batch_size"):
        classifier.classify(["红烧肉"], batch_size=0)


def test_the_output_records_how_it_was_made(tiny: Path, data: Path, tmp_path: Path) -> None:
    out = zoo.finetune(tiny, task="token-classification", train=data / "train.conll", dev=data / "dev.conll",
                       out=tmp_path / "run", epochs=1, batch_size=16, max_seq_length=32, workers=0, progress=False,
                       tensorboard=tmp_path / "tb")
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["kind"] == "finetune" and receipt["task"] == "token-classification"
    assert receipt["steps"] == 15 and receipt["settings"]["optimizer"] == "adamw"  # ceil(240 / 16)
    assert receipt["labels"] == ["O", "B-DISH", "I-DISH"] and receipt["classifier_dropout"] == 0.1
    assert receipt["data"]["files"][0]["role"] == "train" and receipt["data"]["scheme"] == "bio"
    assert receipt["results"]["best"]["split"] == "dev"
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "token-classification" and config["tag_scheme"] == "bio"
    weights = load_file(str(out / "model.safetensors"))
    assert weights["classifier.weight"].shape == (3, 32) and "mlm.bias" not in weights
    train = [r for r in _records(out) if r["split"] == "train"]
    assert {"loss", "accuracy", "lr", "examples_per_s", "steps"} <= set(train[-1])
    assert train[-1]["step"] == 15 and train[-1]["steps"] == 5  # averages over the last 5 steps (--log-every 10)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [10, 15]
    assert events.Scalars("dev/f1")[0].value == pytest.approx(receipt["results"]["best"]["f1"])


def test_patience_stops_a_run_that_no_longer_improves(tiny: Path, data: Path, tmp_path: Path) -> None:
    """With the learning rate at 0 the dev score never improves after the first evaluation: --patience 1 stops the
    run at the second, and the output is the first (the best) evaluation's model."""
    out = zoo.finetune(tiny, task="token-classification", train=data / "train.conll", dev=data / "dev.conll",
                       out=tmp_path / "run", epochs=5, lr=0.0, patience=1, batch_size=16, max_seq_length=32,
                       workers=0, progress=False)
    dev = [r for r in _records(out) if r["split"] == "dev"]
    assert [r["step"] for r in dev] == [15, 30]  # 240 examples, batch 16: an epoch is 15 steps
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["steps"] == 30 and receipt["results"]["best_step"] == 15
    weights = (out / "model.safetensors").read_bytes()
    # the stop is part of the run's state: resuming it trains nothing more (not the 45 steps left of 5 epochs)
    zoo.finetune(tiny, task="token-classification", train=data / "train.conll", dev=data / "dev.conll", out=out,
                 epochs=5, lr=0.0, patience=1, batch_size=16, max_seq_length=32, workers=0, progress=False,
                 resume=True)
    assert [r["step"] for r in _records(out) if r["split"] == "dev"] == [15, 30]
    assert json.loads((out / "receipt.json").read_text())["steps"] == 30
    assert (out / "model.safetensors").read_bytes() == weights


def test_a_bioes_tagger_from_a_file_with_extra_columns(tiny: Path, data: Path, tmp_path: Path) -> None:
    """--tag-scheme bioes whatever the file's scheme; a CoNLL file's middle columns are ignored, with a note that
    reaches the receipt."""
    three = tmp_path / "train.conll"
    three.write_text("".join(f"{line.split()[0]} X {line.split()[1]}\n" if line.strip() else "\n" for line in
                             (data / "train.conll").read_text(encoding="utf-8").splitlines()), encoding="utf-8")
    out = zoo.finetune(tiny, task="token-classification", train=three, dev=data / "dev.conll",
                       out=tmp_path / "bioes", tag_scheme="bioes", epochs=1, batch_size=16, max_seq_length=32,
                       workers=0, progress=False)
    config = json.loads((out / "config.json").read_text())
    assert config["tag_scheme"] == "bioes" and config["labels"] == ["O", "B-DISH", "I-DISH", "E-DISH", "S-DISH"]
    assert isinstance(zoo.load(out, device="cpu").tag("推荐红烧肉。"), list)
    notes = json.loads((out / "receipt.json").read_text())["data"]["notes"]
    assert len(notes) == 1 and notes[0].startswith("train.conll:") and "column" in notes[0]


# ---------------------------------------------------------------------------------------- processes
def _zoo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=timeout)


def test_resume_after_kill_9_is_exact(tiny: Path, data: Path, tmp_path: Path) -> None:
    args = ["finetune", str(tiny), "--train", str(data / "train.conll"), "--dev", str(data / "dev.conll"),
            "--epochs", "2", "--eval-every", "5", "--log-every", "1", "--labels", "DISH", *TAG]
    whole = subprocess.Popen([sys.executable, "-m", "zoo", *args, "--out", str(tmp_path / "whole")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *args, "--out", str(out)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name >= "step-000000015" for p in (out / "checkpoints").glob("step-*")):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(zoo.NotFoundError) as incomplete:  # where a model is expected, the folder says what it is
        zoo.load(out)
    assert "incomplete finetune run" in incomplete.value.message and "zoo finetune" in str(incomplete.value.hint)
    resumed = _zoo(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert whole.wait(timeout=240) == 0, whole.stderr.read() if whole.stderr else ""
    a, b = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same kernels, the same order: equal bit for bit
    assert json.loads((out / "results.json").read_text()) == json.loads((tmp_path / "whole" / "results.json")
                                                                        .read_text())
    assert [r["step"] for r in _records(out) if r["split"] == "train"] == list(range(1, 31))


def test_two_gloo_processes_end_where_one_does(tiny: Path, data: Path, tmp_path: Path) -> None:
    common = ["--train", str(data / "train.conll"), "--epochs", "1", "--lr", "2e-3", "--classifier-dropout", "0",
              *TAG]
    # one thread per process on both sides (torchrun's default, pinned here): the same kernels, the same sums
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "zoo", "finetune", str(tiny), "--out", str(tmp_path / "one"),
                          "--grad-accum", "2", *common], capture_output=True, text=True, timeout=240, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "zoo",
                          "finetune", str(tiny), "--out", str(tmp_path / "two"), *common],
                         capture_output=True, text=True, timeout=240, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" /
                                                                                "model.safetensors"))
    start = load_file(str(tiny / "model.safetensors"))
    assert max(float((a[k] - start[k]).abs().max()) for k in start if k in a) > 1e-3  # training moved them
    # bit for bit: micro-batches of 8 (padded alike) either way, their two gradients added once — by
    # accumulation here, by the all-reduce there
    assert all(torch.equal(a[k], b[k]) for k in a)


# -------------------------------------------------------------------------------------------- input
def test_bad_input_is_a_clean_error_and_leaves_no_output(tiny: Path, data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad_tag.conll").write_text("麻 B-DISH\n辣 X-DISH\n\n", encoding="utf-8")
    (tmp_path / "new_label.conll").write_text("北 B-CITY\n京 I-CITY\n\n", encoding="utf-8")
    (tmp_path / "empty.conll").write_text("", encoding="utf-8")
    (tmp_path / "latin1.conll").write_bytes("麻 B-DISH\n".encode() + b"\xe9 O\n\n")
    out = tmp_path / "out"
    for train, dev, code, text in (
            ("bad_tag.conll", None, DataError.exit_code, "bad_tag.conll:2"),
            ("train.conll", "new_label.conll", DataError.exit_code, "CITY"),
            ("empty.conll", None, DataError.exit_code, "empty"),
            ("latin1.conll", None, DataError.exit_code, "latin1.conll:2")):
        folder = data if train == "train.conll" else tmp_path
        argv = ["finetune", str(tiny), "--train", str(folder / train), "--out", str(out), *TAG]
        if dev:
            argv += ["--dev", str(tmp_path / dev)]
        assert main(argv) == code, train
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err, err
        assert not out.exists()  # nothing partial is left in --out
    assert main(["finetune", str(tiny), "--train", str(data / "train.conll"), "--out", str(out), "-q",
                 "--max-seq-length", "32"]) == UsageError.exit_code  # no --task
    assert "--task is required" in capsys.readouterr().err
    assert main(["finetune", str(tiny), "--train", str(data / "train.conll"), "--out", str(out), *TAG,
                 "--metric", "accuracy"]) == UsageError.exit_code
    assert "not a token-classification metric" in capsys.readouterr().err
    # settings the machine cannot honour are refused before any data is read or tokenized
    assert main(["finetune", str(tiny), "--train", str(data / "train.conll"), "--out", str(out), *TAG,
                 "--dtype", "fp16", "--device", "cpu"]) == UsageError.exit_code
    assert "fp16" in capsys.readouterr().err and not out.exists()
    assert main(["finetune", str(tiny), "--train", str(data / "train.conll"), "--out", str(out), *TAG,
                 "--max-seq-length", "4096"]) == UsageError.exit_code
    assert "4096" in capsys.readouterr().err and not out.exists()


# ------------------------------------------------------------------------------------- from scratch
def test_init_pretrain_finetune_end_to_end(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """How small domain models are made: a model from a config and a vocab trained on the text, pretrained on it,
    then fine-tuned; each command prints a path the next one takes, and the result tags new text."""
    def zoo_cli(*argv: str) -> str:
        assert main([*argv, "-q"]) == 0, capsys.readouterr().err
        return capsys.readouterr().out.strip()

    scratch = zoo_cli("init", "--config", str(BERT_CONFIG), "--train-vocab", str(data / "text.txt"), "--vocab-size",
                      "120", "--out", str(tmp_path / "scratch"))
    pretrained = zoo_cli("pretrain", scratch, "--corpus", str(data / "text.txt"), "--steps", "4", "--out",
                         str(tmp_path / "pretrained"), "--batch-size", "8", "--max-seq-length", "32", "--workers", "0")
    tagger = zoo_cli("finetune", pretrained, "--train", str(data / "train.conll"), "--dev", str(data / "dev.conll"),
                     "--epochs", "6", "--lr", "2e-3", "--out", str(tmp_path / "tagger"), *TAG)
    receipt = json.loads((tmp_path / "tagger" / "receipt.json").read_text())
    assert receipt["base"]["model"] == "pretrained" and receipt["results"]["best"]["f1"] > 0.5
    [result] = json.loads(zoo_cli("run", tagger, "今天吃了红烧肉。", "--json"))
    assert [e["text"] for e in result["entities"]] == ["红烧肉"]
