"""DatasetInfo: atom decoder, atomic numbers, size prior."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources

import torch

from elign.data.elements import ATOMIC_NUMBERS

__all__ = ["MAX_N_NODES", "DatasetInfo", "qm9_info"]

MAX_N_NODES = 500  # the largest molecule a size prior may allow (QM9: 29, GEOM-Drugs: 181)


@dataclass
class DatasetInfo:
    name: str
    atom_decoder: list[str]
    n_nodes: dict[int, int]  # size histogram of the training split: atoms -> count
    max_n_nodes: int
    atom_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.n_nodes = {int(k): int(v) for k, v in self.n_nodes.items()}
        unknown = [a for a in self.atom_decoder if a not in ATOMIC_NUMBERS]
        if unknown:
            raise ValueError(f"unknown elements in atom_decoder: {unknown}")
        if not 1 <= self.max_n_nodes <= MAX_N_NODES:
            raise ValueError(
                f"size prior up to max_n_nodes={self.max_n_nodes} atoms: must be in [1, {MAX_N_NODES}] (a checkpoint "
                "holding more is damaged or not a molecule model of this kind)"
            )
        if self.n_nodes and max(self.n_nodes) > self.max_n_nodes:
            raise ValueError(f"size histogram reaches {max(self.n_nodes)} atoms > max_n_nodes={self.max_n_nodes}")

    @property
    def num_types(self) -> int:
        return len(self.atom_decoder)

    @property
    def atomic_numbers(self) -> list[int]:
        return [ATOMIC_NUMBERS[a] for a in self.atom_decoder]

    def size_probabilities(self) -> torch.Tensor:  # [max_n_nodes + 1]
        p = torch.zeros(self.max_n_nodes + 1, dtype=torch.float64)
        for n, c in self.n_nodes.items():
            p[n] = c
        if p.sum() <= 0:
            raise ValueError(f"dataset {self.name!r} has an empty size histogram")
        return p / p.sum()

    def sample_sizes(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:  # [num] long
        return torch.multinomial(self.size_probabilities(), num, replacement=True, generator=generator)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_nodes"] = {str(k): v for k, v in sorted(self.n_nodes.items())}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DatasetInfo:
        return cls(
            name=d["name"],
            atom_decoder=list(d["atom_decoder"]),
            n_nodes=d["n_nodes"],
            max_n_nodes=int(d["max_n_nodes"]),
            atom_counts=dict(d.get("atom_counts", {})),
        )


def qm9_info() -> DatasetInfo:
    """QM9 with hydrogens; the size prior is that of EDM's training split (computed by elign.data.qm9)."""
    text = resources.files("elign.data").joinpath("qm9_info.json").read_text()
    return DatasetInfo.from_dict(json.loads(text))
