"""Distil a teacher force field (e.g. AIMNet2) into a small MACE built from mace-torch's own classes.

The student is a ``ScaleShiftMACE`` whose isolated-atom energies are the teacher's reference energies
(:attr:`ForceField.reference_energies`), so ``E - sum_i E_ref(Z_i)`` means the same for both and
formation energies per atom stay comparable. It learns the interaction energy and the forces.

Pipeline (``elign mlff distill``)::

    molecules (QM9 train + perturbed copies [+ backbone samples]; held-out: QM9 valid + perturbed)
      -> teacher labels (energies eV, forces eV/A; invalid molecules dropped and counted), cached in
         DIR/labels.pt (tensors and plain values only; read with weights_only=True)
      -> student fit (loss = w_E MSE(energy per atom) + w_F MSE(forces), Adam, EMA), one graph per batch
         through :func:`elign.mlff.mace.build_graph`; DIR/state.pt written atomically each epoch (--resume)
      -> DIR/distilled.model (``torch.save(model)``, the format :class:`MACEForceField` reads),
         DIR/log.jsonl (one line per epoch) and DIR/report.json (held-out errors and speed vs the teacher)

The teacher's speed is measured while it labels the held-out set; the student's on the same molecules
with the same batch size, through ``load_force_field(DIR/distilled.model)`` (the safe loader).
"""

from __future__ import annotations

import copy
import io
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from elign.data.batch import MoleculeBatch
from elign.mlff.base import ELEMENT_SYMBOLS, ForceField
from elign.mlff.distill_config import DistillConfig, StudentConfig
from elign.mlff.distill_labels import (
    KIND_NAMES,
    Labels,
    isolated_atoms,
    load_labels,
    make_labels,
    qm9_molecules,
    sample_molecules_from,
    save_labels,
    to_molecule_batch,
)
from elign.mlff.student import (
    build_student,
    data_statistics,
    e0_per_molecule,
    evaluate_force_field,
    evaluate_model,
    fold_isolated_atoms,
    loss_terms,
)
from elign.training.callbacks import Callback

__all__ = [
    "DistillConfig",
    "StudentConfig",
    "Distiller",
    "get_labels",
    "summary_markdown",
]


STATE_FORMAT = "elign-distill-state/1"


class _Run:
    """One distillation: model, optimiser, EMA, epoch counter, logs; checkpointed to DIR/state.pt."""

    def __init__(self, config: DistillConfig, labels: Labels, device: torch.device) -> None:
        self.config, self.labels, self.device = config, labels, device
        elements = config.elements or sorted(
            {int(z) for z in labels.train.numbers.unique().tolist() if z > 0}
            | {int(z) for z in labels.val.numbers.unique().tolist() if z > 0}
        )
        self.elements = tuple(int(z) for z in elements)
        self.stats = data_statistics(labels.train, labels.reference_energies, config.student.r_max)
        torch.manual_seed(config.seed)
        self.model = build_student(
            config.student, self.elements, labels.reference_energies, self.stats, config.scaling
        ).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, amsgrad=True)
        self.ema = None
        if config.ema_decay > 0:
            from torch_ema import ExponentialMovingAverage

            self.ema = ExponentialMovingAverage(self.model.parameters(), decay=config.ema_decay)
        self.e0_train = e0_per_molecule(labels.train.numbers, labels.reference_energies)  # [M_train]
        self.atoms = isolated_atoms(self.elements, labels.reference_energies)  # [n_el] single atoms
        self.epoch = 0
        self.step = 0
        self.seconds = 0.0  # training wall time so far, over all sessions
        self.history: list[dict[str, Any]] = []

    # --------------------------------------------------------------------------- state
    def state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "epoch": self.epoch,
            "step": self.step,
            "seconds": self.seconds,
            "history": self.history,
            "elements": list(self.elements),
            "config": self.config.to_dict(),
        }

    def save(self, path: Path) -> None:
        """The training state, never with a non-finite weight, EMA or optimiser moment (the last one stays)."""
        from elign.io.checkpoints import refuse_non_finite
        from elign.io.files import atomic_write

        state = self.state()
        what = f"distillation became non-finite by epoch {self.epoch}, step {self.step}"
        refuse_non_finite(state, ("model", "optimizer", "ema"), what, path)
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write(path, buf.getvalue())

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: unknown distillation state format {state.get('format')!r}")
        if tuple(state["elements"]) != self.elements:
            raise ValueError(f"{path}: the saved student knows elements {state['elements']}, this run {self.elements}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step, self.seconds = state["epoch"], state["step"], state["seconds"]
        self.history = state["history"]

    # --------------------------------------------------------------------------- steps
    def lr_at(self, epoch_progress: float) -> float:
        """Cosine decay from lr to lr/20 over the configured epochs."""
        frac = min(epoch_progress / max(self.config.epochs, 1), 1.0)
        return self.config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    def final_model(self) -> torch.nn.Module:
        """A CPU float32 copy in eval mode: EMA weights (when on), E0 folded (see fold_isolated_atoms)."""
        model = copy.deepcopy(self.model)
        if self.ema is not None:
            self.ema.copy_to(model.parameters())
        model.zero_grad(set_to_none=True)
        model = model.to("cpu", torch.float32).eval()
        return fold_isolated_atoms(model, self.labels.reference_energies)

    def evaluate(self) -> dict[str, float]:
        model = self.final_model().to(self.device)
        return evaluate_model(model, self.labels.val, self.config.label_batch_size, self.device)

    def train_epoch(
        self, deadline: float | None, progress: bool, stop_event: threading.Event | None = None
    ) -> tuple[dict[str, float], bool]:
        """One pass over a fresh permutation; returns (train losses, stopped part way by the deadline or the
        event)."""
        from tqdm.auto import tqdm

        data, cfg = self.labels.train, self.config
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + self.epoch)
        order = torch.randperm(len(data), generator=gen)
        n_batches = math.ceil(len(data) / cfg.batch_size)
        sums = torch.zeros(3, device=self.device)  # loss, mse_energy, mse_forces (no sync per step)
        self.model.train()
        stopped, done = False, 0
        t0 = time.perf_counter()
        for k in tqdm(range(n_batches), desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not progress, leave=False):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            for g in self.optimizer.param_groups:
                g["lr"] = self.lr_at(self.epoch + k / n_batches)
            mse_e, mse_f = loss_terms(self.model, data.take(idx), self.atoms, self.e0_train[idx], self.device)
            loss = cfg.energy_weight * mse_e + cfg.forces_weight * mse_f
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            done += 1
            sums += torch.stack([loss, mse_e, mse_f]).detach()
            if (deadline is not None and time.perf_counter() > deadline) or (stop_event and stop_event.is_set()):
                stopped = done < n_batches
                break
        self.seconds += time.perf_counter() - t0
        means = (sums / max(done, 1)).tolist()
        return dict(zip(("loss", "mse_energy", "mse_forces"), means, strict=True)), stopped


TeacherSource = ForceField | Callable[[], ForceField] | None


def _get_teacher(teacher: TeacherSource, config: DistillConfig, device: torch.device) -> ForceField:
    if isinstance(teacher, ForceField):
        return teacher
    if teacher is not None:
        return teacher()
    from elign.mlff import load_force_field

    return load_force_field(config.teacher, device=device)


def _default_molecules(
    config: DistillConfig, device: str
) -> tuple[list[MoleculeBatch], list[MoleculeBatch], list[MoleculeBatch]]:
    train, val = qm9_molecules(config.n_train, config.n_val)
    samples = []
    if config.num_samples:
        samples = [
            sample_molecules_from(
                config.samples_from, config.num_samples, config.seed, device, config.sample_steps, config.progress
            )
        ]
    return [train], [val], samples


def get_labels(
    config: DistillConfig,
    teacher: TeacherSource = None,
    molecules: tuple[Sequence[MoleculeBatch], Sequence[MoleculeBatch]] | None = None,
    log: Callable[[str], None] = print,
) -> Labels:
    """Cached labels from DIR/labels.pt when their key matches; else build, label and cache them.

    ``molecules``: (train batches, held-out batches) to use instead of QM9 (perturbed copies are added).
    """
    device = torch.device(config.device)
    path = Path(config.out_dir) / "labels.pt"
    if path.exists():
        labels = load_labels(path)
        if labels.key == config.label_key():
            log(f"labels: {len(labels.train)} train / {len(labels.val)} held-out molecules from {path} (cached)")
            return labels
        log(f"labels: {path} was made with other settings ({labels.key}); relabelling")
    if molecules is None:
        train, val, samples = _default_molecules(config, str(device))
    else:
        train, val, samples = list(molecules[0]), list(molecules[1]), []
    ff = _get_teacher(teacher, config, device)
    labels = make_labels(ff, train, val, config, samples)
    save_labels(path, labels)
    log(
        f"labels: {len(labels.train)} train / {len(labels.val)} held-out molecules by {labels.teacher}, "
        f"{sum(labels.n_invalid.values())} invalid dropped {labels.invalid_reasons or ''} -> {path}"
    )
    return labels


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _save_model(model: torch.nn.Module, path: Path) -> None:
    from elign.io.files import atomic_write

    buf = io.BytesIO()
    torch.save(model, buf)
    atomic_write(path, buf.getvalue())


def _speed_and_check(path: Path, labels: Labels, config: DistillConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Reload the student through load_force_field (safe loader); its errors and speed on the held-out set."""
    from elign.mlff import load_force_field

    ff = load_force_field(path, device=config.device)
    warm = labels.val.take(torch.arange(min(config.label_batch_size, len(labels.val))))
    ff(to_molecule_batch(warm.positions, warm.numbers).to(ff.device))  # warm-up, not timed
    errors, seconds = evaluate_force_field(ff, labels.val, config.label_batch_size)
    speed = {
        "student_molecules_per_s": len(labels.val) / max(seconds, 1e-9),
        "teacher_molecules_per_s": labels.teacher_molecules_val / max(labels.teacher_seconds_val, 1e-9),
        "batch_size": config.label_batch_size, "device": str(config.device),
        "threads": torch.get_num_threads(), "molecules": len(labels.val),
        "teacher_timing": "measured while labelling the held-out set (possibly in an earlier session)",
    }  # fmt: skip
    speed["speedup"] = speed["student_molecules_per_s"] / max(speed["teacher_molecules_per_s"], 1e-9)
    return errors, speed


def _train(
    run: _Run,
    paths: tuple[Path, Path, Path],
    log: Callable[[str], None],
    callbacks: Sequence[Callback],
    stop_event: threading.Event | None,
) -> bool:
    """Epochs until ``config.epochs``, ``max_minutes`` of training or ``stop_event``; each logged (and passed to
    the callbacks), saved and written as a model. -> whether time or the event stopped it."""
    config = run.config
    log_path, state_path, model_path = paths
    deadline = time.perf_counter() + 60 * config.max_minutes if config.max_minutes else None  # training only
    stopped = False
    while run.epoch < config.epochs and not stopped and (deadline is None or time.perf_counter() < deadline):
        losses, stopped = run.train_epoch(deadline, config.progress, stop_event)
        stopped = stopped or bool(stop_event and stop_event.is_set())
        run.epoch += 1
        val = run.evaluate()
        record = {
            "epoch": run.epoch,
            "step": run.step,
            "lr": run.lr_at(run.epoch),
            "train_seconds": run.seconds,
            **{f"train_{k}": v for k, v in losses.items()},
            **{f"val_{k}": v for k, v in val.items()},
        }
        run.history.append(record)
        _append_jsonl(log_path, record)
        for cb in callbacks:
            cb.on_step_end(run.epoch, record)
        run.save(state_path)
        _save_model(run.final_model(), model_path)
        log(
            f"epoch {run.epoch}: loss {losses['loss']:.4g}, held-out energy MAE "
            f"{val['energy_mae_mev_per_atom']:.2f} meV/atom, force MAE {val['force_mae_ev_per_a']:.4f} eV/A"
        )
        if stopped:
            log(f"stopping in epoch {run.epoch}: asked to, or --max-minutes {config.max_minutes} reached")
    return stopped


def _report(
    run: _Run, labels: Labels, config: DistillConfig, model_path: Path, n_params: int, stopped: bool
) -> dict[str, Any]:
    """The run's report: data, training, held-out errors before and after, and speed against the teacher."""
    errors, speed = _speed_and_check(model_path, labels, config)
    report = {
        "teacher": labels.teacher, "student": str(model_path), "config": config.to_dict(),
        "elements": list(run.elements), "parameters": n_params, "statistics": run.stats,
        "data": {"train": len(labels.train), "held_out": len(labels.val), "invalid_dropped": labels.n_invalid,
                 "invalid_reasons": labels.invalid_reasons,
                 "train_kinds": {KIND_NAMES[k]: int((labels.train.kind == k).sum()) for k in (0, 1, 2)}},
        "epochs": run.epoch, "steps": run.step, "train_seconds": run.seconds, "stopped_by_time": stopped,
        "held_out_before": {k.removeprefix("val_"): v for k, v in run.history[0].items() if k.startswith("val_")},
        "held_out": errors, "speed": speed,
        "reference_energies": {ELEMENT_SYMBOLS.get(z, str(z)): e for z, e in labels.reference_energies.items()
                               if z in run.elements},
    }  # fmt: skip
    return report


class Distiller:
    """Distillation under the trainers' contract (:mod:`elign.training.callbacks`):
    ``Distiller(config, callbacks).train(stop_event) -> report``. Labels (or reads cached labels), trains the
    student, writes the model, log and report. ``callbacks`` get ``on_step_end(epoch, record)`` after every
    epoch; the stop event ends an epoch at its next batch, saved as any epoch is."""

    def __init__(
        self,
        config: DistillConfig,
        callbacks: Sequence[Callback] = (),
        teacher: TeacherSource = None,
        molecules: tuple[Sequence[MoleculeBatch], Sequence[MoleculeBatch]] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config, self.callbacks, self.teacher, self.molecules, self.log = (
            config, list(callbacks), teacher, molecules, log
        )  # fmt: skip

    def train(self, stop_event: threading.Event | None = None) -> dict[str, Any]:
        config, log = self.config, self.log
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        labels = get_labels(config, self.teacher, self.molecules, log)
        run = _Run(config, labels, torch.device(config.device))
        state_path, log_path, model_path = out / "state.pt", out / "log.jsonl", out / "distilled.model"
        if config.resume and state_path.exists():
            run.load(state_path)
            log(f"resumed {state_path} at epoch {run.epoch}")
        elif log_path.exists():
            log_path.unlink()
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=1))
        n_params = sum(p.numel() for p in run.model.parameters())
        log(
            f"student: ScaleShiftMACE {config.student.hidden_irreps()}, max_ell {config.student.max_ell}, "
            f"r_max {config.student.r_max}, {n_params:,} parameters, elements {list(run.elements)}; "
            f"avg neighbours {run.stats['avg_num_neighbors']:.2f}"
        )
        if not run.history:
            before = run.evaluate()
            run.history.append({"epoch": 0, **{f"val_{k}": v for k, v in before.items()}})
            _append_jsonl(log_path, run.history[-1])
        stopped = _train(run, (log_path, state_path, model_path), log, self.callbacks, stop_event)
        if not model_path.exists():
            _save_model(run.final_model(), model_path)
        report = _report(run, labels, config, model_path, n_params, stopped)
        (out / "report.json").write_text(json.dumps(report, indent=1))
        log(summary_markdown(report))
        return report


def summary_markdown(report: dict[str, Any]) -> str:
    """A README-ready summary of a distillation report."""
    h, b, s, d = report["held_out"], report["held_out_before"], report["speed"], report["data"]
    cfg = report["config"]
    st = cfg["student"]
    lines = [
        f"## Distilled MACE (teacher: {report['teacher']})",
        "",
        f"- Student: mace-torch ScaleShiftMACE, hidden irreps {_irreps(st)}, max_ell {st['max_ell']}, "
        f"r_max {st['r_max']} A, {st['num_interactions']} interactions, correlation {st['correlation']}, "
        f"{report['parameters']:,} parameters; elements {report['elements']}; a lone atom's energy is the "
        f"teacher's isolated-atom energy (E0 folded), so formation energies per atom are on the teacher's scale.",
        f"- Data: {d['train']} training molecules ({d['train_kinds']}), {d['held_out']} held-out "
        f"(perturbation sigma {cfg['perturb']} A); {sum(d['invalid_dropped'].values())} dropped as invalid.",
        f"- Training: {report['epochs']} epochs, {report['steps']} steps, {report['train_seconds'] / 60:.1f} min "
        f"on {s['device']} ({s['threads']} threads)"
        + (", stopped by the time limit" if report["stopped_by_time"] else "")
        + ".",
        "",
        "| held-out vs teacher | before training | after training |",
        "|---|---|---|",
        f"| energy MAE (meV/atom) | {b['energy_mae_mev_per_atom']:.2f} | {h['energy_mae_mev_per_atom']:.2f} |",
        f"| force MAE (eV/A) | {b['force_mae_ev_per_a']:.4f} | {h['force_mae_ev_per_a']:.4f} |",
    ]
    for kind in ("reference", "perturbed"):
        if f"{kind}_force_mae_ev_per_a" in h:
            lines.append(
                f"| {kind} geometries: energy MAE / force MAE | "
                f"{b.get(f'{kind}_energy_mae_mev_per_atom', math.nan):.2f} / "
                f"{b.get(f'{kind}_force_mae_ev_per_a', math.nan):.4f} | "
                f"{h[f'{kind}_energy_mae_mev_per_atom']:.2f} / {h[f'{kind}_force_mae_ev_per_a']:.4f} |"
            )
    lines += [
        "",
        f"Speed (energy + forces, {s['molecules']} held-out molecules, batch {s['batch_size']}, {s['device']}, "
        f"{s['threads']} threads): student {s['student_molecules_per_s']:.1f} molecules/s, teacher "
        f"{s['teacher_molecules_per_s']:.1f} molecules/s ({s['speedup']:.2f}x).",
    ]
    return "\n".join(lines)


def _irreps(st: dict[str, Any]) -> str:
    return StudentConfig(**{**st, "radial_mlp": tuple(st["radial_mlp"])}).hidden_irreps()
