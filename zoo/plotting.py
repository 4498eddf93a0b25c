"""Training curves from run folders: ``zoo plot`` draws them, :class:`TensorBoardSink` logs them for TensorBoard.

A run folder's ``metrics.jsonl`` holds one JSON record per line: ``split`` ``"train"`` (averages over the steps
since the previous record; older runs wrote no ``split``), ``"dev"`` (fine-tuning), ``"eval"``
(pretraining's ``--eval-corpus``) or ``"test"`` (once, at the end). This module only reads folders and record
dicts, so it sits low in the layers: the training loop hands each record it writes to a :class:`TensorBoardSink`.
matplotlib and tensorboard are optional, imported only when a plot or a log is asked for; plots are drawn on
matplotlib's Agg canvas, never on a display.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._fs import disk_full_is_an_error, special_kind, write_bytes_atomic
from zoo._version import __version__
from zoo.errors import DataError, NotFoundError, UsageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger("zoo.plotting")

METRICS_FILE = "metrics.jsonl"
#: the dev metric drawn for a run whose settings name none: the first of these its evaluations hold
DEFAULT_METRICS = ("f1", "accuracy", "eval_mlm_accuracy")
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
#: in every plot's metadata; zoo plot replaces an existing file only when it carries this
MARKER = "zoo plot, zoo-checkpoints"
_EVALUATIONS = ("dev", "eval")
_PANEL_WIDTH, _HEIGHT, _DPI = 500, 420, 100
_INSTALL = "pip install 'zoo-checkpoints[plot]'"


# ----------------------------------------------------------------------------------------------- reading
def read_metrics(run: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` in file order, each with a ``split`` (``"train"`` where an older
    run wrote none). Lines that are not whole records (one cut short by a crash) are skipped."""
    folder = Path(run)
    path = folder if folder.name == METRICS_FILE and folder.is_file() else folder / METRICS_FILE
    if not path.is_file():
        if not folder.exists():
            raise NotFoundError(f"{folder}: no such directory")
        raise NotFoundError(f"{folder}: not a training run: no {METRICS_FILE}",
                            hint="name the --out folder of a zoo pretrain or zoo finetune run")
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise NotFoundError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    records = [record for _, record in whole_records(lines)]
    for record in records:
        record.setdefault("split", "train")
    skipped = sum(1 for line in lines if line.strip()) - len(records)
    if skipped:
        log.info("%s: skipped %d line(s) that are not whole records", path, skipped)
    return records


def whole_records(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The lines of a ``metrics.jsonl`` that are whole records (a JSON object with an integer ``step``), each with
    its record; the others (blank, or cut short by a crash) are left out."""
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and type(record.get("step")) is int:
            yield line, record


def run_settings(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's settings: its ``receipt.json``'s when it is complete, its ``run.json``'s while it is going, ``{}``
    when neither can be read (a plot needs them only for the metric's name)."""
    for name in ("receipt.json", "run.json"):
        try:
            data = json.loads((Path(run) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        settings = data.get("settings") if isinstance(data, dict) else None
        if isinstance(settings, dict):
            return settings
    return {}


def run_names(runs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Each run's folder name; runs whose names are equal get as many parent folders as tell them apart."""
    parts = [Path(os.path.abspath(run)).parts for run in runs]
    distinct = set(parts)
    names = []
    for mine in parts:
        depth = 1
        while depth < len(mine) and sum(p[-depth:] == mine[-depth:] for p in distinct) > 1:
            depth += 1
        names.append("/".join(mine[-depth:]).lstrip("/") or str(mine[0]))
    seen: dict[str, int] = {}
    for i, name in enumerate(names):  # the same folder named twice
        seen[name] = seen.get(name, 0) + 1
        names[i] = name if seen[name] == 1 else f"{name} #{seen[name]}"
    return names


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lower_is_better(metric: str) -> bool:
    """Losses improve downwards; every other metric zoo records (f1, accuracy …) upwards."""
    return metric.endswith("loss")


# ----------------------------------------------------------------------------------------- what to draw
@dataclasses.dataclass(frozen=True)
class Line:
    """One run's values of one quantity against step; ``best``: the (step, value) marked on it, if any."""

    run: str
    key: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    best: tuple[int, float] | None = None


@dataclasses.dataclass(frozen=True)
class Panel:
    title: str
    ylabel: str
    lines: tuple[Line, ...]


def _line(run: str, records: Iterable[dict[str, Any]], keys: Sequence[str], *, best: bool = False) -> Line | None:
    """The first of ``keys`` each record holds, against step; None when no record holds any."""
    points = []
    for record in records:
        key = next((k for k in keys if _number(record.get(k))), None)
        if key is not None:
            points.append((record["step"], float(record[key]), key))
    if not points:
        return None
    mark = None
    if best:
        finite = [p for p in points if math.isfinite(p[1])]
        pick = min if lower_is_better(points[0][2]) else max
        mark = pick(finite, key=lambda p: p[1])[:2] if finite else None
    return Line(run, points[0][2], tuple(p[0] for p in points), tuple(p[1] for p in points), mark)


def dev_metric(records: Sequence[dict[str, Any]], settings: dict[str, Any], metric: str | None = None) -> str | None:
    """The dev metric to draw: ``metric``, else the run's ``metric`` setting, else the first of
    :data:`DEFAULT_METRICS` its evaluations hold (None: none of them)."""
    chosen = metric or settings.get("metric")
    if isinstance(chosen, str):
        return chosen
    held = {k for r in records if r["split"] in _EVALUATIONS for k, v in r.items() if _number(v)}
    return next((m for m in DEFAULT_METRICS if m in held), None)


def panels(runs: Sequence[str | os.PathLike[str]], *, metric: str | None = None) -> list[Panel]:
    """Training loss, dev/eval loss and the dev metric of each run against step (a panel may have no lines)."""
    train, dev, scores = [], [], []
    splits: set[str] = set()
    for name, run in zip(run_names(runs), runs):
        records = read_metrics(run)
        train.append(_line(name, (r for r in records if r["split"] == "train"), ("loss",)))
        evaluations = [r for r in records if r["split"] in _EVALUATIONS]
        splits |= {r["split"] for r in evaluations}
        wanted = dev_metric(records, run_settings(run), metric)
        on_loss = wanted in ("loss", "eval_loss")  # the metric is the dev loss: mark its best there
        dev.append(_line(name, evaluations, ("loss", "eval_loss"), best=on_loss))
        if wanted and not on_loss:
            scores.append(_line(name, evaluations, (wanted,), best=True))
            if scores[-1] is None and evaluations:
                log.info("%s: its evaluations hold no %s", run, wanted)
    kept = tuple(line for line in scores if line)
    metrics = sorted({line.key for line in kept})
    where = "/".join(s for s in _EVALUATIONS if s in splits) or "dev"
    named = metrics[0].removeprefix("eval_") if len(metrics) == 1 else "metric"
    return [Panel("training loss", "loss", tuple(line for line in train if line)),
            Panel(f"{where} loss", "loss", tuple(line for line in dev if line)),
            Panel(f"{where} {named}", " / ".join(metrics) or "metric", kept)]


# --------------------------------------------------------------------------------------------- drawing
def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("zoo plot needs matplotlib, which is not installed", hint=_INSTALL) from None


def draw(runs: Sequence[str | os.PathLike[str]], *, metric: str | None = None,
         size: tuple[int, int] | None = None) -> Figure:
    """The figure of :func:`panels`, one panel per quantity that has data, each run in one colour throughout;
    ``size``: (width, height) in pixels (default 500 × 420 per panel). Panels without data are left out and the
    figure says so."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    planned = panels(runs, metric=metric)
    shown = [p for p in planned if p.lines]
    if not shown:
        raise DataError(f"nothing to plot: {', '.join(map(str, runs))} hold no records yet",
                        hint=f"a run writes {METRICS_FILE} every --log-every steps; plot it again later")
    width, height = size or (_PANEL_WIDTH * len(shown), _HEIGHT)
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    colours = {name: f"C{i % 10}" for i, name in enumerate(run_names(runs))}
    for axes, panel in zip(figure.subplots(1, len(shown), squeeze=False)[0], shown):
        _draw_panel(axes, panel, colours)
    missing = [p.title for p in planned if not p.lines]
    if missing:
        note = f"no {', no '.join(missing)} in {'this run' if len(runs) == 1 else 'these runs'}"
        figure.supxlabel(note, fontsize="small", color="0.4")
        log.info("%s", note)
    return figure


def _draw_panel(axes: Axes, panel: Panel, colours: dict[str, str]) -> None:
    keys = {line.key for line in panel.lines}
    for line in panel.lines:
        label = line.run if len(keys) == 1 else f"{line.run} ({line.key})"
        if line.best is not None:
            label += f", best {line.best[1]:.4g} at step {line.best[0]}"
        axes.plot(line.steps, line.values, color=colours[line.run], label=label,
                  marker="o" if len(line.steps) < 30 else None, markersize=3)
        if line.best is not None:
            (best,) = axes.plot(*line.best, color=colours[line.run], marker="*", markersize=12, linestyle="none",
                                label="_best")
            best.set_gid("best")
    axes.set_title(panel.title)
    axes.set_xlabel("step")
    axes.set_ylabel(panel.ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")


def save(figure: Figure, out: str | os.PathLike[str]) -> Path:
    """Write ``figure`` to ``out`` (PNG, SVG or PDF by its suffix) in one rename, with the modes of the user's
    umask. An existing file is replaced only when zoo plot drew it (its metadata say so)."""
    path = Path(out).expanduser().absolute()
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(f"--out {out}: cannot tell the image format from {path.suffix or 'no suffix'}",
                         hint=f"end the name with {', '.join(FORMATS)}")
    _may_replace(path)
    buffer = io.BytesIO()
    stamp = f"{MARKER} {__version__}"
    figure.savefig(buffer, format=kind, dpi=_DPI, metadata={"Software" if kind == "png" else "Creator": stamp})
    try:
        with disk_full_is_an_error(f"writing {path}", hint="free some space or choose another --out"):
            write_bytes_atomic(path, buffer.getvalue(), mode=0o666)
    except OSError as exc:
        raise UsageError(f"{path}: cannot be written ({exc.strerror or exc})", hint="choose another --out") from None
    return path


def _may_replace(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"--out {path}: {exc.strerror or exc}", hint="choose another --out") from None
    kind = special_kind(mode)
    if kind is None and _drawn_here(path):
        return
    raise UsageError(f"--out {path} already exists{f' and is {kind}' if kind else ''}",
                     hint="choose another --out or remove it: zoo plot replaces only a plot it drew")


def _drawn_here(path: Path, window: int = 1 << 16) -> bool:
    """Whether the file's metadata carry :data:`MARKER` (PNG and SVG write them first, PDF last)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(window)
            fh.seek(max(fh.seek(0, os.SEEK_END) - window, 0))
            tail = fh.read(window)
    except OSError:
        return False
    return MARKER.encode() in head or MARKER.encode() in tail


def plot_runs(runs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, metric: str | None = None,
              size: tuple[int, int] | None = None) -> Path:
    """Draw the runs' curves (:func:`draw`) into ``out`` (:func:`save`); returns the absolute path written."""
    return save(draw(runs, metric=metric, size=size), out)


# ----------------------------------------------------------------------------------------- TensorBoard
_BOOKKEEPING = frozenset({"step", "split", "time", "steps"})


def scalars(record: dict[str, Any]) -> list[tuple[str, float]]:
    """A metrics record's numbers as TensorBoard tags ``split/name`` (``eval_loss`` of split ``eval`` is
    ``eval/loss``; nested dicts such as ``per_label`` become ``dev/per_label/PER/f1``)."""
    split = str(record.get("split", "train"))
    found: list[tuple[str, float]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key}", inner)
        elif _number(value):
            found.append((prefix, float(value)))

    for key, value in record.items():
        if key not in _BOOKKEEPING:
            walk(f"{split}/{key.removeprefix(split + '_')}", value)
    return found


class TensorBoardSink:
    """Writes metrics records (the dicts of ``metrics.jsonl``) as TensorBoard scalars into ``directory``, at the
    record's step and time, flushed after each record so ``tensorboard --logdir`` shows a run as it goes. Needs the
    ``tensorboard`` package (through torch's ``SummaryWriter``). Call it with each record; close it at the end
    (or use it as a context manager)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("TensorBoard logs need the tensorboard package, which is not installed",
                             hint="pip install tensorboard") from None
        self.directory = Path(directory).expanduser().absolute()
        try:
            self._writer = SummaryWriter(log_dir=str(self.directory))
        except OSError as exc:
            raise UsageError(f"--tensorboard {self.directory}: cannot be written ({exc.strerror or exc})",
                             hint="choose another --tensorboard directory") from None

    def __call__(self, record: dict[str, Any]) -> None:
        step, walltime = record.get("step"), record.get("time")
        if type(step) is not int:
            return
        for tag, value in scalars(record):
            self._writer.add_scalar(tag, value, step, walltime=walltime if _number(walltime) else None)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_tensorboard(runs: Sequence[str | os.PathLike[str]], directory: str | os.PathLike[str]) -> list[Path]:
    """Replay finished (or running) runs' ``metrics.jsonl`` into ``directory/<run name>/`` for TensorBoard; a
    run's folder there that already holds files is refused (its curves would be drawn twice)."""
    root = Path(directory).expanduser().absolute()
    targets = [root / name for name in run_names(runs)]
    records = [read_metrics(run) for run in runs]
    for target in targets:
        if target.is_dir() and any(target.iterdir()):
            raise UsageError(f"{target} already holds TensorBoard logs",
                             hint="choose another --tensorboard directory")
    for target, run_records in zip(targets, records):
        with TensorBoardSink(target) as sink:
            for record in run_records:
                sink(record)
    return targets


__all__ = ["DEFAULT_METRICS", "FORMATS", "METRICS_FILE", "Line", "Panel", "TensorBoardSink", "dev_metric", "draw",
           "lower_is_better", "panels", "plot_runs", "read_metrics", "run_names", "run_settings", "save", "scalars",
           "whole_records", "write_tensorboard"]
