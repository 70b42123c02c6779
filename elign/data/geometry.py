"""Masked centre-of-mass operations on dense batches (EDM conventions: unit masses)."""

from __future__ import annotations

import torch

__all__ = [
    "remove_mean_with_mask",
    "check_generator",
    "sample_center_gravity_zero_gaussian",
    "sample_gaussian_with_mask",
    "com_free_dimension",
]


def remove_mean_with_mask(x: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """x [B, N, D], node_mask [B, N, 1] -> x minus the mean over real atoms, zero on padding."""
    n = node_mask.sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1, 1]
    mean = (x * node_mask).sum(dim=1, keepdim=True) / n  # [B, 1, D]
    return (x - mean) * node_mask


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """A generator must live on the device it draws for (a CPU generator cannot fill a CUDA tensor); this
    says so in words, on any machine, instead of failing deep inside a CUDA kernel call."""
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError(
            f"a generator on {generator.device} cannot draw noise for tensors on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )


def sample_center_gravity_zero_gaussian(
    node_mask: torch.Tensor, generator: torch.Generator | None = None, dims: int = 3
) -> torch.Tensor:
    """Standard Gaussian projected on the centre-of-mass-free subspace: [B, N, dims]."""
    B, N, _ = node_mask.shape
    check_generator(generator, node_mask.device)
    x = torch.randn(B, N, dims, generator=generator, device=node_mask.device, dtype=node_mask.dtype)
    return remove_mean_with_mask(x * node_mask, node_mask)


def sample_gaussian_with_mask(
    node_mask: torch.Tensor, features: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Standard Gaussian [B, N, features], zero on padding."""
    B, N, _ = node_mask.shape
    check_generator(generator, node_mask.device)
    h = torch.randn(B, N, features, generator=generator, device=node_mask.device, dtype=node_mask.dtype)
    return h * node_mask


def com_free_dimension(node_mask: torch.Tensor, dims: int = 3) -> torch.Tensor:
    """Degrees of freedom of CoM-free positions per molecule: (N - 1) * dims, [B]."""
    return (node_mask[..., 0].sum(dim=1) - 1) * dims
