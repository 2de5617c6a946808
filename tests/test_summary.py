"""The last screen of `make demo`: artefacts, then the verdicts as an aligned table, within 40 lines."""

import io

import pandas as pd

from fullspectrum import summary
from fullspectrum.plan import merged_config

from conftest import ROOT

# Two PaI cells of a table in long format (tables.assemble's columns that the verdicts read), and an EB row.
CELLS = [
    # block, iters, method, column, value, low, high, positive, n
    ("ResNet18@0", 0, "snip", "baseline_acc", 90.0, None, None, None, 2),
    ("ResNet18@0", 0, "snip", "pags_best_acc", 91.5, None, None, None, 2),
    ("ResNet18@0", 0, "snip", "best_minus_baseline", 1.5, 0.5, 2.5, 2, 2),
    ("ResNet18@0", 0, "snip", "best_minus_control", -0.25, -3.0, 2.5, 1, 2),
    ("ResNet18@0", 0, "erk", "baseline_acc", 88.0, None, None, None, 2),
    ("ResNet18@0", 0, "erk", "pags_best_acc", 87.0, None, None, None, 2),
    ("ResNet18@0", 0, "erk", "best_minus_baseline", -1.0, -1.8, -0.2, 0, 2),
    ("ResNet18@0", 0, "erk", "best_minus_control", 0.75, -1.0, 2.5, 1, 2),
    ("ResNet18", None, "eb", "baseline_acc", 85.0, None, None, None, 1),
]


def write_tables(results, names, seeds=None):
    frame = pd.DataFrame(CELLS, columns=["block", "pretrain_iters", "method", "column", "value", "low", "high",
                                         "positive", "n"])
    if seeds is not None:  # the PaI cells pooled over `seeds` seeds
        frame.loc[frame["pretrain_iters"].notna(), "n"] = seeds
    (results / "tables").mkdir(parents=True, exist_ok=True)
    for name in names:
        frame.to_csv(results / "tables" / f"{name}.csv", index=False)
        (results / "tables" / f"{name}.md").write_text("table")


def test_verdict_rows_count_cells_intervals_and_seeds(tmp_path):
    write_tables(tmp_path, ["table1"])
    rows = {r["comparison"]: r for r in summary.verdict_rows(tmp_path / "tables" / "table1.csv")}
    best = rows["best − baseline"]
    assert best["mean"] == 0.25 and best["cells"] == 2 and best["cells_positive"] == 1
    # two seeds: the intervals are in the tables, but nothing is claimed from fewer than 5 seeds
    assert (best["above"], best["below"], best["with_interval"]) == (0, 0, 0)
    assert (best["positive"], best["seeds"]) == (2, 4)
    assert summary.interval_text(best) == "none claimed (2 seeds < 5)"
    assert "equal-density best − baseline" not in rows  # the option was off: no row, not a row of zeros
    write_tables(tmp_path, ["table1"], seeds=5)
    best = {r["comparison"]: r for r in summary.verdict_rows(tmp_path / "tables" / "table1.csv")}["best − baseline"]
    assert (best["above"], best["below"], best["with_interval"]) == (1, 1, 2)
    assert summary.interval_text(best) == "above 0 in 1/2, below in 1/2"


def test_the_last_screen_fits_40_lines_with_an_aligned_verdict_table(tmp_path):
    config = merged_config([str(ROOT / "config" / "embedded.yaml")])
    config["results"] = str(tmp_path)
    write_tables(tmp_path, config["tables"])
    lines = summary.screen(config, str(tmp_path / "report.html"), log="results/embedded/snakemake.log")
    assert len(lines) <= 40
    text = "\n".join(lines)
    assert "Snakemake's job output: results/embedded/snakemake.log" in text
    assert "not comparable with the paper's" in text
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["table", "comparison"])
    table = lines[header:header + 1 + 2 * len(config["tables"])]
    assert all(len(line) < 110 for line in table)
    # aligned: every column starts at the same offset on every line
    starts = [table[0].index(name) for name in ("comparison", "mean", "interval", "seeds > 0")]
    for line in table[1:]:
        assert line[starts[0] - 2:starts[0]] == "  " and line[starts[0]] != " "
        assert line[starts[2]:].startswith(("above", "none"))
    first = table[1].split("  ")
    assert table[1].startswith("  table1") and "best − baseline" in table[1] and "+0.25" in first[-3] + table[1]
    assert table[1].rstrip().endswith("2/4")


def test_follow_keeps_one_progress_line_and_the_errors():
    log = ["Building DAG of jobs...", "Select jobs to execute...", "1 of 4 steps (25%) done", "rule x:",
           "2 of 4 steps (50%) done", "Error in rule table:", "4 of 4 steps (100%) done"]
    out = io.StringIO()
    assert summary.follow(log, out, tty=True) == 4
    text = out.getvalue()
    assert text.count("\n") == 3 and "\r  4 of 4 jobs done (100%)" in text and "  Error in rule table:" in text
    out = io.StringIO()
    summary.follow(log, out, tty=False)
    assert out.getvalue().splitlines() == ["  1 of 4 jobs done (25%)", "  2 of 4 jobs done (50%)",
                                           "  Error in rule table:", "  4 of 4 jobs done (100%)"]
