"""zoo mirror: what zoo asks huggingface_hub to do (recorded, not sent), and the git layout for self-hosted mirrors.

The Hub itself cannot be reached from tests, so :class:`RecordingHfApi` stands in for ``huggingface_hub.HfApi``:
it records every call and keeps the files "uploaded" so far, answering ``get_paths_info`` with real
``RepoFile`` objects built from the JSON the Hub returns (LFS sha256 for weights, git blob id otherwise).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

import zoo
from zoo.cli import main
from zoo.config import ModelConfig
from zoo.errors import UsageError
from zoo.hub import mirror
from zoo.hub.mirroring import git_blob_id, is_lfs, write_git_repo

FIXTURES = Path(__file__).parent / "fixtures" / "tf"


def write_manifest(directory: Path, name: str, fixture: str = "albert_google") -> Path:
    """A user manifest for a TF fixture, served as a file:// tar.gz; returns the archive."""
    src = FIXTURES / fixture
    archive = directory / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(src.iterdir()):
            if f.suffix != ".npz":
                tar.add(f, arcname=f.name)
    upstream = json.loads(next(src.glob("*config*.json")).read_text())
    arch = {"bert": "bert", "albert_google": "albert"}.get(fixture, "albert-brightmart")
    config = {k: v for k, v in ModelConfig.from_upstream(upstream, arch).to_dict().items() if k != "architecture"}
    scheme = {"bert": "google-bert", "albert_google": "google-albert"}.get(fixture, "brightmart-albert")
    checkpoint = next(src.glob("*.index")).name.removesuffix(".index")
    vocab = next(src.glob("vocab*.txt")).name
    manifest = {
        "schema": 1, "name": name, "family": "bert" if arch == "bert" else "albert", "language": "zh",
        "description": f"tiny {fixture} test fixture", "license": "Apache-2.0",
        "homepage": "https://example.invalid/tiny", "citation": "@misc{tiny, title={Tiny}}", "config": config,
        "tokenizer": {"lowercase": True},
        "sources": [{"url": archive.as_uri(), "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                     "archive": "tar.gz", "format": "tf-checkpoint", "scheme": scheme, "checkpoint": checkpoint,
                     "vocab": vocab}],
    }
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(manifest), encoding="utf-8")
    return archive


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A registered tiny ALBERT: (name, sha256 of its download)."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    archive = write_manifest(manifests, "tiny_albert")
    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(manifests))
    zoo.registry.clear_cache()
    return "tiny_albert", hashlib.sha256(archive.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------ the Hub (recorded)
class RecordingHfApi:
    """A stand-in for ``huggingface_hub.HfApi`` that records calls and remembers the files committed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.repos: dict[str, dict[str, bytes]] = {}

    def create_repo(self, repo_id: str, **kwargs) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        self.repos.setdefault(repo_id, {})
        return f"https://huggingface.co/{repo_id}"

    def get_paths_info(self, repo_id: str, paths: list[str], **kwargs) -> list:
        from huggingface_hub.errors import RepositoryNotFoundError
        from huggingface_hub.hf_api import RepoFile

        self.calls.append(("get_paths_info", {"repo_id": repo_id, "paths": list(paths), **kwargs}))
        if repo_id not in self.repos:
            raise RepositoryNotFoundError(f"404 {repo_id}", response=_response(404, f"/api/models/{repo_id}"))
        found = []
        for path in paths:
            data = self.repos[repo_id].get(path)
            if data is None:
                continue
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
            if is_lfs(path):  # as the Hub reports LFS files: sha256 of the content
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            found.append(RepoFile(**entry))
        return found

    def create_commit(self, repo_id: str, operations, **kwargs):
        from huggingface_hub import CommitOperationAdd
        from huggingface_hub.hf_api import CommitInfo

        ops = list(operations)
        assert all(isinstance(op, CommitOperationAdd) for op in ops)
        self.calls.append(("create_commit", {"repo_id": repo_id, "paths": [op.path_in_repo for op in ops], **kwargs}))
        for op in ops:
            self.repos[repo_id][op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()
        oid = hashlib.sha1(repr(self.calls).encode()).hexdigest()
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
                          commit_message=kwargs["commit_message"], commit_description="", oid=oid)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def _response(status: int, path: str):
    """An HTTP response of the client library huggingface_hub uses (httpx or its successor)."""
    import importlib

    from huggingface_hub import errors

    http = importlib.import_module(errors.Response.__module__.split(".")[0])
    return http.Response(status, request=http.Request("GET", f"https://huggingface.co{path}"))


EXPORTED = ["README.md", "config.json", "model.safetensors", "receipt.json", "special_tokens_map.json",
            "tokenizer_config.json",
            "vocab.txt"]


def test_first_mirror_creates_the_repo_and_uploads_everything_in_one_commit(tiny) -> None:
    name, source_sha = tiny
    api = RecordingHfApi()
    [result] = mirror(name, "hf://acme/tiny-albert", private=True, api=api)
    assert api.names() == ["create_repo", "get_paths_info", "create_commit"]
    assert api.calls[0][1] == {"repo_id": "acme/tiny-albert", "repo_type": "model", "private": True, "exist_ok": True}
    commit = api.calls[2][1]
    assert sorted(commit["paths"]) == EXPORTED
    assert commit["commit_message"] == f"zoo {zoo.__version__}: {name} (source sha256 {source_sha})"
    assert commit["revision"] == "main"
    assert result.url == f"https://huggingface.co/acme/tiny-albert/commit/{result.commit}"
    assert {f.action for f in result.files} == {"upload"}
    uploaded = api.repos["acme/tiny-albert"]["model.safetensors"]
    assert {f.path: f.sha256 for f in result.files}["model.safetensors"] == hashlib.sha256(uploaded).hexdigest()


def test_unchanged_files_are_skipped_and_no_empty_commit_is_made(tiny) -> None:
    name, _ = tiny
    api = RecordingHfApi()
    mirror(name, "hf://acme/tiny-albert", api=api)
    api.calls.clear()
    [again] = mirror(name, "hf://acme/tiny-albert", api=api)
    assert api.names() == ["create_repo", "get_paths_info"]  # nothing to commit
    assert again.commit is None and not again.changed

    # someone edited the card and the config on the Hub: only those two go up again
    api.repos["acme/tiny-albert"]["README.md"] = b"edited\n"
    api.repos["acme/tiny-albert"]["config.json"] = b"{}\n"
    api.calls.clear()
    [third] = mirror(name, "hf://acme/tiny-albert", api=api)
    assert api.names() == ["create_repo", "get_paths_info", "create_commit"]
    assert sorted(api.calls[2][1]["paths"]) == ["README.md", "config.json"]
    assert {f.path for f in third.files if f.action == "skip"} == set(EXPORTED) - {"README.md", "config.json"}


def test_changed_weights_are_detected_by_their_lfs_sha256(tiny) -> None:
    name, _ = tiny
    api = RecordingHfApi()
    mirror(name, "hf://acme/tiny-albert", api=api)
    weights = api.repos["acme/tiny-albert"]["model.safetensors"]
    api.repos["acme/tiny-albert"]["model.safetensors"] = weights[:-1] + bytes([weights[-1] ^ 1])  # same size
    api.calls.clear()
    mirror(name, "hf://acme/tiny-albert", api=api)
    assert api.calls[-1][0] == "create_commit" and api.calls[-1][1]["paths"] == ["model.safetensors"]


def test_dry_run_sends_nothing(tiny) -> None:
    name, _ = tiny
    api = RecordingHfApi()
    [result] = mirror(name, "hf://acme/new-repo", dry_run=True, api=api)
    assert api.names() == ["get_paths_info"]  # read-only; the repo does not exist yet
    assert result.dry_run and result.commit is None and {f.action for f in result.files} == {"upload"}


def test_cli_prints_the_commit_url(tiny, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import huggingface_hub

    name, _ = tiny
    api = RecordingHfApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kwargs: api)
    assert main(["mirror", name, "--to", "hf://acme/tiny-albert"]) == 0
    url = capsys.readouterr().out.strip().split("\t")[1]
    assert url.startswith("https://huggingface.co/acme/tiny-albert/commit/") and api.names()[-1] == "create_commit"


def test_targets_for_several_models(tiny) -> None:
    from zoo.hub.mirroring import plan_targets

    assert plan_targets(["a", "b"], None, repo_prefix="acme/zoo-") == [("a", "hf://acme/zoo-a"),
                                                                      ("b", "hf://acme/zoo-b")]
    with pytest.raises(UsageError, match="cannot share the repo"):
        plan_targets(["a", "b"], "hf://acme/one")
    with pytest.raises(UsageError, match="expected hf://org/repo"):
        plan_targets(["a"], "hf://no-org")
    with pytest.raises(UsageError, match="expected hf://org/repo"):
        plan_targets(["a"], "hf://acme/one\n")  # the whole id must match, not all but a trailing newline
    assert main(["mirror", "--to", "hf://acme/x"]) == 2  # no names, no --all


# ----------------------------------------------------------------------------------- git (self-hosted)
def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_git_mirror_layout_lfs_objects_and_idempotence(tiny, tmp_path: Path) -> None:
    name, source_sha = tiny
    root = tmp_path / "mirror"
    [first] = mirror(name, root)
    repo = root / "models" / "zoo" / name
    assert first.commit == git(repo, "rev-parse", "refs/heads/main").strip()
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == sorted([".gitattributes", *EXPORTED])
    assert f"source sha256 {source_sha}" in git(repo, "log", "-1", "--format=%s")
    pointer = git(repo, "show", "main:model.safetensors")
    sha = pointer.split("oid sha256:")[1].split()[0]
    obj = repo / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == sha
    assert int(pointer.split("size ")[1]) == obj.stat().st_size
    assert "*.safetensors filter=lfs" in git(repo, "show", "main:.gitattributes")

    [second] = mirror(name, root)  # nothing changed: no new commit
    assert second.commit is None and not second.changed
    assert git(repo, "rev-list", "--count", "main").strip() == "1"
    assert git(repo, "status", "--porcelain") == ""


def test_git_mirror_commits_once_per_update_and_removes_stale_files(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text("{}\n")
    (folder / "old.txt").write_text("old\n")
    repo = tmp_path / "models" / "zoo" / "m"
    write_git_repo(folder, repo, message="one")
    (folder / "old.txt").unlink()
    (folder / "config.json").write_text('{"a": 1}\n')
    result = write_git_repo(folder, repo, message="two")
    assert {(f.path, f.action) for f in result.files} == {("config.json", "upload"), ("old.txt", "delete")}
    assert git(repo, "log", "--format=%s", "main").split() == ["two", "one"]
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == [".gitattributes", "config.json"]
    dry = write_git_repo(folder, tmp_path / "models" / "zoo" / "fresh", message="x", dry_run=True)
    assert dry.changed and not (tmp_path / "models" / "zoo" / "fresh").exists()
