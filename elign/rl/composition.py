"""The composition channel's memory: QM9's targets and the running drift of what the policy makes.

Each iteration, :meth:`CompositionTracker.batch_drift` measures how far the rollouts sit from QM9: their atom-type
fractions against those of QM9's molecules of the same sizes (the prompts are sizes) and, with ``bonds``, their
pooled single/double/triple bond fractions (EDM's distance rules) against QM9's. :meth:`fold` keeps a
bias-corrected running mean of that drift, and :meth:`channel` turns it into advantages
(:func:`elign.rl.advantages.composition_advantages`): a rollout that differs from its group along the drift is
pushed back.
"""

from __future__ import annotations

import numpy as np
import torch

from elign.metrics.composition import BOND_LABELS
from elign.rl.advantages import composition_advantages, composition_drift

__all__ = ["CompositionTracker", "type_fractions"]


class CompositionTracker:
    """Targets [N_max + 1, E] (and [3] with bonds) from QM9's reference and the running drift [E (+ 3)]."""

    def __init__(self, info, momentum: float, bonds: bool = False, required: bool = False) -> None:
        from elign.data.reference import qm9_reference, size_fractions

        reference = qm9_reference()
        self.available = list(reference["atom_fractions"]) == list(info.atom_decoder)
        if not self.available and (required or bonds):
            raise ValueError(
                f"the composition channel needs a model of QM9's elements {list(reference['atom_fractions'])}; "
                f"this one has {list(info.atom_decoder)}"
            )
        self.momentum = momentum
        self.bonds = bonds
        self.symbols = list(info.atom_decoder)
        self.size_targets = torch.from_numpy(size_fractions(reference, info.max_n_nodes))  # [N_max + 1, E]
        self.bond_target = torch.tensor([reference["bond_fractions"][k] for k in BOND_LABELS], dtype=torch.float64)
        self.drift = torch.zeros(info.num_types + (len(BOND_LABELS) if bonds else 0), dtype=torch.float64)  # [D]
        self.updates = 0

    # ------------------------------------------------------------------ what is pushed
    def vectors(self, fractions: torch.Tensor, bond_counts: torch.Tensor) -> torch.Tensor:
        """[R, D] what the channel compares within a group: atom-type fractions [R, E], then with ``bonds`` each
        rollout's bond-type fractions (QM9's for a rollout without bonds, which then pushes nothing)."""
        fractions = fractions.to(torch.float64)
        if not self.bonds:
            return fractions
        counts = bond_counts.to(torch.float64)  # [R, 3]
        total = counts.sum(dim=1, keepdim=True)  # [R, 1]
        per_rollout = torch.where(total > 0, counts / total.clamp(min=1), self.bond_target)  # [R, 3]
        return torch.cat([fractions, per_rollout], dim=1)

    def batch_drift(self, fractions: torch.Tensor, bond_counts: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """[D] this batch's drift: mean atom-type fractions [R, E] less the targets of their sizes [R], then with
        ``bonds`` the pooled bond-type fractions of bond_counts [R, 3] less QM9's."""
        drift = composition_drift(fractions.to(torch.float64), self.size_targets[sizes])  # [E]
        if self.bonds:
            drift = torch.cat([drift, self._pooled_bonds(bond_counts) - self.bond_target])
        return drift

    def _pooled_bonds(self, bond_counts: torch.Tensor) -> torch.Tensor:  # [3]
        total = bond_counts.sum(dim=0).to(torch.float64)  # [3]
        return total / total.sum() if total.sum() > 0 else self.bond_target.clone()

    # ------------------------------------------------------------------ memory
    def fold(self, drift: torch.Tensor) -> None:
        """Fold one batch's drift [D] into the running mean."""
        self.drift = self.momentum * self.drift + (1 - self.momentum) * drift.to(self.drift)
        self.updates += 1

    def running(self) -> torch.Tensor:
        """[D] the bias-corrected running drift (zeros before the first batch)."""
        if self.updates == 0:
            return torch.zeros_like(self.drift)
        return self.drift / (1 - self.momentum**self.updates)

    def channel(self, vectors: torch.Tensor, weight: float, tolerance: float) -> torch.Tensor:
        """[G, K] the weighted composition channel of vectors [G, K, D] (:meth:`vectors`)."""
        return weight * composition_advantages(vectors, self.running().to(vectors), tolerance)

    def figures(self, drift: torch.Tensor, fractions: torch.Tensor, bond_counts: torch.Tensor) -> dict[str, float]:
        """What the run logs of this batch: its drift [D] and the running one as TV, its hydrogen fraction and
        bond-type distance to QM9."""
        n = len(self.symbols)
        running = self.running()
        figures = {
            "rollout_composition_tv": 0.5 * float(drift[:n].abs().sum()),
            "running_composition_tv": 0.5 * float(running[:n].abs().sum()),
            "rollout_bond_tv": 0.5 * float((self._pooled_bonds(bond_counts) - self.bond_target).abs().sum()),
        }
        if self.bonds:
            figures["running_bond_tv"] = 0.5 * float(running[n:].abs().sum())
        if "H" in self.symbols:
            figures["rollout_hydrogen_fraction"] = float(fractions[:, self.symbols.index("H")].mean())
        return figures

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"composition_drift": self.drift, "composition_updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore the running drift; one of another length (the run changed ``composition_bonds``) restarts."""
        drift = state.get("composition_drift")
        if drift is None or np.shape(drift) != tuple(self.drift.shape):
            return
        self.drift = torch.as_tensor(drift).to(torch.float64).cpu()
        self.updates = int(state.get("composition_updates", 0))


def type_fractions(molecules) -> torch.Tensor:
    """[B, E] atom-type fractions of each molecule of a MoleculeBatch (from its one-hot types)."""
    counts = (molecules.one_hot * molecules.node_mask).sum(dim=1)  # [B, E]
    return (counts / counts.sum(dim=1, keepdim=True).clamp(min=1)).detach().cpu()
