"""Run olah (a Hub-compatible server) on 127.0.0.1, offline, serving a local mirror of git repositories.

Usage::

    with serve_mirror(mirror, work, probe="org/repo") as endpoint:
        ...                               # HF_ENDPOINT=endpoint: http://127.0.0.1:PORT

``mirror`` holds ``models/ORG/NAME`` git repositories (as ``zoo mirror --to DIR`` or ``write_git_repo`` write
them); ``work`` receives olah.toml, olah's log (olah.out) and its repos cache; ``probe`` is a repository of the
mirror, asked for until olah answers.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.nginx import free_port

OLAH = Path(sys.executable).with_name("olah-cli")


@contextlib.contextmanager
def serve_mirror(mirror: Path, work: Path, *, probe: str) -> Iterator[str]:
    """olah serving ``mirror`` until the block ends; yields the endpoint. Fails the test if olah does not start
    within 20 s."""
    port = free_port()
    (work / "olah.toml").write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{work / "repos"}"\n'
        f'mirrors-path = ["{mirror}"]\nmetadata-cache-ttl = 0\n\n[accessibility]\noffline = true\n')
    log = open(work / "olah.out", "wb")
    proc = subprocess.Popen([str(OLAH), "-c", str(work / "olah.toml")], cwd=work, stdout=log,
                            stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/api/models/{probe}/revision/main", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"olah exited: {(work / 'olah.out').read_text()[-2000:]}")
                time.sleep(0.1)
        else:
            pytest.fail("olah did not start within 20 s")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
