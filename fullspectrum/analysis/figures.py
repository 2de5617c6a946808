"""Figures 1-2: accuracy of trained ITOP snapshot tickets against topology, weights and the full-spectrum distance.

Input: the snapshot tickets' mask directories, each holding `graph.csv` (per-layer graph metrics of the snapshot
mask on the snapshot's weights, plus the `model_mean` row; `fullspectrum.graph.model_metrics`) and `metrics.json`
(the ticket trained to completion by `sparse_train`; the reported accuracy is the final epoch's, `final_acc`).

One row per ticket: snapshot index, time step (ITOP iteration of the snapshot), exploration rate, accuracy, the
layer means of `delta_r_imdb` (topology), `lambda_imdb` (weights), `delta_r`, `lambda_gap` (graph.py's model row:
delta_r and lambda_gap averaged over the layers where they are defined), and the full-spectrum distance.

Full-spectrum distance, as the authors compute it (`itop_tickets_analysis.py` of ScottHoang/dst-ram-pruning):
the four layer-mean metrics are correlated with accuracy over the tickets (Pearson); their |rho|, normalised to
sum to 1, weight the metrics; per layer the distance is the Euclidean norm of the weighted four-vector
`(w1 * delta_r_imdb, w2 * delta_r, w3 * lambda_imdb, w4 * lambda_gap)` (a missing value counting as 0, as in the
layer's l2), and a ticket's distance is the mean over its layers. A |rho| that is undefined (a constant column)
weighs 0; if none is defined the four weigh 1/4 each (and the output says so).

Correlations: Pearson's rho and its two-sided p-value (`scipy.stats.pearsonr`) of accuracy with topology,
weights and the full-spectrum distance (and, for completeness, with delta_r and lambda_gap), over the tickets
with both values, each with a 95% percentile-bootstrap interval over tickets (`stats.rho_interval`). Fewer than
two such tickets, or a constant column, give rho = NaN, reported on the panel.

The full-spectrum weights are fitted on the same tickets the distance is then correlated with, so that rho is
optimistic by construction. The out-of-sample distance (`full_spectrum_distance_oos`) gives each ticket the
distance under weights fitted on the other tickets (leave-one-out); its rho is shown beside the in-sample one.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import InputFileError, atomic_path, read_csv, read_json, write_csv, write_json
from .stats import rho_interval

# The four metrics in the authors' order: topology (iterative mean, full graph), weights (iterative mean, full).
WEIGHTED_METRICS = ("delta_r_imdb", "delta_r", "lambda_imdb", "lambda_gap")
DISTANCE = "full_spectrum_distance"
DISTANCE_OOS = "full_spectrum_distance_oos"
ACCURACY = "accuracy"
# The three panels: column, axis label, short name.
PANELS = (
    ("delta_r_imdb", r"Topology: layer-mean $\Delta r_{imdb}$", "topology"),
    ("lambda_imdb", r"Weights: layer-mean $\lambda_{imdb}$", "weights"),
    (DISTANCE, r"Full-spectrum $\ell_2$-distance", "full_spectrum"),
)
MODEL_ROW = "model_mean"


# ----------------------------------------------------------------------------------------------- statistics


def pearson(x: Sequence[float], y: Sequence[float]) -> dict:
    """Pearson's rho and two-sided p over the pairs where both are finite; NaN (with a reason) when undefined."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    result = {"rho": math.nan, "p": math.nan, "n": int(len(x)), "note": ""}
    if len(x) < 2:
        result["note"] = f"undefined: {len(x)} ticket(s) with values"
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        result["note"] = "undefined: constant " + ("metric" if np.ptp(x) == 0 else "accuracy")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rho, p = stats.pearsonr(x, y)
        result.update(rho=float(rho), p=float(p))
    return result


def rho_weights(layer_means: pd.DataFrame, accuracy: Sequence[float]) -> dict:
    """|rho| of each of the four layer-mean metrics with accuracy, normalised to sum to 1 (see module doc)."""
    magnitudes = {}
    for metric in WEIGHTED_METRICS:
        rho = pearson(layer_means[metric], accuracy)["rho"]
        magnitudes[metric] = 0.0 if math.isnan(rho) else abs(rho)
    total = sum(magnitudes.values())
    if total == 0:
        return {"weights": {m: 1.0 / len(WEIGHTED_METRICS) for m in WEIGHTED_METRICS}, "abs_rho": magnitudes,
                "fallback": True}
    return {"weights": {m: v / total for m, v in magnitudes.items()}, "abs_rho": magnitudes, "fallback": False}


def out_of_sample_distance(layer_means: pd.DataFrame, accuracy: Sequence[float],
                           layer_values: np.ndarray) -> np.ndarray:
    """Leave-one-out: each ticket's full-spectrum distance under |rho| weights fitted on all the other tickets."""
    accuracy = np.asarray(accuracy, dtype=float)
    distances = np.empty(len(accuracy))
    for ticket in range(len(accuracy)):
        rest = np.arange(len(accuracy)) != ticket
        weights = rho_weights(layer_means[rest].reset_index(drop=True), accuracy[rest])["weights"]
        distances[ticket] = full_spectrum_distance(layer_values[ticket:ticket + 1],
                                                   [weights[m] for m in WEIGHTED_METRICS])[0]
    return distances


def full_spectrum_distance(layer_values: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Per ticket: the mean over layers of the norm of the weighted four metrics.

    `layer_values`: [tickets, layers, 4] in `WEIGHTED_METRICS` order, NaN for a missing value (counted as 0);
    `weights`: 4 numbers in the same order.
    """
    values = np.nan_to_num(np.asarray(layer_values, dtype=float), nan=0.0)
    if values.ndim != 3 or values.shape[-1] != len(WEIGHTED_METRICS):
        raise ValueError(f"layer_values must have shape [tickets, layers, 4], got {values.shape}")
    return np.linalg.norm(values * np.asarray(weights, dtype=float), axis=-1).mean(axis=-1)


# ----------------------------------------------------------------------------------------------- the table


def read_ticket(mask_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """(row of scalars, per-layer metrics) of one trained snapshot ticket."""
    mask_dir = Path(mask_dir)
    metrics = read_json(mask_dir / "metrics.json", what="ticket metrics")
    graph = read_csv(mask_dir / "graph.csv", required_columns=("layer", *WEIGHTED_METRICS), what="graph metrics")
    meta = metrics.get("mask_meta") or {}
    accuracy = metrics.get("final_acc")
    layers = graph[graph["layer"] != MODEL_ROW].reset_index(drop=True)
    if layers.empty:
        raise InputFileError(f"graph metrics {mask_dir / 'graph.csv'} has no layer rows")
    model_row = graph[graph["layer"] == MODEL_ROW]
    means = ({m: float(model_row[m].iloc[0]) for m in WEIGHTED_METRICS} if len(model_row)
             else {m: float(layers[m].mean()) for m in WEIGHTED_METRICS})  # the same rule as graph.model_metrics
    row = {
        "ticket": mask_dir.name,
        "snapshot": meta.get("snapshot"),
        "step": meta.get("step"),
        "exploration": meta.get("exploration"),
        "density": metrics.get("density"),
        ACCURACY: math.nan if accuracy is None else float(accuracy),
        **means,
    }
    return row, layers


def ticket_table(mask_dirs: Iterable[str | Path]) -> tuple[pd.DataFrame, dict]:
    """One row per ticket (sorted by snapshot step) with the full-spectrum distance; and the |rho| weighting."""
    rows, layer_frames = [], []
    for mask_dir in mask_dirs:
        row, layers = read_ticket(mask_dir)
        rows.append(row)
        layer_frames.append(layers)
    if not rows:
        raise ValueError("no snapshot tickets given")
    names = list(layer_frames[0]["layer"])
    for row, layers in zip(rows, layer_frames):
        if list(layers["layer"]) != names:
            raise InputFileError(f"ticket {row['ticket']} has other layers than {rows[0]['ticket']}; the "
                                 "snapshots of one figure must come from one model")
    table = pd.DataFrame(rows)
    values = np.stack([layers[list(WEIGHTED_METRICS)].to_numpy(dtype=float) for layers in layer_frames])
    weighting = rho_weights(table, table[ACCURACY])
    table[DISTANCE] = full_spectrum_distance(values, [weighting["weights"][m] for m in WEIGHTED_METRICS])
    table[DISTANCE_OOS] = out_of_sample_distance(table, table[ACCURACY], values)
    order = np.lexsort((table["ticket"].to_numpy(), pd.to_numeric(table["step"]).fillna(-1).to_numpy()))
    table = table.iloc[order].reset_index(drop=True)
    columns = ["ticket", "snapshot", "step", "exploration", "density", ACCURACY, "delta_r_imdb", "lambda_imdb",
               "delta_r", "lambda_gap", DISTANCE, DISTANCE_OOS]
    return table[columns], weighting


def correlations(table: pd.DataFrame, weighting: Mapping | None = None) -> pd.DataFrame:
    """Pearson's rho, p and 95% bootstrap interval of accuracy with each panel's metric (and delta_r, lambda_gap,
    and the out-of-sample full-spectrum distance)."""
    records = []
    extra = (("delta_r", "", "delta_r"), ("lambda_gap", "", "lambda_gap"),
             (DISTANCE_OOS, "", "full_spectrum_out_of_sample"))
    for column, _, name in PANELS + extra:
        record = {"panel": name, "metric": column, **pearson(table[column], table[ACCURACY])}
        record["rho_low"], record["rho_high"] = rho_interval(table[column], table[ACCURACY])
        if weighting is not None and column in weighting["weights"]:
            record["distance_weight"] = weighting["weights"][column]
        records.append(record)
    return pd.DataFrame(records, columns=["panel", "metric", "rho", "rho_low", "rho_high", "p", "n", "note",
                                          "distance_weight"])


# ----------------------------------------------------------------------------------------------- the figure


def _panel_text(record: Mapping) -> str:
    if math.isnan(record["rho"]):
        return f"$\\rho$ = n/a ({record['note'].removeprefix('undefined: ')})"
    p = record["p"]
    p_text = f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"
    return (f"$\\rho$ = {record['rho']:.3f} [{record['rho_low']:.2f}, {record['rho_high']:.2f}], p = {p_text}  "
            f"(n = {record['n']})")


def plot_figure(table: pd.DataFrame, corr: pd.DataFrame, title: str = ""):
    """The three panels as a matplotlib Figure (points: the table's rows, coloured by snapshot step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", font_scale=1.15)
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.6), sharey=True, constrained_layout=True)
    steps = pd.to_numeric(table["step"], errors="coerce").to_numpy(dtype=float)
    finite_steps = steps[np.isfinite(steps)]
    vmin, vmax = (float(finite_steps.min()), float(finite_steps.max())) if len(finite_steps) else (0.0, 1.0)
    if vmin == vmax:
        vmax = vmin + 1.0
    cmap = plt.get_cmap("plasma")
    y = table[ACCURACY].to_numpy(dtype=float)
    records = corr.set_index("metric")
    scatter = None
    for ax, (column, label, _) in zip(axes, PANELS):
        x = table[column].to_numpy(dtype=float)
        scatter = ax.scatter(x, y, c=steps, cmap=cmap, vmin=vmin, vmax=vmax, s=42, edgecolor="black",
                             linewidth=0.4, zorder=3)
        record = records.loc[column]
        if not math.isnan(record["rho"]):
            keep = np.isfinite(x) & np.isfinite(y)
            slope, intercept = np.polyfit(x[keep], y[keep], 1)
            line_x = np.linspace(x[keep].min(), x[keep].max(), 50)
            ax.plot(line_x, slope * line_x + intercept, color="0.25", linewidth=1.3, linestyle="--", zorder=2)
        ax.set_xlabel(label)
        text = _panel_text(record)
        if column == DISTANCE:  # the weights were fitted on these tickets: show the leave-one-out rho too
            text += "\nout of sample: " + _panel_text(records.loc[DISTANCE_OOS])
        ax.set_title(text, fontsize=9.5)  # above the panel: never hides a point
    axes[0].set_ylabel("Test accuracy (%)")
    colorbar = fig.colorbar(scatter, ax=list(axes), pad=0.01, aspect=30)
    colorbar.set_label("Snapshot time (ITOP iteration)")
    if title:
        fig.suptitle(title)
    return fig


def _in_and_out_of_sample(corr: pd.DataFrame) -> dict:
    """The full-spectrum panel's rho fitted in sample and out of sample, each with its bootstrap interval."""
    records = corr.set_index("metric")
    out = {}
    for key, column in (("in_sample", DISTANCE), ("out_of_sample", DISTANCE_OOS)):
        record = records.loc[column]
        out[f"rho_{key}"] = _finite_or_none(record["rho"])
        out[f"interval_{key}"] = [_finite_or_none(record["rho_low"]), _finite_or_none(record["rho_high"])]
    return out


def _finite_or_none(value) -> float | None:
    return float(value) if np.isfinite(value) else None


def make_figure(mask_dirs: Sequence[str | Path], *, png: str | Path, pdf: str | Path, data_csv: str | Path,
                corr_csv: str | Path, corr_json: str | Path, title: str = "") -> dict:
    """Build the ticket table, the correlations and the figure; write all five files atomically."""
    import matplotlib.pyplot as plt

    table, weighting = ticket_table(mask_dirs)
    corr = correlations(table, weighting)
    write_csv(table, data_csv)
    # The figure is drawn from the CSV as written, so what is plotted is exactly what the CSV holds.
    plotted = pd.read_csv(data_csv)
    fig = plot_figure(plotted, corr, title)
    for path in (png, pdf):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip("."), dpi=200)
    plt.close(fig)
    write_csv(corr, corr_csv)
    summary = {
        "title": title, "tickets": len(table),
        "correlations": json.loads(corr.to_json(orient="records")),
        "distance_weights": weighting["weights"], "abs_rho": weighting["abs_rho"],
        "equal_weights_fallback": weighting["fallback"],
        "full_spectrum": _in_and_out_of_sample(corr),
        "metric_order": list(WEIGHTED_METRICS),
        "definition": "per layer ||(w_i * m_i)_i||_2 over the four metrics (missing = 0), mean over layers; "
                      "w_i = |rho(layer-mean m_i, accuracy)| / sum_j |rho_j|",
        "inputs": [str(d) for d in mask_dirs],
    }
    write_json(summary, corr_json)
    return summary
