"""Sampling for the studio: a chain with its trajectory, MLFF forces on every frame, bonds per frame.

Pure computation (torch, numpy, elign); no Panel. The studio calls it from a background thread, in two
steps so that the molecule appears as soon as the chain ends: :func:`sample_set` scores the final frame
(the table's figures), :func:`score_frames` the rest of the trajectory (most of the force field's time:
101 frames per molecule).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "ModelCache",
    "SampledSet",
    "chemistry_columns",
    "force_field",
    "molecule_cells",
    "sample_many",
    "sample_set",
    "score_frames",
    "warm_up",
]

_FF_CACHE: dict[str, Any] = {}
_FF_LOCK = threading.Lock()


def force_field(name: str | None) -> Any:
    """A force field by name or path (None: the library's default), built once per process (they are stateless
    after loading)."""
    from elign.io.assets import default_mlff
    from elign.mlff import load_force_field

    name = name or default_mlff()
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
        from elign.io.checkpoints import load_checkpoint

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
    frames_scored: bool = True  # False while only the final frame has forces (see score_frames)
    trajectory: tuple | None = field(default=None, repr=False)  # (pos [F, B, N, 3], types [F, B, N], mask [B, N, 1])
    atomic_numbers: list[int] = field(default_factory=list, repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.times)


def _frames_batch(pos: torch.Tensor, types: torch.Tensor, node_mask: torch.Tensor, atomic_numbers: list[int]) -> Any:
    """Frames pos [F, B, N, 3], types [F, B, N] of molecules node_mask [B, N, 1] as one MoleculeBatch [F * B]."""
    from elign.data.batch import MoleculeBatch

    F_, B, N, _ = pos.shape
    K = len(atomic_numbers)
    mask = node_mask.expand(F_, B, N, 1).reshape(F_ * B, N, 1).float()  # [F*B, N, 1]
    t = types.reshape(F_ * B, N).clamp(0, K - 1)
    one_hot = torch.nn.functional.one_hot(t, K).float() * mask  # [F*B, N, K]
    z = torch.as_tensor(atomic_numbers, dtype=torch.float32)[t][..., None] * mask  # [F*B, N, 1]
    return MoleculeBatch(pos.reshape(F_ * B, N, 3) * mask, one_hot, z, mask)


def _force_fields(forces: np.ndarray | None, n: int) -> dict[str, list]:
    """A frame's forces [n, 3] (eV/A) for the viewer: |F| per atom (4 decimals) and the vectors (3 decimals),
    None where not finite or not scored."""
    if forces is None:
        return {"force": [None] * n, "fvec": [None] * n}
    norms = np.linalg.norm(forces, axis=-1)
    ok = np.isfinite(forces).all(axis=-1)
    return {
        "force": [round(float(v), 4) if good else None for v, good in zip(norms, ok, strict=True)],
        "fvec": [np.round(v, 3).tolist() if good else None for v, good in zip(forces, ok, strict=True)],
    }


def _viewer_frame(t: int, pos: np.ndarray, types: np.ndarray, forces: np.ndarray | None, decoder: list[str]) -> dict:
    """One frame for the viewer: pos [n, 3], types [n], forces [n, 3] or None (not scored)."""
    from elign.metrics.bonds import bond_orders

    orders = bond_orders(pos, types, decoder)  # [n, n]
    i, j = np.nonzero(np.triu(orders, 1))
    return {
        "t": int(t),
        "elements": [decoder[k] for k in types.tolist()],
        "xyz": np.round(pos, 3).tolist(),
        **_force_fields(forces, len(types)),
        "bonds": [[int(a), int(b), int(orders[a, b])] for a, b in zip(i, j, strict=True)],
    }


def molecule_cells(molecules: Any, count: int) -> list[dict]:
    """The first ``count`` molecules of a MoleculeBatch as grid cells: {elements, xyz, bonds, label} (the label
    names the molecule's index and formula). Elements come from the atomic numbers, so no decoder is needed."""
    from elign.data.elements import ELEMENT_SYMBOLS
    from elign.data.formula import hill_formula

    cells = []
    for b in range(min(count, molecules.batch_size)):
        n = int(molecules.num_atoms[b])
        numbers = molecules.charges[b, :n, 0].round().long().tolist()
        decoder = sorted({ELEMENT_SYMBOLS[z] for z in numbers})
        types = np.array([decoder.index(ELEMENT_SYMBOLS[z]) for z in numbers], dtype=np.int64)
        frame = _viewer_frame(0, molecules.positions[b, :n].numpy(), types, None, decoder)
        counts = {a: frame["elements"].count(a) for a in decoder}
        cells.append({k: frame[k] for k in ("elements", "xyz", "bonds")} | {"label": f"#{b} {hill_formula(counts)}"})
    return cells


def _sizes(info: Any, num: int, n_atoms: int | None, gen: torch.Generator) -> torch.Tensor:
    """Atoms per molecule [num]: ``n_atoms`` for every one, or drawn from the size prior when it is 0/None."""
    if not n_atoms:
        return info.sample_sizes(num, gen)
    if not 1 <= n_atoms <= info.max_n_nodes:
        raise ValueError(f"atoms per molecule must be in 1..{info.max_n_nodes}, got {n_atoms}")
    return torch.full((num,), int(n_atoms), dtype=torch.long)


def _rows(model_name: str, seed: int, molecules: Any, decoder: list[str], final: dict) -> list[dict]:
    """The molecule table's rows: chemistry of the final molecules and the force field's final-frame figures."""
    from elign.metrics.stability import stability_metrics

    stab = stability_metrics(molecules, decoder)["per_molecule"]
    rows = []
    for b in range(len(stab["n_atoms"])):
        rows.append(
            {
                "model": model_name,
                "seed": seed,
                "index": b,
                **chemistry_columns(*molecules.molecule(b), decoder),
                "atoms": int(stab["n_atoms"][b]),
                "stable": bool(stab["molecule_stable"][b]),
                "atom_stability": float(stab["n_stable_atoms"][b] / max(1, stab["n_atoms"][b])),
                "energy_per_atom_eV": float(final["energy"][b, 0]),
                "rms_force_eV_A": float(final["rms_force"][b, 0]),
                "mlff_scored": bool(final["valid"][0, b]),
                "not_scored_because": final["reason"][b] or "",  # the final frame's reason
            }
        )
    return rows


def sample_set(
    model: Any,
    config: Any,
    model_name: str,
    seed: int = 0,
    num: int = 1,
    steps: int = 100,
    n_atoms: int | None = None,
    force_field_name: str | None = None,
    max_frames: int = 101,
    formula: str | None = None,
) -> SampledSet:
    """Sample ``num`` molecules with their denoising trajectories; forces on the final frame only (the
    rest: :func:`score_frames`). ``formula``: isomers of it (the atom types fixed, positions guided by them;
    ``n_atoms`` is ignored).
    ``force_field_name`` None: the library's default force field."""
    from elign.diffusion.conditioning import TYPE_GUIDANCE, FixedTypes
    from elign.diffusion.sampler import node_mask_from_sizes, sample_chain

    info = config.dataset_info()
    decoder = list(info.atom_decoder)
    steps = max(1, min(int(steps), int(model.T)))
    gen = torch.Generator().manual_seed(int(seed))
    fixed = None
    if formula:
        from elign.data.formula import formula_batch

        types = torch.from_numpy(formula_batch([formula], num, decoder, info.max_n_nodes))  # [B, n]
        sizes = (types >= 0).sum(dim=1)
        fixed = FixedTypes(types, list(info.atomic_numbers), guidance=TYPE_GUIDANCE)
    else:
        sizes = _sizes(info, num, n_atoms, gen)  # [B]
    node_mask = node_mask_from_sizes(sizes)  # [B, N, 1]
    every = max(1, math.ceil(steps / max(1, max_frames - 1)))
    molecules, traj = sample_chain(
        model, node_mask, steps, gen, trajectory_every=every, atomic_numbers=info.atomic_numbers, fixed_types=fixed
    )
    pos, types = torch.stack(traj.positions), torch.stack(traj.types)  # [F, B, N, 3], [F, B, N]
    return chain_set(
        model_name, int(seed), decoder, list(info.atomic_numbers), molecules, pos, types, list(traj.times),
        node_mask, force_field_name,
    )  # fmt: skip


def chain_set(
    name: str,
    seed: int,
    decoder: list[str],
    atomic_numbers: list[int],
    molecules: Any,
    pos: torch.Tensor,
    types: torch.Tensor,
    times: list[int],
    node_mask: torch.Tensor,
    force_field_name: str | None,
) -> SampledSet:
    """The set of chains pos [F, B, N, 3], types [F, B, N] ending in ``molecules``: forces on the final frame
    (the rest: :func:`score_frames`), viewer frames and the table's rows."""
    F_, B = pos.shape[:2]
    sizes = node_mask.sum(dim=(1, 2)).round().long()  # [B]
    final = _score(force_field(force_field_name), pos[-1:], types[-1:], node_mask, atomic_numbers)
    e_form = np.full((B, F_), np.nan)  # [B, F]
    rms = np.full((B, F_), np.nan)
    e_form[:, -1], rms[:, -1] = final["energy"][:, 0], final["rms_force"][:, 0]
    frames: list[list[dict]] = []
    for b in range(B):
        n = int(sizes[b])
        frames.append(
            [
                _viewer_frame(
                    times[f],
                    pos[f, b, :n].numpy(),
                    types[f, b, :n].numpy(),
                    final["forces"][0, b, :n] if f == F_ - 1 and final["valid"][0, b] else None,
                    decoder,
                )
                for f in range(F_)
            ]
        )
        if not final["valid"][0, b]:  # the viewer says why the final frame is grey
            frames[b][-1]["why"] = final["reason"][b] or "not scorable"
    rows = _rows(name, seed, molecules, decoder, final)
    return SampledSet(
        model_name=name,
        seed=seed,
        decoder=decoder,
        batch=molecules,
        times=list(times),
        frames=frames,
        energy=e_form,
        rms_force=rms,
        rows=rows,
        force_field=force_field_name,
        frames_scored=F_ == 1,
        trajectory=(pos, types, node_mask),
        atomic_numbers=list(atomic_numbers),
    )


def file_set(path: Any, name: str, force_field_name: str | None = None) -> SampledSet:
    """The molecules of a user's .sdf, .npz or .xyz file as a set to view and score: one frame each (an .xyz of
    several frames of one molecule is that molecule's trajectory)."""
    from elign.data.batch import MoleculeBatch
    from elign.data.elements import ATOMIC_NUMBERS, QM9_SYMBOLS
    from elign.io.export import read_molecules, read_xyz

    records = read_xyz(path) if str(path).lower().endswith(".xyz") else read_molecules(path)
    if not records:
        raise ValueError(f"{Path(path).name} holds no molecules")
    seen = {sym for _, syms, _ in records for sym in syms}
    decoder = list(QM9_SYMBOLS) + sorted(seen - set(QM9_SYMBOLS), key=ATOMIC_NUMBERS.__getitem__)
    atomic_numbers = [ATOMIC_NUMBERS[a] for a in decoder]
    index = {a: k for k, a in enumerate(decoder)}
    xs = [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x, _, _ in records]
    ts = [torch.tensor([index[a] for a in syms]) for _, syms, _ in records]
    trajectory = str(path).lower().endswith(".xyz") and len({tuple(s) for _, s, _ in records}) == 1 and len(xs) > 1
    if trajectory:  # frames of one molecule: its chain, the last frame the molecule
        batch = MoleculeBatch.from_lists(xs[-1:], ts[-1:], atomic_numbers)
        pos = torch.stack([x[None] for x in xs])  # [F, 1, n, 3]
        types = torch.stack([t[None] for t in ts])  # [F, 1, n]
        times = list(range(len(xs) - 1, -1, -1))
    else:
        batch = MoleculeBatch.from_lists(xs, ts, atomic_numbers)
        pos, types, times = batch.positions[None], batch.one_hot.argmax(-1)[None], [0]  # [1, B, N, 3], [1, B, N]
    return chain_set(name, 0, decoder, atomic_numbers, batch, pos, types, times, batch.node_mask, force_field_name)


def chemistry_columns(positions: Any, types: Any, decoder: list[str]) -> dict[str, Any]:
    """The table's chemistry of one molecule (positions [n, 3], types [n]): formula (Hill order), validity under
    the metric (its largest fragment sanitizes), the whole molecule's SMILES with exactly its own atoms, and
    whether it is one connected piece."""
    from elign.data.formula import hill_formula
    from elign.metrics.rdkit_metrics import molecule_smiles, readable_smiles

    counts = dict.fromkeys(decoder, 0)
    for k in types.tolist():
        counts[decoder[k]] += 1
    smiles, fragments = readable_smiles(positions, types, decoder)
    return {
        "formula": hill_formula(counts),
        "valid": molecule_smiles(positions, types, decoder) is not None,
        "smiles": smiles,
        "connected": fragments == 1,
    }


def _score(ff: Any, pos: torch.Tensor, types: torch.Tensor, node_mask: torch.Tensor, atomic_numbers: list[int]):
    """Force-field figures of frames pos [F, B, N, 3]: energy and rms_force [B, F], forces [F, B, N, 3],
    valid [F, B], reason [F * B] (why a frame could not be scored, "" if it was)."""
    F_, B, N = types.shape
    batch = _frames_batch(pos, types, node_mask, atomic_numbers)
    result = ff(batch)
    return {
        "energy": ff.formation_energy_per_atom(batch, result).reshape(F_, B).T.numpy(),
        "rms_force": ff.rms_force(batch, result).reshape(F_, B).T.numpy(),
        "forces": result.forces.reshape(F_, B, N, 3).numpy(),
        "valid": result.valid.reshape(F_, B).numpy(),
        "reason": list(result.reason),
    }


def score_frames(sampled: SampledSet, chunk_frames: int = 20, should_stop: Any = lambda: False) -> SampledSet | None:
    """``sampled`` with forces on every frame of its trajectory (a new set; None if ``should_stop()`` turned
    true between chunks of ``chunk_frames`` frames)."""
    if sampled.frames_scored:
        return sampled
    pos, types, node_mask = sampled.trajectory
    ff = force_field(sampled.force_field)
    F_, B = pos.shape[:2]
    energy, rms = sampled.energy.copy(), sampled.rms_force.copy()  # [B, F]
    frames = [[dict(fr) for fr in chain] for chain in sampled.frames]
    for start in range(0, F_ - 1, chunk_frames):
        if should_stop():
            return None
        stop = min(F_ - 1, start + chunk_frames)
        part = _score(ff, pos[start:stop], types[start:stop], node_mask, sampled.atomic_numbers)
        energy[:, start:stop], rms[:, start:stop] = part["energy"], part["rms_force"]
        for f in range(start, stop):
            for b, chain in enumerate(frames):
                if part["valid"][f - start, b]:
                    n = len(chain[f]["elements"])
                    chain[f].update(_force_fields(part["forces"][f - start, b, :n], n))
                else:  # the viewer says why this frame is grey (atoms of the noise on top of each other, ...)
                    chain[f]["why"] = part["reason"][(f - start) * B + b] or "not scorable"
    return replace(sampled, frames=frames, energy=energy, rms_force=rms, frames_scored=True)


def sample_many(names: list[str], paths: list[Path], args: dict[str, Any]) -> list[SampledSet]:
    """One SampledSet per (name, checkpoint path), each sampled with ``args`` (:func:`sample_set`)."""
    out = []
    for name, path in zip(names, paths, strict=True):
        model, config, _ = ModelCache.load(path)
        out.append(sample_set(model, config, name, **args))
    return out


def warm_up(path: Path | None, force_field_name: str) -> None:
    """Load the default model, the force field and the metric modules, and sample one tiny molecule (the first
    call of a network or a TorchScript force field is the slowest), before the first click."""
    try:
        import elign.io.export  # noqa: F401  (rdkit)
        import elign.metrics.stability  # noqa: F401

        force_field(force_field_name)
        if path is not None:
            model, config, _ = ModelCache.load(path)
            score_frames(sample_set(model, config, "warm-up", num=1, steps=2, force_field_name=force_field_name))
    except Exception:  # noqa: BLE001 - the real call reports the error
        pass
