"""Where a process computes: its device (one rule for every command and trainer) and torchrun support
shared by pretraining and alignment (join the process group, leave it cleanly)."""

from __future__ import annotations

import os

import torch

__all__ = ["finish", "rank_world", "resolve_device"]


def resolve_device(name: str | None = "auto") -> str:
    """``auto`` (or None): this process's GPU (``cuda:LOCAL_RANK`` under torchrun, else ``cuda:0``) when CUDA
    is available, else ``cpu``; any other name is checked (ValueError for a name torch does not know, or
    for CUDA asked for where there is none) and returned as given."""
    if name in (None, "auto"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name} requested but CUDA is not available")
    return name


def rank_world() -> tuple[int, int]:
    """Initialise torch.distributed under torchrun (gloo on CPU, nccl on CUDA); (rank, world size)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def finish() -> None:
    """Under torchrun: wait for every process, then close the process group (a clean exit for gloo/nccl)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
