"""FED-GRPO orchestration: rollouts -> rewards -> advantages -> clipped policy update, with
checkpoints, exact resume, held-out evaluation, callbacks and DistributedDataParallel-style
gradient synchronisation (an explicit all-reduce; rollouts split by whole groups).
"""

from __future__ import annotations

import copy
import io
import json
import math
import threading
import time
from pathlib import Path

import torch

from elign.diffusion.scheduler import gaussian_log_prob
from elign.io.checkpoints import (
    load_checkpoint,
    refuse_non_finite,
    remove_stale_temporaries,
    require_state,
    save_checkpoint,
    state_must_fit,
    truncate_log,
)
from elign.io.files import atomic_write
from elign.io.run_lock import RunLock
from elign.metrics.stability import stability_metrics
from elign.rl.advantages import (
    carry_forward,
    disentangled_advantages,
    shaped_energy_returns,
)
from elign.rl.composition import CompositionTracker
from elign.rl.config import AlignConfig
from elign.rl.held_out import held_out_metrics, held_out_score
from elign.rl.loss import clipped_surrogate, gaussian_kl, warmup_cosine
from elign.rl.prefix import prefix_kl_backward, prefix_pairs
from elign.rl.prompts import PromptSampler
from elign.rl.rewards import ScoredRollouts, nan_mean_std, score_rollouts
from elign.rl.rollout import Rollouts, grouped_rollouts, shared_first_steps
from elign.rl.uniqueness import RecentMolecules
from elign.training.callbacks import Callback
from elign.training.distributed import (
    average_gradients,
    average_metrics,
    average_tensor,
    gather_lists,
    rank_world,
    resolve_device,
)

__all__ = ["FedGrpoTrainer", "Callback"]  # Callback: elign.training.callbacks (re-exported)


# Every random draw of an iteration is a function of (cfg.seed, iteration) (the prompts' streams: elign.rl.prompts),
# so a resumed run draws what an uninterrupted one would.
MINIBATCH_STREAM = 31  # the update's minibatch order
TRAINED_STEPS_STREAM = 61  # the update's subset of trained steps (train_steps)
# what an update logs when it trains no rollout (none on the data) or no shared state, for the terms it has
UPDATE_FIGURES = {"clip_fraction": 0.0, "ratio_mean": 1.0, "approx_kl": 0.0, "loss": 0.0, "kl": 0.0, "kl_prefix": 0.0}


class FedGrpoTrainer:
    def __init__(
        self,
        config: AlignConfig,
        callbacks: list[Callback] | None = None,
        force_field=None,
        model=None,
        model_config=None,
    ) -> None:
        """``force_field``, ``model`` and ``model_config`` may be given directly (tests, the studio)."""
        self.cfg = config
        self.callbacks = list(callbacks or [])
        self.rank, self.world = rank_world(config.device)
        self.device = torch.device(resolve_device(config.device))
        if config.prompts % self.world:
            raise ValueError(
                f"prompts={config.prompts} must be divisible by the {self.world} processes "
                "(groups are never cut across processes)"
            )
        if model is None:
            from elign.io.assets import resolve_checkpoint

            model, model_config, _ = load_checkpoint(resolve_checkpoint(config.checkpoint))
        self.model_config = model_config
        self.info = model_config.dataset_info()
        if model.context_dim and config.prompts_by != "formula":
            raise ValueError("a composition-conditioned model aligns on formulas: set prompts_by=formula")
        self.policy = model.to(self.device).float()
        self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.ff = force_field if force_field is not None else _load_ff(config, self.device)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.iteration = 0
        self.best_score = -math.inf
        self.out = Path(config.out_dir)
        self.prompts = PromptSampler(self.info, config, self.rank, self.world, self.device)  # self.prompts(iteration)
        self.composition = CompositionTracker(
            self.info,
            config.composition_momentum,
            bonds=config.composition_bonds,
            required=config.w_composition > 0,
        )
        self.recent = RecentMolecules(config.uniqueness_memory)  # the uniqueness channel's memory

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "format": "elign-align/1",
            "policy": self.policy.state_dict(),
            "reference": self.reference.state_dict(),
            "optimizer": self.opt.state_dict(),
            "iteration": self.iteration,
            "best_score": self.best_score,
            **self.composition.state_dict(),
            **self.recent.state_dict(),
            "config": json.dumps(self.cfg.to_dict()),
            "model_config": json.dumps(self.model_config.to_dict()),
        }

    def save(self) -> None:
        if self.rank:
            return
        state = self.state_dict()
        what = f"alignment became non-finite by iteration {self.iteration}"
        refuse_non_finite(state, ("policy", "optimizer"), what, self.out / "state.pt")
        save_checkpoint(
            self.out / "model.safetensors",
            self.policy,
            self.model_config,
            extra={
                "aligned_iterations": self.iteration,
                "backbone": str(self.cfg.checkpoint),
                "mlff": str(self.cfg.mlff),
                "method": "FED-GRPO",
                "prompts_by": self.cfg.prompts_by,
            },
        )
        buf = io.BytesIO()  # the state last: a kill between the two never leaves the weights behind it
        torch.save(state, buf)
        atomic_write(self.out / "state.pt", buf.getvalue())

    def maybe_resume(self) -> bool:
        path = self.out / "state.pt"
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # truncated, foreign or tampered files all end here
            raise ValueError(
                f"{path} is not a readable alignment state ({type(e).__name__}); move it away to "
                "start afresh or restore a good copy"
            ) from None
        require_state(state, "elign-align/1", ("policy", "reference", "optimizer", "iteration", "best_score"), path)
        with state_must_fit(path):
            self.policy.load_state_dict(state["policy"])
            self.reference.load_state_dict(state["reference"])
            self.opt.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.best_score = float(state["best_score"])
        self.composition.load_state_dict(state)
        self.recent.load_state_dict(state)
        if self.rank == 0:
            truncate_log(self.out / "metrics.jsonl", "iteration", self.iteration)
        return True

    # ------------------------------------------------------------------ one iteration
    def rollout_and_score(self, iteration: int) -> ScoredRollouts:
        prompts = self.prompts(iteration)
        t0 = time.perf_counter()
        self.policy.eval()
        ro = grouped_rollouts(
            self.policy,
            prompts.sizes,
            self.cfg.group_size,
            prompts.steps,
            prompts.shared_steps,
            prompts.generators,
            self.info.atomic_numbers,
            types=prompts.types,
            type_guidance=self.cfg.type_guidance,
        )
        return score_rollouts(self.policy, self.ff, ro, self.info, self.cfg, time.perf_counter() - t0)

    # ------------------------------------------------------------------ composition
    def _track_composition(self, scored: ScoredRollouts) -> dict[str, float]:
        """Fold this iteration's drift from QM9 into the running one; -> the figures logged (none without QM9's
        elements)."""
        if not self.composition.available:
            return {}
        sizes = scored.rollouts.node_mask.sum(dim=(1, 2)).round().long().cpu()  # [R]
        drift = self.composition.batch_drift(scored.fractions, scored.bond_counts, sizes)  # [D]
        drift = average_tensor(drift, self.world, self.device)
        self.composition.fold(drift)
        return self.composition.figures(drift, scored.fractions, scored.bond_counts)

    def _rollout_channels(self, scored: ScoredRollouts, repeats: torch.Tensor | None, groups: int):
        """[G, K] the weighted channels judged on the final molecules alone, composition and uniqueness (repeats
        [R]: how often each molecule was made recently, counted against the memory when None); None when off."""
        channels = []
        if self.cfg.w_composition:
            vectors = self.composition.vectors(scored.fractions, scored.bond_counts)  # [R, D]
            vectors = vectors.view(groups, -1, vectors.shape[-1])
            channels.append(self.composition.channel(vectors, self.cfg.w_composition, self.cfg.composition_tolerance))
        if self.cfg.w_uniqueness:
            if repeats is None:
                repeats = self.recent.counts(scored.smiles, gather_lists(scored.smiles, self.world))
            channels.append(self.recent.channel(repeats, scored.rdkit_valid, groups, self.cfg.w_uniqueness))
        return sum(channels[1:], channels[0]).to(scored.reward_force.dtype) if channels else None

    def advantages(self, scored: ScoredRollouts, repeats: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """[R, L] mixed advantages and the count of substitutions made; repeats [R]: how often each rollout's
        molecule was made recently (:class:`RecentMolecules`; counted here when not given)."""
        ro, evaluated, psi_t, psi_valid = scored.rollouts, scored.evaluated, scored.psi_t, scored.psi_valid
        G, K, L = ro.num_groups, ro.group_size, ro.num_steps
        # an x0 prediction the force field cannot score gets its group's mean potential at that step
        psi = psi_t.view(G, K, L)
        ok = psi_valid.view(G, K, L) & scored.valid.view(G, K, 1)
        group_mean = torch.where(ok, psi, 0).sum(1, keepdim=True) / ok.sum(1, keepdim=True).clamp(min=1)
        psi = torch.where(ok, psi, group_mean.expand_as(psi))
        psi = carry_forward(psi, evaluated)
        returns = shaped_energy_returns(scored.psi_0.view(G, K), psi, ro.t.cpu(), self.cfg.discount)
        adv = disentangled_advantages(
            scored.reward_force.view(G, K),
            returns,
            scored.valid.view(G, K),
            self.cfg.w_force,
            self.cfg.w_energy,
            self.cfg.adv_clip,
            self.cfg.failed_advantage,
            self.cfg.adv_eps,
            self.cfg.w_success if self.cfg.failed_mode == "group" else None,
            self._rollout_channels(scored, repeats, G),
        )
        psi_failed = int((~psi_valid[:, evaluated] & scored.valid[:, None]).sum())
        return adv.view(G * K, L), {"psi_failed": psi_failed}

    def _items(self, ro: Rollouts, rollout_ids: torch.Tensor, step_ids: torch.Tensor | None = None):
        """All (step, rollout) pairs of the given rollouts and steps (all by default), in chunks of ``cfg.chunk``."""
        step_ids = torch.arange(ro.num_steps) if step_ids is None else step_ids
        steps = step_ids.repeat_interleave(len(rollout_ids))
        rolls = rollout_ids.repeat(len(step_ids))
        for start in range(0, len(steps), self.cfg.chunk):
            yield steps[start : start + self.cfg.chunk], rolls[start : start + self.cfg.chunk]

    def _forward(self, model, ro: Rollouts, l_idx, r_idx):
        """Mean [M, N, D'] and log-prob [M] of the stored z_s under ``model`` for items (l, r), over the channels
        the policy chooses (D' = D, or the 3 positions when the types were fixed)."""
        dev = self.device
        l_idx, r_idx = l_idx.to(dev), r_idx.to(dev)
        z_t, z_s, mask = ro.z_t[l_idx, r_idx], ro.z_s[l_idx, r_idx], ro.node_mask[r_idx]
        T = self.policy.T
        s, t = (ro.s[l_idx] / T).float(), (ro.t[l_idx] / T).float()
        context = None if ro.context is None else ro.context[r_idx]  # [M, C]
        shared = shared_first_steps(l_idx, r_idx, ro.group_size)
        if shared is None:
            eps = model.predict_eps(z_t, t.view(-1, 1), mask, context)  # the network ...
        else:  # ... once for each distinct input: the first trained step's is shared within a group
            rows, inverse = shared
            eps = model.predict_eps(z_t[rows], t[rows].view(-1, 1), mask[rows], _rows(context, rows))[inverse]
        mean, std, _ = model.scheduler.reverse(z_t, eps, s, t, mask)  # ... then the Gaussian step
        mean, z_s = mean[..., ro.channels], z_s[..., ro.channels]
        return mean, std, gaussian_log_prob(z_s, mean, std, mask), mask

    def trained_steps(self, num_steps: int, iteration: int) -> torch.Tensor:
        """[L'] sorted indices of the branched steps this iteration's update trains: all of them, or
        ``cfg.train_steps`` drawn at random (DanceGRPO's subset), a function of (seed, iteration)."""
        if not self.cfg.train_steps or self.cfg.train_steps >= num_steps:
            return torch.arange(num_steps)
        g = torch.Generator().manual_seed(self.cfg.seed * TRAINED_STEPS_STREAM + iteration)
        return torch.randperm(num_steps, generator=g)[: self.cfg.train_steps].sort().values

    def update(self, ro: Rollouts, adv: torch.Tensor, iteration: int) -> dict[str, float]:
        """Minibatches of whole rollouts; gradients accumulated over chunks, all-reduced, one step each.

        Old log-probs are those of the policy before this update. The first minibatch takes them from its own
        forward, detached (the policy has not moved yet: the same numbers, ratios exactly 1); later ones take
        the rollout's, which the same policy computed when it sampled (equal up to float rounding), so no
        forward is spent on them. The reference network's means are computed only when the KL term counts.
        A rollout with a non-finite value is not trained; the KL covers the rollouts on the data
        (:meth:`Rollouts.on_data`), and each minibatch also takes its share of the prefix KL (``prefix_kl``).
        """
        R = ro.node_mask.shape[0]
        step_ids = self.trained_steps(ro.num_steps, iteration)  # [L']
        order = torch.randperm(R, generator=torch.Generator().manual_seed(self.cfg.seed * MINIBATCH_STREAM + iteration))
        order = order[ro.finite().cpu()[order]]  # the finite rollouts, in a seeded order
        on_data = ro.on_data().cpu()  # [R] the rollouts the KL covers
        minibatches = order.tensor_split(self.cfg.minibatches)
        pairs = prefix_pairs(ro, self.cfg)  # [P, 2] (shared step, group) pairs of the prefix KL
        prefix = pairs.tensor_split(self.cfg.minibatches)
        kl_ref_mean = self._reference_means(ro, order[on_data[order]], step_ids) if self.cfg.kl_beta else None
        adv = adv.to(self.device)
        factor = warmup_cosine(iteration, self.cfg.iterations, self.cfg.warmup_iterations, self.cfg.min_lr_ratio)
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * factor
        stats: dict[str, list[float]] = {}
        self.policy.train()
        for k_mb, (mb, shared) in enumerate(zip(minibatches, prefix, strict=True)):
            self.opt.zero_grad(set_to_none=True)
            self._rollouts_backward(ro, adv, mb, step_ids, (kl_ref_mean, on_data), k_mb == 0, stats)
            prefix_kl_backward(self.policy, self.reference, ro, shared, len(pairs), self.cfg, stats)
            average_gradients(self.policy, self.world)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
            stats.setdefault("grad_norm", []).append(float(grad_norm))
            self.opt.step()
        out = {k: sum(v) / len(v) for k, v in stats.items()}
        out["ratio_min"], out["ratio_max"] = min(stats.get("ratio_min", [1.0])), max(stats.get("ratio_max", [1.0]))
        terms = {"kl": self.cfg.kl_beta, "kl_prefix": self.cfg.kl_beta and self.cfg.prefix_kl}
        for key, idle in UPDATE_FIGURES.items():  # the same figures from every update (and process)
            if terms.get(key, True):
                out.setdefault(key, idle)
        return {**out, "off_data": int((~on_data).sum()), "lr": self.cfg.lr * factor}

    def _reference_means(self, ro: Rollouts, rollout_ids: torch.Tensor, step_ids: torch.Tensor) -> torch.Tensor:
        """[L, R, N, D'] the reference network's Gaussian means at the given rollouts' trained steps (zeros
        elsewhere)."""
        means = torch.zeros(ro.num_steps, *ro.z_t[..., ro.channels].shape[1:], device=self.device)
        with torch.no_grad():
            for l_idx, r_idx in self._items(ro, rollout_ids, step_ids):
                means[l_idx, r_idx] = self._forward(self.reference, ro, l_idx, r_idx)[0]
        return means

    def _rollouts_backward(self, ro, adv, rollout_ids, step_ids, kl, first: bool, stats: dict) -> None:
        """Backpropagate one minibatch's clipped surrogate (and KL) over its rollouts' trained steps, in chunks;
        kl: (the reference's means or None without the term, [R] bool the rollouts it covers, the others counted
        as 0); the statistics are appended to ``stats``."""
        kl_ref_mean, on_data = kl
        total = len(rollout_ids) * len(step_ids)
        for l_idx, r_idx in self._items(ro, rollout_ids, step_ids):
            mean, std, logp, mask = self._forward(self.policy, ro, l_idx, r_idx)
            l_dev, r_dev = l_idx.to(self.device), r_idx.to(self.device)
            old = logp.detach() if first else ro.log_prob[l_dev, r_dev]
            loss, s = clipped_surrogate(logp, old, adv[r_dev, l_dev], self.cfg.clip_eps)
            if kl_ref_mean is not None:  # the KL to the reference is logged only where it is computed
                on = on_data[r_idx].to(self.device)
                pairs_kl = gaussian_kl(mean[on], kl_ref_mean[l_idx, r_idx][on], std[on], mask[on])  # [M']
                loss = loss + self.cfg.kl_beta * pairs_kl.sum() / len(l_idx)
                s["kl"] = pairs_kl.detach().sum() / len(l_idx)
            (loss * (len(l_idx) / total)).backward()
            for k, v in {**s, "loss": loss.detach()}.items():
                stats.setdefault(k, []).append(float(v))

    def run_iteration(self) -> dict[str, float]:
        it = self.iteration
        t_start = time.perf_counter()
        scored = self.rollout_and_score(it)
        ro = scored.rollouts
        composition = self._track_composition(scored)
        repeats = self.recent.observe(scored.smiles, gather_lists(scored.smiles, self.world))  # [R]
        adv, adv_info = self.advantages(scored, repeats)
        t_update = time.perf_counter()
        upd = self.update(ro, adv, it)
        timing = {**scored.timing, "time_update": time.perf_counter() - t_update}
        self.iteration += 1
        rf_mean, rf_std = nan_mean_std(scored.reward_force)
        re_mean, re_std = nan_mean_std(scored.psi_0)
        stab = stability_metrics(ro.molecules.to("cpu"), self.info.atom_decoder)
        metrics = {
            "iteration": self.iteration,
            "chain_steps": self.prompts.chain(it)[0],
            "reward_force_mean": rf_mean,
            "reward_force_std": rf_std,
            "reward_energy_mean": re_mean,
            "reward_energy_std": re_std,
            "failed": int((~scored.valid).sum()),
            "psi_failed": adv_info["psi_failed"],
            "rollout_atom_stability": stab["atom_stability"],
            "rollout_molecule_stability": stab["molecule_stability"],
            "rollout_validity": float(scored.rdkit_valid.float().mean()),
            "rollout_connected": float(scored.connected.float().mean()),
            "rollout_repeated": RecentMolecules.repeated_share(repeats, scored.rdkit_valid),
            "advantage_abs_mean": float(adv.abs().mean()),
            **composition,
            **upd,
            **timing,
            "time_iteration": time.perf_counter() - t_start,
        }
        return average_metrics(metrics, self.world, self.device, sums=("failed", "psi_failed", "off_data"))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, num: int | None = None) -> dict[str, float]:
        """Fresh samples (fixed seed, held out from training) scored by the reward force field, with the guards;
        callbacks with ``on_held_out(iteration, molecules)`` receive the molecules (a MoleculeBatch on the CPU)."""
        kept: list = []
        metrics = held_out_metrics(
            self.policy, self.ff, self.info, self.cfg, self.device, num, guards=self.composition.available, keep=kept
        )
        for cb in self.callbacks if self.rank == 0 else ():
            if hasattr(cb, "on_held_out"):
                cb.on_held_out(self.iteration, kept[0])
        return metrics

    def held_out_score(self, metrics: dict) -> float:
        """The criterion of best.safetensors (:func:`elign.rl.held_out.held_out_score`)."""
        return held_out_score(metrics, self.cfg)

    # ------------------------------------------------------------------ loop
    def train(self, stop_event: threading.Event | None = None, progress: bool = False) -> dict:
        """Iterate until ``cfg.iterations`` or ``stop_event``, holding the run folder's lock; -> a summary."""
        self.out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.out)
        if self.rank == 0:
            lock.acquire()  # one writer per run folder
        try:
            return self._train(stop_event, progress)
        finally:
            lock.release()

    def _train(self, stop_event: threading.Event | None, progress: bool) -> dict:
        from tqdm.auto import tqdm

        if self.rank == 0:
            remove_stale_temporaries(self.out)
            atomic_write(self.out / "config.json", json.dumps(self.cfg.to_dict(), indent=2).encode())
        resumed = self.maybe_resume()
        bar = tqdm(
            total=self.cfg.iterations,
            initial=self.iteration,
            desc="align",
            unit="it",
            disable=not progress or self.rank,
        )
        stopped = False
        consistent = True  # False once an iteration failed part way: its policy is then never saved
        try:
            while self.iteration < self.cfg.iterations:
                if stop_event is not None and stop_event.is_set():
                    stopped = True
                    break
                consistent = False
                metrics = self.run_iteration()
                self._check_finite(metrics)
                consistent = True
                if self.cfg.eval_every and self.iteration % self.cfg.eval_every == 0:
                    metrics.update(self.evaluate())
                    score = self.held_out_score(metrics)
                    metrics["eval_score"] = score
                    if math.isfinite(score) and score > self.best_score:
                        self.best_score = score
                        if self.rank == 0:
                            save_checkpoint(
                                self.out / "best.safetensors",
                                self.policy,
                                self.model_config,
                                extra={"aligned_iterations": self.iteration, **metrics},
                            )
                if self.iteration % self.cfg.checkpoint_every == 0 or self.iteration == self.cfg.iterations:
                    self.save()
                self._log(metrics)
                bar.update(1)
                bar.set_postfix(force=f"{metrics['reward_force_mean']:.3f}")
        finally:
            bar.close()
            if consistent:
                self.save()
        return {"iteration": self.iteration, "stopped": stopped, "resumed": resumed}

    def _check_finite(self, metrics: dict) -> None:
        """Stop before a non-finite loss or weight can overwrite a checkpoint (the last one is kept)."""
        bad = [k for k in ("loss", "grad_norm", "kl") if k in metrics and not math.isfinite(metrics[k])]
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            bad.append("policy weights")
        if bad:
            raise FloatingPointError(
                f"alignment became non-finite at iteration {self.iteration} ({', '.join(bad)}); nothing was "
                f"saved from it: {self.out / 'state.pt'} keeps the last checkpoint"
            )

    def _log(self, metrics: dict) -> None:
        if self.rank:
            return
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        for cb in self.callbacks:
            cb.on_step_end(self.iteration, metrics)


# ---------------------------------------------------------------------- helpers
def _rows(context: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if context is None else context[rows]


def _load_ff(cfg: AlignConfig, device: torch.device):
    from elign.io.assets import default_mlff
    from elign.mlff import load_force_field

    dtype = torch.float64 if cfg.mlff_dtype == "float64" else torch.float32
    return load_force_field(cfg.mlff or default_mlff(), device=device, dtype=dtype)
