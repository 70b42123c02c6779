"""Settings of ``elign mlff distill``: the student MACE's shape and the distillation run."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from elign.configs import non_negative_int, option, positive_int
from elign.data.elements import QM9_ATOMIC_NUMBERS

__all__ = [
    "DistillConfig",
    "QM9_ELEMENTS",
    "StudentConfig",
]


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
