"""Sampling for the studio: a chain with its trajectory, MLFF forces on every frame, bonds per frame.

Pure computation (torch, numpy, elign); no Panel. The studio calls it from a background thread.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ModelCache", "SampledSet", "force_field", "sample_set"]

_FF_CACHE: dict[str, Any] = {}
_FF_LOCK = threading.Lock()


def force_field(name: str) -> Any:
    """A force field by name or path, built once per process (they are stateless after loading)."""
    from elign.mlff import load_force_field

    with _FF_LOCK:
        if name not in _FF_CACHE:
            _FF_CACHE[name] = load_force_field(name, device="cpu")
        return _FF_CACHE[name]


class ModelCache:
    """Loaded checkpoints keyed by path and modification time, shared by every session of a process."""

    _models: dict[tuple[str, int], tuple[Any, Any, dict]] = {}
    _lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> tuple[Any, Any, dict]:
        from elign.checkpoints import load_checkpoint

        stamp = path.stat().st_mtime_ns if path.exists() else 0
        key = (str(path), stamp)
        with cls._lock:
            if key not in cls._models:
                cls._models[key] = load_checkpoint(path, "cpu")
            return cls._models[key]


@dataclass
class SampledSet:
    """Molecules sampled from one model, with per-frame data for the viewer and the plots."""

    model_name: str
    seed: int
    decoder: list[str]
    batch: Any  # MoleculeBatch of the final molecules (t = 0)
    times: list[int]
    frames: list[list[dict]]  # [molecule][frame] -> viewer frame
    energy: np.ndarray  # [B, F] formation energy per atom (eV/atom), NaN where not scored
    rms_force: np.ndarray  # [B, F] eV/A, NaN where not scored
    rows: list[dict] = field(default_factory=list)  # per-molecule metrics for the table
    force_field: str = ""

    @property
    def num_frames(self) -> int:
        return len(self.times)


def _frames_batch(traj: Any, node_mask: torch.Tensor, atomic_numbers: list[int]) -> Any:
    """All frames of all molecules as one MoleculeBatch [F * B]."""
    from elign.data.batch import MoleculeBatch

    pos = torch.stack(traj.positions)  # [F, B, N, 3]
    types = torch.stack(traj.types)  # [F, B, N]
    F_, B, N, _ = pos.shape
    K = len(atomic_numbers)
    mask = node_mask.expand(F_, B, N, 1).reshape(F_ * B, N, 1).float()  # [F*B, N, 1]
    t = types.reshape(F_ * B, N).clamp(0, K - 1)
    one_hot = torch.nn.functional.one_hot(t, K).float() * mask  # [F*B, N, K]
    z = torch.as_tensor(atomic_numbers, dtype=torch.float32)[t][..., None] * mask  # [F*B, N, 1]
    return MoleculeBatch(pos.reshape(F_ * B, N, 3) * mask, one_hot, z, mask)


def _viewer_frame(t: int, pos: np.ndarray, types: np.ndarray, force: np.ndarray | None, decoder: list[str]) -> dict:
    from elign.metrics.bonds import bond_orders

    orders = bond_orders(pos, types, decoder)  # [n, n]
    i, j = np.nonzero(np.triu(orders, 1))
    fm: list[float | None] = [None] * len(types)
    if force is not None:
        fm = [None if not math.isfinite(v) else round(float(v), 4) for v in force]
    return {
        "t": int(t),
        "elements": [decoder[k] for k in types.tolist()],
        "xyz": np.round(pos, 3).tolist(),
        "force": fm,
        "bonds": [[int(a), int(b), int(orders[a, b])] for a, b in zip(i, j, strict=True)],
    }


def sample_set(
    model: Any,
    config: Any,
    model_name: str,
    seed: int = 0,
    num: int = 1,
    steps: int = 100,
    n_atoms: int | None = None,
    force_field_name: str = "synthetic",
    max_frames: int = 101,
) -> SampledSet:
    """Sample ``num`` molecules with their denoising trajectories and score every frame."""
    from elign.diffusion.sampler import node_mask_from_sizes, sample_chain
    from elign.metrics.rdkit_metrics import molecule_smiles
    from elign.metrics.stability import stability_metrics

    info = config.dataset_info()
    decoder = list(info.atom_decoder)
    steps = max(1, min(int(steps), int(model.T)))
    gen = torch.Generator().manual_seed(int(seed))
    if n_atoms:
        if not 1 <= n_atoms <= info.max_n_nodes:
            raise ValueError(f"atoms per molecule must be in 1..{info.max_n_nodes}, got {n_atoms}")
        sizes = torch.full((num,), int(n_atoms), dtype=torch.long)
    else:
        sizes = info.sample_sizes(num, gen)
    node_mask = node_mask_from_sizes(sizes)  # [B, N, 1]
    every = max(1, math.ceil(steps / max(1, max_frames - 1)))
    molecules, traj = sample_chain(
        model, node_mask, steps, gen, trajectory_every=every, atomic_numbers=info.atomic_numbers
    )
    ff = force_field(force_field_name)
    frames_batch = _frames_batch(traj, node_mask, info.atomic_numbers)
    result = ff(frames_batch)
    B, N = node_mask.shape[:2]
    F_ = len(traj.times)
    e_form = ff.formation_energy_per_atom(frames_batch, result).reshape(F_, B).T.numpy()  # [B, F]
    rms = ff.rms_force(frames_batch, result).reshape(F_, B).T.numpy()  # [B, F]
    fmag = result.forces.norm(dim=-1).reshape(F_, B, N).numpy()  # [F, B, N]
    valid = result.valid.reshape(F_, B).numpy()
    frames: list[list[dict]] = []
    for b in range(B):
        n = int(sizes[b])
        frames.append(
            [
                _viewer_frame(
                    traj.times[f],
                    traj.positions[f][b, :n].numpy(),
                    traj.types[f][b, :n].numpy(),
                    fmag[f, b, :n] if valid[f, b] else None,
                    decoder,
                )
                for f in range(F_)
            ]
        )
    stab = stability_metrics(molecules, decoder)["per_molecule"]
    rows = []
    for b in range(B):
        x, t = molecules.molecule(b)
        smiles = molecule_smiles(x, t, decoder)
        counts = {s: 0 for s in decoder}
        for k in t.tolist():
            counts[decoder[k]] += 1
        rows.append(
            {
                "model": model_name,
                "seed": int(seed),
                "index": b,
                "formula": "".join(f"{s}{c if c > 1 else ''}" for s, c in counts.items() if c),
                "atoms": int(stab["n_atoms"][b]),
                "stable": bool(stab["molecule_stable"][b]),
                "atom_stability": float(stab["n_stable_atoms"][b] / max(1, stab["n_atoms"][b])),
                "valid": smiles is not None,
                "smiles": smiles or "",
                "energy_per_atom_eV": float(e_form[b, -1]),
                "rms_force_eV_A": float(rms[b, -1]),
                "mlff_scored": bool(valid[-1, b]),
                "not_scored_because": result.reason[(F_ - 1) * B + b] or "",  # the final frame's reason
                "connected": smiles is not None and "." not in smiles,
            }
        )
    return SampledSet(
        model_name=model_name,
        seed=int(seed),
        decoder=decoder,
        batch=molecules,
        times=list(traj.times),
        frames=frames,
        energy=e_form,
        rms_force=rms,
        rows=rows,
        force_field=force_field_name,
    )
