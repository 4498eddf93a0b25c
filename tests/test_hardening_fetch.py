"""Issue 9, downloads: every failure is fast, clear and recoverable.

Cases 8 (file:// sources: only regular files, a private cache), 9 (encoded bodies), 10 (trickling servers), 11
(bad settings, servers that contradict themselves), 12 (the disk fills up mid-download), 16 (offline: fail fast,
name the host) and the HTML page of 19, against loopback servers that misbehave on purpose.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from servers.faulty import Fault, FaultServer
from servers.nginx import free_port  # a free port: nothing listens, connecting is refused
from support.cli import run
from support.disk import fill
from support.fixtures import checkpoint_files, files_of, make_zip, sha256, source, write_manifest, zoo_env  # noqa: F401

import zoo
from zoo import cache
from zoo.errors import NetworkError, UnsupportedError, UsageError
from zoo.fetch import FetchOptions
from zoo.resolver import resolve

REPO = Path(__file__).resolve().parents[1]
FILES = checkpoint_files(200_000)
ZIP = make_zip(FILES)
FAST = FetchOptions(stall_timeout=2, connect_timeout=2, backoff_base=0.01, backoff_max=0.02, max_attempts=2,
                    min_speed=1024, speed_window=0.3, header_timeout=0.5)


def nothing_kept(url: str) -> None:
    """A refused download leaves no blob, no pin and no partial file behind."""
    blobs = cache.home() / "blobs" / "sha256"
    assert not blobs.exists() or list(blobs.iterdir()) == []
    assert cache.get_pin(url) is None and not (cache.partial_dir(url) / "data").exists()


# ------------------------------------------------------------------------------------------ 8: file://
@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_a_file_source_that_is_not_a_regular_file_is_refused_at_once(zoo_env: Path, tmp_path: Path,
                                                                     kind: str) -> None:
    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)  # reading would block forever: nobody writes
    else:
        path = tmp_path / "folder"
        path.mkdir()
    write_manifest(zoo_env, "tst", [source(path.as_uri(), archive="none")])
    started = time.monotonic()
    with pytest.raises(UnsupportedError, match="is not a regular file") as info:
        zoo.pull("tst", progress=False)
    assert time.monotonic() - started < 5 and info.value.exit_code == 9
    assert cache.total_size() < 4096  # nothing was copied


@pytest.mark.parametrize("shared", [False, True])
def test_the_cache_stays_private_whatever_the_source_mode(zoo_env: Path, tmp_path: Path, monkeypatch,
                                                          shared: bool) -> None:
    home = tmp_path / "fresh" / "zoo"  # created by zoo
    monkeypatch.setenv("ZOO_HOME", str(home))
    if shared:
        monkeypatch.setenv("ZOO_CACHE_MODE", "shared")
    weights, archive = tmp_path / "model.safetensors", tmp_path / "m.zip"
    weights.write_bytes(os.urandom(10_000))
    archive.write_bytes(ZIP)
    for path in (weights, archive):
        path.chmod(0o640)
    write_manifest(zoo_env, "plain", [source(weights.as_uri(), archive="none")])
    write_manifest(zoo_env, "zipped", [source(archive.as_uri())])
    old = os.umask(0o022)
    try:
        made = [zoo.pull("plain", progress=False), zoo.pull("zipped", progress=False)]
    finally:
        os.umask(old)
    files = [p for p in home.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert any(p.parent == home / "blobs" / "sha256" for p in files) and all(files_of(d) for d in made)
    want = 0o644 if shared else 0o600
    assert {p.relative_to(home).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
        {p.relative_to(home).as_posix(): oct(want) for p in files}
    assert stat.S_IMODE(home.stat().st_mode) == (0o755 if shared else 0o700)


# ----------------------------------------------------------------------------------------- 9: encoding
def test_an_encoded_body_is_never_stored_or_pinned(zoo_env: Path, capsys) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, encoding="gzip")
        write_manifest(zoo_env, "tst", [source(url)])
        code, out, err = run(capsys, "pull", "tst", "-q")
        assert code == 5 and out == ""
        assert "Content-Encoding: gzip" in err and "never stores or pins encoded bytes" in err
        nothing_kept(url)
        good = srv.add("/good.zip", ZIP)
        write_manifest(zoo_env, "tst", [source(url), source(good)])
        code, out, err = run(capsys, "pull", "tst", "-q")
        assert code == 0 and files_of(Path(out.strip())) == FILES
        assert "source 0" in err and "Content-Encoding" in err  # the rescue is reported, not silent
    assert cache.get_pin(url) is None and cache.get_pin(good).sha256 == sha256(ZIP)


# -------------------------------------------------------------------------------------- 10: trickling
def test_a_body_trickling_below_the_minimum_speed_gives_up_quickly(zoo_env: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, trickle=(1, 0.02))  # 50 bytes/s: 4 s per KiB, a day for this file
        manifest = write_manifest(zoo_env, "tst", [source(url)])
        started = time.monotonic()
        with pytest.raises(NetworkError, match=r"too slow: .* \(minimum 1.0 KiB/s, ZOO_MIN_SPEED\)"):
            resolve(manifest, options=FAST)
        assert time.monotonic() - started < 5
    assert cache.snapshots("tst") == []


def test_headers_trickling_past_the_header_timeout_give_up_quickly(zoo_env: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, header_trickle=0.05)  # every byte well within the stall timeout
        manifest = write_manifest(zoo_env, "tst", [source(url)])
        started = time.monotonic()
        with pytest.raises(NetworkError, match=r"the response headers took longer than 0.5s"):
            resolve(manifest, options=FAST)
        assert time.monotonic() - started < 5


# ----------------------------------------------------------------------------- 11: settings and liars
@pytest.mark.parametrize(("var", "value"), [("ZOO_STALL_TIMEOUT", "abc"), ("ZOO_STALL_TIMEOUT", "-5"),
                                            ("ZOO_MAX_ATTEMPTS", "x"), ("ZOO_MAX_ATTEMPTS", "0"),
                                            ("ZOO_MIN_SPEED", "-1"), ("ZOO_STALL_TIMEOUT", "nan")])
def test_a_bad_setting_is_a_usage_error_naming_the_variable(zoo_env: Path, capsys, monkeypatch, var: str,
                                                           value: str) -> None:
    with FaultServer() as srv:
        write_manifest(zoo_env, "tst", [source(srv.add("/m.zip", ZIP))])
        monkeypatch.setenv(var, value)
        code, _, err = run(capsys, "pull", "tst")
        assert code == 2 and f"{var}={value!r}" in err and "Traceback" not in err and "ValueError" not in err
        with pytest.raises(UsageError, match=var):
            zoo.pull("tst", progress=False)
        assert srv.log == []


def test_a_server_answering_416_to_every_range_is_reported_as_such(zoo_env: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, always_416=True)
        manifest = write_manifest(zoo_env, "tst", [source(url)])
        with pytest.raises(NetworkError) as info:
            resolve(manifest, options=FAST)
    text = str(info.value)
    assert "416" in text and "contradict each other" in text and "misconfigured" in text
    assert "kept changing" not in text
    nothing_kept(url)


def test_a_server_lying_about_content_length_is_reported_as_such(zoo_env: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, claimed_size=len(ZIP) + 50_000)
        manifest = write_manifest(zoo_env, "tst", [source(url)])
        started = time.monotonic()
        with pytest.raises(NetworkError) as info:
            resolve(manifest, options=FAST)
        assert time.monotonic() - started < 5
    text = str(info.value)
    assert f"ends the body after byte {len(ZIP)} every time" in text and "Content-Length" in text
    assert "kept changing" not in text


# ------------------------------------------------------------------------------ 12: the disk fills up
@pytest.mark.parametrize("resumable", [True, False])
def test_the_disk_filling_up_mid_download(small_disk, tmp_path: Path, monkeypatch, capsys, resumable: bool) -> None:
    disk = small_disk(28 << 20)
    monkeypatch.setenv("ZOO_HOME", str(disk / "zoo"))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    payload = make_zip(checkpoint_files(4_000_000, seed=7))
    pause = Fault("pause", at=1_000_000)
    filler: list[Path] = []

    def another_process_fills_the_disk() -> None:
        if pause.reached.wait(30):
            deadline = time.monotonic() + 10
            data = cache.partial_dir(url) / "data"
            while time.monotonic() < deadline and not (data.exists() and os.stat(data).st_blocks * 512 >= 900_000):
                time.sleep(0.01)  # until the client has written what it got
            filler.append(fill(disk, leave=64 << 10))
        pause.release.set()

    with FaultServer() as srv:
        url = srv.add("/m.zip", payload, faults=[pause], unknown_size=not resumable)
        write_manifest(manifests, "tst", [source(url)])
        helper = threading.Thread(target=another_process_fills_the_disk)
        helper.start()
        code, out, err = run(capsys, "pull", "tst", "-q")
        helper.join()
        assert code == 10 and out == "" and "Traceback" not in err
        assert "the disk filled up while downloading m.zip" in err
        staging = cache.home() / "tmp"
        assert not staging.exists() or list(staging.iterdir()) == []
        work = cache.partial_dir(url)
        if resumable:
            assert "the download resumes from what is kept" in err
            assert (work / "data").exists() and (work / "state.json").exists()
        else:
            assert "cannot resume" in err and "deleted" in err
            assert not (work / "data").exists()
        filler[0].unlink()
        srv.wait_idle()
        srv.log.clear()
        code, out, err = run(capsys, "pull", "tst", "-q")
        assert code == 0, err
        assert files_of(Path(out.strip())) == checkpoint_files(4_000_000, seed=7)
        srv.wait_idle()
        if resumable:  # only what was missing came again
            assert srv.sent("/m.zip") <= len(payload) - 900_000
            assert srv.gets("/m.zip")[0].range.startswith("bytes=") and not srv.gets("/m.zip")[0].range.startswith(
                "bytes=0-")


# ------------------------------------------------------------------------------------- 16: offline
def test_a_refused_connection_fails_at_once_naming_the_host(zoo_env: Path, capsys) -> None:
    port = free_port()
    write_manifest(zoo_env, "tst", [source(f"http://127.0.0.1:{port}/m.zip")])
    started = time.monotonic()
    code, _, err = run(capsys, "pull", "tst")
    assert time.monotonic() - started < 3
    assert code == 5 and f"127.0.0.1:{port} refused the connection" in err and "ZOO_OFFLINE" in err


def _no_dns(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    """``host`` does not resolve (without asking a real DNS server)."""
    real = socket.getaddrinfo

    def getaddrinfo(name, *args, **kwargs):
        if name == host:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_host_that_does_not_resolve_fails_at_once_naming_it(zoo_env: Path, monkeypatch) -> None:
    _no_dns(monkeypatch, "mirror.invalid")
    write_manifest(zoo_env, "tst", [source("https://mirror.invalid/m.zip")])
    started = time.monotonic()
    with pytest.raises(NetworkError, match="cannot resolve the host mirror.invalid") as info:
        zoo.pull("tst", progress=False)
    assert time.monotonic() - started < 3 and "ZOO_OFFLINE" in str(info.value.hint)


HF_SOURCE = {"hf": "acme/tiny", "revision": "0" * 40, "format": "safetensors", "archive": "none",
             "checkpoint": "model.safetensors", "vocab": "vocab.txt"}


@pytest.mark.parametrize("endpoint", ["refused", "no dns"])
def test_an_unreachable_hub_fails_fast_and_quietly(zoo_env: Path, monkeypatch, capfd, endpoint: str) -> None:
    if endpoint == "refused":
        url, host = f"http://127.0.0.1:{free_port()}", "127.0.0.1"
    else:
        url, host = "http://hub.invalid", "hub.invalid"
        _no_dns(monkeypatch, host)
    monkeypatch.setenv("HF_ENDPOINT", url)
    write_manifest(zoo_env, "tst", [HF_SOURCE])
    started = time.monotonic()
    with pytest.raises(NetworkError) as info:
        zoo.pull("tst", progress=False)
    took = time.monotonic() - started
    assert took < 3, f"took {took:.1f}s"
    text = str(info.value)
    assert host in text and ("refused the connection" in text or "cannot resolve the host" in text)
    assert "ZOO_OFFLINE" in text and "HF_ENDPOINT" in text
    assert "Retrying" not in capfd.readouterr().err  # no retry chatter from huggingface_hub


def test_mirror_dry_run_to_an_unreachable_hub_is_a_clear_error(zoo_env: Path, tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    from support.models import register_tiny

    register_tiny(zoo_env, tmp_path)
    port = free_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    code, _, err = run(capsys, "mirror", "tiny", "--to", "hf://acme/tiny", "--dry-run", "-q")
    assert time.monotonic() - started < 5
    assert code == 5 and "Traceback" not in err and len(err.splitlines()) <= 4, err
    assert f"127.0.0.1:{port} refused the connection" in err and "ZOO_OFFLINE" not in err


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="a network namespace needs unshare and root (CI runs as root)")
def test_pulling_a_builtin_model_without_any_network_fails_in_seconds(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_ENDPOINT") and "proxy" not in k.lower()}
    env.update(ZOO_HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO), ZOO_PROGRESS="0")
    started = time.monotonic()
    proc = subprocess.run(["unshare", "-n", sys.executable, "-m", "zoo", "pull", "albert_large_zh"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 5, proc.stderr
    assert took < 10, f"took {took:.1f}s"
    err = proc.stderr
    assert "cannot resolve the host storage.googleapis.com" in err
    assert "cannot resolve the host huggingface.co" in err and "ZOO_OFFLINE=1" in err and "Traceback" not in err
    assert "…" not in err and "Retrying" not in err


# --------------------------------------------------------------------------------------- 19: HTML page
def test_an_html_page_for_an_unpinned_source_is_called_what_it_is(zoo_env: Path, capsys) -> None:
    page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>" + b"x" * 5000 + b"</body></html>\n"
    with FaultServer() as srv:
        url = srv.add("/m.zip", page, content_type="text/html")
        write_manifest(zoo_env, "tst", [source(url)])
        code, _, err = run(capsys, "pull", "tst", "-q")
    assert code == 6 and "the server sent an HTML page instead of the file" in err
    assert "damaged" not in err and "archive" not in err.lower().replace("zip", "")
    assert cache.get_pin(url) is None and any((cache.home() / "quarantine").iterdir())
    assert not cache.partial_dir(url).exists()
