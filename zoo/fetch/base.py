"""Plain data shared by the fetchers: options, progress events and the result of a download."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

MiB = 1 << 20


@dataclasses.dataclass(frozen=True)
class FetchOptions:
    """How to download. Defaults suit a home connection; tests shrink the timeouts."""

    connections: int = 8
    #: Files smaller than this download as one stream; larger ones in up to ``connections`` ranged parts.
    parallel_threshold: int = 16 * MiB
    #: Parts are never smaller than this.
    min_part_size: int = 4 * MiB
    chunk_size: int = 1 * MiB
    connect_timeout: float = 10.0
    #: A connection that delivers no byte for this long is dropped and the part retried.
    stall_timeout: float = 30.0
    #: Consecutive failed attempts (without progress in between) before a part gives up.
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    #: Longest Retry-After honoured; a server asking for more is waited on for this long.
    retry_after_max: float = 60.0
    #: Fresh restarts allowed when the upstream file changes during a download.
    max_restarts: int = 2

    @classmethod
    def from_env(cls, **overrides: object) -> FetchOptions:
        """Defaults, then ``ZOO_STALL_TIMEOUT`` / ``ZOO_MAX_ATTEMPTS`` from the environment, then ``overrides``."""
        values: dict[str, object] = {}
        if os.environ.get("ZOO_STALL_TIMEOUT"):
            values["stall_timeout"] = float(os.environ["ZOO_STALL_TIMEOUT"])
        if os.environ.get("ZOO_MAX_ATTEMPTS"):
            values["max_attempts"] = int(os.environ["ZOO_MAX_ATTEMPTS"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(cls(), **values)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """What a pull is doing, for progress bars and logs.

    ``stage`` is ``"download"`` (``done``/``total`` bytes; total ``None`` when unknown), ``"extract"``,
    ``"wait"`` (another process holds the entry), ``"verify"`` or ``"done"``.
    """

    stage: str
    label: str
    done: int = 0
    total: int | None = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


@dataclasses.dataclass(frozen=True)
class Download:
    """A finished download: a complete file whose sha256 was computed while its bytes arrived."""

    path: Path
    sha256: str
    size: int
    url: str
    #: Bytes that came over the network in this run (less than ``size`` after a resume).
    fetched: int
