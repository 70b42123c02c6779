"""EquivariantDiffusion: normalisation, the l2 training loss and the Gaussian reverse step.

Paper names throughout (Hoogeboom et al. 2022): gamma_t = -log(alpha_t^2 / sigma_t^2),
z_t = alpha_t * [x, h] + sigma_t * eps, with eps centre-of-mass free on the position part.
Parameter and buffer names match the original implementation (``gamma.gamma``, ``buffer``,
``dynamics.egnn.*``) so its state dicts load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from elign.data.batch import MoleculeBatch
from elign.data.geometry import (
    com_free_dimension,
    remove_mean_with_mask,
    sample_center_gravity_zero_gaussian,
    sample_gaussian_with_mask,
)
from elign.diffusion.objective import TrainingObjective
from elign.diffusion.schedule import gamma_table

__all__ = ["EquivariantDiffusion", "GammaTable", "ReverseStep", "gaussian_log_prob"]


class GammaTable(nn.Module):
    """gamma(t) by lookup at round(t * T); the table is a frozen parameter named ``gamma``."""

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


class EquivariantDiffusion(nn.Module):
    def __init__(
        self,
        dynamics: nn.Module,
        num_types: int,
        include_charges: bool = True,
        timesteps: int = 1000,
        noise_schedule: str = "polynomial_2",
        noise_precision: float = 1e-5,
        norm_values: tuple[float, float, float] = (1.0, 4.0, 10.0),
    ) -> None:
        super().__init__()
        self.dynamics = dynamics
        self.gamma = GammaTable(noise_schedule, timesteps, noise_precision)
        self.register_buffer("buffer", torch.zeros(1))
        self.num_types = num_types
        self.include_charges = include_charges
        self.T = timesteps
        self.norm_values = tuple(float(v) for v in norm_values)

    @property
    def feature_dim(self) -> int:
        """F: per-atom features after the 3 position dimensions."""
        return self.num_types + int(self.include_charges)

    # ------------------------------------------------------------ schedule maths
    @staticmethod
    def alpha(gamma: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.sigmoid(-gamma))

    @staticmethod
    def sigma(gamma: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.sigmoid(gamma))

    @staticmethod
    def alpha_sigma_t_given_s(gamma_t: torch.Tensor, gamma_s: torch.Tensor):
        """(sigma^2_{t|s}, alpha_{t|s}) for s < t, stable in float32."""
        sigma2_t_given_s = -torch.expm1(F.softplus(gamma_s) - F.softplus(gamma_t))
        alpha_t_given_s = torch.exp(0.5 * (F.logsigmoid(-gamma_t) - F.logsigmoid(-gamma_s)))
        return sigma2_t_given_s, alpha_t_given_s

    # ------------------------------------------------------------ normalisation
    def normalize(self, batch: MoleculeBatch) -> torch.Tensor:
        """MoleculeBatch -> normalised latent [B, N, 3 + F]: [x/n0, one_hot/n1, charges/n2]."""
        m = batch.node_mask
        parts = [batch.positions / self.norm_values[0] * m, batch.one_hot / self.norm_values[1] * m]
        if self.include_charges:
            parts.append(batch.charges / self.norm_values[2] * m)
        return torch.cat(parts, dim=-1)

    def centred_latent(self, batch: MoleculeBatch) -> torch.Tensor:
        """The normalised latent [B, N, 3 + F] of ``batch`` with its positions moved to their centre of mass."""
        m = batch.node_mask
        return self.normalize(MoleculeBatch(remove_mean_with_mask(batch.positions, m), batch.one_hot, batch.charges, m))

    def diffuse(self, xh: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """q(z_t | x): z_t = alpha_t xh + sigma_t eps for xh, eps [B, N, 3 + F] and t [B, 1] in [0, 1]."""
        g = self.gamma(t).view(-1, 1, 1)
        return self.alpha(g) * xh + self.sigma(g) * eps

    def unnormalize(self, z: torch.Tensor, node_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[B, N, 3 + F] -> positions [B, N, 3], type scores [B, N, K], charges [B, N, 1]."""
        x = z[..., :3] * self.norm_values[0]
        h_cat = z[..., 3 : 3 + self.num_types] * self.norm_values[1]
        h_int = z[..., 3 + self.num_types :] * self.norm_values[2] if self.include_charges else z[..., :0]
        return x * node_mask, h_cat * node_mask, h_int * node_mask

    def sample_noise(self, node_mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """eps [B, N, 3 + F]: CoM-free Gaussian positions, Gaussian features, zero padding."""
        eps_x = sample_center_gravity_zero_gaussian(node_mask, generator)
        eps_h = sample_gaussian_with_mask(node_mask, self.feature_dim, generator)
        return torch.cat([eps_x, eps_h], dim=-1)

    # ------------------------------------------------------------ network
    def predict_eps(self, z_t: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        return self.dynamics(z_t, t, node_mask)

    def x0_from_eps(self, z_t: torch.Tensor, eps: torch.Tensor, gamma_t: torch.Tensor) -> torch.Tensor:
        """(z_t - sigma_t eps) / alpha_t, gamma_t [B]."""
        g = gamma_t.view(-1, 1, 1)
        return (z_t - self.sigma(g) * eps) / self.alpha(g)

    # ------------------------------------------------------------ training
    def training_loss(
        self, batch: MoleculeBatch, generator: torch.Generator | None = None, objective: TrainingObjective | None = None
    ) -> torch.Tensor:
        """The per-molecule training loss [B]: EDM's ||eps - eps_theta(z_t, t)||^2 per real dimension.

        t is uniform on {0, ..., T} and every molecule counts once, unless ``objective`` draws t from
        another density or weights the loss (see ``elign.diffusion.objective``). Positions are re-centred.
        """
        objective = objective or TrainingObjective()
        m = batch.node_mask
        xh = self.centred_latent(batch)
        B = xh.shape[0]
        t_int, weight = objective.sample_times(B, self.T, xh.device, generator)  # [B, 1], [B]
        t = t_int.to(xh.dtype) / self.T
        eps = self.sample_noise(m, generator)
        z_t = self.diffuse(xh, t, eps)
        eps_pred = self.predict_eps(z_t, t, m)
        sq = ((eps - eps_pred) ** 2 * m).sum(dim=(1, 2))  # [B]
        dims = m[..., 0].sum(1) * xh.shape[-1]  # [B]
        loss = sq / dims
        if objective.is_edm:
            return loss
        return loss * weight * objective.loss_weight(self.gamma(t).view(B).float())

    # ------------------------------------------------------------ sampling: the network, then the Gaussian
    def reverse_from_eps(self, z_t, eps, s, t, node_mask):
        """p(z_s | z_t) given the network's noise prediction ``eps``, without calling the network: mean
        [B, N, 3+F], std [B] and the x0 prediction [B, N, 3+F]; s, t [B] or [B, 1] in [0, 1] (gamma table)."""
        B = z_t.shape[0]
        gamma_s, gamma_t = self.gamma(s).view(B), self.gamma(t).view(B)
        sigma2_ts, alpha_ts = self.alpha_sigma_t_given_s(gamma_t, gamma_s)
        sigma_s, sigma_t = self.sigma(gamma_s), self.sigma(gamma_t)
        c = (sigma2_ts / alpha_ts / sigma_t).view(B, 1, 1)
        mean = (z_t / alpha_ts.view(B, 1, 1) - c * eps) * node_mask
        std = torch.sqrt(sigma2_ts) * sigma_s / sigma_t  # [B]
        return mean, std, self.x0_from_eps(z_t, eps, gamma_t) * node_mask

    def step_from_eps(
        self, z_t, eps, s, t, node_mask, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> ReverseStep:
        """Sample z_s ~ p(z_s | z_t) given ``eps`` (no network call); ``noise`` (CoM-free) may replace the
        generator. The log-probability is that of the CoM-free Gaussian over real atoms."""
        mean, std, x0 = self.reverse_from_eps(z_t, eps, s, t, node_mask)
        if noise is None:
            noise = self.sample_noise(node_mask, generator)
        z_s = mean + std.view(-1, 1, 1) * noise
        z_s = torch.cat([remove_mean_with_mask(z_s[..., :3], node_mask), z_s[..., 3:] * node_mask], dim=-1)
        return ReverseStep(z_s, mean, std, gaussian_log_prob(z_s, mean, std, node_mask), x0, eps)

    def reverse_mean_std(self, z_t, s, t, node_mask):
        """Mean, std, x0 prediction and eps of p(z_s | z_t): :meth:`predict_eps` then :meth:`reverse_from_eps`."""
        eps = self.predict_eps(z_t, t.view(z_t.shape[0], 1), node_mask)
        return (*self.reverse_from_eps(z_t, eps, s, t, node_mask), eps)

    def reverse_step(
        self, z_t, s, t, node_mask, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> ReverseStep:
        """One step of the chain: :meth:`predict_eps` then :meth:`step_from_eps`."""
        eps = self.predict_eps(z_t, t.view(z_t.shape[0], 1), node_mask)
        return self.step_from_eps(z_t, eps, s, t, node_mask, generator, noise)

    def decode(
        self,
        z_0: torch.Tensor,
        node_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        atomic_numbers: list[int] | None = None,
        noise: torch.Tensor | None = None,
    ) -> MoleculeBatch:
        """p(x, h | z_0): positions ~ N(x0_pred, sigma_0^2), types by argmax of z_0, charges rounded.

        ``noise`` [B, N, 3] (CoM free) may be given instead of a generator.
        """
        B = z_0.shape[0]
        t0 = torch.zeros(B, 1, device=z_0.device, dtype=z_0.dtype)
        gamma_0 = self.gamma(t0).view(B)
        eps = self.predict_eps(z_0, t0, node_mask)
        x0 = self.x0_from_eps(z_0, eps, gamma_0)
        sigma_x = torch.exp(0.5 * gamma_0).view(B, 1, 1)
        if noise is None:
            noise = sample_center_gravity_zero_gaussian(node_mask, generator)
        x = remove_mean_with_mask(x0[..., :3] + sigma_x * noise, node_mask)
        return self.to_batch(torch.cat([x, z_0[..., 3:]], dim=-1), node_mask, atomic_numbers)

    def to_batch(
        self, z: torch.Tensor, node_mask: torch.Tensor, atomic_numbers: list[int] | None = None
    ) -> MoleculeBatch:
        """Decode a normalised latent (or x0 prediction) into a MoleculeBatch: argmax types."""
        x, h_cat, h_int = self.unnormalize(z, node_mask)
        types = h_cat.argmax(dim=-1)
        one_hot = F.one_hot(types, self.num_types).to(z.dtype) * node_mask
        if atomic_numbers is not None:
            charges = torch.as_tensor(atomic_numbers, dtype=z.dtype, device=z.device)[types].unsqueeze(-1)
        elif self.include_charges:
            charges = torch.round(h_int)
        else:
            charges = torch.zeros_like(node_mask)
        return MoleculeBatch(x, one_hot, charges * node_mask, node_mask)
