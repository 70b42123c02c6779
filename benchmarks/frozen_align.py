"""FED-GRPO's update and energy potentials, and AIMNet2's calls, as they were before the cheaper iteration: a
reference of cpu_speed.py.

A frozen copy, for benchmarks only (the library never imports it). Before, every old log-prob was computed in
a no-grad pass ahead of the update (the first minibatch's too), and the potentials on x0 predictions called the
force field with forces. ``use_frozen_alignment()`` swaps both into the live trainer, so the same trainer object
is timed both ways. ``use_whole_batch_aimnet2()`` makes AIMNet2 evaluate every batch in one call padded to its
largest molecule, rounded up to a multiple of 8 atoms, as it did before size groups.
"""

import contextlib
import math

import torch

from elign.rl.loss import clipped_surrogate, gaussian_kl, warmup_cosine
from elign.rl.rewards import _call_chunked, _concat


def potentials_on_x0(model, ff, rollouts, evaluated, atomic_numbers, chunk=256):
    L, R = rollouts.x0_pred.shape[:2]
    idx = torch.nonzero(evaluated.cpu()).flatten().tolist()
    mask = rollouts.node_mask
    batches = [model.to_batch(rollouts.x0_pred[l], mask, atomic_numbers).to("cpu") for l in idx]
    psi_eval, _, valid_eval, _ = _call_chunked(ff, _concat(batches), chunk, forces=True)
    psi = torch.full((R, L), float("nan"))
    valid = torch.zeros(R, L, dtype=torch.bool)
    psi[:, idx] = psi_eval.view(len(idx), R).T
    valid[:, idx] = valid_eval.view(len(idx), R).T
    return psi, valid


def update(self, ro, adv, iteration):
    from elign.rl.trainer import MINIBATCH_STREAM
    from elign.training.distributed import average_gradients

    R = ro.node_mask.shape[0]
    L = ro.num_steps
    with torch.no_grad():
        logp_old = torch.empty(L, R, device=self.device)
        kl_ref_mean = torch.empty(L, R, *ro.z_t.shape[2:], device=self.device)
        for l_idx, r_idx in self._items(ro, torch.arange(R)):
            _, _, lp, _ = self._forward(self.policy, ro, l_idx, r_idx)
            mean_ref, _, _, _ = self._forward(self.reference, ro, l_idx, r_idx)
            logp_old[l_idx, r_idx] = lp
            kl_ref_mean[l_idx, r_idx] = mean_ref
    adv = adv.to(self.device)
    factor = warmup_cosine(iteration, self.cfg.iterations, self.cfg.warmup_iterations, self.cfg.min_lr_ratio)
    for group in self.opt.param_groups:
        group["lr"] = self.cfg.lr * factor
    order = torch.randperm(R, generator=torch.Generator().manual_seed(self.cfg.seed * MINIBATCH_STREAM + iteration))
    stats = {}
    self.policy.train()
    for mb in order.tensor_split(self.cfg.minibatches):
        total = len(mb) * L
        self.opt.zero_grad(set_to_none=True)
        for l_idx, r_idx in self._items(ro, mb):
            mean, std, logp, mask = self._forward(self.policy, ro, l_idx, r_idx)
            a = adv[r_idx.to(self.device), l_idx.to(self.device)]
            surrogate, s = clipped_surrogate(logp, logp_old[l_idx, r_idx], a, self.cfg.clip_eps)
            kl = gaussian_kl(mean, kl_ref_mean[l_idx, r_idx], std, mask).mean()
            loss = (surrogate + self.cfg.kl_beta * kl) * (len(l_idx) / total)
            loss.backward()
            for k, v in {**s, "kl": kl.detach(), "loss": loss.detach() * total / len(l_idx)}.items():
                stats.setdefault(k, []).append(float(v))
        average_gradients(self.policy, self.world)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        stats.setdefault("grad_norm", []).append(float(grad_norm))
        self.opt.step()
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    out["ratio_min"] = min(stats["ratio_min"])
    out["ratio_max"] = max(stats["ratio_max"])
    out["lr"] = self.cfg.lr * factor
    return out


@contextlib.contextmanager
def use_frozen_alignment():
    """Within the block, the live trainer updates and scores potentials as the frozen copies above do."""
    from elign.rl import trainer as live

    saved = live.FedGrpoTrainer.update, live.potentials_on_x0
    try:
        live.FedGrpoTrainer.update, live.potentials_on_x0 = update, potentials_on_x0
        yield
    finally:
        live.FedGrpoTrainer.update, live.potentials_on_x0 = saved


def _inputs_padded_to_8(self, positions, numbers, mask):
    B, N, _ = positions.shape
    n_pad = max(8, math.ceil(N / 8) * 8)
    coord = torch.zeros(B, n_pad, 3, dtype=torch.float32, device=self.device)
    coord[:, :N] = torch.where(mask[..., None], positions, torch.zeros((), dtype=positions.dtype))
    z = torch.zeros(B, n_pad, dtype=torch.long, device=self.device)
    z[:, :N] = torch.where(mask, numbers, 0)
    charge = torch.zeros(B, dtype=torch.float32, device=self.device)
    return {"coord": coord, "numbers": z, "charge": charge}


@contextlib.contextmanager
def use_whole_batch_aimnet2():
    """Within the block, AIMNet2 evaluates each batch in one call, padded to its largest molecule rounded up to a
    multiple of 8 atoms."""
    from elign.mlff.aimnet2 import AIMNet2ForceField as ff

    saved = ff._compute, ff._compute_energy, ff._inputs
    try:
        ff._compute, ff._compute_energy = ff._compute_padded, ff._compute_energy_padded
        ff._inputs = _inputs_padded_to_8
        yield
    finally:
        ff._compute, ff._compute_energy, ff._inputs = saved
