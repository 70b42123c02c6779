"""EquivariantDiffusion: the network (``predict_eps``), normalisation, the l2 training loss and decoding; the
schedule and the Gaussian reverse step are its ``scheduler`` (:class:`~elign.diffusion.scheduler.DiffusionScheduler`).
Parameter and buffer names match the original implementation (``gamma.gamma``, ``buffer``,
``dynamics.egnn.*``) so its state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elign.data.batch import MoleculeBatch
from elign.data.geometry import (
    remove_mean_with_mask,
    sample_center_gravity_zero_gaussian,
)
from elign.diffusion.conditioning import composition_context
from elign.diffusion.objective import TrainingObjective
from elign.diffusion.scheduler import DiffusionScheduler, GammaTable

__all__ = ["EquivariantDiffusion"]


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
        self.scheduler = DiffusionScheduler(self.gamma, self.feature_dim)  # shares the table: moves with the model

    @property
    def feature_dim(self) -> int:
        """F: per-atom features after the 3 position dimensions."""
        return self.num_types + int(self.include_charges)

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

    def unnormalize(self, z: torch.Tensor, node_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[B, N, 3 + F] -> positions [B, N, 3], type scores [B, N, K], charges [B, N, 1]."""
        x = z[..., :3] * self.norm_values[0]
        h_cat = z[..., 3 : 3 + self.num_types] * self.norm_values[1]
        h_int = z[..., 3 + self.num_types :] * self.norm_values[2] if self.include_charges else z[..., :0]
        return x * node_mask, h_cat * node_mask, h_int * node_mask

    # ------------------------------------------------------------ network
    @property
    def context_dim(self) -> int:
        """Features of the per-molecule context the network reads (0: none; composition: the element counts)."""
        return getattr(self.dynamics, "context_dim", 0)

    def predict_eps(
        self, z_t: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """eps_theta(z_t, t[, context [B, C]]) [B, N, 3 + F]."""
        if context is None:
            return self.dynamics(z_t, t, node_mask)
        return self.dynamics(z_t, t, node_mask, context)

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
        eps = self.scheduler.sample_noise(m, generator)
        z_t = self.scheduler.add_noise(xh, t, eps)
        context = composition_context(batch.one_hot, m) if self.context_dim else None  # [B, K]
        eps_pred = self.predict_eps(z_t, t, m, context)
        sq = ((eps - eps_pred) ** 2 * m).sum(dim=(1, 2))  # [B]
        dims = m[..., 0].sum(1) * xh.shape[-1]  # [B]
        loss = sq / dims
        if objective.is_edm:
            return loss
        return loss * weight * objective.loss_weight(self.scheduler.gamma_of(t).float())

    def decode(
        self,
        z_0: torch.Tensor,
        node_mask: torch.Tensor,
        generator: torch.Generator | None = None,
        atomic_numbers: list[int] | None = None,
        noise: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
    ) -> MoleculeBatch:
        """p(x, h | z_0): positions ~ N(x0_pred, sigma_0^2), types by argmax of z_0, charges rounded.

        ``noise`` [B, N, 3] (CoM free) may be given instead of a generator; ``context`` [B, C] for a conditioned
        network.
        """
        B = z_0.shape[0]
        t0 = torch.zeros(B, 1, device=z_0.device, dtype=z_0.dtype)
        gamma_0 = self.scheduler.gamma_of(t0)  # [B]
        eps = self.predict_eps(z_0, t0, node_mask, context)
        x0 = self.scheduler.x0_from_eps(z_0, eps, t0)
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
