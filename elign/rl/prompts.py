"""The prompts of an iteration: what each group of rollouts shares, a size or a formula, and the chain they all
run (with ``chain_lengths``, a number of steps drawn per iteration).

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

__all__ = ["PromptSampler", "Prompts", "chain_branch", "formula_prompts"]

# A multiplier larger than a run's iterations keeps the streams of different seeds apart; each has its own.
SIZES_STREAM = 7919  # the prompts' molecule sizes (or formulas)
GROUPS_STREAM = 100_003  # a group's rollouts (with GROUPS_PER_ITERATION: one generator per group)
GROUPS_PER_ITERATION = 1009  # more than any iteration's number of groups
CHAIN_STREAM = 4099  # the iteration's chain length (chain_lengths)


class Prompts(NamedTuple):
    """This process's groups of one iteration."""

    sizes: torch.Tensor  # [G] long, atoms of each group's molecules
    generators: list[torch.Generator]  # one per group, on the model's device
    steps: int  # steps of the iteration's (strided) chain
    shared_steps: int  # of them, the steps a group shares before it branches
    types: torch.Tensor | None = None  # [G, N] long type indices of each group's formula (-1 on padding)
    formulas: list[str] | None = None  # each group's formula (prompts_by 'formula')


def formula_prompts(info, num: int, generator: torch.Generator) -> tuple[list[str], torch.Tensor]:
    """``num`` QM9 training formulas that the model of ``info`` can make, drawn by their frequency, and their
    type indices [num, N] (-1 on padding)."""
    formulas, weights = qm9_formulas(list(info.atom_decoder), int(info.max_n_nodes))
    drawn = torch.multinomial(torch.as_tensor(weights), num, replacement=True, generator=generator)
    chosen = [formulas[int(k)] for k in drawn]
    return chosen, torch.from_numpy(formula_batch(chosen, 1, info.atom_decoder, int(info.max_n_nodes)))


def chain_branch(steps: int, shared_steps: int, length: int) -> int:
    """The shared steps of a chain of ``length`` steps that branches after the share ``shared_steps / steps`` of
    its steps, at least one step before its end."""
    return min(round(shared_steps * length / steps), length - 1)


class PromptSampler:
    """Draws the prompts of an iteration for process ``rank`` of ``world``: the groups of the config ``cfg``
    (prompts, prompts_by, seed, steps, shared_steps, chain_lengths)."""

    def __init__(self, info, cfg, rank: int, world: int, device) -> None:
        self.info, self.num, self.by, self.seed = info, cfg.prompts, cfg.prompts_by, cfg.seed
        self.rank, self.world, self.device = rank, world, device
        self.steps, self.shared_steps, self.lengths = cfg.steps, cfg.shared_steps, tuple(cfg.chain_lengths)
        if self.by == "formula":
            qm9_formulas(list(info.atom_decoder), int(info.max_n_nodes))  # a model that can make none fails now

    def chain(self, iteration: int) -> tuple[int, int]:
        """(steps, shared steps) of the iteration's chain: ``steps`` or one of ``chain_lengths``, drawn uniformly
        by (seed, iteration), the same in every process."""
        if not self.lengths:
            return self.steps, self.shared_steps
        g = torch.Generator().manual_seed(self.seed * CHAIN_STREAM + iteration)
        length = self.lengths[int(torch.randint(len(self.lengths), (1,), generator=g))]
        return length, chain_branch(self.steps, self.shared_steps, length)

    def __call__(self, iteration: int) -> Prompts:
        chain = self.chain(iteration)
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
            return Prompts(sizes[mine.start : mine.stop], gens, *chain)
        formulas, types = formula_prompts(self.info, self.num, g)
        formulas, types = formulas[mine.start : mine.stop], types[mine.start : mine.stop]
        return Prompts((types >= 0).sum(dim=1), gens, *chain, types, formulas)
