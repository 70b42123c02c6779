"""Molecular formulas: 'C7H10O2' <-> element counts <-> the atom types a model samples with.

A formula is element symbols each followed by an optional count (Hill order or any other order; an element may
appear once). It becomes a model's atom-type indices in a fixed order (the decoder's); the chain is permutation
equivariant, so the order of the atoms does not matter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elign.data.elements import ATOMIC_NUMBERS

__all__ = ["formula_batch", "formula_types", "hill_formula", "parse_formula", "read_formulas"]

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")


def parse_formula(formula: str) -> dict[str, int]:
    """'C7H10O2' -> {'C': 7, 'H': 10, 'O': 2}; a ValueError names what is wrong."""
    text = formula.strip()
    if not text or _TOKEN.sub("", text):
        raise ValueError(f"{formula!r} is not a molecular formula (elements and counts, like C7H10O2)")
    counts: dict[str, int] = {}
    for symbol, count in _TOKEN.findall(text):
        if symbol not in ATOMIC_NUMBERS:
            raise ValueError(f"{formula!r}: {symbol!r} is not an element")
        if symbol in counts:
            raise ValueError(f"{formula!r}: {symbol} appears twice")
        n = int(count) if count else 1
        if n < 1:
            raise ValueError(f"{formula!r}: a count of {n} {symbol}")
        counts[symbol] = n
    return counts


def hill_formula(counts: dict[str, int]) -> str:
    """{'H': 10, 'C': 7, 'O': 2} -> 'C7H10O2' (carbon, hydrogen, then alphabetical)."""
    order = sorted(counts, key=lambda a: (a != "C", a != "H", a))
    return "".join(f"{a}{counts[a] if counts[a] > 1 else ''}" for a in order if counts[a])


def formula_types(formula: str, decoder: Sequence[str], max_atoms: int | None = None) -> np.ndarray:
    """The atom-type indices [n] of ``formula`` in ``decoder`` (a model's elements), in decoder order; a
    ValueError when the model lacks an element or the molecule is larger than ``max_atoms`` (its size prior)."""
    counts = parse_formula(formula)
    lacking = [a for a in counts if a not in decoder]
    if lacking:
        raise ValueError(f"{formula}: the model has no {', '.join(lacking)} (its elements: {', '.join(decoder)})")
    n = sum(counts.values())
    if max_atoms is not None and n > max_atoms:
        raise ValueError(f"{formula} has {n} atoms; the model's size prior reaches {max_atoms}")
    return np.concatenate([np.full(counts.get(a, 0), k, dtype=np.int64) for k, a in enumerate(decoder)])


def read_formulas(spec: Sequence[str]) -> list[str]:
    """Formulas given on the command line: each item a formula or a file of formulas (one per line, '#'
    comments and blank lines skipped)."""
    out: list[str] = []
    for item in spec:
        path = Path(item)
        if path.suffix in (".txt", ".csv", ".list") or path.is_file():
            lines = path.read_text().splitlines()
            out += [s.split("#")[0].strip().split(",")[0] for s in lines if s.split("#")[0].strip()]
        else:
            out.append(item)
    return out


def formula_batch(formulas: Sequence[str], per_formula: int, decoder: Sequence[str], max_atoms: int) -> np.ndarray:
    """[len(formulas) * per_formula, N] type indices (-1 on padding), each formula ``per_formula`` times in a row:
    the ``types`` of :func:`elign.diffusion.sampler.sample_molecules`."""
    if not formulas:
        raise ValueError("no formula given")
    rows = [formula_types(f, decoder, max_atoms) for f in formulas for _ in range(per_formula)]
    out = np.full((len(rows), max(len(r) for r in rows)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
