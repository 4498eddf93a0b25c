"""The registry of checkpoints: manifest schema and lookup."""

from zoo.registry.registry import (
    Registry,
    builtin_manifest_dir,
    clear_cache,
    get_manifest,
    list_manifests,
    list_models,
    load_registry,
    read_manifest,
    user_manifest_dirs,
)
from zoo.registry.schema import FilePin, HeadStatus, Manifest, Source, TokenizerSpec, parse_manifest

__all__ = [
    "FilePin",
    "HeadStatus",
    "Manifest",
    "Registry",
    "Source",
    "TokenizerSpec",
    "builtin_manifest_dir",
    "clear_cache",
    "get_manifest",
    "list_manifests",
    "list_models",
    "load_registry",
    "parse_manifest",
    "read_manifest",
    "user_manifest_dirs",
]
