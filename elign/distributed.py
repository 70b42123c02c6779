"""torchrun support shared by pretraining and alignment: join the process group, leave it cleanly."""

from __future__ import annotations

import os

import torch

__all__ = ["rank_world", "finish"]


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
