"""The alignment run's held-out evaluation: fresh samples of the policy on seeds no iteration uses, scored by the
reward force field, with the composition guards, and the criterion that picks ``best.safetensors``."""

from __future__ import annotations

import torch

from elign.metrics.rdkit_metrics import chemistry_metrics_from_batch
from elign.metrics.stability import stability_metrics
from elign.rl.config import AlignConfig
from elign.rl.rewards import connected, nan_mean_std, score_molecules

__all__ = ["EVAL_SEED_OFFSET", "GUARD_PENALTY", "composition_guards", "held_out_metrics", "held_out_score"]

EVAL_SEED_OFFSET = 10_000  # held-out seeds, never a training iteration's
GUARD_PENALTY = 10.0  # best_by 'guarded': stability lost per unit a guard is exceeded


@torch.no_grad()
def held_out_metrics(
    policy,
    ff,
    info,
    cfg: AlignConfig,
    device: torch.device,
    num: int | None = None,
    guards: bool = True,
    keep: list | None = None,
) -> dict[str, float]:
    """``num`` (default ``cfg.eval_samples``) fresh molecules of the policy on the run's chain: RMS force and
    energy by the reward force field, stability, validity, uniqueness and (``guards``) the composition guards.
    ``keep``, a list, receives the molecules (a MoleculeBatch on the CPU)."""
    from elign.diffusion.sampler import sample_molecules

    policy.eval()
    num = num or cfg.eval_samples
    mols = sample_molecules(
        policy,
        num,
        info.size_probabilities(),
        steps=cfg.steps,
        seed=EVAL_SEED_OFFSET + cfg.seed,
        device=device,
        atomic_numbers=info.atomic_numbers,
        types=_held_out_types(info, cfg, num),
        type_guidance=cfg.type_guidance,  # the chain the policy is trained on
    )
    scored = score_molecules(ff, mols)
    one_piece = connected(mols, info.atom_decoder)
    valid = scored.valid & one_piece if cfg.disconnected_failed else scored.valid
    mols = mols.to("cpu")
    if keep is not None:
        keep.append(mols)
    stab = stability_metrics(mols, info.atom_decoder)
    chem = chemistry_metrics_from_batch(mols, info.atom_decoder)
    return {
        "eval_rms_force": nan_mean_std(torch.where(valid, -scored.reward_force, torch.nan))[0],
        "eval_energy": nan_mean_std(torch.where(valid, -scored.psi_0, torch.nan))[0],
        "eval_failed": int((~valid).sum()),
        "eval_connected": float(one_piece.float().mean()),
        "eval_molecule_stability": stab["molecule_stability"],
        "eval_atom_stability": stab["atom_stability"],
        "eval_validity": chem["validity"],
        "eval_uniqueness": chem["uniqueness"],
        **(composition_guards(mols, info.atom_decoder) if guards else {}),
    }


def _held_out_types(info, cfg: AlignConfig, num: int) -> torch.Tensor | None:
    """The held-out molecules' formulas [num, N] when the run's groups share one (a fixed seed), else None."""
    if cfg.prompts_by != "formula":
        return None
    from elign.rl.prompts import formula_prompts

    return formula_prompts(info, num, torch.Generator().manual_seed(EVAL_SEED_OFFSET + cfg.seed))[1]


def composition_guards(mols, decoder) -> dict[str, float]:
    """The composition guards of held-out molecules against QM9's, as logged (``eval_*``)."""
    from elign.metrics.composition import qm9_guards

    guards = qm9_guards(mols, decoder)
    keys = ("atom_type_tv", "bond_type_tv", "ring_size_tv", "hydrogen_fraction", "unsaturation")
    return {f"eval_{k}": guards[k] for k in keys} | {
        "eval_heavy_formulas_distinct": guards["heavy_formulas_distinct"],
        "eval_heavy_formulas_distinct_qm9": guards["heavy_formulas_distinct_qm9"],
    }


def held_out_score(metrics: dict, cfg: AlignConfig) -> float:
    """The criterion of best.safetensors (higher is better; NaN never wins): ``best_by`` 'force' is the lowest
    mean RMS force; 'guarded' is molecule stability less 10x how far the atom-type distance to QM9 exceeds
    ``guard_type_tv`` and uniqueness falls below ``guard_uniqueness``."""
    if cfg.best_by == "force":
        return -metrics["eval_rms_force"]
    excess = max(0.0, metrics.get("eval_atom_type_tv", 0.0) - cfg.guard_type_tv)
    excess += max(0.0, cfg.guard_uniqueness - metrics["eval_uniqueness"])
    return metrics["eval_molecule_stability"] - GUARD_PENALTY * excess
