"""PretrainConfig: every setting of a pretraining run, and the objective and model config it builds."""

from __future__ import annotations

from dataclasses import MISSING, dataclass

from elign.configs import config_from_dict, non_negative_int, option, positive_int
from elign.diffusion.objective import TrainingObjective
from elign.models.config import CONTEXTS, ModelConfig

__all__ = ["BATCHINGS", "PretrainConfig"]

BATCHINGS = ("random", "size_buckets")


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run (``elign pretrain --show-config`` lists them with their values)."""

    out_dir: str = option(MISSING, "run directory: state.pt, model.safetensors, metrics.jsonl, config.json")
    data: str | None = option(
        None, "training data: a dense file from `elign data --dense`, 'synthetic:N' (tests), or None: the QM9 cache"
    )
    init_from: str | None = option(
        None,
        "start from this checkpoint (its architecture and weights; inputs it lacks, a context, start at zero); "
        "hidden, n_layers and timesteps are then the checkpoint's",
    )
    context: str = option(
        "none",
        "what the network reads besides time: 'none', or 'composition' (each molecule's element counts, EDM's "
        "context mechanism; sampling then needs formulas)",
        choices=list(CONTEXTS),
    )
    hidden: int = option(128, "features per atom", type=positive_int)
    n_layers: int = option(6, "equivariant blocks", type=positive_int)
    timesteps: int = option(1000, "diffusion steps T", type=positive_int)
    batch_size: int = option(128, "molecules per step and process", type=positive_int)
    lr: float = option(2e-4, "learning rate (AdamW)")
    weight_decay: float = option(1e-12, "AdamW weight decay")
    warmup_steps: int = option(500, "linear warm-up of the learning rate, in steps", type=non_negative_int)
    lr_decay_start: int | None = option(
        None,
        "global step where a cosine decay of the learning rate to lr_min begins, held there after lr_decay_steps "
        "(None: constant after warm-up); an absolute step, so a long run can be annealed from where it is",
        type=non_negative_int,
    )
    lr_decay_steps: int = option(10_000, "length of that decay, in steps", type=positive_int)
    lr_min: float = option(5e-5, "learning rate after the decay")
    clip_grad: float = option(1.0, "maximum gradient norm")
    ema_decay: float = option(0.999, "decay of the exponential moving average whose weights are shipped")
    max_steps: int | None = option(None, "total optimiser steps (None: until max_minutes or epochs)", type=positive_int)
    epochs: float | None = option(None, "total epochs (None: until max_steps or max_minutes)")
    max_minutes: float | None = option(None, "wall-clock budget of this invocation: ends cleanly with a checkpoint")
    seed: int = option(0, "seed of the initial weights, batch order, times and noise")
    checkpoint_minutes: float = option(5.0, "minutes between checkpoints")
    log_every: int = option(50, "steps between loss records in metrics.jsonl", type=positive_int)
    val_every: int = option(0, "steps between validation samples (0: none)", type=non_negative_int)
    val_samples: int = option(200, "molecules of a validation sample", type=positive_int)
    val_steps: int = option(100, "sampler steps of a validation sample", type=positive_int)
    bf16: bool = option(True, "bfloat16 autocast on CUDA")
    cpu_bf16: bool = option(
        False,
        "bfloat16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX; an error elsewhere): faster wide models, "
        "no gain at the shipped 4x64 (benchmarks/cpu_speed.py, benchmarks/pretrain_recipe.py)",
    )
    compile: bool | None = option(
        None,
        "torch.compile the network's padded forward (inductor, dynamic shapes; eager if compilation fails): minutes "
        "of compiling at the start, then faster steps (benchmarks/compile_speed.py). None (auto): compile a CPU "
        "run with at least 30 minutes and 10,000 steps ahead of it, where that pays",
    )
    loss_weighting: str = option(
        "eps",
        "eps: EDM's loss; truncated_snr: the eps loss x clamp(SNR, snr_min, snr_max) / SNR",
        choices=["eps", "truncated_snr"],
    )
    snr_min: float = option(0.05, "lower SNR cap of truncated_snr")
    snr_max: float = option(1.5, "upper SNR cap of truncated_snr")
    time_sampling: str = option(
        "uniform", "uniform: EDM's t; beta: t ~ Beta(beta_a, beta_b), t = 0 the data end", choices=["uniform", "beta"]
    )
    beta_a: float = option(1.0, "Beta a of time_sampling beta")
    beta_b: float = option(2.0, "Beta b of time_sampling beta")
    importance_weighted: bool = option(False, "weight Beta draws by 1 / ((T + 1) p(t)): EDM's objective in expectation")
    batching: str = option(
        "random",
        "random: EDM's batches (each a random draw, padded to its largest molecule); size_buckets: each epoch's "
        "molecules sorted by size, cut into batches of near-equal size, batches shuffled (far less padding)",
        choices=list(BATCHINGS),
    )

    def __post_init__(self) -> None:
        bad = {
            k: getattr(self, k)
            for k in ("hidden", "n_layers", "batch_size", "log_every", "timesteps")
            if getattr(self, k) < 1
        }
        if self.lr <= 0 or not 0 <= self.ema_decay < 1:
            bad.update(lr=self.lr, ema_decay=self.ema_decay)
        if self.lr_decay_start is not None and (
            self.lr_decay_start < 0 or self.lr_decay_steps < 1 or not 0 < self.lr_min <= self.lr
        ):
            bad.update(lr_decay_start=self.lr_decay_start, lr_decay_steps=self.lr_decay_steps, lr_min=self.lr_min)
        if self.batching not in BATCHINGS:
            bad["batching"] = self.batching
        if not self.clip_grad > 0:
            bad["clip_grad"] = self.clip_grad
        for k in ("epochs", "max_minutes", "checkpoint_minutes"):
            if getattr(self, k) is not None and not getattr(self, k) > 0:
                bad[k] = getattr(self, k)
        if bad:
            raise ValueError(f"invalid PretrainConfig values: {bad} (clip_grad, epochs and minutes must be > 0)")
        self.objective()  # rejects a bad weighting or time density with its own message

    def objective(self) -> TrainingObjective:
        return TrainingObjective(
            self.loss_weighting,
            self.snr_min,
            self.snr_max,
            self.time_sampling,
            self.beta_a,
            self.beta_b,
            self.importance_weighted,
        )

    def model_config(self, dataset: dict) -> ModelConfig:
        return ModelConfig(
            hidden=self.hidden,
            n_layers=self.n_layers,
            timesteps=self.timesteps,
            atom_decoder=list(dataset["atom_decoder"]),
            dataset=dataset,
            context=self.context,
        )

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        """From a dict of fields (a key that is not a field is an error)."""
        return config_from_dict(cls, d)
