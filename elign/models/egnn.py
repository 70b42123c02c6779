"""EGNN dynamics on dense, masked batches (Satorras et al. 2021; EDM's variant, Hoogeboom et al. 2022).

The module tree mirrors the original EDM implementation so that its state dicts load unchanged
(``egnn.embedding``, ``egnn.e_block_{i}.gcl_{j}.edge_mlp.0``, ``...gcl_equiv.coord_mlp.4``, ...).
The computation is dense over all atom pairs ``[B, N, N, H]``, with as few passes over those tensors
as the maths allows (they are what a CPU spends its time on):

- the first layer of every edge MLP factorises per node, ``W [h_i; h_j; e] = (W_i h)_i + (W_j h)_j + W_e e``:
  one broadcast sum that the edge term's product accumulates into, instead of a matmul over a per-edge
  concatenation, with a backward of its own;
- without gradients, the edge MLPs' square layers run through oneDNN, faster on x86 CPUs than the BLAS
  for float32;
- attention and the edge mask fold into one weight per pair, and the sum over neighbours is a batched
  matrix product ``weight [B, N, 1, N] @ messages [B, N, N, H]``;
- activations work in place when no gradient is recorded;
- on the CPU, molecules of similar size are evaluated together, each group trimmed to its largest
  (``elign.models.grouping``), so little of the pair work is padding.

The pair kernels live in ``elign.models.pair_ops``.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from elign.data.geometry import remove_mean_with_mask
from elign.models.grouping import size_groups
from elign.models.pair_ops import aggregate, pair_dense, pair_linear, score, silu

__all__ = ["EGNN", "EGNNDynamics"]


def _pairwise(x: torch.Tensor, norm_constant: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, N, 3] -> squared distances [B, N, N, 1], normalised differences [B, N, N, 3]."""
    diff = x[:, :, None, :] - x[:, None, :, :]  # [B, N, N, 3], x_i - x_j
    radial = (diff**2).sum(-1, keepdim=True)  # [B, N, N, 1]
    norm = torch.sqrt(radial + 1e-8)
    return radial, diff / (norm + norm_constant)


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
        m = silu(pair_linear(self.edge_mlp[0], h, edge_attr))
        m = silu(pair_dense(self.edge_mlp[2], m))  # [B, N, N, H]
        weight = torch.sigmoid(score(self.att_mlp[0], m)) * edge_mask if self.attention else edge_mask  # [B, N, N, 1]
        agg = aggregate(m, weight, edge_mask, self.factor, self.aggregation)  # [B, N, H]
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
        w = silu(pair_linear(self.coord_mlp[0], h, edge_attr))
        w = score(self.coord_mlp[4], silu(pair_dense(self.coord_mlp[2], w)))  # [B, N, N, 1]
        if self.tanh:
            w = torch.tanh(w) * self.coords_range
        x = x + aggregate(coord_diff, w * edge_mask, edge_mask, self.factor, self.aggregation)
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


def _rows(context: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if context is None else context[rows]


class EGNNDynamics(nn.Module):
    """eps_theta(z_t, t[, c]): z_t = [x (3), h (F)] per atom -> [eps_x (CoM free), eps_h]; a model with
    ``context_dim`` C > 0 also reads a context c [B, C] per molecule on every node (EDM's conditioning: the inputs
    h, t, c; the outputs for t and c are dropped)."""

    def __init__(self, in_node_nf: int, condition_time: bool = True, context_dim: int = 0, **egnn_kwargs) -> None:
        super().__init__()
        self.condition_time = condition_time
        self.context_dim = context_dim
        self.egnn = EGNN(in_node_nf + int(condition_time) + context_dim, **egnn_kwargs)

    def forward(
        self, z: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        # z [B, N, 3 + F], t [B, 1] or [B] in [0, 1], node_mask [B, N, 1], context [B, C] -> [B, N, 3 + F]
        B, N, _ = z.shape
        t = t.reshape(B)
        if (context is None) != (self.context_dim == 0):
            need = f"a context of {self.context_dim} features" if self.context_dim else "no context"
            raise ValueError(f"this network takes {need}")
        # Size groups pay on the CPU (measured); on accelerators launches dominate and the batch stays whole.
        groups = size_groups(node_mask) if z.device.type == "cpu" else None
        if groups is None:
            return self._forward_padded(z, t, node_mask, context)
        parts = []
        for rows, n in groups:
            part = self._forward_padded(z[rows, :n], t[rows], node_mask[rows, :n], _rows(context, rows))
            parts.append(F.pad(part, (0, 0, 0, N - n)))  # [b, N, 3 + F]
        order = torch.cat([rows for rows, _ in groups])  # [B]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(B, device=order.device)
        return torch.cat(parts)[inverse]

    def compile_padded_forward(self) -> None:
        """Run this instance's padded forward (what every size group calls) through ``torch.compile`` (inductor,
        dynamic shapes, so that one graph serves all group sizes), falling back to eager if compilation fails
        (no C++ compiler, an unsupported build). Compiling takes minutes on a CPU, once for each of a few shape
        regimes (the first call, single molecules, large groups); training steps at the shipped size then run
        about 1.15x faster (``benchmarks/compile_speed.py``): worth it for runs of hours, not for short ones."""
        eager = self._forward_padded
        compiled = torch.compile(eager, dynamic=True)

        def forward_padded(z: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor, context=None) -> torch.Tensor:
            nonlocal compiled
            if compiled is not None:
                try:
                    return compiled(z, t, node_mask, context)
                except Exception as e:  # any compiler failure; a real error in the maths recurs eagerly below
                    warnings.warn(f"torch.compile of the network failed, running it eagerly: {e!r}", stacklevel=2)
                    compiled = None
            return eager(z, t, node_mask, context)

        self._forward_padded = forward_padded

    def _forward_padded(
        self, z: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        # z [B, N, 3 + F], t [B], node_mask [B, N, 1], context [B, C] -> [B, N, 3 + F], one padded batch
        B, N, _ = z.shape
        m = node_mask[..., 0]
        eye = torch.eye(N, device=z.device, dtype=z.dtype)
        edge_mask = (m[:, :, None] * m[:, None, :] * (1 - eye)).unsqueeze(-1)  # [B, N, N, 1]
        z = z * node_mask
        x, h = z[..., :3], z[..., 3:]
        if self.condition_time:
            h_time = t.reshape(B, 1, 1).to(z.dtype).expand(B, N, 1)
            h = torch.cat([h, h_time], dim=-1)
        if context is not None:
            h = torch.cat([h, context.to(z.dtype)[:, None, :].expand(B, N, -1) * node_mask], dim=-1)
        h_out, x_out = self.egnn(h, x, node_mask, edge_mask)
        vel = remove_mean_with_mask((x_out - x) * node_mask, node_mask)
        if context is not None:
            h_out = h_out[..., : -context.shape[-1]]
        if self.condition_time:
            h_out = h_out[..., :-1]
        return torch.cat([vel, h_out], dim=-1)
