"""The one progress layer: every download, extraction, conversion, tokenization and training run reports
:class:`ProgressEvent`s to a callback, and :class:`Bars` turns them into tqdm bars (or plain periodic lines where
stderr is not a terminal).

Library code never prints; it calls the callback it was given. Entry points take ``progress=``:

- ``None`` (default): bars when a person is watching — stderr is a terminal or the code runs in a notebook —
  unless ``ZOO_PROGRESS=0``; ``ZOO_PROGRESS=1`` forces them on.
- ``False``: silent. ``True``: bars (plain lines when stderr is not a terminal).
- a callable: receives every event (for your own UI or logging).

tqdm is the one progress library (huggingface_hub, which zoo uses for ``hf:`` sources, draws with it too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

#: Stages that carry ``done``/``total`` counts and get a bar.
COUNTED = frozenset({"download", "verify", "convert", "tokenize", "train", "write"})


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """What a long operation is doing.

    ``stage``: ``download`` / ``verify`` / ``convert`` / ``tokenize`` / ``write`` / ``train`` (counted: ``done`` of
    ``total`` ``unit``; total ``None`` when unknown), ``extract``, ``wait`` (another process holds the entry),
    ``note`` (a message) or ``done`` (the label's work is finished). ``unit`` is ``"B"`` for bytes (shown as
    sizes) or a word such as ``"step"``. ``postfix`` holds figures shown next to a bar (loss, tokens/s).
    ``initial``: where this session of the work started (a resumed run or download): rates and time left count
    only what was done since.
    """

    stage: str
    label: str
    done: float = 0
    total: float | None = None
    message: str = ""
    unit: str = "B"
    postfix: Mapping[str, Any] | None = None
    initial: float = 0


ProgressCallback = Callable[[ProgressEvent], None]
Progress = bool | ProgressCallback | None


def _silent(event: ProgressEvent) -> None:
    return None


def wanted(progress: Progress) -> bool:
    """Whether ``progress=None`` means bars here (see the module docstring)."""
    if progress is not None:
        return bool(progress)
    forced = env_setting()
    return _interactive() if forced is None else forced


def env_setting() -> bool | None:
    """``ZOO_PROGRESS``: False when it turns progress off, True when it forces bars on, None when unset (or
    neither)."""
    setting = os.environ.get("ZOO_PROGRESS", "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False
    if setting in ("1", "true", "yes", "on"):
        return True
    return None


def waiting(emit: ProgressCallback | None, label: str) -> Callable[[str], None]:
    """An ``on_wait`` callback for a lock: each message becomes a ``wait`` event for ``label`` (nothing without
    ``emit``)."""
    def on_wait(message: str) -> None:
        if emit is not None:
            emit(ProgressEvent("wait", label, message=message))

    return on_wait


def _interactive() -> bool:
    if "ipykernel" in sys.modules:  # a notebook: stderr is not a TTY, but a person is watching
        return True
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[ProgressCallback]:
    """The callback for an entry point's ``progress=`` argument, closed (bars finished) when the block ends."""
    if callable(progress):
        yield progress
        return
    if not wanted(progress):
        yield _silent
        return
    bars = Bars()
    try:
        yield bars
    finally:
        bars.close()


class Bars:
    """Progress events → tqdm bars on a terminal (one per label), else a line at start, every ``every``
    seconds and at the end. Thread-safe: downloads report from worker threads."""

    def __init__(self, stream: IO[str] | None = None, *, plain: bool | None = None, every: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.plain = (not _interactive()) if plain is None else plain
        self.every = every
        self._bars: dict[tuple[str, str], Any] = {}
        self._lines: dict[tuple[str, str], tuple[float, float, float]] = {}  # key -> (started, last line, done then)
        #: bars and lines already finished: a repeated final event (a reader reporting its end twice) draws nothing
        self._ended: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.stage in COUNTED:
                self._count(event)
            elif event.stage == "done":
                self._finish(event.label)
            elif event.message:
                self._write(f"{event.label}: {event.message}")

    # ------------------------------------------------------------------------------------------ bars
    def _count(self, event: ProgressEvent) -> None:
        key = (event.stage, event.label)
        finished = event.total is not None and event.done >= event.total
        if key in self._ended:
            if finished:
                return
            self._ended.discard(key)  # the same stage again, from the start
        if finished:
            self._ended.add(key)
        if self.plain:
            self._plain(key, event)
            return
        bar = self._bars.get(key)
        if bar is None:
            desc = f"{event.label} ({event.stage})"
            if event.unit == "B":  # sizes as zoo prints them everywhere: KiB, MiB, GiB (tqdm would say kB, M)
                bar = _byte_bar()(total=event.total, desc=desc, file=self.stream, dynamic_ncols=True, leave=True,
                                  mininterval=0.2, bar_format=_byte_format(event.total))
            else:
                from tqdm.auto import tqdm

                bar = tqdm(total=event.total, desc=desc, file=self.stream, unit=event.unit, dynamic_ncols=True,
                           leave=True, mininterval=0.2, initial=event.initial)
            self._bars[key] = bar
        if event.total != bar.total:
            bar.total = event.total
            if event.unit == "B":
                bar.bar_format = _byte_format(event.total)
        bar.n = event.done
        if event.postfix:
            bar.set_postfix(event.postfix, refresh=False)
        bar.refresh() if (event.total is not None and event.done >= event.total) else bar.update(0)
        if event.total is not None and event.done >= event.total and event.stage != "train":
            self._close_bar(key)

    def _close_bar(self, key: tuple[str, str]) -> None:
        bar = self._bars.pop(key, None)
        if bar is not None:
            bar.close()

    def _finish(self, label: str) -> None:
        for key in [k for k in self._bars if k[1] == label]:
            self._close_bar(key)
        for key in [k for k in self._lines if k[1] == label]:
            del self._lines[key]
        self._ended = {k for k in self._ended if k[1] != label}

    # -------------------------------------------------------------------------------------- plain lines
    def _plain(self, key: tuple[str, str], event: ProgressEvent) -> None:
        now = time.monotonic()
        stage, label = key
        finished = event.total is not None and event.done >= event.total
        if key not in self._lines:
            # rates count from this first event: what was done before it (a resumed run's steps) took no time now
            self._lines[key] = (now, now, event.done)
            begun = f" at {_amount(event.initial, event.unit)}" if event.initial else ""
            self._write(f"{label}: {stage} started{begun} ({_amount(event.total, event.unit)})")
            if not finished:
                return
        started, last, first = self._lines[key]
        if not finished and now - last < self.every:
            return
        self._lines[key] = (started, now, first)
        elapsed = max(now - started, 1e-6)
        speed = max(event.done - first, 0) / elapsed
        pct = f"{100 * event.done / event.total:.0f}% " if event.total else ""
        timing = f"{_clock(elapsed)} elapsed"
        if not finished and event.total and speed > 0:
            timing += f", {_clock((event.total - event.done) / speed)} left"
        rate = f"{_amount(speed, event.unit)}/s, " if speed > 0 else ""
        extra = "".join(f", {k} {_fmt(v)}" for k, v in (event.postfix or {}).items())
        verb = "done" if finished else "at"
        self._write(f"{label}: {stage} {verb} {pct}{_amount(event.done, event.unit)} of "
                    f"{_amount(event.total, event.unit)} ({rate}{timing}{extra})")
        if finished:
            del self._lines[key]

    def _write(self, text: str) -> None:
        if self._bars:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        with self._lock:
            for key in list(self._bars):
                self._close_bar(key)
            self._lines.clear()
            self._ended.clear()


def _byte_format(total: float | None) -> str:
    if total is None:
        return "{desc}: {zoo_n} [{elapsed}, {zoo_rate}]"
    return "{desc}: {percentage:3.0f}%|{bar}| {zoo_n}/{zoo_total} [{elapsed}<{remaining}, {zoo_rate}]"


_BYTE_BAR: type | None = None


def _byte_bar() -> type:
    """A tqdm bar whose byte counts and speed are formatted by :func:`zoo._fs.human_size`."""
    global _BYTE_BAR
    if _BYTE_BAR is None:
        from tqdm.auto import tqdm

        from zoo._fs import human_size

        class ByteBar(tqdm):  # type: ignore[misc]
            @property
            def format_dict(self) -> dict[str, Any]:
                d: dict[str, Any] = super().format_dict
                rate = d.get("rate") or (d["n"] / d["elapsed"] if d.get("elapsed") else None)
                d.update(zoo_n=human_size(d["n"]), zoo_total=human_size(d["total"]) if d["total"] else "?",
                         zoo_rate=f"{human_size(rate)}/s" if rate else "?/s")
                return d

        _BYTE_BAR = ByteBar
    return _BYTE_BAR


def _amount(n: float | None, unit: str) -> str:
    if unit == "B":
        from zoo._fs import human_size

        return human_size(n)
    if n is None:
        return f"? {unit}s"
    if float(n).is_integer() or n >= 10:
        return f"{n:,.0f} {unit}s"
    return f"{n:.1f} {unit}s"


def _clock(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``2 h 10 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["Bars", "Progress", "ProgressCallback", "ProgressEvent", "env_setting", "reporting", "waiting", "wanted"]
