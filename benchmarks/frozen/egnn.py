"""The EGNN forward as main ran it, before size groups and the fused pair kernels: the network of cpu_speed.py's
and compile_speed.py's "main".

A frozen copy, for benchmarks only (the library never imports it). Its modules are built around a live
``elign.models.egnn.EGNNDynamics`` and hold that network's own layers (the same tree, so the same parameter
names), so the frozen forward computes with the live parameters and an optimiser of the live model trains it
too. Nothing in the library is changed: :func:`frozen_model` is a separate diffusion model that the benchmarks
time beside the live one.
"""

from __future__ import annotations

import torch
from torch import nn

from elign.data.geometry import remove_mean_with_mask
from elign.diffusion.edm import EquivariantDiffusion
from elign.training.pretrain import Pretrainer, _Loss

__all__ = ["FrozenEGNNDynamics", "FrozenForwardPretrainer", "frozen_model"]


def _pairwise(x: torch.Tensor, norm_constant: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, N, 3] -> squared distances [B, N, N, 1], normalised differences [B, N, N, 3]."""
    diff = x[:, :, None, :] - x[:, None, :, :]  # [B, N, N, 3], x_i - x_j
    radial = (diff**2).sum(-1, keepdim=True)  # [B, N, N, 1]
    norm = torch.sqrt(radial + 1e-8)
    return radial, diff / (norm + norm_constant)


def _pair_linear(layer: nn.Linear, h: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
    """``layer(cat[h_i, h_j, edge_attr_ij])`` for all pairs without building the concatenation.

    h [B, N, H], edge_attr [B, N, N, E] -> [B, N, N, out]
    """
    H = h.shape[-1]
    w = layer.weight  # [out, 2H + E]
    a = h @ w[:, :H].T  # [B, N, out], source term
    b = h @ w[:, H : 2 * H].T  # [B, N, out], target term
    e = edge_attr @ w[:, 2 * H :].T  # [B, N, N, out]
    return e + (a + layer.bias)[:, :, None, :] + b[:, None, :, :]


def _aggregate(msg: torch.Tensor, edge_mask: torch.Tensor, factor: float, method: str) -> torch.Tensor:
    """Sum (or mean) of masked messages over neighbours j: [B, N, N, D] -> [B, N, D]."""
    agg = (msg * edge_mask).sum(dim=2)
    if method == "sum":
        return agg / factor
    count = edge_mask.sum(dim=2).clamp(min=1)  # [B, N, 1], real neighbours
    return agg / count


class FrozenGCL(nn.Module):
    """Invariant graph convolution with attention; updates h only. Holds the live GCL's layers."""

    def __init__(self, live: nn.Module) -> None:
        super().__init__()
        self.edge_mlp, self.node_mlp = live.edge_mlp, live.node_mlp
        self.attention = live.attention
        if live.attention:
            self.att_mlp = live.att_mlp
        self.factor, self.aggregation = live.factor, live.aggregation

    def forward(self, h, edge_attr, node_mask, edge_mask):
        # h [B, N, H], edge_attr [B, N, N, E], node_mask [B, N, 1], edge_mask [B, N, N, 1]
        m = self.edge_mlp[1](_pair_linear(self.edge_mlp[0], h, edge_attr))
        m = self.edge_mlp[3](self.edge_mlp[2](m))  # [B, N, N, H]
        if self.attention:
            m = m * self.att_mlp(m)
        agg = _aggregate(m, edge_mask, self.factor, self.aggregation)  # [B, N, H]
        h = h + self.node_mlp(torch.cat([h, agg], dim=-1))
        return h * node_mask


class FrozenEquivariantUpdate(nn.Module):
    """Position update x_i += sum_j (x_i - x_j)/(|x_i - x_j| + c) * phi(h_i, h_j, e_ij). Holds the live layers."""

    def __init__(self, live: nn.Module) -> None:
        super().__init__()
        self.coord_mlp = live.coord_mlp
        self.tanh, self.coords_range = live.tanh, live.coords_range
        self.factor, self.aggregation = live.factor, live.aggregation

    def forward(self, h, x, coord_diff, edge_attr, node_mask, edge_mask):
        # h [B, N, H], x [B, N, 3], coord_diff [B, N, N, 3]
        w = self.coord_mlp[1](_pair_linear(self.coord_mlp[0], h, edge_attr))
        w = self.coord_mlp[4](self.coord_mlp[3](self.coord_mlp[2](w)))  # [B, N, N, 1]
        if self.tanh:
            w = torch.tanh(w) * self.coords_range
        x = x + _aggregate(coord_diff * w, edge_mask, self.factor, self.aggregation)
        return x * node_mask


class FrozenEquivariantBlock(nn.Module):
    def __init__(self, live: nn.Module) -> None:
        super().__init__()
        self.n_sublayers, self.norm_constant = live.n_sublayers, live.norm_constant
        self.sin_embedding = live.sin_embedding
        for i in range(self.n_sublayers):
            self.add_module(f"gcl_{i}", FrozenGCL(live._modules[f"gcl_{i}"]))
        self.gcl_equiv = FrozenEquivariantUpdate(live.gcl_equiv)

    def forward(self, h, x, node_mask, edge_mask, distances):
        radial, coord_diff = _pairwise(x, self.norm_constant)
        if self.sin_embedding is not None:
            radial = self.sin_embedding(radial)
        edge_attr = torch.cat([radial, distances], dim=-1)  # [B, N, N, E]
        for i in range(self.n_sublayers):
            h = self._modules[f"gcl_{i}"](h, edge_attr, node_mask, edge_mask)
        x = self.gcl_equiv(h, x, coord_diff, edge_attr, node_mask, edge_mask)
        return h * node_mask, x


class FrozenEGNN(nn.Module):
    def __init__(self, live: nn.Module) -> None:
        super().__init__()
        self.n_layers = live.n_layers
        self.sin_embedding = live.sin_embedding
        self.embedding, self.embedding_out = live.embedding, live.embedding_out
        for i in range(self.n_layers):
            self.add_module(f"e_block_{i}", FrozenEquivariantBlock(live._modules[f"e_block_{i}"]))

    def forward(self, h, x, node_mask, edge_mask):
        # h [B, N, F], x [B, N, 3] -> h [B, N, F], x [B, N, 3]
        distances, _ = _pairwise(x, 1.0)
        if self.sin_embedding is not None:
            distances = self.sin_embedding(distances)
        h = self.embedding(h)
        for i in range(self.n_layers):
            h, x = self._modules[f"e_block_{i}"](h, x, node_mask, edge_mask, distances)
        return self.embedding_out(h) * node_mask, x


class FrozenEGNNDynamics(nn.Module):
    """eps_theta(z_t, t): z_t = [x (3), h (F)] per atom -> [eps_x (CoM free), eps_h], the whole padded batch at
    once, on the layers of the live ``EGNNDynamics`` it is built from."""

    def __init__(self, live: nn.Module) -> None:
        super().__init__()
        self.condition_time = live.condition_time
        self.egnn = FrozenEGNN(live.egnn)

    def forward(self, z: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        # z [B, N, 3 + F], t [B, 1] or [B] in [0, 1], node_mask [B, N, 1] -> [B, N, 3 + F]
        B, N, _ = z.shape
        m = node_mask[..., 0]
        eye = torch.eye(N, device=z.device, dtype=z.dtype)
        edge_mask = (m[:, :, None] * m[:, None, :] * (1 - eye)).unsqueeze(-1)  # [B, N, N, 1]
        z = z * node_mask
        x, h = z[..., :3], z[..., 3:]
        if self.condition_time:
            h_time = t.reshape(B, 1, 1).to(z.dtype).expand(B, N, 1)
            h = torch.cat([h, h_time], dim=-1)
        h_out, x_out = self.egnn(h, x, node_mask, edge_mask)
        vel = remove_mean_with_mask((x_out - x) * node_mask, node_mask)
        if self.condition_time:
            h_out = h_out[..., :-1]
        return torch.cat([vel, h_out], dim=-1)


def frozen_model(live: EquivariantDiffusion) -> EquivariantDiffusion:
    """A diffusion model whose network is the frozen forward on ``live``'s parameters (shared, not copied); its
    noise schedule and normalisation are ``live``'s."""
    model = EquivariantDiffusion(
        FrozenEGNNDynamics(live.dynamics),
        live.num_types,
        live.include_charges,
        live.T,
        norm_values=live.norm_values,
    )
    model.load_state_dict(live.state_dict())  # the gamma table and buffer; the network's are the same tensors
    return model.to(live.buffer.device).train(live.training)


class FrozenForwardPretrainer(Pretrainer):
    """Pretraining as main ran it: the live trainer (data, optimiser, EMA, the model it saves) whose loss runs
    the frozen forward on the model's parameters."""

    def __init__(self, config, data=None, device=None, callbacks=()) -> None:
        super().__init__(config, data, device, callbacks)
        self.loss_fn = _Loss(frozen_model(self.model), config.objective())
