"""The public API: every lazily exported name resolves, and __all__ lists exactly them."""

from __future__ import annotations

import pytest

import zoo


def test_every_lazy_export_resolves_and_is_listed() -> None:
    for name in zoo._LAZY:
        assert getattr(zoo, name) is not None, name
        assert name in zoo.__all__
    assert callable(zoo.load) and callable(zoo.pull) and callable(zoo.convert) and callable(zoo.export)
    assert zoo.read_tf_checkpoint.__module__.startswith("zoo.tf")
    assert issubclass(zoo.OfflineError, zoo.NetworkError) and issubclass(zoo.NotFoundError, LookupError)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        zoo.no_such_thing  # noqa: B018
