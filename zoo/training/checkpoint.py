"""Training checkpoints: everything an interrupted run needs to continue exactly where it stopped.

``OUT/checkpoints/step-000001000/`` holds ``model.safetensors`` (fp32, canonical names), ``optimizer.pt`` (the
optimizer's and the schedule's state: tensors and plain containers only, read back with
``torch.load(weights_only=True)``) and ``state.json`` (the step, the data position, the run's settings). Each is
written into a staging sibling, then renamed into place; older checkpoints are removed only after the new one is
complete, so a crash — or a full disk — while saving leaves the previous checkpoint intact. Dropout randomness
is drawn from ``(seed, step, rank)`` at every step, so no generator state needs saving for an exact resume.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from zoo._fs import disk_full_is_an_error, rmtree
from zoo.errors import CheckpointError
from zoo.training.data import Position

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


def checkpoints(directory: Path) -> list[Checkpoint]:
    """The complete checkpoints under ``directory``, oldest first."""
    found = []
    for path in sorted(directory.glob("step-*")) if directory.is_dir() else []:
        if not _NAME.fullmatch(path.name):
            continue
        try:
            state = json.loads((path / STATE).read_text(encoding="utf-8"))
            position = Position(**state["position"])
            found.append(Checkpoint(path, int(state["step"]), position, dict(state["settings"]),
                                    dict(state.get("metrics") or {})))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s is incomplete or damaged; ignoring it", path)
    return found


def save(directory: Path, *, step: int, position: Position, settings: dict[str, Any],
         model: dict[str, torch.Tensor], optimizer: dict[str, Any], keep: int = 2,
         metrics: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``step`` atomically, then drop all but the newest ``keep``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:09d}"
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=directory))
    try:
        with disk_full_is_an_error(f"saving the checkpoint of step {step} in {directory}",
                                   hint="free some space and run again with --resume: the previous checkpoint is "
                                        "intact"):
            save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.items()},
                      str(staging / WEIGHTS))
            _torch_save(optimizer, staging / OPTIMIZER)
            state = {"step": step, "position": dataclasses.asdict(position), "settings": settings,
                     "metrics": metrics or {}}
            (staging / STATE).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            if final.exists():
                rmtree(final)
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in checkpoints(directory)[:-keep] if keep > 0 else []:
        _remove(old.path)
    return final


def _remove(path: Path) -> None:
    """Rename first (atomic), then delete: a run killed mid-way leaves a hidden leftover, never a half checkpoint."""
    doomed = path.with_name(f".{path.name}.delete-{os.getpid()}")
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
    """The model state and the optimizer/schedule state of a checkpoint."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        model = load_file(str(checkpoint.path / WEIGHTS), device=str(device))
        optimizer = torch.load(checkpoint.path / OPTIMIZER, map_location=device, weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{checkpoint.path} cannot be read: {exc}",
                              hint="delete this checkpoint directory; --resume then continues from the one before "
                                   "it") from None
    return model, optimizer


def clean_staging(directory: Path) -> None:
    """Remove what a killed run left half-written or half-deleted."""
    for path in directory.glob(".step-*") if directory.is_dir() else []:
        rmtree(path)
