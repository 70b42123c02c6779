"""Bond orders from interatomic distances and EDM's atom / molecule stability criterion.

The length tables are standard average covalent bond lengths in picometres (the values used by
EDM, Hoogeboom et al. 2022, for its QM9 metrics). A pair of atoms at distance ``d`` gets

    order 3 if d < r3 + 3 pm, else 2 if d < r2 + 5 pm, else 1 if d < r1 + 10 pm, else 0,

where an order whose table entry is missing for that pair is never given (and an order is only
given when the lower orders' thresholds also hold, which every entry of the tables satisfies).
An atom is stable when the sum of its bond orders is an allowed valence of its element.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = [
    "ALLOWED_VALENCE",
    "BOND_LENGTHS",
    "MARGINS",
    "allowed_valences",
    "atom_stability",
    "bond_length",
    "bond_order",
    "bond_orders",
    "decoder_symbols",
    "geometry_problem",
    "chemically_judgeable",
    "COINCIDENT_DISTANCE",
    "MIN_DISTANCE",
    "n_fragments",
    "split_molecules",
    "valence",
]

# Average bond lengths (pm) per order. Each unordered pair is written once and made symmetric below.
_SINGLE: dict[tuple[str, str], int] = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
    ("H", "S"): 134, ("H", "Cl"): 127, ("H", "P"): 144, ("H", "Br"): 141,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("C", "S"): 182, ("C", "Cl"): 177, ("C", "P"): 184, ("C", "Br"): 194,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("N", "S"): 168, ("N", "Cl"): 175, ("N", "P"): 177, ("N", "Br"): 214,
    ("O", "O"): 148, ("O", "F"): 142,
    ("O", "S"): 151, ("O", "Cl"): 164, ("O", "P"): 163, ("O", "Br"): 172,
    ("F", "F"): 142, ("F", "S"): 158, ("F", "Cl"): 166, ("F", "P"): 156, ("F", "Br"): 178,
    ("S", "S"): 204, ("S", "Cl"): 207, ("S", "P"): 210, ("S", "Br"): 225,
    ("Cl", "Cl"): 199, ("Cl", "P"): 203, ("Cl", "Br"): 214,
    ("P", "P"): 221, ("P", "Br"): 222,
    ("Br", "Br"): 228,
}  # fmt: skip
_DOUBLE: dict[tuple[str, str], int] = {
    ("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120, ("C", "S"): 160,
    ("N", "N"): 125, ("N", "O"): 121,
    ("O", "O"): 121, ("O", "P"): 150,
    ("P", "S"): 186,
}  # fmt: skip
_TRIPLE: dict[tuple[str, str], int] = {
    ("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113,
    ("N", "N"): 110,
}  # fmt: skip


def _symmetric(table: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    out = dict(table)
    out.update({(b, a): r for (a, b), r in table.items()})
    return out


BOND_LENGTHS: dict[int, dict[tuple[str, str], int]] = {
    1: _symmetric(_SINGLE),
    2: _symmetric(_DOUBLE),
    3: _symmetric(_TRIPLE),
}
MARGINS: dict[int, int] = {1: 10, 2: 5, 3: 3}  # pm added to the table length of each order

# Allowed valence (sum of bond orders) per element; a tuple lists several allowed values.
ALLOWED_VALENCE: dict[str, int | tuple[int, ...]] = {
    "H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "S": 4, "Cl": 1, "P": (3, 5), "Br": 1,
}  # fmt: skip


def decoder_symbols(decoder: Any) -> tuple[str, ...]:
    """Element symbols of an atom decoder: a sequence of symbols or anything with ``.atom_decoder``."""
    symbols = getattr(decoder, "atom_decoder", decoder)
    if isinstance(symbols, str) or not all(isinstance(s, str) for s in symbols):
        raise TypeError(f"decoder must be a sequence of element symbols, got {decoder!r}")
    return tuple(symbols)


def bond_length(a: str, b: str, order: int) -> int | None:
    """Table length in pm of an ``order`` bond between elements a and b, or None if not tabulated."""
    return BOND_LENGTHS.get(order, {}).get((a, b))


def bond_order(a: str, b: str, distance: float) -> int:
    """Bond order (0..3) of elements a and b at ``distance`` Angstrom (scalar reference rule)."""
    d_pm = 100.0 * float(distance)
    order = 0
    for k in (1, 2, 3):
        r = bond_length(a, b, k)
        if r is None or not d_pm < r + MARGINS[k]:
            break
        order = k
    return order


@lru_cache(maxsize=32)
def _thresholds(symbols: tuple[str, ...]) -> np.ndarray:  # [3, K, K] pm, -inf where untabulated
    K = len(symbols)
    out = np.full((3, K, K), -np.inf)
    for k in (1, 2, 3):
        for i, a in enumerate(symbols):
            for j, b in enumerate(symbols):
                r = bond_length(a, b, k)
                if r is not None:
                    out[k - 1, i, j] = r + MARGINS[k]
    out.setflags(write=False)
    return out


def _as_numpy(x: Any, dtype: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def bond_orders(positions: Any, types: Any, decoder: Any) -> np.ndarray:
    """Pairwise bond orders of one molecule.

    positions: [n, 3] Angstrom; types: [n] indices into ``decoder``. Returns int64 [n, n], symmetric,
    zero on the diagonal.
    """
    pos = _as_numpy(positions, np.float64).reshape(-1, 3)  # [n, 3]
    t = _as_numpy(types, np.int64).reshape(-1)  # [n]
    symbols = decoder_symbols(decoder)
    if len(t) != len(pos):
        raise ValueError(f"{len(pos)} positions but {len(t)} atom types")
    if len(t) and (t.min() < 0 or t.max() >= len(symbols)):
        raise ValueError(f"atom type out of range 0..{len(symbols) - 1}: {t.tolist()}")
    d_pm = 100.0 * np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))  # [n, n]
    thr = _thresholds(symbols)[:, t[:, None], t[None, :]]  # [3, n, n]
    within = d_pm[None] < thr  # [3, n, n]
    # order k needs the thresholds of orders 1..k: cumulative AND, then count
    orders = np.cumprod(within, axis=0).sum(axis=0)  # [n, n]
    np.fill_diagonal(orders, 0)
    return orders.astype(np.int64)


MIN_DISTANCE = 0.5  # Angstrom; no two atoms of a real molecule are closer (the shortest bond, H-H, is 0.74)


def _closest_distance(positions: Any) -> float:
    """Smallest interatomic distance (A) of one molecule [n, 3]: inf below two atoms, NaN if non-finite."""
    pos = _as_numpy(positions, np.float64).reshape(-1, 3)  # [n, 3]
    if not np.isfinite(pos).all():
        return float("nan")
    if len(pos) < 2:
        return float("inf")
    d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)  # [n, n]
    np.fill_diagonal(d2, np.inf)
    return float(np.sqrt(d2.min()))


def geometry_problem(positions: Any) -> str | None:
    """Why a geometry is physically impossible (None if it is not): non-finite or overlapping atoms.

    positions [n, 3] Angstrom. Referees and a report's force-field figures never score such molecules:
    their energies and forces would be artefacts (H2 at 0.01 A: hundreds of eV per atom).
    """
    closest = _closest_distance(positions)
    if np.isnan(closest):
        return "non-finite positions"
    if closest < MIN_DISTANCE:
        return f"atoms closer than {MIN_DISTANCE} A (overlapping atoms)"
    return None


COINCIDENT_DISTANCE = 0.2  # Angstrom; atoms this close are one point, not a bond


def chemically_judgeable(positions: Any) -> bool:
    """False for non-finite positions and for coincident atoms (closer than ``COINCIDENT_DISTANCE``).

    Such molecules are never stable or valid: two coincident H atoms are not H2. Atoms merely closer than
    ``MIN_DISTANCE`` keep EDM's verdict: its own reference samples hold pairs 0.39-0.48 A apart judged by the
    distance rule alone (the 900 verdicts of the stability fixture), so the figures stay comparable with the
    literature, and :func:`geometry_problem` keeps such molecules out of the physics figures instead.
    """
    return bool(_closest_distance(positions) >= COINCIDENT_DISTANCE)  # NaN compares False


def allowed_valences(symbol: str) -> tuple[int, ...]:
    """Allowed valences of an element; ValueError for an element without an entry."""
    if symbol not in ALLOWED_VALENCE:
        raise ValueError(f"no allowed valence for element {symbol!r}; known: {sorted(ALLOWED_VALENCE)}")
    v = ALLOWED_VALENCE[symbol]
    return v if isinstance(v, tuple) else (v,)


def valence(orders: np.ndarray) -> np.ndarray:  # [n] sum of bond orders per atom
    return orders.sum(axis=1)


def atom_stability(positions: Any, types: Any, decoder: Any) -> tuple[np.ndarray, bool]:
    """EDM's stability of one molecule: (stable_per_atom bool [n], molecule_stable).

    An atom is stable when its summed bond order is an allowed valence of its element; the molecule
    is stable when all its atoms are (so, as in EDM, an empty molecule counts as stable). No atom of a
    molecule that is not :func:`chemically_judgeable` is stable.
    """
    symbols = decoder_symbols(decoder)
    t = _as_numpy(types, np.int64).reshape(-1)  # [n]
    if not chemically_judgeable(positions):
        return np.zeros(len(t), dtype=bool), len(t) == 0
    nbonds = valence(bond_orders(positions, t, symbols))  # [n]
    allowed = [allowed_valences(s) if s in ALLOWED_VALENCE else () for s in symbols]  # no entry: never stable
    stable = np.array([int(v) in allowed[ti] for ti, v in zip(t, nbonds, strict=True)], dtype=bool)
    return stable, bool(stable.all())


def split_molecules(molecules: Any) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (positions [n, 3] float64, types [n] int64) per molecule, without padding.

    ``molecules`` is a MoleculeBatch (anything with ``.molecule(b)`` and ``.batch_size``) or a
    sequence of (positions, types) pairs.
    """
    if hasattr(molecules, "molecule") and hasattr(molecules, "batch_size"):
        pairs: Sequence[Any] | Iterator[Any] = (molecules.molecule(b) for b in range(molecules.batch_size))
    else:
        pairs = molecules
    for x, t in pairs:
        yield _as_numpy(x, np.float64).reshape(-1, 3), _as_numpy(t, np.int64).reshape(-1)


def n_fragments(positions: Any, types: Any, decoder: Any) -> int:
    """Connected components of the bond graph under the rules above (1 for a connected molecule)."""
    from scipy.sparse.csgraph import connected_components

    if len(types) <= 1:
        return len(types)
    adjacency = bond_orders(positions, types, decoder) > 0  # [n, n]
    return int(connected_components(adjacency, directed=False)[0])
