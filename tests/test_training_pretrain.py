"""zoo pretrain: losses against upstream TensorFlow, learning, exact resume after kill -9, two processes × one
micro-step = one process × two, the output directory, and bad input.

References: tests/fixtures/pretraining/losses/*.npz were computed by the upstream ``run_pretraining.py`` loss
functions on the upstream models restored from tests/fixtures/tf (see tests/fixtures/README.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support import tfrecord as W
from support.damage import flip
from support.fixtures import sha256

import zoo
from zoo.cli import main
from zoo.errors import DataError, UsageError

FIXTURES = Path(__file__).parent / "fixtures"
TF = FIXTURES / "tf"
PRE = FIXTURES / "pretraining"
CORPUS = PRE / "corpus.txt"
TINY = ["--batch-size", "8", "--max-seq-length", "32", "--workers", "0", "-q"]
TORCHRUN_ZOO = str(Path(__file__).parent / "support" / "torchrun_pretrain.py")  # zoo ARGV..., then a report


# ---------------------------------------------------------------------------------------- the losses
@pytest.mark.parametrize("fixture", ["bert", "albert_google", "albert_google_groups", "albert_brightmart",
                                     "albert_brightmart_preln"])
def test_losses_match_upstream_tensorflow(fixture: str) -> None:
    ref = np.load(PRE / "losses" / f"{fixture}.npz")
    model = zoo.load(TF / fixture, device="cpu", heads="pretraining").model
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "segment_ids"))
    positions, targets = ref["masked_lm_positions"], ref["masked_lm_ids"]
    real = ref["masked_lm_weights"] == 1
    labels = torch.full(ids.shape, -100)
    for row, col in zip(*np.nonzero(real)):
        labels[row, positions[row, col]] = int(targets[row, col])
    pair = torch.from_numpy(ref["next_sentence_labels"][:, 0]).long()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, token_type_ids=types, labels=labels, seq_relationship_labels=pair)
    n = int(real.sum())
    # upstream: Σ w·nll / (Σ w + 1e-5); zoo: the plain mean over the n predicted positions
    assert float(out.mlm_loss) * n / (n + 1e-5) == pytest.approx(float(ref["masked_lm_loss"]), abs=2e-6, rel=2e-6)
    assert float(out.seq_relationship_loss) == pytest.approx(float(ref["next_sentence_loss"]), abs=2e-6)
    assert float(out.loss) == pytest.approx(float(ref["total_loss"]), abs=1e-5)
    log_probs = torch.log_softmax(out.masked_lm_logits.double(), -1).numpy()
    assert np.abs(log_probs - ref["masked_lm_log_probs"].reshape(-1, ref["masked_lm_log_probs"].shape[-1])[
        real.reshape(-1)]).max() < 2e-5
    with torch.no_grad():
        summed = model(ids, attention_mask=mask, token_type_ids=types, labels=labels, seq_relationship_labels=pair,
                       loss_reduction="sum")
    assert int(summed.mlm_count) == n and int(summed.seq_relationship_count) == 3
    assert float(summed.mlm_loss) == pytest.approx(float(out.mlm_loss) * n, rel=1e-6)


# -------------------------------------------------------------------------------------------- runs
def _release(tmp_path: Path, fixture: str = "albert_google", **config: float) -> Path:
    """A copy of a fixture release with config changes (e.g. dropout 0 for bit-comparable runs)."""
    target = tmp_path / f"{fixture}_release"
    shutil.copytree(TF / fixture, target)
    name = next(p for p in target.glob("*config*.json"))
    data = json.loads(name.read_text())
    data.update(config)
    name.write_text(json.dumps(data))
    return target


def _zoo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **env})


def _damaged_tfrecord(folder: Path) -> Path:
    """A copy of the upstream BERT tfrecord with one flipped bit inside a record: ``folder/bad.tfrecord``."""
    damaged = folder / "bad.tfrecord"
    shutil.copyfile(PRE / "bert.tfrecord", damaged)
    flip(damaged, 500, keep_stamp=False, mask=0x40)
    return damaged


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def test_a_tiny_model_learns_a_small_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("今天天气很好。\n我们是中国人。\n\n他说了一个大国的事。\n今天天气很好。\n" * 30, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["pretrain", str(TF / "albert_google"), "--corpus", str(corpus), "--out", str(out), "--steps", "60",
                 "--lr", "0.02", "--warmup", "5", "--log-every", "1", *TINY]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    records = _metrics(out)
    assert [r["step"] for r in records] == list(range(1, 61))
    first, last = np.mean([r["mlm_loss"] for r in records[1:6]]), np.mean([r["mlm_loss"] for r in records[-5:]])
    assert last < 0.75 * first, (first, last)  # the repeated sentences are learned
    assert np.mean([r["mlm_accuracy"] for r in records[-10:]]) > np.mean([r["mlm_accuracy"] for r in records[:10]])
    assert records[0]["lr"] == 0.0  # upstream's schedule: no update at step 0
    assert {"loss", "mlm_loss", "sop_loss", "mlm_accuracy", "sop_accuracy", "lr", "grad_norm",
            "tokens_per_s"} <= set(records[-1])


def test_the_output_is_a_zoo_model_with_a_receipt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", str(TF / "bert"), "--corpus", str(CORPUS), "--out", str(out), "--steps", "4",
                 *TINY]) == 0
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["kind"] == "pretraining" and receipt["steps"] == 4 and receipt["examples"] == 32
    assert receipt["settings"]["objective"] == "nsp" and receipt["settings"]["optimizer"] == "adamweightdecay"
    assert receipt["data"]["files"][0]["sha256"] == sha256(CORPUS.read_bytes())
    assert receipt["base"]["weights_sha256"] and receipt["heads"] == ["mlm", "seq_relationship"]
    assert set(receipt["final"]) >= {"loss", "mlm_loss", "nsp_loss"}
    loaded = zoo.load(out, device="cpu")
    assert loaded.config.architecture == "bert" and loaded.fill_mask("今天天气很[MASK]。")[0]
    capsys.readouterr()
    assert main(["run", str(out), "今天[MASK]气很好", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["masks"][0][0]["token"]
    transformers = pytest.importorskip("transformers")
    exported = zoo.export(out, tmp_path / "hf").path
    hf = transformers.AutoModelForPreTraining.from_pretrained(exported).eval()
    batch = loaded.encode(["今天天气很好"])
    with torch.no_grad():
        assert torch.allclose(hf(**batch).prediction_logits, loaded(["今天天气很好"]).mlm_logits, atol=1e-5)


def test_two_gloo_processes_end_where_one_does(tmp_path: Path) -> None:
    release = _release(tmp_path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--corpus", str(CORPUS), "--steps", "5", "--batch-size", "8", "--max-seq-length", "32",
              "--workers", "0", "-q", "--lr", "0.01", "--warmup", "1"]
    # one thread per process on both sides (torchrun's default, pinned here): the same kernels, the same sums
    single = _zoo("pretrain", str(release), "--out", str(one), "--grad-accum", "2", *common, OMP_NUM_THREADS="1")
    assert single.returncode == 0, single.stderr
    reports = tmp_path / "ranks"
    reports.mkdir()
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", TORCHRUN_ZOO,
                             str(reports), "pretrain", str(release), "--out", str(two), *common],
                            capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert double.returncode == 0, double.stderr[-3000:]
    for rank in (0, 1):  # the process group zoo made is gone, its threads joined, before pretrain returns
        report = json.loads((reports / f"rank-{rank}.json").read_text())
        assert report["code"] == 0 and any("gloo" in name for name in report["during"]), report
        assert not report["initialized"] and not any("gloo" in name for name in report["after"]), report
    a, b = _weights(one), _weights(two)
    moved = max(float((a[k] - load_file(str(one / "checkpoints" / "step-000000005" / "model.safetensors"))[k])
                      .abs().max()) for k in a)
    assert moved == 0.0  # the final weights are the last checkpoint's
    # bit for bit: micro-batches of 4 either way, and their two gradients added once (accumulation here, the
    # all-reduce there); other splits add in another order and agree only to rounding (docs/pretraining.md)
    assert all(torch.equal(a[k], b[k]) for k in a)
    first = zoo.load(release, device="cpu").model.state_dict()
    assert max(float((a[k] - first[k]).abs().max()) for k in first) > 1e-3  # and training did move them
    assert json.loads((two / "receipt.json").read_text())["world_size"] == 2


def test_resume_after_kill_9_is_exact(tmp_path: Path) -> None:
    args = ["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--steps", "40", "--save-every", "5",
            "--log-every", "1", *TINY]
    out = tmp_path / "killed"
    whole = subprocess.Popen([sys.executable, "-m", "zoo", *args, "--out", str(tmp_path / "whole")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *args, "--out", str(out)], stderr=subprocess.DEVNULL)
    checkpoints = out / "checkpoints"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoints.is_dir() and any(p.name >= "step-000000015" for p in checkpoints.glob("step-*")):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()
    again = _zoo(*args, "--out", str(out))  # without --resume: refused, nothing lost
    assert again.returncode == UsageError.exit_code and "--resume" in again.stderr
    resumed = _zoo(*args, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert whole.wait(timeout=240) == 0, whole.stderr.read() if whole.stderr else ""
    a, b = _weights(tmp_path / "whole"), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: one machine, the same kernels and threads
    steps = [r["step"] for r in _metrics(out)]
    assert steps == list(range(1, 41))  # the records of steps trained twice are not duplicated
    assert len(list(checkpoints.glob("step-*"))) == 2  # --keep-checkpoints 2


# ------------------------------------------------------------------------------------- data and errors
def test_upstream_tfrecords_train_a_bert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["pretrain", str(TF / "bert"), "--tfrecord", str(PRE / "bert.tfrecord"), "--out", str(out),
                 "--steps", "3", "--batch-size", "4", "--max-seq-length", "32", "--workers", "0", "-q"]) == 0
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["data"]["kind"] == "tfrecord" and receipt["data"]["records"] == 44
    damaged = _damaged_tfrecord(tmp_path)
    assert main(["pretrain", str(TF / "bert"), "--tfrecord", str(damaged), "--out", str(tmp_path / "bad"),
                 "--steps", "3", "--batch-size", "4", "--workers", "0", "-q"]) == DataError.exit_code
    # records longer than the model's 64 positions: their length is known once they are opened, and refused then
    rng = random.Random(0)
    long = W.write_tfrecord(tmp_path / "long.tfrecord", [W.example(W.pretraining_features(
        rng, seq_length=128, vocab_size=97)) for _ in range(8)])
    assert main(["pretrain", str(TF / "bert"), "--tfrecord", str(long), "--out", str(tmp_path / "long"),
                 "--steps", "3", "--batch-size", "4", "--workers", "0", "-q"]) == UsageError.exit_code
    assert "--max-seq-length 128 is longer than the model's 64 positions" in capsys.readouterr().err
    assert not (tmp_path / "long").exists()
    for spelling in ("FP16", "fp16", "torch.float16"):  # however it is spelt, fp16 needs a GPU: refused up front
        assert main(["pretrain", str(TF / "bert"), "--tfrecord", str(PRE / "bert.tfrecord"), "--out",
                     str(tmp_path / "fp16"), "--steps", "3", "--batch-size", "4", "--workers", "0", "-q",
                     "--dtype", spelling, "--device", "cpu"]) == UsageError.exit_code
        assert "CUDA GPUs only" in capsys.readouterr().err and not (tmp_path / "fp16").exists()


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    base = ["pretrain", str(TF / "albert_google"), "--steps", "2", "--workers", "0", "-q", "--batch-size", "4",
            "--max-seq-length", "32"]
    assert main([*base, "--corpus", str(empty), "--out", str(tmp_path / "a")]) == DataError.exit_code
    assert "empty" in capsys.readouterr().err
    assert main([*base, "--corpus", str(CORPUS), "--out", str(tmp_path / "b"), "--max-seq-length", "128"]) == 2
    err = capsys.readouterr().err
    assert "longer than the model's 64 positions" in err and "--max-position-embeddings 128" in err
    bad = tmp_path / "bad.txt"
    bad.write_bytes("今天天气很好\n".encode() + b"\xff\xfe\n")
    assert main([*base, "--corpus", str(bad), "--out", str(tmp_path / "c")]) == DataError.exit_code
    assert "bad.txt:2: not UTF-8 text" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "d")]) == 2  # no data at all
    assert main([*base, "--corpus", str(CORPUS), "--out", str(tmp_path / "e"), "--resume"]) == 2
    assert main([*base, "--corpus", str(CORPUS), "--out", str(tmp_path / "f"), "--batch-size", "6",
                 "--grad-accum", "4"]) == 2
    assert "does not split evenly" in capsys.readouterr().err


def test_longer_positions_are_trained(tmp_path: Path) -> None:
    long = tmp_path / "long.txt"
    long.write_text(("今天天气很好我们是中国人他说了一个大国的事" * 8 + "\n") * 4, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["pretrain", str(TF / "albert_google"), "--corpus", str(long), "--out", str(out), "--steps", "3",
                 "--batch-size", "2", "--max-seq-length", "100", "--max-position-embeddings", "128",
                 "--objective", "mlm", "--workers", "0", "-q"]) == 0
    loaded = zoo.load(out, device="cpu")
    assert loaded.config.max_position_embeddings == 128 and loaded.tokenizer.model_max_length == 128
    start = zoo.load(TF / "albert_google", device="cpu").model.embeddings.position.weight
    table = loaded.model.embeddings.position.weight
    assert not torch.equal(table[64:100], start[:36])  # the copied rows moved: they were trained


def test_checkpoint_written_when_the_disk_is_full_leaves_the_previous_one(small_disk) -> None:
    from zoo.errors import DiskSpaceError
    from zoo.training import checkpoint
    from zoo.training.feeding import Position

    disk = small_disk(256 << 10)
    model = {"w": torch.arange(12_000, dtype=torch.float32)}  # 48 KB per checkpoint file
    first = checkpoint.save(disk, step=1, position=Position(0, 8, 8), settings={"a": 1}, model=model,
                            optimizer={"state": {0: {"exp_avg": torch.ones(12_000)}}})
    from support.disk import fill

    fill(disk, leave=60 << 10)
    with pytest.raises(DiskSpaceError, match="step 2"):
        checkpoint.save(disk, step=2, position=Position(0, 16, 16), settings={"a": 1}, model=model,
                        optimizer={"state": {0: {"exp_avg": torch.ones(12_000)}}})
    [kept] = [checkpoint.read(path) for path in checkpoint.checkpoints(disk)]
    assert kept.path == first and kept.step == 1 and kept.position == Position(0, 8, 8)
    state, _ = checkpoint.load(kept, torch.device("cpu"))
    assert torch.equal(state["w"], model["w"])
    assert not list(disk.glob(".step-*"))  # the staging directory is gone


def test_gradient_checkpointing_and_bf16_compute_the_same_loss() -> None:
    from zoo.config import ModelConfig
    from zoo.models.encoder import Encoder

    config = ModelConfig(architecture="bert", vocab_size=50, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=48, max_position_embeddings=16,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = Encoder(config, heads="pretraining").train().requires_grad_(True)
    ids = torch.randint(5, 50, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    pair = torch.tensor([0, 1, 0])

    def grads(checkpointing: bool) -> tuple[float, list[torch.Tensor]]:
        model.zero_grad()
        model.gradient_checkpointing = checkpointing
        loss = model(ids, labels=labels, seq_relationship_labels=pair).loss
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    plain, recomputed = grads(False), grads(True)
    # the loss comes from the same forward kernels both times (in this process): equal to the bit
    assert plain[0] == recomputed[0] and all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain[1], recomputed[1]))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = float(model(ids, labels=labels, seq_relationship_labels=pair).loss.detach())
    assert abs(low - plain[0]) < 0.05 * plain[0] and low != plain[0]


def test_whole_word_masking_and_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("jieba")
    out = tmp_path / "run"
    assert main(["pretrain", str(TF / "bert"), "--corpus", str(CORPUS), "--out", str(out), "--steps", "2",
                 "--batch-size", "4", "--max-seq-length", "32", "--workers", "0", "--whole-word"]) == 0
    err = capsys.readouterr().err
    assert "bert: train started (2 steps)" in err and "train done 100%" in err  # plain lines: not a terminal
    receipt = json.loads((out / "receipt.json").read_text())
    assert receipt["settings"]["whole_word"] is True
    assert any(p.name.endswith("-jieba") for p in (out / "data").iterdir())


# ------------------------------------------------------------------------------------- run bookkeeping
def test_fresh_heads_are_a_function_of_the_seed(tmp_path: Path) -> None:
    """A base without pretraining heads: two runs with one --seed end equal, another --seed differs."""
    base = ["pretrain", str(TF / "bert_fp16_headless"), "--corpus", str(CORPUS), "--steps", "2", *TINY]
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        torch.manual_seed(int(seed) * 1000 + len(name))  # whatever the process did before must not matter
        torch.rand(3)
        assert main([*base, "--out", str(tmp_path / name), "--seed", seed]) == 0
    a, b, c = (_weights(tmp_path / name) for name in "abc")
    assert "seq_relationship.weight" in a
    assert all(torch.equal(a[k], b[k]) for k in a)  # in this process: the same kernels, equal seeds, equal bits
    assert not torch.equal(a["seq_relationship.weight"], c["seq_relationship.weight"])


def test_a_run_that_failed_before_its_first_checkpoint_starts_afresh(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    empty, out = tmp_path / "empty.txt", tmp_path / "run"
    empty.write_text("\n", encoding="utf-8")
    base = ["pretrain", str(TF / "albert_google"), "--out", str(out), "--steps", "2", "--log-every", "1", *TINY]
    assert main([*base, "--corpus", str(empty)]) == DataError.exit_code
    assert not out.exists()  # a failed start leaves --out as it was
    assert main([*base, "--corpus", str(CORPUS)]) == 0
    for name in ("checkpoints", "model.safetensors", "receipt.json", "config.json", "vocab.txt"):
        shutil.rmtree(out / name) if name == "checkpoints" else (out / name).unlink()
    # as a run killed after it started but before its first checkpoint leaves it: nothing to keep, no --resume
    assert (out / "run.json").is_file() and (out / "metrics.jsonl").is_file()
    assert main([*base, "--corpus", str(CORPUS)]) == 0
    assert [r["step"] for r in _metrics(out)] == [1, 2]
    capsys.readouterr()


def test_two_runs_never_share_an_output_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / "run.lock")):  # another zoo pretrain, running
        code = main(["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--out", str(out),
                     "--steps", "2", *TINY])
    assert code == UsageError.exit_code
    assert "another zoo pretrain is running" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]  # it touched nothing


def test_resume_of_a_finished_run_reports_its_final_losses(tmp_path: Path) -> None:
    """Killed after its last checkpoint but before the output was written, with a metrics line cut short:
    --resume writes the output, and its receipt reports the last step's losses."""
    out = tmp_path / "run"
    args = ["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--out", str(out), "--steps", "4",
            "--save-every", "2", "--log-every", "1", *TINY]
    assert main(args) == 0
    final = json.loads((out / "receipt.json").read_text())["final"]
    for name in ("model.safetensors", "receipt.json", "config.json"):
        (out / name).unlink()
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 5, "lo')  # a line cut short by the crash
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "receipt.json").read_text())["final"] == final
    assert final["loss"] == pytest.approx(_metrics(out)[-1]["loss"])
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3, 4]


def test_a_resumed_run_averages_the_same_steps_as_an_uninterrupted_one(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Records average the steps since the previous one: a checkpoint between two records carries the running
    sums, so the record after a resume is the uninterrupted run's; sums that do not fit are left out, with a
    warning, and the record averages the steps trained since the resume."""
    whole = tmp_path / "whole"
    args = ["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--steps", "4", "--save-every", "2",
            "--log-every", "4", *TINY]
    assert main([*args, "--out", str(whole)]) == 0
    [record] = _metrics(whole)
    assert record["steps"] == 4

    def killed_after_step_2(name: str) -> Path:
        out = shutil.copytree(whole, tmp_path / name)
        shutil.rmtree(out / "checkpoints" / "step-000000004")
        for file in ("model.safetensors", "receipt.json", "config.json"):
            (out / file).unlink()
        return out

    out = killed_after_step_2("resumed")
    assert main([*args, "--out", str(out), "--resume"]) == 0
    [again] = _metrics(out)
    assert again["steps"] == 4
    for name in ("loss", "mlm_loss", "sop_loss", "mlm_accuracy", "grad_norm"):
        assert again[name] == pytest.approx(record[name], rel=1e-6), name

    out = killed_after_step_2("damaged")
    state = json.loads((out / "checkpoints" / "step-000000002" / "state.json").read_text())
    state["task"]["meter"]["sums"] = "garbage"
    (out / "checkpoints" / "step-000000002" / "state.json").write_text(json.dumps(state))
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert [r["steps"] for r in _metrics(out)] == [2]
    assert "running sums do not fit" in caplog.text


def test_a_data_error_in_the_worker_process_reads_as_one(tmp_path: Path) -> None:
    damaged = _damaged_tfrecord(tmp_path)
    done = _zoo("pretrain", str(TF / "bert"), "--tfrecord", str(damaged), "--out", str(tmp_path / "bad"),
                "--steps", "3", "--batch-size", "4", "--workers", "1", "-q")
    assert done.returncode == DataError.exit_code, done.stderr
    assert "bad.tfrecord" in done.stderr and "Traceback" not in done.stderr


def test_locate_counts_on_from_an_earlier_position() -> None:
    """Saving a checkpoint locates the stream from the previous checkpoint's position: the same answer as from
    the start, without sizing the epochs before it again (sizing a corpus epoch segments it)."""
    from zoo.training.feeding import Position, locate

    class Epochs:
        def __init__(self) -> None:
            self.sizes, self.asked = (7, 5, 9, 6, 8, 7, 5), list[int]()

        def epoch_size(self, epoch: int) -> int:
            self.asked.append(epoch)
            return self.sizes[epoch % len(self.sizes)]

    source = Epochs()
    position = Position()
    for consumed in range(0, 120, 4):
        fresh = locate(source, consumed)  # type: ignore[arg-type]
        source.asked.clear()
        previous, position = position, locate(source, consumed, since=position)  # type: ignore[arg-type]
        assert position == fresh
        assert source.asked and min(source.asked) == previous.epoch  # nothing before the previous position
    assert position.epoch >= 2


def test_a_held_out_corpus_is_evaluated_at_every_checkpoint(tmp_path: Path) -> None:
    """--eval-corpus: held-out masked-LM loss and accuracy and SOP accuracy (upstream's --do_eval), at every save
    and at the end, as records of their own in metrics.jsonl."""
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("今天天气很好。\n我们是中国人。\n\n他说了一个大国的事。\n今天天气很好。\n" * 4, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--eval-corpus", str(held_out),
                 "--out", str(out), "--steps", "5", "--save-every", "2", "--log-every", "1", *TINY]) == 0
    records = _metrics(out)
    evals = [r for r in records if r.get("split") == "eval"]
    assert [r["step"] for r in evals] == [2, 4, 5]
    assert {"eval_loss", "eval_mlm_loss", "eval_mlm_accuracy", "eval_sop_loss", "eval_sop_accuracy"} <= set(evals[0])
    assert evals[0]["eval_examples"] > 0 and 0 <= evals[-1]["eval_mlm_accuracy"] <= 1
    assert evals[0]["eval_loss"] == pytest.approx(evals[0]["eval_mlm_loss"] + evals[0]["eval_sop_loss"])
    assert [r["step"] for r in records if r.get("split") == "train"] == [1, 2, 3, 4, 5]
    receipt = json.loads((out / "receipt.json").read_text())
    assert [f["role"] for f in receipt["data"]["files"]] == ["corpus", "eval_corpus"]
