"""Force fields: energies [B] (eV), forces [B, N, 3] (eV/A) and validity flags for a MoleculeBatch.

Importing this package imports only torch; each backend imports its heavy dependency when built.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from elign.mlff.base import (
    ComputeOutput,
    ForceField,
    ForceFieldResult,
    MissingExtraError,
    formation_energy_per_atom,
    rms_force,
)

__all__ = [
    "ComputeOutput",
    "FORCE_FIELD_NAMES",
    "ForceField",
    "ForceFieldResult",
    "MissingExtraError",
    "formation_energy_per_atom",
    "load_force_field",
    "rms_force",
]

FORCE_FIELD_NAMES = (
    "aimnet2",
    "mace-off-small",
    "mace-off-medium",
    "mace-off-large",
    "xtb",
    "dft",
    "synthetic",
)


def load_force_field(
    name_or_path: str | os.PathLike = "aimnet2",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> ForceField:
    """Build a force field by name (see ``FORCE_FIELD_NAMES``) or from a MACE ``.model`` file.

    Extra keyword arguments go to the backend (e.g. ``n_workers`` for 'xtb'/'dft', ``time_limit``).
    """
    name = str(name_or_path)
    key = name.lower()
    if key == "synthetic":
        from elign.mlff.synthetic import SyntheticForceField

        return SyntheticForceField(device=device, dtype=dtype, **kwargs)
    if key == "aimnet2":
        from elign.mlff.aimnet2 import AIMNet2ForceField

        return AIMNet2ForceField(device=device, dtype=dtype, **kwargs)
    if key.startswith("mace-off-"):
        from elign.mlff.mace import MACEForceField

        return MACEForceField(key, device=device, dtype=dtype, **kwargs)
    if key in ("xtb", "gfn2-xtb"):
        from elign.mlff.xtb import XTBForceField

        return XTBForceField(device=device, dtype=dtype, **kwargs)
    if key == "dft":
        from elign.mlff.dft import DFTForceField

        return DFTForceField(device=device, dtype=dtype, **kwargs)
    if key.endswith(".model") or Path(name).is_file():
        from elign.mlff.mace import MACEForceField

        return MACEForceField(name, device=device, dtype=dtype, **kwargs)
    raise ValueError(f"unknown force field {name!r}: use one of {FORCE_FIELD_NAMES} or a path to a .model file")
