"""The studio's exports: sampled molecules as SDF with their metrics, and one molecule's denoising chain as a
multi-frame extended XYZ with per-atom forces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elign_studio.sampling import SampledSet

__all__ = ["write_molecules_sdf", "write_trajectory_xyz"]

METRIC_COLUMNS = ("stable", "atom_stability", "valid", "energy_per_atom_eV", "rms_force_eV_A")


def write_molecules_sdf(path: Path, sets: list[SampledSet], rows: list[dict]) -> Path:
    """The molecules of table ``rows`` (each naming its ``set`` and ``index``) with their metrics, as SDF."""
    from elign.io.export import write_sdf

    pairs, props = [], []
    for r in rows:
        s = sets[r["set"]]
        pairs.append(s.batch.molecule(r["index"]))
        props.append(
            {
                "name": f"{r['model']} seed {r['seed']} #{r['index']}",
                "model": r["model"],
                "seed": r["seed"],
                "force_field": s.force_field,
                **{k: r[k] for k in METRIC_COLUMNS},
            }
        )
    write_sdf(path, pairs, sets[rows[0]["set"]].decoder, props)
    return path


def write_trajectory_xyz(path: Path, sets: list[SampledSet], b: int) -> Path:
    """Molecule ``b``'s denoising chain (each model's in turn) as a multi-frame extended XYZ, one frame per
    trajectory frame with each atom's force (eV/A; NaN where not scored), its comment naming model, frame, t and
    max |F|."""
    from elign.io.export import write_xyz

    pairs, comments, forces = [], [], []
    for s in sets:
        pos, types, _ = s.trajectory  # [F, B, N, 3], [F, B, N]
        n = len(s.frames[b][0]["elements"])
        for f, frame in enumerate(s.frames[b]):
            scored = [v for v in frame["force"] if v is not None]
            top = f"max |F| {max(scored):.4g} eV/A" if scored else "forces not scored"
            pairs.append((pos[f, b, :n].numpy(), types[f, b, :n].numpy()))
            comments.append(f"{s.model_name} #{b} frame {f} t={s.times[f]} {top}")
            vectors = frame.get("fvec") or [None] * n  # per atom [3] eV/A, None where not scored
            forces.append(np.array([v if v is not None else [np.nan] * 3 for v in vectors], dtype=float))
    write_xyz(path, pairs, sets[0].decoder, comments, forces=forces)
    return path
