"""The prefix KL: the policy held to the reference on the steps a group shares before it branches.

A group's rollouts share their first ``shared_steps`` steps, so no advantage trains them, and the KL of the update
covers only the branched steps. Yet they are the same network at other noise levels: trained on the branched steps
alone, the relay's policy drifted at t near 1 until, on a draw of ordinary noise, it predicted noise twenty times
the reference's and its latent ran past 1e30 within fifteen steps (iteration 1261 of ``assets/align_relay/``). The
prefix KL adds ``kl_beta * prefix_kl`` times the mean KL(policy || reference) of the reverse step at each group's
shared states, the ones on the data (:meth:`elign.rl.rollout.Rollouts.prefix_on_data`).
"""

from __future__ import annotations

import torch

from elign.rl.loss import gaussian_kl
from elign.rl.rollout import Rollouts

__all__ = ["prefix_kl_backward", "prefix_pairs"]


def prefix_pairs(ro: Rollouts, cfg) -> torch.Tensor:
    """[P, 2] long (shared step, group) pairs of the prefix KL: the groups' shared states on the data (none when
    ``cfg.prefix_kl`` or ``cfg.kl_beta`` is 0)."""
    if not (cfg.prefix_kl and cfg.kl_beta):
        return torch.zeros(0, 2, dtype=torch.long)
    return ro.prefix_on_data().cpu().nonzero()


def _reverse_mean(model, z, t, s, mask, context) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian reverse step of ``model`` at states z [M, N, D] from t to s [M]: (mean [M, N, D], std [M])."""
    eps = model.predict_eps(z, t.view(-1, 1), mask, context)
    mean, std, _ = model.scheduler.reverse(z, eps, s, t, mask)
    return mean, std


def prefix_kl_backward(policy, reference, ro: Rollouts, pairs: torch.Tensor, total: int, cfg, stats: dict) -> None:
    """Backpropagate kl_beta * prefix_kl * KL(policy || reference) at the shared states ``pairs`` [P, 2], a share
    of the update's ``total`` pairs (each counts 1 / total), in chunks of ``cfg.chunk``; the chunks' mean KL is
    appended to ``stats['kl_prefix']``."""
    device, K, T = ro.node_mask.device, ro.group_size, policy.T
    for chunk in pairs.split(cfg.chunk) if len(pairs) else ():
        l_idx, g_idx = chunk[:, 0].to(device), chunk[:, 1].to(device)
        z, mask = ro.prefix_z[l_idx, g_idx], ro.node_mask[g_idx * K]  # [M, N, D], [M, N, 1]
        t, s = (ro.prefix_t[l_idx] / T).float(), (ro.prefix_s[l_idx] / T).float()  # [M]
        context = None if ro.context is None else ro.context[g_idx * K]  # [M, C]
        with torch.no_grad():
            ref, _ = _reverse_mean(reference, z, t, s, mask, context)
        mean, std = _reverse_mean(policy, z, t, s, mask, context)
        kl = gaussian_kl(mean[..., ro.channels], ref[..., ro.channels], std, mask)  # [M]
        (cfg.kl_beta * cfg.prefix_kl * kl.sum() / total).backward()
        stats.setdefault("kl_prefix", []).append(float(kl.detach().mean()))
