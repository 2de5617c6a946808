"""Uncertainty for the tables and figures: paired differences over seeds and bootstrap intervals of correlations.

The paper reports one run per cell and compares the best of many trained snapshots with one trained baseline;
these summaries say how sure a difference is. Paired differences use Student's t interval over seeds (the seeds
are the independent replicates; with one seed there is no interval). A correlation's interval is the percentile
bootstrap over tickets.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
# No star and no verdict from fewer seeds: two seeds that happen to agree give a zero-width t interval.
MIN_SEEDS = 5


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """Mean of the per-seed differences a - b, its t interval, and in how many seeds it was positive.

    `excludes_zero` is True when the interval lies entirely above or below 0 over at least MIN_SEEDS seeds; with
    one seed the interval is undefined (None), and below MIN_SEEDS it is shown but nothing is claimed."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    diffs = np.array([x - y for x, y in pairs], dtype=float)
    n = len(diffs)
    out = {"n": n, "mean": float(diffs.mean()) if n else None, "low": None, "high": None,
           "positive": int((diffs > 0).sum()), "excludes_zero": False}
    if n >= 2:
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * diffs.std(ddof=1) / math.sqrt(n)
        out.update(low=float(diffs.mean() - half), high=float(diffs.mean() + half))
        out["excludes_zero"] = n >= MIN_SEEDS and bool(out["low"] > 0 or out["high"] < 0)
    return out


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, *, draws: int = 2000, seed: int = 0,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over `n` items resampled with replacement.

    Resamples where the statistic is undefined (NaN, e.g. a constant column) are left out; NaNs if all are."""
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(draws)], dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def pearson_rho(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's rho over the finite pairs, NaN when undefined (fewer than 2 pairs or a constant side)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def rho_interval(x: Sequence[float], y: Sequence[float], **kwargs) -> tuple[float, float]:
    """Bootstrap interval of Pearson's rho, resampling (x, y) pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return bootstrap_interval(lambda index: pearson_rho(x[index], y[index]), len(x), **kwargs)
