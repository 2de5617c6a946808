"""Snakemake's report of a paper-grid-shaped run, opened in headless Chromium and clicked through (the embedded
default's report is clicked through in tests/test_workflow.py on its real run).

The grid is config.yaml's own (CIFAR-10 and CIFAR-100, ResNet18 and ResNet34, SNIP/GraSP/ERK @0/@100/@500, EB and
LTH, Tables 1-3 and Figures 1-2 with its labels); nothing is trained: every file the tables and figures read is
written here in the workflow's own formats (a search's results.json by the workflow's collector from per-mask
metrics.json and graph.csv), then Snakemake runs the real `table`, `figure` and `landing` rules (only those:
--allowed-rules) and writes the report.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT, copy_workflow, run_snakemake
from fullspectrum import workflow as wf
from fullspectrum.analysis import collect
from report_browser import click_through, require_browser

LAYERS = ["conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight", "layer3.0.conv1.weight",
          "layer4.0.conv1.weight", "linear.weight"]
METRICS = ["delta_r", "lambda_gap", "delta_r_imdb", "lambda_imdb"]
# Only the rules that make the tables, the figures and the landing page run; everything upstream is written here.
ALLOWED = ["table", "figure", "landing", "tables", "figures"]
GRID_ARGS = ["tables", "figures", "results/paper_grid/report/landing.rst", "--configfile", "config/browser_grid.yaml",
             "--allowed-rules", *ALLOWED]


def _trained(folder: Path, rng, accuracy: float, density: float, meta: dict | None = None) -> None:
    """A trained mask as sparse training leaves it: metrics.json and graph.csv (layers, then model_mean)."""
    folder.mkdir(parents=True, exist_ok=True)
    values = rng.uniform(0.2, 3.0, size=(len(LAYERS), len(METRICS)))
    frame = pd.DataFrame(values, columns=METRICS)
    frame.insert(0, "layer", LAYERS)
    frame["l2"] = np.linalg.norm(values, axis=1)
    mean = {"layer": "model_mean", **{m: frame[m].mean() for m in METRICS + ["l2"]}}
    pd.concat([frame, pd.DataFrame([mean])], ignore_index=True).to_csv(folder / "graph.csv", index=False)
    best = round(accuracy + rng.uniform(0, 1.5), 2)
    metrics = {"final_acc": round(accuracy, 2), "best_acc": best, "density": density, "epochs": 250}
    if meta:
        metrics["mask_meta"] = meta
    (folder / "metrics.json").write_text(json.dumps(metrics))


def fake_paper_grid(config: dict, rng) -> None:
    """Every file Tables 1-3 and Figures 1-2 of `config` read, in the workflow's formats (under its results)."""
    results = str(config["results"])
    for run in wf.grid_runs(config):
        base = Path(run.dir(results))
        level = {"cifar10": 90.0, "cifar100": 70.0}[run.dataset]
        _trained(base / "pai", rng, level + rng.normal(0, 1), run.density)
        search = wf.resolved_search(config, run)
        snapshots = 3
        dirs = []
        for k in range(snapshots):
            _trained(base / "pags" / f"select{k}", rng, level + rng.normal(0.5, 1), run.density * 1.001)
            dirs.append(base / "pags" / f"select{k}")
            if search.get("control"):
                _trained(base / "pags" / f"control{k}", rng, level + rng.normal(0, 1), run.density)
                dirs.append(base / "pags" / f"control{k}")
        summary = collect.collect_mask_results(dirs, equal_density=bool(search.get("equal_density")))
        (base / "pags" / "results.json").write_text(json.dumps(summary))
    for run in wf.baseline_runs(config):
        files = wf.baseline_files(results, run)
        _trained(Path(files["metrics"]).parent, rng, 88.0 + rng.normal(0, 1), run.density)
        Path(files["cost"]).write_text(json.dumps({"pretrain_epochs": 3.0 if run.method == "lth" else 40.0}))
    for spec in config["figures"].values():
        for k, folder in enumerate(wf.itop_snapshot_dirs(config, spec["dataset"], spec["model"], spec["seed"])):
            _trained(Path(folder), rng, 60.0 + rng.normal(0, 2), config["itop"]["density"],
                     {"method": "itop", "snapshot": k, "step": k * config["itop"]["update_frequency"],
                      "exploration": 0.01 * (k + 1)})


@pytest.fixture(scope="module")
def paper_grid_report(tmp_path_factory):
    require_browser()  # before the report is built: without a browser there is nothing to click
    folder = copy_workflow(tmp_path_factory.mktemp("paper_grid"))
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    overlay = {"results": "results/paper_grid"}
    (folder / "config" / "browser_grid.yaml").write_text(yaml.safe_dump(overlay))
    fake_paper_grid({**base, "results": str(folder / overlay["results"])}, np.random.default_rng(0))
    run_snakemake([*GRID_ARGS, "--cores", "2"], cwd=folder, timeout=600)
    report = folder / "report.html"
    run_snakemake([*GRID_ARGS, "--report", str(report)], cwd=folder, timeout=600)
    return folder, report


def test_the_paper_grid_report_clicks_through_without_errors(paper_grid_report):
    _, report = paper_grid_report
    visited = click_through(report, landing="What ran")
    # config.yaml's labels: three rendered tables, their long CSVs, and Figures 1-2 (one label each)
    assert sum(v.startswith("Tables > ") for v in visited) == 3
    assert sum(v.startswith("Table data > ") for v in visited) == 3
    figures = sorted(v for v in visited if v.startswith("Figures > "))
    assert figures == ["Figures > fig1: cifar100, resnet18", "Figures > fig2: cifar100, resnet34"], visited


def test_the_click_through_catches_the_blank_figures_page_of_two_labels(paper_grid_report, tmp_path):
    """The labels of issue 26 (figure and model: each model covers half the figures, so the report makes `model` a
    toggle and looks up a pair that does not exist): the Figures page goes blank, and the click-through says so."""
    folder = Path(shutil.copytree(paper_grid_report[0], tmp_path / "two_labels", symlinks=True))
    itop = folder / "rules" / "itop.smk"
    one_label = 'labels={"figure": "{fig}: {dataset}, {model}"}'
    assert one_label in itop.read_text()
    itop.write_text(itop.read_text().replace(one_label, 'labels={"figure": "{fig}", "model": "{model}"}'))
    report = folder / "report.html"
    run_snakemake([*GRID_ARGS, "--report", str(report)], cwd=folder, timeout=600)
    with pytest.raises(AssertionError, match=r"Figures.*reading 'mime_type'"):
        click_through(report)
