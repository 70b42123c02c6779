"""The student force field: a ``ScaleShiftMACE`` from mace-torch's own classes, whose isolated-atom energies are
the teacher's reference energies; its loss terms, predictions and held-out errors."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence

import torch

from elign.mlff.base import ForceField
from elign.mlff.distill_config import StudentConfig
from elign.mlff.distill_labels import KIND_NAMES, LabelledSet, to_molecule_batch
from elign.mlff.mace import build_graph
from elign.safe_import import import_mace

__all__ = [
    "e0_per_molecule",
    "build_student",
    "data_statistics",
    "element_counts",
    "evaluate_force_field",
    "evaluate_model",
    "fold_isolated_atoms",
    "loss_terms",
    "predict",
]


def data_statistics(data: LabelledSet, reference_energies: dict[int, float], r_max: float) -> dict[str, float]:
    """Mean / std of the per-atom interaction energy, RMS force and mean neighbour count within r_max."""
    n = data.n_atoms.double()  # [M]
    e_inter = data.energy - e0_per_molecule(data.numbers, reference_energies)  # [M]
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


def e0_per_molecule(numbers: torch.Tensor, reference_energies: dict[int, float]) -> torch.Tensor:  # [M] float64
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
