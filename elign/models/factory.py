"""build_model: ModelConfig -> EquivariantDiffusion (a raw module, on the CPU, float32)."""

from __future__ import annotations

from elign.diffusion.edm import EquivariantDiffusion
from elign.models.config import ModelConfig
from elign.models.egnn import EGNNDynamics

__all__ = ["build_model"]

# the ModelConfig fields each part takes, under the same names
DYNAMICS_FIELDS = (
    "hidden",
    "n_layers",
    "inv_sublayers",
    "attention",
    "tanh",
    "coords_range",
    "norm_constant",
    "sin_embedding",
    "normalization_factor",
    "aggregation",
)
DIFFUSION_FIELDS = ("num_types", "include_charges", "timesteps", "noise_schedule", "noise_precision", "norm_values")


def build_model(config: ModelConfig) -> EquivariantDiffusion:
    in_node_nf = config.num_types + int(config.include_charges)
    dynamics = EGNNDynamics(
        in_node_nf,
        condition_time=True,
        context_dim=config.context_dim,
        **{k: getattr(config, k) for k in DYNAMICS_FIELDS},
    )
    return EquivariantDiffusion(dynamics, **{k: getattr(config, k) for k in DIFFUSION_FIELDS})
