"""The prompts of an iteration: what each group of rollouts shares, a size or a formula.

With ``prompts_by='size'`` a group shares a number of atoms drawn from the model's size prior. With
``prompts_by='formula'`` it shares one of QM9's training formulas, drawn by its frequency among those the model
can make: the atom types are fixed during the chain (:class:`elign.diffusion.conditioning.FixedTypes`), so the
group's rollouts are isomers, their total energies compare directly, and the prompts carry QM9's composition.

Every draw is a function of (seed, iteration[, group]), so a resumed run draws what an uninterrupted one would and
each torchrun process draws only its own groups.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from elign.data.formula import formula_batch
from elign.data.reference import qm9_formulas

__all__ = ["PromptSampler", "Prompts", "formula_prompts"]

# A multiplier larger than a run's iterations keeps the streams of different seeds apart; each has its own.
SIZES_STREAM = 7919  # the prompts' molecule sizes (or formulas)
GROUPS_STREAM = 100_003  # a group's rollouts (with GROUPS_PER_ITERATION: one generator per group)
GROUPS_PER_ITERATION = 1009  # more than any iteration's number of groups


class Prompts(NamedTuple):
    """This process's groups of one iteration."""

    sizes: torch.Tensor  # [G] long, atoms of each group's molecules
    generators: list[torch.Generator]  # one per group, on the model's device
    types: torch.Tensor | None = None  # [G, N] long type indices of each group's formula (-1 on padding)
    formulas: list[str] | None = None  # each group's formula (prompts_by 'formula')


def formula_prompts(info, num: int, generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
    """``num`` QM9 training formulas that the model of ``info`` can make, drawn by their frequency, and their
    type indices [num, N] (-1 on padding)."""
    formulas, weights = qm9_formulas(list(info.atom_decoder), int(info.max_n_nodes))
    drawn = torch.multinomial(torch.as_tensor(weights), num, replacement=True, generator=generator)
    chosen = [formulas[int(k)] for k in drawn]
    return chosen, torch.from_numpy(formula_batch(chosen, 1, info.atom_decoder, int(info.max_n_nodes)))


class PromptSampler:
    """Draws the prompts of an iteration for process ``rank`` of ``world``."""

    def __init__(self, info, prompts: int, prompts_by: str, seed: int, rank: int, world: int, device) -> None:
        self.info, self.num, self.by, self.seed = info, prompts, prompts_by, seed
        self.rank, self.world, self.device = rank, world, device
        if prompts_by == "formula":
            qm9_formulas(list(info.atom_decoder), int(info.max_n_nodes))  # a model that can make none fails now

    def __call__(self, iteration: int) -> Prompts:
        g = torch.Generator().manual_seed(self.seed * SIZES_STREAM + iteration)
        per = self.num // self.world
        mine = range(self.rank * per, (self.rank + 1) * per)
        gens = [
            torch.Generator(device=self.device).manual_seed(
                (self.seed * GROUPS_STREAM + iteration) * GROUPS_PER_ITERATION + k
            )
            for k in mine
        ]
        if self.by == "size":
            sizes = torch.multinomial(self.info.size_probabilities(), self.num, replacement=True, generator=g)
            return Prompts(sizes[mine.start : mine.stop], gens)
        formulas, types = formula_prompts(self.info, self.num, g)
        formulas, types = formulas[mine.start : mine.stop], types[mine.start : mine.stop]
        return Prompts((types >= 0).sum(dim=1), gens, types, formulas)
