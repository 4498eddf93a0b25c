"""Shared fixtures: an isolated cache and manifest path for every test; test helpers live in tests/support/."""

from __future__ import annotations

import pytest
from support.disk import small_disk  # noqa: F401 - a fixture

from zoo.registry import clear_cache


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test reads the user's cache or manifests, or the network settings of the machine."""
    monkeypatch.setenv("ZOO_HOME", str(tmp_path_factory.mktemp("zoo_home")))
    for var in ("ZOO_MANIFEST_PATH", "ZOO_OFFLINE", "ZOO_REQUIRE_HASHES", "HF_TOKEN", "ZOO_PROGRESS",
                "ZOO_STALL_TIMEOUT", "ZOO_MAX_ATTEMPTS", "ZOO_MIN_SPEED", "ZOO_CACHE_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    clear_cache()
    yield
    clear_cache()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (``ZOO_NO_SKIPS=1``, set by .ci/run) a skipped test is a failure: every prerequisite (nginx, olah,
    git, root for tmpfs mounts, the ``hf`` extra) is there, so a skip can only hide a broken set-up."""
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if os.environ.get("ZOO_NO_SKIPS") == "1" and skipped and exitstatus == 0:
        for report in skipped:
            reporter.write_line(f"not allowed in CI: skipped {report.nodeid}: {report.longrepr}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
