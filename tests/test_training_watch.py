"""Training you can watch (issue 16): a resumed run says where it resumes and measures its speed from there,
metrics records are averages over their interval, a run ends with a summary, Ctrl-C says how to continue, bad
inputs are found before anything else happens, a stage draws one bar, and the printed path is one zoo accepts."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.fixtures import zoo_env  # noqa: F401 - a fixture
from support.models import write_tiny_manifest

import zoo
from zoo.cli import main
from zoo.errors import DataError, Interrupted, NotFoundError
from zoo.progress import Bars, ProgressEvent

FIXTURES = Path(__file__).parent / "fixtures"
TF = FIXTURES / "tf"
PRE = FIXTURES / "pretraining"
CORPUS = PRE / "corpus.txt"
TINY = ["--batch-size", "8", "--max-seq-length", "32", "--workers", "0", "-q"]
SMALL = {"batch_size": 8, "max_seq_length": 32, "workers": 0}


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _to_checkpoint(out: Path, step: int) -> None:
    """``out`` as a run killed right after its checkpoint of ``step``: later checkpoints and the output gone."""
    for path in (out / "checkpoints").glob("step-*"):
        if int(path.name[5:]) > step:
            shutil.rmtree(path)
    for name in ("model.safetensors", "receipt.json", "config.json", "vocab.txt"):
        (out / name).unlink()


# ------------------------------------------------------------------------------------------- resuming
def test_a_resumed_run_says_where_it_resumes_and_ends_with_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    zoo.pretrain(TF / "albert_google", out=out, corpus=[CORPUS], steps=6, save_every=3, log_every=2,
                 progress=False, **SMALL)
    _to_checkpoint(out, 3)
    events: list[ProgressEvent] = []
    zoo.pretrain(TF / "albert_google", out=out, corpus=[CORPUS], steps=6, save_every=3, log_every=2, resume=True,
                 progress=events.append, **SMALL)
    notes = [e.message for e in events if e.stage == "note"]
    train = [e for e in events if e.stage == "train"]
    assert notes[0] == "resuming from step 3 of 6 (step-000000003)"
    assert events.index(next(e for e in events if e.stage == "note")) < events.index(train[0])
    # the first event marks where this session starts (before step 4 is trained): speed and ETA count from there
    assert [e.done for e in train] == [3, 4, 5, 6] and {e.initial for e in train} == {3}
    assert all(math.isfinite(e.postfix["loss"]) for e in train[1:])  # not NaN right after a record was written
    last = _metrics(out)[-1]
    summary = re.fullmatch(r"trained steps 4-6 of 6 in \d+ s; last 2 step\(s\): (.*); model in (.*)", notes[-1])
    assert summary is not None, notes[-1]
    assert summary.group(2) == str(out)
    shown = dict(item.split(" ") for item in summary.group(1).split(", "))
    assert set(shown) == {"loss", "mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy"}
    assert all(float(value) == pytest.approx(last[key], rel=1e-3) for key, value in shown.items())


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A clock the test moves: for plain lines (time.monotonic) and for tqdm's bars (tqdm.std.time)."""
    now = [1000.0]
    monkeypatch.setattr("zoo.progress.time.monotonic", lambda: now[0])
    monkeypatch.setattr("tqdm.std.time", lambda: now[0])
    return now


def _resumed_at_100(bars: Bars, clock: list[float]) -> None:
    """A run resumed at step 100 of 200 that then trains one step a second."""
    for seconds, step in ((0, 100), (10, 110), (20, 120), (100, 200)):
        clock[0] = 1000.0 + seconds
        bars(ProgressEvent("train", "m", done=step, total=200, unit="step", initial=100, postfix={"loss": 2.5}))
    bars.close()


def test_plain_lines_show_speed_elapsed_time_and_time_left_from_the_resumed_step(clock: list[float]) -> None:
    stream = io.StringIO()
    _resumed_at_100(Bars(stream, plain=True, every=10), clock)
    assert stream.getvalue().splitlines() == [
        "m: train started at 100 steps (200 steps)",
        "m: train at 55% 110 steps of 200 steps (1 steps/s, 10 s elapsed, 1 min 30 s left, loss 2.5)",
        "m: train at 60% 120 steps of 200 steps (1 steps/s, 20 s elapsed, 1 min 20 s left, loss 2.5)",
        "m: train done 100% 200 steps of 200 steps (1 steps/s, 1 min 40 s elapsed, loss 2.5)",
    ]


def test_the_bar_of_a_resumed_run_counts_speed_from_the_resumed_step(clock: list[float]) -> None:
    stream = io.StringIO()
    _resumed_at_100(Bars(stream, plain=False), clock)
    frames = stream.getvalue().replace("\n", "\r").split("\r")
    at_110 = next(f for f in frames if "110/200" in f)
    assert "00:10<01:30" in at_110 and "1.00step/s" in at_110, at_110  # not 11 steps/s
    assert all("1.00step/s" in f for f in frames if re.search(r"1[12]0/200|200/200", f))


# -------------------------------------------------------------------------------------------- metrics
def test_metrics_records_are_averages_over_the_log_interval(tmp_path: Path) -> None:
    """Every step predicts 2 tokens in each of its 8 examples (--masked-lm-prob 1 --max-predictions 2) and one
    NSP label per example, so the average over 3 steps is the plain mean of the 3 single-step records."""
    args = ["pretrain", str(TF / "bert"), "--corpus", str(CORPUS), "--steps", "3", "--masked-lm-prob", "1",
            "--max-predictions", "2", "--ngram", "1", *TINY]
    assert main([*args, "--out", str(tmp_path / "each"), "--log-every", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "avg"), "--log-every", "3"]) == 0
    steps = _metrics(tmp_path / "each")
    assert all((r["mlm_accuracy"] * 16).is_integer() and (r["nsp_accuracy"] * 8).is_integer() for r in steps)
    [averaged] = _metrics(tmp_path / "avg")
    assert averaged["step"] == 3 and averaged["steps"] == 3
    for key in ("loss", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "grad_norm"):
        assert averaged[key] == pytest.approx(np.mean([r[key] for r in steps]), rel=1e-9, abs=1e-12), key
    assert len({r["mlm_accuracy"] for r in steps}) > 1 or len({r["mlm_loss"] for r in steps}) > 1  # steps differ
    assert averaged["tokens_per_s"] > 0 and averaged["examples_per_s"] > 0
    final = json.loads((tmp_path / "avg" / "receipt.json").read_text())["final"]
    assert final == {k: v for k, v in averaged.items() if k not in ("time", "split")}


# ----------------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_names_the_last_checkpoint_and_the_command_that_continues(tmp_path: Path) -> None:
    out = tmp_path / "my run"  # a space: the command printed must quote it
    args = ["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--out", str(out), "--steps", "12",
            "--save-every", "2", *TINY]
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any((out / "checkpoints").glob("step-*")):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == Interrupted.exit_code == 130, err
    newest = sorted(p.name for p in (out / "checkpoints").glob("step-*"))[-1]
    assert f"interrupted: the last checkpoint is {newest} in {out / 'checkpoints'}" in err, err
    [command] = [line.split("continue with: ", 1)[1] for line in err.splitlines() if "continue with: " in line]
    argv = shlex.split(command)
    assert argv[:2] == ["zoo", "pretrain"] and argv[-1] == "--resume" and str(out) in argv
    assert main(argv[1:]) == 0
    assert json.loads((out / "receipt.json").read_text())["steps"] == 12


# ------------------------------------------------------------------------------------ inputs come first
def test_a_missing_input_is_found_before_the_model_is_fetched(zoo_env: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A registry model whose download would go to a server that never answers: the missing file is reported
    without a connection to it, and an existing --out is left as it was (no run.json, no run.lock)."""
    monkeypatch.setenv("ZOO_STALL_TIMEOUT", "2")
    monkeypatch.setenv("ZOO_MAX_ATTEMPTS", "1")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    write_tiny_manifest(zoo_env, "tiny", [f"http://127.0.0.1:{server.getsockname()[1]}/release.zip"])
    out = tmp_path / "out"
    out.mkdir()
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    base = ["pretrain", "tiny", "--out", str(out), "--steps", "2", *TINY]
    missing = "missing.txt: --corpus corpus file does not exist"
    cases = [(["--corpus", str(tmp_path / "missing.txt")], NotFoundError, missing),
             (["--corpus", str(fifo)], NotFoundError, "fifo.txt: is a fifo"),
             (["--corpus", str(CORPUS), "--eval-corpus", str(tmp_path / "held.txt")], NotFoundError, "held.txt"),
             (["--tfrecord", str(tmp_path / "x.tfrecord")], NotFoundError, "x.tfrecord: --tfrecord tfrecord file"),
             (["--corpus", str(PRE / "bert.tfrecord")], DataError, "bert.tfrecord: this is a TFRecord file")]
    try:
        for args, error, message in cases:
            assert main([*base, *args]) == error.exit_code
            err = capsys.readouterr().err
            assert message in err, err
            with pytest.raises(BlockingIOError):
                server.accept()  # nobody connected
            assert list(out.iterdir()) == []
        assert "hint: pass upstream TFRecords with --tfrecord" in err and "iconv" not in err
    finally:
        server.close()


# ----------------------------------------------------------------------------------------- one bar each
def test_tokenizing_a_corpus_draws_one_bar(tmp_path: Path) -> None:
    """What the run's tokenizing step emits (the reader reports its end twice) draws one bar on a terminal and
    one line elsewhere."""
    from zoo.tokenizer import Tokenizer
    from zoo.training.tasks.pretraining import tokenized
    from zoo.training.world import joined

    tokenizer = Tokenizer.from_file(TF / "bert" / "vocab.txt")
    for plain, run in ((False, "a"), (True, "b")):
        stream = io.StringIO()
        bars = Bars(stream, plain=plain)
        with joined("cpu") as world:
            tokenized([CORPUS], tokenizer, tmp_path / run, whole_word=False, world=world, emit=bars,
                      label="bert corpus")
        bars.close()
        text = stream.getvalue()
        if plain:  # every stage says when it starts and when it is done, once each
            assert text == ("bert corpus: tokenize started (1.0 KiB)\n"
                            "bert corpus: tokenize done 100% 1.0 KiB of 1.0 KiB (0 s elapsed)\n"), text
        else:  # tqdm redraws a bar with "\r"; a bar ends with its newline
            assert text.count("\n") == 1 and "bert corpus (tokenize): 100%" in text, repr(text)


def test_a_stage_reported_finished_twice_draws_one_bar() -> None:
    for plain in (False, True):
        stream = io.StringIO()
        bars = Bars(stream, plain=plain)
        for _ in range(3):
            bars(ProgressEvent("download", "m.zip", done=4096, total=4096))
        once = stream.getvalue()
        # one bar (tqdm redraws it with "\r" and ends it with one newline); plain: one started and one done line
        assert once.count("\n") == (2 if plain else 1), repr(once)
        assert not plain or once.count("100%") == 1, repr(once)
        bars(ProgressEvent("done", "m.zip"))
        bars(ProgressEvent("download", "m.zip", done=0, total=4096))  # the label's work again: drawn again
        bars(ProgressEvent("download", "m.zip", done=4096, total=4096))
        bars.close()
        assert stream.getvalue().count("100%") > once.count("100%")


# ------------------------------------------------------------------------------------------ the path
def test_the_printed_path_is_one_zoo_commands_accept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", str(TF / "bert"), "--corpus", str(CORPUS), "--out", "run_b", "--steps", "1",
                 *TINY]) == 0
    printed = capsys.readouterr().out
    assert printed == f"{tmp_path / 'run_b'}\n"  # the whole of stdout: dir=$(zoo pretrain ...) works
    assert main(["run", printed.strip(), "今天[MASK]气很好", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["masks"][0][0]["token"]
