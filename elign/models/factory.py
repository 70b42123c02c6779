"""build_model: ModelConfig -> EquivariantDiffusion (a raw module, on the CPU, float32)."""

from __future__ import annotations

from elign.diffusion.edm import EquivariantDiffusion
from elign.models.config import ModelConfig
from elign.models.egnn import EGNNDynamics

__all__ = ["build_model"]


def build_model(config: ModelConfig) -> EquivariantDiffusion:
    in_node_nf = config.num_types + int(config.include_charges)
    dynamics = EGNNDynamics(
        in_node_nf,
        condition_time=True,
        hidden=config.hidden,
        n_layers=config.n_layers,
        inv_sublayers=config.inv_sublayers,
        attention=config.attention,
        tanh=config.tanh,
        coords_range=config.coords_range,
        norm_constant=config.norm_constant,
        sin_embedding=config.sin_embedding,
        normalization_factor=config.normalization_factor,
        aggregation=config.aggregation,
    )
    return EquivariantDiffusion(
        dynamics,
        num_types=config.num_types,
        include_charges=config.include_charges,
        timesteps=config.timesteps,
        noise_schedule=config.noise_schedule,
        noise_precision=config.noise_precision,
        norm_values=config.norm_values,
    )
