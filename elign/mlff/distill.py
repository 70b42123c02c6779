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
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from elign.configs import non_negative_int, option, positive_int
from elign.data.batch import MoleculeBatch
from elign.data.elements import QM9_ATOMIC_NUMBERS
from elign.mlff.base import ELEMENT_SYMBOLS, ForceField
from elign.mlff.mace import build_graph
from elign.safe_import import import_mace

__all__ = [
    "DistillConfig",
    "LabelledSet",
    "Labels",
    "StudentConfig",
    "build_student",
    "distill",
    "evaluate_force_field",
    "label_molecules",
    "load_labels",
    "perturbed",
    "predict",
    "qm9_molecules",
    "sample_molecules_from",
    "save_labels",
    "summary_markdown",
]

KIND_NAMES = {0: "reference", 1: "perturbed", 2: "sample", 3: "isolated atom"}  # LabelledSet.kind codes
LABELS_FORMAT = "elign-distill-labels/1"
STATE_FORMAT = "elign-distill-state/1"


# ------------------------------------------------------------------------------------------ configs
@dataclass
class StudentConfig:
    """Architecture of the student MACE (all mace-torch's own building blocks)."""

    channels: int = option(32, "C: multiplicity of each hidden irrep", type=positive_int)
    max_ell: int = option(2, "highest l of the edge spherical harmonics", type=non_negative_int)
    hidden_l: int = option(0, "highest l of the hidden features (0: Cx0e, 1: Cx0e+Cx1o, ...)", type=non_negative_int)
    r_max: float = option(5.0, "cutoff (Angstrom)")
    num_interactions: int = option(2, "message-passing layers", type=positive_int)
    correlation: int = option(2, "body order of the product basis minus one", type=positive_int)
    num_bessel: int = option(8, "radial Bessel functions", type=positive_int)
    num_polynomial_cutoff: int = option(5, "order of the polynomial cutoff envelope", type=positive_int)
    mlp_channels: int = option(16, "scalar channels of the last readout MLP", type=positive_int)
    radial_mlp: tuple[int, ...] = option((32, 32), "hidden widths of the radial MLP", type=positive_int)

    def hidden_irreps(self) -> str:
        return "+".join(f"{self.channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(self.hidden_l + 1))


QM9_ELEMENTS = QM9_ATOMIC_NUMBERS  # H C N O F: the default student's elements


@dataclass
class DistillConfig:
    """Labelling, training and reporting settings of one distillation run."""

    out_dir: str = option(MISSING, "run directory: labels.pt, state.pt, distilled.model, log.jsonl, report.json")
    teacher: str = option("aimnet2", "teacher force field: a name or a .model path (see load_force_field)")
    n_train: int = option(
        300, "QM9 training-split molecules (plus as many perturbed copies)", type=positive_int, flag="--train"
    )
    n_val: int = option(
        100, "held-out QM9 validation molecules (plus as many perturbed copies)", type=positive_int, flag="--val"
    )
    perturb: float = option(0.1, "sigma of the Gaussian displacement of the perturbed copies (Angstrom; 0: none)")
    samples_from: str | None = option(None, "backbone checkpoint whose samples join the training set")
    num_samples: int = option(0, "molecules sampled from samples_from", type=non_negative_int)
    sample_steps: int | None = option(None, "denoising steps of those samples (None: the model's T)", type=positive_int)
    epochs: int = option(20, "training epochs", type=positive_int)
    batch_size: int = option(16, "molecules per training step", type=positive_int)
    label_batch_size: int = option(
        32, "batch size of labelling, held-out evaluation and the speed comparison", type=positive_int
    )
    lr: float = option(5e-3, "learning rate")
    energy_weight: float = option(100.0, "w_E on the MSE of the energy per atom (eV/atom)^2")
    forces_weight: float = option(10.0, "w_F on the MSE of the force components (eV/A)^2")
    ema_decay: float = option(0.99, "decay of the exponential moving average (0: off)")
    scaling: str = option(
        "rms_forces",
        "output scaling: rms_forces (mace-torch's default) or energy_std",
        choices=["rms_forces", "energy_std"],
    )
    elements: tuple[int, ...] | None = option(
        None, "atomic numbers the student knows (None: those in the data; the CLI: QM9's H C N O F)", type=positive_int
    )
    seed: int = option(0, "seed of the selection, perturbations, samples and training")
    device: str = option("cpu", "'auto', 'cpu' or 'cuda[:i]'")
    max_minutes: float | None = option(None, "training minutes of this session, then checkpoint, model and report")
    resume: bool = option(False, "continue the run in out_dir from its state.pt")
    progress: bool = option(True, "progress bars")
    student: StudentConfig = field(default_factory=StudentConfig, metadata={"help": "the student's architecture"})

    def __post_init__(self) -> None:
        if isinstance(self.student, dict):
            self.student = StudentConfig(**self.student)
        checks = {
            "n_train": self.n_train >= 1, "n_val": self.n_val >= 1, "perturb": self.perturb >= 0,
            "num_samples": self.num_samples >= 0, "epochs": self.epochs >= 0, "batch_size": self.batch_size >= 1,
            "label_batch_size": self.label_batch_size >= 1, "lr": self.lr > 0,
            "energy_weight": self.energy_weight >= 0, "forces_weight": self.forces_weight >= 0,
            "ema_decay": 0 <= self.ema_decay < 1, "scaling": self.scaling in ("rms_forces", "energy_std"),
        }  # fmt: skip
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid distillation settings: {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")
        if self.num_samples and not self.samples_from:
            raise ValueError("num_samples > 0 needs samples_from (a backbone checkpoint)")

    def label_key(self) -> dict[str, Any]:
        """What the cached labels depend on: a cache with another key is relabelled."""
        return {
            "teacher": str(self.teacher),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "perturb": float(self.perturb),
            "samples_from": str(self.samples_from or ""),
            "num_samples": self.num_samples,
            "sample_steps": self.sample_steps or 0,
            "seed": self.seed,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["student"]["radial_mlp"] = list(self.student.radial_mlp)
        return d


# --------------------------------------------------------------------------------------- molecules
def _numbers(batch: MoleculeBatch) -> torch.Tensor:  # [B, N] long, 0 on padding
    return torch.where(batch.node_mask[..., 0] > 0.5, batch.charges[..., 0].round().long(), 0)


def perturbed(batch: MoleculeBatch, sigma: float, generator: torch.Generator) -> MoleculeBatch:
    """A copy with Gaussian displacements (sigma, Angstrom) on the real atoms."""
    noise = torch.randn(batch.positions.shape, generator=generator, dtype=batch.positions.dtype)  # [B, N, 3]
    pos = batch.positions + sigma * noise.to(batch.device) * batch.node_mask
    return MoleculeBatch(pos, batch.one_hot, batch.charges, batch.node_mask)


def qm9_molecules(n_train: int, n_val: int, data=None) -> tuple[MoleculeBatch, MoleculeBatch]:
    """The first ``n_train`` molecules of QM9's training split and ``n_val`` of its validation split."""
    if data is None:
        from elign.data.qm9 import load_qm9

        data = load_qm9()
    train_idx, val_idx = data.split("train")[:n_train], data.split("valid")[:n_val]
    return data.batch(train_idx), data.batch(val_idx)


def sample_molecules_from(
    checkpoint: str, num: int, seed: int, device: str, steps: int | None = None, progress: bool = True
) -> MoleculeBatch:
    """``num`` molecules sampled from a backbone checkpoint with its own dataset info."""
    from elign.diffusion.sampler import sample_molecules
    from elign.io.assets import resolve_checkpoint
    from elign.io.checkpoints import load_checkpoint

    model, config, _ = load_checkpoint(resolve_checkpoint(checkpoint), device)
    info = config.dataset_info()
    return sample_molecules(
        model,
        num,
        info.size_probabilities(),
        steps=steps,
        seed=seed,
        device=device,
        atomic_numbers=info.atomic_numbers,
        progress=progress,
    ).to("cpu")


def _dense(batches: Sequence[MoleculeBatch]) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions [M, N, 3] float32 and atomic numbers [M, N] long of several batches, one padding."""
    N = max((b.max_atoms for b in batches), default=0)
    pos, num = [], []
    for b in batches:
        b = b.to("cpu")
        pad = N - b.max_atoms
        pos.append(torch.nn.functional.pad(b.positions.float() * b.node_mask, (0, 0, 0, pad)))
        num.append(torch.nn.functional.pad(_numbers(b), (0, pad)))
    return torch.cat(pos), torch.cat(num)


def to_molecule_batch(positions: torch.Tensor, numbers: torch.Tensor) -> MoleculeBatch:
    """MoleculeBatch of positions [B, N, 3] and atomic numbers [B, N] (one-hot over numbers 0..127)."""
    mask = (numbers > 0).unsqueeze(-1).to(positions.dtype)  # [B, N, 1]
    one_hot = torch.zeros(*numbers.shape, 1, dtype=positions.dtype, device=positions.device)  # [B, N, 1]
    return MoleculeBatch(positions * mask, one_hot + mask, numbers.unsqueeze(-1).to(positions.dtype), mask)


# ------------------------------------------------------------------------------------------- labels
@dataclass
class LabelledSet:
    """Molecules with the teacher's labels, dense and padded (padding: number 0, zero vectors)."""

    positions: torch.Tensor  # [M, N, 3] float32, Angstrom
    numbers: torch.Tensor  # [M, N] long, 0 on padding
    energy: torch.Tensor  # [M] float64, eV
    forces: torch.Tensor  # [M, N, 3] float32, eV/A
    kind: torch.Tensor  # [M] long, KIND_NAMES

    def __len__(self) -> int:
        return self.numbers.shape[0]

    @property
    def n_atoms(self) -> torch.Tensor:  # [M] long
        return (self.numbers > 0).sum(dim=1)

    def take(self, idx: torch.Tensor) -> LabelledSet:
        """Molecules ``idx`` [b], trimmed to the largest of them."""
        n = max(int(self.n_atoms[idx].max()), 1) if len(idx) else 1
        return LabelledSet(
            self.positions[idx, :n], self.numbers[idx, :n], self.energy[idx], self.forces[idx, :n], self.kind[idx]
        )

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def cat(a: LabelledSet, b: LabelledSet) -> LabelledSet:
        """Both sets in one, padded to the larger atom count."""
        N = max(a.numbers.shape[1], b.numbers.shape[1])
        parts = []
        for f in ("positions", "numbers", "energy", "forces", "kind"):
            xa, xb = getattr(a, f), getattr(b, f)
            if xa.dim() > 1:  # pad the atom axis (dim 1)
                xa = _pad_atoms(xa, N)
                xb = _pad_atoms(xb, N)
            parts.append(torch.cat([xa, xb]))
        return LabelledSet(*parts)


def _pad_atoms(x: torch.Tensor, N: int) -> torch.Tensor:  # [M, n, ...] -> [M, N, ...], zero padding
    pad = [0, 0] * (x.dim() - 2) + [0, N - x.shape[1]]
    return torch.nn.functional.pad(x, pad)


def isolated_atoms(elements: Sequence[int], reference_energies: dict[int, float]) -> LabelledSet:
    """One single-atom 'molecule' per element, labelled with the teacher's isolated-atom energy (zero force).

    Appended to every training batch so the student's isolated atoms match the teacher's reference
    energies: MACE's per-node shift and readout make a lone atom's energy differ from E0 otherwise.
    """
    n = len(elements)
    return LabelledSet(
        torch.zeros(n, 1, 3),
        torch.tensor(list(elements), dtype=torch.long)[:, None],
        torch.tensor([reference_energies[z] for z in elements], dtype=torch.float64),
        torch.zeros(n, 1, 3),
        torch.full((n,), 3, dtype=torch.long),
    )


@dataclass
class Labels:
    train: LabelledSet
    val: LabelledSet
    reference_energies: dict[int, float]  # teacher's isolated-atom energies, eV
    teacher: str
    n_invalid: dict[str, int]  # dropped molecules per set
    invalid_reasons: dict[str, int]  # reason -> count
    teacher_seconds_val: float  # wall time of the teacher on the held-out molecules
    teacher_molecules_val: int
    key: dict[str, Any]


def label_molecules(
    teacher: ForceField,
    positions: torch.Tensor,
    numbers: torch.Tensor,
    kind: torch.Tensor,
    batch_size: int,
    desc: str = "labelling",
    progress: bool = True,
) -> tuple[LabelledSet, list[str], float]:
    """Teacher energies and forces in batches; drops invalid molecules. Returns (set, reasons, seconds)."""
    from tqdm.auto import tqdm

    M = len(numbers)
    energy = torch.full((M,), math.nan, dtype=torch.float64)  # [M]
    forces = torch.zeros(positions.shape, dtype=torch.float32)  # [M, N, 3]
    valid = torch.zeros(M, dtype=torch.bool)  # [M]
    reasons: list[str] = []
    seconds = 0.0
    bar = tqdm(total=M, desc=desc, unit="mol", disable=not progress)
    for start in range(0, M, batch_size):
        sl = slice(start, min(start + batch_size, M))
        n = max(int((numbers[sl] > 0).sum(1).max()), 1)
        batch = to_molecule_batch(positions[sl, :n], numbers[sl, :n]).to(teacher.device)
        t0 = time.perf_counter()
        result = teacher(batch)
        seconds += time.perf_counter() - t0
        energy[sl] = result.energy.double().cpu()
        forces[sl, :n] = result.forces.float().cpu()
        valid[sl] = result.valid.cpu()
        reasons += [r for r in result.reason if r is not None]
        bar.update(sl.stop - sl.start)
    bar.close()
    keep = torch.nonzero(valid)[:, 0]  # [m]
    kept = LabelledSet(positions[keep], numbers[keep], energy[keep], torch.nan_to_num(forces[keep]), kind[keep])
    return kept, reasons, seconds


def save_labels(path: Path, labels: Labels) -> None:
    from elign.io.files import atomic_write

    payload = {
        "format": LABELS_FORMAT, "train": labels.train.to_dict(), "val": labels.val.to_dict(),
        "reference_energies": {int(k): float(v) for k, v in labels.reference_energies.items()},
        "teacher": labels.teacher, "n_invalid": labels.n_invalid, "invalid_reasons": labels.invalid_reasons,
        "teacher_seconds_val": labels.teacher_seconds_val, "teacher_molecules_val": labels.teacher_molecules_val,
        "key": labels.key,
    }  # fmt: skip
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write(path, buf.getvalue())


def load_labels(path: Path) -> Labels:
    """Read DIR/labels.pt with ``weights_only=True`` (tensors and plain values only)."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("format") != LABELS_FORMAT:
            raise ValueError(f"unknown format {d.get('format')!r}")
        return Labels(
            LabelledSet(**d["train"]),
            LabelledSet(**d["val"]),
            {int(k): float(v) for k, v in d["reference_energies"].items()},
            d["teacher"],
            d["n_invalid"],
            d["invalid_reasons"],
            d["teacher_seconds_val"],
            d["teacher_molecules_val"],
            d["key"],
        )
    except Exception as e:
        raise ValueError(f"{path} is not a readable label cache ({type(e).__name__}: {e}); delete it to relabel") from e


def _count(reasons: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        out[r] = out.get(r, 0) + 1
    return out


def make_labels(
    teacher: ForceField,
    train: Sequence[MoleculeBatch],
    val: Sequence[MoleculeBatch],
    config: DistillConfig,
    train_samples: Sequence[MoleculeBatch] = (),
) -> Labels:
    """Add perturbed copies, label everything with the teacher and drop what it cannot score."""
    gen = torch.Generator().manual_seed(config.seed)
    sets: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for name, batches, extra in (("train", train, train_samples), ("val", val, ())):
        noisy = [perturbed(b.to("cpu"), config.perturb, gen) for b in batches] if config.perturb > 0 else []
        parts = list(batches) + noisy + list(extra)
        kind = torch.cat(
            [
                torch.full((b.batch_size,), k, dtype=torch.long)
                for b, k in zip(parts, [0] * len(batches) + [1] * len(noisy) + [2] * len(extra), strict=True)
            ]
        )  # [M]
        sets[name] = (*_dense(parts), kind)
    reasons: list[str] = []
    out: dict[str, LabelledSet] = {}
    n_invalid: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for name, (pos, num, kind) in sets.items():
        out[name], why, seconds[name] = label_molecules(
            teacher,
            pos,
            num,
            kind,
            config.label_batch_size,
            desc=f"labelling {name} with {teacher.name}",
            progress=config.progress,
        )
        n_invalid[name] = len(num) - len(out[name])
        reasons += why
    if len(out["train"]) == 0 or len(out["val"]) == 0:
        raise ValueError(f"the teacher {teacher.name} could not score any molecule of a set: {_count(reasons)}")
    return Labels(
        out["train"],
        out["val"],
        dict(teacher.reference_energies),
        teacher.name,
        n_invalid,
        _count(reasons),
        seconds["val"],
        len(sets["val"][1]),
        config.label_key(),
    )


# ------------------------------------------------------------------------------------------ student
def data_statistics(data: LabelledSet, reference_energies: dict[int, float], r_max: float) -> dict[str, float]:
    """Mean / std of the per-atom interaction energy, RMS force and mean neighbour count within r_max."""
    n = data.n_atoms.double()  # [M]
    e_inter = data.energy - _e0(data.numbers, reference_energies)  # [M]
    per_atom = e_inter / n
    mask = data.numbers > 0  # [M, N]
    rms_f = float(data.forces[mask].pow(2).mean().sqrt())
    neighbours = 0
    for start in range(0, len(data), 256):
        x, m = data.positions[start : start + 256], mask[start : start + 256]  # [b, N, 3], [b, N]
        d = torch.cdist(x, x)  # [b, N, N]
        pair = m[:, :, None] & m[:, None, :] & (d < r_max)
        neighbours += int(pair.sum()) - int(m.sum())  # minus self pairs
    return {
        "energy_per_atom_mean": float(per_atom.mean()),
        "energy_per_atom_std": float(per_atom.std()),
        "rms_forces": rms_f,
        "avg_num_neighbors": neighbours / max(int(mask.sum()), 1),
    }


def _e0(numbers: torch.Tensor, reference_energies: dict[int, float]) -> torch.Tensor:  # [M] float64
    table = torch.zeros(128, dtype=torch.float64)
    for z, e in reference_energies.items():
        table[z] = e
    return table[numbers].sum(dim=1)


def build_student(
    config: StudentConfig,
    elements: Sequence[int],
    reference_energies: dict[int, float],
    stats: dict[str, float],
    scaling: str = "rms_forces",
) -> torch.nn.Module:
    """A ScaleShiftMACE (mace-torch's classes) with the teacher's atomic energies as E0."""
    import numpy as np

    import_mace()
    from e3nn import o3
    from mace import modules

    missing = [z for z in elements if z not in reference_energies]
    if missing:
        raise ValueError(f"the teacher has no reference energy for elements {missing}")
    scale = stats["rms_forces"] if scaling == "rms_forces" else stats["energy_per_atom_std"]
    scale = scale if math.isfinite(scale) and scale > 1e-3 else 1.0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The TorchScript type system", category=UserWarning)  # e3nn codegen
        return _scale_shift_mace(modules, o3, np, config, elements, reference_energies, stats, scale)


def _scale_shift_mace(
    modules,
    o3,
    np,
    config: StudentConfig,
    elements: Sequence[int],
    reference_energies: dict[int, float],
    stats: dict[str, float],
    scale: float,
) -> torch.nn.Module:
    return modules.ScaleShiftMACE(
        r_max=config.r_max, num_bessel=config.num_bessel, num_polynomial_cutoff=config.num_polynomial_cutoff,
        max_ell=config.max_ell,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=config.num_interactions, num_elements=len(elements),
        hidden_irreps=o3.Irreps(config.hidden_irreps()), MLP_irreps=o3.Irreps(f"{config.mlp_channels}x0e"),
        gate=torch.nn.functional.silu,
        atomic_energies=np.array([reference_energies[z] for z in elements], dtype=np.float64),
        avg_num_neighbors=max(stats["avg_num_neighbors"], 1.0), atomic_numbers=list(elements),
        correlation=config.correlation, radial_type="bessel", radial_MLP=list(config.radial_mlp),
        atomic_inter_scale=scale, atomic_inter_shift=stats["energy_per_atom_mean"],
    )  # fmt: skip


def _z_index(model: torch.nn.Module, device: torch.device) -> torch.Tensor:  # [128] long
    zs = model.atomic_numbers.to(device)
    z_index = torch.zeros(128, dtype=torch.long, device=device)
    z_index[zs] = torch.arange(len(zs), device=device)
    return z_index


def predict(
    model: torch.nn.Module, positions: torch.Tensor, numbers: torch.Tensor, training: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Total energy [B] (eV), interaction energy [B] (E - sum E0) and forces [B, N, 3] in one graph."""
    mask = numbers > 0  # [B, N]
    data, _ = build_graph(
        positions, numbers, mask, _z_index(model, positions.device), len(model.atomic_numbers), float(model.r_max)
    )
    with torch.enable_grad():
        out = model(data, training=training, compute_force=True)
    forces = torch.zeros_like(positions)  # [B, N, 3]
    forces[mask] = out["forces"]
    return out["energy"], out["interaction_energy"], forces


def element_counts(numbers: torch.Tensor, elements: Sequence[int]) -> torch.Tensor:  # [B, n_el] float
    table = torch.full((128,), -1, dtype=torch.long, device=numbers.device)
    table[torch.tensor(list(elements), device=numbers.device)] = torch.arange(len(elements), device=numbers.device)
    col = table[numbers]  # [B, N], -1 on padding
    counts = torch.zeros(numbers.shape[0], len(elements) + 1, device=numbers.device)
    counts.scatter_add_(1, (col + 1), torch.ones_like(col, dtype=counts.dtype))
    return counts[:, 1:]


def loss_terms(
    model: torch.nn.Module, batch: LabelledSet, atoms: LabelledSet, e0: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE of the energy per atom (eV/atom)^2 and of the force components (eV/A)^2 on one batch.

    The energy learnt is relative to the student's own lone atoms: ``E(mol) - sum_i E(atom Z_i)`` against
    the teacher's ``E(mol) - sum_i E_ref(Z_i)``. ``atoms`` (one per element, in the model's element order)
    ride in the same graph; :func:`fold_isolated_atoms` later makes the lone atoms exact.
    """
    both = LabelledSet.cat(batch, atoms)
    pos = both.positions.to(device)  # [b + n_el, N, 3]
    num = both.numbers.to(device)  # [b + n_el, N]
    b = len(batch)
    _, inter, f_pred = predict(model, pos, num, training=True)  # [b + n_el], [b + n_el, N, 3]
    counts = element_counts(num[:b], atoms.numbers[:, 0].tolist())  # [b, n_el]
    e_rel = inter[:b] - counts @ inter[b:]  # [b]
    n = batch.n_atoms.to(device, pos.dtype)  # [b]
    target = (batch.energy - e0).to(device, pos.dtype)  # [b] teacher's E - sum E_ref
    mse_e = (((e_rel - target) / n) ** 2).mean()
    mask = num[:b] > 0  # [b, N]
    mse_f = ((f_pred[:b] - batch.forces.to(device)[:, : num.shape[1]])[mask] ** 2).mean()
    return mse_e, mse_f


@torch.no_grad()
def fold_isolated_atoms(model: torch.nn.Module, reference_energies: dict[int, float]) -> torch.nn.Module:
    """Set the model's E0 so that a lone atom's energy is exactly the teacher's reference energy.

    MACE gives a lone atom ``E0(Z) + scale * readout + shift``, not ``E0(Z)``. With
    ``E0'(Z) = E_ref(Z) - inter(atom Z)`` a lone atom gets ``E_ref(Z)`` and a molecule gets
    ``sum E_ref + inter(mol) - sum inter(atom Z_i)``: the quantity the loss trained. Returns ``model``.
    """
    zs = [int(z) for z in model.atomic_numbers.tolist()]
    device = model.atomic_numbers.device
    dtype = next(model.parameters()).dtype
    _, inter, _ = predict(
        model, torch.zeros(len(zs), 1, 3, device=device, dtype=dtype), torch.tensor(zs, device=device)[:, None]
    )  # [n_el]
    buf = model.atomic_energies_fn.atomic_energies
    ref = torch.tensor([reference_energies[z] for z in zs], dtype=torch.float64, device=device)
    buf.copy_((ref - inter.detach().double()).to(buf.dtype).reshape(buf.shape))
    return model


# --------------------------------------------------------------------------------------- evaluation
def _errors(e_pred: torch.Tensor, f_pred: torch.Tensor, data: LabelledSet) -> dict[str, float]:
    """MAEs of energy per atom (meV/atom) and of force components (eV/A), overall and per kind."""
    n = data.n_atoms.double()  # [M]
    e_err = ((e_pred.double() - data.energy).abs() / n) * 1000.0  # [M] meV/atom
    mask = data.numbers > 0  # [M, N]
    f_err = (f_pred.float() - data.forces).abs()  # [M, N, 3]
    per_mol_f = (f_err * mask[..., None]).sum(dim=(1, 2)) / (3 * n)  # [M]
    out = {
        "energy_mae_mev_per_atom": float(e_err.mean()),
        "force_mae_ev_per_a": float(f_err[mask].mean()),
        "force_rmse_ev_per_a": float(f_err[mask].pow(2).mean().sqrt()),
        "n": len(data),
    }
    for k, name in KIND_NAMES.items():
        sel = data.kind == k
        if bool(sel.any()):
            w = n[sel]
            out[f"{name}_energy_mae_mev_per_atom"] = float(e_err[sel].mean())
            out[f"{name}_force_mae_ev_per_a"] = float((per_mol_f[sel] * w).sum() / w.sum())
    return out


def evaluate_model(
    model: torch.nn.Module, data: LabelledSet, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Held-out errors of a (folded) student model, called directly in batches."""
    model.eval()
    e_all, f_all = [], []
    for start in range(0, len(data), batch_size):
        part = data.take(torch.arange(start, min(start + batch_size, len(data))))
        e, _, f = predict(model, part.positions.to(device), part.numbers.to(device))
        e_all.append(e.detach().double().cpu())
        f_all.append(torch.nn.functional.pad(f.detach().cpu(), (0, 0, 0, data.numbers.shape[1] - f.shape[1])))
    return _errors(torch.cat(e_all), torch.cat(f_all), data)


def evaluate_force_field(ff: ForceField, data: LabelledSet, batch_size: int) -> tuple[dict[str, float], float]:
    """Errors of any ForceField against the labels (on the molecules it scores), and its wall time (s)."""
    e_all, f_all, ok_all, seconds = [], [], [], 0.0
    N = data.numbers.shape[1]
    for start in range(0, len(data), batch_size):
        part = data.take(torch.arange(start, min(start + batch_size, len(data))))
        batch = to_molecule_batch(part.positions, part.numbers).to(ff.device)
        t0 = time.perf_counter()
        result = ff(batch)
        seconds += time.perf_counter() - t0
        e_all.append(result.energy.double().cpu())
        f_all.append(torch.nn.functional.pad(result.forces.float().cpu(), (0, 0, 0, N - part.numbers.shape[1])))
        ok_all.append(result.valid.cpu())
    ok = torch.cat(ok_all)  # [M]
    idx = torch.nonzero(ok)[:, 0]
    sub = LabelledSet(data.positions[idx], data.numbers[idx], data.energy[idx], data.forces[idx], data.kind[idx])
    errors = _errors(torch.cat(e_all)[idx], torch.cat(f_all)[idx], sub)
    errors["n_invalid"] = int((~ok).sum())
    return errors, seconds


# ----------------------------------------------------------------------------------------- training
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
        self.e0_train = _e0(labels.train.numbers, labels.reference_energies)  # [M_train]
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

    def train_epoch(self, deadline: float | None, progress: bool) -> tuple[dict[str, float], bool]:
        """One pass over a fresh permutation; returns (train losses, stopped by the deadline)."""
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
            if deadline is not None and time.perf_counter() > deadline:
                stopped = done < n_batches
                break
        self.seconds += time.perf_counter() - t0
        means = (sums / max(done, 1)).tolist()
        return dict(zip(("loss", "mse_energy", "mse_forces"), means, strict=True)), stopped


# ------------------------------------------------------------------------------------ orchestration
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


def distill(
    config: DistillConfig,
    teacher: TeacherSource = None,
    molecules: tuple[Sequence[MoleculeBatch], Sequence[MoleculeBatch]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Label (or read cached labels), train the student, write the model, log and report; returns the report."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = get_labels(config, teacher, molecules, log)
    device = torch.device(config.device)
    run = _Run(config, labels, device)
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
    deadline = time.perf_counter() + 60 * config.max_minutes if config.max_minutes else None  # training only
    stopped = False
    while run.epoch < config.epochs and not stopped and (deadline is None or time.perf_counter() < deadline):
        losses, stopped = run.train_epoch(deadline, config.progress)
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
        run.save(state_path)
        _save_model(run.final_model(), model_path)
        log(
            f"epoch {run.epoch}: loss {losses['loss']:.4g}, held-out energy MAE "
            f"{val['energy_mae_mev_per_atom']:.2f} meV/atom, force MAE {val['force_mae_ev_per_a']:.4f} eV/A"
        )
        if stopped:
            log(f"stopping: --max-minutes {config.max_minutes} reached inside epoch {run.epoch}")
    if not model_path.exists():
        _save_model(run.final_model(), model_path)
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
