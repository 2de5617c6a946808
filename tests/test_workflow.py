"""Snakemake itself, for real: dry runs of the paper grid and of named targets, and a complete run of the
smallest config (config/test_workflow.yaml) through every rule, its report, and a rerun that does nothing."""

import json
import re
import shutil

import pandas as pd
import pytest

from conftest import ROOT, run_snakemake

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
    assert counts["lth_round"] == 4 * 14 and counts["early_bird"] == 4  # 0.8^14 < 0.05
    assert counts["itop"] == 2 and counts["table"] == 3 and counts["figure"] == 2
    assert "graph_metrics" not in counts  # measured inside the jobs that make or train each mask: no tiny jobs
    assert (ROOT / "results" / "cifar10").exists() == before


def test_named_target_table2_plans_only_table2s_jobs():
    counts = job_counts(run_snakemake(["table2", "-n", "--quiet", "rules"]).stdout)
    # Table 2: CIFAR-100 ResNet18 @0/@100/@500 x SNIP/GraSP/ERK, plus its EB and LTH
    assert counts["pags_search"] == counts["pai_mask"] == 9
    assert counts["table"] == 1 and "figure" not in counts and "itop" not in counts
    assert counts["pretrain"] == 3 and counts["prepare_data"] == 1 and counts["lth_round"] == 14


def test_named_target_fig1_plans_only_figure1s_jobs():
    counts = job_counts(run_snakemake(["fig1", "-n", "--quiet", "rules"]).stdout)
    assert counts["itop"] == 1 and counts["figure"] == 1 and counts["pretrain"] == 1
    assert counts["sparse_train"] == 16
    assert "pags_search" not in counts and "table" not in counts


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
        assert (RESULTS / "tables" / f"{name}.tex").read_text().count(r"\toprule") == 1
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
