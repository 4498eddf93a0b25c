"""Issue 9, first contact: what a new user types first works, or fails with a sentence they can act on.

Cases 13 (the README example: fill_mask right after a plain load), 14 (a GPU this machine lacks), 15 (long work
shows progress in every command and in the Python API) and 18 (a folder never shadows a registry name).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from servers.faulty import FaultServer
from support.cli import run
from support.fixtures import zoo_env  # noqa: F401
from support.models import FIXTURE, register_tiny, release_zip, write_tiny_manifest

torch = pytest.importorskip("torch")

import zoo
from zoo.errors import NotFoundError, OfflineError, UsageError

REPO = Path(__file__).resolve().parents[1]
ZIP = release_zip()


@pytest.fixture
def tiny(zoo_env: Path, tmp_path: Path) -> str:
    register_tiny(zoo_env, tmp_path)
    return "tiny"


@pytest.fixture
def served(zoo_env: Path):
    """Model ``tiny`` downloaded over HTTP from a loopback server (a real download to show progress for)."""
    with FaultServer() as srv:
        write_tiny_manifest(zoo_env, "tiny", [srv.add("/tiny.zip", ZIP)])
        yield srv


# ----------------------------------------------------------------------------------- 13: the README
def test_the_readme_python_example_works_as_written(tiny: str) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert 'zoo.load("albert_base_zh")' in example and "fill_mask" in example
    printed: list[object] = []
    code = example.replace('"albert_base_zh"', '"tiny", device="cpu", progress=False')
    code = code.replace("print(", "printed.append(")
    exec(compile(code, "README.md", "exec"), {"printed": printed})
    (ranked,) = printed[0]
    assert len(ranked) == 5 and all(set(r) == {"token", "id", "score"} for r in ranked)


def test_fill_mask_after_a_plain_load_reads_the_head_lazily(tiny: str) -> None:
    plain = zoo.load(tiny, device="cpu", progress=False)
    encoder_only = sum(p.numel() for p in plain.model.parameters())
    plain.embed(["今天天气很好"])
    plain(["今天天气很好"])
    assert not hasattr(plain.model, "mlm")  # embedding and forward never load it
    assert sum(p.numel() for p in plain.model.parameters()) == encoder_only
    with_head = zoo.load(tiny, device="cpu", heads="mlm", progress=False)
    text = "今天天气很[MASK]。"
    assert plain.fill_mask(text, top_k=5) == with_head.fill_mask(text, top_k=5)
    assert hasattr(plain.model, "mlm") and plain(["今天"]).mlm_logits is not None


# ---------------------------------------------------------------------------------------- 14: devices
@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has no usable GPU (whatever it really has)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_a_gpu_this_machine_lacks_is_a_usage_error(tiny: str, no_gpu: None, capsys) -> None:
    with pytest.raises(UsageError, match="device 'cuda' is not available: this machine has no usable CUDA GPU") as info:
        zoo.load(tiny, device="cuda", progress=False)
    assert 'use device "cpu"' in str(info.value.hint)
    for command in (["run", tiny, "今天[MASK]"], ["embed", tiny, "今天"]):
        code, out, err = run(capsys, *command, "--device", "cuda:1", "-q")
        assert code == 2 and out == "" and "device 'cuda:1' is not available" in err and "Traceback" not in err
        assert "pin_memory" not in err
    assert zoo.load(tiny, device="auto", progress=False).device.type == "cpu"


# ---------------------------------------------------------------------------------------- 15: progress
@pytest.mark.parametrize("command", [["run", "tiny", "今天[MASK]"], ["embed", "tiny", "今天"],
                                     ["export", "tiny", "{tmp}/out"], ["mirror", "tiny", "--to", "{tmp}/mirror"],
                                     ["pull", "tiny"]], ids=lambda c: c[0])
def test_every_command_shows_download_and_conversion_progress(served, tmp_path: Path, capsys, command) -> None:
    argv = [a.format(tmp=tmp_path) for a in command]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "tiny.zip: download started (" in err and "tiny.zip: download done 100%" in err  # stderr is no TTY
    if command[0] != "pull":
        assert "tiny: convert started" in err
    code, _, err = run(capsys, *argv[:2], *([f"{argv[2]}-again"] if command[0] == "export" else argv[2:]), "-q")
    assert code == 0 and "started" not in err


def test_the_python_api_shows_progress_when_a_person_watches(served, capsys, monkeypatch) -> None:
    zoo.load("tiny", device="cpu")  # stderr is not a terminal and no notebook: quiet by default
    assert capsys.readouterr().err == ""
    zoo.cache.remove("tiny")
    monkeypatch.setitem(sys.modules, "ipykernel", type(sys)("ipykernel"))  # as inside a notebook
    zoo.load("tiny", device="cpu")
    err = capsys.readouterr().err
    assert "tiny.zip (download)" in err and "tiny (convert)" in err and "KiB" in err
    zoo.cache.remove("tiny")
    zoo.load("tiny", device="cpu", progress=False)
    monkeypatch.setenv("ZOO_PROGRESS", "0")
    zoo.cache.remove("tiny")
    zoo.load("tiny", device="cpu")
    assert capsys.readouterr().err == ""


def test_a_progress_callback_sees_downloads_and_conversions(served, tmp_path: Path) -> None:
    stages: dict[str, set[str]] = {}
    for name, call in (("load", lambda cb: zoo.load("tiny", device="cpu", progress=cb)),
                       ("export", lambda cb: zoo.export("tiny", tmp_path / "e", progress=cb)),
                       ("pull", lambda cb: zoo.pull("tiny", progress=cb))):
        zoo.cache.remove("tiny")
        events: list[zoo.ProgressEvent] = []
        call(events.append)
        stages[name] = {e.stage for e in events}
    assert {"download", "convert"} <= stages["load"] and {"download", "convert"} <= stages["export"]
    assert "download" in stages["pull"]


# ------------------------------------------------------------------------------------ 18: name vs path
@pytest.fixture
def shadow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder holds albert_base_zh/ (what unzipping the upstream release gives)."""
    folder = tmp_path / "albert_base_zh"
    shutil.copytree(FIXTURE, folder)
    monkeypatch.chdir(tmp_path)
    return folder


def test_a_folder_never_shadows_a_registry_name(shadow: Path, capsys) -> None:
    with pytest.raises(OfflineError, match="albert_base_zh is not in the cache"):
        zoo.load("albert_base_zh", device="cpu", offline=True, progress=False)  # the registry's, not the folder
    code, _, err = run(capsys, "run", "albert_base_zh", "今天[MASK]", "--offline", "-q")
    assert code == 7 and "not in the cache" in err
    code, _, err = run(capsys, "export", "albert_base_zh", "out", "--offline", "-q")
    assert code == 7
    for spelled in ("./albert_base_zh", str(shadow), Path("albert_base_zh")):  # paths are paths
        assert zoo.load(spelled, device="cpu", progress=False).manifest is None
    code, out, _ = run(capsys, "run", "./albert_base_zh", "今天[MASK]", "--json", "-q")
    assert code == 0 and out.startswith("[")


def test_a_mistyped_path_is_no_such_directory_and_a_bare_folder_name_gets_a_hint(tmp_path: Path, capsys,
                                                                               monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for spelled in ("./nonexistent_dir", "nonexistent_dir/", "~/nonexistent_dir_zoo_test", str(tmp_path / "nope")):
        code, _, err = run(capsys, "run", spelled, "今天[MASK]", "-q")
        assert code == 3 and "no such directory" in err and "unknown model" not in err, spelled
    with pytest.raises(NotFoundError, match="no such directory"):
        zoo.load("./nonexistent_dir", progress=False)
    (tmp_path / "my_release").mkdir()
    code, _, err = run(capsys, "embed", "my_release", "今天", "-q")
    assert code == 3 and "unknown model 'my_release'" in err and "write ./my_release" in err
