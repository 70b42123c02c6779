"""The EGNN's operations on dense pair tensors ``[B, N, N, H]``, shaped for a CPU.

Each computes what the plain PyTorch expression in its docstring does, with fewer passes over the pair
tensors or with matrix products laid out as CPU BLAS runs them fast; the autograd functions write out their
backward passes (the tests check each against autograd's with ``gradcheck``). Where autograd records nothing
(sampling, rollouts), the wrappers call the forward maths directly: an autograd call's overhead is a noticeable
share of a step on one small molecule.

On x86 CPUs, oneDNN (shipped inside PyTorch) runs the ``[P, H] x [H, H]`` products of the edge MLPs faster
than the BLAS that ``F.linear`` calls for float32 (MKL takes a slower path on some CPUs, AMD's among them;
``benchmarks/cpu_speed.py`` measures the effect): without gradients, ``pair_dense`` sends them there when it
can and falls back to ``F.linear`` where it cannot (other dtypes, autocast, devices, builds without oneDNN,
small inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["aggregate", "pair_dense", "pair_linear", "score", "silu"]


def _pair_sum(src, dst, edge_attr, w_e):
    """_PairSum's forward, in src's dtype."""
    edge_attr, w_e = edge_attr.to(src.dtype), w_e.to(src.dtype)
    out_dim, e_dim = w_e.shape
    out = src.unsqueeze(2) + dst.unsqueeze(1)  # [B, N, N, out]
    out.view(-1, out_dim).addmm_(edge_attr.reshape(-1, e_dim), w_e.T)
    return out


class _PairSum(torch.autograd.Function):
    """src_i + dst_j + edge_attr_ij @ w_e.T for all pairs.

    src, dst [B, N, out], edge_attr [B, N, N, E], w_e [out, E] -> [B, N, N, out]. The forward builds the
    broadcast sum in one pass and accumulates the edge term into it (a matrix product with an inner
    dimension of E = 2, which BLAS runs slowly when it writes an output of its own). The backward takes the
    edge gradients as products whose long dimension is the output's columns: autograd's own put it in
    the rows, which CPU BLAS runs several times slower for E = 2.
    """

    @staticmethod
    def forward(ctx, src, dst, edge_attr, w_e):
        edge_attr, w_e = edge_attr.to(src.dtype), w_e.to(src.dtype)
        ctx.save_for_backward(edge_attr, w_e)
        return _pair_sum(src, dst, edge_attr, w_e)

    @staticmethod
    def backward(ctx, grad):  # grad [B, N, N, out]
        edge_attr, w_e = ctx.saved_tensors
        out_dim, e_dim = w_e.shape
        flat = grad.reshape(-1, out_dim)  # [P, out]
        need = ctx.needs_input_grad
        grad_src = grad.sum(2) if need[0] else None  # [B, N, out]
        grad_dst = grad.sum(1) if need[1] else None
        grad_edge = (w_e.T @ flat.T).T.reshape(edge_attr.shape) if need[2] else None  # [B, N, N, E]
        grad_w = (edge_attr.reshape(-1, e_dim).T @ flat).T if need[3] else None  # [out, E]
        return grad_src, grad_dst, grad_edge, grad_w


def pair_linear(layer: nn.Linear, h: torch.Tensor, edge_attr: torch.Tensor) -> torch.Tensor:
    """``layer(cat[h_i, h_j, edge_attr_ij])`` for all pairs without building the concatenation.

    h [B, N, H], edge_attr [B, N, N, E] -> [B, N, N, out]
    """
    B, N, H = h.shape
    w = layer.weight  # [out, 2H + E]
    flat = h.reshape(B * N, H)
    src = flat @ w[:, :H].T if layer.bias is None else torch.addmm(layer.bias, flat, w[:, :H].T)  # [B N, out]
    dst = flat @ w[:, H : 2 * H].T  # [B N, out]
    src, dst, w_e = src.view(B, N, -1), dst.view(B, N, -1), w[:, 2 * H :]  # w_e [out, E]
    if torch.is_grad_enabled():
        return _PairSum.apply(src, dst, edge_attr, w_e)
    return _pair_sum(src, dst, edge_attr, w_e)


def _neighbour_sum(w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # _NeighbourSum's forward, in m's dtype
    return torch.matmul(w.to(m.dtype).transpose(-1, -2), m).squeeze(-2)  # [B, N, 1, N] @ [B, N, N, D] -> [B, N, D]


class _NeighbourSum(torch.autograd.Function):
    """sum_j w_ij m_ij: w [B, N, N, 1], m [B, N, N, D] -> [B, N, D] as one batched matrix product.

    The backward is broadcast products and a sum; autograd's own would use matrix products with an inner
    dimension of 1, which CPU BLAS runs many times slower.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        w = w.to(m.dtype)
        ctx.save_for_backward(w, m)
        return _neighbour_sum(w, m)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad [B, N, D]
        w, m = ctx.saved_tensors
        grad = grad.to(m.dtype)
        # a broadcast product and a sum over features: as a batched matrix-vector product it is 4x slower
        grad_w = (m * grad.unsqueeze(2)).sum(-1, keepdim=True) if ctx.needs_input_grad[0] else None  # [B, N, N, 1]
        grad_m = w * grad.unsqueeze(2) if ctx.needs_input_grad[1] else None  # [B, N, N, D]
        return grad_w, grad_m


def _score(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # _Score's forward
    return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))  # [..., H] -> [..., 1]


class _Score(torch.autograd.Function):
    """A linear layer with one output, x [..., H] -> [..., 1], whose input gradient is a broadcast product
    (autograd's would be a matrix product with an inner dimension of 1, slow on CPUs)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        weight = weight.to(x.dtype)  # [1, H]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _score(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad [..., 1]
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = grad * weight[0] if ctx.needs_input_grad[0] else None  # [..., H]
        grad_w = grad.reshape(1, -1) @ x.reshape(-1, x.shape[-1]) if ctx.needs_input_grad[1] else None  # [1, H]
        grad_b = grad.sum().reshape(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def score(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a layer with one output: [..., H] -> [..., 1]."""
    if torch.is_grad_enabled():
        return _Score.apply(x, layer.weight, layer.bias)
    return _score(x, layer.weight, layer.bias)


def aggregate(
    msg: torch.Tensor, weight: torch.Tensor, edge_mask: torch.Tensor, factor: float, method: str
) -> torch.Tensor:
    """sum_j weight_ij msg_ij over neighbours j (divided by ``factor``, or the mean): -> [B, N, D].

    msg [B, N, N, D]; weight [B, N, N, 1] with the edge mask already folded in; edge_mask [B, N, N, 1].
    """
    if torch.is_grad_enabled():
        agg = _NeighbourSum.apply(weight, msg)  # [B, N, D]
    else:
        agg = _neighbour_sum(weight, msg)
    if method == "sum":
        return agg / factor
    count = edge_mask.sum(dim=2).clamp(min=1)  # [B, N, 1], real neighbours
    return agg / count


def _onednn_linear_op():
    """``torch.ops.mkldnn._linear_pointwise`` (x [M, K], weight [O, K], bias [O] | None -> [M, O]), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise.default
    except (AttributeError, RuntimeError):
        return None


_ONEDNN_LINEAR = _onednn_linear_op()
ONEDNN_MIN_ROWS = 1024  # below this, the BLAS call is as fast (measured: 2,000 rows x 64 features already even)


def pair_dense(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a pair tensor x [B, N, N, K] -> [B, N, N, O]; through oneDNN where that pays.

    That is inference only: oneDNN builds a kernel for every new row count (about 1.6 ms, measured), which a
    sampling chain or a rollout repeats at every step, but a training batch of random sizes rarely does.
    """
    usable = (
        _ONEDNN_LINEAR is not None
        and not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dtype == layer.weight.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and x.numel() >= ONEDNN_MIN_ROWS * x.shape[-1]
        and not torch.compiler.is_compiling()  # inductor cannot lower this op for dynamic shapes
    )
    if not usable:
        return layer(x)
    out = _ONEDNN_LINEAR(x.reshape(-1, x.shape[-1]), layer.weight, layer.bias, "none", [], "")  # [M, O]
    return out.view(*x.shape[:-1], layer.weight.shape[0])


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient is recorded (saves a pass over a pair tensor)."""
    return F.silu(x, inplace=not torch.is_grad_enabled())
