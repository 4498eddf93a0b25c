"""The processes of a run: one, or one of ``torchrun``'s (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from zoo.loader import pick_device


@dataclasses.dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """The first process: the one that downloads, tokenizes, writes and reports."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float] | torch.Tensor) -> list[float]:
        """Element-wise sum over the processes (float64 on the process's device)."""
        t = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        if self.size > 1:
            torch.distributed.all_reduce(t)
        totals: list[float] = t.tolist()
        return totals

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order, on every process."""
        if self.size == 1:
            return [value]
        values: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(values, value)
        return values


@contextlib.contextmanager
def joined(device: str | torch.device) -> Iterator[World]:
    """This process's place in the run, for the duration of the block. A process group created here is destroyed
    when the block ends, success or failure: left alive until the interpreter exits, a gloo worker thread still
    releasing the last collective's tensors needs the GIL while Python finalizes, and the process dies of SIGABRT
    ("terminate called without an active exception"). A group the caller made is left alone."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        yield World(0, 1, 0, pick_device(device))
        return
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    started = not torch.distributed.is_initialized()
    if started:
        # DDP imports it; imported after the group exists, its functions' `group=WORLD` defaults would keep it alive
        importlib.import_module("torch.distributed.nn")
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        yield World(rank, size, local, dev)
    finally:
        if started and torch.distributed.is_initialized():
            gc.collect()  # a DDP wrapper let go may still hold the group in a reference cycle
            torch.distributed.destroy_process_group()  # the last reference: joins the group's threads


__all__ = ["World", "joined"]
