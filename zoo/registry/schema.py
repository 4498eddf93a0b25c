"""Manifest schema v1: dataclasses and validation.

A manifest is one YAML file describing one released checkpoint (docs/manifests.md). :func:`parse_manifest`
turns the parsed YAML mapping into a :class:`Manifest`, or raises :class:`~zoo.errors.ManifestError` naming the
file, the key path (``sources[1].sha256``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from zoo._fs import cut
from zoo.config import ALBERT_ONLY_KEYS, REQUIRED_KEYS, SCHEME_ARCHITECTURE, SCHEMES, InvalidConfig, ModelConfig
from zoo.errors import ManifestError

SCHEMA_VERSION = 1
FAMILIES = ("albert", "bert")
LANGUAGES = ("zh", "en", "multi")
FORMATS = ("tf-checkpoint", "pytorch", "safetensors")
ARCHIVES = ("zip", "tar.gz", "none")
#: The one registration of each kind of place a source can name: how its location starts → the module of
#: :mod:`zoo.fetch` whose ``fetch(source, workdir, ...)`` brings its bytes. A ``url:`` source is one download
#: (pinned by ``sha256``/``size``); an ``hf:`` source is files of a repository (each pinned under ``files:``). A new
#: kind of URL is one fetcher module and one line here.
FETCHERS = {"http://": "http", "https://": "http", "file://": "file", "hf:": "hf"}
URL_SCHEMES = tuple(prefix for prefix in FETCHERS if prefix.endswith("://"))
#: What a URL source's one download is called among the files a fetch brings (:data:`zoo.fetch.DATA`).
DOWNLOAD = "data"
#: What the released weights hold beyond the encoder, per head (``heads:`` in a manifest, optional).
HEAD_KEYS = ("mlm", "seq_relationship", "pooler")
#: ``trained``: trained with this encoder by the release's pretraining; ``untrained``: in the files but never trained
#: with this encoder (random, or inherited and never updated); ``absent``: not in the files; ``unknown``: the
#: sources disagree or say nothing (zoo warns). A head the manifest does not mention is assumed as released.
HEAD_STATES = ("trained", "untrained", "absent", "unknown")

# every pattern is used with fullmatch: `$` would also match before a trailing newline
_NAME_RE = re.compile(r"[a-z0-9_]+")
_ALIAS_RE = re.compile(r"[a-z0-9_.-]+")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_REF_RE = re.compile(r"[^\x00-\x20\x7f~^:?*\[\\]+")  # what git accepts in a branch or tag name, roughly
_HF_REPO_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")

#: The longest string (in characters) each kind of manifest value may hold; anything else is limited to
#: ``MAX_TEXT``. A broken or hostile manifest gets an error naming the key here, never a failure far away (a
#: 100,000-character revision would become a URL no HTTP library accepts).
MAX_LENGTHS = {"name": 100, "description": 1000, "license": 200, "homepage": 2048, "citation": 1000, "url": 2048,
               "hf": 96, "revision": 255, "path": 1024, "note": 2000, "config": 100}
MAX_TEXT = 1000

_CONFIG_KEYS = {f.name for f in dataclasses.fields(ModelConfig)} - {"architecture"}
_CONFIG_REQUIRED = tuple(key for key in REQUIRED_KEYS if key != "architecture")


@dataclasses.dataclass(frozen=True)
class FilePin:
    """Expected sha256 and size of a file (either may be unknown)."""

    sha256: str | None = None
    size: int | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """One place a checkpoint can be fetched from; a manifest's sources are tried in order."""

    index: int
    url: str | None
    hf: str | None
    revision: str | None
    sha256: str | None
    size: int | None
    archive: str
    format: str
    scheme: str | None
    checkpoint: str | None
    vocab: str | None
    files: Mapping[str, FilePin]

    @property
    def kind(self) -> str:
        """``"url"`` (one download: http/https/file) or ``"hf"`` (files of a Hugging Face repo)."""
        return "hf" if self.hf else "url"

    @property
    def label(self) -> str:
        """Its location, as messages, pins and the cache name it: a URL, or ``hf:repo[@revision]``."""
        if self.hf:
            return f"hf:{self.hf}@{self.revision}" if self.revision else f"hf:{self.hf}"
        return str(self.url)

    @property
    def fetcher(self) -> str:
        """The module of :mod:`zoo.fetch` that brings its bytes (:data:`FETCHERS`)."""
        return next(module for prefix, module in FETCHERS.items() if self.label.startswith(prefix))

    @property
    def pins(self) -> dict[str, FilePin]:
        """What the manifest pins of each file a fetch brings (empty pins where it states none): the one download
        (:data:`DOWNLOAD`) of a URL source, every repo file of an hf source."""
        if self.kind == "url":
            return {DOWNLOAD: FilePin(self.sha256, self.size)}
        return {rel: self.files.get(rel, FilePin()) for rel in self.repo_files}

    def pin_label(self, name: str) -> str:
        """The key of one fetched file's trust-on-first-use pin: the URL of a URL source's download, ``LABEL/PATH``
        for a repo file."""
        return self.label if self.kind == "url" else f"{self.label}/{name}"

    def find_checkpoint(self, root: Path) -> Path:
        """The checkpoint inside an extracted snapshot: a TF prefix (``.../model.ckpt-best``) or a file."""
        return find_in_snapshot(root, str(self.checkpoint), suffix=".index" if self.format == "tf-checkpoint" else "")

    def find_vocab(self, root: Path) -> Path:
        """The vocabulary file inside an extracted snapshot."""
        return find_in_snapshot(root, str(self.vocab))

    @property
    def revision_is_commit(self) -> bool:
        """Whether an hf source is pinned to an immutable commit (a branch or tag can move)."""
        return bool(self.revision and _COMMIT_RE.fullmatch(self.revision))

    @property
    def repo_files(self) -> list[str]:
        """hf sources: every repo file the source needs (its pinned ``files``, checkpoint and vocab)."""
        return sorted(set(self.files) | {str(self.checkpoint), str(self.vocab)})

    @property
    def pinned(self) -> bool:
        """Whether the manifest pins the sha256 of every file a fetch brings."""
        return all(pin.sha256 for pin in self.pins.values())

    @property
    def download_size(self) -> int | None:
        """The bytes this source downloads, when the manifest pins every file's size."""
        sizes = [pin.size for pin in self.pins.values()]
        return None if None in sizes else sum(s for s in sizes if s is not None)


@dataclasses.dataclass(frozen=True)
class HeadStatus:
    """The state of the pretraining heads (and pooler) in the released weights, as the manifest records it.

    Each field is one of :data:`HEAD_STATES`, or ``None`` where the manifest states nothing (schema v1 manifests
    without ``heads:``): such a head is assumed to be what it was released as. ``note`` says why, for people.
    """

    mlm: str | None = None
    seq_relationship: str | None = None
    pooler: str | None = None
    note: str | None = None

    def state(self, head: str) -> str | None:
        """The recorded state of ``head`` (one of :data:`HEAD_KEYS`), ``None`` when not stated."""
        if head not in HEAD_KEYS:
            raise ValueError(f"head must be one of {HEAD_KEYS}, got {head!r}")
        return getattr(self, head)  # type: ignore[no-any-return]

    def unusable(self, head: str) -> bool:
        """Whether ``head``'s outputs are noise: recorded as ``untrained`` or ``absent``."""
        return self.state(head) in ("untrained", "absent")

    def to_dict(self) -> dict[str, str | None]:
        return {key: self.state(key) for key in HEAD_KEYS} | {"note": self.note}

    def describe(self, head: str) -> str:
        """``trained``, ``untrained``, … or ``not recorded`` for a head the manifest does not mention."""
        return self.state(head) or "not recorded"


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    lowercase: bool = True
    strip_accents: bool | None = None  # None: follow lowercase, as BERT does


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A registered checkpoint: what it is, its exact architecture, and where to get it."""

    name: str
    aliases: tuple[str, ...]
    family: str
    language: str
    description: str
    license: str
    homepage: str | None
    citation: str | None
    params: int | None
    config: ModelConfig
    tokenizer: TokenizerSpec
    sources: tuple[Source, ...]
    path: Path
    builtin: bool = True
    heads: HeadStatus = HeadStatus()

    @property
    def architecture(self) -> str:
        return self.config.architecture

    @property
    def download_size(self) -> int | None:
        """The download size of the first source whose size the manifest pins."""
        return next((s.download_size for s in self.sources if s.download_size is not None), None)


def find_in_snapshot(root: Path, rel: str, *, suffix: str = "") -> Path:
    """``root / rel`` if it exists, else the only file below ``root`` with the same basename.

    Several upstream archives are documented only by their file names, not by their top-level directory
    (see the manifests' comments), so a manifest's path may be a best guess. The basename must then match
    exactly one file; anything else is an error naming what was found.
    """
    from zoo.errors import NotFoundError

    exact = root / rel
    if Path(f"{exact}{suffix}").is_file():
        return exact
    name = PurePosixPath(rel).name + suffix
    matches = sorted(p for p in root.rglob(name) if p.is_file())
    if len(matches) == 1:
        found = matches[0]
        return found.with_name(found.name[: len(found.name) - len(suffix)]) if suffix else found
    listing = ", ".join(str(m.relative_to(root)) for m in matches[:5]) or "none"
    raise NotFoundError(f"{rel}{suffix} not found in {root} (files named {name}: {listing})",
                        hint="fix the source's checkpoint/vocab path in the manifest")


# --------------------------------------------------------------------------------------------- helpers
class _Checker:
    """Collects typed reads from a mapping, raising ManifestError with the full key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, problem: str, hint: str | None = None) -> ManifestError:
        return ManifestError(self.file, key, problem, hint=hint)

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a mapping, got {_type_name(value)}")
        return value

    def no_unknown(self, data: Mapping[str, Any], allowed: set[str] | frozenset[str], prefix: str) -> None:
        for key in data:
            if key not in allowed:
                raise self.fail(_join(prefix, cut(str(key), 60)), "unknown key",
                                hint=f"allowed keys: {', '.join(sorted(allowed))}")

    def get(self, data: Mapping[str, Any], key: str, types: type | tuple[type, ...], prefix: str = "",
            *, required: bool = False, default: Any = None, nullable: bool = True, limit: int = MAX_TEXT) -> Any:
        """``data[key]`` checked against ``types`` (strings: at most ``limit`` characters)."""
        path = _join(prefix, key)
        if key not in data:
            if required:
                raise self.fail(path, "missing required key")
            return default
        value = data[key]
        if value is None and nullable and not required:
            return None
        # bool is an int subclass: never accept it where a number is expected
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise self.fail(path, f"expected {_expected(types)}, got a boolean")
        if not isinstance(value, types):
            raise self.fail(path, f"expected {_expected(types)}, got {_type_name(value)} {show(value)}")
        self.bounded(value, path, limit)
        return value

    def bounded(self, value: Any, path: str, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            raise self.fail(path, f"expected at most {limit} characters, got {len(value)}")

    def choice(self, data: Mapping[str, Any], key: str, choices: tuple[str, ...], prefix: str = "",
               *, required: bool = False, default: str | None = None) -> Any:
        value = self.get(data, key, str, prefix, required=required, default=default)
        if value is not None and value not in choices:
            raise self.fail(_join(prefix, key), f"expected one of {', '.join(choices)}, got {show(value)}")
        return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _expected(types: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in _as_tuple(types))


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 4, 4, 2


def show(value: Any) -> str:
    """A value for an error message: never whole (a hostile manifest may hold something huge)."""
    return _SHORT.repr(value)


def _type_name(value: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# ----------------------------------------------------------------------------------------------- parse
_TOP_KEYS = {"schema", "name", "aliases", "family", "language", "description", "license", "homepage",
             "citation", "params", "config", "tokenizer", "sources", "heads"}
_SOURCE_KEYS = {"url", "hf", "revision", "sha256", "size", "archive", "format", "scheme", "checkpoint", "vocab",
                "files"}


def parse_manifest(data: Any, path: Path, *, builtin: bool = False) -> Manifest:
    """Validate one parsed YAML document and build its :class:`Manifest`."""
    c = _Checker(str(path))
    data = c.mapping(data, "")
    c.no_unknown(data, _TOP_KEYS, "")
    schema = c.get(data, "schema", int, required=True)
    if schema != SCHEMA_VERSION:
        raise c.fail("schema", f"expected {SCHEMA_VERSION}, got {schema}",
                     hint="this zoo reads schema 1 manifests; upgrade zoo for newer ones")
    name = c.get(data, "name", str, required=True, limit=MAX_LENGTHS["name"])
    if not _NAME_RE.fullmatch(name):
        raise c.fail("name", f"expected lowercase letters, digits and '_' ([a-z0-9_]+), got {show(name)}")
    aliases = c.get(data, "aliases", list, default=[]) or []
    for i, alias in enumerate(aliases):
        c.bounded(alias, f"aliases[{i}]", MAX_LENGTHS["name"])
        if not isinstance(alias, str) or not _ALIAS_RE.fullmatch(alias):
            raise c.fail(f"aliases[{i}]", f"expected a lowercase name ([a-z0-9_.-]+), got {show(alias)}")
    family = c.choice(data, "family", FAMILIES, required=True)
    language = c.choice(data, "language", LANGUAGES, required=True)
    description = c.get(data, "description", str, required=True, limit=MAX_LENGTHS["description"])
    license_ = c.get(data, "license", str, required=True, limit=MAX_LENGTHS["license"])
    homepage = c.get(data, "homepage", str, limit=MAX_LENGTHS["homepage"])
    citation = c.get(data, "citation", str, limit=MAX_LENGTHS["citation"])
    params = c.get(data, "params", int)

    sources_data = c.get(data, "sources", list, required=True)
    if not sources_data:
        raise c.fail("sources", "expected at least one source")
    sources = tuple(_parse_source(c, item, i) for i, item in enumerate(sources_data))

    architecture = _architecture(c, family, sources)
    config = _parse_config(c, c.mapping(c.get(data, "config", dict, required=True), "config"), architecture)
    if params is not None and params != config.param_count():
        raise c.fail("params", f"{params} disagrees with the config, which gives {config.param_count()} "
                               "(encoder incl. pooler, no heads)")

    tok = c.mapping(c.get(data, "tokenizer", dict, default={}) or {}, "tokenizer")
    c.no_unknown(tok, {"lowercase", "strip_accents"}, "tokenizer")
    tokenizer = TokenizerSpec(lowercase=c.get(tok, "lowercase", bool, "tokenizer", default=True, nullable=False),
                              strip_accents=c.get(tok, "strip_accents", bool, "tokenizer"))

    heads = _parse_heads(c, data.get("heads"))

    return Manifest(name=name, aliases=tuple(aliases), family=family, language=language, description=description,
                    license=license_, homepage=homepage, citation=citation, params=params, config=config,
                    tokenizer=tokenizer, sources=sources, path=path, builtin=builtin, heads=heads)


def _parse_heads(c: _Checker, data: Any) -> HeadStatus:
    """``heads: {mlm: …, seq_relationship: …, pooler: …, note: "…"}``; every key optional."""
    if data is None:
        return HeadStatus()
    data = c.mapping(data, "heads")
    c.no_unknown(data, {*HEAD_KEYS, "note"}, "heads")
    states = {key: c.choice(data, key, HEAD_STATES, "heads") for key in HEAD_KEYS}
    note = c.get(data, "note", str, "heads", limit=MAX_LENGTHS["note"])
    if note is not None and not note.strip():
        raise c.fail("heads.note", "expected a non-empty string or no note")
    return HeadStatus(**states, note=note.strip() if note else None)


def _parse_source(c: _Checker, item: Any, index: int) -> Source:
    p = f"sources[{index}]"
    item = c.mapping(item, p)
    c.no_unknown(item, _SOURCE_KEYS, p)
    url, hf, revision = _parse_location(c, item, p)
    pin = _parse_pin(c, item, p)
    if hf is not None and (pin.sha256 is not None or pin.size is not None):
        raise c.fail(f"{p}.{'sha256' if pin.sha256 is not None else 'size'}",
                     "an hf source is a set of files, not one download: pin each file under 'files' (and the "
                     "commit under 'revision')")
    default_archive = _archive_from_url(url) if url else "none"
    archive = c.choice(item, "archive", ARCHIVES, p, default=default_archive) or default_archive
    if hf is not None and archive != "none":
        raise c.fail(f"{p}.archive", "hf sources are files in a repo: expected 'none'")
    fmt, scheme = _parse_format(c, item, p)
    checkpoint = c.get(item, "checkpoint", str, p, required=True, limit=MAX_LENGTHS["path"])
    vocab = c.get(item, "vocab", str, p, required=True, limit=MAX_LENGTHS["path"])
    for key, rel in (("checkpoint", checkpoint), ("vocab", vocab)):
        _check_relative(c, f"{p}.{key}", rel)
    files_data = c.mapping(c.get(item, "files", dict, p, default={}) or {}, f"{p}.files")
    files: dict[str, FilePin] = {}
    for rel, file_pin in files_data.items():
        fp = f"{p}.files.{cut(str(rel), 60)}"
        _check_relative(c, fp, str(rel))
        file_pin = c.mapping(file_pin, fp)
        c.no_unknown(file_pin, {"sha256", "size"}, fp)
        files[str(rel)] = _parse_pin(c, file_pin, fp)
    return Source(index=index, url=url, hf=hf, revision=revision, sha256=pin.sha256, size=pin.size, archive=archive,
                  format=fmt, scheme=scheme, checkpoint=checkpoint, vocab=vocab, files=files)


def _parse_location(c: _Checker, item: Mapping[str, Any], p: str) -> tuple[str | None, str | None, str | None]:
    """``(url, hf, revision)``: exactly one of a URL of a registered kind (:data:`FETCHERS`) or an hf repo id."""
    url = c.get(item, "url", str, p, limit=MAX_LENGTHS["url"])
    hf = c.get(item, "hf", str, p, limit=MAX_LENGTHS["hf"])
    if (url is None) == (hf is None):
        raise c.fail(p, "expected exactly one of 'url' or 'hf'")
    revision = c.get(item, "revision", str, p, limit=MAX_LENGTHS["revision"])
    if url is not None:
        if not url.startswith(URL_SCHEMES):
            kinds = ", ".join(URL_SCHEMES[:-1]) + f" or {URL_SCHEMES[-1]}"
            raise c.fail(f"{p}.url", f"expected an {kinds} URL, got {show(url)}")
        if revision is not None:
            raise c.fail(f"{p}.revision", "only hf sources have a revision")
    else:
        if not _HF_REPO_RE.fullmatch(hf):
            raise c.fail(f"{p}.hf", f"expected a Hugging Face repo id 'org/name', got {show(hf)}")
        if revision is not None and not _REF_RE.fullmatch(revision):
            raise c.fail(f"{p}.revision", "expected a 40-hex commit (or a branch or tag name, which is not "
                                          f"reproducible), got {show(revision)}")
    return url, hf, revision


def _parse_pin(c: _Checker, data: Mapping[str, Any], p: str) -> FilePin:
    """``sha256`` (64 lowercase hex digits) and ``size`` (bytes), either may be null."""
    sha256 = c.get(data, "sha256", str, p)
    if sha256 is not None and not _SHA256_RE.fullmatch(sha256):
        raise c.fail(_join(p, "sha256"), f"expected 64 lowercase hex digits or null, got {show(sha256)}")
    size = c.get(data, "size", int, p)
    if size is not None and size < 0:
        raise c.fail(_join(p, "size"), f"expected a size in bytes >= 0, got {size}")
    return FilePin(sha256, size)


def _parse_format(c: _Checker, item: Mapping[str, Any], p: str) -> tuple[str, str | None]:
    """``(format, scheme)``: a tf-checkpoint source has a naming scheme, others none."""
    fmt = c.choice(item, "format", FORMATS, p, required=True)
    scheme = c.choice(item, "scheme", SCHEMES, p)
    if fmt == "tf-checkpoint" and scheme is None:
        raise c.fail(f"{p}.scheme", "a tf-checkpoint source needs a scheme", hint=f"one of {', '.join(SCHEMES)}")
    if fmt != "tf-checkpoint" and scheme is not None:
        raise c.fail(f"{p}.scheme", f"only tf-checkpoint sources have a scheme (format is {fmt})")
    return fmt, scheme


def _check_relative(c: _Checker, key: str, rel: str) -> None:
    c.bounded(rel, key, MAX_LENGTHS["path"])
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise c.fail(key, f"expected a relative path inside the source without '..', got {show(rel)}")


def _archive_from_url(url: str) -> str:
    lower = url.lower().split("?", 1)[0]
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    return "none"


def _architecture(c: _Checker, family: str, sources: tuple[Source, ...]) -> str:
    """bert, albert or albert-brightmart: from the family and the TF schemes of the sources."""
    schemes = {s.scheme for s in sources if s.scheme}
    implied = {SCHEME_ARCHITECTURE[s] for s in schemes}
    if len(implied) > 1:
        raise c.fail("sources", f"sources use incompatible schemes {sorted(schemes)}: one manifest describes one "
                                "architecture", hint="split them into separate manifests")
    if family == "bert":
        if implied - {"bert"}:
            raise c.fail("sources", f"family bert needs scheme google-bert, got {sorted(schemes)}")
        return "bert"
    if "bert" in implied:
        raise c.fail("sources", "family albert cannot use scheme google-bert")
    return implied.pop() if implied else "albert"


def _parse_config(c: _Checker, data: Mapping[str, Any], architecture: str) -> ModelConfig:
    allowed = _CONFIG_KEYS if architecture != "bert" else _CONFIG_KEYS - ALBERT_ONLY_KEYS
    for key in data:
        if key not in allowed:
            problem = "albert only (family is bert)" if key in ALBERT_ONLY_KEYS else "unknown key"
            raise c.fail(f"config.{key}", problem, hint=f"allowed keys: {', '.join(sorted(allowed))}")
        c.bounded(data[key], f"config.{key}", MAX_LENGTHS["config"])
    for key in (*_CONFIG_REQUIRED, *(("embedding_size",) if architecture != "bert" else ())):
        if key not in data:
            raise c.fail(f"config.{key}", "missing required key")
    try:
        return ModelConfig.from_dict(data, architecture)
    except InvalidConfig as exc:
        key, problem = exc.problems[0]
        raise c.fail(f"config.{key}", problem) from None
