"""Statistics of an evaluation: per-model summaries and two-model comparisons.

Every function ignores NaN (a molecule a referee could not evaluate is excluded, never scored zero).
Comparisons follow EVALUATION.md: the difference of means (model - baseline) with a seeded bootstrap
confidence interval (paired over seeds when both models were sampled on the same ones), and a one-sided
Mann-Whitney U p-value whose alternative is chosen so that a small
p says the second model is *better* (lower, for RMS force and energies; higher, for stability).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["bootstrap_mean_diff", "compare", "count_reasons", "finite", "mann_whitney_better", "summarize"]

Better = Literal["lower", "higher"]


def finite(values: Any) -> np.ndarray:  # [n_finite] float64
    """The finite entries of ``values`` as a flat float64 array (NaN / inf / None dropped)."""
    x = np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(values, dtype=object))], dtype=np.float64)
    return x[np.isfinite(x)]


def _nan_or(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


def summarize(values: Any) -> dict[str, float | int | None]:
    """mean, median, p10, p90, std and n over the finite values (None for figures of an empty set)."""
    x = finite(values)
    if len(x) == 0:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "std": None}
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return {
        "n": len(x),
        "mean": _nan_or(x.mean()),
        "median": _nan_or(p50),
        "p10": _nan_or(p10),
        "p90": _nan_or(p90),
        "std": _nan_or(x.std(ddof=1)) if len(x) > 1 else 0.0,
    }


def bootstrap_mean_diff(
    baseline: Any,
    model: Any,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, float, float]:
    """(mean(model) - mean(baseline), lower, upper): a percentile bootstrap interval, NaN excluded.

    Unpaired, each sample is resampled on its own. ``paired``: entry i of both holds the same seed (the same
    size and noise, NaN where a side could not be evaluated), so the indices are resampled jointly and each
    replicate is the difference of the two NaN-excluding means over the same drawn seeds; the estimate is the
    same, the interval honours the shared randomness. NaN for all three when either side has no finite value.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    a, b = finite(baseline), finite(model)
    if len(a) == 0 or len(b) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    if paired:
        full_a, full_b = np.asarray(baseline, np.float64), np.asarray(model, np.float64)  # [n], [n]
        if full_a.shape != full_b.shape or full_a.ndim != 1:
            shapes = f"{full_a.shape} and {full_b.shape}"
            raise ValueError(f"a paired bootstrap needs two equal-length 1-d arrays, got {shapes}")
        idx = rng.integers(0, len(full_a), size=(n_boot, len(full_a)))  # [n_boot, n]
        diffs = _nanmean_rows(full_b[idx]) - _nanmean_rows(full_a[idx])  # [n_boot], NaN where a side drew none
        diffs = diffs[np.isfinite(diffs)]
    else:
        ia = rng.integers(0, len(a), size=(n_boot, len(a)))  # [n_boot, n_a]
        ib = rng.integers(0, len(b), size=(n_boot, len(b)))  # [n_boot, n_b]
        diffs = b[ib].mean(axis=1) - a[ia].mean(axis=1)  # [n_boot]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return float(b.mean() - a.mean()), float(lo), float(hi)


def _nanmean_rows(x: np.ndarray) -> np.ndarray:  # [n_boot, n] -> [n_boot], NaN for a row without a finite value
    ok = np.isfinite(x)
    count = ok.sum(axis=1)
    total = np.where(ok, x, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mann_whitney_better(baseline: Any, model: Any, better: Better = "lower") -> float:
    """One-sided Mann-Whitney U p-value of 'model is better than baseline' (NaN when a side is empty)."""
    from scipy.stats import mannwhitneyu

    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    a, b = finite(baseline), finite(model)
    if len(a) == 0 or len(b) == 0:
        return math.nan
    if np.ptp(np.concatenate([a, b])) == 0:  # all values tie: no evidence either way
        return 1.0
    alternative = "less" if better == "lower" else "greater"
    return float(mannwhitneyu(b, a, alternative=alternative).pvalue)


def compare(
    baseline: Any,
    model: Any,
    better: Better = "lower",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    paired: bool = False,
) -> dict[str, Any]:
    """Difference of means (model - baseline) with its bootstrap interval (``paired``: see
    ``bootstrap_mean_diff``) and the one-sided Mann-Whitney p-value, JSON-ready."""
    diff, lo, hi = bootstrap_mean_diff(baseline, model, n_boot, confidence, seed, paired)
    p = mann_whitney_better(baseline, model, better)
    return {
        "diff": _nan_or(diff),
        "ci_low": _nan_or(lo),
        "ci_high": _nan_or(hi),
        "confidence": confidence,
        "paired": paired,
        "p_value": _nan_or(p),
        "better": better,
        "n_baseline": len(finite(baseline)),
        "n_model": len(finite(model)),
        "ci_excludes_zero": bool(math.isfinite(lo) and (lo > 0 or hi < 0)),
    }


def count_reasons(reasons: Iterable[str | None] | Sequence[str | None]) -> dict[str, int]:
    """Counts of the non-None reasons, most frequent first."""
    return dict(Counter(r for r in reasons if r is not None).most_common())
