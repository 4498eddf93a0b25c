"""HTTP downloads against loopback servers: real nginx, and a server that injects faults.

Every case ends with a verified snapshot or the documented error, and never with a corrupt cache entry.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from servers.faulty import Fault, FaultServer
from servers.nginx import NGINX, Nginx
from support.fixtures import checkpoint_files, make_zip, sha256, source, write_manifest, zoo_env  # noqa: F401

from zoo import cache
from zoo.errors import IntegrityError, NetworkError
from zoo.fetch import FetchOptions
from zoo.fetch import http as zoo_http
from zoo.resolver import resolve

FAST = FetchOptions(stall_timeout=0.5, connect_timeout=2, backoff_base=0.01, backoff_max=0.05,
                    parallel_threshold=256 << 10, min_part_size=64 << 10, chunk_size=64 << 10, max_attempts=4)

FILES = checkpoint_files(1_500_000)
ZIP = make_zip(FILES)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx binary not found (apt-get install nginx-light)")


def assert_snapshot(path: Path, files: dict[str, bytes] = FILES) -> None:
    """The snapshot holds exactly these files with exactly these bytes."""
    got = {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert got == files


def assert_clean_failure(model: str) -> None:
    """After a failed pull nothing usable (and nothing half-made) is in the cache."""
    assert cache.snapshots(model) == []
    blobs = cache.home() / "blobs" / "sha256"
    assert not blobs.exists() or list(blobs.iterdir()) == []


# ------------------------------------------------------------------------------------------------- nginx
@needs_nginx
def test_nginx_parallel_ranges_each_byte_once(zoo_env: Path, tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "m.zip").write_bytes(ZIP)
    with Nginx(root) as server:
        manifest = write_manifest(zoo_env, "tst", [source(server.url("m.zip"), sha=sha256(ZIP), size=len(ZIP))])
        pulled = resolve(manifest, options=FAST)
        log = server.requests()
    assert_snapshot(pulled.path)
    assert pulled.sha256 == sha256(ZIP)
    gets = [r for r in log if r.method == "GET"]
    assert [r.method for r in log].count("HEAD") == 1
    assert len(gets) > 8 and all(r.status == 206 for r in gets)  # 64 KiB segments over 8 connections
    assert sum(r.bytes for r in gets) == len(ZIP)  # every byte exactly once
    starts = sorted(int(r.range.split("=")[1].split("-")[0]) for r in gets)
    assert starts[0] == 0 and len(set(starts)) == len(gets)


@needs_nginx
def test_nginx_single_stream_for_small_files(zoo_env: Path, tmp_path: Path) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "m.zip").write_bytes(ZIP)
    with Nginx(root) as server:
        manifest = write_manifest(zoo_env, "tst", [source(server.url("m.zip"))])
        resolve(manifest)  # default options: 16 MiB threshold
        gets = [r for r in server.requests() if r.method == "GET"]
    assert len(gets) == 1 and gets[0].bytes == len(ZIP)


@needs_nginx
def test_nginx_416_from_stale_size_restarts(zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale size (a CDN's cached HEAD) with recorded parts past the real end gets 416: start over cleanly."""
    import json

    import requests

    root = tmp_path / "www"
    root.mkdir()
    (root / "m.zip").write_bytes(ZIP)
    real_probe = zoo_http._Downloader._probe
    calls = []

    def stale_first(self: zoo_http._Downloader) -> zoo_http._Remote:
        remote = real_probe(self)
        calls.append(remote.size)
        if len(calls) == 1:
            remote.size = len(ZIP) * 2
        return remote

    monkeypatch.setattr(zoo_http._Downloader, "_probe", stale_first)
    with Nginx(root) as server:
        url = server.url("m.zip")
        manifest = write_manifest(zoo_env, "tst", [source(url)])
        workdir = cache.partial_dir(url)
        workdir.mkdir(parents=True)
        (workdir / "data").write_bytes(ZIP + bytes(len(ZIP)))
        state = {"version": 1, "url": url, "size": 2 * len(ZIP), "validator": requests.head(url).headers["ETag"],
                 "parts": [[0, len(ZIP), len(ZIP)], [len(ZIP), 2 * len(ZIP), 0]]}
        (workdir / "state.json").write_text(json.dumps(state))
        pulled = resolve(manifest, options=FAST)
        statuses = [r.status for r in server.requests() if r.method == "GET"]
    assert statuses[0] == 416 and len(calls) == 2
    assert pulled.sha256 == sha256(ZIP)
    assert_snapshot(pulled.path)


@needs_nginx
def test_nginx_changed_file_between_runs_is_not_spliced(zoo_env: Path, tmp_path: Path) -> None:
    """Part state from an interrupted run is dropped when the ETag changed: the new file comes whole."""
    import json

    import requests

    root = tmp_path / "www"
    root.mkdir()
    (root / "m.zip").write_bytes(ZIP)
    with Nginx(root) as server:
        url = server.url("m.zip")
        manifest = write_manifest(zoo_env, "tst", [source(url)])
        # an interrupted run: a few parts, part of them done
        workdir = cache.partial_dir(url)
        workdir.mkdir(parents=True)
        (workdir / "data").write_bytes(ZIP[:1000] + bytes(len(ZIP) - 1000))
        state = {"version": 1, "url": url, "size": len(ZIP), "validator": requests.head(url).headers["ETag"],
                 "parts": [[0, len(ZIP), 1000]]}
        (workdir / "state.json").write_text(json.dumps(state))
        new_files = checkpoint_files(1_500_000, seed=1)
        new_zip = make_zip(new_files)
        assert len(new_zip) == len(ZIP)
        time.sleep(1.1)  # nginx's ETag is mtime-size
        (root / "m.zip").write_bytes(new_zip)
        pulled = resolve(manifest, options=FAST)
        sent = sum(r.bytes for r in server.requests() if r.method == "GET")
    assert pulled.sha256 == sha256(new_zip)
    assert_snapshot(pulled.path, new_files)
    assert sent == len(new_zip)


# ------------------------------------------------------------------------------------------ fault server
def pull_from(zoo_env: Path, srv: FaultServer, path: str = "/m.zip", data: bytes = ZIP, *, pinned: bool = True,
              **route: object):
    url = srv.add(path, data, **route)
    entry = source(url, sha=sha256(data), size=len(data)) if pinned else source(url)
    return write_manifest(zoo_env, "tst", [entry])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_resets_mid_body_at_random_offsets(zoo_env: Path, seed: int) -> None:
    import random

    rnd = random.Random(seed)
    faults = [Fault("reset", at=rnd.randrange(1, 60_000)) for _ in range(5)]  # segments are 64 KiB
    with FaultServer() as srv:
        manifest = pull_from(zoo_env, srv, faults=faults)
        pulled = resolve(manifest, options=FAST)
        srv.wait_idle()
        resets = [e for e in srv.gets("/m.zip") if e.status == 206 and e.sent < int(e.range.split("-")[-1]) - int(
            e.range.split("=")[1].split("-")[0]) + 1]
    assert len(resets) == 5
    assert pulled.sha256 == sha256(ZIP)
    assert_snapshot(pulled.path)


def test_5xx_and_429_are_retried_honouring_retry_after(zoo_env: Path) -> None:
    faults = [Fault("status", status=503, retry_after="1"), Fault("status", status=500),
              Fault("status", status=429, retry_after="0")]
    with FaultServer() as srv:
        manifest = pull_from(zoo_env, srv, faults=faults)
        t0 = time.monotonic()
        pulled = resolve(manifest, options=FAST)
        elapsed = time.monotonic() - t0
        srv.wait_idle()
        statuses = [e.status for e in srv.gets("/m.zip")]
    assert sorted(statuses)[-3:] == [429, 500, 503]
    assert elapsed >= 1.0  # Retry-After: 1 was honoured although the backoff alone is 50 ms at most
    assert_snapshot(pulled.path)


def test_persistent_errors_give_up_with_a_network_error(zoo_env: Path) -> None:
    with FaultServer() as srv:
        manifest = pull_from(zoo_env, srv, faults=[Fault("status", status=502) for _ in range(200)])
        with pytest.raises(NetworkError, match="gave up after 4 failed attempts"):
            resolve(manifest, options=FAST)
    assert_clean_failure("tst")


def test_stalled_connection_is_restarted(zoo_env: Path) -> None:
    with FaultServer() as srv:
        manifest = pull_from(zoo_env, srv, faults=[Fault("stall", at=30_000, seconds=5)])
        t0 = time.monotonic()
        pulled = resolve(manifest, options=FAST)
        elapsed = time.monotonic() - t0
    assert elapsed < 4  # the 5 s stall was cut short by the 0.5 s stall timeout
    assert_snapshot(pulled.path)


def test_truncated_body_with_full_content_length_resumes(zoo_env: Path) -> None:
    with FaultServer() as srv:
        manifest = pull_from(zoo_env, srv, faults=[Fault("truncate", at=100_000), Fault("truncate", at=1)])
        pulled = resolve(manifest, options=FAST)
        srv.wait_idle()
        sent = srv.sent("/m.zip")
    assert_snapshot(pulled.path)
    assert sent < len(ZIP) + 200_000  # resumed from the bytes that arrived, not from zero


def test_same_size_wrong_bytes_is_quarantined_and_next_source_used(zoo_env: Path) -> None:
    wrong = bytearray(ZIP)
    wrong[len(wrong) // 2] ^= 0xFF
    with FaultServer() as srv:
        bad = srv.add("/bad.zip", bytes(wrong))
        good = srv.add("/good.zip", ZIP)
        manifest = write_manifest(zoo_env, "tst", [source(bad, sha=sha256(ZIP), size=len(ZIP)),
                                                   source(good, sha=sha256(ZIP), size=len(ZIP))])
        pulled = resolve(manifest, options=FAST)
    assert pulled.source.index == 1
    assert_snapshot(pulled.path)
    quarantined = [p for p in (cache.home() / "quarantine").iterdir() if not p.name.endswith(".txt")]
    assert [p.read_bytes() for p in quarantined] == [bytes(wrong)]


def test_every_source_failing_lists_each_reason(zoo_env: Path) -> None:
    wrong = bytes(reversed(ZIP))
    with FaultServer() as srv:
        bad = srv.add("/bad.zip", wrong)
        manifest = write_manifest(zoo_env, "tst", [source(bad, sha=sha256(ZIP), size=len(ZIP)),
                                                   source(srv.url("/missing.zip"))])
        with pytest.raises(IntegrityError) as info:
            resolve(manifest, options=FAST)
    message = str(info.value)
    assert f"source 0 ({bad}): sha256 {sha256(wrong)}, expected {sha256(ZIP)}" in message
    assert "same size, different bytes" in message
    assert "source 1" in message and "HTTP 404" in message
    assert_clean_failure("tst")


def test_no_range_support_single_stream_restarts_from_zero(zoo_env: Path) -> None:
    with FaultServer() as srv:
        manifest = pull_from(zoo_env, srv, ranges=False, faults=[Fault("reset", at=200_000)])
        pulled = resolve(manifest, options=FAST)
        srv.wait_idle()
        gets = srv.gets("/m.zip")
    assert [g.status for g in gets] == [200, 200] and gets[1].sent == len(ZIP)
    assert_snapshot(pulled.path)


def test_etag_changing_between_parts_restarts_whole_download(zoo_env: Path) -> None:
    """Parts of two versions of the file must never be spliced: the download restarts on the new one."""
    new_files = checkpoint_files(1_500_000, seed=7)
    new_zip = make_zip(new_files)
    assert len(new_zip) == len(ZIP)
    with FaultServer() as srv:
        manifest = pull_from(zoo_env, srv, pinned=False, change_after=1, changed_data=new_zip)
        pulled = resolve(manifest, options=FAST)
        srv.wait_idle()
        statuses = [e.status for e in srv.gets("/m.zip")]
    assert 200 in statuses  # If-Range with the old ETag got the whole new file
    assert pulled.sha256 == sha256(new_zip)
    assert_snapshot(pulled.path, new_files)


def test_redirect_chain_is_followed(zoo_env: Path) -> None:
    with FaultServer() as srv:
        srv.add("/final/m.zip", ZIP)
        srv.redirect("/c", "/final/m.zip", 307)
        srv.redirect("/b", "/c", 301)
        first = srv.redirect("/a", "/b", 302)
        manifest = write_manifest(zoo_env, "tst", [source(first, sha=sha256(ZIP), archive="zip")])
        pulled = resolve(manifest, options=FAST)
        srv.wait_idle()
        direct = srv.gets("/final/m.zip")
        hops = srv.gets("/a") + srv.gets("/b") + srv.gets("/c")
    assert_snapshot(pulled.path)
    assert hops == [] and sum(e.sent for e in direct) == len(ZIP)  # parts go straight to the final URL


def test_redirect_loop_is_a_network_error(zoo_env: Path) -> None:
    with FaultServer() as srv:
        srv.redirect("/x", "/y")
        loop = srv.redirect("/y", "/x")
        manifest = write_manifest(zoo_env, "tst", [source(loop, archive="zip")])
        with pytest.raises(NetworkError, match="too many redirects"):
            resolve(manifest, options=FAST)
