"""Data parallelism through torchrun: one process per device, gradients averaged by DistributedDataParallel.

``torchrun --nproc-per-node N -m convolab train ...`` starts N copies of the command and sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and the rendezvous address) in their environments;
:func:`init_distributed` reads them and joins the process group: NCCL between GPUs, gloo on CPUs.
Every process holds the whole (small) dataset, draws the same order and trains on its own slice
of each batch (``convolab.data.DeviceLoader``); DDP averages the gradients, so the step equals one
on the whole batch. Rank 0 alone writes the run directory.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "all_reduce_sum", "all_min", "gather_objects"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (world_size 1: not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False  # whether convolab started the process group (and ends it)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes in the environment (if any); returns it and this
    process's device (``cuda:LOCAL_RANK`` on GPUs).

    Raises:
        ValueError: more processes than GPUs on this machine.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} on this machine but only {torch.cuda.device_count()} GPU(s); "
                             "use --nproc-per-node <= the number of GPUs")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=10))
        initialized_here = True
    if rank != 0:  # one voice: the others print warnings and errors only
        logging.getLogger("convolab").setLevel(logging.WARNING)
    return DistInfo(rank, local_rank, world, initialized_here), device


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over all processes, in place (one collective per tensor)."""
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_min(flag: bool, device: torch.device) -> bool:
    """True only if ``flag`` is true in every process."""
    return bool(all_min_on_device(torch.tensor(flag, device=device)))


def all_min_on_device(t: torch.Tensor) -> torch.Tensor:
    """True where ``t`` is true in every process, left on the device (no host sync)."""
    t = t.to(torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.bool()


def gather_objects(obj: object, info: DistInfo) -> list | None:
    """Every process's ``obj`` on rank 0 (in rank order); None on the others."""
    out = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out
