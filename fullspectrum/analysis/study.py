"""The study's pre-registered analysis (README, "The study"): does the graph criterion beat unguided candidates?

Per PaI method and seed, the authors' readout (`readout.authors_readout`) of the search's trained snapshots
(PAGS best, PAGS avg), of as many no-criterion control masks (control best, control avg) and the PaI baseline. The
comparisons are paired over seeds (each seed has its own initialisation, data split and test set):

    primary    best_vs_control   PAGS best - control best
               avg_vs_control    PAGS avg  - control avg
    secondary  best_vs_baseline  PAGS best - baseline (the paper's comparison)
               equal_best_vs_control  equal-density best - control best (score-based selections keep more
                                 weights than their baseline; this reads them at the baseline's weight count)

For each comparison, per method and pooled over methods (a seed's pooled difference is the mean of its methods'
differences), in accuracy points: the mean, the sample std over seeds, Student's 95% t interval, the two-sided
p-value of "mean = 0" and the one-sided p-value of "mean >= SESOI" (the smallest effect of interest), Holm-adjusted
across the methods (the pooled row is one test per comparison, unadjusted), and the minimum difference the design
detects with 80% power at the measured spread (per method at Holm's first-step level alpha / methods). The verdict:

    supported     p(mean = 0) < alpha and mean > 0                      the criterion helps
    contradicted  p(mean >= SESOI) < alpha, and not supported           it does not help by SESOI or more
    inconclusive  otherwise
    no verdict    fewer than `min_seeds` seeds

Figures 1-2's claim on the ITOP tickets: |rho| of accuracy with topology, weights and the out-of-sample
full-spectrum distance; "rho rises from topology to weights to full spectrum beyond the intervals" holds when the
paired percentile-bootstrap 95% intervals (resampling tickets) of |rho_weights| - |rho_topology| and of
|rho_full_spectrum| - |rho_weights| both lie above 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from ..io import read_json
from .readout import authors_readout
from .stats import pearson_rho

COMPARISONS = {  # name: (minuend, subtrahend, role, label)
    "best_vs_control": ("pags_best", "control_best", "primary", "PAGS best − control best"),
    "avg_vs_control": ("pags_avg", "control_avg", "primary", "PAGS avg − control avg"),
    "best_vs_baseline": ("pags_best", "baseline", "secondary", "PAGS best − baseline"),
    "equal_best_vs_control": ("equal_best", "control_best", "secondary", "equal-density best − control best"),
}
POOLED = "pooled"
POWER = 0.8
ITOP_PANELS = (("topology", "delta_r_imdb"), ("weights", "lambda_imdb"),
               ("full_spectrum", "full_spectrum_distance_oos"))
RHO_STEPS = {"weights_minus_topology": ("weights", "topology"),  # step: (higher, lower) in 'rho rises'
             "full_spectrum_minus_weights": ("full_spectrum", "weights")}


# ---------------------------------------------------------------------------------------------- per-seed values


def seed_values(runs: Sequence[Mapping]) -> pd.DataFrame:
    """One row per (method, seed): the readouts the comparisons subtract, from each run's files.

    `runs`: {"method", "seed", "baseline": the PaI mask's metrics.json, "search": the search's results.json}."""
    rows = []
    for run in runs:
        trained = read_json(run["baseline"], what="training metrics")
        baseline = trained["best_acc"]
        results = read_json(run["search"], what="search results")
        selected = [m["best_acc"] for m in results["masks"]]
        control = [m["best_acc"] for m in results.get("control", [])]
        if not control:
            raise ValueError(f"{run['search']} has no control masks: the study needs search.control: true")
        equal = [m["best_acc"] for m in results.get("equal", [])]
        if not equal:
            raise ValueError(f"{run['search']} has no equal-density reading: the study needs search.equal_density: "
                             "true")
        pags, unguided = authors_readout(baseline, selected), authors_readout(baseline, control)
        rows.append({"method": run["method"], "seed": int(run["seed"]), "baseline": baseline,
                     "pags_best": pags["best"], "pags_avg": pags["avg"], "snapshots": pags["n"],
                     "equal_best": authors_readout(baseline, equal)["best"],
                     "control_best": unguided["best"], "control_avg": unguided["avg"], "controls": unguided["n"],
                     "pags_density": float(np.mean([m["density"] for m in results["masks"]])),
                     "baseline_density": trained["density"]})
    return pd.DataFrame(rows).sort_values(["method", "seed"], ignore_index=True)


def baseline_curves(runs: Sequence[Mapping]) -> pd.DataFrame:
    """Mean test accuracy per epoch of the PaI baselines over seeds, per method: has training converged?"""
    rows = [{"method": run["method"], "seed": int(run["seed"]), "epoch": point["epoch"], "test_acc": point["test_acc"]}
            for run in runs for point in read_json(run["baseline"], what="training metrics").get("curve", [])
            if point.get("test_acc") is not None]
    if not rows:
        return pd.DataFrame(columns=["epoch"])
    return pd.DataFrame(rows).pivot_table(index="epoch", columns="method", values="test_acc").reset_index()


def differences(values: pd.DataFrame) -> pd.DataFrame:
    """Per comparison, method (and `pooled`) and seed: the paired difference in accuracy points."""
    rows = []
    for name, (minuend, subtrahend, _, _) in COMPARISONS.items():
        for record in values.to_dict("records"):
            rows.append({"comparison": name, "method": record["method"], "seed": record["seed"],
                         "difference": record[minuend] - record[subtrahend]})
    frame = pd.DataFrame(rows)
    methods = frame["method"].nunique()
    pooled = frame.groupby(["comparison", "seed"])["difference"].agg(["mean", "count"]).reset_index()
    pooled = pooled[pooled["count"] == methods]  # a seed enters the pooled row only with every method present
    pooled = pooled.assign(method=POOLED).rename(columns={"mean": "difference"}).drop(columns="count")
    return pd.concat([frame, pooled[frame.columns]], ignore_index=True)


# ----------------------------------------------------------------------------------------------------- tests


def t_test(diffs: Sequence[float], sesoi: float, alpha: float) -> dict:
    """Mean, spread, 95% t interval, p of 'mean = 0' (two-sided), p of 'mean >= sesoi' (one-sided) and the
    minimum detectable difference at 80% power and level `alpha` (NaN where undefined: fewer than 2 seeds)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    out = {"n": n, "mean": float(d.mean()) if n else math.nan, "sd": math.nan, "low": math.nan, "high": math.nan,
           "p_zero": math.nan, "p_below_sesoi": math.nan, "mde": math.nan, "positive": int((d > 0).sum())}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * se
    out.update(sd=sd, low=out["mean"] - half, high=out["mean"] + half, mde=min_detectable(sd, n, alpha))
    if se > 0:
        t_zero = out["mean"] / se
        out["p_zero"] = float(2 * stats.t.sf(abs(t_zero), n - 1))
        out["p_below_sesoi"] = float(stats.t.cdf((out["mean"] - sesoi) / se, n - 1))
    else:  # every seed gave the same difference: no spread to test against
        out["p_zero"] = 0.0 if out["mean"] != 0 else 1.0
        out["p_below_sesoi"] = 0.0 if out["mean"] < sesoi else 1.0
    return out


def min_detectable(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The true mean difference a two-sided one-sample t test at `alpha` detects with `power`, over `n` seeds
    with spread `sd` (exact, from the noncentral t)."""
    if n < 2 or not sd > 0:
        return math.nan
    df, critical = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(nc: float) -> float:
        lower_tail = stats.nct.cdf(-critical, df, nc)  # negligible, and NaN in scipy, far from 0
        return stats.nct.sf(critical, df, nc) + np.nan_to_num(lower_tail) - power

    high = critical + 4.0  # power > 0.99 from df = 3 on; heavier tails need more
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high)) * sd / math.sqrt(n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count)."""
    p = np.asarray(p_values, dtype=float)
    finite = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(len(p), math.nan)
    running = 0.0
    for rank, index in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (len(finite) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def verdict(row: Mapping, alpha: float, min_seeds: int) -> str:
    """The pre-registered rule (module docstring) on a row's adjusted p-values."""
    if row["n"] < min_seeds:
        return "no verdict"
    if row["p_zero_adj"] < alpha and row["mean"] > 0:
        return "supported"
    if row["p_below_sesoi_adj"] < alpha:
        return "contradicted"
    return "inconclusive"


def analyse(diffs: pd.DataFrame, *, sesoi: float, alpha: float, min_seeds: int) -> pd.DataFrame:
    """The verdict table: one row per comparison and method, then the pooled row."""
    rows = []
    methods = sorted(m for m in diffs["method"].unique() if m != POOLED)
    for name, (_, _, role, label) in COMPARISONS.items():
        part = diffs[diffs["comparison"] == name]
        block = []
        for method in methods + [POOLED]:
            level = alpha / len(methods) if method != POOLED else alpha
            values = part[part["method"] == method].sort_values("seed")["difference"]
            block.append({"comparison": name, "label": label, "role": role, "method": method,
                          **t_test(values, sesoi, level)})
        per_method = block[:-1]
        for key in ("p_zero", "p_below_sesoi"):
            for row, adjusted in zip(per_method, holm([r[key] for r in per_method])):
                row[f"{key}_adj"] = adjusted
            block[-1][f"{key}_adj"] = block[-1][key]
        for row in block:
            row["verdict"] = verdict(row, alpha, min_seeds)
        rows += block
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ Figures 1-2's claim


def itop_claim(tickets: pd.DataFrame, draws: int = 2000, seed: int = 0) -> dict:
    """|rho| of accuracy with topology, weights and the out-of-sample full-spectrum distance over the ITOP tickets,
    their bootstrap intervals, and the paired bootstrap intervals of the two steps of 'rho rises'."""
    accuracy = tickets["accuracy"].to_numpy(float)
    columns = {name: tickets[column].to_numpy(float) for name, column in ITOP_PANELS}

    def strengths(index: np.ndarray) -> dict:
        return {name: abs(pearson_rho(x[index], accuracy[index])) for name, x in columns.items()}

    observed = strengths(np.arange(len(accuracy)))
    rng = np.random.default_rng(seed)
    samples = pd.DataFrame([strengths(rng.integers(0, len(accuracy), len(accuracy))) for _ in range(draws)])

    def interval(values: pd.Series) -> list[float]:
        values = values[np.isfinite(values)]
        return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else [math.nan, math.nan]

    out = {"tickets": int(len(accuracy)), "abs_rho": observed,
           "abs_rho_interval": {name: interval(samples[name]) for name in observed},
           "steps": {name: {"observed": observed[high] - observed[low],
                            "interval": interval(samples[high] - samples[low])}
                     for name, (high, low) in RHO_STEPS.items()}}
    out["rises_beyond_intervals"] = all(step["interval"][0] > 0 for step in out["steps"].values())
    return out


# -------------------------------------------------------------------------------------------------- rendering


def to_markdown(table: pd.DataFrame, values: pd.DataFrame, itop: Mapping, settings: Mapping,
                curves: pd.DataFrame) -> str:
    """study.md: what ran, the verdict table, the ITOP claim, the per-seed values behind them."""
    lines = [f"# The study: {settings['title']}", "",
             settings["description"], "",
             f"Pre-registered (README, \"The study\"): alpha {settings['alpha']}, smallest effect of interest "
             f"{settings['sesoi']} points, at least {settings['min_seeds']} seeds for a verdict; differences in "
             "accuracy points (best-epoch test accuracy, the authors' readout), paired over seeds.", "",
             "| comparison | method | seeds | mean | 95% t interval | seeds > 0 | p (Holm) | "
             "p(< SESOI) (Holm) | MDE 80% | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        lines.append(f"| {row['label']} ({row['role']}) | {row['method']} | {row['n']} | {_num(row['mean'])} | "
                     f"[{_num(row['low'])}, {_num(row['high'])}] | {row['positive']}/{row['n']} | "
                     f"{_p(row['p_zero_adj'])} | {_p(row['p_below_sesoi_adj'])} | {_num(row['mde'], sign=False)} | "
                     f"**{row['verdict']}** |")
    rho, steps = itop["abs_rho"], itop["steps"]
    lines += ["", f"## Figures 1-2's claim ({itop['tickets']} ITOP tickets)", "",
              "| | topology | weights | full spectrum (out of sample) |", "|---|---|---|---|",
              "| abs(rho) with accuracy | " + " | ".join(
                  f"{_num(rho[k], sign=False)} [{_num(itop['abs_rho_interval'][k][0], sign=False)}, "
                  f"{_num(itop['abs_rho_interval'][k][1], sign=False)}]" for k in ("topology", "weights",
                                                                                   "full_spectrum")) + " |", ""]
    for name, step in steps.items():
        lines.append(f"- {name.replace('_', ' ')}: {_num(step['observed'])} "
                     f"[{_num(step['interval'][0])}, {_num(step['interval'][1])}]")
    lines += ["", "rho rises from topology to weights to full spectrum beyond the intervals: **"
              + ("yes" if itop["rises_beyond_intervals"] else "no") + "**", "",
              "## Training curves", "",
              "Baseline masks' test accuracy per epoch, mean over seeds (has training converged?):", "",
              "| epoch | " + " | ".join(c for c in curves.columns if c != "epoch") + " |",
              "|---|" + "---|" * (len(curves.columns) - 1)]
    for row in curves.to_dict("records"):
        lines.append(f"| {int(row['epoch'])} | " + " | ".join(f"{row[c]:.2f}" for c in curves.columns if c != "epoch")
                     + " |")
    lines += ["", "## Per seed", "", "| method | seed | baseline | PAGS best | PAGS avg | equal-density best | control best | "
              "control avg | snapshots | PAGS density | baseline density |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in values.to_dict("records"):
        lines.append(f"| {row['method']} | {row['seed']} | {row['baseline']:.2f} | {row['pags_best']:.2f} | "
                     f"{row['pags_avg']:.2f} | {row['equal_best']:.2f} | {row['control_best']:.2f} | {row['control_avg']:.2f} | "
                     f"{row['snapshots']} | {row['pags_density']:.4f} | {row['baseline_density']:.4f} |")
    return "\n".join(lines) + "\n"


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """The pooled verdicts, one aligned line each (what `make study` prints last)."""
    pooled = table[table["method"] == POOLED]
    width = max(len(label) for label in pooled["label"])
    return [f"{row['label']:<{width}}  {_num(row['mean'])} [{_num(row['low'])}, {_num(row['high'])}] points, "
            f"{row['positive']}/{row['n']} seeds > 0: {row['verdict'].upper()}" for row in pooled.to_dict("records")]


def plot_differences(diffs: pd.DataFrame, table: pd.DataFrame, path: str | Path) -> None:
    """One panel per comparison: each seed's paired difference per method and pooled, with the mean's 95% t
    interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    names = list(COMPARISONS)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        rows = table[table["comparison"] == name].reset_index(drop=True)
        for position, row in rows.iterrows():
            seeds = diffs[(diffs["comparison"] == name) & (diffs["method"] == row["method"])]["difference"]
            jitter = np.linspace(-0.15, 0.15, len(seeds)) if len(seeds) > 1 else np.zeros(len(seeds))
            ax.scatter(position + jitter, seeds, s=12, alpha=0.6, color="tab:gray")
            if np.isfinite(row["low"]):
                ax.errorbar(position, row["mean"], yerr=[[row["mean"] - row["low"]], [row["high"] - row["mean"]]],
                            fmt="o", color="tab:red" if row["method"] == POOLED else "black", capsize=4)
        ax.axhline(0, color="tab:blue", linewidth=0.8)
        ax.set_xticks(range(len(rows)), rows["method"])
        ax.set_title(COMPARISONS[name][3] + f" ({COMPARISONS[name][2]})", fontsize=9)
    np.atleast_1d(axes)[0].set_ylabel("paired difference (accuracy points)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=150)
    plt.close(fig)


def _num(value, sign: bool = True) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def _p(value) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.3f}" if value >= 0.001 else "<0.001"


def main(argv=None) -> None:
    """Print a finished study's verdict lines: python -m fullspectrum.analysis.study results/study/study.csv"""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("csv", help="the study's verdict table (study.csv)")
    args = parser.parse_args(argv)
    from ..io import read_csv

    table = read_csv(args.csv, required_columns=("comparison", "method", "verdict"), what="study verdicts")
    print("\n".join(verdict_lines(table)))


if __name__ == "__main__":
    main()
