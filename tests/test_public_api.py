"""The public API as users see it: exactly the documented names, each one resolving to what it should, one
signature family for the entry points that take a model, and a cheap ``import zoo``."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import zoo

# written from docs/python-api.md ("The public API at a glance"), not from zoo/__init__.py
PUBLIC = {
    "list_models", "list_manifests", "get_manifest", "pull", "load", "convert", "export", "mirror", "pretrain", "finetune",
    "init_model",
    "read_tf_checkpoint", "Tokenizer", "ModelConfig", "ProgressEvent", "Manifest", "Source", "Loaded", "Exported",
    "ZooError", "UsageError", "NotFoundError", "ManifestError", "NetworkError", "OfflineError", "IntegrityError",
    "CheckpointError", "UnsupportedError", "DiskSpaceError", "UnsafeArchiveError", "DataError", "__version__",
}


def test_all_is_exactly_the_documented_api_and_every_name_resolves() -> None:
    assert set(zoo.__all__) == PUBLIC
    for name in zoo.__all__:
        assert getattr(zoo, name) is not None, name
    assert set(dir(zoo)) >= PUBLIC


def test_the_names_are_the_real_objects() -> None:
    assert zoo.load.__module__ == "zoo.loader" and zoo.pretrain.__module__ == "zoo.training.runner"
    assert zoo.init_model.__module__ == "zoo.scratch"
    assert zoo.export.__module__ == "zoo.hub.exporting" and zoo.mirror.__module__ == "zoo.hub.mirroring"
    assert zoo.read_tf_checkpoint.__module__.startswith("zoo.tf") and zoo.convert.__module__ == "zoo.converters.tf"
    assert issubclass(zoo.OfflineError, zoo.NetworkError) and issubclass(zoo.NotFoundError, LookupError)
    assert issubclass(zoo.DataError, ValueError) and zoo.DataError.exit_code == 12
    codes = [getattr(zoo, n).exit_code for n in PUBLIC if n.endswith("Error")]
    assert len(codes) == len(set(codes))  # one exit code per error class


@pytest.mark.parametrize("name", ["pull", "load", "export", "mirror", "pretrain", "finetune"])
def test_entry_points_taking_a_model_share_one_signature_family(name: str) -> None:
    params = inspect.signature(getattr(zoo, name)).parameters
    assert {"manifests", "progress", "offline", "source"} <= set(params), name
    first = next(iter(params.values()))
    assert "Manifest" in str(first.annotation) or "Model" in str(first.annotation), (name, first.annotation)


def test_import_zoo_is_cheap() -> None:
    code = "import sys, zoo; zoo.__all__; sys.exit(any(m in sys.modules for m in ('torch', 'yaml', 'numpy')))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        zoo.no_such_thing  # noqa: B018
