"""The study (`make study`): degree matching on hand-made shapes, per-seed digits splits, and a real run of its
reduced config (config/test_study.yaml) whose verdict table is recomputed here from the metrics.json files behind
it with scipy; a rerun does nothing and a killed run, rerun, ends with the same numbers."""

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as scipy_stats

from conftest import ROOT, copy_workflow, run_snakemake, snakemake_bin
from fullspectrum import data, degrees
from fullspectrum.analysis import study
from report_browser import click_through, require_browser

TEST_CONFIG = "config/test_study.yaml"
RESULTS = ROOT / "results" / "test_study"
RUN = "digits/resnet18/d0.16/{method}/pre0/s{seed}"
METHODS, SEEDS = ("erk", "snip"), (0, 1, 2)


# ------------------------------------------------------------------------------------------------ degree matching


def test_degree_matched_density_scales_density_by_the_width_ratio():
    assert degrees.degree_matched_density(0.01, 64, 8) == pytest.approx(0.08)
    assert degrees.degree_matched_density(0.05, 64, 16) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="outside"):
        degrees.degree_matched_density(0.2, 64, 8)  # 1.6


def test_expected_degrees_of_hand_made_layers():
    # [C_out, C_in, k, k] at density d: outputs see d * C_in * k * k edges, inputs d * C_out
    assert degrees.expected_degrees((16, 8, 3, 3), 0.08) == pytest.approx((0.08 * 72, 0.08 * 16))
    assert degrees.expected_degrees((10, 64), 0.5) == pytest.approx((32.0, 5.0))


def test_a_narrow_layer_at_the_matched_density_has_the_wide_layers_degrees_and_validity():
    wide = {"a": (128, 64, 3, 3), "b": (256, 128, 1, 1), "c": (64, 64, 3, 3)}
    narrow = {name: (s[0] // 8, s[1] // 8, *s[2:]) for name, s in wide.items()}
    at_wide = degrees.layer_degrees(wide, 0.01, rule="uniform")
    at_narrow = degrees.layer_degrees(narrow, degrees.degree_matched_density(0.01, 64, 8), rule="uniform")
    for column in ("out_degree", "in_degree"):
        assert at_narrow[column].to_numpy() == pytest.approx(at_wide[column].to_numpy())
    # a: 5.76 out, 1.28 in (valid); b: 1.28 out (< 3); c: 0.64 in (not > 1)
    assert list(at_wide["defined"]) == list(at_narrow["defined"]) == [True, False, False]


# ------------------------------------------------------------------------------------------------ per-seed splits


def test_each_seed_has_its_own_stratified_split_of_the_same_sizes():
    splits = [data.load_digits_tensors(split_seed=seed) for seed in (0, 1)]
    everything = torch.cat([splits[0]["train_y"], splits[0]["test_y"]])
    for split in splits:
        assert (len(split["train_y"]), len(split["test_y"])) == (1437, 360)
        overall = torch.bincount(everything, minlength=10).double() / len(everything)
        in_test = torch.bincount(split["test_y"], minlength=10).double()
        assert (in_test - overall * 360).abs().max() <= 1.0  # stratified: each class at its share, to one image
    assert not torch.equal(splits[0]["test_x"], splits[1]["test_x"])
    assert torch.equal(data.load_digits_tensors(split_seed=1)["test_x"], splits[1]["test_x"])


def test_a_per_seed_split_is_refused_for_cifar(tmp_path):
    with pytest.raises(ValueError, match="digits only"):
        data.prepare("cifar10", tmp_path / "c.pt", split_seed=1)


# ------------------------------------------------------------------------------------------------ the analysis


def test_holm_against_a_hand_computed_case():
    # sorted 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 0.04)
    assert study.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert study.holm([0.5, float("nan")])[0] == pytest.approx(0.5)


def test_min_detectable_difference_has_the_stated_power():
    sd, n, alpha = 1.3, 8, 0.05
    delta = study.min_detectable(sd, n, alpha)
    rng = np.random.default_rng(0)
    samples = rng.normal(delta, sd, size=(20000, n))
    rejected = scipy_stats.ttest_1samp(samples, 0.0, axis=1).pvalue < alpha
    assert rejected.mean() == pytest.approx(0.8, abs=0.015)


def test_verdict_rule():
    base = {"n": 8, "mean": 1.0, "p_zero_adj": 0.01, "p_below_sesoi_adj": 0.9}
    assert study.verdict(base, 0.05, 5) == "supported"
    assert study.verdict({**base, "mean": -1.0, "p_zero_adj": 0.01, "p_below_sesoi_adj": 0.001}, 0.05, 5) == \
        "contradicted"
    assert study.verdict({**base, "p_zero_adj": 0.2, "p_below_sesoi_adj": 0.3}, 0.05, 5) == "inconclusive"
    assert study.verdict({**base, "n": 4}, 0.05, 5) == "no verdict"


# ------------------------------------------------------------------------------------------------ a real run


def _finished(results: Path) -> dict:
    return {name: (results / name).read_text() for name in ("study.csv", "study_seeds.csv")}


@pytest.fixture(scope="module")
def study_run():
    shutil.rmtree(RESULTS, ignore_errors=True)
    run_snakemake(["study", "--configfile", TEST_CONFIG, "--cores", "2"], timeout=1200)
    yield _finished(RESULTS)
    shutil.rmtree(RESULTS, ignore_errors=True)


def _best(path: Path) -> float:
    return json.loads(path.read_text())["best_acc"]


def _readout(baseline: float, values: list[float]) -> tuple[float, float]:
    """The authors' readout, written out again: best; avg over the values >= baseline if more than one is."""
    kept = [v for v in values if v >= baseline]
    return max(values), float(np.mean(kept if len(kept) > 1 else values))


def _from_metrics_files() -> pd.DataFrame:
    rows = []
    for method in METHODS:
        for seed in SEEDS:
            run = RESULTS / RUN.format(method=method, seed=seed)
            baseline = _best(run / "pai" / "metrics.json")
            selected = sorted((run / "pags").glob("select*/metrics.json"))
            control = sorted((run / "pags").glob("control*/metrics.json"))
            equal = [run / "pags" / p.parent.name.replace("select", "equal") / "metrics.json" for p in selected]
            equal = [e if e.exists() else s for e, s in zip(equal, selected)]
            assert selected and len(control) == len(selected)
            best, avg = _readout(baseline, [_best(p) for p in selected])
            control_best, control_avg = _readout(baseline, [_best(p) for p in control])
            rows.append({"method": method, "seed": seed, "best_vs_control": best - control_best,
                         "avg_vs_control": avg - control_avg, "best_vs_baseline": best - baseline,
                         "equal_best_vs_control": max(_best(p) for p in equal) - control_best})
    return pd.DataFrame(rows)


def test_the_verdict_table_is_recomputed_from_the_metrics_files(study_run):
    table = pd.read_csv(RESULTS / "study.csv")
    diffs = _from_metrics_files()
    pooled = diffs.groupby("seed")[list(study.COMPARISONS)].mean().reset_index().assign(method="pooled")
    for comparison in study.COMPARISONS:
        raw_p = {}
        for method in METHODS + ("pooled",):
            values = (pooled if method == "pooled" else diffs[diffs["method"] == method])[comparison].to_numpy()
            row = table[(table["comparison"] == comparison) & (table["method"] == method)].iloc[0]
            assert row["n"] == 3 and row["mean"] == pytest.approx(values.mean(), abs=1e-9)
            if np.ptp(values) == 0:
                continue  # no spread: scipy's t gives NaN where the table says so by its own rule
            low, high = scipy_stats.t.interval(0.95, 2, loc=values.mean(), scale=scipy_stats.sem(values))
            assert (row["low"], row["high"]) == (pytest.approx(low), pytest.approx(high))
            raw_p[method] = scipy_stats.ttest_1samp(values, 0.0).pvalue
            assert row["p_zero"] == pytest.approx(raw_p[method])
            below = scipy_stats.ttest_1samp(values, 0.5, alternative="less").pvalue
            assert row["p_below_sesoi"] == pytest.approx(below)
        if all(m in raw_p for m in METHODS):  # Holm over the two methods, by hand
            small, large = sorted(METHODS, key=raw_p.get)
            adjusted = {small: min(1, 2 * raw_p[small])}
            adjusted[large] = max(adjusted[small], raw_p[large])
            for method in METHODS:
                row = table[(table["comparison"] == comparison) & (table["method"] == method)].iloc[0]
                assert row["p_zero_adj"] == pytest.approx(adjusted[method])
    assert set(table["verdict"]) == {"no verdict"}  # 3 seeds < study.min_seeds


def test_the_arms_of_a_seed_share_its_split_and_seeds_differ(study_run):
    for seed in SEEDS:
        split = f"results/test_study/data/digits/split{seed}.pt"
        for method in METHODS:
            run = RESULTS / RUN.format(method=method, seed=seed)
            for metrics in run.rglob("metrics.json"):
                command = json.loads(metrics.read_text())["provenance"]["command"]
                assert f"--data {split}" in command, (metrics, command)
    tests = [torch.load(RESULTS / "data" / "digits" / f"split{s}.pt", weights_only=True)["test_x"] for s in SEEDS]
    assert not torch.equal(tests[0], tests[1]) and not torch.equal(tests[1], tests[2])


def test_outputs_a_person_reads(study_run):
    markdown = (RESULTS / "study.md").read_text()
    assert "no verdict" in markdown and "Training curves" in markdown and "ITOP tickets" in markdown
    summary = json.loads((RESULTS / "study.json").read_text())
    assert summary["itop"]["tickets"] == 4 and isinstance(summary["itop"]["rises_beyond_intervals"], bool)
    assert (RESULTS / "study_differences.png").stat().st_size > 1000
    lines = study.verdict_lines(pd.read_csv(RESULTS / "study.csv"))
    assert len(lines) == len(study.COMPARISONS) and all("NO VERDICT" in line for line in lines)


def test_the_report_opens_on_the_landing_page_with_the_verdict_and_clicks_through(study_run, tmp_path):
    """`snakemake study` writes the landing page with the study's verdict; its report opens on it in headless
    Chromium and every category and item clicks through without a page error (tests/report_browser.py)."""
    page = (RESULTS / "report" / "landing.rst").read_text()
    assert "The study's verdict" in page and "NO VERDICT" in page and "PAGS best − control best (primary)" in page
    require_browser()
    report = tmp_path / "report.html"
    run_snakemake(["study", "--configfile", TEST_CONFIG, "--report", str(report)], timeout=600)
    visited = click_through(report, landing="The question:")
    assert sum(v.startswith("Study > ") for v in visited) == 2 and "Figures > fig1: digits, resnet18" in visited


def test_a_rerun_does_nothing(study_run):
    result = run_snakemake(["study", "--configfile", TEST_CONFIG, "-n"])
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_killed_study_rerun_ends_with_the_same_numbers(study_run, tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    command = [snakemake_bin(), "study", "--configfile", TEST_CONFIG, "--cores", "2"]
    env = {**os.environ, "PATH": f"{Path(snakemake_bin()).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(command, cwd=workdir, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    results = workdir / "results" / "test_study"
    deadline = time.monotonic() + 600
    while len(list(results.rglob("pags/select*/metrics.json"))) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, "the study finished before it could be killed"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (results / "study.csv").exists()
    run_snakemake(["study", "--configfile", TEST_CONFIG, "--cores", "2"], cwd=workdir, timeout=1200)
    assert _finished(results) == study_run
    assert math.isfinite(pd.read_csv(results / "study.csv")["mean"].iloc[0])
