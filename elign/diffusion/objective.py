"""The pretraining objective: which noise levels a batch sees and how much each counts.

EDM trains on ``||eps - eps_theta(z_t, t)||^2`` with t uniform on {0, ..., T}. Two pure knobs change that
without touching the model or the reverse chain (so sampling, FED-GRPO log-probabilities and original
EDM checkpoints are unaffected):

- ``weighting="truncated_snr"``: the eps loss times clamp(SNR, lo, hi) / SNR with SNR_t = exp(-gamma_t).
  Since ||eps - eps_hat||^2 = SNR_t * ||x - x_hat||^2, this is an x0 loss whose weight is the SNR capped
  to [lo, hi] (EQGAT-diff's default: 0.05, 1.5): low-noise steps count less, high-noise ones more.
- ``time_sampling="beta"``: t drawn from a discretised Beta(a, b) density on [0, 1] (t = 0 is the data
  end; a = 1, b = 2 doubles the density there and halves it towards pure noise). With
  ``importance_weighted=True`` each draw is weighted by 1 / ((T + 1) p(t)), so the expected loss is EDM's
  (the same bound, other variance); without, the objective is the Beta-weighted one, stated as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from elign.data.geometry import check_generator

__all__ = ["TrainingObjective", "WEIGHTINGS", "TIME_SAMPLINGS"]

WEIGHTINGS = ("eps", "truncated_snr")
TIME_SAMPLINGS = ("uniform", "beta")


@dataclass(frozen=True)
class TrainingObjective:
    weighting: str = "eps"
    snr_min: float = 0.05
    snr_max: float = 1.5
    time_sampling: str = "uniform"
    beta_a: float = 1.0
    beta_b: float = 2.0
    importance_weighted: bool = False

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"loss weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")
        if not 0 < self.snr_min <= self.snr_max:
            raise ValueError(f"need 0 < snr_min <= snr_max, got {self.snr_min}, {self.snr_max}")
        if self.beta_a <= 0 or self.beta_b <= 0:
            raise ValueError(f"Beta parameters must be positive, got a={self.beta_a}, b={self.beta_b}")

    @property
    def is_edm(self) -> bool:
        """True when this is EDM's own objective (uniform t, plain eps loss)."""
        return self.weighting == "eps" and self.time_sampling == "uniform"

    def time_probabilities(self, timesteps: int) -> torch.Tensor:
        """p(t_int) over {0, ..., T} [T + 1], float64: the Beta density at bin centres, normalised."""
        if self.time_sampling == "uniform":
            return torch.full((timesteps + 1,), 1.0 / (timesteps + 1), dtype=torch.float64)
        u = (torch.arange(timesteps + 1, dtype=torch.float64) + 0.5) / (timesteps + 1)
        density = u ** (self.beta_a - 1) * (1 - u) ** (self.beta_b - 1)
        return density / density.sum()

    def sample_times(
        self, batch: int, timesteps: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Integer times t_int [B, 1] (long) and their importance weights [B] (ones unless weighted)."""
        check_generator(generator, torch.device(device))
        if self.time_sampling == "uniform":  # EDM's draw, unchanged, so EDM runs resume bit for bit
            t_int = torch.randint(0, timesteps + 1, (batch, 1), device=device, generator=generator)
            return t_int, torch.ones(batch, device=device)
        p = self.time_probabilities(timesteps).to(device)
        t_int = torch.multinomial(p, batch, replacement=True, generator=generator).view(batch, 1)
        if not self.importance_weighted:
            return t_int, torch.ones(batch, device=device)
        return t_int, (1.0 / ((timesteps + 1) * p[t_int[:, 0]])).float()

    def loss_weight(self, gamma_t: torch.Tensor) -> torch.Tensor:
        """The factor on the eps loss at gamma_t [B] -> [B]."""
        if self.weighting == "eps":
            return torch.ones_like(gamma_t)
        snr = torch.exp(-gamma_t)
        return torch.clamp(snr, self.snr_min, self.snr_max) / snr
