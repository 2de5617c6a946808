"""Table assembly on fixed result files: hand-checked numbers, missing runs, the paper column, LaTeX sanity."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from fullspectrum.analysis import tables


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.fixture
def sources(tmp_path):
    def trained(name, best, final):
        return write(tmp_path / name / "metrics.json", {"final_acc": final, "best_acc": best, "density": 0.01})

    def searched(name, accs, control=(), equal=()):
        as_masks = lambda pairs: [{"best_acc": b, "final_acc": f, "density": 0.0102} for b, f in pairs]  # noqa
        return write(tmp_path / name / "results.json",
                     {"masks": as_masks(accs), "control": as_masks(control), "equal": as_masks(equal),
                      "accuracy": {}})

    return [
        {"model": "resnet18", "iters": 100, "method": "snip", "kind": "pai", "seeds": [0, 1],
         "baseline": [trained("b0", 90.0, 89.0), trained("b1", 92.0, 91.0)],
         "search": [searched("s0", [(91.0, 90.0), (93.0, 88.0), (89.5, 88.5)], [(90.5, 89.0), (88.0, 87.0)],
                             [(92.0, 90.0), (91.5, 89.0), (89.0, 88.0)]),
                    searched("s1", [(91.0, 90.5)], [(92.5, 90.0)], [(90.0, 89.0)])],
         "cost": []},
        {"model": "resnet18", "iters": 100, "method": "grasp", "kind": "pai", "seeds": [0],
         "baseline": [str(tmp_path / "missing" / "metrics.json")], "search": [str(tmp_path / "nope.json")],
         "cost": []},
        {"model": "resnet18", "iters": 100, "method": "erk", "kind": "pai", "seeds": [0],
         "baseline": [trained("e0", 90.0, 90.0)], "search": [searched("es0", [(91.0, 91.0), (85.0, 85.0)])],
         "cost": []},
        {"model": "resnet18", "iters": None, "method": "lth", "kind": "baseline", "seeds": [0],
         "baseline": [trained("lth", 91.5, 91.0)], "search": [],
         "cost": [write(tmp_path / "lth" / "cost.json", {"pretrain_epochs": 640.0})]},
    ]


def cell(cells, method, column):
    row = cells[(cells["method"] == method) & (cells["column"] == column)]
    assert len(row) == 1
    return row.iloc[0]


CIFAR10 = {"dataset": "cifar10", "density": 0.01, "paper_table": 1}


def test_hand_checked_cells_and_paper_column(sources):
    cells = tables.assemble("table1", CIFAR10, sources, train_epochs=250, steps_per_epoch=391,
                            reported=tables.load_reported())
    # per seed, best-epoch: seed 0 reads best 93, avg of [91, 93] = 92; seed 1 (none >= 92) best 91, avg 91
    base = cell(cells, "snip", "baseline_acc")
    assert base["value"] == pytest.approx(91.0) and base["spread"] == pytest.approx(2 ** 0.5)
    assert base["n"] == 2 and base["paper"] == pytest.approx(90.39)
    assert base["difference"] == pytest.approx(91.0 - 90.39)
    best = cell(cells, "snip", "pags_best_acc")
    assert best["value"] == pytest.approx(92.0) and best["spread"] == pytest.approx(2 ** 0.5)
    avg = cell(cells, "snip", "pags_avg_acc")
    assert avg["value"] == pytest.approx(91.5) and avg["spread"] == pytest.approx(0.5 ** 0.5) and avg["n"] == 3
    assert avg["paper"] == pytest.approx(90.06) and avg["paper_spread"] == pytest.approx(0.17)
    # final epochs, seed 0: only 90.0 >= 89.0, so all three pool: (90 + 88 + 88.5) / 3; seed 1: 90.5
    final_avg = cell(cells, "snip", "pags_avg_final_acc")
    assert final_avg["value"] == pytest.approx(((90.0 + 88.0 + 88.5) / 3 + 90.5) / 2)
    assert pd.isna(final_avg["paper"])  # the paper reports best-epoch numbers only
    assert cell(cells, "snip", "baseline_final_acc")["value"] == pytest.approx(90.0)
    # one seed: the avg's spread is the authors' std over the pooled snapshots ([91, 85]: only 91 >= 90)
    erk_avg = cell(cells, "erk", "pags_avg_acc")
    assert erk_avg["value"] == pytest.approx(88.0) and erk_avg["spread"] == pytest.approx(np.std([91, 85], ddof=1))
    # the control read out the same way: seed 0 [90.5, 88] (only 90.5 >= 90: all pooled), seed 1 [92.5]
    assert cell(cells, "snip", "control_best_acc")["value"] == pytest.approx((90.5 + 92.5) / 2)
    assert cell(cells, "snip", "control_avg_acc")["value"] == pytest.approx(((90.5 + 88.0) / 2 + 92.5) / 2)
    # paired over seeds: best - baseline = [93 - 90, 91 - 92]; best - control best = [93 - 90.5, 91 - 92.5]
    for column, diffs in (("best_minus_baseline", [3.0, -1.0]), ("best_minus_control", [2.5, -1.5])):
        diff = cell(cells, "snip", column)
        low, high = scipy_stats.t.interval(0.95, 1, loc=np.mean(diffs), scale=scipy_stats.sem(diffs))
        assert diff["value"] == pytest.approx(np.mean(diffs)) and diff["n"] == 2 and diff["positive"] == 1
        assert (diff["low"], diff["high"]) == (pytest.approx(low), pytest.approx(high)) and pd.isna(diff["flag"])
    # the equal-density selections read out the same way: seed 0 [92, 91.5, 89] -> best 92, avg of [92, 91.5];
    # seed 1 [90] -> 90; paired with the baselines [90, 92]
    assert cell(cells, "snip", "equal_best_acc")["value"] == pytest.approx((92.0 + 90.0) / 2)
    assert cell(cells, "snip", "equal_avg_acc")["value"] == pytest.approx(((92.0 + 91.5) / 2 + 90.0) / 2)
    equal_diff = cell(cells, "snip", "equal_minus_baseline")
    assert equal_diff["value"] == pytest.approx(0.0) and equal_diff["positive"] == 1
    low, high = scipy_stats.t.interval(0.95, 1, loc=0.0, scale=scipy_stats.sem([2.0, -2.0]))
    assert (equal_diff["low"], equal_diff["high"]) == (pytest.approx(low), pytest.approx(high))
    assert "Equal-density best − baseline" in tables.to_markdown(cells, "c")
    # one seed: no interval, "n = 1"
    erk_diff = cell(cells, "erk", "best_minus_baseline")
    assert erk_diff["value"] == 1.0 and pd.isna(erk_diff["low"])
    assert "+1.00 (n = 1)" in tables.to_markdown(cells, "c")
    # 2% more weights than the baseline: marked
    assert cell(cells, "snip", "pags_density")["flag"] == "†"
    assert cell(cells, "snip", "baseline_density")["value"] == pytest.approx(0.01)
    # 100 iterations of 391 per epoch are 0.26 epochs of 250: "low"; LTH spent several full runs: "very high"
    assert cell(cells, "snip", "pretrain_cost")["value"] == "low"
    assert cell(cells, "lth", "pretrain_cost")["value"] == "very_high"
    lth = cell(cells, "lth", "baseline_acc")
    assert lth["value"] == 91.5 and lth["paper"] == pytest.approx(91.22)
    assert cell(cells, "lth", "baseline_final_acc")["value"] == 91.0


def test_the_paper_column_refuses_another_density_or_width(sources):
    reported = tables.load_reported()
    assert tables.paper_row(reported, 1, "cifar10", "resnet18", "snip", 100, 0.01, 64)["baseline_acc"] == 90.39
    assert tables.paper_row(reported, 1, "cifar10", "resnet18", "snip", 100, 0.05, 64) is None
    assert tables.paper_row(reported, 1, "cifar10", "resnet18", "snip", 100, 0.01, 8) is None
    assert tables.paper_row(reported, 1, "cifar10", "resnet18", "snip", 500, 0.01, 64) is None
    cells = tables.assemble("table1", {**CIFAR10, "density": 0.05}, sources, 250, 391, reported)
    assert cells["paper"].isna().all() and cells["difference"].isna().all()


def test_missing_runs_are_shown_as_missing_not_zero(sources):
    cells = tables.assemble("table1", CIFAR10, sources, 160, 391, tables.load_reported())
    for column in tables.COLUMNS[:3] + tables.FINAL_COLUMNS:
        row = cell(cells, "grasp", column)
        assert pd.isna(row["value"]) and row["n"] == 0 and pd.isna(row["difference"])
    markdown = tables.to_markdown(cells, "caption")
    grasp_line = next(line for line in markdown.splitlines() if line.startswith("| GraSP"))
    assert "0.00" not in grasp_line and "nan" not in grasp_line and "–" in grasp_line


def test_a_table_matching_no_paper_table_shows_only_reproduced_numbers(sources):
    cells = tables.assemble("table1", {"dataset": "digits", "density": 0.2, "paper_table": None}, sources, 3, 12,
                            None)
    assert cells["paper"].isna().all() and cells["difference"].isna().all()


def test_cost_labels():
    assert tables.cost_label(0, 160) == "none"
    assert tables.cost_label(1.28, 160) == "low"
    assert tables.cost_label(20, 160) == "high"
    assert tables.cost_label(160, 160) == "very_high"


def test_latex_is_balanced_and_uses_booktabs(sources):
    cells = tables.assemble("table1", CIFAR10, sources, 160, 391, tables.load_reported())
    latex = tables.to_latex(cells, "Results on CIFAR-10 & more_things 50%", "tab:table1")
    assert latex.count("{") == latex.count("}")
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert r"\&" in latex and r"more\_things" in latex and r"50\%" in latex
    assert r"$\pm$" in latex
    environments = latex.split(r"\end{table}")[:-1]
    assert len(environments) == 2 and r"\label{tab:table1-more}" in environments[1]
    for environment in environments:
        header = next(line for line in environment.splitlines() if line.startswith("Method"))
        columns = environment.split(r"\begin{tabular}{")[1].split("}")[0]
        for line in environment.splitlines():
            if line.endswith(r"\\") and "multicolumn" not in line:
                assert line.count("&") == len(columns) - 1, line
        assert header.count("&") == len(columns) - 1


def markdown_tables(markdown: str) -> list[list[list[str]]]:
    """Each Markdown table as rows of cells (header first, the separator left out)."""
    out, current = [], None
    for line in markdown.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                out.append(current)
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip("|").split("|")])
        else:
            current = None
    return out


def test_the_main_table_has_the_papers_columns_and_the_verdicts_in_at_most_12(sources):
    cells = tables.assemble("table1", CIFAR10, sources, train_epochs=250, steps_per_epoch=391,
                            reported=tables.load_reported())
    main, more = markdown_tables(tables.to_markdown(cells, "c"))
    assert main[0] == ["Method", "Baseline acc. %", "paper (Δ)", "PAGS/PEGS best %", "paper (Δ)", "PAGS/PEGS avg. %",
                       "paper (Δ)", "Pre-training cost", "paper", "Best − baseline", "Best − control best",
                       "Equal-density best − baseline"]
    assert len(main[0]) <= tables.MAX_MAIN_COLUMNS and all(len(row) == len(main[0]) for row in main)
    snip = next(row for row in main if row[0] == "SNIP")
    assert snip[1] == "91.00 ± 1.41" and snip[2] == "90.39 (+0.61)"  # the paper's SNIP baseline, Table 1
    assert snip[6] == "90.06 ± 0.17 (+1.44)" and snip[7] == "low"
    assert more[0] == ["Method", "Control best %", "Control avg. %", "Equal-density best %", "Equal-density avg. %",
                       "Baseline density", "PAGS/PEGS density", "Baseline final %", "PAGS/PEGS best final %",
                       "PAGS/PEGS avg. final %"]
    # every value of both tables stays in the long CSV
    shown = set(tables.MAIN_COLUMNS + tables.MORE_COLUMNS)
    assert set(cells["column"]) <= shown and set(tables.COLUMNS) == shown


def test_without_paper_numbers_the_main_table_has_no_paper_columns(sources):
    cells = tables.assemble("table1", {"dataset": "digits", "density": 0.2, "paper_table": None}, sources, 3, 12,
                            None)
    main = markdown_tables(tables.to_markdown(cells, "c"))[0]
    assert "paper (Δ)" not in main[0] and "paper" not in main[0] and len(main[0]) == 8


def test_the_html_page_renders_both_tables_escaped(sources):
    cells = tables.assemble("table1", CIFAR10, sources, 250, 391, tables.load_reported())
    page = tables.to_html(cells, "Results <on> CIFAR-10 & co", "Table 1")
    assert page.startswith("<!DOCTYPE html>") and page.count("<table>") == 2 and page.count("</table>") == 2
    assert "Results &lt;on&gt; CIFAR-10 &amp; co" in page and "<on>" not in page
    assert "<th>paper (Δ)</th>" in page and "<td>90.39 (+0.61)</td>" in page
    assert page.count('<tr class="block">') == 2 * len(set(cells["block"]))


def test_reported_results_cover_the_papers_three_tables():
    reported = tables.load_reported()
    assert sorted(reported["table"].unique()) == [1, 2, 3]
    assert len(reported) == 32


def test_collected_search_results_pair_each_selection_with_its_equal_density_mask(tmp_path):
    from fullspectrum.analysis.collect import collect_mask_results

    def trained(name, acc):
        directory = tmp_path / name
        write(directory / "metrics.json", {"final_acc": acc, "best_acc": acc + 1, "density": 0.2})
        (directory / "graph.csv").write_text("layer,delta_r,lambda_gap,delta_r_imdb,lambda_imdb,l2\n"
                                             "model_mean,1,2,3,4,5\n")
        return directory

    dirs = [trained(name, acc) for name, acc in
            (("select10", 80.0), ("select2", 82.0), ("select1", 81.0), ("equal2", 70.0), ("control1", 60.0))]
    results = collect_mask_results(dirs, equal_density=True)
    assert [m["final_acc"] for m in results["masks"]] == [81.0, 82.0, 80.0]  # select2 before select10
    assert [m["final_acc"] for m in results["equal"]] == [81.0, 70.0, 80.0]  # equal2 stands in for select2
    assert [m["final_acc"] for m in results["control"]] == [60.0]
    assert collect_mask_results(dirs)["equal"] == []  # the option off: no equal-density reading


def test_the_verdict_rows_count_cells_and_intervals(sources, tmp_path):
    from fullspectrum.summary import interval_text, verdict_rows

    cells = tables.assemble("table1", CIFAR10, sources, train_epochs=250, steps_per_epoch=391)
    csv = tmp_path / "table1.csv"
    cells.to_csv(csv, index=False)
    rows = {row["comparison"]: row for row in verdict_rows(csv)}
    # best - baseline: SNIP mean of [3, -1] = +1, ERK +1 (one seed), GraSP missing; 2 seeds claim no interval
    best = rows["best − baseline"]
    assert (best["mean"], best["cells_positive"], best["cells"]) == (1.0, 2, 3)
    assert interval_text(best) == "none claimed (2 seeds < 5)"
    # only SNIP has a control and equal-density masks: [2.5, -1.5] -> +0.50, and [2, -2] -> +0.00
    control, equal = rows["best − control best"], rows["equal-density best − baseline"]
    assert (control["mean"], control["cells_positive"], control["cells"]) == (0.5, 1, 1)
    assert (equal["mean"], equal["cells_positive"], equal["cells"]) == (0.0, 0, 1)
