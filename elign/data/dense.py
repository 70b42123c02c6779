"""DenseDataset: molecules pre-padded into tensors for fast batching during training.

A compact file format (``.npz``: positions float32 [M, N, 3], types int8 [M, N] with -1 on padding,
split indices, the DatasetInfo as JSON) that a GPU run can carry with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elign.data.batch import MoleculeBatch
from elign.data.elements import QM9_SYMBOLS
from elign.data.geometry import remove_mean_with_mask
from elign.data.info import DatasetInfo

__all__ = ["DenseDataset", "dense_from_qm9", "training_data"]


@dataclass
class DenseDataset:
    positions: torch.Tensor  # [M, N, 3] float32, Angstrom, zero on padding
    types: torch.Tensor  # [M, N] int8, -1 on padding
    splits: dict[str, torch.Tensor]  # name -> indices [m] long
    info: DatasetInfo

    def __post_init__(self) -> None:
        M, N = self.types.shape
        if self.positions.shape != (M, N, 3):
            raise ValueError(f"positions {tuple(self.positions.shape)} do not match types {(M, N)}")
        for name, idx in self.splits.items():
            if len(idx) and (idx.min() < 0 or idx.max() >= M):
                raise ValueError(f"split {name!r} indexes outside 0..{M - 1}")

    def __len__(self) -> int:
        return self.types.shape[0]

    @property
    def n_atoms(self) -> torch.Tensor:
        """Atoms per molecule [M] (long)."""
        return (self.types >= 0).sum(dim=1)

    def batch(self, indices: torch.Tensor, device: torch.device | str = "cpu") -> MoleculeBatch:
        """Molecules ``indices`` [B] as a MoleculeBatch trimmed to the largest of them, CoM free."""
        types = self.types[indices].long()  # [B, N]
        mask = (types >= 0).float().unsqueeze(-1)  # [B, N, 1]
        n = int(mask[..., 0].sum(1).max())
        types, mask = types[:, :n].clamp(min=0), mask[:, :n]
        pos = self.positions[indices, :n]
        K = self.info.num_types
        one_hot = torch.nn.functional.one_hot(types, K).float() * mask
        z = torch.tensor(self.info.atomic_numbers, dtype=torch.float32)[types].unsqueeze(-1) * mask
        batch = MoleculeBatch(remove_mean_with_mask(pos, mask), one_hot, z, mask)
        return batch.to(device)

    # ----------------------------------------------------------------------------- builders
    @classmethod
    def from_molecules(
        cls, molecules: list[tuple[np.ndarray, np.ndarray]], splits: dict[str, np.ndarray], info: DatasetInfo
    ) -> DenseDataset:
        """molecules: list of (positions [n, 3], type indices [n])."""
        N = max(len(t) for _, t in molecules)
        M = len(molecules)
        pos = np.zeros((M, N, 3), np.float32)
        types = np.full((M, N), -1, np.int8)
        for i, (x, t) in enumerate(molecules):
            pos[i, : len(t)] = x
            types[i, : len(t)] = t
        return cls(
            torch.from_numpy(pos),
            torch.from_numpy(types),
            {k: torch.as_tensor(np.asarray(v), dtype=torch.long) for k, v in splits.items()},
            info,
        )

    @classmethod
    def synthetic(cls, num: int = 64, seed: int = 0, sizes: tuple[int, int] = (3, 7)) -> DenseDataset:
        """Random chain-like molecules (H, C, N, O) for tests and smoke runs."""
        rng = np.random.default_rng(seed)
        mols = []
        for _ in range(num):
            n = int(rng.integers(sizes[0], sizes[1] + 1))
            steps = rng.normal(size=(n, 3))
            x = np.cumsum(1.4 * steps / np.linalg.norm(steps, axis=1, keepdims=True), axis=0)
            mols.append((x - x.mean(0), rng.integers(0, 4, n)))
        n_val = max(1, num // 8)
        hist: dict[int, int] = {}
        for _, t in mols[n_val:]:
            hist[len(t)] = hist.get(len(t), 0) + 1
        info = DatasetInfo("synthetic", list(QM9_SYMBOLS), hist, sizes[1])
        return cls.from_molecules(mols, {"train": np.arange(n_val, num), "valid": np.arange(n_val)}, info)

    # ----------------------------------------------------------------------------- files
    def save(self, path: str | Path) -> None:
        """Write the file through the verified writer: a failed write (a full disk) keeps the previous file."""
        from elign.io.files import write_file

        arrays = dict(
            positions=self.positions.numpy(),
            types=self.types.numpy(),
            info=np.array(json.dumps(self.info.to_dict())),
            **{f"split_{k}": v.numpy() for k, v in self.splits.items()},
        )

        def produce(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        def verify(tmp: Path) -> None:
            with np.load(tmp, allow_pickle=False) as f:
                if f["types"].shape != arrays["types"].shape:
                    raise OSError("the file read back holds other arrays than were written")

        write_file(path, produce, verify)

    @classmethod
    def load(cls, path: str | Path) -> DenseDataset:
        try:
            with np.load(path, allow_pickle=False) as f:
                splits = {k[6:]: torch.from_numpy(f[k]).long() for k in f.files if k.startswith("split_")}
                info = DatasetInfo.from_dict(json.loads(str(f["info"])))
                return cls(torch.from_numpy(f["positions"]), torch.from_numpy(f["types"]), splits, info)
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"{path} is not a readable dense dataset ({type(e).__name__}: {e}); rebuild it") from e


def dense_from_qm9(data: Any) -> DenseDataset:
    """A QM9Data (:func:`elign.data.qm9.load_qm9`) as a dense training file, with EDM's split."""
    splits = {name: data.split(name) for name in ("train", "valid", "test")}
    molecules = [data.molecule(i) for i in range(len(data))]
    return DenseDataset.from_molecules(molecules, splits, data.dataset_info())


def training_data(path: str | None = None) -> DenseDataset:
    """Pretraining data: a dense file (``elign data --dense``), ``synthetic:N`` (N random molecules, for tests),
    or None: QM9 from its cache."""
    if path is None:
        from elign.data.qm9 import load_qm9

        return dense_from_qm9(load_qm9())
    if path.startswith("synthetic:"):
        return DenseDataset.synthetic(int(path.split(":", 1)[1]))
    return DenseDataset.load(path)
