"""The cache commands (`zoo pull`, `pin`, `verify`, `cache ls|rm|prune`) through the CLI entry point."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
from servers.faulty import FaultServer
from support.cli import run
from support.fixtures import checkpoint_files, make_zip, sha256, source, write_manifest, zoo_env  # noqa: F401

from zoo import cache

FILES = checkpoint_files(100_000)
ZIP = make_zip(FILES)


@pytest.fixture
def two_models(zoo_env: Path, tmp_path: Path) -> dict[str, bytes]:
    archives = {"alpha": ZIP, "beta": make_zip(checkpoint_files(300_000, seed=3))}
    for name, data in archives.items():
        path = tmp_path / f"{name}.zip"
        path.write_bytes(data)
        write_manifest(zoo_env, name, [source(path.as_uri())])
    return archives


def test_pull_prints_the_directory_last_and_progress_on_stderr(two_models, capsys) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP)
        write_manifest(Path(os.environ["ZOO_MANIFEST_PATH"]), "gamma", [source(url)])
        code, out, err = run(capsys, "pull", "gamma")
    assert code == 0
    path = Path(out.splitlines()[-1])
    assert path.is_dir() and (path / "m" / "vocab.txt").read_bytes() == FILES["m/vocab.txt"]
    assert "m.zip: download started (100.0 KiB)" in err and str(path) not in err  # plain lines: not a terminal
    code, out, err = run(capsys, "pull", "gamma", "-q", "--offline")
    assert code == 0 and out.strip() == str(path) and err == ""


def test_pull_errors_map_to_exit_codes(two_models, capsys) -> None:
    assert run(capsys, "pull", "nope")[0] == 3
    code, _, err = run(capsys, "pull", "alpha", "--require-hashes")
    assert code == 6 and "no sha256 pin" in err
    os.environ["ZOO_OFFLINE"] = "1"
    try:
        code, _, err = run(capsys, "pull", "alpha")
    finally:
        del os.environ["ZOO_OFFLINE"]
    assert code == 7 and "offline" in err


def test_pin_prints_manifest_lines(two_models, capsys) -> None:
    code, out, _ = run(capsys, "pin", "alpha", "-q")
    assert code == 0
    assert f"sha256: {sha256(ZIP)}" in out and f"size: {len(ZIP)}" in out
    vocab = FILES["m/vocab.txt"]
    assert f"  m/vocab.txt: {{sha256: {sha256(vocab)}, size: {len(vocab)}}}" in out


def test_cache_ls_rm(two_models, capsys) -> None:
    for name in two_models:
        assert run(capsys, "pull", name, "-q")[0] == 0
    code, out, _ = run(capsys, "cache", "ls", "--json")
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["alpha", "beta"]
    assert all(r["size"] >= 2 * len(two_models[r["name"]]) * 0.9 for r in rows)  # archive + extracted files
    code, out, _ = run(capsys, "cache", "ls")
    assert code == 0 and "alpha" in out and "beta" in out
    code, out, _ = run(capsys, "cache", "rm", "alpha")
    assert code == 0 and "removed alpha" in out
    assert [s.model for s in cache.snapshots()] == ["beta"]
    assert not cache.blob_path(sha256(ZIP)).exists()
    assert run(capsys, "cache", "rm", "alpha")[0] == 3


def test_list_shows_the_downloaded_size_and_keeps_it_after_rm(two_models, capsys) -> None:
    def size() -> int | None:
        return next(r["size"] for r in json.loads(run(capsys, "list", "--json")[1]) if r["name"] == "alpha")

    assert size() is None  # unpinned, never downloaded
    run(capsys, "pull", "alpha", "-q")
    assert size() == len(ZIP) == cache.snapshots("alpha")[0].size
    run(capsys, "cache", "rm", "alpha")
    assert size() == len(ZIP)  # the trust-on-first-use pin remembers it


def test_cache_ls_piped_never_cuts_a_column(two_models, capsys, monkeypatch) -> None:
    run(capsys, "pull", "alpha", "-q")
    url = "https://mirror.example.org/" + "/".join(f"very-long-directory-name-{i}" for i in range(8)) + "/beta.zip"
    work = cache.partial_dir(url)  # an interrupted download of a long URL
    work.mkdir(parents=True)
    (work / "source.json").write_text(json.dumps({"url": url, "model": "beta"}))
    (work / "data").write_bytes(b"x" * 10)
    code, out, _ = run(capsys, "cache", "ls")  # stdout is not a terminal here
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["KIND", "NAME", "SOURCE", "SIZE", "LAST", "USED"]
    row = next(line for line in lines if line.startswith("download "))
    assert row.split()[:3] == ["download", "beta", url] and "…" not in out and "\x1b[" not in out
    assert next(line for line in lines if line.startswith("snapshot ")).split()[2] == cache.snapshots("alpha")[0].source
    monkeypatch.setattr("zoo.cli.cache.stdout_is_tty", lambda: True)  # a terminal: a table that fits it
    code, out, _ = run(capsys, "cache", "ls")
    assert code == 0 and "kind" in out.splitlines()[0] and "download" in out


def test_cache_prune_removes_least_recently_used(two_models, capsys) -> None:
    for name in two_models:
        run(capsys, "pull", name, "-q")
    beta = cache.snapshots("beta")[0]
    os.utime(beta.marker, (time.time() - 3600, time.time() - 3600))  # beta used an hour ago
    run(capsys, "pull", "alpha", "-q")  # alpha used now
    alpha_size = next(e.size for e in cache.entries() if e.kind == "snapshot" and e.name == "alpha")
    code, out, _ = run(capsys, "cache", "prune", "--max-size", str(alpha_size + 50_000))
    assert code == 0 and "removed snapshot beta" in out
    assert [s.model for s in cache.snapshots()] == ["alpha"]
    assert cache.total_size() <= alpha_size + 50_000
    assert run(capsys, "cache", "prune", "--max-size", "lots")[0] == 2


def test_cache_prune_clears_leftovers_but_not_what_is_in_use(two_models, capsys) -> None:
    from zoo.converters.modeldir import CONVERTER_VERSION

    run(capsys, "pull", "alpha", "-q")
    half = cache.converted_path("ab" * 32, CONVERTER_VERSION)  # a conversion whose marker was never written
    (half / "part").mkdir(parents=True)
    done = cache.converted_path("cd" * 32, CONVERTER_VERSION)
    old = cache.converted_path("ef" * 32, CONVERTER_VERSION - 1)  # made by an older converter
    for path in (done, old):
        staged = cache.staging_dir() / "out"
        staged.mkdir()
        (staged / "w").write_bytes(b"w")
        cache.commit_conversion(staged, path, origin="alpha", source="x",
                                files={"w": cache.FileRecord(sha256(b"w"), 1)})
    dead = cache.home() / "tmp" / f"{socket.gethostname()}-999999999-{'0' * 12}"
    dead.mkdir(parents=True)
    alive = cache.staging_dir()  # this process's: in use
    empty_partial = cache.home() / "partial" / ("0" * 32)
    empty_partial.mkdir(parents=True)
    code, out, _ = run(capsys, "cache", "prune", "--max-size", "20G")
    assert code == 0
    assert not half.exists() and not old.exists() and not dead.exists() and not empty_partial.exists()
    assert done.is_dir() and alive.is_dir()
    assert [s.model for s in cache.snapshots()] == ["alpha"]
    assert not list((cache.home() / "locks").glob("*.lock"))  # nobody holds them: removed


def test_verify_detects_a_flipped_byte_and_pull_repairs(two_models, capsys) -> None:
    run(capsys, "pull", "alpha", "-q")
    code, out, _ = run(capsys, "verify")
    assert code == 0 and "no damage" in out
    target = cache.snapshots("alpha")[0].path / "m" / "model.ckpt.data-00000-of-00001"
    data = bytearray(target.read_bytes())
    data[1234] ^= 0x01
    stat = target.stat()
    target.write_bytes(bytes(data))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only a re-hash sees it
    code, _, err = run(capsys, "verify", "alpha")
    assert code == 6 and "damaged" in err and "model.ckpt.data-00000-of-00001" in err
    code, out, _ = run(capsys, "pull", "alpha", "-q")  # rebuilt from the intact blob
    assert code == 0 and Path(out.strip(), "m", "model.ckpt.data-00000-of-00001").read_bytes() == \
        FILES["m/model.ckpt.data-00000-of-00001"]
    assert run(capsys, "verify")[0] == 0


def test_verify_detects_a_damaged_blob(two_models, capsys) -> None:
    run(capsys, "pull", "beta", "-q")
    blob = cache.blob_path(sha256(two_models["beta"]))
    data = bytearray(blob.read_bytes())
    data[-100] ^= 0xFF
    blob.write_bytes(bytes(data))
    code, _, err = run(capsys, "verify")
    assert code == 6 and blob.name in err
    assert not blob.exists() and any((cache.home() / "quarantine").iterdir())
