"""The registry: built-in manifests shipped with zoo plus the user's own.

Built-in manifests live in the package (``zoo/manifests`` in a wheel; the repository's top-level ``manifests/``
in a source checkout). User manifests are every ``*.yaml`` in the directories listed in ``ZOO_MANIFEST_PATH``
(``os.pathsep``-separated) and in ``--manifests DIR``; a user manifest with a built-in's name overrides it.

A broken *user* manifest (unreadable, not UTF-8, not YAML, invalid, clashing names) never stops work on other
models: it is logged as a warning and set aside, and asking for a name only it could have defined raises its
error. YAML aliases are bounded, so a tiny hostile file cannot expand into gigabytes ("billion laughs").
"""

from __future__ import annotations

import difflib
import importlib.resources
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import yaml

from zoo.errors import ManifestError, NotFoundError
from zoo.registry.schema import Manifest, parse_manifest, show

log = logging.getLogger("zoo.registry")

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MANIFEST_PATH_ENV = "ZOO_MANIFEST_PATH"


def builtin_manifest_dir() -> Path:
    """Where zoo's own manifests are: inside the installed package, else the source checkout's ``manifests/``."""
    packaged = importlib.resources.files("zoo") / "manifests"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "manifests"


def user_manifest_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Directories of user manifests: ``ZOO_MANIFEST_PATH`` entries, then ``extra`` (``--manifests``)."""
    env = os.environ.get(MANIFEST_PATH_ENV, "")
    dirs = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return dirs + [Path(p).expanduser() for p in extra]


#: Bounds on YAML aliases: manifests need none, and expansion is what makes a small file huge.
MAX_ALIASES = 64
MAX_EXPANDED_NODES = 20_000


def read_manifest(path: Path, *, builtin: bool = False) -> Manifest:
    """Read and validate one manifest file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(str(path), "", f"not UTF-8 text (byte {exc.start}, line {line})",
                            hint="save the manifest as UTF-8") from None
    try:
        _check_aliases(text, path)
        data = yaml.load(text, Loader=_SafeLoader)  # a safe loader, C-accelerated when available
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ManifestError(str(path), "", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}") from None
    return parse_manifest(data, path, builtin=builtin)


def _check_aliases(text: str, path: Path) -> None:
    """Refuse documents whose aliases would expand beyond :data:`MAX_EXPANDED_NODES` nodes (or use more than
    :data:`MAX_ALIASES` aliases), computed from parser events without building anything."""
    if "*" not in text:
        return
    sizes: dict[str, int] = {}  # anchor -> expanded node count
    stack: list[tuple[str | None, int]] = []  # open collections: (anchor, nodes so far)
    aliases = total = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            size = sizes.get(str(event.anchor), 1)
        elif isinstance(event, (yaml.ScalarEvent,)):
            size = 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append((event.anchor, 1))
            continue
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = stack.pop()
            if anchor:
                sizes[anchor] = size
        else:
            continue
        if stack:
            anchor, count = stack[-1]
            stack[-1] = (anchor, count + size)
        else:
            total += size
        expanded = total + sum(count for _, count in stack)
        if aliases > MAX_ALIASES or expanded > MAX_EXPANDED_NODES:
            raise ManifestError(str(path), "", f"YAML aliases expand to more than {MAX_EXPANDED_NODES:,} nodes "
                                f"(or more than {MAX_ALIASES} aliases); refusing to read it",
                                hint="manifests need no YAML anchors or aliases; write the values out")


def _yaml_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


class Registry:
    """Manifests by name, with alias lookup, filters and "did you mean" suggestions."""

    def __init__(self, manifests: Iterable[Manifest] = ()) -> None:
        self._by_name: dict[str, Manifest] = {}
        self._alias: dict[str, str] = {}
        #: (name, path of the user manifest) for every built-in a user manifest replaced
        self.overrides: list[tuple[str, Path]] = []
        #: user manifests that could not be used, with why
        self.broken: list[ManifestError] = []
        for manifest in manifests:
            self.add(manifest)

    def add(self, manifest: Manifest) -> None:
        """Register a manifest. A user manifest may replace a built-in of the same name; nothing else may
        reuse a name or alias."""
        previous = self._by_name.get(manifest.name)
        if previous is not None:
            if not (previous.builtin and not manifest.builtin):
                raise ManifestError(str(manifest.path), "name",
                                    f"duplicate name {manifest.name!r}, already defined in {previous.path}")
            del self._by_name[previous.name]  # its aliases keep pointing at the name, now the user's entry
            self.overrides.append((manifest.name, manifest.path))
            log.info("user manifest %s overrides built-in %s", manifest.path, manifest.name)
        for i, alias in enumerate(manifest.aliases):
            owner = self._alias.get(alias) or (alias if alias in self._by_name else None)
            if owner is not None and owner != manifest.name:
                raise ManifestError(str(manifest.path), f"aliases[{i}]",
                                    f"alias {alias!r} is already used by {owner} "
                                    f"({self._by_name[owner].path})")
        if manifest.name in self._alias and self._alias[manifest.name] != manifest.name:
            owner = self._alias[manifest.name]
            raise ManifestError(str(manifest.path), "name",
                                f"name {manifest.name!r} is already an alias of {owner} ({self._by_name[owner].path})")
        self._by_name[manifest.name] = manifest
        for alias in manifest.aliases:
            self._alias[alias] = manifest.name

    def __iter__(self) -> Iterator[Manifest]:
        return iter(sorted(self._by_name.values(), key=lambda m: m.name))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._by_name or name in self._alias)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> Manifest:
        """The manifest registered under ``name`` or one of its aliases (case-insensitive)."""
        key = name.strip().lower()
        key = self._alias.get(key, key)
        if key in self._by_name:
            return self._by_name[key]
        for error in self.broken:  # the model may be the one a broken user manifest describes
            if Path(error.file).stem.lower() == key:
                raise error
        broken = f" ({len(self.broken)} user manifest(s) could not be read: see the warnings)" if self.broken else ""
        raise NotFoundError(f"unknown model {show(name)}{broken}", hint=self._suggest(key))

    def _suggest(self, key: str) -> str:
        candidates = self.names() + sorted(self._alias)
        matches = difflib.get_close_matches(key.replace("-", "_"), candidates, n=6, cutoff=0.6)
        matches += [c for c in candidates if key and key in c]
        close: list[str] = []
        for match in matches:  # one suggestion per model, by its registered name
            name = self._alias.get(match, match)
            if name not in close:
                close.append(name)
        close = close[:3]
        if close:
            return "did you mean " + ", ".join(close) + "? (`zoo list` shows every model)"
        return "`zoo list` shows every registered model; add your own with ZOO_MANIFEST_PATH or --manifests"

    def filter(self, *, family: str | None = None, language: str | None = None) -> list[Manifest]:
        return [m for m in self if (family is None or m.family == family)
                and (language is None or m.language == language)]


@lru_cache(maxsize=8)
def _load(extra: tuple[Path, ...], env: str) -> Registry:
    registry = Registry(read_manifest(p, builtin=True) for p in _yaml_files(builtin_manifest_dir()))
    for directory in user_manifest_dirs(extra):
        if not directory.is_dir():
            log.warning("manifest directory %s does not exist", directory)
        for path in _yaml_files(directory):
            try:
                registry.add(read_manifest(path))
            except ManifestError as exc:
                registry.broken.append(exc)
                log.warning("skipping user manifest %s", exc)
    return registry


def load_registry(extra_dirs: Sequence[Path] = ()) -> Registry:
    """Built-in manifests plus user manifests (``ZOO_MANIFEST_PATH``, then ``extra_dirs``). Cached per
    argument and environment; call :func:`clear_cache` after changing manifest files in-process."""
    return _load(tuple(Path(d) for d in extra_dirs), os.environ.get(MANIFEST_PATH_ENV, ""))


def clear_cache() -> None:
    _load.cache_clear()


def get_manifest(name: str, *, manifests: Sequence[str | os.PathLike[str]] = ()) -> Manifest:
    """The manifest for a registered name or alias; :class:`~zoo.errors.NotFoundError` with suggestions."""
    return load_registry([Path(m) for m in manifests]).get(name)


def list_models(*, family: str | None = None, language: str | None = None,
                manifests: Sequence[str | os.PathLike[str]] = ()) -> list[str]:
    """Registered model names, sorted, optionally filtered by family and language (as torchvision and timm
    list models). :func:`list_manifests` returns the manifests themselves."""
    return [m.name for m in list_manifests(family=family, language=language, manifests=manifests)]


def list_manifests(*, family: str | None = None, language: str | None = None,
                   manifests: Sequence[str | os.PathLike[str]] = ()) -> list[Manifest]:
    """Registered manifests, sorted by name, optionally filtered by family and language."""
    return load_registry([Path(m) for m in manifests]).filter(family=family, language=language)
