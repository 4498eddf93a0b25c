"""Hostile training (issue 17): whatever a user, a crash or a bad disk does to a run's inputs, its ``--out``, its
checkpoints or its tokenized corpus, ``zoo pretrain`` answers with a zoo error naming the file, its exit code and
the fix — never a traceback, never silently on other data or damaged state, never over a user's files.

One section per kind of hostility; a new case is a new parameter or a new test in its section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.damage import edit_keeping_mtime, flip
from support.disk import fill, read_only
from support.fixtures import files_of

import zoo
from zoo.cli import main
from zoo.errors import CheckpointError, DataError, DiskSpaceError, UsageError
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import TokenizedCorpus, prepare_corpus

FIXTURES = Path(__file__).parent / "fixtures"
TF = FIXTURES / "tf"
PRE = FIXTURES / "pretraining"
CORPUS = PRE / "corpus.txt"
TINY = ["--batch-size", "8", "--max-seq-length", "32", "--workers", "0", "-q"]
OUTPUTS = ("model.safetensors", "receipt.json", "config.json", "vocab.txt")


def _args(corpus: Path, *more: str) -> list[str]:
    """``zoo pretrain`` of the finished run below: 4 steps, checkpoints at 2 and 4."""
    return ["pretrain", str(TF / "albert_google"), "--corpus", str(corpus), "--steps", "4", "--save-every", "2",
            "--log-every", "1", *TINY, *more]


@dataclasses.dataclass(frozen=True)
class Finished:
    """A finished run (``run``) of ``corpus``, made once for the module; tests copy it with :meth:`copy`."""

    run: Path
    corpus: Path

    def copy(self, target: Path) -> Path:
        shutil.copytree(self.run, target)
        return target

    def resume(self, out: Path, *more: str) -> list[str]:
        return _args(self.corpus, "--out", str(out), "--resume", *more)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    folder = tmp_path_factory.mktemp("finished")
    corpus = folder / "c.txt"
    shutil.copyfile(CORPUS, corpus)
    with pytest.MonkeyPatch.context() as mp:  # made before any test's own ZOO_HOME: give it one
        mp.setenv("ZOO_HOME", str(folder / "zoo_home"))
        assert main(_args(corpus, "--out", str(folder / "run"))) == 0
    return Finished(folder / "run", corpus)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    x, y = _weights(a), _weights(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _corpus_dir(out: Path) -> Path:
    [directory] = (out / "data").glob("corpus-*")
    return directory


def _stamps(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in folder.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------ --resume, other data
@pytest.mark.parametrize("change", ["edited", "other file", "tfrecord"])
def test_resume_with_other_data_is_refused_naming_what_changed(change: str, finished: Finished, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = finished.copy(tmp_path / "run")
    original = CORPUS.read_bytes()
    recorded = f"c.txt ({len(original)} bytes, sha256 {hashlib.sha256(original).hexdigest()[:12]}…)"
    if change == "edited":  # the same name and size, one character changed
        data = ["--corpus", str(tmp_path / "c.txt")]
        edited = original.replace("天气".encode(), "天汽".encode(), 1)
        (tmp_path / "c.txt").write_bytes(edited)
        now = f"c.txt ({len(edited)} bytes, sha256 {hashlib.sha256(edited).hexdigest()[:12]}…)"
    elif change == "other file":
        other = original + "新的一行。\n".encode()
        (tmp_path / "other.txt").write_bytes(other)
        data = ["--corpus", str(tmp_path / "other.txt")]
        now = f"other.txt ({len(other)} bytes, sha256 {hashlib.sha256(other).hexdigest()[:12]}…)"
    else:
        data = ["--tfrecord", str(PRE / "albert.tfrecord")]
        now = "none now; tfrecord: none then, albert.tfrecord ("
    before = _stamps(out)
    argv = ["pretrain", str(TF / "albert_google"), *data, "--out", str(out), "--steps", "4", "--save-every", "2",
            "--log-every", "1", *TINY, "--resume"]
    assert main(argv) == UsageError.exit_code
    err = capsys.readouterr().err
    assert f"--resume: the data differ from the run's in {out}: corpus: {recorded} then, {now}" in err, err
    assert _stamps(out) == before  # nothing rebuilt, nothing trained


# ----------------------------------------------------------------------------- damaged training state
@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt"])
def test_a_damaged_checkpoint_file_is_named_and_the_one_before_it_takes_over(
        name: str, finished: Finished, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = finished.copy(tmp_path / "run")
    newest = out / "checkpoints" / "step-000000004"
    flip(newest / name, (newest / name).stat().st_size // 2, keep_stamp=True)  # bit rot: size and mtime kept
    assert main(finished.resume(out)) == CheckpointError.exit_code
    err = capsys.readouterr().err
    assert f"{newest / name} is damaged" in err, err
    assert f"hint: delete {newest}; --resume then continues from step-000000002" in err
    shutil.rmtree(newest)  # as the hint says
    assert main(finished.resume(out)) == 0
    assert _same_weights(out, finished.run)  # steps 3 and 4 trained again, exactly


def test_a_damaged_tokenized_corpus_is_named_on_resume(finished: Finished, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = finished.copy(tmp_path / "run")
    data = _corpus_dir(out)
    flip(data / "tokens.npy", 128 + 4 * 10, keep_stamp=True)  # one token id, its size and mtime kept
    assert main(finished.resume(out)) == DataError.exit_code
    err = capsys.readouterr().err
    assert f"{data / 'tokens.npy'}: damaged tokenized corpus: it changed since it was written" in err, err
    assert f"hint: delete {data} to rebuild it" in err
    shutil.rmtree(data)
    assert main(finished.resume(out)) == 0
    assert _same_weights(out, finished.run)


def test_zoo_verify_rehashes_a_runs_checkpoints_and_corpus(finished: Finished, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The full re-hash --resume leaves out: `zoo verify OUT` checks the result against its receipt, every
    checkpoint against its state.json and the tokenized corpus against its corpus.json."""
    out = finished.copy(tmp_path / "run")
    assert main(["verify", str(out)]) == 0
    assert "and 8 of the run's checkpoints and data, no damage" in capsys.readouterr().out  # 2 × 2 files + 4 arrays
    oldest = out / "checkpoints" / "step-000000002"
    flip(oldest / "optimizer.pt", 300, keep_stamp=True)
    flip(_corpus_dir(out) / "tokens.npy", 128 + 4 * 10, keep_stamp=True)
    assert main(["verify", str(out)]) == 6
    err = capsys.readouterr().err
    assert f"damaged: {oldest}: {oldest / 'optimizer.pt'} is damaged" in err, err
    assert "tokens.npy: damaged tokenized corpus" in err
    for name in OUTPUTS:  # a run that has not written its model yet: its state alone is checked
        (out / name).unlink()
    shutil.rmtree(oldest)
    shutil.rmtree(_corpus_dir(out))
    assert main(["verify", str(out)]) == zoo.NotFoundError.exit_code
    captured = capsys.readouterr()
    assert "2 file(s) of the run's checkpoints and data re-hashed, no damage" in captured.out
    assert "incomplete pretraining run" in captured.err and "--resume" in captured.err


@pytest.fixture
def tokenized(tmp_path: Path) -> tuple[Path, Callable[[], TokenizedCorpus]]:
    """A tokenized corpus directory and a function that reuses it as a run does."""
    tokenizer = Tokenizer.from_file(TF / "bert" / "vocab.txt")
    directory = tmp_path / "corpus"
    prepare_corpus([CORPUS], tokenizer, directory)
    return directory, lambda: prepare_corpus([CORPUS], tokenizer, directory)


def _rerecord(directory: Path) -> None:
    """Record the arrays' current sha256 and stamps in corpus.json, as if they had been written so (a writer
    with a bug): only the value checks can tell."""
    meta = json.loads((directory / "corpus.json").read_text())
    for name in meta["arrays"]:
        path = directory / name
        st = path.stat()
        meta["arrays"][name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": st.st_size,
                                "stamp": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]}
    (directory / "corpus.json").write_text(json.dumps(meta))


def _rewrite(path: Path, change: Callable[[np.ndarray], None]) -> None:
    values = np.load(path)
    change(values)
    np.save(path, values)


def _id_outside_the_vocab(directory: Path) -> None:
    _rewrite(directory / "tokens.npy", lambda ids: ids.__setitem__([5, 6], [97 + 3, -1]))
    _rerecord(directory)


def _offsets_out_of_order(directory: Path) -> None:
    def swap(offsets: np.ndarray) -> None:
        offsets[[2, 3]] = offsets[[3, 2]]

    _rewrite(directory / "sentence_offsets.npy", swap)
    _rerecord(directory)


def _same_size_edit(directory: Path) -> None:
    path = directory / "sentence_offsets.npy"
    data = path.read_bytes()
    edit_keeping_mtime(path, data[128 + 8 * 3:128 + 8 * 4], (int.from_bytes(data[128 + 8 * 3:128 + 8 * 4], "little")
                                                             + 1).to_bytes(8, "little"))


CHANGED = "it changed since it was written (its sha256 is not the one recorded)"
DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "a flipped id, size and mtime kept": (lambda d: flip(d / "tokens.npy", 140, keep_stamp=True), "tokens.npy",
                                          CHANGED),
    "an offset edited, size and mtime kept": (_same_size_edit, "sentence_offsets.npy", CHANGED),
    "an id outside the vocabulary": (_id_outside_the_vocab, "tokens.npy",
                                     "token ids -1..100 lie outside the vocabulary (0..96)"),
    "offsets out of order": (_offsets_out_of_order, "sentence_offsets.npy", "its offsets do not increase"),
    "a missing array": (lambda d: (d / "word_starts.npy").unlink(), "word_starts.npy", "the file is missing"),
    "a truncated array": (lambda d: os.truncate(d / "document_offsets.npy", 100), "document_offsets.npy", CHANGED),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_tokenized_corpus_is_an_error_naming_the_file(
        damage: str, tokenized: tuple[Path, Callable[[], TokenizedCorpus]]) -> None:
    directory, reuse = tokenized
    do, name, problem = DAMAGE[damage]
    do(directory)
    for opening in (lambda: TokenizedCorpus.open(directory), reuse):
        with pytest.raises(DataError) as caught:
            opening()
        assert caught.value.message == f"{directory / name}: damaged tokenized corpus: {problem}"
        assert caught.value.hint == f"delete {directory} to rebuild it: the next run tokenizes the corpus again"


def test_a_copied_tokenized_corpus_is_hashed_once(tokenized: tuple[Path, Callable[[], TokenizedCorpus]],
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stamp of a copy differs: its arrays are re-hashed, found intact and their new stamps recorded by the
    run that reuses it, so later opens (every process of a run) cost a stat per file."""
    import zoo.training.corpus as corpus_module

    directory, _ = tokenized
    copy = shutil.copytree(directory, tmp_path / "copy")
    hashed: list[str] = []

    def counting(path: Path) -> tuple[str, int]:
        hashed.append(Path(path).name)
        return hashlib.sha256(Path(path).read_bytes()).hexdigest(), Path(path).stat().st_size

    monkeypatch.setattr(corpus_module, "sha256_file", counting)
    TokenizedCorpus.open(copy)
    assert sorted(hashed) == sorted(corpus_module.ARRAY_FILES.values())
    hashed.clear()
    TokenizedCorpus.open(copy, refresh=True)
    assert len(hashed) == 4
    hashed.clear()
    opened = TokenizedCorpus.open(copy)
    assert hashed == [] and np.array_equal(opened.tokens, TokenizedCorpus.open(directory).tokens)


def test_a_corpus_tokenized_by_an_earlier_zoo_is_rebuilt(tokenized: tuple[Path, Callable[[], TokenizedCorpus]]
                                                         ) -> None:
    """Version 2 recorded no sha256 of its arrays: reusing it rebuilds it (the same arrays), it is no error."""
    directory, reuse = tokenized
    tokens = np.load(directory / "tokens.npy")
    meta = json.loads((directory / "corpus.json").read_text())
    meta["version"] = 2
    del meta["arrays"]
    (directory / "corpus.json").write_text(json.dumps(meta))
    assert np.array_equal(reuse().tokens, tokens)
    assert json.loads((directory / "corpus.json").read_text())["version"] == 3


# ---------------------------------------------------------------------------------------- damaged records
RUN_JSON: dict[str, Any] = {
    "not JSON": b"{\"run_version\": 2, \"kind\": ",
    "not an object": [],
    "settings a list": {"settings": []},
    "data a string": {"data": "x"},
    "data files not records": {"data": {"corpus": [1, 2]}},
    "a size as text": {"data": {"corpus": [{"name": "c.txt", "size": "1064", "sha256": "e6ff"}]}},
}


@pytest.mark.parametrize("case", RUN_JSON)
def test_a_damaged_run_record_is_a_zoo_error(case: str, finished: Finished, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = finished.copy(tmp_path / "run")
    marker = json.loads((out / "run.json").read_text())
    change = RUN_JSON[case]
    (out / "run.json").write_bytes(change if isinstance(change, bytes) else json.dumps(
        {**marker, **change} if isinstance(change, dict) else change).encode())
    for resume in (["--resume"], []):
        assert main([*_args(finished.corpus, "--out", str(out)), *resume]) == CheckpointError.exit_code
        err = capsys.readouterr().err
        assert f"error: {out / 'run.json'} is" in err and "Traceback" not in err, err


def _state(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(checkpoint: Path) -> None:
        state = json.loads((checkpoint / "state.json").read_text())
        edit(state)
        (checkpoint / "state.json").write_text(json.dumps(state))
    return apply


def _past_its_epoch(state: dict[str, Any]) -> None:
    """The position consistent with the step (32 examples consumed) but put at the end of epoch 0, which holds
    fewer: the stream would silently go on with other examples."""
    assert state["position"]["epoch"] >= 1
    state["position"].update(epoch=0, index=32)


STATE_JSON: dict[str, tuple[Callable[[Path], None], str]] = {
    "not JSON": (lambda c: (c / "state.json").write_bytes(b"\x00{garbage"), "is damaged or incomplete"),
    "not an object": (lambda c: (c / "state.json").write_text("[1, 2]"), "is damaged or incomplete"),
    "the step as text": (_state(lambda s: s.update(step="4")), "step and position must be whole numbers"),
    "a negative position": (_state(lambda s: s["position"].update(index=-1)), "whole numbers >= 0"),
    "a position of 1e12": (_state(lambda s: s["position"].update(index=10**12)), "beyond the examples consumed"),
    "settings a string": (_state(lambda s: s.update(settings="x")), "is damaged or incomplete"),
    "files a list": (_state(lambda s: s.update(files=[])), "is damaged or incomplete"),
    "another step than its name": (_state(lambda s: s.update(step=5)), "it records step 5"),
    "data out of step": (_state(lambda s: s["position"].update(consumed=31)), "does not match step 4"),
    "a position past its epoch": (_state(_past_its_epoch), "lies beyond that epoch"),
}


@pytest.mark.parametrize("case", STATE_JSON)
def test_a_damaged_checkpoint_state_is_a_zoo_error(case: str, finished: Finished, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = finished.copy(tmp_path / "run")
    newest = out / "checkpoints" / "step-000000004"
    edit, problem = STATE_JSON[case]
    edit(newest)
    assert main(finished.resume(out)) == CheckpointError.exit_code
    err = capsys.readouterr().err
    assert f"error: {newest / 'state.json'}" in err and problem in err, err
    assert f"hint: delete {newest}; --resume then continues from step-000000002" in err


def test_a_checkpoint_beyond_the_last_step_is_refused(finished: Finished, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = finished.copy(tmp_path / "run")
    beyond = shutil.copytree(out / "checkpoints" / "step-000000004", out / "checkpoints" / "step-000000008")
    _state(lambda s: s.update(step=8) or s["position"].update(consumed=64))(beyond)
    assert main(finished.resume(out)) == CheckpointError.exit_code
    assert "it records step 8, beyond --steps 4" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------- --out
def _user_folder(folder: Path) -> None:
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}')
    (folder / "vocab.txt").write_text("我的\n")


def _release(folder: Path) -> None:
    shutil.copytree(TF / "albert_google", folder)


def _finetuning_run(folder: Path) -> None:
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"run_version": 2, "kind": "finetuning", "settings": {},
                                                 "data": None}))


OUT: dict[str, tuple[Callable[[Path], Path], str]] = {
    "the user's config.json and vocab.txt": (lambda t: (_user_folder(t / "mine"), t / "mine")[1],
                                             "already holds files zoo did not write there (config.json, vocab.txt)"),
    "an upstream TF release": (lambda t: (_release(t / "release"), t / "release")[1],
                               "already holds files zoo did not write there"),
    "ZOO_HOME": (lambda t: Path(os.environ["ZOO_HOME"]), "is zoo's cache"),
    "a cached conversion": (lambda t: zoo.load(TF / "bert", device="cpu").path, "is inside zoo's cache"),
    "a fine-tuning run": (lambda t: (_finetuning_run(t / "ft"), t / "ft")[1],
                          "holds a finetuning run, not a pretraining run"),
}


@pytest.mark.parametrize("case", OUT)
def test_an_out_directory_that_is_not_this_kind_of_run_is_refused_untouched(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, reason = OUT[case]
    out = make(tmp_path)
    before = files_of(out) if out.is_dir() else None
    assert main(_args(CORPUS, "--out", str(out))) == UsageError.exit_code
    err = capsys.readouterr().err
    assert reason in err and "Traceback" not in err, err
    assert (files_of(out) if out.is_dir() else None) == before


def test_a_run_in_out_is_described_when_refused(finished: Finished, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = finished.copy(tmp_path / "run")
    assert main(_args(finished.corpus, "--out", str(out))) == UsageError.exit_code
    err = capsys.readouterr().err
    assert f"{out} already holds a finished pretraining run" in err and "continue it with --resume" in err
    for name in OUTPUTS:
        (out / name).unlink()
    assert main(_args(finished.corpus, "--out", str(out))) == UsageError.exit_code
    assert "a pretraining run stopped at step 4 of 4 (checkpoint step-000000004)" in capsys.readouterr().err


def test_out_paths_that_cannot_be_written_are_zoo_errors(tmp_path: Path, small_disk: Callable[[int], Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    disk = small_disk(1 << 20)
    (disk / "empty").mkdir()
    read_only(disk)
    cases = [(afile, f"--out {afile} is a file"), (afile / "sub", f"{afile} is a file, not a directory"),
             (disk / "new", "the file system is read-only"), (disk / "empty", "the file system is read-only")]
    for out, message in cases:
        assert main(_args(CORPUS, "--out", str(out))) == UsageError.exit_code
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert afile.read_text() == "mine" and [p.name for p in disk.iterdir()] == ["empty"]
    assert list((disk / "empty").iterdir()) == []


def test_a_failed_start_leaves_an_existing_out_as_it_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty_corpus = tmp_path / "empty.txt"
    empty_corpus.write_text("\n\n")
    out = tmp_path / "out"
    out.mkdir()
    assert main(_args(empty_corpus, "--out", str(out))) == DataError.exit_code  # found while tokenizing
    assert "holds no tokens" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no run.json, no run.lock, no data/


# ------------------------------------------------------------------------------------------ a full disk
@pytest.mark.parametrize("when", ["appending to", "rewriting"])
def test_a_full_disk_while_writing_metrics_is_exit_10_and_the_run_resumes(
        when: str, small_disk: Callable[[int], Path], capsys: pytest.CaptureFixture[str]) -> None:
    """Killed after checkpoint 2 (``appending to``: its metrics.jsonl gone too; ``rewriting``: with the records of
    steps 3 and 4, which --resume drops), then the disk fills up: exit 10, and --resume works once space is free."""
    out = small_disk(8 << 20) / "run"
    assert main(_args(CORPUS, "--out", str(out))) == 0
    shutil.rmtree(out / "checkpoints" / "step-000000004")
    for name in OUTPUTS:
        (out / name).unlink()
    if when == "appending to":
        (out / "metrics.jsonl").unlink()
    filler = fill(out.parent, leave=0)
    assert main(_args(CORPUS, "--out", str(out), "--resume")) == DiskSpaceError.exit_code
    err = capsys.readouterr().err
    assert f"the disk filled up while {when} {out / 'metrics.jsonl'}" in err, err
    assert "free some space and continue with --resume" in err and "Traceback" not in err
    filler.unlink()
    assert main(_args(CORPUS, "--out", str(out), "--resume")) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == ([3, 4] if when == "appending to" else [1, 2, 3, 4])


# --------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(("option", "message"), [
    (["--max-position-embeddings", "1000000000"], "--max-position-embeddings must be at most 32768"),
    (["--clip", "inf"], "--clip must be a finite number, got inf"),
    (["--clip", "0"], "--clip must be above 0"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--ngram", "0"], "--ngram must be at least 1, got 0"),
    (["--ngram", "9"], "--ngram must be at most 8"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--masked-lm-prob", "0"], "--masked-lm-prob must be above 0"),
    (["--max-seq-length", "4"], "--max-seq-length must be at least 8"),
    (["--warmup", "5"], "--warmup must lie in [0, --steps], got 5"),
])
def test_every_option_is_bounded_before_anything_happens(option: list[str], message: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_args(CORPUS, "--out", str(tmp_path / "run")), *option]) == UsageError.exit_code
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_api_checks_types_and_bounds_too(tmp_path: Path) -> None:
    common: dict[str, Any] = {"out": tmp_path / "run", "corpus": [CORPUS], "steps": 2, "progress": False}
    for bad, message in (({"clip": float("inf")}, "--clip must be a finite number"),
                         ({"ngram": "3"}, "--ngram must be an int"), ({"lr": True}, "--lr must be a finite number"),
                         ({"batch_size": 2.5}, "--batch-size must be an int"), ({"clips": 1.0}, "unknown setting")):
        with pytest.raises(UsageError, match=message.replace("[", r"\[")):
            zoo.pretrain(TF / "albert_google", **common, **bad)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- NaN
def test_a_diverging_run_names_the_parameters_the_lr_and_the_clip(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A learning rate of 10 with LAMB blows the weights up within a few steps: the error says where the
    gradient broke, how large the weights grew, and the lr and clip that did it."""
    assert main(["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--out", str(tmp_path / "run"),
                 "--steps", "30", "--objective", "mlm", "--optimizer", "lamb", "--lr", "10", "--warmup", "0",
                 *TINY]) == DataError.exit_code
    err = capsys.readouterr().err
    names = set(zoo.load(TF / "albert_google", device="cpu", heads="pretraining").model.state_dict())
    found = re.search(r"training diverged at step (\d+): the gradient norm is nan; first non-finite gradient: "
                      r"(\S+) \((\d+) of \d+ parameters\); largest weight: (\S+) \(\|w\| ([\d.e+]+)\) "
                      r"\(lr ([\d.]+), clip 1\)", err)
    assert found is not None, err
    assert found.group(2) in names and found.group(4) in names
    assert float(found.group(5)) > 1e3  # the weights grew: the cause is the learning rate
    assert 0 < float(found.group(6)) <= 10 and "a lower --lr" in err
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_non_finite_weight_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import zoo.training.runner as runner

    build = runner.load_model

    def with_an_inf(*args: Any, **kwargs: Any) -> torch.nn.Module:
        model = build(*args, **kwargs)
        with torch.no_grad():
            dict(model.named_parameters())["layers.0.intermediate.bias"][3] = float("inf")
        return model

    monkeypatch.setattr(runner, "load_model", with_an_inf)
    assert main(["pretrain", str(TF / "albert_google"), "--corpus", str(CORPUS), "--out", str(tmp_path / "run"),
                 "--steps", "3", "--clip", "2.5", "--lr", "0.001", *TINY]) == DataError.exit_code
    err = capsys.readouterr().err
    assert ("training diverged at step 1: the gradient norm is nan; first non-finite weight: "
            "layers.0.intermediate.bias (1 of 32 parameters)") in err, err
    assert "(lr 0.001, clip 2.5)" in err


# ---------------------------------------------------------------------------------------- kill -9
def test_kill_9_while_tokenizing_leaves_a_folder_the_next_run_takes(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The killed run's staging is removed by the next one (its process is gone), and the folder says what it is:
    a run that stopped before its first checkpoint — --resume says so, a plain run starts afresh."""
    big = tmp_path / "big.txt"
    big.write_bytes(CORPUS.read_bytes() * 6000)  # ~6 MB: seconds of tokenizing
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "zoo", *_args(big, "--out", str(out))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "data").is_dir() and any(".staging-" in p.name for p in (out / "data").iterdir()):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished tokenizing before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert any(".staging-" in p.name for p in (out / "data").iterdir())
    assert main(_args(CORPUS, "--out", str(out), "--resume")) == UsageError.exit_code
    err = capsys.readouterr().err
    assert f"--resume: {out} holds a pretraining run that stopped before its first checkpoint" in err, err
    assert "run the same command without --resume" in err
    assert main(_args(CORPUS, "--out", str(out))) == 0
    assert "stopped before its first checkpoint; starting afresh" in capsys.readouterr().err
    assert not [p for p in (out / "data").iterdir() if ".staging-" in p.name]
    assert json.loads((out / "receipt.json").read_text())["steps"] == 4
