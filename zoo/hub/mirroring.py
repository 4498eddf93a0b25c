"""``zoo mirror``: put exported models on the Hugging Face Hub or into a self-hosted mirror's git repositories.

Two targets:

``hf://org/repo``
    huggingface_hub's commit API: the repo is created if needed, files whose sha256 already matches the
    remote (the LFS sha256 of large files, the git blob id of small ones) are skipped, and everything else goes
    up in **one commit per model** whose message names zoo's version and the source hash.
a directory ``DIR``
    a git repository per model at ``DIR/models/<org>/<name>`` on branch ``main``, weights stored as git-lfs
    objects (``.git/lfs/objects/``) behind pointer files, like a clone of a Hub repo. This is what
    olah serves in local-mirror mode (``mirrors-path = ["DIR"]``). One commit per update; none when nothing
    changed.

Every model is exported first (:func:`zoo.hub.exporting.export`) into a scratch directory; the export's record
(its provenance) names the source hash in the commit message.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import cache
from zoo._fs import sha256_file
from zoo._version import __version__
from zoo.converters.modeldir import RECEIPT, output_records, read_receipt
from zoo.errors import NetworkError, UsageError, ZooError, first_line
from zoo.progress import Progress, ProgressCallback, reporting
from zoo.registry import Manifest
from zoo.weights import Model, prepare

if TYPE_CHECKING:
    from zoo.hub.exporting import Exported

log = logging.getLogger("zoo.hub")

HF_PREFIX = "hf://"
#: Files stored with git-lfs (as the Hub's default .gitattributes does for weights).
LFS_PATTERNS = ("*.safetensors", "*.bin")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
_REPO_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_COMMITTER = {"GIT_AUTHOR_NAME": "zoo", "GIT_AUTHOR_EMAIL": "zoo@localhost",
              "GIT_COMMITTER_NAME": "zoo", "GIT_COMMITTER_EMAIL": "zoo@localhost"}


@dataclasses.dataclass(frozen=True)
class FileAction:
    """One file of an export and what the mirror does with it: ``upload``, ``skip`` (unchanged) or ``delete``."""

    path: str
    size: int
    sha256: str
    action: str


@dataclasses.dataclass(frozen=True)
class Mirrored:
    """The outcome for one model."""

    name: str
    target: str  # hf://org/repo or the git repository's path
    files: tuple[FileAction, ...]
    commit: str | None  # the new commit's id; None when nothing changed or in a dry run
    url: str | None  # the commit URL on the Hub
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        return any(f.action != "skip" for f in self.files)


# -------------------------------------------------------------------------------------------- public API
def mirror(models: Model | Sequence[Model], to: str | os.PathLike[str] | None = None, *,
           repo_prefix: str | None = None, org: str = "zoo", private: bool = False, dry_run: bool = False,
           source: int | None = None, offline: bool | None = None, manifests: Sequence[str | os.PathLike[str]] = (),
           progress: Progress = None, api: Any = None,
           on_model: Callable[[Mirrored], None] | None = None) -> list[Mirrored]:
    """Export each model — a registry name, a :class:`~zoo.registry.Manifest` or a directory (as
    :func:`zoo.load` takes them) — and mirror it.

    ``to`` is ``hf://org/repo`` (one model), or a directory; ``repo_prefix="org/"`` mirrors each model to the Hub
    repo ``org/<name>``. ``org`` names the directory level of a local mirror. ``api`` replaces
    ``huggingface_hub.HfApi()`` (tests pass a recording stand-in). ``on_model`` is called after each model.
    Returns what happened, per model.
    """
    if isinstance(models, (str, os.PathLike, Manifest)):
        models = [models]
    models = list(models)
    if not models:
        raise UsageError("no models to mirror", hint="name one or more models, or use --all")
    targets = plan_targets(models, to, repo_prefix=repo_prefix, org=org)
    if any(str(target).startswith(HF_PREFIX) for _, target in targets):
        api = api if api is not None else _hf_api()
        _check_hub(api)  # before exporting anything (minutes for a large model): a dry run needs the Hub too
    results = []
    with reporting(progress) as emit:
        for model, target in targets:
            result = mirror_one(model, target, private=private, dry_run=dry_run, source=source, offline=offline,
                                manifests=manifests, progress=emit, api=api)
            results.append(result)
            if on_model is not None:
                on_model(result)
    return results


def model_name(model: Model) -> str:
    """The name a model is mirrored under: its registry name, or its directory's name."""
    if isinstance(model, Manifest):
        return model.name
    return Path(model).name if isinstance(model, os.PathLike) or "/" in str(model) else str(model)


def plan_targets(models: Sequence[Model], to: str | os.PathLike[str] | None, *,
                 repo_prefix: str | None = None, org: str = "zoo") -> list[tuple[Model, str | Path]]:
    """``(model, target)`` pairs: ``hf://org/repo`` strings or git repository paths. Validates the options."""
    names = [model_name(m) for m in models]
    if repo_prefix is not None:
        if to is not None and str(to) != HF_PREFIX:
            raise UsageError("--repo-prefix and --to are exclusive", hint="use --to hf://org/repo for one model")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]*", repo_prefix):
            raise UsageError(f"--repo-prefix expects 'org/' or 'org/prefix-', got {repo_prefix!r}")
        return [(model, f"{HF_PREFIX}{repo_prefix}{name}") for model, name in zip(models, names)]
    if to is None:
        raise UsageError("no target", hint="use --to hf://org/repo, --repo-prefix org/, or --to DIR")
    to = str(to)
    if to.startswith(HF_PREFIX):
        repo_id = to[len(HF_PREFIX):].strip("/")
        if not _REPO_ID_RE.fullmatch(repo_id):
            raise UsageError(f"expected hf://org/repo, got {to!r}")
        if len(names) > 1:
            raise UsageError(f"{len(names)} models cannot share the repo {repo_id}",
                             hint="use --repo-prefix org/ to mirror each model to org/<name>")
        return [(models[0], to)]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", org):
        raise UsageError(f"--org expects a Hub-style name, got {org!r}")
    root = Path(to).expanduser()
    return [(model, root / "models" / org / name) for model, name in zip(models, names)]


def mirror_one(model: Model, target: str | Path, *, private: bool = False, dry_run: bool = False,
               source: int | None = None, offline: bool | None = None,
               manifests: Sequence[str | os.PathLike[str]] = (), progress: ProgressCallback | None = None,
               api: Any = None) -> Mirrored:
    """Export one model and send it to ``target`` (see :func:`plan_targets`)."""
    from zoo.hub.exporting import weights_of, write_export

    name = model_name(model)
    repo_id = str(target)[len(HF_PREFIX):] if str(target).startswith(HF_PREFIX) else _hub_style_id(Path(target))
    scratch = cache.staging_dir()
    try:
        prepared = prepare(model, source=source, offline=offline, manifests=manifests, progress=progress)
        exported = write_export(weights_of(prepared, manifests), scratch / "export", repo_id=repo_id)
        message = commit_message(name, exported)
        if str(target).startswith(HF_PREFIX):
            return push_to_hub(exported.path, repo_id, message=message, name=name, private=private,
                               dry_run=dry_run, api=api)
        return write_git_repo(exported.path, Path(target), message=message, name=name, dry_run=dry_run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def commit_message(name: str, exported: Exported) -> str:
    """``zoo 0.2.0: albert_base_zh (source sha256 …)``, from the export's provenance."""
    sha = exported.provenance.source_sha256
    source = f"source sha256 {sha}" if sha else "local source"
    return f"zoo {__version__}: {name} ({source})"


def _hub_style_id(repo: Path) -> str:
    return f"{repo.parent.name}/{repo.name}"


# ------------------------------------------------------------------------------------------------ hashes
def git_blob_id(data: bytes) -> str:
    """The id git gives a blob with these bytes (the Hub reports it for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs(path: str) -> bool:
    return any(fnmatch.fnmatch(Path(path).name, p) for p in LFS_PATTERNS)


def _local_files(folder: Path) -> dict[str, tuple[str, int]]:
    """``{path: (sha256, size)}`` of every file in ``folder``. An export's receipt records every other file's
    sha256 and size (hashed while it was written), so only the receipt itself is hashed — when the folder holds
    exactly the files it lists, at their recorded sizes; any other folder is hashed whole."""
    paths = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    try:
        receipt = read_receipt(folder)
        recorded = {rel: (r.sha256, r.size) for rel, r in output_records(receipt).items()} \
            if receipt is not None else None
    except ZooError:  # not readable as a receipt: this is no export of zoo's
        recorded = None
    if recorded is not None and set(paths) == {*recorded, RECEIPT} \
            and all(paths[rel].stat().st_size == size for rel, (_, size) in recorded.items()):
        recorded[RECEIPT] = sha256_file(paths[RECEIPT])
        return {rel: recorded[rel] for rel in paths}
    return {rel: sha256_file(path) for rel, path in paths.items()}


# --------------------------------------------------------------------------------------------------- Hub
def push_to_hub(folder: Path, repo_id: str, *, message: str, name: str | None = None, private: bool = False,
                dry_run: bool = False, api: Any = None) -> Mirrored:
    """Upload ``folder`` to the Hub repo ``repo_id`` in one commit, skipping files the remote already has."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    api = api if api is not None else _hf_api()
    local = _local_files(folder)
    try:
        if not dry_run:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        try:
            remote = {info.path: info for info in api.get_paths_info(repo_id, sorted(local), revision="main")}
        except (RepositoryNotFoundError, RevisionNotFoundError):
            remote = {}  # a dry run against a repo that does not exist yet, or a repo without commits
        actions = []
        for rel, (sha, size) in local.items():
            info = remote.get(rel)
            same = info is not None and (
                (getattr(info, "lfs", None) is not None and info.lfs.sha256 == sha)
                or (getattr(info, "lfs", None) is None and info.blob_id == git_blob_id((folder / rel).read_bytes())))
            actions.append(FileAction(rel, size, sha, "skip" if same else "upload"))
        uploads = [a for a in actions if a.action == "upload"]
        result = Mirrored(name or repo_id, f"{HF_PREFIX}{repo_id}", tuple(actions), None, None, dry_run)
        if dry_run or not uploads:
            if not uploads:
                log.info("%s: already up to date", repo_id)
            return result
        operations = [CommitOperationAdd(path_in_repo=a.path, path_or_fileobj=str(folder / a.path)) for a in uploads]
        description = "\n".join(f"{a.path}: sha256 {a.sha256}" for a in actions)
        info = api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                                 repo_type="model", revision="main")
    except HfHubHTTPError as exc:
        raise NetworkError(f"hf://{repo_id}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
                           hint="mirroring needs a token with write access (HF_TOKEN or `hf auth login`) and, "
                                "for an organisation, membership in it") from None
    except (OSError, ConnectionError) as exc:
        raise _unreachable_hub(repo_id, exc) from None
    except Exception as exc:  # httpx transport errors: huggingface_hub lets them through unwrapped
        if type(exc).__module__.split(".")[0].rstrip("0123456789") not in ("httpx", "httpcore", "requests",
                                                                              "urllib"):
            raise
        raise _unreachable_hub(repo_id, exc) from None
    return dataclasses.replace(result, commit=getattr(info, "oid", None), url=getattr(info, "commit_url", None))


def _hf_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)


_HUB_HINT = ("mirroring needs the Hub, a dry run too (it compares files with the remote); check the network, "
             "HF_ENDPOINT and proxy settings")


def _check_hub(api: Any) -> None:
    """One look at the Hub endpoint a real ``HfApi`` talks to (a stand-in passed by tests is left alone)."""
    from huggingface_hub.hf_api import HfApi

    from zoo.fetch.probe import check_reachable

    if isinstance(api, HfApi):
        check_reachable(api.endpoint, timeout=10, what=_hub_endpoint()[1], hint=_HUB_HINT)


def _hub_endpoint() -> tuple[str, str]:
    """The Hub endpoint in use (``HF_ENDPOINT``, read now, else the Hugging Face Hub) and its name in messages."""
    from zoo.fetch.hf import DEFAULT_ENDPOINT

    configured = os.environ.get("HF_ENDPOINT")
    return configured or DEFAULT_ENDPOINT, f"HF_ENDPOINT={configured}" if configured else "the Hugging Face Hub"


def _unreachable_hub(repo_id: str, exc: BaseException) -> NetworkError:
    from urllib.parse import urlsplit

    from zoo.fetch.probe import why_unreachable

    endpoint, what = _hub_endpoint()
    parts = urlsplit(endpoint)
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    why = why_unreachable(exc)
    if why == "refused":
        problem = f"{host} refused the connection ({what})"
    elif why == "unresolved":
        problem = f"cannot resolve the host {parts.hostname} ({what})"
    else:
        problem = f"cannot reach {what} ({type(exc).__name__}: {first_line(exc)})"
    return NetworkError(f"hf://{repo_id}: {problem}", hint=_HUB_HINT)


# --------------------------------------------------------------------------------------------------- git
def write_git_repo(folder: Path, repo: Path, *, message: str, name: str | None = None,
                   dry_run: bool = False) -> Mirrored:
    """Make the git repository ``repo`` (branch ``main``) hold exactly ``folder``; commit only when it changed.

    Files matching :data:`LFS_PATTERNS` are committed as git-lfs pointers, their bytes stored under
    ``.git/lfs/objects/`` where git-lfs (and olah) look for them.
    """
    local = _local_files(folder)
    contents = {".gitattributes": GITATTRIBUTES.encode()}
    for rel, (sha, size) in local.items():
        contents[rel] = lfs_pointer(sha, size) if is_lfs(rel) else (folder / rel).read_bytes()
    head = _head_tree(repo)
    actions = [FileAction(rel, size, sha, "skip" if head.get(rel) == git_blob_id(contents[rel]) else "upload")
               for rel, (sha, size) in local.items()]
    actions += [FileAction(rel, 0, "", "delete") for rel in sorted(set(head) - set(contents))]
    result = Mirrored(name or repo.name, str(repo), tuple(actions), None, None, dry_run)
    unchanged = head.get(".gitattributes") == git_blob_id(contents[".gitattributes"]) and not result.changed
    if dry_run or unchanged:
        if unchanged:
            log.info("%s: already up to date", repo)
        return result

    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q")
        _git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
    branch = _git(repo, "symbolic-ref", "-q", "HEAD", check=False).strip()
    if branch != "refs/heads/main":
        raise UsageError(f"{repo}: checked out on {branch or 'a detached HEAD'}, expected branch main",
                         hint="`git -C REPO checkout main`, or mirror into a fresh directory")
    for rel, (sha, _) in local.items():
        if is_lfs(rel):
            obj = repo / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
            if not obj.is_file():
                obj.parent.mkdir(parents=True, exist_ok=True)
                tmp = obj.with_name(f".{sha}.tmp-{os.getpid()}")
                shutil.copyfile(folder / rel, tmp)
                os.replace(tmp, obj)
    for path in sorted(repo.rglob("*"), reverse=True):  # the work tree holds exactly the export
        rel = path.relative_to(repo).as_posix()
        if rel == ".git" or rel.startswith(".git/"):
            continue
        if path.is_file() and rel not in contents:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for rel, data in contents.items():
        dest = repo / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    _git(repo, "add", "-A")
    if head and not _git(repo, "diff", "--cached", "--name-only"):
        return result
    _git(repo, "commit", "-q", "--no-verify", "-m", message)
    commit = _git(repo, "rev-parse", "HEAD").strip()
    log.info("%s: committed %s", repo, commit)
    return dataclasses.replace(result, commit=commit)


def _head_tree(repo: Path) -> dict[str, str]:
    """``{path: blob id}`` of the repository's ``main`` branch; empty when there is none yet."""
    if not (repo / ".git").is_dir():
        return {}
    if not _git(repo, "rev-parse", "-q", "--verify", "refs/heads/main", check=False).strip():
        return {}
    listing = _git(repo, "ls-tree", "-r", "-z", "refs/heads/main")
    tree = {}
    for entry in filter(None, listing.split("\0")):
        meta, path = entry.split("\t", 1)
        tree[path] = meta.split()[2]
    return tree


def _git(repo: Path, *args: str, check: bool = True) -> str:
    git = shutil.which("git")
    if git is None:
        raise UsageError("mirroring to a directory needs git, which is not on PATH", hint="install git")
    env = {**_COMMITTER, **os.environ, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run([git, "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", *args], cwd=repo,
                          env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ZooError(f"{repo}: git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout
