"""Trust-on-first-use pins: the sha256 and size of a source the manifest leaves unpinned, recorded by the first
verified download; every later download must match.

A pin file that exists but cannot be read is an error, never a fresh start: silently forgetting it would accept
whatever the server sends next.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zoo._fs import write_json_atomic
from zoo.cache.paths import pin_path
from zoo.errors import IntegrityError

if TYPE_CHECKING:
    from zoo.registry.schema import Manifest, Source

log = logging.getLogger("zoo.cache")


@dataclasses.dataclass(frozen=True)
class Pin:
    url: str
    sha256: str
    size: int
    recorded: float

    @property
    def path(self) -> Path:
        return pin_path(self.url)

    @property
    def recorded_on(self) -> str:
        return time.strftime("%Y-%m-%d", time.localtime(self.recorded))


def get_pin(label: str) -> Pin | None:
    """The pin recorded for ``label`` (a URL, or ``hf:repo@rev/file``); None if there is none.

    Raises :class:`IntegrityError` naming the file when a pin file exists but is damaged or belongs to another
    source.
    """
    path = pin_path(label)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _damaged(path, label, f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = json.loads(raw.decode("utf-8"))
        pin = Pin(str(data["url"]), str(data["sha256"]), int(data["size"]), float(data["recorded"]))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(path, label, f"is damaged ({type(exc).__name__})") from None
    if pin.url != label or len(pin.sha256) != 64 or any(c not in "0123456789abcdef" for c in pin.sha256):
        raise _damaged(path, label, "is damaged (it does not hold a sha256 for this source)")
    return pin


def _damaged(path: Path, label: str, what: str) -> IntegrityError:
    return IntegrityError(
        f"the trust-on-first-use pin of {label} ({path}) {what}; zoo will not download it unverified",
        hint=f"restore the file from a backup, or delete it to trust the next download anew: rm '{path}'")


def record_pin(label: str, sha256: str, size: int) -> Pin:
    pin = Pin(label, sha256, size, time.time())
    write_json_atomic(pin.path, dataclasses.asdict(pin))
    return pin


def download_size(manifest: Manifest) -> int | None:
    """The bytes the manifest's download takes, for the first source whose size is known: from the manifest's
    pins, completed by those recorded on first use (which outlive ``zoo cache rm``)."""
    for source in manifest.sources:
        size = source.download_size if source.download_size is not None else _recorded_size(source)
        if size is not None:
            return size
    return None


def _recorded_size(source: Source) -> int | None:
    sizes = [pin.size if pin.size is not None else _pin_size(source.pin_label(name))
             for name, pin in source.pins.items()]
    return None if None in sizes else sum(s for s in sizes if s is not None)


def _pin_size(label: str) -> int | None:
    try:
        pin = get_pin(label)
    except IntegrityError as exc:  # a listing shows no size; the next pull of this source reports the damage
        log.debug("%s", exc)
        return None
    return pin.size if pin else None
