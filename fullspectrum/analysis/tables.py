"""Tables 1-3 in the paper's layout, with the paper's reported numbers beside each reproduced one.

A table is assembled from result files (`workflow.table_sources`): per PaI cell the trained baseline masks (one
per seed) and the PAGS/PEGS selection results; per baseline (EB, LTH) the trained ticket and its cost record.
The main columns use the authors' readout of best-epoch test accuracy (`readout.authors_readout`); the same
readout of final-epoch accuracy follows in columns of its own. With several seeds each cell is the mean over seeds
of the per-seed readout, ± the standard deviation over seeds. The long CSV has one row per cell (value, spread, n,
paper value, difference, source files). Markdown, LaTeX (booktabs) and HTML render the same cells as two tables
(docs/design.md, "Tables and figures"): the main one in the paper's layout (baseline, best, avg with the paper's
number and Δ where the setting is the paper's, pre-training cost, and the paired differences: at most 12 columns),
then the rest (control, equal density, densities, final-epoch readout).
"""

from __future__ import annotations

import math
import statistics
from html import escape
from importlib import resources
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..io import read_csv, read_json
from ..workflow import resolved_search, table_runs
from .readout import authors_readout
from .stats import MIN_SEEDS, paired_difference

METHOD_LABELS = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "erk": "ERK", "random": "Random",
                 "magnitude": "Magnitude", "eb": "EB", "lth": "LTH"}
MODEL_LABELS = {"resnet18": "ResNet18", "resnet34": "ResNet34"}
# Best-epoch columns (the authors' readout, compared with the paper); the no-criterion control; the selections at
# the baseline's weight count; the paired differences over seeds; achieved densities; then the same readout of
# final epochs.
PAPER_COLUMNS_SHOWN = ("baseline_acc", "pags_best_acc", "pags_avg_acc", "pretrain_cost")
CONTROL_COLUMNS = ("control_best_acc", "control_avg_acc")
EQUAL_COLUMNS = ("equal_best_acc", "equal_avg_acc")
DIFFERENCE_COLUMNS = ("best_minus_baseline", "best_minus_control", "equal_minus_baseline")
DENSITY_COLUMNS = ("baseline_density", "pags_density")
FINAL_COLUMNS = ("baseline_final_acc", "pags_best_final_acc", "pags_avg_final_acc")
COLUMNS = (PAPER_COLUMNS_SHOWN + CONTROL_COLUMNS + EQUAL_COLUMNS + DIFFERENCE_COLUMNS + DENSITY_COLUMNS
           + FINAL_COLUMNS)
# The two rendered tables: the paper's columns and the verdicts, then everything else.
MAIN_COLUMNS = PAPER_COLUMNS_SHOWN + DIFFERENCE_COLUMNS
MORE_COLUMNS = CONTROL_COLUMNS + EQUAL_COLUMNS + DENSITY_COLUMNS + FINAL_COLUMNS
MAX_MAIN_COLUMNS = 12
COLUMN_LABELS = {"baseline_acc": "Baseline acc. %", "pags_best_acc": "PAGS/PEGS best %",
                 "pags_avg_acc": "PAGS/PEGS avg. %", "pretrain_cost": "Pre-training cost",
                 "control_best_acc": "Control best %", "control_avg_acc": "Control avg. %",
                 "equal_best_acc": "Equal-density best %", "equal_avg_acc": "Equal-density avg. %",
                 "best_minus_baseline": "Best − baseline", "best_minus_control": "Best − control best",
                 "equal_minus_baseline": "Equal-density best − baseline",
                 "baseline_density": "Baseline density", "pags_density": "PAGS/PEGS density",
                 "baseline_final_acc": "Baseline final %", "pags_best_final_acc": "PAGS/PEGS best final %",
                 "pags_avg_final_acc": "PAGS/PEGS avg. final %"}
# Pre-training compute as a fraction of one full sparse training run -> the paper's cost labels.
COST_LEVELS = ((0.0, "none"), (0.1, "low"), (1.0, "high"), (math.inf, "very_high"))
PAPER_COLUMNS = ("table", "dataset", "model", "pretrain_iters", "density", "method", "baseline_acc", "pags_best_acc",
                 "pags_avg_acc", "pags_std_acc", "pretrain_cost")
PAPER_WIDTH = 64  # the paper's ResNets: 64 stem channels
DENSER = 0.01  # a selection keeping more than 1% more weights than its baseline is marked (†)


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


def _cell(values: list, files: list[str], n: int | None = None, single_spread: float | None = None, **extra) -> dict:
    value, spread = _pooled(values, single_spread)
    return {"value": value, "spread": spread, "n": len([v for v in values if v is not None]) if n is None else n,
            "files": files, **extra}


def _seed_readouts(row: Mapping) -> list[dict]:
    """Per seed with both files present: the baseline and the selected snapshots read out both ways (best-epoch and
    final-epoch accuracy), the control and the equal-density selections (best-epoch), and achieved densities."""
    out = []
    for baseline_path, search_path in zip(row["baseline"], row["search"]):
        if not (_exists(baseline_path) and _exists(search_path)):
            continue
        baseline = _accuracies(baseline_path)
        results = read_json(search_path, what="search results")
        selected, control, equal = results["masks"], results.get("control", []), results.get("equal", [])
        seed = {"baseline": baseline, "has_control": bool(control), "has_equal": bool(equal),
                "pags_density": statistics.fmean(m["density"] for m in selected) if selected else None}
        for kind, key in (("best", "best_acc"), ("final", "final_acc")):
            seed[kind] = authors_readout(baseline[key], [m[key] for m in selected])
        seed["control"] = authors_readout(baseline["best_acc"], [m["best_acc"] for m in control])
        seed["equal"] = authors_readout(baseline["best_acc"], [m["best_acc"] for m in equal])
        out.append(seed)
    return out


def _difference_cell(a: list, b: list, files: list[str]) -> dict:
    diff = paired_difference(a, b)
    return {"value": diff["mean"], "spread": None, "n": diff["n"], "files": files, "low": diff["low"],
            "high": diff["high"], "positive": diff["positive"], "flag": "*" if diff["excludes_zero"] else None}


def _pai_values(row: Mapping) -> dict:
    seeds = _seed_readouts(row)
    files = row["search"]
    values = {}
    for suffix, kind in (("", "best"), ("_final", "final")):
        base_key = "best_acc" if kind == "best" else "final_acc"
        values[f"baseline{suffix}_acc"] = _cell([s["baseline"][base_key] for s in seeds], row["baseline"])
        readouts = [s[kind] for s in seeds]
        values[f"pags_best{suffix}_acc"] = _cell([r["best"] for r in readouts], files)
        values[f"pags_avg{suffix}_acc"] = _cell([r["avg"] for r in readouts], files, sum(r["n_avg"] for r in readouts),
                                                readouts[0]["std"] if len(readouts) == 1 else None)
    with_control = [s for s in seeds if s["has_control"]]
    with_equal = [s for s in seeds if s["has_equal"]]
    for prefix, having in (("control", with_control), ("equal", with_equal)):
        if having:
            readouts = [s[prefix] for s in having]
            values[f"{prefix}_best_acc"] = _cell([r["best"] for r in readouts], files)
            values[f"{prefix}_avg_acc"] = _cell([r["avg"] for r in readouts], files,
                                                sum(r["n_avg"] for r in readouts),
                                                readouts[0]["std"] if len(readouts) == 1 else None)
    values["best_minus_baseline"] = _difference_cell([s["best"]["best"] for s in seeds],
                                                     [s["baseline"]["best_acc"] for s in seeds], files)
    if with_control:
        values["best_minus_control"] = _difference_cell([s["best"]["best"] for s in with_control],
                                                        [s["control"]["best"] for s in with_control], files)
    if with_equal:
        values["equal_minus_baseline"] = _difference_cell([s["equal"]["best"] for s in with_equal],
                                                          [s["baseline"]["best_acc"] for s in with_equal], files)
    baseline_density = [s["baseline"]["density"] for s in seeds]
    pags_density = [s["pags_density"] for s in seeds]
    values["baseline_density"] = _cell(baseline_density, row["baseline"])
    denser = [p / b - 1 > DENSER for p, b in zip(pags_density, baseline_density) if p is not None and b]
    values["pags_density"] = _cell(pags_density, files, flag="†" if any(denser) else None)
    return values


def _baseline_values(row: Mapping) -> dict:
    trained = [_accuracies(path) for path in row["baseline"] if _exists(path)]
    return {"baseline_acc": _cell([t["best_acc"] for t in trained], row["baseline"]),
            "baseline_final_acc": _cell([t["final_acc"] for t in trained], row["baseline"]),
            "baseline_density": _cell([t["density"] for t in trained], row["baseline"])}


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
        values["pretrain_cost"] = {"value": label, "spread": None, "n": len(row["seeds"]), "files": row["cost"]}
        paper = paper_row(reported, table_cfg.get("paper_table"), table_cfg["dataset"], model, method, iters,
                          table_cfg["density"], width)
        for column, cell in values.items():
            paper_value = None if paper is None else paper.get(column)
            paper_spread = paper.get("pags_std_acc") if paper is not None and column == "pags_avg_acc" else None
            cells.append({
                "table": name, "block": block, "model": model, "pretrain_iters": iters, "method": method,
                "column": column, "value": cell["value"], "spread": cell["spread"], "n": cell["n"],
                "low": cell.get("low"), "high": cell.get("high"), "positive": cell.get("positive"),
                "flag": cell.get("flag"),
                "pretrain_epochs": pretrain_epochs if column == "pretrain_cost" else None,
                "paper": _none_if_nan(paper_value), "paper_spread": _none_if_nan(paper_spread),
                "difference": _difference(cell["value"], paper_value), "sources": ";".join(cell["files"]),
            })
    return pd.DataFrame(cells)


def _accuracies(path: str) -> dict:
    metrics = read_json(path, what="training metrics")
    for key in ("final_acc", "best_acc", "density"):
        if key not in metrics:
            raise ValueError(f"training metrics {path} lacks {key!r}; delete it and rerun")
    return {"final_acc": metrics["final_acc"], "best_acc": metrics["best_acc"], "density": metrics["density"]}


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


def _format_cell(column: str, cell: Mapping) -> str:
    if column in DIFFERENCE_COLUMNS:
        return _fmt_difference(cell)
    if column in DENSITY_COLUMNS:
        value = _none_if_nan(cell["value"])
        return "–" if value is None else f"{value:.4f}" + (cell.get("flag") or "")
    with_spread = column.startswith(("pags_avg", "control_avg", "equal_avg")) or cell["n"] > 1
    return _fmt(cell["value"], cell["spread"] if with_spread else None)


def _fmt_difference(cell: Mapping) -> str:
    """'+0.52 [-0.31, 1.35], 2/3 > 0 *' (95% t interval over seeds; * = it excludes 0), or '+0.52 (n = 1)'."""
    value = _none_if_nan(cell["value"])
    if value is None:
        return "–"
    n = int(cell["n"])
    if _none_if_nan(cell.get("low")) is None:
        return f"{value:+.2f} (n = {n})"
    return (f"{value:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}], {int(cell['positive'])}/{n} > 0"
            + (" *" if cell.get("flag") == "*" else ""))


def _display(cells: pd.DataFrame, which: tuple[str, ...] = MAIN_COLUMNS
             ) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and rows (grouped by block) of one rendered table, shared by Markdown, LaTeX and HTML. Columns nobody
    filled (e.g. the control when it is off) are left out; a column gets a "paper (Δ)" companion only where some
    cell has the paper's number (the paper's setting), so a digits table has no empty paper columns."""
    present = set(cells["column"])
    columns = [c for c in which if c in present]
    with_paper = {c for c in columns if c in PAPER_COLUMNS_SHOWN
                  and cells.loc[cells["column"] == c, "paper"].map(_none_if_nan).notna().any()}
    header = ["Method"]
    for column in columns:
        header.append(COLUMN_LABELS[column])
        if column in with_paper:
            header.append("paper" if column == "pretrain_cost" else "paper (Δ)")
    blocks: dict[str, list[list[str]]] = {}
    for (block, method), group in cells.groupby(["block", "method"], sort=False):
        by_column = {r["column"]: r for r in group.to_dict("records")}
        line = [METHOD_LABELS.get(method, method)]
        for column in columns:
            cell = by_column.get(column)
            line.append("–" if cell is None else _format_cell(column, cell))  # EB, LTH: no search columns
            if column in with_paper:
                line.append("–" if cell is None else _paper_text(column, cell))
        blocks.setdefault(block, []).append(line)
    return header, list(blocks.items())


def _paper_text(column: str, cell: Mapping) -> str:
    """The paper's number with the difference: '90.06 ± 0.17 (+1.44)'; the cost label alone; '–' without one."""
    paper = _none_if_nan(cell["paper"])
    if paper is None:
        return "–"
    text = _fmt(paper, cell["paper_spread"] if column == "pags_avg_acc" else None)
    difference = _none_if_nan(cell["difference"])
    return text if difference is None else f"{text} ({difference:+.2f})"


def _parts(cells: pd.DataFrame, caption: str) -> list[tuple[str, list[str], list[tuple[str, list[str]]]]]:
    """(caption, header, blocks) of the main table and, when any of its columns is filled, the second one."""
    parts = [(caption, *_display(cells, MAIN_COLUMNS))]
    if set(cells["column"]) & set(MORE_COLUMNS):
        more = ("Continued: the no-criterion control, the selections at equal density, the achieved densities (†: "
                "more than 1% denser than the baseline) and the same readout of final-epoch accuracy.")
        parts.append((more, *_display(cells, MORE_COLUMNS)))
    return parts


def to_markdown(cells: pd.DataFrame, caption: str) -> str:
    """The main table, then the second one, each under its caption in bold."""
    lines = []
    for index, (text, header, blocks) in enumerate(_parts(cells, caption)):
        lines += ([""] if index else []) + [f"**{text}**", "", "| " + " | ".join(header) + " |",
                                            "|" + "---|" * len(header)]
        for block, rows in blocks:
            lines.append(f"| **{block}** |" + " |" * (len(header) - 1))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "±": r"$\pm$", "Δ": r"$\Delta$", "–": "--",
                 "−": "$-$", "†": r"$^\dagger$", ">": "$>$"}


def _latex(text: str) -> str:
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_latex(cells: pd.DataFrame, caption: str, label: str) -> str:
    """One booktabs table environment per rendered table; the second is labelled `<label>-more`."""
    lines = []
    for index, (text, header, blocks) in enumerate(_parts(cells, caption)):
        lines += [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{_latex(text)}}}",
                  rf"\label{{{label}{'-more' if index else ''}}}", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
                  r"\toprule", " & ".join(_latex(h) for h in header) + r" \\", r"\midrule"]
        for number, (block, rows) in enumerate(blocks):
            if number:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{_latex(block)}}}}} \\")
            lines += [" & ".join(_latex(c) for c in row) + r" \\" for row in rows]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


HTML_STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1em;color:#111;background:#fff}
table{border-collapse:collapse;margin:0.5em 0 2em;font-size:0.9em}
caption{caption-side:top;text-align:left;padding:0 0 0.5em;max-width:80em;line-height:1.35}
th,td{padding:0.25em 0.6em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
thead th{border-bottom:2px solid #333;vertical-align:bottom}
tr.block td{font-style:italic;font-weight:600;border-bottom:1px solid #999;padding-top:0.8em}"""


def to_html(cells: pd.DataFrame, caption: str, title: str) -> str:
    """A self-contained HTML page with both tables, for Snakemake's report (shown rendered, not downloaded)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{escape(title)}</title>",
           f"<style>{HTML_STYLE}</style></head><body>", f"<h2>{escape(title)}</h2>"]
    for text, header, blocks in _parts(cells, caption):
        out.append(f"<table><caption>{escape(text)}</caption>")
        out.append("<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for block, rows in blocks:
            out.append(f'<tr class="block"><td colspan="{len(header)}">{escape(block)}</td></tr>')
            out += ["<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</tbody></table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def caption(name: str, table_cfg: Mapping, config: Mapping) -> str:
    """What the table shows and under which settings (the report shows it too)."""
    paper = table_cfg.get("paper_table")
    if not paper:
        source = "no paper table matches this configuration"
    elif config["model_width"] != PAPER_WIDTH:
        source = f"no paper numbers: width {config['model_width']} is not the paper's {PAPER_WIDTH}"
    else:
        source = (f"paper Table {paper} beside each value where dataset, model, method, pretraining and density "
                  "are the paper's")
    if paper == 1:  # README, Deviations: Table 1's pretraining
        source += (" (Table 1: PEGS @100 as the paper's text says; the authors' CIFAR-10 result folders default to "
                   "--pretrained-iter 500, and the paper marks its PaI rows 'no pre-training needed')")
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
            f"{trained}; {source}. Control: the search's first candidates as whole masks (no graph criterion), as "
            "many as snapshots trained. Equal-density: each selection trimmed or topped up to its baseline's "
            "weight count by the baseline's scores. Differences are paired over seeds: mean [95% t interval], "
            f"seeds > 0, * where the interval excludes 0 over at least {MIN_SEEDS} seeds." + (f" {table_cfg['note']}" if table_cfg.get("note") else ""))
