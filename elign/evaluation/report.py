"""Plots (PNG, matplotlib's Agg backend) and a self-contained HTML page of an evaluation report.

matplotlib is imported inside the plotting function only, so that ``import elign.evaluation.report`` stays cheap.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["composition_rows", "write_html", "write_plots"]

CHEMISTRY_BARS = ("atom_stability", "molecule_stability", "validity", "uniqueness", "vxu")


def _finite(values: list[Any]) -> np.ndarray:  # [n_finite]
    x = np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return x[np.isfinite(x)]


def _stability_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    models = report["models"]
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = np.arange(len(CHEMISTRY_BARS))
    for m, model in enumerate(models):
        vals = [model["chemistry"].get(k) for k in CHEMISTRY_BARS]
        vals = [math.nan if v is None else v for v in vals]
        ax.bar(xs + (m - (len(models) - 1) / 2) * width, vals, width, label=model["name"])
    ax.set_xticks(xs, [k.replace("_", " ") for k in CHEMISTRY_BARS])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction")
    ax.set_title("chemistry (EDM's protocol)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _distribution_plot(metric: dict[str, Any], names: list[str], data: list[np.ndarray], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    pooled = np.concatenate(data)
    lo, hi = np.percentile(pooled, [0.5, 99.5]) if len(pooled) else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 30)
    for name, x in zip(names, data, strict=True):
        if len(x):
            ax.hist(
                np.clip(x, lo, hi),
                bins=bins,
                histtype="step",
                linewidth=1.5,
                density=True,
                label=f"{name} (n={len(x)}, median {np.median(x):.3g})",
            )
    ax.set_xlabel(f"{metric['label']} ({metric['unit']})")
    ax.set_ylabel("density")
    ax.set_title(metric["label"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(report: dict[str, Any], rows: list[list[dict]], out_dir: str | Path) -> list[str]:
    """Stability bars and one distribution plot per physics metric; returns paths relative to ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    folder = Path(out_dir) / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    _stability_plot(report, folder / "stability.png")
    written.append("plots/stability.png")
    names = [m["name"] for m in report["models"]]
    for metric in report["metrics"]:
        if not metric.get("plot", True):
            continue
        data = [_finite([r.get(metric["column"]) for r in model_rows]) for model_rows in rows]
        if not any(len(x) for x in data):
            continue
        name = f"{metric['column']}.png"
        _distribution_plot(metric, names, data, folder / name)
        written.append(f"plots/{name}")
    return written


# ---------------------------------------------------------------------------------------------- HTML
def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.{digits}g}"
    return html.escape(str(v))


def _table(header: list[str], body: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _chemistry_table(report: dict[str, Any]) -> str:
    keys = ["n", *CHEMISTRY_BARS, "novelty"]
    body = []
    for m in report["models"]:
        tp = m.get("throughput") or {}
        body.append(
            [
                m["name"],
                *[m["chemistry"].get(k) for k in keys],
                tp.get("molecules_per_second"),
                tp.get("seconds"),
                tp.get("steps"),
                tp.get("device"),
            ]
        )
    return _table(["model", *keys, "molecules/s", "sampling s", "steps", "device"], body)


GUARD_COLUMNS = (
    ("atom_type_tv", "atom-type TV"),
    ("bond_type_tv", "bond-type TV"),
    ("ring_size_tv", "ring-size TV"),
    ("hydrogen_fraction", "H fraction"),
    ("unsaturation", "unsaturation"),
    ("rings_per_molecule", "rings/mol."),
)


def composition_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the composition guards (one row per model, then QM9's), for HTML and text alike."""
    models = [m for m in report["models"] if m["chemistry"].get("composition")]
    if not models:
        return [], []
    elements = list(models[0]["chemistry"]["composition"]["atom_fractions"])
    header = ["model", *elements, *(label for _, label in GUARD_COLUMNS), "heavy formulas", "novelty"]
    body = []
    for m in models:
        c = m["chemistry"]["composition"]
        expected = c.get("heavy_formulas_distinct_qm9")
        formulas = f"{c['heavy_formulas_distinct']}" + (f" (QM9: {expected:.0f})" if expected is not None else "")
        body.append(
            [
                m["name"],
                *(c["atom_fractions"][a] for a in elements),
                *(c.get(k) for k, _ in GUARD_COLUMNS),
                formulas,
                m["chemistry"].get("novelty"),
            ]
        )
    ref = models[0]["chemistry"]["composition"].get("reference")
    if ref is not None:
        from elign.data.reference import qm9_reference

        qm9 = qm9_reference()
        body.append(
            [
                "QM9",
                *(qm9["atom_fractions"][a] for a in elements),
                0.0,
                0.0,
                0.0,
                ref["hydrogen_fraction"],
                ref["unsaturation"],
                ref["rings_per_molecule"],
                "",
                f"{ref['novelty_qm9_sample']:.3f} (a QM9 sample); held-out {ref['novelty_held_out']:.3f}",
            ]
        )
    return header, body


def _composition_table(report: dict[str, Any]) -> str:
    header, body = composition_rows(report)
    if not body:
        return "<p>no composition figures (the models' elements are not QM9's)</p>"
    return _table(header, body)


def _physics_table(report: dict[str, Any]) -> str:
    body = []
    for metric in report["metrics"]:
        group, col = metric["group"], metric["column"]
        if group == "chemistry":
            continue
        for m in report["models"]:
            g = m["physics"].get(group, {})
            s = g.get(col.removeprefix(f"{group}_"), {})
            fails = "; ".join(f"{k}: {v}" for k, v in g.get("failures", {}).items())
            body.append(
                [
                    metric["label"],
                    metric["unit"],
                    m["name"],
                    s.get("n"),
                    s.get("mean"),
                    s.get("median"),
                    s.get("p10"),
                    s.get("p90"),
                    g.get("n_failed"),
                    fails,
                ]
            )
    return _table(["figure", "unit", "model", "n", "mean", "median", "p10", "p90", "failed", "reasons"], body)


def _comparison_table(report: dict[str, Any]) -> str:
    labels = {m["column"]: (m["label"], m["unit"]) for m in report["metrics"]}
    body = []
    for c in report["comparisons"]:
        for col, r in c["metrics"].items():
            label, unit = labels.get(col, (col, ""))
            ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r.get("ci_low") is not None else "–"
            ci += " paired" if r.get("paired") else ""
            body.append(
                [
                    f"{c['model']} − {c['baseline']}",
                    label,
                    unit,
                    r.get("diff"),
                    ci,
                    r.get("p_value"),
                    r.get("better"),
                    r.get("n_baseline"),
                    r.get("n_model"),
                ]
            )
    return _table(
        [
            "models",
            "figure",
            "unit",
            "difference of means",
            "95% CI (bootstrap; paired: seeds resampled jointly)",
            "one-sided Mann–Whitney p",
            "better is",
            "n baseline",
            "n model",
        ],
        body,
    )


def _dft_pool_note(dft: dict[str, Any]) -> str:
    """Where the DFT subsample came from: each model's eligible molecules, or the same indices for all."""
    if not dft.get("eligibility"):
        return ""
    parts = []
    for name, e in dft["eligibility"].items():
        excluded = ", ".join(f"{k}: {v}" for k, v in e["excluded"].items()) or "none"
        parts.append(f"{html.escape(name)}: {e['n_eligible']} of {e['n']} eligible (excluded: {html.escape(excluded)})")
    how = (
        "drawn at random from each model's eligible molecules"
        if dft.get("pool") == "eligible"
        else "the same random indices for every model, exclusions counted among them"
    )
    return f"<p>DFT subsample {how}. " + "; ".join(parts) + ".</p>"


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0;
font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f0f0f0}
td:first-child{text-align:left}img{max-width:600px;margin:4px;border:1px solid #eee}"""


def write_html(report: dict[str, Any], out_dir: str | Path) -> Path:
    """``out_dir/report.html``: settings, tables and the plots (relative paths)."""
    out = Path(out_dir) / "report.html"
    settings = report.get("settings", {})
    setting_rows = [[k, v if not isinstance(v, list | tuple | dict) else str(v)] for k, v in settings.items()]
    images = "".join(f'<img src="{html.escape(p)}" alt="{html.escape(p)}">' for p in report["files"].get("plots", []))
    dft = report.get("physics", {}).get("dft", {})
    ref = dft.get("reference_qm9")
    ref_html = (
        f"<p>Reference: QM9's own molecules at {html.escape(ref['level'])}: formation energy mean "
        f"{ref['mean']}, median {ref['median']}, p10/p90 {ref['p10']}/{ref['p90']} eV/atom.</p>"
        if ref
        else ""
    )
    ref_html += _dft_pool_note(dft)
    page = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>elign evaluation</title>
<style>{STYLE}</style></head><body>
<h1>elign evaluation</h1>
<p>Baseline of every comparison: <b>{html.escape(report["models"][0]["name"])}</b>. Molecules a referee could
not evaluate are counted by reason and excluded from its statistics.</p>
<h2>Chemistry and throughput</h2>{_chemistry_table(report)}
<h2>Composition against QM9</h2><p>Total variation distances (TV: 0 equal, 1 disjoint) of atom types, bond types
(EDM's distance rules) and ring sizes to QM9's; distinct heavy-atom formulas beside those a QM9 sample of the same
size holds; novelty beside the rate a sample of QM9 itself gets.</p>{_composition_table(report)}
<h2>Physics</h2>{_physics_table(report)}{ref_html}
<h2>Comparisons</h2>{_comparison_table(report) if report["comparisons"] else "<p>one model only</p>"}
<h2>Plots</h2>{images}
<h2>Settings</h2>{_table(["setting", "value"], setting_rows)}
</body></html>
"""
    out.write_text(page)
    return out
