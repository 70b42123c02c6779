"""Where a process computes: its device (one rule for every command and trainer) and torchrun support
shared by pretraining and alignment (join the process group, leave it cleanly)."""

from __future__ import annotations

import os

import torch

__all__ = [
    "average_gradients",
    "average_metrics",
    "average_tensor",
    "finish",
    "process_group_backend",
    "rank_world",
    "resolve_device",
]


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


def rank_world(device: str | None = "auto") -> tuple[int, int]:
    """Initialise torch.distributed under torchrun (nccl when this process computes on CUDA, else gloo, so a
    ``--device cpu`` run on a GPU machine uses gloo); (rank, world size)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(process_group_backend(resolve_device(device)))
    return dist.get_rank(), dist.get_world_size()


def process_group_backend(device: str) -> str:
    """'nccl' for a CUDA device (made this process's current one), 'gloo' for anything else."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        return "nccl"
    return "gloo"


def finish() -> None:
    """Under torchrun: wait for every process, then close the process group (a clean exit for gloo/nccl)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def average_gradients(model: torch.nn.Module, world: int) -> None:
    """Average gradients over processes in one collective: the gradients flattened into a single buffer on
    their own device (NCCL needs CUDA tensors; one call instead of one per parameter)."""
    if world == 1:
        return
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # a process that trained nothing this step still joins the collective, with zeros
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [total], on the gradients' device
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_tensor(x: torch.Tensor, world: int, device: torch.device | str) -> torch.Tensor:
    """The mean of a CPU tensor over processes, reduced on the process's device."""
    if world == 1:
        return x
    import torch.distributed as dist

    x = x.to(device)
    dist.all_reduce(x)
    return x.cpu() / world


def gather_lists(items: list, world: int) -> list:
    """Every process's list, concatenated in rank order (a copy of ``items`` in one process)."""
    if world == 1:
        return list(items)
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def average_metrics(metrics: dict, world: int, device: torch.device | str, sums: tuple[str, ...] = ()) -> dict:
    """Average the scalar metrics over processes (``sums``: counts, summed), reduced on the process's device."""
    if world == 1:
        return metrics
    import torch.distributed as dist

    keys = sorted(metrics)
    vals = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(vals)
    return {k: (v if k in sums else v / world) for k, v in zip(keys, vals.cpu().tolist(), strict=True)}
