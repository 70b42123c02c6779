"""The EGNN forward as it was before size groups and the fused pair kernels: the reference of cpu_speed.py.

A frozen copy, for benchmarks only (the library never imports it): ``use_frozen_forward()`` swaps these
forwards into the library's modules, which have the same tree and parameters, so that the same objects
(models, optimisers, trainers) are timed both ways in one process.
"""

import contextlib
import math

import torch
from torch import nn

from elign.data.geometry import remove_mean_with_mask


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


class SinusoidsEmbedding(nn.Module):
    """Sinusoidal features of the distance sqrt(radial); no parameters."""

    def __init__(self, max_res: float = 15.0, min_res: float = 15.0 / 2000.0, div_factor: int = 4) -> None:
        super().__init__()
        n = int(math.log(max_res / min_res, div_factor)) + 1
        self.register_buffer(
            "frequencies", 2 * math.pi * div_factor ** torch.arange(n, dtype=torch.float32) / max_res, persistent=False
        )
        self.dim = 2 * n

    def forward(self, radial: torch.Tensor) -> torch.Tensor:  # [..., 1] -> [..., dim]
        emb = torch.sqrt(radial + 1e-8) * self.frequencies
        return torch.cat([emb.sin(), emb.cos()], dim=-1).detach()


class GCL(nn.Module):
    """Invariant graph convolution with attention; updates h only."""

    def __init__(self, hidden: int, edge_dim: int, attention: bool, factor: float, aggregation: str) -> None:
        super().__init__()
        self.edge_mlp = nn.Sequential(
            nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU()
        )
        self.node_mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.attention = attention
        if attention:
            self.att_mlp = nn.Sequential(nn.Linear(hidden, 1), nn.Sigmoid())
        self.factor, self.aggregation = factor, aggregation

    def forward(self, h, edge_attr, node_mask, edge_mask):
        # h [B, N, H], edge_attr [B, N, N, E], node_mask [B, N, 1], edge_mask [B, N, N, 1]
        m = self.edge_mlp[1](_pair_linear(self.edge_mlp[0], h, edge_attr))
        m = self.edge_mlp[3](self.edge_mlp[2](m))  # [B, N, N, H]
        if self.attention:
            m = m * self.att_mlp(m)
        agg = _aggregate(m, edge_mask, self.factor, self.aggregation)  # [B, N, H]
        h = h + self.node_mlp(torch.cat([h, agg], dim=-1))
        return h * node_mask


class EquivariantUpdate(nn.Module):
    """Position update x_i += sum_j (x_i - x_j)/(|x_i - x_j| + c) * phi(h_i, h_j, e_ij)."""

    def __init__(self, hidden: int, edge_dim: int, tanh: bool, coords_range: float, factor: float, aggregation: str):
        super().__init__()
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)
        self.coord_mlp = nn.Sequential(
            nn.Linear(2 * hidden + edge_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), last
        )
        self.tanh, self.coords_range = tanh, coords_range
        self.factor, self.aggregation = factor, aggregation

    def forward(self, h, x, coord_diff, edge_attr, node_mask, edge_mask):
        # h [B, N, H], x [B, N, 3], coord_diff [B, N, N, 3]
        w = self.coord_mlp[1](_pair_linear(self.coord_mlp[0], h, edge_attr))
        w = self.coord_mlp[4](self.coord_mlp[3](self.coord_mlp[2](w)))  # [B, N, N, 1]
        if self.tanh:
            w = torch.tanh(w) * self.coords_range
        x = x + _aggregate(coord_diff * w, edge_mask, self.factor, self.aggregation)
        return x * node_mask


class EquivariantBlock(nn.Module):
    def __init__(
        self,
        hidden,
        edge_dim,
        n_sublayers,
        attention,
        tanh,
        coords_range,
        norm_constant,
        sin_embedding,
        factor,
        aggregation,
    ):
        super().__init__()
        self.n_sublayers, self.norm_constant = n_sublayers, norm_constant
        self.sin_embedding = sin_embedding
        for i in range(n_sublayers):
            self.add_module(f"gcl_{i}", GCL(hidden, edge_dim, attention, factor, aggregation))
        self.gcl_equiv = EquivariantUpdate(hidden, edge_dim, tanh, coords_range, factor, aggregation)

    def forward(self, h, x, node_mask, edge_mask, distances):
        radial, coord_diff = _pairwise(x, self.norm_constant)
        if self.sin_embedding is not None:
            radial = self.sin_embedding(radial)
        edge_attr = torch.cat([radial, distances], dim=-1)  # [B, N, N, E]
        for i in range(self.n_sublayers):
            h = self._modules[f"gcl_{i}"](h, edge_attr, node_mask, edge_mask)
        x = self.gcl_equiv(h, x, coord_diff, edge_attr, node_mask, edge_mask)
        return h * node_mask, x


class EGNN(nn.Module):
    def __init__(
        self,
        in_node_nf: int,
        hidden: int = 256,
        n_layers: int = 9,
        inv_sublayers: int = 1,
        attention: bool = True,
        tanh: bool = True,
        coords_range: float = 15.0,
        norm_constant: float = 1.0,
        sin_embedding: bool = False,
        normalization_factor: float = 1.0,
        aggregation: str = "sum",
    ) -> None:
        super().__init__()
        if aggregation not in ("sum", "mean"):
            raise ValueError(f"aggregation must be 'sum' or 'mean', got {aggregation!r}")
        self.n_layers = n_layers
        self.sin_embedding = SinusoidsEmbedding() if sin_embedding else None
        edge_dim = 2 * self.sin_embedding.dim if sin_embedding else 2
        self.embedding = nn.Linear(in_node_nf, hidden)
        self.embedding_out = nn.Linear(hidden, in_node_nf)
        for i in range(n_layers):
            self.add_module(
                f"e_block_{i}",
                EquivariantBlock(
                    hidden,
                    edge_dim,
                    inv_sublayers,
                    attention,
                    tanh,
                    coords_range,
                    norm_constant,
                    self.sin_embedding,
                    normalization_factor,
                    aggregation,
                ),
            )

    def forward(self, h, x, node_mask, edge_mask):
        # h [B, N, F], x [B, N, 3] -> h [B, N, F], x [B, N, 3]
        distances, _ = _pairwise(x, 1.0)
        if self.sin_embedding is not None:
            distances = self.sin_embedding(distances)
        h = self.embedding(h)
        for i in range(self.n_layers):
            h, x = self._modules[f"e_block_{i}"](h, x, node_mask, edge_mask, distances)
        return self.embedding_out(h) * node_mask, x


class EGNNDynamics(nn.Module):
    """eps_theta(z_t, t): z_t = [x (3), h (F)] per atom -> [eps_x (CoM free), eps_h]."""

    def __init__(self, in_node_nf: int, condition_time: bool = True, **egnn_kwargs) -> None:
        super().__init__()
        self.condition_time = condition_time
        self.egnn = EGNN(in_node_nf + int(condition_time), **egnn_kwargs)

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


@contextlib.contextmanager
def use_frozen_forward():
    """Within the block, every EGNN module of the library computes with the frozen forwards above."""
    from elign.models import egnn as live

    pairs = [
        (live.GCL, GCL),
        (live.EquivariantUpdate, EquivariantUpdate),
        (live.EquivariantBlock, EquivariantBlock),
        (live.EGNN, EGNN),
        (live.EGNNDynamics, EGNNDynamics),
    ]
    saved = [(cls, cls.forward) for cls, _ in pairs]
    try:
        for cls, frozen in pairs:
            cls.forward = frozen.forward
        yield
    finally:
        for cls, forward in saved:
            cls.forward = forward
