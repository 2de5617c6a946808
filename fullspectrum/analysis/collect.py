"""Read trained-mask results (metrics.json + graph.csv per mask directory) into plain summaries."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Iterable

from ..io import read_csv, read_json

SEARCH_MASK_KINDS = ("select", "control", "equal")
GRAPH_COLUMNS = ("layer", "delta_r", "lambda_gap", "delta_r_imdb", "lambda_imdb", "l2")


def mask_result(mask_dir: str | Path) -> dict:
    """Final/best accuracy, density and the model-mean graph metrics of one trained mask."""
    mask_dir = Path(mask_dir)
    metrics = read_json(mask_dir / "metrics.json", what="training metrics")
    for key in ("final_acc", "best_acc", "density"):
        if key not in metrics:
            raise ValueError(f"training metrics {mask_dir / 'metrics.json'} lacks {key!r}; delete it and rerun")
    graph = read_csv(mask_dir / "graph.csv", required_columns=GRAPH_COLUMNS, what="graph metrics")
    mean = graph[graph["layer"] == "model_mean"]
    if mean.empty:
        raise ValueError(f"graph metrics {mask_dir / 'graph.csv'} has no model_mean row; delete it and rerun")
    graph_means = {k: _clean(mean.iloc[0][k]) for k in GRAPH_COLUMNS[1:]}
    return {"dir": str(mask_dir), "final_acc": metrics["final_acc"], "best_acc": metrics["best_acc"],
            "density": metrics["density"], "epochs": metrics.get("epochs"), "graph": graph_means}


def accuracy_summary(accuracies: Iterable[float]) -> dict:
    """Best, mean and sample standard deviation (ddof=1; 0 for one value) of accuracies."""
    values = [a for a in accuracies if a is not None]
    if not values:
        return {"n": 0, "best": None, "mean": None, "std": None}
    return {"n": len(values), "best": max(values), "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def collect_mask_results(mask_dirs: Iterable[str | Path], equal_density: bool = False) -> dict:
    """A search's trained masks, each list in snapshot or candidate order: the selected snapshots (`masks`), the
    no-criterion control (`control`, directories control{k}) and, with `equal_density`, that reading (`equal`:
    per selection select{k} its trimmed or topped-up equal{k} where the search wrote one, else the selection
    itself, which then has the baseline's weight count already)."""
    by_kind: dict[str, dict[int, dict]] = {}
    for mask_dir in mask_dirs:
        result = mask_result(mask_dir)  # first: a broken file is named before anything else is said
        kind, number = _kind_and_number(mask_dir)
        if kind not in SEARCH_MASK_KINDS:
            raise ValueError(f"{mask_dir} is not a search's mask directory (expected {', '.join(SEARCH_MASK_KINDS)}"
                             "{k})")
        by_kind.setdefault(kind, {})[number] = result
    ordered = {kind: [found[n] for n in sorted(found)] for kind, found in by_kind.items()}
    selected, adjusted = by_kind.get("select", {}), by_kind.get("equal", {})
    masks = ordered.get("select", [])
    return {"masks": masks, "control": ordered.get("control", []),
            "equal": [adjusted.get(n, selected[n]) for n in sorted(selected)] if equal_density else [],
            "accuracy": {"best_epoch": accuracy_summary(m["best_acc"] for m in masks),
                         "final_epoch": accuracy_summary(m["final_acc"] for m in masks)}}


def _kind_and_number(mask_dir: str | Path) -> tuple[str, int]:
    """("select", 2) for .../select2: the kind of a search's mask directory and its number."""
    kind, number = re.fullmatch(r"(\D*)(\d*)", Path(mask_dir).name).groups()
    return kind, int(number) if number else -1


def _clean(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
