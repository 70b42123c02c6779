"""The uniqueness channel's memory: the molecules the policy made in its last iterations.

Alignment narrows what the policy makes: the uniqueness of its valid molecules falls as their stability rises.
:meth:`RecentMolecules.counts` counts how often each rollout's molecule (canonical SMILES) was made by the other
rollouts of the iteration and in the last ``memory`` iterations; :func:`elign.rl.advantages.uniqueness_advantages`
turns the counts into a channel that pushes a valid rollout down, relative to its group, the more often its
molecule was made. A group of molecules none made before gets no push.
"""

from __future__ import annotations

from collections import Counter, deque

import torch

from elign.rl.advantages import uniqueness_advantages

__all__ = ["RecentMolecules"]


class RecentMolecules:
    """The canonical SMILES of the last ``memory`` iterations' rollouts (None for an invalid molecule)."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.batches: deque[list[str | None]] = deque(maxlen=memory)

    def counts(self, smiles: list[str | None], batch: list[str | None] | None = None) -> torch.Tensor:
        """[R] how often each of ``smiles`` was made before: among the remembered iterations and the other
        rollouts of ``batch`` (the iteration's rollouts of every process; default ``smiles`` itself), 0 for an
        invalid molecule."""
        seen = Counter(s for past in self.batches for s in past if s is not None)
        now = Counter(s for s in (smiles if batch is None else batch) if s is not None)
        return torch.tensor([0.0 if s is None else float(seen[s] + now[s] - 1) for s in smiles])

    def observe(self, smiles: list[str | None], batch: list[str | None]) -> torch.Tensor:
        """[R] :meth:`counts` of ``smiles`` against the memory and ``batch``, then ``batch`` remembered."""
        repeats = self.counts(smiles, batch)
        self.remember(batch)
        return repeats

    @staticmethod
    def channel(repeats: torch.Tensor, valid: torch.Tensor, groups: int, weight: float) -> torch.Tensor:
        """[G, K] the weighted uniqueness channel of repeats [R] (:meth:`counts`), valid [R] (RDKit-valid)."""
        return weight * uniqueness_advantages(repeats.view(groups, -1), valid.view(groups, -1))

    @staticmethod
    def repeated_share(repeats: torch.Tensor, valid: torch.Tensor) -> float:
        """The share of the valid rollouts [R] whose molecule was made before (0 without a valid one)."""
        return float((repeats[valid] > 0).float().mean()) if bool(valid.any()) else 0.0

    def remember(self, batch: list[str | None]) -> None:
        """Keep an iteration's SMILES; the oldest is forgotten beyond ``memory``."""
        self.batches.append(list(batch))

    def state_dict(self) -> dict:
        return {"recent_smiles": [list(b) for b in self.batches]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the remembered iterations (the last ``memory`` of them); a state without them starts empty."""
        self.batches = deque((list(b) for b in state.get("recent_smiles", [])), maxlen=self.memory)
