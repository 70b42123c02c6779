"""EDM pretraining: AdamW with warmup, gradient clipping, EMA, bf16 (CUDA; opt-in CPU), exact resume, DDP.

Everything needed to continue a run lives in ``OUT/state.pt`` (weights, EMA, optimiser, step and
data position; loaded with ``weights_only=True``). ``OUT/model.safetensors`` holds the EMA weights
in the native format (what ``elign sample`` reads) and ``OUT/metrics.jsonl`` the log. Data order
and diffusion noise are functions of (seed, epoch, step), so a resumed run continues exactly.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from elign.data.batch import MoleculeBatch
from elign.data.dense import DenseDataset, training_data
from elign.diffusion.edm import EquivariantDiffusion
from elign.diffusion.objective import TrainingObjective
from elign.io import checkpoints
from elign.io.files import atomic_write
from elign.io.run_lock import RunLock
from elign.models.config import ModelConfig
from elign.models.factory import build_model
from elign.precision import native_bf16
from elign.training.callbacks import Callback
from elign.training.distributed import rank_world, resolve_device
from elign.training.init_from import starting_model
from elign.training.pretrain_config import BATCHINGS, PretrainConfig

__all__ = ["BATCHINGS", "PretrainConfig", "Pretrainer", "lr_at"]

# compile=None compiles a CPU run at least this long: its three compilations take 3-4 minutes on one thread,
# after which steps at the shipped size run about 1.2x faster (benchmarks/compile_speed.py), so a run repays
# them after about 20 minutes
AUTO_COMPILE_MINUTES = 30.0
AUTO_COMPILE_STEPS = 10_000  # about 35 minutes at the shipped size on one thread


class _Loss(nn.Module):
    """Wraps the training loss as ``forward`` so DistributedDataParallel synchronises gradients."""

    def __init__(self, model: EquivariantDiffusion, objective: TrainingObjective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, positions, one_hot, charges, node_mask, generator=None):
        batch = MoleculeBatch(positions, one_hot, charges, node_mask)
        return self.model.training_loss(batch, generator, self.objective).mean()


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """The learning rate of a step: linear warm-up, then constant or a cosine decay held at its floor."""
    lr = cfg.lr * (min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0)
    if cfg.lr_decay_start is None or step < cfg.lr_decay_start:
        return lr
    progress = min(1.0, (step - cfg.lr_decay_start) / cfg.lr_decay_steps)
    floor = cfg.lr_min / cfg.lr
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class Pretrainer:
    def __init__(
        self,
        config: PretrainConfig,
        data: DenseDataset | None = None,
        device: str | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        """``data``: the dense training set (None: ``config.data``'s, by default QM9 from its cache). ``callbacks`` get
        ``on_step_end(step, record)`` for every logged record (losses every ``log_every`` steps, validation
        samples); see :mod:`elign.training.callbacks`."""
        self.cfg = config
        self.data = data = data if data is not None else training_data(config.data)
        self.out = Path(config.out_dir)
        self.lock = RunLock(self.out)
        self.callbacks = list(callbacks)
        self.rank, self.world = rank_world(device)
        self.device = torch.device(resolve_device(device))
        self.use_bf16 = config.bf16 if self.device.type == "cuda" else config.cpu_bf16
        if self.use_bf16 and self.device.type == "cpu" and not native_bf16(self.device):
            raise ValueError(
                "cpu_bf16 needs a CPU with native bfloat16 arithmetic (AVX512-BF16 or AMX); this one has neither, "
                "and emulated bf16 is slower than float32: train without --cpu-bf16"
            )
        self.model_config, model = starting_model(config, data.info.to_dict())
        self.model = model.to(self.device)
        self.ema = build_model(self.model_config).to(self.device)
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999))
        self.step = 0
        self.elapsed_minutes = 0.0  # cumulative wall minutes of training over resumes
        # cumulative CPU minutes of the training process (all its threads) since step cpu_from_step: on a
        # shared machine the wall minutes overstate the compute a run received
        self.cpu_minutes, self.cpu_from_step = 0.0, 0
        self._cpu_mark = time.process_time()
        self.train_idx = data.splits["train"]
        self.global_batch = config.batch_size * self.world
        self.steps_per_epoch = len(self.train_idx) // self.global_batch
        if len(self.train_idx) == 0:
            raise ValueError("the dataset holds no training molecules (its 'train' split is empty)")
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"training split of {len(self.train_idx)} molecules is smaller than one global batch "
                f"({self.global_batch}); lower --batch-size"
            )
        loss = _Loss(self.model, config.objective())
        self._epoch_plan: tuple[int, torch.Tensor] | None = None  # (epoch, batches [steps, global batch])
        if self.world > 1:
            loss = nn.parallel.DistributedDataParallel(
                loss, device_ids=[self.device] if self.device.type == "cuda" else None
            )
        self.compiled = False
        if config.compile:
            self._compile()
        self.loss_fn = loss

    # ------------------------------------------------------------------------ state
    @property
    def state_path(self) -> Path:
        return self.out / "state.pt"

    def state_dict(self) -> dict:
        return {
            "format": "elign-pretrain/1",
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "elapsed_minutes": self.elapsed_minutes,
            "cpu_minutes": self.cpu_minutes,
            "cpu_from_step": self.cpu_from_step,
            "config": json.dumps(asdict(self.cfg)),
            "model_config": json.dumps(self.model_config.to_dict()),
        }

    def resume(self, path: str | Path | None = None) -> None:
        path = Path(path) if path else self.state_path
        if not path.exists():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist")
        state, saved = self._read_state(path)
        mine = self.model_config
        if (saved.hidden, saved.n_layers, saved.timesteps, saved.context) != (
            mine.hidden, mine.n_layers, mine.timesteps, mine.context
        ):  # fmt: skip
            raise ValueError(
                f"{path} holds a {saved.n_layers}x{saved.hidden} model with T={saved.timesteps} (context "
                f"{saved.context}), but this run asks for {mine.n_layers}x{mine.hidden}, T={mine.timesteps} "
                f"(context {mine.context})"
            )
        with checkpoints.state_must_fit(path):
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.elapsed_minutes = float(state["elapsed_minutes"])
        # states written before CPU time was recorded count it from the step they resume at
        self.cpu_minutes = float(state.get("cpu_minutes", 0.0))
        self.cpu_from_step = int(state.get("cpu_from_step", self.step))
        if self.rank == 0 and path == self.state_path:  # the log and weights of this run follow its state
            self.lock.acquire()
            checkpoints.truncate_log(self.out / "metrics.jsonl", "step", self.step)
            self._save_weights()

    def _read_state(self, path: Path) -> tuple[dict, ModelConfig]:
        """The training state in ``path`` and its model config, or one ValueError naming what is wrong."""
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # truncated, foreign or tampered files all end here
            detail = str(e).split(". ")[0].splitlines()[0][:100] if str(e) else ""
            raise ValueError(
                f"{path} is not a readable elign training state ({type(e).__name__}: {detail}); "
                "resume from another copy"
            ) from None
        required = ("model", "ema", "optimizer", "step", "model_config")
        checkpoints.require_state(state, "elign-pretrain/1", required, path)
        try:
            return state, ModelConfig.from_dict(json.loads(state["model_config"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path} holds an unreadable model config ({e})") from None

    def save(self) -> None:
        """The EMA weights, then the full state: a kill between the two never leaves the weights behind."""
        if self.rank != 0:
            return
        state = self.state_dict()
        what = f"training became non-finite by step {self.step}"
        checkpoints.refuse_non_finite(state, ("model", "ema", "optimizer"), what, self.state_path)
        self._save_weights()
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(self.state_path, buf.getvalue())

    def _save_weights(self) -> None:
        extra = {
            "step": self.step,
            "epochs": round(self.step / self.steps_per_epoch, 3),
            "train_minutes": round(self.elapsed_minutes, 2),
            "cpu_minutes": round(self.cpu_minutes, 2),
            "cpu_from_step": self.cpu_from_step,
            "device": str(self.device),
            "world_size": self.world,
        }
        checkpoints.save_checkpoint(self.out / "model.safetensors", self.ema, self.model_config, extra=extra)

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        for cb in self.callbacks:
            cb.on_step_end(record["step"], record)

    # ------------------------------------------------------------------------ data
    def batch_indices(self, step: int) -> torch.Tensor:
        """The molecules of this process at a global step: a function of (seed, epoch, step) only."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return self._epoch_batches(epoch)[k][self.rank :: self.world]

    def _epoch_batches(self, epoch: int) -> torch.Tensor:
        """This epoch's global batches [steps_per_epoch, global_batch], drawn once per epoch.

        ``random``: consecutive slices of a random permutation of the training split (its tail beyond whole
        batches is left out this epoch). ``size_buckets``: the same permutation's whole batches, sorted by
        size (stable, so ties stay in random order), cut into batches of near-equal size, the batches shuffled.
        """
        if self._epoch_plan is None or self._epoch_plan[0] != epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            used = self.steps_per_epoch * self.global_batch
            perm = self.train_idx[torch.randperm(len(self.train_idx), generator=g)][:used]
            if self.cfg.batching == "size_buckets":
                perm = perm[torch.argsort(self.data.n_atoms[perm], stable=True)]
                batches = perm.view(self.steps_per_epoch, self.global_batch)
                batches = batches[torch.randperm(self.steps_per_epoch, generator=g)]
            else:
                batches = perm.view(self.steps_per_epoch, self.global_batch)
            self._epoch_plan = (epoch, batches)
        return self._epoch_plan[1]

    # ------------------------------------------------------------------------ loop
    def total_steps(self) -> int | None:
        limits = [self.cfg.max_steps] if self.cfg.max_steps else []
        if self.cfg.epochs:
            limits.append(math.ceil(self.cfg.epochs * self.steps_per_epoch))
        return min(limits) if limits else None

    def compiles(self) -> bool:
        """Whether :meth:`fit` runs the network compiled: ``compile`` if set; if None, whether the run is long
        enough to repay the minutes of compiling (on a CPU, a budget of at least AUTO_COMPILE_MINUTES and
        AUTO_COMPILE_STEPS steps left to go)."""
        if self.cfg.compile is not None:
            return self.cfg.compile
        if self.device.type != "cpu":
            return False
        total = self.total_steps()
        steps_left = math.inf if total is None else total - self.step
        minutes = math.inf if self.cfg.max_minutes is None else self.cfg.max_minutes
        return steps_left >= AUTO_COMPILE_STEPS and minutes >= AUTO_COMPILE_MINUTES

    def _compile(self) -> None:
        if not self.compiled:
            self.model.dynamics.compile_padded_forward()
            self.compiled = True

    def train_step(self) -> dict:
        b = self.data.batch(self.batch_indices(self.step), self.device)
        gen = torch.Generator(device=self.device).manual_seed((self.cfg.seed * 1_000_003 + self.step) * 64 + self.rank)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        self.model.train()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            loss = self.loss_fn(b.positions, b.one_hot, b.charges, b.node_mask, gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.opt.step()
        with torch.no_grad():
            pairs = [
                (e, p) for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True) if p.requires_grad
            ]
            torch._foreach_lerp_([e for e, _ in pairs], [p for _, p in pairs], 1.0 - self.cfg.ema_decay)
        self.step += 1
        return {"loss": loss.detach(), "grad_norm": grad_norm, "molecules": b.batch_size * self.world}

    def validate(self) -> dict:
        from elign.diffusion.conditioning import COMPOSITION_SCALE, types_context
        from elign.diffusion.sampler import sample_molecules
        from elign.metrics.stability import stability_metrics

        self.ema.eval()
        types = None
        if self.ema.context_dim:  # a conditioned model is told the counts of validation molecules, picks the types
            split = self.data.splits.get("valid", self.data.splits["train"])
            types = self.data.types[split[: self.cfg.val_samples]].long()  # [V, N]
        mols = sample_molecules(
            self.ema,
            self.cfg.val_samples if types is None else len(types),
            self.data.info.size_probabilities(),
            steps=min(self.cfg.val_steps, self.cfg.timesteps),
            seed=12345,
            device=self.device,
            atomic_numbers=self.data.info.atomic_numbers,
            types=types,
            fix_types=False,
        )
        m = stability_metrics(mols, self.data.info.atom_decoder)
        record = {
            "val_atom_stability": float(m["atom_stability"]),
            "val_molecule_stability": float(m["molecule_stability"]),
            "val_samples": self.cfg.val_samples if types is None else len(types),
            "val_steps": self.cfg.val_steps,
        }
        if types is not None:  # the share of molecules with exactly the counts asked for
            asked = (types_context(types, self.ema.num_types) * COMPOSITION_SCALE).round()  # [V, K] counts
            exact = (asked == mols.one_hot.sum(1).round()).all(dim=1)  # [V]
            record["val_exact_formula"] = float(exact.float().mean())
        return record

    def train(self, stop_event: threading.Event | None = None, progress: bool = False) -> dict:
        """Train until ``max_steps``, ``max_minutes`` or ``stop_event`` (checked after every step), writing a
        checkpoint every ``checkpoint_minutes`` and when it stops; -> {step, stopped_by, minutes}."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            self.lock.acquire()  # one writer per run folder
            checkpoints.remove_stale_temporaries(self.out)
            atomic_write(self.out / "config.json", json.dumps(asdict(self.cfg), indent=2).encode())
        try:
            return self._fit(progress, stop_event)
        finally:
            self.lock.release()

    def _fit(self, progress: bool, stop_event: threading.Event | None) -> dict:
        total = self.total_steps()
        if self.compiles():
            self._compile()
        run_start = start_wall = time.monotonic()  # run_start: this invocation; start_wall: since the last save
        self._cpu_mark = time.process_time()
        last_ckpt = start_wall
        window_t, window_mols = time.monotonic(), 0
        bar = tqdm(total=total, initial=self.step, desc="pretrain", unit="step", disable=not progress or self.rank)
        reason = "max_steps"
        try:
            while total is None or self.step < total:
                out = self.train_step()
                bar.update(1)
                window_mols += out["molecules"]
                if self.step % self.cfg.log_every == 0 or self.step == total:
                    loss = float(out["loss"])
                    if not math.isfinite(loss):
                        reason = "non-finite loss"
                        raise FloatingPointError(f"loss became {loss} at step {self.step}; last checkpoint kept")
                    now = time.monotonic()
                    rec = {
                        "step": self.step,
                        "epoch": round(self.step / self.steps_per_epoch, 4),
                        "loss": loss,
                        "grad_norm": float(out["grad_norm"]),
                        "lr": self.opt.param_groups[0]["lr"],
                        "mol_per_s": window_mols / max(now - window_t, 1e-9),
                        "train_minutes": self.elapsed_minutes + (now - start_wall) / 60,
                        "cpu_minutes": self.cpu_minutes + (time.process_time() - self._cpu_mark) / 60,
                    }
                    self._log(rec)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    window_t, window_mols = now, 0
                if self.cfg.val_every and self.step % self.cfg.val_every == 0 and self.rank == 0:
                    self._log({"step": self.step, **self.validate()})
                minutes = (time.monotonic() - run_start) / 60
                if stop_event is not None and stop_event.is_set():
                    reason = "stop requested"  # the CLI's SIGTERM / SIGINT, or a caller's event
                    break
                if self.cfg.max_minutes is not None and minutes >= self.cfg.max_minutes:
                    reason = "max_minutes"
                    break
                if (time.monotonic() - last_ckpt) / 60 >= self.cfg.checkpoint_minutes:
                    start_wall = last_ckpt = self._checkpoint(start_wall)
        finally:
            bar.close()
            if reason != "non-finite loss":
                self._checkpoint(start_wall)
        return {
            "step": self.step,
            "stopped_by": reason,
            "train_minutes": self.elapsed_minutes,
            "cpu_minutes": self.cpu_minutes,
        }

    def _checkpoint(self, since: float) -> float:
        """Add the wall minutes since ``since`` and the CPU minutes since the last mark to the cumulative
        counts, save; the time counted up to."""
        now, cpu = time.monotonic(), time.process_time()
        self.elapsed_minutes += (now - since) / 60
        self.cpu_minutes += (cpu - self._cpu_mark) / 60
        self._cpu_mark = cpu
        self.save()
        return now
