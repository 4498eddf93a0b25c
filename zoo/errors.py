"""zoo's exception hierarchy.

Every error zoo raises on purpose is a :class:`ZooError`. Each class carries the CLI exit code it maps to
and, where there is one, a hint telling the user what to do next::

    ZooError                          exit 1
    ├── UsageError                    exit 2   bad arguments or options
    ├── NotFoundError (LookupError)   exit 3   unknown model, missing file or cache entry
    ├── ManifestError (ValueError)    exit 4   malformed manifest: file, key path, what was expected
    ├── NetworkError (ConnectionError) exit 5  every source failed to download
    │   └── OfflineError              exit 7   offline mode and the cache lacks what is needed
    ├── IntegrityError                exit 6   hash / size / CRC mismatch, pin changed upstream, damage found
    ├── CheckpointError (ValueError)  exit 8   truncated or garbled checkpoint, config/weights disagreement
    ├── UnsupportedError              exit 9   a valid input zoo deliberately does not handle
    ├── DiskSpaceError (OSError)      exit 10  not enough free space, or the disk filled up while writing
    ├── UnsafeArchiveError            exit 11  hostile archive member (path escape, link, device, bomb)
    ├── DataError (ValueError)        exit 12  unusable training data: empty corpus, bad bytes, damaged TFRecord
    └── Interrupted                   exit 130 Ctrl-C during a training run: where it stopped, how to continue

The classes multiply-inherit standard exceptions where it is natural, so ``except LookupError`` and similar
clauses in user code keep working.
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error zoo raises deliberately."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UsageError(ZooError):
    exit_code = 2


class NotFoundError(ZooError, LookupError):
    exit_code = 3


class ManifestError(ZooError, ValueError):
    """A manifest is malformed. The message names the file, the key path and what was expected."""

    exit_code = 4

    def __init__(self, file: str, key: str, problem: str, *, hint: str | None = None) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}", hint=hint)


class NetworkError(ZooError, ConnectionError):
    exit_code = 5


class OfflineError(NetworkError):
    exit_code = 7


class IntegrityError(ZooError):
    exit_code = 6


class CheckpointError(ZooError, ValueError):
    exit_code = 8


class UnsupportedError(ZooError):
    exit_code = 9


class DiskSpaceError(ZooError, OSError):
    exit_code = 10


class UnsafeArchiveError(ZooError):
    exit_code = 11


class DataError(ZooError, ValueError):
    """Training data zoo cannot use; the message names the file and the line or record."""

    exit_code = 12


class Interrupted(ZooError):
    """A training run stopped by Ctrl-C (SIGINT): says the last checkpoint and how to continue."""

    exit_code = 130


def first_line(exc: BaseException) -> str:
    """The first line of a third-party exception's message (or its type name), for zoo's own messages."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


__all__ = [
    "CheckpointError",
    "DataError",
    "DiskSpaceError",
    "IntegrityError",
    "Interrupted",
    "ManifestError",
    "NetworkError",
    "NotFoundError",
    "OfflineError",
    "UnsafeArchiveError",
    "UnsupportedError",
    "UsageError",
    "ZooError",
    "first_line",
]
