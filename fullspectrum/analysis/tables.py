"""Tables 1-3 in the paper's layout, with the paper's reported numbers beside each reproduced one.

A table is assembled from result files (`workflow.table_sources`): per PaI cell the trained baseline masks (one
per seed) and the PAGS/PEGS selection results; per baseline (EB, LTH) the trained ticket and its cost record.
The long CSV has one row per cell (value, std, n, paper value, difference, source files); Markdown and LaTeX
(booktabs) render the same cells.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..io import read_csv, read_json
from .collect import accuracy_summary

METHOD_LABELS = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "erk": "ERK", "random": "Random",
                 "magnitude": "Magnitude", "eb": "EB", "lth": "LTH"}
MODEL_LABELS = {"resnet18": "ResNet18", "resnet34": "ResNet34"}
COLUMNS = ("baseline_acc", "pags_best_acc", "pags_avg_acc", "pretrain_cost")
COLUMN_LABELS = {"baseline_acc": "Baseline acc. %", "pags_best_acc": "PAGS/PEGS best %",
                 "pags_avg_acc": "PAGS/PEGS avg. %", "pretrain_cost": "Pre-training cost"}
# Pre-training compute as a fraction of one full sparse training run -> the paper's cost labels.
COST_LEVELS = ((0.0, "none"), (0.1, "low"), (1.0, "high"), (math.inf, "very_high"))
PAPER_COLUMNS = ("table", "dataset", "model", "pretrain_iters", "method", "baseline_acc", "pags_best_acc",
                 "pags_avg_acc", "pags_std_acc", "pretrain_cost")


def load_reported() -> pd.DataFrame:
    """The paper's reported numbers (Tables 1-3), shipped with the package."""
    path = resources.files("fullspectrum.analysis") / "reported_results.csv"
    return read_csv(path, required_columns=PAPER_COLUMNS, what="reported results")


def cost_label(pretrain_epochs: float, train_epochs: float) -> str:
    """`none` for no pre-training, then low / high / very_high by the share of one full training run."""
    share = pretrain_epochs / train_epochs
    if share <= 0:
        return "none"
    return next(label for bound, label in COST_LEVELS[1:] if share < bound)


def block_name(model: str, iters: int | None) -> str:
    return MODEL_LABELS.get(model, model) + ("" if iters is None else f"@{iters}")


def _paper_row(reported: pd.DataFrame | None, paper_table, dataset, model, method, iters) -> dict | None:
    if reported is None or paper_table is None:
        return None
    rows = reported[(reported["table"] == paper_table) & (reported["dataset"] == dataset)
                    & (reported["model"] == model) & (reported["method"] == method)]
    if iters is not None:
        rows = rows[rows["pretrain_iters"] == iters]
    return rows.iloc[0].to_dict() if len(rows) else None


def assemble(name: str, table_cfg: Mapping, sources: list[dict], train_epochs: int, steps_per_epoch: float,
             reported: pd.DataFrame | None = None) -> pd.DataFrame:
    """The long table: one row per (block, method, column) with the value, its spread and the paper's."""
    cells = []
    for row in sources:
        model, method, iters = row["model"], row["method"], row["iters"]
        block = block_name(model, iters)
        baseline = accuracy_summary(_final_acc(path) for path in row["baseline"] if _exists(path))
        values = {"baseline_acc": (baseline["mean"], baseline["std"], baseline["n"], row["baseline"])}
        pretrain_epochs = None
        if row["kind"] == "pai":
            pooled = [m["final_acc"] for path in row["search"] if _exists(path)
                      for m in read_json(path, what="search results")["masks"]]
            search = accuracy_summary(pooled)
            values["pags_best_acc"] = (search["best"], None, search["n"], row["search"])
            values["pags_avg_acc"] = (search["mean"], search["std"], search["n"], row["search"])
            pretrain_epochs = iters / steps_per_epoch
        else:
            costs = [read_json(path, what="cost record") for path in row["cost"] if _exists(path)]
            pretrain_epochs = max((c["pretrain_epochs"] for c in costs), default=None)
        label = None if pretrain_epochs is None else cost_label(pretrain_epochs, train_epochs)
        values["pretrain_cost"] = (label, None, len(row["seeds"]), row["cost"])
        paper = _paper_row(reported, table_cfg.get("paper_table"), table_cfg["dataset"], model, method, iters)
        for column, (value, spread, n, files) in values.items():
            paper_value = None if paper is None else paper.get(column)
            if paper is not None and column == "pags_avg_acc":
                paper_spread = paper.get("pags_std_acc")
            else:
                paper_spread = None
            cells.append({
                "table": name, "block": block, "model": model, "pretrain_iters": iters, "method": method,
                "column": column, "value": value, "spread": spread, "n": n,
                "pretrain_epochs": pretrain_epochs if column == "pretrain_cost" else None,
                "paper": _none_if_nan(paper_value), "paper_spread": _none_if_nan(paper_spread),
                "difference": _difference(value, paper_value), "sources": ";".join(files),
            })
    return pd.DataFrame(cells)


def _final_acc(path: str) -> float:
    metrics = read_json(path, what="training metrics")
    if "final_acc" not in metrics:
        raise ValueError(f"training metrics {path} lacks 'final_acc'; delete it and rerun")
    return metrics["final_acc"]


def _exists(path: str) -> bool:
    return Path(path).exists()


def _none_if_nan(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _difference(value, paper):
    paper = _none_if_nan(paper)
    if isinstance(value, (int, float)) and isinstance(paper, (int, float)):
        return value - paper
    return None


def _fmt(value, spread=None) -> str:
    if _none_if_nan(value) is None:
        return "–"
    if isinstance(value, str):
        return value.replace("_", " ")
    text = f"{value:.2f}"
    return text if _none_if_nan(spread) is None else f"{text} ± {spread:.2f}"


def _display(cells: pd.DataFrame) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and rows (grouped by block) shared by the Markdown and LaTeX renderings."""
    header = ["Method"]
    for column in COLUMNS:
        header += [COLUMN_LABELS[column], "paper", "Δ"] if column != "pretrain_cost" else [COLUMN_LABELS[column],
                                                                                          "paper"]
    blocks: dict[str, list[list[str]]] = {}
    for (block, method), group in cells.groupby(["block", "method"], sort=False):
        by_column = {r["column"]: r for r in group.to_dict("records")}
        line = [METHOD_LABELS.get(method, method)]
        for column in COLUMNS:
            cell = by_column.get(column)
            width = 2 if column == "pretrain_cost" else 3
            if cell is None:  # EB and LTH have no search columns
                line += ["–"] * width
                continue
            with_spread = column == "pags_avg_acc" or (column == "baseline_acc" and cell["n"] > 1)
            line.append(_fmt(cell["value"], cell["spread"] if with_spread else None))
            line.append(_fmt(cell["paper"], cell["paper_spread"] if column == "pags_avg_acc" else None))
            if width == 3:
                difference = _none_if_nan(cell["difference"])
                line.append("–" if difference is None else f"{difference:+.2f}")
        blocks.setdefault(block, []).append(line)
    return header, list(blocks.items())


def to_markdown(cells: pd.DataFrame, caption: str) -> str:
    header, blocks = _display(cells)
    lines = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for block, rows in blocks:
        lines.append(f"| **{block}** |" + " |" * (len(header) - 1))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--"}


def _latex(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(cells: pd.DataFrame, caption: str, label: str) -> str:
    header, blocks = _display(cells)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_latex(caption)}}}",
             rf"\label{{{label}}}", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(_latex(h) for h in header) + r" \\", r"\midrule"]
    for index, (block, rows) in enumerate(blocks):
        if index:
            lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{_latex(block)}}}}} \\")
        lines += [" & ".join(_latex(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def caption(name: str, table_cfg: Mapping, config: Mapping) -> str:
    """What the table shows and under which settings (the report shows it too)."""
    paper = table_cfg.get("paper_table")
    source = f"paper Table {paper} beside each value" if paper else "no paper table matches this configuration"
    return (f"{name}: {table_cfg['dataset']} at density {table_cfg['density']}, "
            f"{', '.join(MODEL_LABELS.get(m, m) for m in table_cfg['models'])} @ "
            f"{', '.join(map(str, table_cfg['pretrain_iters']))} pre-training iterations; final-epoch test "
            f"accuracy after {config['train']['epochs']} epochs (width {config['model_width']}); "
            f"PAGS/PEGS over {config['search']['population']} candidates, {config['search']['train_top']} "
            f"selected masks trained; {source}.")
