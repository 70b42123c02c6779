"""FED-GRPO's update and energy potentials, and AIMNet2's calls, as they were before the cheaper iteration: the
alignment of cpu_speed.py's "main".

A frozen copy, for benchmarks only (the library never imports it). Before, every old log-prob was computed in
a no-grad pass ahead of the update (the first minibatch's too), and the potentials on x0 predictions called the
force field with forces on every rollout. :class:`FrozenFedGrpoTrainer` is the live trainer with those two
(and the frozen network, ``frozen.egnn``); :class:`WholeBatchAIMNet2` evaluates every batch in one call padded
to its largest molecule, rounded up to a multiple of 8 atoms, as AIMNet2 did before size groups. Both are used
in place of the live classes; neither changes them.
"""

from __future__ import annotations

import math
import time

import torch

from elign.metrics.composition import bond_type_counts
from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch
from elign.mlff import load_force_field
from elign.mlff.aimnet2 import AIMNet2ForceField
from elign.rl.composition import type_fractions
from elign.rl.loss import clipped_surrogate, gaussian_kl, warmup_cosine
from elign.rl.rewards import ScoredRollouts, _call_chunked, _concat, connected, energy_schedule, score_molecules
from elign.rl.rollout import grouped_rollouts
from elign.rl.trainer import MINIBATCH_STREAM, FedGrpoTrainer
from elign.training.distributed import average_gradients, resolve_device

from .egnn import frozen_model

__all__ = ["FrozenFedGrpoTrainer", "WholeBatchAIMNet2", "force_field", "potentials_on_x0"]


class WholeBatchAIMNet2(AIMNet2ForceField):
    """AIMNet2 evaluating each batch in one call, padded to its largest molecule rounded up to a multiple of 8
    atoms."""

    _compute = AIMNet2ForceField._compute_padded
    _compute_energy = AIMNet2ForceField._compute_energy_padded

    def _inputs(self, positions, numbers, mask):
        """The model's input dict, padded to a multiple of 8 atoms (number 0, at the origin)."""
        B, N, _ = positions.shape
        n_pad = max(8, math.ceil(N / 8) * 8)
        coord = torch.zeros(B, n_pad, 3, dtype=torch.float32, device=self.device)
        coord[:, :N] = torch.where(mask[..., None], positions, torch.zeros((), dtype=positions.dtype))
        z = torch.zeros(B, n_pad, dtype=torch.long, device=self.device)
        z[:, :N] = torch.where(mask, numbers, 0)
        charge = torch.zeros(B, dtype=torch.float32, device=self.device)
        return {"coord": coord, "numbers": z, "charge": charge}


def force_field(name: str, device="cpu", dtype: torch.dtype = torch.float32):
    """The force field ``name`` as main called it: AIMNet2 by whole batches, any other as the library loads it."""
    if name.lower() == "aimnet2":
        return WholeBatchAIMNet2(device=device, dtype=dtype)
    return load_force_field(name, device=device, dtype=dtype)


def potentials_on_x0(model, ff, rollouts, evaluated, atomic_numbers, chunk=256):
    """Psi_t on every rollout's x0 prediction at the evaluated steps, forces computed too: (psi, valid) [R, L]."""
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


class FrozenFedGrpoTrainer(FedGrpoTrainer):
    """The live trainer with main's network, force field, potentials and update. ``model`` (the live network,
    default: the configured checkpoint) computes through the frozen forward; ``force_field`` default: the
    configured one as main called it."""

    def __init__(self, config, callbacks=None, force_field=None, model=None, model_config=None) -> None:
        if model is None:
            from elign.io.assets import resolve_checkpoint
            from elign.io.checkpoints import load_checkpoint

            model, model_config, _ = load_checkpoint(resolve_checkpoint(config.checkpoint))
        if force_field is None:
            force_field = _configured_force_field(config)
        super().__init__(config, callbacks, force_field, frozen_model(model), model_config)

    def rollout_and_score(self, iteration):
        """The live trainer's rollouts and rewards, the potentials computed by main's :func:`potentials_on_x0`."""
        prompts = self.prompts(iteration)
        t0 = time.perf_counter()
        self.policy.eval()
        ro = grouped_rollouts(
            self.policy,
            prompts.sizes,
            self.cfg.group_size,
            self.cfg.steps,
            self.cfg.shared_steps,
            prompts.generators,
            self.info.atomic_numbers,
            types=prompts.types,
        )
        t1 = time.perf_counter()
        final = score_molecules(self.ff, ro.molecules)
        one_piece = connected(ro.molecules, self.info.atom_decoder)
        chem = chemistry_metrics_from_batch(ro.molecules.to("cpu"), self.info.atom_decoder)
        rdkit_valid = torch.tensor([s is not None for s in chem["smiles"]])
        reward_force = final.reward_force
        if self.cfg.validity_penalty:
            reward_force = reward_force - self.cfg.validity_penalty * (~rdkit_valid).float()
        evaluated = energy_schedule(ro.num_steps, self.cfg.energy_every)
        psi_t, psi_valid = potentials_on_x0(self.policy, self.ff, ro, evaluated, self.info.atomic_numbers)
        t2 = time.perf_counter()
        return ScoredRollouts(
            rollouts=ro,
            reward_force=reward_force,
            psi_0=final.psi_0,
            valid=final.valid & one_piece if self.cfg.disconnected_failed else final.valid,
            connected=one_piece,
            rdkit_valid=rdkit_valid,
            evaluated=evaluated,
            psi_t=psi_t,
            psi_valid=psi_valid,
            fractions=type_fractions(ro.molecules),
            bond_counts=torch.from_numpy(bond_type_counts(ro.molecules.to("cpu"), self.info.atom_decoder)),
            timing={"time_rollout": t1 - t0, "time_reward": t2 - t1},
        )

    def update(self, ro, adv, iteration):
        logp_old, kl_ref_mean = _old_log_probs(self, ro)
        adv = adv.to(self.device)
        factor = warmup_cosine(iteration, self.cfg.iterations, self.cfg.warmup_iterations, self.cfg.min_lr_ratio)
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * factor
        R, L = ro.node_mask.shape[0], ro.num_steps
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


def _configured_force_field(config):
    from elign.io.assets import default_mlff

    dtype = torch.float64 if config.mlff_dtype == "float64" else torch.float32
    return force_field(config.mlff or default_mlff(), resolve_device(config.device), dtype)


def _old_log_probs(trainer, ro) -> tuple[torch.Tensor, torch.Tensor]:
    """Every item's log-prob under the policy and mean under the reference, in a no-grad pass: [L, R], [L, R, ...]."""
    R, L = ro.node_mask.shape[0], ro.num_steps
    with torch.no_grad():
        logp_old = torch.empty(L, R, device=trainer.device)
        kl_ref_mean = torch.empty(L, R, *ro.z_t.shape[2:], device=trainer.device)
        for l_idx, r_idx in trainer._items(ro, torch.arange(R)):
            _, _, lp, _ = trainer._forward(trainer.policy, ro, l_idx, r_idx)
            mean_ref, _, _, _ = trainer._forward(trainer.reference, ro, l_idx, r_idx)
            logp_old[l_idx, r_idx] = lp
            kl_ref_mean[l_idx, r_idx] = mean_ref
    return logp_old, kl_ref_mean
