"""Directories a user names for zoo to write (``zoo convert`` OUT, ``zoo export`` DIR, ``zoo init --out``): one rule
(new or empty, never inside the cache), claimed while they are written (two writers at once: one wins, the other is
refused), fsynced before they appear; and a training run's ``--out`` that holds no model yet says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import run
from support.fixtures import zoo_env  # noqa: F401 - a fixture
from support.race import FIXTURE, race

import zoo
from zoo._fs import sha256_file
from zoo.converters.modeldir import check_outputs
from zoo.errors import IntegrityError, NotFoundError
from zoo.weights import prepare


def _argv(command: str, out: Path) -> list[str]:
    if command == "convert":
        return ["convert", str(FIXTURE), str(out)]
    if command == "export":
        return ["export", str(FIXTURE), str(out), "--format", "tf"]
    return ["init", "--config", str(FIXTURE / "bert_config.json"), "--vocab", str(FIXTURE / "vocab.txt"),
            "--out", str(out)]


COMMANDS = ("convert", "export", "init")


# ------------------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("command", COMMANDS)
def test_an_output_directory_inside_the_cache_is_refused(capsys, command: str) -> None:
    home = Path(os.environ["ZOO_HOME"])
    for out in (home / "converted" / "mine", home):
        code, _, err = run(capsys, *_argv(command, out))
        assert code == 2 and "zoo's cache" in err and "zoo cache prune" in err, err
    assert not (home / "converted" / "mine").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_that_is_not_new_or_empty_is_refused_saying_what_it_holds(tmp_path: Path, capsys,
                                                                         command: str) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, *_argv(command, mine))
    assert code == 2 and "files zoo did not write (notes.txt)" in err
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    earlier = zoo.convert(FIXTURE, tmp_path / "earlier")
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    code, _, err = run(capsys, *_argv(command, earlier))
    assert code == 2 and "a zoo conversion" in err
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before

    run_dir = _incomplete_run(tmp_path / "run", step=3)
    code, _, err = run(capsys, *_argv(command, run_dir))
    assert code == 2 and "an incomplete pretraining run (last checkpoint step 3)" in err


# ------------------------------------------------------------------------------------------- the race
@pytest.mark.parametrize("existing", [False, True], ids=["new", "empty"])
@pytest.mark.parametrize("command", COMMANDS)
def test_two_writers_of_one_directory_one_wins_and_the_other_is_refused(tmp_path: Path, command: str,
                                                                       existing: bool) -> None:
    targets = [tmp_path / f"out{i}" for i in range(20)]
    for target in targets if existing else ():
        target.mkdir()
    for target, outcomes in zip(targets, race(command, targets)):
        assert sorted(kind for kind, _ in outcomes) == ["ok", "refused"], (target.name, outcomes)
        [written] = [detail for kind, detail in outcomes if kind == "ok"]
        [refusal] = [detail for kind, detail in outcomes if kind == "refused"]
        assert "another zoo process is writing it" in refusal or "already exists and is not empty" in refusal
        # nothing was silently replaced: the folder holds what the winner says it wrote, and nothing else
        assert {name: sha256_file(target / name)[0] for name in written} == written
        assert sorted(p.name for p in target.iterdir()) == sorted([*written, "receipt.json"])
        assert check_outputs(target, rehash=True) == []


# ------------------------------------------------------------------------------------------- fsync
@pytest.fixture
def disk_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every fsync (of the path the descriptor names) and every rename, in order."""
    events: list[tuple[str, ...]] = []
    fsync, rename, replace = os.fsync, os.rename, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording(real, kind):
        def move(src, dst) -> None:
            events.append((kind, os.fspath(src), os.fspath(dst)))
            real(src, dst)
        return move

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name a descriptor's file")
    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "rename", recording(rename, "rename"))
    monkeypatch.setattr(os, "replace", recording(replace, "rename"))
    return events


def _synced_before_it_appears(events: list[tuple[str, ...]], out: Path) -> None:
    """Every file in ``out`` was fsynced where it was written, before the rename that made it appear there; the
    directory that received it was fsynced after."""
    for name in sorted(p.name for p in out.iterdir()):
        moves = [i for i, e in enumerate(events) if e[0] == "rename"
                 and (e[2] == str(out / name) or (e[2] == str(out) and Path(e[1], name) != out / name))]
        assert moves, f"{name} appeared without a rename"
        move = moves[-1]
        staged = Path(events[move][1]) if events[move][2] == str(out / name) else Path(events[move][1], name)
        assert ("fsync", str(staged)) in events[:move], f"{name} was not fsynced before it appeared"
        receiver = str(out) if events[move][2] == str(out / name) else str(out.parent)
        assert ("fsync", receiver) in events[move:], f"{receiver} was not fsynced after {name} appeared"


@pytest.mark.parametrize("existing", [False, True], ids=["new", "empty"])
def test_an_output_is_on_disk_before_it_appears(tmp_path: Path, disk_events, existing: bool) -> None:
    out = tmp_path / "out"
    if existing:
        out.mkdir()
    zoo.convert(FIXTURE, out)
    _synced_before_it_appears(disk_events, out)


def test_an_extracted_archive_is_on_disk_before_it_appears(tmp_path: Path, disk_events) -> None:
    from support.fixtures import make_zip

    from zoo.archive import extract

    archive = tmp_path / "a.zip"
    archive.write_bytes(make_zip({"a/w.bin": b"w" * 1000, "a/vocab.txt": b"[PAD]\n"}))
    extract(archive, tmp_path / "out", "zip")
    _synced_before_it_appears(disk_events, tmp_path / "out")


def test_a_snapshot_and_a_conversion_are_on_disk_before_they_appear(zoo_env: Path, tmp_path: Path,
                                                                     disk_events) -> None:
    from support.models import register_tiny

    register_tiny(zoo_env, tmp_path)
    prepared = prepare("tiny", progress=None)  # pulled from a file:// source, extracted, converted into the cache
    assert prepared.pulled is not None
    _synced_before_it_appears(disk_events, prepared.pulled.path)
    _synced_before_it_appears(disk_events, prepared.path)
    folder = prepare(FIXTURE).path  # a TF release folder: converted once into the cache
    _synced_before_it_appears(disk_events, folder)


# ------------------------------------------------------------------------------ a run without its model
def _incomplete_run(out: Path, *, step: int | None) -> Path:
    (out / "checkpoints").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"run_version": 2, "kind": "pretraining", "settings": {}, "data": {}}))
    if step is not None:
        (out / "checkpoints" / f"step-{step:09d}").mkdir()
    return out


def test_loading_a_training_run_without_its_model_says_how_to_finish_it(tmp_path: Path, capsys) -> None:
    out = _incomplete_run(tmp_path / "run", step=40)
    with pytest.raises(NotFoundError, match=r"incomplete pretraining run \(last checkpoint step 40\)") as info:
        zoo.load(out)
    assert "zoo pretrain" in str(info.value.hint) and "--resume" in str(info.value.hint)
    for argv in (("embed", str(out), "你好"), ("export", str(out), str(tmp_path / "x"))):
        code, _, err = run(capsys, *argv)
        assert code == NotFoundError.exit_code and "incomplete pretraining run" in err and "--resume" in err, argv
        assert "TensorFlow" not in err and "receipt" not in err
    # zoo verify re-hashes the run's state: this checkpoint folder is empty (no state.json), so it is damaged
    code, _, err = run(capsys, "verify", str(out))
    assert code == IntegrityError.exit_code and f"damaged: {out / 'checkpoints' / 'step-000000040'}" in err, err
    (out / "checkpoints" / "step-000000040").rmdir()
    code, _, err = run(capsys, "verify", str(out))  # no checkpoint left: nothing to continue, start again
    assert code == NotFoundError.exit_code and "incomplete pretraining run (no checkpoint" in err
    assert "it starts afresh" in err


def test_a_final_write_killed_midway_is_an_incomplete_run_and_the_next_run_removes_its_leftovers(
        tmp_path: Path) -> None:
    from zoo.training.outdir import RunDir

    out = _incomplete_run(tmp_path / "run", step=7)
    script = ("import os, sys; from pathlib import Path; from zoo.converters.modeldir import staged_into\n"
              "with staged_into(Path(sys.argv[1]), kind='pretraining') as staged:\n"
              "    staged.write_bytes('model.safetensors', b'half a model', 'weights')\n"
              "    os.kill(os.getpid(), 9)\n")
    killed = subprocess.run([sys.executable, "-c", script, str(out)], env={**os.environ, "PYTHONPATH": os.pathsep.join(
        sys.path)}, check=False)
    assert killed.returncode == -9
    leftovers = [p for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers, "the killed write left its staging"
    with pytest.raises(NotFoundError, match=r"incomplete pretraining run \(last checkpoint step 7\)"):
        prepare(out)
    RunDir(out, "pretraining").clean()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
