"""The resolver's policies: cache hits, offline mode, pins (manifest and trust-on-first-use), disk space."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from servers.faulty import FaultServer
from support.fixtures import checkpoint_files, files_of, make_tar_gz, make_zip, sha256, source, write_manifest, zoo_env  # noqa: F401

from zoo import cache
from zoo.errors import DiskSpaceError, IntegrityError, NetworkError, OfflineError, UnsafeArchiveError, UsageError
from zoo.fetch import FetchOptions
from zoo.resolver import pull, resolve

FAST = FetchOptions(stall_timeout=0.5, backoff_base=0.01, backoff_max=0.05, max_attempts=3)
FILES = checkpoint_files(200_000)
ZIP = make_zip(FILES)


def test_pull_by_name_then_cache_hit_without_network_or_rehash(zoo_env: Path, monkeypatch) -> None:
    with FaultServer() as srv:
        write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP), sha=sha256(ZIP))])
        first = pull("tst")
        srv.wait_idle()
        requests_after_first = len(srv.log)
        monkeypatch.setattr("zoo.cache.records.sha256_file", lambda p: pytest.fail(f"re-hashed {p} on a cache hit"))
        second = pull("tst")
        assert len(srv.log) == requests_after_first  # no request at all
    assert first == second and files_of(first) == FILES


def test_touched_file_is_rehashed_once_and_stays_valid(zoo_env: Path) -> None:
    with FaultServer() as srv:
        manifest = write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP))])
        path = resolve(manifest).path
        vocab = path / "m" / "vocab.txt"
        os.utime(vocab, ns=(1, 1))
        assert resolve(manifest).path == path
        srv.wait_idle()
        before = len(srv.log)
        snap = cache.snapshots("tst")[0]
        assert snap.files["m/vocab.txt"].stamp == cache.Stamp.of(vocab)  # refreshed stamp
        vocab.write_bytes(b"changed")  # real damage: the snapshot is rebuilt from the blob
        assert files_of(resolve(manifest).path) == FILES
        assert len(srv.log) == before  # no download: the verified blob was enough


def test_offline_hit_and_miss(zoo_env: Path, monkeypatch) -> None:
    with FaultServer() as srv:
        manifest = write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP))])
        monkeypatch.setenv("ZOO_OFFLINE", "1")
        with pytest.raises(OfflineError, match="tst is not in the cache") as info:
            resolve(manifest)
        assert srv.log == [] and "ZOO_OFFLINE" in str(info.value)
        path = resolve(manifest, offline=False).path
        srv.wait_idle()
        n = len(srv.log)
        assert resolve(manifest).path == path and len(srv.log) == n


def test_disk_full_is_refused_before_any_byte(zoo_env: Path, monkeypatch) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with FaultServer() as srv:
        manifest = write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP))])
        with pytest.raises(DiskSpaceError, match="not enough disk space"):
            resolve(manifest)
        srv.wait_idle()
        assert [e.method for e in srv.log] == ["HEAD"]  # no GET
    assert not (cache.partial_dir(manifest.sources[0].label) / "data").exists()


def test_trust_on_first_use_pin_detects_upstream_change(zoo_env: Path) -> None:
    other = make_zip(checkpoint_files(200_000, seed=9))
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP)
        manifest = write_manifest(zoo_env, "tst", [source(url)])
        resolve(manifest)
        pin = cache.get_pin(url)
        assert pin is not None and pin.sha256 == sha256(ZIP) and pin.size == len(ZIP)
        cache.remove("tst")
        srv.add("/m.zip", other, etag='"v2"')
        with pytest.raises(IntegrityError, match="changed upstream") as info:
            resolve(manifest)
        assert sha256(other) in str(info.value) and sha256(ZIP) in str(info.value)
    assert cache.snapshots("tst") == []


def test_require_hashes_refuses_unpinned_sources(zoo_env: Path, monkeypatch) -> None:
    with FaultServer() as srv:
        unpinned = write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP))])
        with pytest.raises(IntegrityError, match="no sha256 pin"):
            resolve(unpinned, require_hashes=True)
        monkeypatch.setenv("ZOO_REQUIRE_HASHES", "1")
        with pytest.raises(IntegrityError, match="no sha256 pin"):
            resolve(unpinned)
        assert srv.log == []
        resolve(unpinned, require_hashes=False)  # a TOFU-cached copy still does not count as pinned
        with pytest.raises(IntegrityError):
            resolve(unpinned)
        pinned = write_manifest(zoo_env, "tst", [source(srv.url("/m.zip"), sha=sha256(ZIP))])
        assert files_of(resolve(pinned).path) == FILES


def test_pinned_size_mismatch_fails_before_download(zoo_env: Path) -> None:
    with FaultServer() as srv:
        manifest = write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP), size=len(ZIP) + 1)])
        with pytest.raises(IntegrityError, match=f"reports {len(ZIP)} bytes, the manifest pins {len(ZIP) + 1}"):
            resolve(manifest, options=FAST)
        srv.wait_idle()
        assert [e.method for e in srv.log] == ["HEAD"]


def test_inner_file_pins_are_checked(zoo_env: Path) -> None:
    vocab = FILES["m/vocab.txt"]
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP)
        good = {"m/vocab.txt": {"sha256": sha256(vocab), "size": len(vocab)}}
        assert files_of(resolve(write_manifest(zoo_env, "a", [source(url, files=good)])).path) == FILES
        bad = {"m/vocab.txt": {"sha256": "0" * 64, "size": len(vocab)}, "m/missing.bin": {"size": 3}}
        with pytest.raises(IntegrityError, match="m/missing.bin: missing.*m/vocab.txt: sha256"):
            resolve(write_manifest(zoo_env, "b", [source(url, files=bad)]))
    assert cache.snapshots("b") == []


def test_archive_none_keeps_the_file_under_its_basename(zoo_env: Path) -> None:
    data = os.urandom(50_000)
    with FaultServer() as srv:
        manifest = write_manifest(zoo_env, "tst", [source(srv.add("/dl/model.safetensors", data), archive="none",
                                                          sha=sha256(data))])
        pulled = resolve(manifest)
    assert files_of(pulled.path) == {"model.safetensors": data}
    assert pulled.sha256 == sha256(data)
    assert (pulled.path / "model.safetensors").stat().st_ino == cache.blob_path(sha256(data)).stat().st_ino


def test_file_url_and_tar_gz(zoo_env: Path, tmp_path: Path) -> None:
    archive = tmp_path / "m.tar.gz"
    archive.write_bytes(make_tar_gz(FILES))
    manifest = write_manifest(zoo_env, "tst", [source(archive.as_uri(), archive="tar.gz")])
    pulled = resolve(manifest)
    assert files_of(pulled.path) == FILES and pulled.sha256 == sha256(archive.read_bytes())


def test_hostile_archive_from_a_source_is_refused(zoo_env: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    evil.write_bytes(make_zip({"../../escape.txt": b"pwned"}))
    manifest = write_manifest(zoo_env, "tst", [source(evil.as_uri())])
    with pytest.raises(UnsafeArchiveError, match="path traversal"):
        resolve(manifest)
    assert cache.snapshots("tst") == [] and not (cache.home().parent / "escape.txt").exists()


def test_source_index_picks_one_source_and_is_checked(zoo_env: Path, tmp_path: Path) -> None:
    archive = tmp_path / "m.zip"
    archive.write_bytes(ZIP)
    manifest = write_manifest(zoo_env, "tst", [source((tmp_path / "absent.zip").as_uri()), source(archive.as_uri())])
    with pytest.raises(NetworkError, match="absent.zip"):
        resolve(manifest, source=0)
    assert resolve(manifest).source.index == 1  # the missing file is skipped, the next source used
    assert resolve(manifest, source=1).source.index == 1
    with pytest.raises(UsageError, match="sources 0..1, got --source 5"):
        resolve(manifest, source=5)


def test_zoo_list_shows_cache_state_and_size(zoo_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from zoo.cli import main

    with FaultServer() as srv:
        write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP))])
        assert main(["list", "--json"]) == 0
        row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "tst")
        assert row["cached"] is False and row["size"] is None
        pull("tst")
    assert main(["list", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "tst")
    assert row["cached"] is True and row["size"] == len(ZIP)
