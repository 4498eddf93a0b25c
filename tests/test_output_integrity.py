"""Issue 17 (4) and issue 16 (folders are first-class): an output tampered with never loads silently, and
``zoo verify ./folder`` re-hashes a folder against its receipt.

Every edit here keeps the file's size, mtime and inode — what a flipped bit on disk or a careful same-size edit
leaves — so only the ctime (which no one can set back) and the bytes tell.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import run
from support.damage import edit_keeping_mtime, flip

torch = pytest.importorskip("torch")

import zoo
from zoo.converters import convert
from zoo.errors import CheckpointError

TF = Path(__file__).parent / "fixtures" / "tf"


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """A `zoo convert` output (model.safetensors, config.json, vocab.txt, receipt.json)."""
    return convert(TF / "albert_google", tmp_path / "run_a")


def _swap_two_vocab_lines(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    a, b = next((i, j) for i in range(5, len(lines)) for j in range(i + 1, len(lines))
                if lines[i] != lines[j] and lines[i] and lines[j])
    swapped = list(lines)
    swapped[a], swapped[b] = lines[b], lines[a]
    edit_keeping_mtime(path, path.read_bytes(), b"\n".join(swapped))


TAMPERING: dict[str, tuple[str, Callable[[Path], None]]] = {
    "weights bit": ("model.safetensors", lambda p: flip(p, p.stat().st_size - 7, keep_stamp=True)),
    "relu to gelu": ("config.json", lambda p: edit_keeping_mtime(p, b'"relu"', b'"gelu"')),
    "3 layers to 2": ("config.json", lambda p: edit_keeping_mtime(p, b'"num_hidden_layers": 3',
                                                                   b'"num_hidden_layers": 2')),
    "two vocab lines swapped": ("vocab.txt", _swap_two_vocab_lines),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_a_same_size_same_mtime_edit_is_found_on_load_and_by_verify(output: Path, case: str, capsys) -> None:
    zoo.load(output, device="cpu")  # loaded once intact: its stamps are known
    name, tamper = TAMPERING[case]
    tamper(output / name)
    with pytest.raises(CheckpointError, match=name) as info:
        zoo.load(output, device="cpu")
    assert "zoo verify" in str(info.value.hint) and "again" in str(info.value.hint)
    code, _, err = run(capsys, "run", str(output), "今天[MASK]", "-q")
    assert code == CheckpointError.exit_code and name in err and "Traceback" not in err
    code, out, err = run(capsys, "verify", str(output))
    assert code == 6 and f"damaged: {output / name}" in err and "no damage" not in out
    code, _, err = run(capsys, "export", str(output), str(output.parent / "hf"), "-q")
    assert code == CheckpointError.exit_code and not (output.parent / "hf").exists()


def test_a_tampered_transformers_export_is_found_before_it_is_converted(output: Path, tmp_path: Path,
                                                                        capsys) -> None:
    hf = zoo.export(output, tmp_path / "hf").path
    zoo.load(hf, device="cpu")
    with open(hf / "README.md", "a", encoding="utf-8") as card:
        card.write("\nOur notes.\n")  # people edit model cards: a load does not mind, `zoo verify` reports it
    zoo.load(hf, device="cpu")
    code, _, err = run(capsys, "verify", str(hf))
    assert code == 6 and "README.md" in err
    flip(hf / "model.safetensors", (hf / "model.safetensors").stat().st_size - 7, keep_stamp=True)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        zoo.load(hf, device="cpu")


def test_an_edit_made_before_the_first_load_is_found_too(output: Path) -> None:
    edit_keeping_mtime(output / "config.json", b'"relu"', b'"gelu"')
    with pytest.raises(CheckpointError, match="config.json"):
        zoo.load(output, device="cpu")


def test_a_fresh_output_loads_without_hashing_and_a_changed_stamp_is_rehashed_once(output: Path,
                                                                                   monkeypatch) -> None:
    import importlib

    folders = importlib.import_module("zoo.cache.folders")  # where a folder's stamps are checked
    hashed: list[Path] = []
    real = folders.sha256_file

    def spy(path: Path) -> tuple[str, int]:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(folders, "sha256_file", spy)
    first = zoo.load(output, device="cpu")
    assert hashed == []  # the writer recorded what it hashed while writing
    copy = output.parent / "copy"
    shutil.copytree(output, copy)  # new inodes: nothing known about them
    zoo.load(copy, device="cpu")
    assert sorted(p.name for p in hashed) == ["config.json", "model.safetensors", "vocab.txt"]
    hashed.clear()
    zoo.load(copy, device="cpu")
    assert hashed == []
    (output / "vocab.txt").touch()  # a new mtime, same bytes: re-hashed once, then known again
    zoo.load(output, device="cpu")
    assert [p.name for p in hashed] == ["vocab.txt"]
    hashed.clear()
    assert torch.equal(zoo.load(output, device="cpu").embed(["今天"]), first.embed(["今天"])) and hashed == []


def test_a_missing_or_resized_output_is_a_clear_error(output: Path) -> None:
    with open(output / "vocab.txt", "ab") as fh:
        fh.write(b"extra\n")
    with pytest.raises(CheckpointError, match="vocab.txt"):
        zoo.load(output, device="cpu")
    (output / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match="vocab.txt is missing"):
        zoo.load(output, device="cpu")


# ------------------------------------------------------------------------------------------ zoo verify
def test_verify_a_folder_against_its_receipt(output: Path, capsys) -> None:
    code, out, err = run(capsys, "verify", str(output))
    assert code == 0, err
    assert out.strip() == f"ok: {output}: 3 file(s) re-hashed against its receipt, no damage"
    hf = zoo.export(output, output.parent / "hf").path
    code, out, _ = run(capsys, "verify", str(hf))
    assert code == 0 and "no damage" in out


def test_a_folder_without_a_receipt_loads_but_verify_says_there_is_nothing_to_check(output: Path,
                                                                                    capsys) -> None:
    before = zoo.load(output, device="cpu").embed(["今天"])
    (output / "receipt.json").unlink()
    assert torch.equal(zoo.load(output, device="cpu").embed(["今天"]), before)
    code, out, err = run(capsys, "verify", str(output))
    assert code == 3 and out == ""
    assert f"{output} has no receipt.json" in err and "nothing to check" in err and "zoo pull" not in err
    code, _, err = run(capsys, "verify", str(TF / "bert"))  # an upstream release: no receipt either
    assert code == 3 and "no receipt.json" in err


def test_verify_of_a_path_never_says_pull(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "verify", "./run_a")
    assert code == 3 and "no such directory" in err and "zoo pull" not in err and "unknown model" not in err
    convert(TF / "bert", tmp_path / "run_b")
    code, _, err = run(capsys, "verify", "run_b")  # a folder here, but no model of that name
    assert code == 3 and "write ./run_b" in err
    code, out, _ = run(capsys, "verify", "./run_b")
    assert code == 0 and "no damage" in out


def test_a_receipt_swapped_for_another_is_what_counts(output: Path, tmp_path: Path) -> None:
    other = convert(TF / "albert_google_groups", tmp_path / "other")
    zoo.load(output, device="cpu")
    receipt = json.loads((other / "receipt.json").read_text())
    (output / "receipt.json").write_text(json.dumps(receipt))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        zoo.load(output, device="cpu")
