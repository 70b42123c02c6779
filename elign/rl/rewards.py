"""FED-GRPO rewards: the terminal force reward and energy potentials on x0 predictions."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from elign.data.batch import MoleculeBatch
from elign.diffusion.edm import EquivariantDiffusion
from elign.metrics.composition import bond_type_counts
from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch
from elign.mlff.base import ForceField, formation_energy_per_atom, rms_force
from elign.rl.composition import type_fractions
from elign.rl.rollout import Rollouts

__all__ = [
    "RewardOutput",
    "ScoredRollouts",
    "connected",
    "energy_schedule",
    "nan_mean_std",
    "potentials_on_x0",
    "score_molecules",
    "score_rollouts",
]


@dataclass
class RewardOutput:
    reward_force: torch.Tensor  # [R] -RMS force (eV/A), NaN where invalid
    psi_0: torch.Tensor  # [R] -formation energy per atom (eV/atom) of the final molecule
    valid: torch.Tensor  # [R] bool: the force field scored the final molecule
    reasons: list[str | None]


def _concat(batches: list[MoleculeBatch]) -> MoleculeBatch:
    return MoleculeBatch(
        *(torch.cat([getattr(b, f) for b in batches]) for f in ("positions", "one_hot", "charges", "node_mask"))
    )


def _call_chunked(ff: ForceField, batch: MoleculeBatch, chunk: int, forces: bool = True):
    """ff on ``batch`` in chunks of ``chunk`` molecules -> (energy-per-atom potential [B], rms [B], valid [B]).

    With ``forces=False`` the force field computes energies only and rms is NaN.
    """
    psi, rms, valid, reasons = [], [], [], []
    for start in range(0, batch.batch_size, chunk):
        part = batch.index(slice(start, start + chunk))
        res = ff(part.to(ff.device), forces=forces)
        psi.append(-formation_energy_per_atom(part.to(ff.device), res, ff.reference_energies).float().cpu())
        rms.append(rms_force(part.to(ff.device), res).float().cpu())
        valid.append(res.valid.cpu())
        reasons.extend(res.reason)
    return torch.cat(psi), torch.cat(rms), torch.cat(valid), reasons


def score_molecules(ff: ForceField, molecules: MoleculeBatch, chunk: int = 256) -> RewardOutput:
    """R_F = -sqrt(mean_i |F_i|^2) and Psi_0 = -(E - sum E_ref)/N of decoded molecules."""
    psi, rms, valid, reasons = _call_chunked(ff, molecules.to("cpu"), chunk)
    return RewardOutput(-rms, psi, valid, reasons)


def energy_schedule(num_steps: int, every: int) -> torch.Tensor:
    """[L] bool: the trained steps whose x0 prediction is scored (0, k, 2k, ...)."""
    return torch.arange(num_steps) % every == 0


def potentials_on_x0(
    model: EquivariantDiffusion,
    ff: ForceField,
    rollouts: Rollouts,
    evaluated: torch.Tensor,
    atomic_numbers: list[int],
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Psi_t on the x0 prediction of the evaluated trained steps -> (psi [R, L], valid [R, L] bool).

    Unevaluated steps hold NaN and valid=False. The first trained step's x0 predictions are shared within
    each group (:class:`Rollouts`), so the force field scores one of each group there.
    """
    L, R = rollouts.x0_pred.shape[:2]
    K = rollouts.group_size
    idx = torch.nonzero(evaluated.cpu()).flatten().tolist()
    mask = rollouts.node_mask
    rows = [slice(None, None, K) if l == 0 else slice(None) for l in idx]  # the rollouts scored at each step
    batches = [
        model.to_batch(rollouts.x0_pred[l][r], mask[r], atomic_numbers).to("cpu")
        for l, r in zip(idx, rows, strict=True)
    ]
    psi_eval, _, valid_eval, _ = _call_chunked(ff, _concat(batches), chunk, forces=False)  # potentials: energies
    psi = torch.full((R, L), float("nan"))
    valid = torch.zeros(R, L, dtype=torch.bool)
    counts = [b.batch_size for b in batches]
    for l, p, v in zip(idx, psi_eval.split(counts), valid_eval.split(counts), strict=True):
        repeats = K if l == 0 else 1
        psi[:, l], valid[:, l] = p.repeat_interleave(repeats), v.repeat_interleave(repeats)
    return psi, valid


def connected(molecules: MoleculeBatch, decoder) -> torch.Tensor:
    """[B] bool: each molecule is one fragment under EDM's bond rules."""
    from elign.metrics.bonds import n_fragments, split_molecules

    return torch.tensor([n_fragments(x, t, decoder) == 1 for x, t in split_molecules(molecules.to("cpu"))])


def nan_mean_std(x: torch.Tensor) -> tuple[float, float]:
    """(mean, population std) of the finite entries of x; NaN for none."""
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return math.nan, math.nan
    return x.mean().item(), x.std(unbiased=False).item()


@dataclass(frozen=True)
class ScoredRollouts:
    """One iteration's rollouts and their scores, before the update (R rollouts of L steps)."""

    rollouts: Rollouts
    reward_force: torch.Tensor  # [R] -RMS force (eV/A), NaN where unscored, minus the validity penalty
    psi_0: torch.Tensor  # [R] -formation energy per atom (eV/atom) of the final molecule
    valid: torch.Tensor  # [R] bool: scored by the force field (and connected, with disconnected_failed)
    connected: torch.Tensor  # [R] bool: one fragment under EDM's bond rules
    rdkit_valid: torch.Tensor  # [R] bool: RDKit sanitizes its largest fragment
    evaluated: torch.Tensor  # [L] bool: the steps whose x0 predictions the force field scored
    psi_t: torch.Tensor  # [R, L] energy potentials of the x0 predictions
    psi_valid: torch.Tensor  # [R, L] bool
    fractions: torch.Tensor  # [R, E] atom-type fractions of the final molecules
    bond_counts: torch.Tensor  # [R, 3] single, double and triple bonds of the final molecules
    timing: dict[str, float]
    smiles: list[str | None] = field(default_factory=list)  # [R] canonical SMILES (None: RDKit-invalid)


def score_rollouts(policy, ff: ForceField, ro: Rollouts, info, cfg, time_rollout: float) -> ScoredRollouts:
    """One iteration's rollouts scored: the force reward (less ``cfg.validity_penalty`` where RDKit rejects the
    molecule), Psi_0 and Psi_t on the x0 predictions of every ``cfg.energy_every``-th trained step, success (scored;
    and one piece, with ``cfg.disconnected_failed``), RDKit validity and SMILES, atom-type fractions and bond-type
    counts. ``info``: the model's dataset info; ``time_rollout``: the seconds the rollouts took (logged)."""
    t0 = time.perf_counter()
    final = score_molecules(ff, ro.molecules)
    one_piece = connected(ro.molecules, info.atom_decoder)
    chem = chemistry_metrics_from_batch(ro.molecules.to("cpu"), info.atom_decoder)
    rdkit_valid = torch.tensor([s is not None for s in chem["smiles"]])
    reward_force = final.reward_force
    if cfg.validity_penalty:
        reward_force = reward_force - cfg.validity_penalty * (~rdkit_valid).float()
    evaluated = energy_schedule(ro.num_steps, cfg.energy_every)
    psi_t, psi_valid = potentials_on_x0(policy, ff, ro, evaluated, info.atomic_numbers)
    return ScoredRollouts(
        rollouts=ro,
        reward_force=reward_force,
        psi_0=final.psi_0,
        valid=final.valid & one_piece if cfg.disconnected_failed else final.valid,
        connected=one_piece,
        rdkit_valid=rdkit_valid,
        evaluated=evaluated,
        psi_t=psi_t,
        psi_valid=psi_valid,
        fractions=type_fractions(ro.molecules),
        bond_counts=torch.from_numpy(bond_type_counts(ro.molecules.to("cpu"), info.atom_decoder)),
        timing={"time_rollout": time_rollout, "time_reward": time.perf_counter() - t0},
        smiles=list(chem["smiles"]),
    )
