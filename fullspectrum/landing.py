"""The landing page of Snakemake's report: what ran, with which settings, the verdicts, and how to read the rest.

    landing_page(config, results) -> reStructuredText

`config` is the merged workflow config (config.yaml with any --configfile laid over it), `results` the folder its
tables were written to (`config["results"]`). The page lists the data and models, the PaI methods and pretraining
points, the density, the search size, the training epochs and the seeds; then per table the verdict rows of
`fullspectrum.summary.verdict_rows` as a small table; then how to read the tables; and whether the numbers can be
set beside the paper's. Any config with `tables` (the paper grid, the embedded default, a study) gets the same
page; `extra` appends sections of the caller's own (reStructuredText), such as `study_section(config, study.csv)`,
the study's verdict, which the `landing` rule adds for a config with `study`.

The workflow's `landing` rule (workflow_scripts/landing.py) writes it to `{results}/report/landing.rst`, which the
`report:` statement of rules/report.smk makes the report's description.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

from . import workflow as wf
from .summary import VERDICT_HEADER, comparable_with_paper, verdict_rows, verdict_table

TITLE = "Don't Just Prune by Magnitude! Your Mask Topology is Another Secret Weapon (NeurIPS 2023)"
DATASETS = {
    "digits": "scikit-learn's handwritten digits (1,797 8x8 images resized to 3x16x16, a stratified 1,437/360 split)",
    "cifar10": "CIFAR-10 (50,000 / 10,000 32x32 images)",
    "cifar100": "CIFAR-100 (50,000 / 10,000 32x32 images)",
}
LABELS = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "erk": "ERK", "random": "Random",
          "magnitude": "Magnitude", "eb": "Early-Bird", "lth": "LTH", "resnet18": "ResNet18", "resnet34": "ResNet34"}


def _names(values: Iterable) -> str:
    return ", ".join(LABELS.get(v, str(v)) for v in values) or "none"


def _sorted_unique(values: Iterable) -> list:
    return sorted(set(values), key=lambda v: (str(type(v)), v))


def _list_table(title: str, header: Iterable[str] | None, rows: list[list[str]], widths: str | None = None) -> str:
    """An rst list-table (no cell may be empty: docutils wants one paragraph, so '–' stands in)."""
    lines = [f".. list-table:: {title}", "   :class: landing"]
    if header is not None:
        lines.append("   :header-rows: 1")
        rows = [list(header)] + rows
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in rows:
        for index, cell in enumerate(row):
            text = str(cell).strip() or "–"
            lines.append(f"   {'*' if index == 0 else ' '} - {_rst_text(text)}")
    return "\n".join(lines) + "\n"


def _rst_text(text: str) -> str:
    """Plain text safe in rst and in the Jinja template Snakemake renders the page through."""
    for char in ("\\", "*", "`", "|", "_"):
        text = text.replace(char, "\\" + char)
    return text.replace("{", "(").replace("}", ")")


def settings_rows(config: Mapping) -> list[list[str]]:
    """What ran: data, models, methods, pretraining, density, search, training, seeds, baselines, figures."""
    runs, baselines = wf.grid_runs(config), wf.baseline_runs(config)
    everything = runs + baselines
    datasets = _sorted_unique(r.dataset for r in everything)
    searches = [wf.resolved_search(config, run) for run in runs]
    sizes = _sorted_unique((s["population"], s["snapshot_every"]) for s in searches)
    size_text = "; ".join(f"{p:,} candidates, a snapshot every {e}" for p, e in sizes) or "none"
    caps = _sorted_unique(str(s["train_cap"]) for s in searches)
    trained = "every saved snapshot trained" if caps in (["None"], []) else f"the newest {'/'.join(caps)} trained"
    extras = [name for key, name in (("control", "a no-criterion control"), ("equal_density", "equal-density readings"))
              if any(s.get(key) for s in searches)]
    train = config["train"]
    optimiser = f"SGD{' (Nesterov)' if train.get('nesterov') else ''}, lr {train['lr']}, batch {train['batch_size']}"
    seeds = _sorted_unique(r.seed for r in runs)
    baseline_seeds = _sorted_unique(r.seed for r in baselines)
    rows = [
        ["data", "; ".join(DATASETS.get(d, d) for d in datasets)],
        ["models", f"{_names(_sorted_unique(r.model for r in everything))} at width {config['model_width']} "
                   f"(the paper: 64), {config.get('model_init', 'authors')} initialisation"],
        ["PaI methods", _names(_sorted_unique(r.method for r in runs))],
        ["pretraining", ", ".join(f"@{i}" for i in _sorted_unique(r.iters for r in runs))
         + " iterations (@0: PAGS at the initialisation; @N: PEGS after N dense iterations)"],
        ["density", ", ".join(str(d) for d in _sorted_unique(r.density for r in everything)) + " (the paper: 0.01)"],
        ["search (PAGS/PEGS)", f"{size_text}; {trained}" + (f"; with {' and '.join(extras)}" if extras else "")],
        ["training", f"{train['epochs']} epochs, {optimiser}, {train.get('schedule', 'multistep')} schedule; "
                     "best-epoch readout (the authors')"],
        ["seeds", f"{_names(seeds)} for every PaI cell ({len(seeds)})"],
        ["baselines", f"{_names(_sorted_unique(r.method for r in baselines))}"
                      + (f" on seed {_names(baseline_seeds)}" if baselines else "")],
    ]
    figures = config.get("figures", {})
    if figures:
        tickets = {name: wf.itop_snapshot_count(config, spec["dataset"]) for name, spec in figures.items()}
        rows.append(["figures (ITOP)", "; ".join(
            f"{name}: {LABELS.get(spec['model'], spec['model'])} on {spec['dataset']}, {tickets[name]} tickets"
            for name, spec in figures.items())])
    return rows


def verdict_section(config: Mapping, results: str | Path) -> str:
    tables, missing = {}, []
    for name in config.get("tables", {}):
        csv = Path(results) / "tables" / f"{name}.csv"
        if csv.exists():
            tables[name] = verdict_rows(csv)
        else:
            missing.append(name)
    rows = verdict_table(tables)
    text = ["Verdicts", "--------", "",
            "Did the graph criterion help? Per table, each comparison paired within seeds over the table's "
            "PAGS/PEGS cells:", ""]
    if rows:
        text.append(_list_table("", VERDICT_HEADER, rows, widths="8 26 8 30 10"))
    else:
        text += ["No table has been made yet.", ""]
    if missing:
        text += [f"Not made yet: {', '.join(missing)}.", ""]
    text += ["*mean*: the difference in accuracy points, averaged over the table's cells. *interval*: the cells whose "
             "95% t interval over seeds lies above or below 0 (with one seed a cell has none). *seeds > 0*: the seeds "
             "in which the difference was positive, of all the cells' seeds.", ""]
    return "\n".join(text)


HOW_TO_READ = """How to read the tables
----------------------

- **Tables** (category *Tables*, rendered): one block per model and pretraining point (``ResNet18@10`` = PEGS after
  10 dense iterations; ``@0`` = PAGS at the initialisation), one line per PaI method, then Early-Bird and LTH.
- **Baseline** is the PaI mask trained; **best** the highest accuracy over the search's trained snapshots;
  **avg ± std** over the snapshots at least as good as the baseline when more than one is, otherwise over all.
  These are best-epoch test accuracies, the authors' readout: optimistic, since the epoch is picked on the test set
  (the second table repeats the readout on final-epoch accuracies).
- With several seeds a cell is the mean over seeds ± the std over seeds. **Best − baseline**, **best − control
  best** and **equal-density best − baseline** are paired within seeds: mean [95% t interval], seeds > 0, and
  ``*`` where the interval excludes 0.
- **Control**: as many of the search's unfiltered candidates as it saved snapshots, trained the same way; if the
  best snapshot does not beat the best control, the gain is the best-of-K effect, not the criterion.
  **Equal density**: each selection put back at the baseline's weight count. **†** marks selections more than 1%
  denser than their baseline.
- **paper (Δ)** columns appear only where the setting (dataset, model at width 64, method, pretraining, density) is
  the paper's. Every value, with its spread, seed count, interval and source files, is in the long CSV (category
  *Table data*). Definitions: ``docs/design.md`` in the repository.
"""


def comparability(config: Mapping) -> str:
    lines = ["Comparable with the paper?", "--------------------------", ""]
    datasets = {r.dataset for r in wf.grid_runs(config) + wf.baseline_runs(config)}
    if comparable_with_paper(config):
        lines.append("This is the paper's setting where a table names a paper table: the paper's reported number and "
                     "the difference sit beside each reproduced one there, and nowhere else.")
    else:
        why = []
        if "digits" in datasets:
            why.append("digits, not CIFAR")
        if config["model_width"] != 64:
            why.append(f"width {config['model_width']}, not 64")
        densities = {r.density for r in wf.grid_runs(config)}
        if densities != {0.01}:
            why.append(f"density {', '.join(map(str, sorted(densities)))}, not 0.01")
        lines.append(f"**No.** These numbers ({'; '.join(why) or 'not the paper’s tables'}) show that every stage "
                     "of the chain works; they are not comparable with the paper's numbers, and the tables print "
                     "no paper number beside them. The paper's numbers need the GPU grid of ``config.yaml``.")
    return "\n".join(lines) + "\n"


STUDY_HEADER = ("comparison", "method", "seeds", "mean", "95% interval", "seeds > 0", "p (Holm)", "verdict")


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _signed(value) -> str:
    value = _finite(value)
    return "–" if value is None else f"{value:+.2f}"


def _p_value(value) -> str:
    value = _finite(value)
    return "–" if value is None else f"{value:.3f}" if value >= 0.001 else "<0.001"


def study_section(config: Mapping, csv: str | Path) -> str:
    """The study's verdict (config `study`, the verdict table study.csv of rule study_verdict) as a section of the
    landing page: the question, the pre-registered rule, then one row per comparison and method (pooled last)."""
    settings = config["study"]
    title = "The study's verdict"
    text = [title, "-" * len(title), "",
            f"The question: {settings['title']}. Pre-registered (README, \"The study\"): differences in accuracy "
            f"points paired over seeds, Student's 95% t interval, Holm-adjusted p-values across the methods; "
            f"*supported* when p < {settings['alpha']} and the mean is above 0, *contradicted* when the difference "
            f"is shown to be below the smallest effect of interest ({settings['sesoi']} points), otherwise "
            f"*inconclusive*; *no verdict* with fewer than {settings['min_seeds']} seeds. The primary comparisons "
            "are against as many no-criterion control masks; the category *Study* holds the whole table "
            "(``study.md``: Figures 1-2's claim, the training curves, every seed) and each seed's differences.", ""]
    if not Path(csv).exists():
        return "\n".join(text + ["The study's verdict has not been computed yet.", ""])
    import pandas as pd

    table = pd.read_csv(csv)
    rows = [[f"{row['label']} ({row['role']})", str(row["method"]), str(row["n"]), _signed(row["mean"]),
             f"[{_signed(row['low'])}, {_signed(row['high'])}]", f"{row['positive']}/{row['n']}",
             _p_value(row["p_zero_adj"]), str(row["verdict"]).upper()]
            for row in table.to_dict("records")]
    text.append(_list_table("", STUDY_HEADER, rows, widths="30 8 6 8 16 8 8 14"))
    return "\n".join(text)


def landing_page(config: Mapping, results: str | Path, extra: str = "") -> str:
    """The report's landing page (reStructuredText) for `config`, whose tables are under `results`/tables."""
    what = ("The workflow rebuilt the paper's chain: dense pretraining, pruning-at-initialisation (PaI) masks, the "
            "PAGS/PEGS search that keeps the candidate layers with the better graph metrics, sparse training of the "
            "baseline and of every saved snapshot, the Early-Bird and LTH baselines, and the ITOP tickets of the "
            "figures. The categories on the left hold the tables (rendered), their long CSVs and the figures; "
            "*Workflow* shows the rule graph.")
    parts = [TITLE, "=" * len(TITLE), "", "What ran", "--------", "", what, "",
             _list_table("Settings", None, settings_rows(config), widths="20 80"), verdict_section(config, results),
             HOW_TO_READ, comparability(config)]
    if extra:
        parts.append(extra.rstrip() + "\n")
    return "\n".join(parts)
