"""DiffusionScheduler: EDM's noise schedule and the Gaussian maths around the network, apart from it.

The network (:meth:`EquivariantDiffusion.predict_eps`) predicts the noise; the scheduler does everything else,
one entry point per operation: noising (:meth:`add_noise`), the x0 prediction (:meth:`x0_from_eps`), the reverse
Gaussian p(z_s | z_t) (:meth:`reverse`) and a step of it with its log-probability (:meth:`step`). Sampling, the
training loss and the alignment rollouts all call it. Paper names (Hoogeboom et al. 2022): gamma_t =
-log(alpha_t^2 / sigma_t^2), z_t = alpha_t * [x, h] + sigma_t * eps, eps centre-of-mass free on the positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from elign.data.geometry import (
    com_free_dimension,
    remove_mean_with_mask,
    sample_center_gravity_zero_gaussian,
    sample_gaussian_with_mask,
)
from elign.diffusion.schedule import gamma_table

__all__ = ["DiffusionScheduler", "GammaTable", "ReverseStep", "gaussian_log_prob"]


class GammaTable(nn.Module):
    """gamma(t) by lookup at round(t * T); the table is a frozen parameter named ``gamma`` (the name of EDM's
    state dicts)."""

    def __init__(self, schedule: str, timesteps: int, precision: float) -> None:
        super().__init__()
        self.timesteps = timesteps
        self.gamma = nn.Parameter(gamma_table(schedule, timesteps, precision), requires_grad=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.gamma[torch.round(t * self.timesteps).long()]


@dataclass
class ReverseStep:
    """One step z_t -> z_s of the reverse chain, a Gaussian with one scalar std per molecule."""

    z_s: torch.Tensor  # [B, N, 3 + F] the sampled latent (positions CoM free)
    mean: torch.Tensor  # [B, N, 3 + F]
    std: torch.Tensor  # [B]
    log_prob: torch.Tensor  # [B] log p(z_s | z_t) over real atoms, positions on the CoM-free subspace
    x0_pred: torch.Tensor  # [B, N, 3 + F] prediction of the clean (normalised) latent
    eps: torch.Tensor  # [B, N, 3 + F] the network's noise prediction


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, std^2 I) over real atoms, the position part on the CoM-free subspace. -> [B]

    z, mean [B, N, 3 + F]; std [B]; node_mask [B, N, 1].
    """
    dx = remove_mean_with_mask(z[..., :3] - mean[..., :3], node_mask)  # [B, N, 3]
    dh = (z[..., 3:] - mean[..., 3:]) * node_mask  # [B, N, F]
    sq = (dx**2).sum(dim=(1, 2)) + (dh**2).sum(dim=(1, 2))  # [B]
    dof = com_free_dimension(node_mask) + node_mask[..., 0].sum(1) * dh.shape[-1]  # [B]
    var = std**2
    return -0.5 * sq / var - 0.5 * dof * torch.log(2 * math.pi * var)


class DiffusionScheduler:
    """The gamma table of a model (shared with it, so it moves with the model) and the maths of its chain; times
    t, s are [B] or [B, 1] in [0, 1]."""

    def __init__(self, gamma: GammaTable, feature_dim: int) -> None:
        self.gamma = gamma
        self.feature_dim = feature_dim

    @property
    def T(self) -> int:
        return self.gamma.timesteps

    def gamma_of(self, t: torch.Tensor) -> torch.Tensor:
        """[B] gamma_t."""
        return self.gamma(t).view(t.shape[0])

    @staticmethod
    def alpha(gamma: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.sigmoid(-gamma))

    @staticmethod
    def sigma(gamma: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.sigmoid(gamma))

    @staticmethod
    def alpha_sigma_t_given_s(gamma_t: torch.Tensor, gamma_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma^2_{t|s}, alpha_{t|s}) for s < t, stable in float32."""
        sigma2_t_given_s = -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))
        alpha_t_given_s = torch.exp(0.5 * (F.logsigmoid(-gamma_t) - F.logsigmoid(-gamma_s)))
        return sigma2_t_given_s, alpha_t_given_s

    def sample_noise(self, node_mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """eps [B, N, 3 + F]: CoM-free Gaussian positions, Gaussian features, zero padding."""
        eps_x = sample_center_gravity_zero_gaussian(node_mask, generator)
        eps_h = sample_gaussian_with_mask(node_mask, self.feature_dim, generator)
        return torch.cat([eps_x, eps_h], dim=-1)

    def add_noise(self, xh: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """q(z_t | x): z_t = alpha_t xh + sigma_t eps for xh, eps [B, N, 3 + F]."""
        g = self.gamma_of(t).view(-1, 1, 1)
        return self.alpha(g) * xh + self.sigma(g) * eps

    def x0_from_eps(self, z_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(z_t - sigma_t eps) / alpha_t."""
        g = self.gamma_of(t).view(-1, 1, 1)
        return (z_t - self.sigma(g) * eps) / self.alpha(g)

    def reverse(self, z_t, eps, s, t, node_mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p(z_s | z_t) given the network's noise prediction ``eps``: mean [B, N, 3+F], std [B] and the x0
        prediction [B, N, 3+F]."""
        B = z_t.shape[0]
        gamma_s, gamma_t = self.gamma_of(s), self.gamma_of(t)
        sigma2_ts, alpha_ts = self.alpha_sigma_t_given_s(gamma_t, gamma_s)
        sigma_s, sigma_t = self.sigma(gamma_s), self.sigma(gamma_t)
        c = (sigma2_ts / alpha_ts / sigma_t).view(B, 1, 1)
        mean = (z_t / alpha_ts.view(B, 1, 1) - c * eps) * node_mask
        std = torch.sqrt(sigma2_ts) * sigma_s / sigma_t  # [B]
        return mean, std, self.x0_from_eps(z_t, eps, t) * node_mask

    def step(
        self, z_t, eps, s, t, node_mask, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> ReverseStep:
        """Sample z_s ~ p(z_s | z_t) given ``eps``; ``noise`` (CoM-free) may replace the generator. The
        log-probability is that of the CoM-free Gaussian over real atoms."""
        mean, std, x0 = self.reverse(z_t, eps, s, t, node_mask)
        if noise is None:
            noise = self.sample_noise(node_mask, generator)
        z_s = mean + std.view(-1, 1, 1) * noise
        z_s = torch.cat([remove_mean_with_mask(z_s[..., :3], node_mask), z_s[..., 3:] * node_mask], dim=-1)
        return ReverseStep(z_s, mean, std, gaussian_log_prob(z_s, mean, std, node_mask), x0, eps)
