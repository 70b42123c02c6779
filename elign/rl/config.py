"""AlignConfig: every setting of a FED-GRPO run, validated, with help text per field."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from elign.configs import config_from_dict, config_help, option

__all__ = ["AlignConfig", "PRESETS"]


@dataclass
class AlignConfig:
    out_dir: str = option("runs/align", "run directory: state.pt, model.safetensors, best.safetensors, metrics.jsonl")
    checkpoint: str | None = option(None, "backbone to align: native .safetensors, EDM run dir; None: the shipped one")
    mlff: str | None = option(None, "reward force field: name or .model path; None = the shipped default")
    iterations: int = option(100, "policy-update iterations (each: rollouts, rewards, update)")
    prompts: int = option(4, "P: molecule sizes (or formulas) per iteration, drawn from the size prior (or QM9)")
    prompts_by: str = option(
        "size",
        "what a group shares: 'size' (a number of atoms from the size prior) or 'formula' (a QM9 training formula, "
        "drawn by its frequency: the atom types are fixed, only positions are sampled and trained, and the energy "
        "channel compares isomers)",
    )
    type_guidance: float = option(
        0.0,
        "with prompts_by='formula': step of the positions' guidance by the fixed types in the rollouts and the "
        "held-out samples (elign sample's default is 0.5); about doubles the rollouts' time",
    )
    group_size: int = option(24, "K: rollouts per prompt; advantages are normalised within each group")
    steps: int = option(1000, "denoising steps of the (possibly strided) chain")
    shared_steps: int = option(600, "steps shared by a group before it branches (paper: 600 of 1000, t_b = 400)")
    chain_lengths: tuple[int, ...] = option(
        (),
        "step counts of the rollouts' chain, one drawn per iteration, each branching after the same share of its "
        "steps (so a policy sampled with fewer steps than 'steps' is trained on them too); empty: 'steps' alone. "
        "The held-out evaluation samples with 'steps'",
    )
    energy_every: int = option(1, "evaluate the energy potential on the x0 prediction every k-th trained step")
    discount: float = option(1.0, "gamma of the shaped return G_t = gamma^t * Psi_0 - Psi_t")
    w_force: float = option(1.0, "weight of the normalised force advantage")
    w_energy: float = option(0.1, "weight of the normalised energy advantage")
    adv_clip: float = option(5.0, "clip of the mixed advantage to [-c, c]")
    adv_eps: float = option(1e-6, "added to the group standard deviation")
    failed_advantage: float = option(
        -1.0, "advantage given to every step of a rollout the force field cannot score (failed_mode 'fixed')"
    )
    failed_mode: str = option(
        "fixed",
        "'fixed': failed rollouts get failed_advantage; 'group': success (scorable or "
        "not) is a third group-normalised channel weighted by w_success, so failures are "
        "penalised only against scorable members of the same group",
    )
    w_success: float = option(1.0, "weight of the normalised success channel (failed_mode 'group')")
    disconnected_failed: bool = option(
        False,
        "treat molecules of several fragments (EDM bond rules) as failed: their "
        "separated atoms feel no force, which would reward falling apart",
    )
    w_composition: float = option(
        0.0,
        "weight of the composition channel: a rollout is pushed against the running drift of the policy's "
        "atom-type fractions from QM9's (of the same sizes), relative to its group (0: off)",
    )
    composition_tolerance: float = option(
        0.02,
        "drift scale of the composition channel: a rollout off its group by this along a drift this large "
        "gets w_composition",
    )
    composition_momentum: float = option(0.9, "momentum of the (bias-corrected) running drift it pushes against")
    composition_bonds: bool = option(
        False,
        "the composition channel also pushes the batch's bond-type fractions (single, double, triple under EDM's "
        "distance rules) toward QM9's",
    )
    w_uniqueness: float = option(
        0.0,
        "weight of the uniqueness channel: a valid rollout is pushed down, relative to its group, by log(1 + n), n "
        "the times its molecule (canonical SMILES) was made in this and the last uniqueness_memory iterations (0: off)",
    )
    uniqueness_memory: int = option(50, "iterations of rollouts the uniqueness channel remembers")
    validity_penalty: float = option(0.0, "subtracted from the force reward of RDKit-invalid molecules (0: off)")
    clip_eps: float = option(2e-3, "PPO clip range of the probability ratio")
    kl_beta: float = option(0.04, "weight of the KL penalty to the frozen reference policy")
    prefix_kl: float = option(
        1.0,
        "weight, relative to kl_beta, of the KL to the reference on the groups' shared steps: no advantage trains "
        "them, and without it the policy drifts there unchecked (0: off)",
    )
    lr: float = option(4e-6, "peak AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_iterations: int = option(5, "linear warm-up iterations")
    min_lr_ratio: float = option(0.1, "cosine floor as a fraction of lr; held after the last iteration")
    max_grad_norm: float = option(1.0, "gradient-norm clip")
    train_steps: int = option(
        0, "branched steps per rollout trained in an update, drawn at random each iteration (0: all of them)"
    )
    minibatches: int = option(1, "optimiser steps per iteration (rollouts split into this many minibatches)")
    chunk: int = option(64, "(rollout, step) pairs per forward/backward; a memory knob, not a hyperparameter")
    eval_every: int = option(10, "iterations between held-out sampling evaluations (0: off)")
    eval_samples: int = option(64, "molecules in the held-out evaluation (fresh samples, fixed seed)")
    best_by: str = option(
        "guarded",
        "held-out criterion of best.safetensors: 'guarded' (molecule stability less 10x the excess over the "
        "guards below) or 'force' (lowest mean RMS force)",
    )
    guard_type_tv: float = option(0.04, "guard: atom-type total variation distance to QM9 the best model may reach")
    guard_uniqueness: float = option(0.95, "guard: uniqueness of valid molecules the best model must keep")
    seed: int = option(0, "seed of prompts, rollout noise and evaluation")
    device: str = option("auto", "'auto', 'cpu' or 'cuda[:i]'")
    mlff_dtype: str = option("float32", "force-field precision: float32 or float64")
    checkpoint_every: int = option(1, "iterations between checkpoints")

    def __post_init__(self) -> None:
        errors = []
        for name in (
            "iterations",
            "prompts",
            "group_size",
            "steps",
            "energy_every",
            "minibatches",
            "chunk",
            "checkpoint_every",
            "uniqueness_memory",
        ):
            if getattr(self, name) < 1:
                errors.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.group_size < 2:
            errors.append(f"group_size={self.group_size}: group normalisation needs at least 2 rollouts")
        if not 0 <= self.shared_steps < self.steps:
            errors.append(f"shared_steps={self.shared_steps} must be in [0, steps={self.steps})")
        if self.clip_eps <= 0 or self.adv_clip <= 0 or self.lr <= 0:
            errors.append(f"clip_eps={self.clip_eps}, adv_clip={self.adv_clip}, lr={self.lr} must be > 0")
        if self.kl_beta < 0 or self.w_force < 0 or self.w_energy < 0 or self.validity_penalty < 0:
            errors.append(f"kl_beta={self.kl_beta}, w_force={self.w_force}, w_energy={self.w_energy} must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            errors.append(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.minibatches > self.prompts * self.group_size:
            errors.append(f"minibatches={self.minibatches} exceeds the {self.prompts * self.group_size} rollouts")
        if self.failed_mode not in ("fixed", "group"):
            errors.append(f"failed_mode={self.failed_mode!r} must be 'fixed' or 'group'")
        if self.w_success < 0:
            errors.append(f"w_success={self.w_success} must be >= 0")
        if self.w_composition < 0 or self.composition_tolerance <= 0 or not 0 <= self.composition_momentum < 1:
            errors.append(
                f"w_composition={self.w_composition} must be >= 0, composition_tolerance="
                f"{self.composition_tolerance} > 0 and composition_momentum={self.composition_momentum} in [0, 1)"
            )
        if self.prompts_by not in ("size", "formula"):
            errors.append(f"prompts_by={self.prompts_by!r} must be 'size' or 'formula'")
        if not 0 <= self.type_guidance < float("inf"):
            errors.append(f"type_guidance={self.type_guidance} must be a finite number >= 0")
        if self.w_uniqueness < 0 or self.prefix_kl < 0:
            errors.append(f"w_uniqueness={self.w_uniqueness} and prefix_kl={self.prefix_kl} must be >= 0")
        if self.prompts_by == "formula" and self.w_composition:
            errors.append("with prompts_by='formula' the formulas fix the composition: set w_composition=0")
        if any(length < 2 for length in self.chain_lengths):
            errors.append(f"chain_lengths={list(self.chain_lengths)}: every chain needs at least 2 steps")
        if not 0 <= self.train_steps <= self.steps - self.shared_steps:
            errors.append(f"train_steps={self.train_steps} must be in [0, steps - shared_steps]")
        if self.best_by not in ("guarded", "force"):
            errors.append(f"best_by={self.best_by!r} must be 'guarded' or 'force'")
        if not 0 <= self.guard_type_tv <= 1 or not 0 <= self.guard_uniqueness <= 1:
            errors.append(f"guard_type_tv={self.guard_type_tv} and guard_uniqueness={self.guard_uniqueness} in [0, 1]")
        if self.mlff_dtype not in ("float32", "float64"):
            errors.append(f"mlff_dtype={self.mlff_dtype!r} must be 'float32' or 'float64'")
        if errors:
            raise ValueError("invalid AlignConfig: " + "; ".join(errors))

    @property
    def trained_steps(self) -> int:
        return self.steps - self.shared_steps

    @classmethod
    def preset(cls, name: str, **overrides) -> AlignConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> AlignConfig:
        """From a dict of fields (a key that is not a field is an error; elign align --show-config lists them)."""
        return config_from_dict(cls, d)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        return config_help(cls)


# one line a theme: the rollouts; the rewards; the update; the held-out evaluation
# fmt: off
PRESETS: dict[str, dict] = {
    # the published hyperparameters (Elign paper): 4 x 24 rollouts, T = 1000, branch at t_b = 400
    "paper": dict(
        prompts=4, group_size=24, steps=1000, shared_steps=600,
        energy_every=1, w_force=1.0, w_energy=0.1, adv_clip=5.0,
        clip_eps=2e-3, kl_beta=0.04, lr=4e-6, iterations=100, minibatches=4,
        eval_every=10, eval_samples=256,
    ),
    # two CPU cores, seconds an iteration: a strided chain, small groups, a larger step size; a young
    # backbone makes many fragmented molecules, which would otherwise earn the best force reward. Failures are
    # a group-normalised channel: on the CPU backbone of step 7,304, 60 iterations of 2 x 16 rollouts raised the
    # connected share of 1,000 fresh samples from 25 % to 41 %, where a fixed -1 per failure (4 x 6 rollouts,
    # 100 iterations) lowered it to 22 % (assets/aligned/README.md)
    "cpu-demo": dict(
        prompts=2, group_size=16, steps=50, shared_steps=20, chunk=128,
        disconnected_failed=True, failed_mode="group", w_success=1.0, energy_every=5, w_force=1.0, w_energy=0.1,
        adv_clip=5.0, clip_eps=0.2, kl_beta=0.01, lr=2e-4, iterations=20, minibatches=2, warmup_iterations=2,
        eval_every=5, eval_samples=32,
    ),
}
# fmt: on
# about 20-30 minutes of one CPU thread: cpu-demo on the 100-step chain the studio samples with (branching after
# 40 steps, 60 trained), 90 iterations; the best arm of the sweep in benchmarks/RESULTS.md (benchmarks/align_sweep.py)
# and the recipe of the shipped assets/aligned/ (its README has the 1,000-seed report)
PRESETS["cpu"] = dict(PRESETS["cpu-demo"], steps=100, shared_steps=40, iterations=90, eval_every=15, eval_samples=64)
