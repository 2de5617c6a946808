"""Snakemake itself, for real: dry runs of the paper grid and of named targets, and a complete run of the
smallest config (config/test_workflow.yaml) through every rule, its report, and a rerun that does nothing."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from conftest import ROOT, run_snakemake
from report_browser import click_through, require_browser

TEST_CONFIG = "config/test_workflow.yaml"
RESULTS = ROOT / "results" / "test_workflow"

pytestmark = pytest.mark.workflow


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table as {rule: count}."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_shows_the_paper_grid_without_touching_data():
    before = (ROOT / "results" / "cifar10").exists()
    result = run_snakemake(["all", "-n", "--quiet", "rules"])
    counts = job_counts(result.stdout)
    assert counts["pretrain"] == 10  # 2 models x (CIFAR-10 @0/@100 + CIFAR-100 @0/@100/@500)
    assert counts["pai_mask"] == counts["pags_search"] == 24  # 2 models x (3 + 9) cells x 3 methods
    # density 0.01 at 20% per round: 0.8^21 < 0.01 < 0.8^20, so 21 rounds (the first dense, with the rewind point)
    assert counts["lth_dense_round"] == 4 and counts["lth_round"] == 4 * 20 and counts["early_bird"] == 4
    assert counts["itop"] == 2 and counts["table"] == 3 and counts["figure"] == 2
    assert "graph_metrics" not in counts  # measured inside the jobs that make or train each mask: no tiny jobs
    assert (ROOT / "results" / "cifar10").exists() == before


def test_named_target_table2_plans_only_table2s_jobs():
    counts = job_counts(run_snakemake(["table2", "-n", "--quiet", "rules"]).stdout)
    # Table 2: CIFAR-100 ResNet18 @0/@100/@500 x SNIP/GraSP/ERK, plus its EB and LTH
    assert counts["pags_search"] == counts["pai_mask"] == 9
    assert counts["table"] == 1 and "figure" not in counts and "itop" not in counts
    assert counts["pretrain"] == 3 and counts["prepare_data"] == 1
    assert counts["lth_dense_round"] == 1 and counts["lth_round"] == 20


def test_named_target_fig1_plans_only_figure1s_jobs():
    counts = job_counts(run_snakemake(["fig1", "-n", "--quiet", "rules"]).stdout)
    assert counts["itop"] == 1 and counts["figure"] == 1 and counts["pretrain"] == 1
    # 250 epochs of ceil(50000 / 128) = 391 steps, an update every 1500: 65 updates, each a snapshot, plus step 0;
    # trained 16 to a job (train.members): ceil(66 / 16) = 5 jobs, then each ticket's files copied locally
    assert counts["train_chunk"] == 5 and counts["chunk_member"] == 66 and "sparse_train" not in counts
    assert "pags_search" not in counts and "table" not in counts


def test_one_job_per_mask_plans_the_same_metrics_files_as_chunks(tmp_path):
    """The dry run's metrics.json files are the same with chunks (train.members 16) and without (members 1)."""
    overlay = tmp_path / "members1.yaml"
    overlay.write_text("train: {members: 1}\n")

    def planned(*extra):
        output = run_snakemake(["fig1", "-n", "--printshellcmds", *extra]).stdout
        return sorted(set(re.findall(r"(results/\S+/metrics\.json)", output))), job_counts(output)

    (chunked, chunk_counts), (single, single_counts) = planned(), planned("--configfile", "config.yaml", str(overlay))
    assert len(chunked) == 66 and chunked == single
    assert single_counts["sparse_train"] == 66 and "train_chunk" not in single_counts
    assert chunk_counts["train_chunk"] == 5


@pytest.fixture(scope="module")
def finished_run():
    shutil.rmtree(RESULTS, ignore_errors=True)
    result = run_snakemake(["all", "--configfile", TEST_CONFIG, "--cores", "2"], timeout=1500)
    yield result
    shutil.rmtree(RESULTS, ignore_errors=True)


def test_every_mask_gets_its_graph_metrics_and_training(finished_run):
    masks = sorted(RESULTS.rglob("mask.pt"))
    assert len(masks) >= 4 * 2 + 2 + 2  # PaI and selections of 4 cells, LTH rounds, EB/LTH tickets, ITOP snapshots
    for mask in masks:
        graph = pd.read_csv(mask.parent / "graph.csv")
        assert graph["layer"].iloc[-1] == "model_mean" and len(graph) == 22
        if "round" in mask.parent.name:  # LTH rounds train inside lth_round; their tickets are trained below
            continue
        metrics = json.loads((mask.parent / "metrics.json").read_text())
        assert 0 <= metrics["final_acc"] <= 100 and metrics["provenance"]["packages"]["torch"]


def test_tables_and_figures_exist_with_every_cell(finished_run):
    for name in ("table1", "table2", "table3"):
        cells = pd.read_csv(RESULTS / "tables" / f"{name}.csv")
        assert cells["value"].notna().all(), cells[cells["value"].isna()]
        assert (RESULTS / "tables" / f"{name}.tex").read_text().count(r"\toprule") == 2  # main table, the rest
        assert (RESULTS / "tables" / f"{name}.html").read_text().count("<table>") == 2
    table2 = pd.read_csv(RESULTS / "tables" / "table2.csv")
    assert set(table2["block"]) == {"ResNet18@0", "ResNet18@5", "ResNet18"}
    for name in ("fig1", "fig2"):
        stem = RESULTS / "figures" / f"{name}_digits_resnet18"
        assert stem.with_suffix(".png").stat().st_size > 10_000 and stem.with_suffix(".pdf").exists()
        assert len(pd.read_csv(stem.with_suffix(".csv"))) == 2  # two ITOP snapshot tickets


def test_second_invocation_has_nothing_to_do(finished_run):
    result = run_snakemake(["all", "--configfile", TEST_CONFIG, "--cores", "2"])
    assert "Nothing to be done" in result.stdout + result.stderr


def test_report_contains_tables_and_figures_with_captions(finished_run, tmp_path):
    report = tmp_path / "report.zip"
    run_snakemake(["all", "--configfile", TEST_CONFIG, "--report", str(report)], timeout=600)
    import zipfile

    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        text = "".join(archive.read(n).decode("utf-8", "ignore") for n in names if n.endswith((".html", ".js")))
    assert any(n.endswith("table1.csv") for n in names) and any(n.endswith(".png") for n in names)
    assert "ITOP snapshot tickets" in text and "in the paper's layout" in text


def test_report_opens_on_the_landing_page_and_clicks_through_in_a_browser(finished_run, tmp_path):
    """The real run's report.html in headless Chromium: it opens on the landing page (rule landing), and every
    category and item can be clicked without a page error or a blank page (tests/report_browser.py)."""
    require_browser()
    report = tmp_path / "report.html"
    run_snakemake(["all", "--configfile", TEST_CONFIG, "--report", str(report)], timeout=600)
    visited = click_through(report, landing="What ran")
    assert sorted(v.split(" > ")[0] for v in visited) == ["Figures"] * 2 + ["Table data"] * 3 + ["Tables"] * 3
    assert "Figures > fig1: digits, resnet18" in visited and "Tables > table2" in visited


def _readout(baseline, snapshots):
    """lth_acc_readout.py, written out again here as the independent check."""
    snapshots = np.array(snapshots, dtype=float)
    good = snapshots[snapshots >= baseline]
    pooled = good if len(good) > 1 else snapshots
    return snapshots.max(), pooled.mean(), (pooled.std(ddof=1) if len(pooled) > 1 else None)


def test_seed_weights_carry_the_authors_initialisation(finished_run):
    for weights in RESULTS.rglob("pretrain/iter0.pt"):
        payload = torch.load(weights, weights_only=True)
        assert payload["meta"]["init"] == "authors"
        batchnorm = [v for k, v in payload["state_dict"].items() if k.endswith("bn1.weight")]
        assert batchnorm and all(torch.all(v == 0.5) for v in batchnorm)


def _run_readouts(run: Path) -> dict:
    """One seed's readouts from the metrics.json files of a run directory, read out again independently."""
    load = lambda paths: [json.loads(p.read_text()) for p in paths]  # noqa: E731
    pags = run / "pags"
    number = lambda p: int(re.search(r"(\d+)$", p.parent.name).group(1))  # noqa: E731
    baseline = json.loads((run / "pai" / "metrics.json").read_text())
    snapshots = load(sorted(pags.glob("select*/metrics.json"), key=number))
    control = load(sorted(pags.glob("control*/metrics.json"), key=number))
    # the equal-density reading: equal{k} where the search wrote one, else select{k} itself
    equal = load([pags / f"equal{number(p)}" / "metrics.json" if (pags / f"equal{number(p)}").exists() else p
                  for p in sorted(pags.glob("select*/metrics.json"), key=number)])
    best = lambda masks, key="best_acc": _readout(baseline[key], [m[key] for m in masks])  # noqa: E731
    return {"baseline": baseline, "best": best(snapshots), "final": best(snapshots, "final_acc"),
            "control": best(control), "equal": best(equal), "equal_densities": [m["density"] for m in equal]}


def _t_interval(differences):
    mean = np.mean(differences)
    half = scipy_stats.t.ppf(0.975, len(differences) - 1) * np.std(differences, ddof=1) / np.sqrt(len(differences))
    return mean, mean - half, mean + half


def test_every_saved_snapshot_was_trained_and_cells_are_the_authors_readout_pooled_over_seeds(finished_run):
    for summary_path in RESULTS.rglob("pags/search/summary.json"):
        summary = json.loads(summary_path.read_text())
        run = summary_path.parents[2]
        expected = [f"select{k}.pt" for k in range(1, summary["snapshots"] + 1)] or ["select0.pt"]
        assert summary["selected_files"] == expected
        # the no-criterion control (on in this config): as many whole candidates as snapshots selected
        assert summary["control_files"] == [f"control{k}.pt" for k in range(1, len(expected) + 1)]
        # equal density (on in this config): a mask for exactly the selections whose weight count drifted, at the
        # baseline's count, dropping only selected weights (too many) or adding only pruned ones (too few)
        masks = lambda path: torch.load(path, weights_only=True)["masks"]  # noqa: E731
        count = lambda mask: sum(int(m.sum()) for m in mask.values())  # noqa: E731
        baseline_count = count(masks(run / "pai" / "mask.pt"))
        drifted = [name for name in expected if count(masks(summary_path.parent / name)) != baseline_count]
        assert summary["equal_files"] == [name.replace("select", "equal") for name in drifted]
        if summary["method"] == "erk":
            assert not drifted  # every ERK candidate keeps each layer's count
        for name in drifted:
            selected = masks(summary_path.parent / name)
            equal = masks(summary_path.parent / name.replace("select", "equal"))
            assert count(equal) == baseline_count
            direction = (lambda e, s: bool((e <= s).all())) if count(selected) > baseline_count else \
                (lambda e, s: bool((e >= s).all()))
            assert all(direction(equal[k], selected[k]) for k in selected)
        for name in expected + summary["control_files"] + summary["equal_files"]:
            assert (run / "pags" / name.removesuffix(".pt") / "metrics.json").exists()
    for name in ("table1", "table2"):
        cells = pd.read_csv(RESULTS / "tables" / f"{name}.csv")
        pai = cells[cells["pretrain_iters"].notna()]
        for (block, method), group in pai.groupby(["block", "method"]):
            by_column = {row["column"]: row for _, row in group.iterrows()}
            value = {column: float(row["value"]) for column, row in by_column.items() if column != "pretrain_cost"}
            runs = [Path(path).parent.parent for path in by_column["baseline_acc"]["sources"].split(";")]
            pooled = block.endswith("@5")  # two seeds @5, pooled; one seed @0: its own readout, no interval
            assert len(runs) == (2 if pooled else 1), block
            seeds = [_run_readouts(run) for run in runs]
            mean = lambda values: pytest.approx(np.mean(values))  # noqa: E731
            assert value["baseline_acc"] == mean([s["baseline"]["best_acc"] for s in seeds])
            spread = np.std([s["baseline"]["best_acc"] for s in seeds], ddof=1) if pooled else np.nan
            assert by_column["baseline_acc"]["spread"] == pytest.approx(spread, nan_ok=True)
            for reading, prefix in (("best", "pags"), ("control", "control"), ("equal", "equal")):
                assert value[f"{prefix}_best_acc"] == mean([s[reading][0] for s in seeds]), (block, method, prefix)
                assert value[f"{prefix}_avg_acc"] == mean([s[reading][1] for s in seeds]), (block, method, prefix)
            assert value["pags_best_final_acc"] == mean([s["final"][0] for s in seeds])
            assert value["pags_avg_final_acc"] == mean([s["final"][1] for s in seeds])
            for column, a, b in (("best_minus_baseline", "best", "baseline"), ("best_minus_control", "best", "control"),
                                 ("equal_minus_baseline", "equal", "baseline")):
                pick = lambda s, k: s["baseline"]["best_acc"] if k == "baseline" else s[k][0]  # noqa: E731
                differences = [pick(s, a) - pick(s, b) for s in seeds]
                diff, low, high = _t_interval(differences) if pooled else (differences[0], np.nan, np.nan)
                row = by_column[column]
                assert float(row["value"]) == pytest.approx(diff) and row["n"] == len(seeds), (block, method, column)
                assert (float(row["low"]), float(row["high"])) == (pytest.approx(low, nan_ok=True),
                                                                   pytest.approx(high, nan_ok=True))
            for s in seeds:  # the equal-density masks keep exactly the baseline's weights
                assert s["equal_densities"] == pytest.approx([s["baseline"]["density"]] * len(s["equal_densities"]))
