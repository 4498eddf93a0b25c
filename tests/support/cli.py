"""Running the CLI in-process, as a test sees it."""

from __future__ import annotations

import pytest

from zoo.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``zoo ARGV...``: the exit code, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
