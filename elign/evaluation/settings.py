"""EvaluationSettings (what ``elign.evaluation.evaluate.evaluate_models`` computes) and ScoringSettings (``elign
score``), in a module light enough for the command-line parser (no RDKit, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from elign.configs import non_negative_int, option, positive_int
from elign.diffusion.settings import TYPE_GUIDANCE

__all__ = ["EvaluationSettings", "ScoringSettings"]


@dataclass
class EvaluationSettings:
    """What ``evaluate_models`` computes; None for a force field or referee skips it."""

    mlff: str | None = option(None, "reward force field (name or .model path)")
    independent: str | None = option("xtb", "a force field that did not train the model")
    referees: tuple[str, ...] = option((), "subset of ('xtb', 'dft')")
    device: str = option("cpu", "'cpu' or 'cuda[:i]'")
    seed: int = option(0, "seed of the DFT subsample and the bootstrap")
    type_guidance: float = option(
        TYPE_GUIDANCE, "with formulas: step of the positions' guidance by the types (0: types replaced only)"
    )
    novelty: bool = option(False, "novelty against the training SMILES")
    train_smiles: str | None = option(None, "text file of training SMILES for novelty (None: from the QM9 cache)")
    ff_batch_size: int = option(64, "molecules per force-field call", type=positive_int)
    xtb_workers: int = option(1, "GFN2-xTB worker processes", type=positive_int)
    xtb_time_limit: float | None = option(120.0, "seconds per molecule of GFN2-xTB")
    relax_fmax: float = option(0.05, "relaxation converged below this force (eV/A)")
    relax_steps: int = option(500, "maximum BFGS steps of a relaxation", type=positive_int)
    relax_max_step: float = option(0.2, "BFGS step cap (A)")
    rmsd_atoms: str = option("heavy", "atoms of the relaxation RMSD", choices=["heavy", "all"])
    dft_num: int = option(10, "size of the random DFT subsample per model", type=non_negative_int)
    dft_pool: str = option(
        "eligible",
        "eligible: draw each model's subsample from the molecules DFT can evaluate (connected, even electron "
        "count); all: the same random indices for every model, exclusions counted",
        choices=["eligible", "all"],
    )
    dft_xc: str = option("b3lyp", "DFT exchange-correlation functional")
    dft_basis: str = option("6-31g(2df,p)", "DFT basis set")
    dft_density_fit: bool = option(True, "density fitting in PySCF")
    dft_grid_level: int = option(
        3,
        "PySCF integration grid (0-9); 1 halves the cost (16-atom sample: energy within 0.2 meV; the grid is "
        "fixed in space, so a rotated water molecule's energy moves by 0.7 meV and its forces by 0.01 eV/A)",
        type=non_negative_int,
    )
    dft_conv_tol: float = option(1e-9, "SCF energy convergence (Hartree)")
    dft_workers: int = option(1, "DFT worker processes", type=positive_int)
    dft_threads: int | None = option(
        None, "threads of each DFT worker (None: the machine's cores shared among the workers)", type=positive_int
    )
    dft_time_limit: float | None = option(900.0, "seconds per molecule of DFT")
    n_boot: int = option(2000, "bootstrap resamples", type=positive_int)
    confidence: float = option(0.95, "confidence of the bootstrap intervals")
    plots: bool = option(True, "write the report's plots")
    progress: bool = option(True, "progress bars")
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": "free-form notes kept in the report"})

    def __post_init__(self) -> None:
        for name in ("mlff", "independent"):  # 'none' on the command line or in a file: skip that force field
            if isinstance(getattr(self, name), str) and getattr(self, name).lower() == "none":
                setattr(self, name, None)
        bad = sorted(set(self.referees) - {"xtb", "dft"})
        if bad:
            raise ValueError(f"unknown referees {bad}: use 'xtb' and/or 'dft'")
        if self.dft_num < 0:
            raise ValueError(f"dft_num must be >= 0, got {self.dft_num}")
        if self.dft_pool not in ("eligible", "all"):
            raise ValueError(f"dft_pool must be 'eligible' or 'all', got {self.dft_pool!r}")
        if not 0 <= self.dft_grid_level <= 9 or not self.dft_conv_tol > 0:
            raise ValueError(
                f"dft_grid_level={self.dft_grid_level} must be in 0..9 and dft_conv_tol={self.dft_conv_tol} > 0"
            )
        if self.rmsd_atoms not in ("heavy", "all"):
            raise ValueError(f"rmsd_atoms must be 'heavy' or 'all', got {self.rmsd_atoms!r}")


@dataclass
class ScoringSettings:
    """The force field that scores a file of molecules (``elign score``)."""

    mlff: str | None = option(None, "force field name or .model path (None: the shipped one)")
    device: str = option("auto", "'auto', 'cpu' or 'cuda[:i]'")
