"""Tables 1-3 in the paper's layout, with the paper's reported numbers beside each reproduced one.

A table is assembled from result files (`workflow.table_sources`): per PaI cell the trained baseline masks (one
per seed) and the PAGS/PEGS selection results; per baseline (EB, LTH) the trained ticket and its cost record.
The main columns use the authors' readout of best-epoch test accuracy (`readout.authors_readout`); the same
readout of final-epoch accuracy follows in columns of its own. With several seeds each cell is the mean over seeds
of the per-seed readout, ± the standard deviation over seeds. The long CSV has one row per cell (value, spread, n,
paper value, difference, source files); Markdown and LaTeX (booktabs) render the same cells.
"""

from __future__ import annotations

import math
import statistics
from importlib import resources
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..io import read_csv, read_json
from .readout import authors_readout

METHOD_LABELS = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "erk": "ERK", "random": "Random",
                 "magnitude": "Magnitude", "eb": "EB", "lth": "LTH"}
MODEL_LABELS = {"resnet18": "ResNet18", "resnet34": "ResNet34"}
# Best-epoch columns (the authors' readout, compared with the paper), then the same readout of final epochs.
PAPER_COLUMNS_SHOWN = ("baseline_acc", "pags_best_acc", "pags_avg_acc", "pretrain_cost")
FINAL_COLUMNS = ("baseline_final_acc", "pags_best_final_acc", "pags_avg_final_acc")
COLUMNS = PAPER_COLUMNS_SHOWN + FINAL_COLUMNS
COLUMN_LABELS = {"baseline_acc": "Baseline acc. %", "pags_best_acc": "PAGS/PEGS best %",
                 "pags_avg_acc": "PAGS/PEGS avg. %", "pretrain_cost": "Pre-training cost",
                 "baseline_final_acc": "Baseline final %", "pags_best_final_acc": "PAGS/PEGS best final %",
                 "pags_avg_final_acc": "PAGS/PEGS avg. final %"}
# Pre-training compute as a fraction of one full sparse training run -> the paper's cost labels.
COST_LEVELS = ((0.0, "none"), (0.1, "low"), (1.0, "high"), (math.inf, "very_high"))
PAPER_COLUMNS = ("table", "dataset", "model", "pretrain_iters", "density", "method", "baseline_acc", "pags_best_acc",
                 "pags_avg_acc", "pags_std_acc", "pretrain_cost")
PAPER_WIDTH = 64  # the paper's ResNets: 64 stem channels


def load_reported() -> pd.DataFrame:
    """The paper's reported numbers (Tables 1-3) and the density they were run at, shipped with the package."""
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


def paper_row(reported: pd.DataFrame | None, paper_table, dataset, model, method, iters, density: float,
              width: int) -> dict | None:
    """The paper's numbers for a cell, only where the setting is the paper's: table, dataset, model (at the
    paper's width), method, pretraining iterations and density; None for anything else (no unlike comparison)."""
    if reported is None or paper_table is None or width != PAPER_WIDTH:
        return None
    rows = reported[(reported["table"] == paper_table) & (reported["dataset"] == dataset)
                    & (reported["model"] == model) & (reported["method"] == method)]
    if iters is not None:
        rows = rows[rows["pretrain_iters"] == iters]
    rows = rows[[math.isclose(float(d), float(density)) for d in rows["density"]]]
    return rows.iloc[0].to_dict() if len(rows) else None


def _pooled(values: list[float | None], single_spread: float | None = None) -> tuple[float | None, float | None]:
    """Mean over seeds and its spread: the std over seeds, or with one seed `single_spread` (the authors' std)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], single_spread
    return statistics.fmean(values), statistics.stdev(values)


def _seed_readouts(row: Mapping) -> list[dict]:
    """Per seed with both files present: the baseline's and the search's accuracies, read out both ways."""
    out = []
    for baseline_path, search_path in zip(row["baseline"], row["search"]):
        if not (_exists(baseline_path) and _exists(search_path)):
            continue
        baseline = _accuracies(baseline_path)
        snapshots = read_json(search_path, what="search results")["masks"]
        out.append({"baseline": baseline,
                    "best": authors_readout(baseline["best_acc"], [m["best_acc"] for m in snapshots]),
                    "final": authors_readout(baseline["final_acc"], [m["final_acc"] for m in snapshots])})
    return out


def _pai_values(row: Mapping) -> dict:
    seeds = _seed_readouts(row)
    values = {}
    for suffix, kind in (("", "best"), ("_final", "final")):
        base_key = "best_acc" if kind == "best" else "final_acc"
        values[f"baseline{suffix}_acc"] = (*_pooled([s["baseline"][base_key] for s in seeds]), len(seeds),
                                           row["baseline"])
        readouts = [s[kind] for s in seeds]
        values[f"pags_best{suffix}_acc"] = (*_pooled([r["best"] for r in readouts]), len(seeds), row["search"])
        single_std = readouts[0]["std"] if len(readouts) == 1 else None
        values[f"pags_avg{suffix}_acc"] = (*_pooled([r["avg"] for r in readouts], single_std),
                                           sum(r["n_avg"] for r in readouts), row["search"])
    return values


def _baseline_values(row: Mapping) -> dict:
    trained = [_accuracies(path) for path in row["baseline"] if _exists(path)]
    return {"baseline_acc": (*_pooled([t["best_acc"] for t in trained]), len(trained), row["baseline"]),
            "baseline_final_acc": (*_pooled([t["final_acc"] for t in trained]), len(trained), row["baseline"])}


def assemble(name: str, table_cfg: Mapping, sources: list[dict], train_epochs: int, steps_per_epoch: float,
             reported: pd.DataFrame | None = None, width: int = PAPER_WIDTH) -> pd.DataFrame:
    """The long table: one row per (block, method, column) with the value, its spread and the paper's."""
    cells = []
    for row in sources:
        model, method, iters = row["model"], row["method"], row["iters"]
        block = block_name(model, iters)
        if row["kind"] == "pai":
            values = _pai_values(row)
            pretrain_epochs = iters / steps_per_epoch
        else:
            values = _baseline_values(row)
            costs = [read_json(path, what="cost record") for path in row["cost"] if _exists(path)]
            pretrain_epochs = max((c["pretrain_epochs"] for c in costs), default=None)
        label = None if pretrain_epochs is None else cost_label(pretrain_epochs, train_epochs)
        values["pretrain_cost"] = (label, None, len(row["seeds"]), row["cost"])
        paper = paper_row(reported, table_cfg.get("paper_table"), table_cfg["dataset"], model, method, iters,
                          table_cfg["density"], width)
        for column, (value, spread, n, files) in values.items():
            paper_value = None if paper is None else paper.get(column)
            paper_spread = paper.get("pags_std_acc") if paper is not None and column == "pags_avg_acc" else None
            cells.append({
                "table": name, "block": block, "model": model, "pretrain_iters": iters, "method": method,
                "column": column, "value": value, "spread": spread, "n": n,
                "pretrain_epochs": pretrain_epochs if column == "pretrain_cost" else None,
                "paper": _none_if_nan(paper_value), "paper_spread": _none_if_nan(paper_spread),
                "difference": _difference(value, paper_value), "sources": ";".join(files),
            })
    return pd.DataFrame(cells)


def _accuracies(path: str) -> dict:
    metrics = read_json(path, what="training metrics")
    for key in ("final_acc", "best_acc"):
        if key not in metrics:
            raise ValueError(f"training metrics {path} lacks {key!r}; delete it and rerun")
    return {"final_acc": metrics["final_acc"], "best_acc": metrics["best_acc"]}


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
    widths = {column: 3 for column in PAPER_COLUMNS_SHOWN} | {"pretrain_cost": 2} | dict.fromkeys(FINAL_COLUMNS, 1)
    header = ["Method"]
    for column in COLUMNS:
        header += [COLUMN_LABELS[column], "paper", "Δ"][:widths[column]]
    blocks: dict[str, list[list[str]]] = {}
    for (block, method), group in cells.groupby(["block", "method"], sort=False):
        by_column = {r["column"]: r for r in group.to_dict("records")}
        line = [METHOD_LABELS.get(method, method)]
        for column in COLUMNS:
            cell = by_column.get(column)
            if cell is None:  # EB and LTH have no search columns
                line += ["–"] * widths[column]
                continue
            with_spread = column.startswith("pags_avg") or cell["n"] > 1
            line.append(_fmt(cell["value"], cell["spread"] if with_spread else None))
            if widths[column] > 1:
                line.append(_fmt(cell["paper"], cell["paper_spread"] if column == "pags_avg_acc" else None))
            if widths[column] > 2:
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
    from ..workflow import resolved_search, table_runs

    paper = table_cfg.get("paper_table")
    if not paper:
        source = "no paper table matches this configuration"
    elif config["model_width"] != PAPER_WIDTH:
        source = f"no paper numbers: width {config['model_width']} is not the paper's {PAPER_WIDTH}"
    else:
        source = (f"paper Table {paper} beside each value where dataset, model, method, pretraining and density "
                  "are the paper's")
    searches = [resolved_search(config, run) for run in table_runs(config, name)]
    populations = sorted({s["population"] for s in searches})
    caps = {s["train_cap"] for s in searches}
    trained = "every saved snapshot trained" if caps == {None} else f"the newest {sorted(caps, key=str)} trained"
    return (f"{name}: {table_cfg['dataset']} at density {table_cfg['density']}, "
            f"{', '.join(MODEL_LABELS.get(m, m) for m in table_cfg['models'])} @ "
            f"{', '.join(map(str, table_cfg['pretrain_iters']))} pre-training iterations, width "
            f"{config['model_width']}, {config['train']['epochs']} epochs. Main columns: best-epoch test accuracy "
            "read out as the authors do (best = highest over the trained snapshots; avg ± std over the snapshots "
            "at least as good as the baseline when more than one is, else over all). That is the paper's protocol "
            "and it is optimistic: the epoch is picked on the test set. The 'final' columns read out final-epoch "
            f"accuracy the same way. PAGS/PEGS over {'/'.join(map(str, populations)) or '–'} candidates, "
            f"{trained}; {source}." + (f" {table_cfg['note']}" if table_cfg.get("note") else ""))
