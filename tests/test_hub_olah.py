"""End to end through a real Hub-compatible server: olah serving ``zoo mirror --to DIR`` in local-mirror mode.

``zoo mirror`` writes git repositories; olah (offline, 127.0.0.1) serves them with the Hub's HTTP API; transformers
and zoo's ``hf:`` sources download through ``HF_ENDPOINT``. References: the TensorFlow outputs recorded with
the fixture (tests/fixtures/tf/*/reference.npz) and zoo's own tokenizer for token ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from servers.olah import OLAH, serve_mirror

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pytest.importorskip("transformers")

import zoo
from zoo import cache
from zoo.cli import main
from zoo.config import ModelConfig
from zoo.fetch import hf
from zoo.hub.mirroring import write_git_repo
from zoo.weights import prepare

FIXTURE = Path(__file__).parent / "fixtures" / "tf" / "albert_google"
ATOL = 1e-5

pytestmark = pytest.mark.skipif(not OLAH.exists() or shutil.which("git") is None,
                                reason="needs olah (pip install olah) and git")


def _config() -> dict:
    upstream = json.loads((FIXTURE / "albert_config.json").read_text())
    return {k: v for k, v in ModelConfig.from_upstream(upstream, "albert").to_dict().items() if k != "architecture"}


def _manifest(directory: Path, name: str, source: dict) -> None:
    data = {"schema": 1, "name": name, "family": "albert", "language": "zh", "description": f"{name} (test)",
            "license": "Apache-2.0", "config": _config(), "tokenizer": {"lowercase": True}, "sources": [source]}
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory):
    """olah serving a mirror that ``zoo mirror`` wrote for a tiny Google ALBERT; yields a namespace."""
    tmp = tmp_path_factory.mktemp("hub")
    manifests, root = tmp / "manifests", tmp / "mirror"
    manifests.mkdir()
    archive = shutil.make_archive(str(tmp / "tiny"), "gztar", FIXTURE)
    _manifest(manifests, "tiny_albert", {
        "url": Path(archive).as_uri(), "sha256": hashlib.sha256(Path(archive).read_bytes()).hexdigest(),
        "archive": "tar.gz", "format": "tf-checkpoint", "scheme": "google-albert", "checkpoint": "model.ckpt-best",
        "vocab": "vocab_chinese.txt"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(tmp / "zoo_home"))
        mp.setenv("ZOO_MANIFEST_PATH", str(manifests))
        zoo.registry.clear_cache()
        assert main(["mirror", "tiny_albert", "--to", str(root)]) == 0
        zoo.registry.clear_cache()
    repo = root / "models" / "zoo" / "tiny_albert"
    commit = subprocess.run(["git", "rev-parse", "main"], cwd=repo, capture_output=True, text=True,
                            check=True).stdout.strip()
    with serve_mirror(root, tmp, probe="zoo/tiny_albert") as endpoint:
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (repo / ".git" / "lfs" / "objects").rglob("*") if p.is_file()}
        yield type("Hub", (), {"endpoint": endpoint, "root": root, "repo": repo, "commit": commit, "tmp": tmp,
                               "lfs": files, "manifests": manifests})


@pytest.fixture
def via_hub(hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point huggingface_hub (already imported) and zoo at olah, as HF_ENDPOINT does for a fresh process."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(tmp_path / "manifests"))
    (tmp_path / "manifests").mkdir()
    zoo.registry.clear_cache()
    return hub


def _reference():
    ref = np.load(FIXTURE / "reference.npz")
    ids, mask, types = (torch.from_numpy(ref[k]).long() for k in ("input_ids", "input_mask", "token_type_ids"))
    return ref, ids, mask, types


def _check_zoo_model(directory: Path) -> None:
    """zoo.load(directory) reproduces TensorFlow's outputs."""
    ref, ids, mask, types = _reference()
    loaded = zoo.load(directory, device="cpu", heads="pretraining")
    with torch.no_grad():
        out = loaded.model(ids, attention_mask=mask, token_type_ids=types)
    real = mask.bool()
    assert float((out.last_hidden_state[real] - torch.from_numpy(ref["sequence_output"])[real]).abs().max()) <= ATOL
    assert float((out.mlm_logits[real] - torch.from_numpy(ref["mlm_logits"])[real]).abs().max()) <= ATOL


def test_transformers_loads_the_mirrored_repo_and_matches_zoo(via_hub) -> None:
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    ref, ids, mask, types = _reference()
    real = mask.bool()
    ours = zoo.load(FIXTURE, device="cpu", heads="mlm")
    with torch.no_grad():
        zoo_out = ours.model(ids, attention_mask=mask, token_type_ids=types)
        base = AutoModel.from_pretrained("zoo/tiny_albert").eval()(
            input_ids=ids, attention_mask=mask, token_type_ids=types)
        mlm = AutoModelForMaskedLM.from_pretrained("zoo/tiny_albert", revision=via_hub.commit).eval()(
            input_ids=ids, attention_mask=mask, token_type_ids=types)
    for theirs, mine in ((base.last_hidden_state, zoo_out.last_hidden_state), (mlm.logits, zoo_out.mlm_logits)):
        assert float((theirs[real] - mine[real]).abs().max()) <= ATOL
    assert float((base.pooler_output - torch.from_numpy(ref["pooled_output"])).abs().max()) <= ATOL

    # olah 0.5.4 answers a tree listing of a missing folder in a local mirror with 401 RepoNotFound (the Hub: 404),
    # which breaks AutoTokenizer's probe for additional_chat_templates/. So the tokenizer files come through
    # olah with snapshot_download and AutoTokenizer reads them from the Hub cache by repo id.
    from huggingface_hub import snapshot_download

    snapshot_download("zoo/tiny_albert")
    tokenizer = AutoTokenizer.from_pretrained("zoo/tiny_albert", local_files_only=True)
    assert type(tokenizer).__name__ == "BertTokenizer"
    texts = ["今天天气很好。", "The models 很好", "zoo，今天？", ("你好", "天气")]
    for text in texts:
        args = text if isinstance(text, tuple) else (text,)
        assert tokenizer(*args)["input_ids"] == ours.tokenizer(*args)["input_ids"], text


def test_pull_of_an_hf_source_downloads_verifies_and_loads(via_hub, tmp_path: Path, capsys) -> None:
    pins = {rel: {"sha256": hashlib.sha256((via_hub.repo / rel).read_bytes()).hexdigest()}
            for rel in ("config.json", "vocab.txt", "tokenizer_config.json")}
    [weights_sha] = via_hub.lfs  # model.safetensors is an LFS object in the mirror
    pins["model.safetensors"] = {"sha256": weights_sha}
    _manifest(tmp_path / "manifests", "tiny_albert_hf", {
        "hf": "zoo/tiny_albert", "revision": via_hub.commit, "format": "safetensors",
        "checkpoint": "model.safetensors", "vocab": "vocab.txt", "files": pins})
    zoo.registry.clear_cache()
    assert main(["pull", "tiny_albert_hf", "-q"]) == 0
    snapshot = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(p.name for p in snapshot.iterdir()) == sorted(pins)
    manifest = zoo.get_manifest("tiny_albert_hf")
    converted = prepare("tiny_albert_hf").path
    assert converted.parent == cache.home() / "converted"
    _check_zoo_model(converted)
    receipt = json.loads((converted / "receipt.json").read_text())
    assert receipt["source_sha256"] == hf.combined_sha256({rel: pin["sha256"] for rel, pin in pins.items()})
    assert zoo.load("tiny_albert_hf", device="cpu").config == manifest.config

    from zoo.hub import export  # an hf source exports again, its card naming the repo, commit and combined hash

    card = (export("tiny_albert_hf", tmp_path / "again").path / "README.md").read_text()
    assert f"hf:zoo/tiny_albert@{via_hub.commit}" in card and receipt["source_sha256"] in card


def test_pytorch_format_is_read_once_with_weights_only_and_tofu_pinned(via_hub, tmp_path: Path, monkeypatch,
                                                                        caplog) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "pt"
    folder.mkdir()
    torch.save(load_file(str(via_hub.repo / ".git" / "lfs" / "objects" / _lfs_path(via_hub))),
               folder / "pytorch_model.bin")
    for rel in ("config.json", "vocab.txt"):
        shutil.copy(via_hub.repo / rel, folder / rel)
    write_git_repo(folder, via_hub.root / "models" / "zoo" / "tiny_albert_pt", message="pytorch weights")
    _manifest(tmp_path / "manifests", "tiny_albert_pt", {
        "hf": "zoo/tiny_albert_pt", "revision": "main", "format": "pytorch",
        "checkpoint": "pytorch_model.bin", "vocab": "vocab.txt"})
    zoo.registry.clear_cache()
    manifest = zoo.get_manifest("tiny_albert_pt")
    source = manifest.sources[0]

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    with caplog.at_level(logging.WARNING, logger="zoo"):
        snapshot = zoo.resolver.resolve(manifest).path
    assert any("not a 40-hex commit" in r.getMessage() for r in caplog.records)
    first = prepare(manifest).path
    again = prepare(manifest).path
    assert first == again and calls == [{"map_location": "cpu", "weights_only": True}]
    assert snapshot.is_dir()
    _check_zoo_model(first)
    pin = cache.get_pin(f"{source.label}/pytorch_model.bin")  # hf pins are kept per file (docs)
    assert pin is not None and pin.sha256 == hashlib.sha256((folder / "pytorch_model.bin").read_bytes()).hexdigest()

    # the branch moves to different bytes: the trust-on-first-use pin catches it
    (folder / "vocab.txt").write_text((folder / "vocab.txt").read_text().replace("[MASK]", "[MASQ]"))
    write_git_repo(folder, via_hub.root / "models" / "zoo" / "tiny_albert_pt", message="changed")
    cache.remove("tiny_albert_pt")
    with pytest.raises(zoo.IntegrityError, match="vocab.txt changed upstream"):
        zoo.resolver.resolve(manifest)


def _lfs_path(hub) -> str:
    [sha] = hub.lfs
    return f"{sha[:2]}/{sha[2:4]}/{sha}"


def test_a_tampered_file_in_the_repo_is_caught(via_hub, tmp_path: Path, capsys) -> None:
    tampered = via_hub.root / "models" / "zoo" / "tiny_albert_tampered"
    shutil.copytree(via_hub.repo, tampered)
    obj = tampered / ".git" / "lfs" / "objects" / _lfs_path(via_hub)
    data = bytearray(obj.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: same size, same pointer, different bytes
    obj.write_bytes(bytes(data))
    [weights_sha] = via_hub.lfs
    _manifest(tmp_path / "manifests", "tiny_albert_tampered", {
        "hf": "zoo/tiny_albert_tampered", "revision": via_hub.commit, "format": "safetensors",
        "checkpoint": "model.safetensors", "vocab": "vocab.txt",
        "files": {"model.safetensors": {"sha256": weights_sha}}})
    zoo.registry.clear_cache()
    assert main(["pull", "tiny_albert_tampered", "-q"]) == 6
    err = capsys.readouterr().err
    assert "model.safetensors" in err and f"expected {weights_sha}" in err.replace("\n", "")
    assert not cache.snapshots("tiny_albert_tampered")
    assert any((cache.home() / "quarantine").iterdir())
