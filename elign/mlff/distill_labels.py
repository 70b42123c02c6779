"""The molecules a student force field learns from and the teacher's labels of them.

QM9 train molecules and perturbed copies (optionally a backbone's samples), isolated atoms, held-out QM9 valid
molecules; labelled by the teacher (energies eV, forces eV/A; molecules it cannot score dropped and counted) and
cached as tensors and plain values (read with ``weights_only=True``)."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from elign.data.batch import MoleculeBatch
from elign.mlff.base import ForceField
from elign.mlff.distill_config import DistillConfig

__all__ = [
    "KIND_NAMES",
    "LABELS_FORMAT",
    "LabelledSet",
    "Labels",
    "isolated_atoms",
    "label_molecules",
    "load_labels",
    "make_labels",
    "perturbed",
    "qm9_molecules",
    "sample_molecules_from",
    "save_labels",
    "to_molecule_batch",
]


KIND_NAMES = {0: "reference", 1: "perturbed", 2: "sample", 3: "isolated atom"}  # LabelledSet.kind codes

LABELS_FORMAT = "elign-distill-labels/1"


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
