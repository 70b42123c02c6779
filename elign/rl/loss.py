"""The policy loss: PPO clipped surrogate plus a KL penalty to the frozen reference (pure functions)."""

from __future__ import annotations

import math

import torch

from elign.data.geometry import remove_mean_with_mask

__all__ = ["clipped_surrogate", "gaussian_kl", "warmup_cosine"]


def clipped_surrogate(
    logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-mean(min(r A, clip(r, 1 - eps, 1 + eps) A)) with r = exp(logp_new - logp_old).

    All inputs [M] (one entry per (rollout, step) pair). Returns the loss and detached statistics:
    clip_fraction (share of pairs where the clipped term is active), ratio mean/min/max and
    approx_kl = mean(logp_old - logp_new).
    """
    log_ratio = logp_new - logp_old
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
    loss = -torch.minimum(unclipped, clipped).mean()
    with torch.no_grad():
        stats = {
            "clip_fraction": (clipped < unclipped).float().mean(),
            "ratio_mean": ratio.mean(),
            "ratio_min": ratio.min(),
            "ratio_max": ratio.max(),
            "approx_kl": (-log_ratio).mean(),
        }
    return loss, stats


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(mean_ref, std^2)) = |mean - mean_ref|^2 / (2 std^2) over real atoms.

    mean, mean_ref [M, N, 3 + F], std [M], node_mask [M, N, 1] -> [M]; the position part is taken on
    the centre-of-mass-free subspace, where the policy lives.
    """
    d = mean - mean_ref
    dx = remove_mean_with_mask(d[..., :3], node_mask)
    dh = d[..., 3:] * node_mask
    sq = (dx**2).sum(dim=(1, 2)) + (dh**2).sum(dim=(1, 2))
    return sq / (2 * std**2)


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warm-up, cosine decay to ``min_ratio``, then held there (clamped)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
