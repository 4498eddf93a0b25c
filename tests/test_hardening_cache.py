"""Issue 9, the cache: nothing in it is ever silently wrong, and housekeeping never breaks other processes.

Cases 1 (damaged conversions and snapshots rebuild themselves), 2 (damaged pin files), 3 (prune vs running
pulls and conversions), 4 (leftovers are visible and removable; a pull killed after storing is reused) and the
conversion half of 12 (the disk fills up while converting). Everything goes through public entry points:
``zoo.load``, ``zoo.pull``, ``zoo.cli.main`` and ``zoo.cache``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from servers.faulty import Fault, FaultServer
from support.cli import run
from support.damage import flip
from support.disk import fill
from support.fixtures import checkpoint_files, files_of, make_zip, sha256, source, write_manifest, zoo_env  # noqa: F401
from support.models import DATA, FIXTURE, register_tiny, release_files, release_zip, write_tiny_manifest

torch = pytest.importorskip("torch")

import zoo
from zoo import cache
from zoo.errors import DiskSpaceError, IntegrityError

REPO = Path(__file__).resolve().parents[1]
FILES = checkpoint_files(200_000)
ZIP = make_zip(FILES)
OTHER = make_zip(checkpoint_files(200_000, seed=5))


def state(loaded: zoo.Loaded) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def child(code: str) -> subprocess.Popen[str]:
    """A second zoo process with this test's cache and manifests."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "ZOO_PROGRESS": "0"}
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def tiny(zoo_env: Path, tmp_path: Path) -> Path:
    """The tiny BERT release as model ``tiny``, from a file:// source; returns the archive."""
    return register_tiny(zoo_env, tmp_path)


def no_source(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on the source is gone and the network is forbidden: repairs must use what the cache holds."""
    archive.unlink()
    monkeypatch.setenv("ZOO_OFFLINE", "1")


# ------------------------------------------------------------------------------------- 1: conversions
@pytest.mark.parametrize("damage", ["tensor byte", "vocab byte", "truncated weights", "garbled config",
                                    "missing receipt"])
def test_a_damaged_conversion_is_rebuilt_from_the_cached_download(tiny: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture,
                                                                  damage: str) -> None:
    first = zoo.load("tiny", device="cpu", progress=False)
    want, conv = state(first), first.path
    originals = {name: (conv / name).read_bytes() for name in ("model.safetensors", "vocab.txt", "config.json")}
    weights = conv / "model.safetensors"
    if damage == "tensor byte":
        flip(weights, weights.stat().st_size - 7, keep_stamp=False)  # same size, new mtime
    elif damage == "vocab byte":
        flip(conv / "vocab.txt", originals["vocab.txt"].index(b"the") + 2, keep_stamp=False)
    elif damage == "truncated weights":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "garbled config":
        (conv / "config.json").write_bytes(b'{"vocab_size": 97, "hidd')
    else:
        (conv / "receipt.json").unlink()
    no_source(tiny, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        again = zoo.load("tiny", device="cpu", progress=False)
    assert "rebuilding it from the cached download" in caplog.text
    assert again.path == conv and same_state(state(again), want)
    assert {name: (conv / name).read_bytes() for name in originals} == originals
    assert again.tokenizer.convert_tokens_to_ids("the") == first.tokenizer.convert_tokens_to_ids("the")


def test_a_flip_that_keeps_size_and_mtime_is_found_by_verify_and_rebuilt(tiny: Path, capsys, monkeypatch) -> None:
    first = zoo.load("tiny", device="cpu", progress=False)
    want = state(first)
    weights = first.path / "model.safetensors"
    flip(weights, weights.stat().st_size - 7, keep_stamp=True)  # only a re-hash can see this
    code, out, err = run(capsys, "verify", "tiny")
    assert code == 6 and "no damage" not in out
    assert f"damaged: {weights}" in err and "conversions from the cached download" in err
    no_source(tiny, monkeypatch)
    again = zoo.load("tiny", device="cpu", progress=False)
    assert same_state(state(again), want)
    code, out, _ = run(capsys, "verify")
    assert code == 0 and "1 conversion(s)" in out and "no damage" in out


def test_a_load_that_fails_on_an_unchanged_stamp_rehashes_and_rebuilds(tiny: Path, monkeypatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    first = zoo.load("tiny", device="cpu", progress=False)
    want = state(first)
    flip(first.path / "model.safetensors", 9, keep_stamp=True)  # inside the safetensors JSON header
    no_source(tiny, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        again = zoo.load("tiny", device="cpu", progress=False)
    assert "is damaged" in caplog.text and same_state(state(again), want)


def test_snapshot_rot_that_keeps_the_stamp_is_caught_by_the_crc_and_rebuilt(tiny: Path, monkeypatch,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    reference = state(zoo.load(FIXTURE, device="cpu", progress=False))
    path = zoo.pull("tiny", progress=False)
    flip(path / DATA, 100, keep_stamp=True)  # tensor bytes; cache hits only stat
    no_source(tiny, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        loaded = zoo.load("tiny", device="cpu", progress=False)
    assert "damaged after it was verified" in caplog.text and "rebuilding it" in caplog.text
    assert same_state(state(loaded), reference)
    assert zoo.pull("tiny", progress=False) == path and (path / DATA).read_bytes() == release_files()[DATA]


def test_a_checkpoint_damaged_at_its_source_says_so(zoo_env: Path, tmp_path: Path, capsys) -> None:
    files = release_files()
    data = bytearray(files[DATA])
    data[100] ^= 0x01
    archive = tmp_path / "bad.zip"
    archive.write_bytes(release_zip({**files, DATA: bytes(data)}))
    write_tiny_manifest(zoo_env, "bad", [archive.as_uri()])
    with pytest.raises(IntegrityError, match="CRC32C") as info:
        zoo.load("bad", device="cpu", progress=False)
    assert "the published checkpoint itself is damaged" in str(info.value.hint)
    code, _, err = run(capsys, "run", "bad", "[MASK]", "-q")
    assert code == 6 and "published checkpoint itself is damaged" in err and "download again" not in err


# -------------------------------------------------------------------------------------------- 2: pins
@pytest.mark.parametrize("damage", ["flipped byte", "not a sha256", "unreadable"])
def test_a_damaged_pin_file_is_an_error_naming_it_never_a_fresh_start(zoo_env: Path, capsys, damage: str) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP)
        write_manifest(zoo_env, "tst", [source(url)])
        assert run(capsys, "pull", "tst", "-q")[0] == 0
        pin = cache.get_pin(url)
        assert pin is not None and pin.sha256 == sha256(ZIP)
        assert run(capsys, "cache", "rm", "tst")[0] == 0  # pins are kept
        raw = pin.path.read_bytes()
        if damage == "flipped byte":
            flip(pin.path, 0, keep_stamp=True)
        elif damage == "not a sha256":
            flip(pin.path, raw.index(pin.sha256.encode()), keep_stamp=True, mask=0x40)
        else:
            pin.path.unlink()
            pin.path.mkdir()
        damaged = pin.path.read_bytes() if pin.path.is_file() else None
        srv.add("/m.zip", OTHER, etag='"v2"')  # upstream changed: TOFU must still catch it
        srv.wait_idle()
        gets = len(srv.gets("/m.zip"))
        code, out, err = run(capsys, "pull", "tst", "-q")
        assert code == 6 and out == ""
        assert f"trust-on-first-use pin of {url} ({pin.path})" in err and f"rm '{pin.path}'" in err
        assert len(srv.gets("/m.zip")) == gets  # nothing was downloaded unverified
        assert (pin.path.read_bytes() if pin.path.is_file() else None) == damaged  # and the pin not rewritten
        assert cache.snapshots("tst") == []
        shutil.rmtree(pin.path) if pin.path.is_dir() else pin.path.unlink()  # the documented fix
        assert run(capsys, "pull", "tst", "-q")[0] == 0
        assert cache.get_pin(url).sha256 == sha256(OTHER)


# ------------------------------------------------------------------------------ 3: prune vs other work
def test_prune_skips_a_download_in_progress(zoo_env: Path, capsys) -> None:
    pause = Fault("pause", at=len(ZIP) // 2)
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP, faults=[pause])
        write_manifest(zoo_env, "tst", [source(url)])
        with ThreadPoolExecutor(1) as pool:
            pulling = pool.submit(zoo.pull, "tst", progress=False)
            assert pause.reached.wait(20)
            try:
                code, out, _ = run(capsys, "cache", "prune", "--max-size", "0")
                rows = json.loads(run(capsys, "cache", "ls", "--json")[1])
            finally:
                pause.release.set()
            path = pulling.result(timeout=30)
        srv.wait_idle()
        sent = srv.sent("/m.zip")
    assert code == 0 and "removed" not in out.replace("removed 0", "")
    assert [(r["kind"], r["name"]) for r in rows] == [("download", "tst")]
    assert files_of(path) == FILES and sent == len(ZIP)  # nothing was deleted and fetched again


CHILD_PULL = """
import sys
from zoo.resolver import pull
def progress(event):
    if event.stage == "extract":
        print("extracting", flush=True)
        sys.stdin.readline()  # the test acts here, then kills this process
pull("tst", progress=progress)
"""


def test_prune_keeps_what_a_running_pull_just_downloaded(zoo_env: Path, capsys, monkeypatch) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP)
        write_manifest(zoo_env, "tst", [source(url)])
        proc = child(CHILD_PULL)
        try:
            assert proc.stdout.readline().strip() == "extracting", proc.stderr.read()
            code, out, _ = run(capsys, "cache", "prune", "--max-size", "0")
        finally:
            proc.kill()
            proc.communicate()
        assert code == 0 and "removed download" not in out and "removed blob" not in out
        srv.wait_idle()
        gets = len(srv.gets("/m.zip"))
        monkeypatch.setenv("ZOO_OFFLINE", "1")  # the stored download is all there is
        code, out, err = run(capsys, "pull", "tst", "-q")
        assert code == 0, err
        assert files_of(Path(out.strip())) == FILES and len(srv.gets("/m.zip")) == gets
    assert cache.get_pin(url).sha256 == sha256(ZIP)


def load_and_prune_while_paused(capsys, pause_at: Callable[[zoo.ProgressEvent], bool]) -> tuple[int, str, zoo.Loaded]:
    """Load ``tiny`` in a thread whose progress callback holds it at the first event ``pause_at`` accepts, run
    ``zoo cache prune --max-size 0`` meanwhile, then let it finish: (prune's exit code, its stdout, the load)."""
    paused, go = threading.Event(), threading.Event()

    def progress(event: zoo.ProgressEvent) -> None:
        if pause_at(event) and not paused.is_set():
            paused.set()
            go.wait(30)

    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(zoo.load, "tiny", device="cpu", progress=progress)
        assert paused.wait(30)
        try:
            code, out, _ = run(capsys, "cache", "prune", "--max-size", "0")
        finally:
            go.set()
        loaded = loading.result(timeout=60)
    return code, out, loaded


def test_prune_does_not_pull_a_snapshot_from_under_a_conversion(tiny: Path, capsys) -> None:
    code, out, loaded = load_and_prune_while_paused(capsys, lambda event: event.stage == "convert")
    assert code == 0 and "removed snapshot" not in out
    assert [s.model for s in cache.snapshots()] == ["tiny"] and len(cache.conversions()) == 1
    assert loaded.fill_mask("今天[MASK]", top_k=1)[0][0]["token"]


def test_a_conversion_pruned_between_prepare_and_load_is_made_again(tiny: Path, capsys) -> None:
    zoo.load("tiny", device="cpu", progress=False)
    code, out, loaded = load_and_prune_while_paused(capsys, lambda event: event.message.startswith("loading on"))
    assert code == 0 and "removed conversion" in out
    assert loaded.path.is_dir() and loaded.fill_mask("今天[MASK]", top_k=1)


# ------------------------------------------------------------------------------------------ 4: leftovers
CHILD_CLI_PULL = "from zoo.cli import main; raise SystemExit(main(['pull', 'tst', '-q']))"


def _recorded(url: str) -> int:
    """Bytes the part state of ``url``'s download records as done (0 without a state)."""
    try:
        return sum(part[2] for part in json.loads((cache.partial_dir(url) / "state.json").read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_during_download(srv: FaultServer, pause: Fault, url: str, *, recorded: bool = False) -> int:
    """Start a pull in another process, kill -9 it while the server is mid-body (``recorded``: once its part state
    records what arrived); bytes it left on disk."""
    proc = child(CHILD_CLI_PULL)
    try:
        assert pause.reached.wait(20), proc.stderr.read() if proc.poll() is not None else ""
        data = cache.partial_dir(url) / "data"
        while not (data.exists() and data.stat().st_size >= pause.at) or (recorded and _recorded(url) < pause.at):
            assert proc.poll() is None, proc.communicate()
            threading.Event().wait(0.01)
    finally:
        proc.kill()
        proc.communicate()
        pause.release.set()
    srv.wait_idle()
    return data.stat().st_size


def test_an_aborted_download_of_unknown_size_is_listed_removed_and_pruned(zoo_env: Path, capsys) -> None:
    payload = os.urandom(600_000)
    with FaultServer() as srv:
        pause = Fault("pause", at=300_000)
        url = srv.add("/big.bin", payload, unknown_size=True, faults=[pause])
        write_manifest(zoo_env, "tst", [source(url, archive="none")])
        left = _kill_during_download(srv, pause, url)
        code, out, _ = run(capsys, "cache", "ls", "--json")
        rows = json.loads(out)
        assert [(r["kind"], r["name"], r["source"]) for r in rows] == [("download", "tst", url)]
        assert rows[0]["size"] >= left >= 300_000
        code, out, err = run(capsys, "cache", "ls")
        assert code == 0 and "empty" not in err and "download" in out
        code, out, _ = run(capsys, "cache", "rm", "tst")
        assert code == 0 and "1 download(s)" in out and not cache.partial_dir(url).exists()

        pause = Fault("pause", at=300_000)
        srv.routes["/big.bin"].faults = [pause]
        _kill_during_download(srv, pause, url)
        code, out, _ = run(capsys, "cache", "prune", "--max-size", "0")
        assert code == 0 and "removed download tst" in out and not cache.partial_dir(url).exists()


def test_a_download_that_cannot_resume_leaves_nothing_behind(zoo_env: Path) -> None:
    from zoo.fetch import FetchOptions
    from zoo.resolver import resolve

    with FaultServer() as srv:
        url = srv.add("/big.bin", os.urandom(300_000), unknown_size=True,
                      faults=[Fault("stall", at=100_000, seconds=3) for _ in range(3)])
        manifest = write_manifest(zoo_env, "tst", [source(url, archive="none")])
        with pytest.raises(zoo.NetworkError, match="gave up after 2 failed attempts") as info:
            resolve(manifest, options=FetchOptions(max_attempts=2, stall_timeout=0.3, backoff_base=0.01,
                                                   backoff_max=0.02))
        assert "what arrived so far is kept" not in str(info.value)
    assert not (cache.partial_dir(url) / "data").exists()
    assert [e.kind for e in cache.entries()] in ([], ["download"])
    assert cache.total_size() < 4096


def test_release_directory_conversions_are_listed_removed_and_pruned(tmp_path: Path, capsys, monkeypatch) -> None:
    release = tmp_path / "bert_release"
    shutil.copytree(FIXTURE, release)
    (release / "notes").mkdir()  # the user's own folder: rm removes the cache's entries, never the user's files
    (release / "notes" / "todo.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    zoo.load("./bert_release", device="cpu", progress=False)
    rows = json.loads(run(capsys, "cache", "ls", "--json")[1])
    assert [(r["kind"], r["name"]) for r in rows] == [("conversion", str(release.resolve()))]
    code, out, _ = run(capsys, "cache", "rm", "./bert_release")
    assert code == 0 and "1 conversion(s)" in out and cache.conversions() == []
    assert run(capsys, "cache", "rm", "./bert_release")[0] == 3
    assert (release / "notes" / "todo.txt").read_text() == "keep me"
    zoo.load(release, device="cpu", progress=False)
    code, out, _ = run(capsys, "cache", "prune", "--max-size", "0")
    assert code == 0 and f"removed conversion {release.resolve()}" in out and cache.conversions() == []


def _quarantine_one(zoo_env: Path, tmp_path: Path) -> None:
    """A pull whose download does not match its pin: the download is quarantined."""
    bad = tmp_path / "bad.zip"
    bad.write_bytes(ZIP)
    write_manifest(zoo_env, "wrong", [source(bad.as_uri(), sha="0" * 64)])
    with pytest.raises(IntegrityError):
        zoo.pull("wrong", progress=False)


def test_ls_accounts_for_every_file_and_prune_to_zero_keeps_only_pins(zoo_env: Path, tmp_path: Path, capsys,
                                                                     monkeypatch) -> None:
    from zoo.converters.modeldir import CONVERTER_VERSION

    register_tiny(zoo_env, tmp_path)
    zoo.load("tiny", device="cpu", progress=False)  # snapshot, blob, conversion, pin, lock files
    release = tmp_path / "rel"
    shutil.copytree(FIXTURE, release)
    zoo.load(release, device="cpu", progress=False)  # a conversion keyed by a path
    _quarantine_one(zoo_env, tmp_path)
    root = cache.home()
    leftovers = {
        root / "partial" / ("1" * 32) / "data": b"x" * 5000,  # an interrupted download without source.json
        root / "tmp" / f"{socket.gethostname()}-999999999-{'0' * 12}" / "w": b"x" * 100,  # a dead process's
        cache.converted_path("ab" * 32, CONVERTER_VERSION) / "w": b"half",  # a conversion without its marker
        root / "snapshots" / "tiny" / ("ef" * 8) / "w": b"extracted",  # a snapshot without its marker
        root / "snapshots" / "gone" / ("ef" * 8) / "w": b"extracted",  # ... of a model no longer registered
        root / "blobs" / "sha256" / sha256(b"orphan"): b"orphan",
    }
    for path, data in leftovers.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "partial" / ("2" * 32)).mkdir()  # an empty one
    old = cache.converted_path("cd" * 32, CONVERTER_VERSION - 1)  # an older converter's conversion
    staged = cache.staging_dir() / "out"
    staged.mkdir()
    (staged / "w").write_bytes(b"w")
    cache.commit_conversion(staged, old, origin="tiny", source="x", files={"w": cache.FileRecord(sha256(b"w"), 1)})
    shutil.rmtree(staged.parent)

    listed = [Path(p) for row in json.loads(run(capsys, "cache", "ls", "--json")[1]) for p in row["paths"]]
    for path in root.rglob("*"):
        if path.is_file() and path.parent.name not in ("pins", "locks") and not path.name.endswith(".json"):
            assert any(path == p or p in path.parents for p in listed), f"cache ls does not show {path}"
    code, _, _ = run(capsys, "cache", "prune", "--max-size", "0")
    assert code == 0
    remaining = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert remaining and all(p.startswith("pins/") for p in remaining), remaining
    code, _, err = run(capsys, "cache", "ls")
    assert code == 0 and "is empty" in err


def _leftovers(zoo_env: Path, tmp_path: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """A cache holding one of everything: (what a plain `zoo cache prune` must remove, what it must keep)."""
    from zoo.converters.modeldir import CONVERTER_VERSION

    done = tmp_path / "done.zip"
    done.write_bytes(OTHER)
    write_manifest(zoo_env, "done", [source(done.as_uri())])
    zoo.pull("done", progress=False)
    [snap] = cache.snapshots("done")
    conversions = {}
    for version in (CONVERTER_VERSION, CONVERTER_VERSION - 1):
        staged = cache.staging_dir() / "out"
        staged.mkdir()
        (staged / "w").write_bytes(b"w")
        path = cache.converted_path(f"{version:064x}", version)
        cache.commit_conversion(staged, path, origin="done", source="x", files={"w": cache.FileRecord(sha256(b"w"), 1)})
        shutil.rmtree(staged.parent)
        conversions[version] = path
    _quarantine_one(zoo_env, tmp_path)
    root = cache.home()
    journal = cache.partial_dir("https://example.org/journaled.zip")  # a pull killed after storing its download
    journal.mkdir(parents=True)
    (journal / "verified.json").write_text(json.dumps({"sha256": sha256(b"journaled")}))
    cache.blob_path(sha256(b"journaled")).write_bytes(b"journaled")
    gone = {
        "dead staging": root / "tmp" / f"{socket.gethostname()}-999999999-{'0' * 12}",
        "half conversion": cache.converted_path("ab" * 32, CONVERTER_VERSION),
        "older conversion": conversions[CONVERTER_VERSION - 1],
        "half snapshot": root / "snapshots" / "done" / ("ef" * 8),
        "orphan blob": cache.blob_path(sha256(b"orphan")),
        "download that cannot resume": root / "partial" / ("1" * 32),
        "empty download": root / "partial" / ("2" * 32),
        "quarantine": next((root / "quarantine").iterdir()),
    }
    for name in ("dead staging", "half conversion", "half snapshot", "download that cannot resume"):
        gone[name].mkdir(parents=True)
        (gone[name] / "data").write_bytes(b"x" * 100)
    gone["empty download"].mkdir()
    gone["orphan blob"].write_bytes(b"orphan")
    kept = {"snapshot": snap.path, "its blob": cache.blob_path(snap.sha256), "conversion": conversions[CONVERTER_VERSION],
            "live staging": cache.staging_dir(), "journal": journal, "journaled blob": cache.blob_path(sha256(b"journaled")),
            "pin": cache.get_pin(done.as_uri()).path}
    return gone, kept


def test_prune_without_arguments_removes_exactly_what_is_safe(zoo_env: Path, tmp_path: Path, capsys) -> None:
    """Issue 16: leftovers nothing will use go; a download that can resume, and anything a live process holds,
    stay; `--partials` also removes downloads that could resume."""
    with FaultServer() as srv:
        pause = Fault("pause", at=len(ZIP) // 2)
        url = srv.add("/m.zip", ZIP, faults=[pause])
        write_manifest(zoo_env, "tst", [source(url)])
        _kill_during_download(srv, pause, url, recorded=True)  # known size, ranges and an ETag: it can resume
        gone, kept = _leftovers(zoo_env, tmp_path)
        kept["resumable download"] = cache.partial_dir(url)
        held = cache.home() / "snapshots" / "tst" / "abc"  # a pull is extracting it right now
        held.mkdir(parents=True)
        with cache.lock(cache.snapshot_lock("tst", "abc")):
            code, out, err = run(capsys, "cache", "prune")
        assert code == 0, err
        assert [name for name, path in gone.items() if path.exists()] == []
        assert [name for name, path in kept.items() if not path.exists()] == []
        assert held.is_dir() and "removed download" in out and "removed blob" in out
        assert "kept 2 downloads that can resume" in err and "--partials" in err  # this one and the journaled one
        assert not list((cache.home() / "locks").glob("download-*.lock"))  # nobody holds them

        sent = srv.sent("/m.zip")
        code, out, _ = run(capsys, "pull", "tst", "-q")  # the kept download resumes
        assert code == 0 and files_of(Path(out.strip())) == FILES
        assert srv.sent("/m.zip") - sent <= len(ZIP) - pause.at

        pause = Fault("pause", at=len(ZIP) // 2)
        srv.routes["/m.zip"].faults = [pause]
        run(capsys, "cache", "rm", "tst")
        _kill_during_download(srv, pause, url)
    code, out, _ = run(capsys, "cache", "prune", "--partials")
    assert code == 0 and f"removed download tst ({url})" in out
    assert not cache.partial_dir(url).exists() and not kept["journal"].exists()
    assert not kept["journaled blob"].exists()  # its journal went with the partials: nothing names it now
    assert kept["snapshot"].is_dir() and kept["conversion"].is_dir() and kept["live staging"].is_dir()


def test_prune_keeps_a_download_another_process_holds(zoo_env: Path, capsys) -> None:
    url = "https://example.org/m.zip"
    work = cache.partial_dir(url)  # bytes that could not resume, but their pull is still running
    work.mkdir(parents=True)
    (work / "data").write_bytes(b"x" * 100)
    orphan = cache.blob_path(sha256(b"orphan"))
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan")
    with cache.lock(cache.download_lock(url)):
        code, out, _ = run(capsys, "cache", "prune", "--partials")
    assert code == 0 and work.is_dir() and orphan.exists()  # and a running pull may be about to reuse a blob
    assert "removed" not in out
    code, out, _ = run(capsys, "cache", "prune")
    assert code == 0 and not work.exists() and not orphan.exists()


CHILD_KILLED_AFTER_STORING = """
import os, signal
from zoo.resolver import pull
def progress(event):
    if event.stage == "extract":  # the download is verified and stored; the snapshot and pin are not there yet
        os.kill(os.getpid(), signal.SIGKILL)
pull("tst", progress=progress)
"""


def test_a_pull_killed_after_storing_its_download_is_finished_offline(zoo_env: Path, capsys, monkeypatch) -> None:
    with FaultServer() as srv:
        url = srv.add("/m.zip", ZIP)
        write_manifest(zoo_env, "tst", [source(url)])
        proc = child(CHILD_KILLED_AFTER_STORING)
        proc.communicate(timeout=60)
        assert proc.returncode == -9
        assert cache.snapshots("tst") == [] and cache.get_pin(url) is None
        srv.wait_idle()
        gets = len(srv.gets("/m.zip"))
        monkeypatch.setenv("ZOO_OFFLINE", "1")
        code, out, err = run(capsys, "pull", "tst", "-q")
        assert code == 0, err
        assert files_of(Path(out.strip())) == FILES and len(srv.gets("/m.zip")) == gets
    assert cache.get_pin(url).sha256 == sha256(ZIP) and not cache.partial_dir(url).exists()


# --------------------------------------------------------------------------- 12: the disk fills up converting
def test_the_disk_filling_up_during_a_conversion(small_disk, tmp_path: Path, monkeypatch, capsys) -> None:
    disk = small_disk(24 << 20)
    monkeypatch.setenv("ZOO_HOME", str(disk / "zoo"))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    register_tiny(manifests, tmp_path)
    zoo.pull("tiny", progress=False)
    filler: list[Path] = []

    def another_process_fills_the_disk(event: zoo.ProgressEvent) -> None:
        if event.stage == "convert" and not filler:
            filler.append(fill(disk, leave=8 << 10))

    with pytest.raises(DiskSpaceError) as info:
        zoo.load("tiny", device="cpu", progress=another_process_fills_the_disk)
    assert info.value.exit_code == 10 and "the disk filled up while" in info.value.message
    assert "free some space" in str(info.value.hint)
    staging = cache.home() / "tmp"
    assert not staging.exists() or list(staging.iterdir()) == []
    assert cache.conversions() == [] and not any((cache.home() / "converted").glob("*-c*/"))
    code, _, err = run(capsys, "run", "tiny", "[MASK]", "-q")  # still full: the CLI says the same, exit 10
    assert code == 10 and "the disk filled up" in err and "Traceback" not in err
    filler[0].unlink()
    assert zoo.load("tiny", device="cpu", progress=False).fill_mask("今天[MASK]", top_k=1)


def test_a_snapshot_without_its_marker_is_removed_with_its_model(tiny: Path, capsys) -> None:
    zoo.pull("tiny", progress=False)
    [snap] = cache.snapshots("tiny")
    snap.invalidate()  # damaged: its marker went; the directory stays until the next pull or rm
    half = [row for row in json.loads(run(capsys, "cache", "ls", "--json")[1]) if row["kind"] == "staging"]
    assert [(row["name"], row["source"]) for row in half] == [("tiny", "incomplete snapshot")]
    code, _, _ = run(capsys, "cache", "rm", "tiny")
    assert code == 0 and not snap.path.exists() and not snap.path.parent.exists()
