"""One screen after a run: where each artefact is, then the verdicts as an aligned table.

    python -m fullspectrum.summary --configfile config/embedded.yaml [--report report.html] [--log demo.log]
    snakemake ... 2>&1 | tee demo.log | python -m fullspectrum.summary --follow    (compact progress)

The verdicts (`verdict_rows`) summarise, per table, each paired comparison over its PaI cells (docs/design.md,
"The statistics"): the mean difference over cells, how many cells' 95% intervals lie above or below 0, and in how
many seeds the difference was positive. The report's landing page (`fullspectrum.landing`) shows the same rows.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Iterable, Mapping, TextIO

import pandas as pd

from .plan import merged_config
from .analysis.stats import MIN_SEEDS

# The paired comparisons a table holds (long CSV column -> what it compares).
COMPARISONS = (("best_minus_baseline", "best − baseline"), ("best_minus_control", "best − control best"),
               ("equal_minus_baseline", "equal-density best − baseline"))
VERDICT_HEADER = ("table", "comparison", "mean", "interval", "seeds > 0")


def artefacts(config: Mapping, report: str) -> list[tuple[str, Path]]:
    results = Path(config["results"])
    items = [(f"Table {name[-1]}", results / "tables" / f"{name}.md") for name in config.get("tables", {})]
    for name, figure in config.get("figures", {}).items():
        stem = results / "figures" / f"{name}_{figure['dataset']}_{figure['model']}"
        items.append((f"Figure {name[-1]}", stem.with_suffix(".png")))
    items.append(("Report", Path(report)))
    return items


def headline(csv: Path) -> str:
    """Mean baseline vs mean PAGS/PEGS-best accuracy over a table's PaI rows (best-epoch, the authors' readout)."""
    cells = pd.read_csv(csv)
    pai = cells[cells["pretrain_iters"].notna()]
    base = pai[pai["column"] == "baseline_acc"]["value"].astype(float).mean()
    best = pai[pai["column"] == "pags_best_acc"]["value"].astype(float).mean()
    return f"baseline {base:.1f}% -> best {best:.1f}%"


def verdict_rows(csv: Path) -> list[dict]:
    """Per comparison the table holds: cells, mean difference over them (points), cells whose 95% interval lies
    above / below 0 (only cells of at least MIN_SEEDS seeds claim anything), and seeds with a positive difference
    of all."""
    cells = pd.read_csv(csv)
    pai = cells[cells["pretrain_iters"].notna()]
    rows = []
    for column, comparison in COMPARISONS:
        found = pai[pai["column"] == column]  # a missing run is a cell without a value: counted, never averaged
        if found.empty or found["value"].isna().all():
            continue
        with_interval = found[found["low"].notna() & (found["n"] >= MIN_SEEDS)]  # fewer seeds: shown, not claimed
        rows.append({
            "comparison": comparison, "cells": len(found), "mean": float(found["value"].astype(float).mean()),
            "cells_positive": int((found["value"].astype(float) > 0).sum()),
            "max_seeds": int(found["n"].max()),
            "with_interval": len(with_interval),
            "above": int((with_interval["low"] > 0).sum()), "below": int((with_interval["high"] < 0).sum()),
            "positive": int(found["positive"].fillna(0).sum()), "seeds": int(found["n"].sum()),
        })
    return rows


def interval_text(row: Mapping) -> str:
    """'above 0 in 1/4, below in 0/4' (cells whose 95% t interval excludes 0), or why there is none."""
    if not row["with_interval"]:
        return "none (1 seed)" if row["max_seeds"] < 2 else f"none claimed ({row['max_seeds']} seeds < {MIN_SEEDS})"
    n = row["with_interval"]
    return f"above 0 in {row['above']}/{n}, below in {row['below']}/{n}"


def verdict_table(tables: Mapping[str, list[dict]]) -> list[list[str]]:
    """The verdict rows as text cells under VERDICT_HEADER, one line per table and comparison."""
    return [[name, row["comparison"], f"{row['mean']:+.2f}", interval_text(row), f"{row['positive']}/{row['seeds']}"]
            for name, rows in tables.items() for row in rows]


def aligned(header: tuple[str, ...], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    right = {2, 4}  # numbers
    def line(cells) -> str:
        return indent + "  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                                  for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()
    return [line(header)] + [line(row) for row in rows]


def screen(config: Mapping, report: str, log: str | None = None) -> list[str]:
    """The last screen of a run: artefacts, then the verdict table, then how to read it (within 40 lines)."""
    results = Path(config["results"])
    lines = ["", "=== fullspectrum: artefacts ==="]
    for label, path in artefacts(config, report):
        status = "ok " if path.exists() else "MISSING"
        extra = f"  {headline(path.with_suffix('.csv'))}" if path.suffix == ".md" and path.exists() else ""
        lines.append(f"  [{status}] {label:9s} {path}{extra}")
    tables = config.get("tables", {})
    if tables:
        lines.append(f"  {'':10s}beside each table: .csv (every value), .tex, .html (as the report shows it)")
    lines.append(f"  logs: {results}/logs/ and beside each result" + (f"; Snakemake's job output: {log}" if log else ""))
    lines += ["", "=== did the graph criterion help? (PAGS/PEGS, paired over seeds, per table) ==="]
    rows, missing = {}, []
    for name in tables:
        csv = results / "tables" / f"{name}.csv"
        if csv.exists():
            rows[name] = verdict_rows(csv)
        else:
            missing.append(name)
    lines += aligned(VERDICT_HEADER, verdict_table(rows))
    if missing:
        lines.append(f"  MISSING: {', '.join(missing)}")
    lines += ["  mean: difference in accuracy points, averaged over the table's cells; interval: cells whose 95% t",
              "  interval over seeds lies above or below 0; seeds > 0: seeds with a positive difference, of all."]
    if not comparable_with_paper(config):
        lines.append("  These numbers are not comparable with the paper's (its CIFAR grid at width 64, density 0.01).")
    lines.append("")
    return lines


def comparable_with_paper(config: Mapping) -> bool:
    """Whether any table runs a paper setting (a paper table at the paper's width): only then do paper numbers
    appear beside the reproduced ones."""
    return config.get("model_width") == 64 and any(t.get("paper_table") for t in config.get("tables", {}).values())


PROGRESS = re.compile(r"^(\d+) of (\d+) steps \((\d+)%\) done")
TROUBLE = re.compile(r"^(Error in rule|Error:|error:|WorkflowError|MissingInputException|Exiting because)")


def follow(lines: Iterable[str], out: TextIO, tty: bool) -> int:
    """Snakemake's output reduced to one progress line: rewritten in place on a terminal, else printed at every
    tenth of the jobs; lines that report an error pass through. Returns the jobs done."""
    done, shown = 0, -1
    for line in lines:
        match = PROGRESS.match(line)
        if match:
            done, total, percent = (int(g) for g in match.groups())
            text = f"  {done} of {total} jobs done ({percent}%)"
            if tty:
                out.write("\r" + text)
            elif percent // 10 > shown or done == total:
                shown = percent // 10
                out.write(text + "\n")
            out.flush()
        elif TROUBLE.match(line.strip()):
            out.write(("\n" if tty and done else "") + "  " + line.rstrip() + "\n")
            out.flush()
    if tty and done:
        out.write("\n")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", "--config", dest="config", nargs="+", default=["config.yaml"],
                        help="config files laid over config.yaml, as with snakemake --configfile")
    parser.add_argument("--report", default="report.html")
    parser.add_argument("--log", help="where Snakemake's job output went (named on the screen)")
    parser.add_argument("--follow", action="store_true",
                        help="read Snakemake's output on stdin and show only its progress and errors")
    args = parser.parse_args()
    if args.follow:
        follow(sys.stdin, sys.stdout, sys.stdout.isatty())
        return
    print("\n".join(screen(merged_config(args.config), args.report, args.log)))


if __name__ == "__main__":
    main()
