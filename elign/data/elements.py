"""The element tables: symbols and atomic numbers of the whole periodic table, in one home."""

from __future__ import annotations

__all__ = ["ATOMIC_NUMBERS", "ELEMENT_SYMBOLS", "QM9_ATOMIC_NUMBERS", "QM9_SYMBOLS", "SYMBOLS"]

SYMBOLS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe",
    "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu",
    "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn",
    "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr",
    "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
)  # fmt: skip  # SYMBOLS[Z - 1] is element Z

ATOMIC_NUMBERS: dict[str, int] = {s: z for z, s in enumerate(SYMBOLS, start=1)}
ELEMENT_SYMBOLS: dict[int, str] = dict(enumerate(SYMBOLS, start=1))

QM9_SYMBOLS: tuple[str, ...] = ("H", "C", "N", "O", "F")  # QM9's elements, in EDM's decoder order
QM9_ATOMIC_NUMBERS: tuple[int, ...] = tuple(ATOMIC_NUMBERS[s] for s in QM9_SYMBOLS)  # (1, 6, 7, 8, 9)
