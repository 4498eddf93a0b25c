"""Training checkpoints: everything an interrupted run needs to continue exactly where it stopped.

``OUT/checkpoints/step-000001000/`` holds ``model.safetensors`` (fp32), ``optimizer.pt`` (optimizer, schedule and
scaler state: tensors and plain containers, read back with ``torch.load(weights_only=True)``) and ``state.json``
(the step, the data position, the run's settings, the task's state, and the sha256 of the other two files). A
checkpoint appears by one atomic rename (:func:`zoo._fs.staged_directory`) and older ones are removed only after
it, so a crash or a full disk while saving leaves the previous checkpoint intact; the one resumed from is
re-hashed first. Dropout is drawn from ``(seed, step, rank)``, so no generator state needs saving.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from zoo._fs import disk_full_is_an_error, rmtree, sha256_file, staged_directory
from zoo.errors import CheckpointError
from zoo.training.feeding import Position

log = logging.getLogger("zoo.training")

STATE, WEIGHTS, OPTIMIZER = "state.json", "model.safetensors", "optimizer.pt"
_NAME = re.compile(r"step-(\d{9})")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    position: Position
    settings: dict[str, Any]
    #: the training metrics of its step (what the run's receipt reports as final)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: what the task keeps between steps (best evaluation so far, evaluations without improvement)
    task: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: sha256 and size of model.safetensors and optimizer.pt, as written
    files: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def checkpoints(directory: Path) -> list[Path]:
    """The checkpoint directories under ``directory``, oldest first (read them with :func:`read`)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.fullmatch(p.name))


def read(path: Path) -> Checkpoint:
    """A checkpoint's ``state.json``, checked value by value: damage is a :class:`CheckpointError` naming the file
    and what to do."""
    state_file = path / STATE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        step, pos = state["step"], state["position"]
        position = Position(**{k: pos[k] for k in ("epoch", "index", "consumed")})
        values = [step, position.epoch, position.index, position.consumed]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ValueError("step and position must be whole numbers >= 0")
        if int(_NAME.fullmatch(path.name).group(1)) != step:  # type: ignore[union-attr]
            raise ValueError(f"it records step {step}")
        if position.epoch > position.consumed or position.index > position.consumed:
            raise ValueError("its data position lies beyond the examples consumed")
        files = state.get("files") or {}
        for name in (WEIGHTS, OPTIMIZER):
            record = files.get(name)
            if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
                    and isinstance(record.get("size"), int)):
                raise ValueError(f"no sha256/size recorded for {name}")
        checkpoint = Checkpoint(path, step, position, dict(state["settings"]), dict(state.get("metrics") or {}),
                                dict(state.get("task") or {}), files)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{state_file} is damaged or incomplete ({exc})", hint=fallback_hint(path)) from None
    return checkpoint


def verify(checkpoint: Checkpoint) -> None:
    """Re-hash the checkpoint's files against the sha256 recorded when they were written."""
    for name, record in checkpoint.files.items():
        path = checkpoint.path / name
        try:
            digest, size = sha256_file(path)
        except OSError as exc:
            raise CheckpointError(f"{path} cannot be read ({exc.strerror or exc})",
                                  hint=fallback_hint(checkpoint.path)) from None
        if (digest, size) != (record["sha256"], record["size"]):
            raise CheckpointError(f"{path} is damaged: its sha256 is not the one recorded when it was written",
                                  hint=fallback_hint(checkpoint.path))


def fallback_hint(path: Path) -> str:
    """What to do about a damaged checkpoint: fall back to the one before it."""
    older = [p for p in checkpoints(path.parent) if p.name < path.name]
    if older:
        return f"delete {path}; --resume then continues from {older[-1].name}"
    return f"delete {path.parent} and start the run again (there is no older checkpoint)"


def save(directory: Path, *, step: int, position: Position, settings: dict[str, Any],
         model: dict[str, torch.Tensor], optimizer: dict[str, Any], keep: int = 2,
         metrics: dict[str, Any] | None = None, task: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``step`` atomically, then drop all but the newest ``keep``."""
    from safetensors.torch import save_file

    final = directory / f"step-{step:09d}"
    with disk_full_is_an_error(f"saving the checkpoint of step {step} in {directory}",
                               hint="free some space and run again with --resume: the previous checkpoint is "
                                    "intact"), staged_directory(final, replace=True) as staging:
        save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.items()},
                  str(staging / WEIGHTS))
        _torch_save(optimizer, staging / OPTIMIZER)
        files = {}
        for name in (WEIGHTS, OPTIMIZER):
            digest, size = sha256_file(staging / name)
            files[name] = {"sha256": digest, "size": size}
        state = {"step": step, "position": dataclasses.asdict(position), "settings": settings,
                 "metrics": metrics or {}, "task": task or {}, "files": files}
        (staging / STATE).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for old in checkpoints(directory)[:-keep] if keep > 0 else []:
        _remove(old)
    return final


def _remove(path: Path) -> None:
    """Rename first (atomic), then delete: a run killed mid-way leaves a hidden leftover, never a half checkpoint."""
    from zoo._fs import staging_path

    doomed = staging_path(path)
    os.rename(path, doomed)
    rmtree(doomed)


def _torch_save(obj: Any, path: Path) -> None:
    """``torch.save``, whose writer reports a full disk as a RuntimeError: turned back into ENOSPC."""
    try:
        torch.save(obj, path)
    except RuntimeError:
        if shutil.disk_usage(path.parent).free < (1 << 20):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise


def load(checkpoint: Checkpoint, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model state and the optimizer/schedule state of a checkpoint (call :func:`verify` first)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model = load_file(str(checkpoint.path / WEIGHTS), device=str(device))
        optimizer = torch.load(checkpoint.path / OPTIMIZER, map_location=device, weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint.path} cannot be read: {exc}",
                              hint=fallback_hint(checkpoint.path)) from None
    return model, optimizer


__all__ = ["Checkpoint", "checkpoints", "fallback_hint", "load", "read", "save", "verify"]
