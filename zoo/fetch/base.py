"""Plain data shared by the fetchers: options, and what a download produced."""

from __future__ import annotations

import dataclasses
import math
import os

from zoo.errors import UsageError
from zoo.registry.schema import DOWNLOAD

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
    #: A connection slower than ``min_speed`` bytes/s over ``speed_window`` seconds is dropped and retried
    #: (a server trickling a byte at a time never trips the stall timeout).
    min_speed: float = 1024.0
    speed_window: float = 30.0
    #: Longest wait for a response's headers, however slowly they trickle in.
    header_timeout: float = 60.0
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
        """Defaults, then ``ZOO_STALL_TIMEOUT`` / ``ZOO_MAX_ATTEMPTS`` / ``ZOO_MIN_SPEED`` from the environment,
        then ``overrides``. A malformed variable is a :class:`~zoo.errors.UsageError` naming it."""
        values: dict[str, object] = {}
        for var, field, kind in (("ZOO_STALL_TIMEOUT", "stall_timeout", "seconds"),
                                 ("ZOO_MAX_ATTEMPTS", "max_attempts", "count"),
                                 ("ZOO_MIN_SPEED", "min_speed", "bytes")):
            raw = os.environ.get(var, "").strip()
            if raw:
                values[field] = _env_number(var, raw, kind)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(cls(), **values)  # type: ignore[arg-type]


def _env_number(var: str, raw: str, kind: str) -> float | int:
    what = {"seconds": "a number of seconds > 0", "count": "a whole number >= 1",
            "bytes": "a speed in bytes/s >= 0"}[kind]
    try:
        value: float | int = int(raw) if kind == "count" else float(raw)
    except ValueError:
        raise UsageError(f"{var}={raw!r} is not {what}", hint=f"unset {var} or set it to e.g. "
                         + {"seconds": "30", "count": "6", "bytes": "1024"}[kind]) from None
    bad = (not math.isfinite(value) or (kind == "seconds" and value <= 0) or (kind == "count" and value < 1)
           or (kind == "bytes" and value < 0))
    if bad:
        raise UsageError(f"{var}={raw!r} is not {what}", hint=f"unset {var} or give it a valid value")
    return value


@dataclasses.dataclass(frozen=True)
class Fetched:
    """Files a fetcher wrote under its work directory: ``{relative path: (sha256, size)}``, hashed as they
    arrived."""

    files: dict[str, tuple[str, int]]
    #: Bytes that came over the network in this run (less than the total after a resume).
    fetched: int


#: The single file a URL source downloads into, relative to the fetch directory (what its manifest pins).
DATA = DOWNLOAD


def url_label(url: str) -> str:
    """What progress calls a download: the URL's last part."""
    return url.rsplit("/", 1)[-1] or url
