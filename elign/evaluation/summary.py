"""The few lines ``elign evaluate`` prints: each model's chemistry, its composition guards and its physics."""

from __future__ import annotations

from typing import Any

__all__ = ["chemistry_lines", "guards_line", "report_lines"]

CHEMISTRY_KEYS = ("n", "atom_stability", "molecule_stability", "validity", "uniqueness", "novelty", "vxu")


def _figure(v: Any) -> str:
    return "n/a" if v is None else str(v) if isinstance(v, int) else f"{v:.3f}"


def guards_line(guards: dict | None) -> str | None:
    """One line of composition guards against QM9 (None without QM9's elements)."""
    if not guards or guards.get("atom_type_tv") is None:
        return None
    return (
        f"composition: H fraction {guards['hydrogen_fraction']:.3f}, atom-type TV {guards['atom_type_tv']:.3f}, "
        f"bond-type TV {guards['bond_type_tv']:.3f}, ring-size TV {guards['ring_size_tv']:.3f}, heavy formulas "
        f"{guards['heavy_formulas_distinct']} (a QM9 sample: {guards['heavy_formulas_distinct_qm9']:.0f}); "
        f"novelty of a QM9 sample {guards['reference']['novelty_qm9_sample']:.3f}"
    )


def chemistry_lines(report: dict[str, Any]) -> list[str]:
    """The chemistry-only report of one file: a figure a line, then the guards."""
    lines = []
    for k in CHEMISTRY_KEYS:
        v = report[k]
        lines.append(f"{k:>20}: {v if v is None or isinstance(v, int) else f'{v:.4f}'}")
    if line := guards_line(report.get("composition")):
        lines.append(line)
    return lines


def _physics_line(group: str, g: dict[str, Any]) -> str:
    figures = ", ".join(
        f"{k} median {v['median']:.4g}"
        for k, v in g.items()
        if isinstance(v, dict) and "median" in v and v["median"] is not None
    )
    return f"  {group}: {g['n_evaluated']} evaluated, {g['n_failed']} failed {g['failures'] or ''} {figures}"


def report_lines(report: dict[str, Any]) -> list[str]:
    """Each model of a full report: stability and validity (with its sampling rate), guards, physics medians."""
    lines = []
    for m in report["models"]:
        c, tp = m["chemistry"], m["throughput"] or {}
        rate = f", {tp['molecules_per_second']:.2f} molecules/s" if tp.get("molecules_per_second") else ""
        lines.append(
            f"{m['name']}: n {m['n']}, atom stability {_figure(c.get('atom_stability'))}, molecule stability "
            f"{_figure(c.get('molecule_stability'))}, validity {_figure(c.get('validity'))}{rate}"
        )
        if c.get("formulas"):
            lines.append(
                f"  {c['formulas']} formulas: exact formula {_figure(c['exact_formula'])}, isomer uniqueness "
                f"{_figure(c['isomer_uniqueness'])}"
            )
        if line := guards_line(c.get("composition")):
            lines.append(f"  {line}")
        lines += [_physics_line(group, g) for group, g in m["physics"].items()]
    return lines
