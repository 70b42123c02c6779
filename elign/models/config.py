"""ModelConfig: everything needed to rebuild an EquivariantDiffusion (stored as JSON in checkpoints)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from elign.data.elements import QM9_SYMBOLS
from elign.data.info import DatasetInfo

__all__ = ["ModelConfig"]


CONTEXTS = ("none", "composition")  # what a model is conditioned on besides time
MODEL_LIMITS = {"hidden": 4096, "n_layers": 64, "inv_sublayers": 16, "timesteps": 100_000}  # far above any EDM


@dataclass
class ModelConfig:
    atom_decoder: list[str] = field(default_factory=lambda: list(QM9_SYMBOLS))
    include_charges: bool = True
    hidden: int = 256  # nf: features per atom
    n_layers: int = 9  # equivariant blocks
    inv_sublayers: int = 1  # invariant GCL layers per block
    attention: bool = True
    tanh: bool = True
    coords_range: float = 15.0
    norm_constant: float = 1.0
    sin_embedding: bool = False
    normalization_factor: float = 1.0
    aggregation: str = "sum"
    timesteps: int = 1000
    noise_schedule: str = "polynomial_2"
    noise_precision: float = 1e-5
    norm_values: tuple[float, float, float] = (1.0, 4.0, 10.0)
    dataset: dict | None = None  # DatasetInfo.to_dict(): size prior of the training set
    context: str = "none"  # 'composition': the network also reads each molecule's element counts (EDM's context)

    def __post_init__(self) -> None:
        self.norm_values = tuple(float(v) for v in self.norm_values)
        problems = []
        if self.hidden < 1 or self.n_layers < 1 or self.inv_sublayers < 1:
            problems.append(f"hidden={self.hidden}, n_layers={self.n_layers}, inv_sublayers={self.inv_sublayers}")
        if self.timesteps < 1:
            problems.append(f"timesteps={self.timesteps}")
        too_large = {k: getattr(self, k) for k, cap in MODEL_LIMITS.items() if getattr(self, k) > cap}
        if too_large:
            problems.append(f"implausibly large {too_large} (limits {MODEL_LIMITS})")
        if self.aggregation not in ("sum", "mean"):
            problems.append(f"aggregation={self.aggregation!r} (use 'sum' or 'mean')")
        if len(self.norm_values) != 3 or min(self.norm_values) <= 0:
            problems.append(f"norm_values={self.norm_values}")
        if not self.atom_decoder:
            problems.append("empty atom_decoder")
        if self.context not in CONTEXTS:
            problems.append(f"context={self.context!r} (use one of {', '.join(CONTEXTS)})")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))
        if self.dataset is not None:  # validate and normalise (string keys, as in JSON)
            info = DatasetInfo.from_dict(self.dataset)
            if info.atom_decoder != list(self.atom_decoder):
                raise ValueError(f"dataset decoder {info.atom_decoder} != model decoder {self.atom_decoder}")
            self.dataset = info.to_dict()

    @property
    def num_types(self) -> int:
        return len(self.atom_decoder)

    @property
    def context_dim(self) -> int:
        """Features of the context each node reads: the element counts, or none."""
        return self.num_types if self.context == "composition" else 0

    def dataset_info(self) -> DatasetInfo:
        if self.dataset is None:
            from elign.data.info import qm9_info

            return qm9_info()
        return DatasetInfo.from_dict(self.dataset)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["norm_values"] = list(self.norm_values)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """From a dict of fields, each checked against its type (``hidden: 64.0`` is 64; ``"abc"`` an error)."""
        from elign.configs import config_from_dict

        return config_from_dict(cls, d)
