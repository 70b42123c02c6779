"""bfloat16 autocast where the hardware computes it natively, as an opt-in trade of precision for speed.

On CPUs with AVX512-BF16 (or AMX) oneDNN multiplies bfloat16 matrices several times faster than float32
ones (``benchmarks/cpu_speed.py`` measures what that buys end to end). Autocast runs matrix products in
bfloat16 and keeps element-wise arithmetic in the dtype of its inputs, so the diffusion chain's own
arithmetic (posterior means, noise, log-probabilities) stays float32; the network's outputs differ from
float32 by bfloat16 rounding (about 3 significant digits), so the same seed no longer gives the same
molecules. Without native support bfloat16 is emulated and slower: :func:`bf16_autocast` refuses it.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["bf16_autocast", "native_bf16"]


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively (CUDA with bf16, AVX512-BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's capability checks
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def bf16_autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` if ``enabled`` (a no-op otherwise); a ValueError without native bf16."""
    device = torch.device(device)
    if not enabled:
        return contextlib.nullcontext()
    if not native_bf16(device):
        raise ValueError(
            f"bf16 needs native bfloat16 arithmetic (CUDA with bf16, or a CPU with AVX512-BF16 or AMX); "
            f"{device} has none, and emulated bf16 is slower than float32: leave bf16 off"
        )
    return torch.autocast(device.type, dtype=torch.bfloat16)
