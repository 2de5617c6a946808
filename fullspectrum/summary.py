"""One screen after a run: where each artefact is, and the headline numbers of each table.

    python -m fullspectrum.summary --configfile config/embedded.yaml [--report report.html]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml


def artefacts(config: dict, report: str) -> list[tuple[str, Path]]:
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
    return f"baseline {base:.1f}% -> PAGS/PEGS best {best:.1f}% (best-epoch, mean over rows)"


def verdict(csv: Path) -> str:
    """One line: did PAGS/PEGS best beat the baseline and the control, and at equal density the baseline, cell by
    cell, with the 95% intervals."""
    cells = pd.read_csv(csv)
    pai = cells[cells["pretrain_iters"].notna()]
    parts = []
    for column, against in (("best_minus_baseline", "best − baseline"), ("best_minus_control", "best − control best"),
                            ("equal_minus_baseline", "equal-density best − baseline")):
        rows = pai[pai["column"] == column]
        if rows.empty:
            continue
        values = rows["value"].astype(float)
        text = f"{against} {values.mean():+.2f} points on average, > 0 in {int((values > 0).sum())}/{len(rows)}"
        if rows["low"].notna().any():
            above, below = int((rows["low"] > 0).sum()), int((rows["high"] < 0).sum())
            text += (f"; 95% interval above 0 in {above}, below 0 in {below} "
                     f"(t over {int(rows['n'].max())} seeds)")
        else:
            text += " (n = 1 seed: no intervals)"
        parts.append(text)
    return " | ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configfile", "--config", dest="config", default="config.yaml")
    parser.add_argument("--report", default="report.html")
    args = parser.parse_args()
    base = yaml.safe_load(Path("config.yaml").read_text())
    config = {**base, **yaml.safe_load(Path(args.config).read_text())}
    print("\n=== fullspectrum: artefacts ===")
    for label, path in artefacts(config, args.report):
        status = "ok " if path.exists() else "MISSING"
        extra = ""
        if path.suffix == ".md" and path.exists():
            extra = "  " + headline(path.with_suffix(".csv"))
        print(f"  [{status}] {label:9s} {path}{extra}")
        if path.suffix == ".md" and path.exists():
            for side in (".csv", ".tex"):
                print(f"  {'':14s}{path.with_suffix(side)}")
    print(f"  logs: {config['results']}/logs/ ; provenance: beside each result (metrics.json, *.pt meta)")
    print("\n=== did the graph criterion help? (PAGS/PEGS best, per cell; tables hold each interval) ===")
    for name in config.get("tables", {}):
        csv = Path(config["results"]) / "tables" / f"{name}.csv"
        print(f"  {name}: {verdict(csv) if csv.exists() else 'MISSING'}")
    print()


if __name__ == "__main__":
    main()
