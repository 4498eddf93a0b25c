"""Interruptions and concurrency: kill -9, Ctrl-C, 8 processes pulling at once, locks of dead processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers.faulty import FaultServer
from support.fixtures import checkpoint_files, files_of, make_zip, sha256, source, write_manifest, zoo_env  # noqa: F401

from zoo import cache
from zoo.resolver import resolve

REPO = Path(__file__).resolve().parents[1]
FILES = checkpoint_files(4_000_000)
ZIP = make_zip(FILES)
PARALLEL_ENV = {"ZOO_STALL_TIMEOUT": "5"}


def start_pull(*, cli: bool = False, connections: int = 8) -> subprocess.Popen[str]:
    """A separate process pulling model ``tst`` with the test's ZOO_HOME and manifests."""
    code = ("from zoo.cli import main; raise SystemExit(main(['pull', 'tst', '-q']))" if cli else
            "from zoo.fetch import FetchOptions; from zoo.registry import get_manifest; "
            "from zoo.resolver import resolve; "
            f"opts = FetchOptions(connections={connections}, parallel_threshold=1 << 20, min_part_size=256 << 10); "
            "print(resolve(get_manifest('tst'), options=opts).path)")
    env = {**os.environ, **PARALLEL_ENV, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def partial_state(url: str) -> dict:
    return json.loads((cache.partial_dir(url) / "state.json").read_text())


def test_kill_9_at_several_points_then_resume(zoo_env: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, rate=250_000)  # 8 x 250 kB/s: ~2 s per full run
        write_manifest(zoo_env, "tst", [source(url, sha=sha256(ZIP), size=len(ZIP))])
        done_before = 0
        for fraction in (0.25, 0.5, 0.75):
            srv.wait_idle()
            srv.log.clear()
            proc = start_pull()
            # the state file is saved 4 times a second: wait for a save that shows progress
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, f"pull ended early: {proc.communicate()}"
                assert time.monotonic() < deadline
                try:
                    done = sum(p[2] for p in partial_state(url)["parts"])
                except (OSError, ValueError, KeyError):
                    done = 0
                if done >= fraction * len(ZIP) and done > done_before:
                    break
                time.sleep(0.02)
            proc.kill()
            proc.wait()
            state = partial_state(url)
            done_before = sum(p[2] for p in state["parts"])
            assert done_before >= fraction * len(ZIP) and cache.snapshots("tst") == []
        srv.wait_idle()
        srv.log.clear()
        pulled = resolve(write_manifest(zoo_env, "tst", [source(url, sha=sha256(ZIP), size=len(ZIP))]))
        srv.wait_idle()
        refetched = srv.sent("/m.zip")
    assert refetched < len(ZIP) - done_before + (1 << 20)  # only what the state did not record as done
    assert refetched < 0.5 * len(ZIP)
    assert pulled.sha256 == sha256(ZIP) and files_of(pulled.path) == FILES
    assert not cache.partial_dir(url).exists()


def test_ctrl_c_leaves_resumable_state(zoo_env: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, rate=1_000_000)
        manifest = write_manifest(zoo_env, "tst", [source(url, sha=sha256(ZIP))])
        proc = start_pull(cli=True)
        deadline = time.monotonic() + 30
        while srv.streamed < 0.4 * len(ZIP):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert "interrupted" in err and out == ""
        saved = sum(p[2] for p in partial_state(url)["parts"])
        assert saved >= 0.3 * len(ZIP)
        srv.routes["/m.zip"].rate = None
        srv.wait_idle()
        srv.log.clear()
        pulled = resolve(manifest)
        srv.wait_idle()
        refetched = srv.sent("/m.zip")
    assert refetched <= len(ZIP) - saved
    assert files_of(pulled.path) == FILES


def test_eight_processes_one_transfer(zoo_env: Path) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, rate=250_000)  # slow enough that all 8 start while it runs
        write_manifest(zoo_env, "tst", [source(url, sha=sha256(ZIP))])
        procs = [start_pull() for _ in range(8)]
        results = [p.communicate(timeout=60) for p in procs]
        assert all(p.returncode == 0 for p in procs), [r[1][-2000:] for r in results]
        srv.wait_idle()
        log = list(srv.log)
    dirs = {out.strip().splitlines()[-1] for out, _ in results}
    assert len(dirs) == 1
    gets = [e for e in log if e.method == "GET"]
    assert [e.method for e in log].count("HEAD") == 1
    assert sum(e.sent for e in gets) == len(ZIP)  # each byte range transferred exactly once
    assert len({e.range for e in gets}) == len(gets) > 1
    assert files_of(Path(dirs.pop())) == FILES


def test_threads_in_one_process_share_one_transfer(zoo_env: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, rate=4_000_000)
        manifest = write_manifest(zoo_env, "tst", [source(url, sha=sha256(ZIP))])
        with ThreadPoolExecutor(4) as pool:
            paths = list(pool.map(lambda _: resolve(manifest).path, range(4)))
        assert len(set(paths)) == 1
        srv.wait_idle()
        assert srv.sent("/m.zip") == len(ZIP)


def test_lock_of_a_killed_holder_does_not_block(zoo_env: Path) -> None:
    code = ("import sys, time; from zoo import cache\n"
            "with cache.lock('snapshot-x'):\n    print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    from filelock import FileLock, Timeout

    with pytest.raises(Timeout):  # really held
        FileLock(str(cache.home() / "locks" / "snapshot-x.lock")).acquire(timeout=0.2)
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    with cache.lock("snapshot-x"):
        assert time.monotonic() - t0 < 2
