"""Noise schedules as pure functions: a schedule name and T give the gamma table [T + 1].

gamma(t) = -log(alpha_t^2 / sigma_t^2), with alpha_t^2 + sigma_t^2 = 1 (variance preserving).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["gamma_table", "polynomial_alphas2", "cosine_alphas2"]


def _clip_alphas2(alphas2: np.ndarray, clip_value: float = 0.001) -> np.ndarray:
    """Clip the per-step ratio alpha_t^2 / alpha_{t-1}^2 from below for numerical stability."""
    alphas2 = np.concatenate([np.ones(1), alphas2])
    step = np.clip(alphas2[1:] / alphas2[:-1], clip_value, 1.0)
    return np.cumprod(step)


def polynomial_alphas2(timesteps: int, precision: float = 1e-4, power: float = 2.0) -> np.ndarray:
    """alpha_t^2 = (1 - (t/T)^power)^2, clipped, then squeezed into [precision, 1 - precision]. [T + 1]"""
    steps = timesteps + 1
    x = np.linspace(0, steps, steps)
    alphas2 = (1 - np.power(x / steps, power)) ** 2
    alphas2 = _clip_alphas2(alphas2)
    return (1 - 2 * precision) * alphas2 + precision


def cosine_alphas2(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal cosine schedule, clipped per step. [T + 1]"""
    steps = timesteps + 2
    x = np.linspace(0, steps, steps)
    f = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    alphas_cumprod = f / f[0]
    betas = np.clip(1 - alphas_cumprod[1:] / alphas_cumprod[:-1], 0, 0.999)
    return np.cumprod(1.0 - betas)


def gamma_table(schedule: str, timesteps: int, precision: float = 1e-5) -> torch.Tensor:
    """gamma at t = 0, 1/T, ..., 1 as float32 [T + 1], computed in float64.

    ``schedule`` is ``"polynomial_<power>"`` (EDM's default is ``polynomial_2``) or ``"cosine"``.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if schedule == "cosine":
        alphas2 = cosine_alphas2(timesteps)
    elif schedule.startswith("polynomial_"):
        try:
            power = float(schedule.split("_", 1)[1])
        except ValueError as e:
            raise ValueError(f"bad polynomial schedule {schedule!r}: expected e.g. 'polynomial_2'") from e
        alphas2 = polynomial_alphas2(timesteps, precision=precision, power=power)
    else:
        raise ValueError(f"unknown noise schedule {schedule!r}: use 'polynomial_<power>' or 'cosine'")
    sigmas2 = 1 - alphas2
    gamma = -(np.log(alphas2) - np.log(sigmas2))
    return torch.from_numpy(gamma).float()
