"""Read trained-mask results (metrics.json + graph.csv per mask directory) into plain summaries."""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path
from typing import Iterable

from ..io import read_csv, read_json

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


def collect_mask_results(mask_dirs: Iterable[str | Path]) -> dict:
    """A search's trained masks: the selected snapshots (`masks`) and the no-criterion control (`control`,
    directories named control{k}), each in candidate order."""
    dirs = sorted(mask_dirs, key=_mask_order)
    masks = [mask_result(d) for d in dirs if not Path(d).name.startswith("control")]
    control = [mask_result(d) for d in dirs if Path(d).name.startswith("control")]
    return {"masks": masks, "control": control,
            "accuracy": {"best_epoch": accuracy_summary(m["best_acc"] for m in masks),
                         "final_epoch": accuracy_summary(m["final_acc"] for m in masks)}}


def _mask_order(mask_dir: str | Path) -> tuple[str, int]:
    """select2 before select10: by kind, then by number."""
    kind, number = re.fullmatch(r"(\D*)(\d*)", Path(mask_dir).name).groups()
    return kind, int(number) if number else -1


def _clean(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
