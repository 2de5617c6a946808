"""Figures 1-2: correlations, the |rho| weighting, the full-spectrum distance, and the figure files."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fullspectrum import io, models, pruning
from fullspectrum.analysis import figures

METRICS = list(figures.WEIGHTED_METRICS)  # delta_r_imdb, delta_r, lambda_imdb, lambda_gap
LAYERS = ["conv1.weight", "layer1.0.conv1.weight", "linear.weight"]


def test_pearson_matches_scipy_and_handles_degenerate_columns():
    x = [0.1, 0.4, 0.35, 0.8, 0.55, 0.9]
    y = [60.0, 62.5, 61.0, 66.0, 63.0, 64.5]
    rho, p = stats.pearsonr(x, y)
    result = figures.pearson(x, y)
    assert result["rho"] == pytest.approx(rho, abs=1e-12) and result["p"] == pytest.approx(p, rel=1e-9)
    assert result["n"] == 6
    with_nan = figures.pearson(x + [math.nan], y + [70.0])  # incomplete pairs are left out
    assert with_nan["rho"] == pytest.approx(rho) and with_nan["n"] == 6
    constant = figures.pearson([1.0] * 4, [1.0, 2.0, 3.0, 4.0])
    assert math.isnan(constant["rho"]) and math.isnan(constant["p"]) and "constant metric" in constant["note"]
    assert "constant accuracy" in figures.pearson([1, 2, 3], [5, 5, 5])["note"]
    assert "1 ticket" in figures.pearson([1.0], [2.0])["note"]


def test_rho_weights_against_scipy():
    rng = np.random.default_rng(0)
    means = pd.DataFrame(rng.normal(size=(8, 4)), columns=METRICS)
    accuracy = rng.normal(60, 2, size=8)
    absolute = np.array([abs(stats.pearsonr(means[m], accuracy)[0]) for m in METRICS])
    weighting = figures.rho_weights(means, accuracy)
    assert [weighting["weights"][m] for m in METRICS] == pytest.approx(list(absolute / absolute.sum()))
    assert sum(weighting["weights"].values()) == pytest.approx(1.0) and not weighting["fallback"]
    means["delta_r"] = 3.0  # constant: undefined rho weighs 0
    weighting = figures.rho_weights(means, accuracy)
    assert weighting["weights"]["delta_r"] == 0.0 and sum(weighting["weights"].values()) == pytest.approx(1.0)
    flat = figures.rho_weights(means, np.full(8, 60.0))  # constant accuracy: nothing defined, equal weights
    assert flat["fallback"] and list(flat["weights"].values()) == [0.25] * 4


def test_full_spectrum_distance_by_hand():
    # one ticket, two layers; weights in the order delta_r_imdb, delta_r, lambda_imdb, lambda_gap
    values = np.array([[[1.0, 2.0, 3.0, 4.0], [2.0, math.nan, 0.0, 1.0]]])
    weights = [0.1, 0.2, 0.3, 0.4]
    layer1 = math.sqrt(0.01 + 0.16 + 0.81 + 2.56)  # (0.1*1)^2 + (0.2*2)^2 + (0.3*3)^2 + (0.4*4)^2 = 3.54
    layer2 = math.sqrt(0.04 + 0.16)  # (0.1*2)^2 + (0.4*1)^2; the missing delta_r counts as 0
    assert figures.full_spectrum_distance(values, weights) == pytest.approx([(layer1 + layer2) / 2])
    assert figures.full_spectrum_distance(values, weights)[0] == pytest.approx(1.164351, abs=1e-6)
    with pytest.raises(ValueError):
        figures.full_spectrum_distance(np.zeros((2, 3)), weights)


def _write_ticket(folder, step, accuracy, layer_values):
    """A trained ticket as the workflow leaves it: graph.csv (layers + model_mean) and metrics.json."""
    folder.mkdir(parents=True)
    frame = pd.DataFrame(layer_values, columns=METRICS)
    frame.insert(0, "layer", LAYERS)
    frame["l2"] = np.linalg.norm(np.nan_to_num(frame[METRICS].to_numpy()), axis=1)
    mean = {"layer": "model_mean", **{m: frame[m].mean() for m in METRICS + ["l2"]}}  # graph.py's rule
    io.write_csv(pd.concat([frame, pd.DataFrame([mean])], ignore_index=True), folder / "graph.csv")
    io.write_json({"final_acc": accuracy, "density": 0.1,
                   "mask_meta": {"method": "itop", "snapshot": step // 10, "step": step, "exploration": 0.1 + step / 1000}},
                  folder / "metrics.json")


@pytest.fixture
def tickets(tmp_path):
    rng = np.random.default_rng(1)
    dirs = []
    for k in range(7):
        values = rng.uniform(0.5, 3.0, size=(len(LAYERS), 4))
        values[0, 1] = math.nan if k % 2 else values[0, 1]  # delta_r undefined in some tickets' first layer
        accuracy = 55.0 + 3 * values[:, 0].mean() + rng.normal(0, 0.5)
        folder = tmp_path / f"snap{k}"
        _write_ticket(folder, 10 * k, accuracy, values)
        dirs.append(folder)
    return dirs[::-1]  # any order in, sorted by step out


def test_ticket_table_and_distance_from_the_files(tickets):
    table, weighting = figures.ticket_table(tickets)
    assert list(table["step"]) == [0, 10, 20, 30, 40, 50, 60]
    assert list(table["ticket"]) == [f"snap{k}" for k in range(7)]
    graphs = [pd.read_csv(t.parent / name / "graph.csv") for t, name in zip(tickets, table["ticket"])]
    layer_values = np.stack([g[g["layer"] != "model_mean"][METRICS].to_numpy() for g in graphs])
    means = pd.DataFrame([g[g["layer"] == "model_mean"][METRICS].iloc[0] for g in graphs]).reset_index(drop=True)
    pd.testing.assert_frame_equal(table[METRICS], means, check_names=False)
    absolute = np.array([abs(stats.pearsonr(means[m], table["accuracy"])[0]) for m in METRICS])
    expected_weights = absolute / absolute.sum()
    assert [weighting["weights"][m] for m in METRICS] == pytest.approx(list(expected_weights))
    by_hand = np.nan_to_num(layer_values) * expected_weights
    expected = np.sqrt((by_hand**2).sum(axis=-1)).mean(axis=-1)
    assert table[figures.DISTANCE].to_numpy() == pytest.approx(expected)


def test_make_figure_writes_files_and_the_csv_is_what_is_plotted(tickets, tmp_path):
    out = tmp_path / "figures"
    paths = {"png": out / "fig1.png", "pdf": out / "fig1.pdf", "data_csv": out / "fig1.csv",
             "corr_csv": out / "fig1_correlations.csv", "corr_json": out / "fig1_correlations.json"}
    summary = figures.make_figure(tickets, title="fig1 test", **paths)
    for path in paths.values():
        assert path.exists() and path.stat().st_size > 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
    data = pd.read_csv(paths["data_csv"])
    table, _ = figures.ticket_table(tickets)
    pd.testing.assert_frame_equal(data, table, check_dtype=False)
    # the panels' points are exactly the CSV's columns
    corr = pd.read_csv(paths["corr_csv"])
    fig = figures.plot_figure(data, corr)
    axes = fig.axes[:3]
    for ax, (column, _, _) in zip(axes, figures.PANELS):
        offsets = np.asarray(ax.collections[0].get_offsets())
        assert offsets[:, 0] == pytest.approx(data[column].to_numpy())
        assert offsets[:, 1] == pytest.approx(data["accuracy"].to_numpy())
        assert np.asarray(ax.collections[0].get_array()) == pytest.approx(data["step"].to_numpy())
        assert len(ax.lines) == 1  # the fitted line
        assert "rho" in ax.get_title()
    assert any(a.get_ylabel().startswith("Snapshot time") for a in fig.axes[3:])  # the colour bar
    # the correlations are scipy's, on the plotted data
    for column, name in (("delta_r_imdb", "topology"), ("lambda_imdb", "weights"),
                         (figures.DISTANCE, "full_spectrum")):
        rho, p = stats.pearsonr(data[column], data["accuracy"])
        row = corr[corr["panel"] == name].iloc[0]
        assert row["rho"] == pytest.approx(rho) and row["p"] == pytest.approx(p)
    saved = json.loads(paths["corr_json"].read_text())
    assert saved["tickets"] == 7 and sum(saved["distance_weights"].values()) == pytest.approx(1.0)
    assert summary["correlations"][0]["panel"] == "topology"


def test_degenerate_figure_says_so_instead_of_crashing(tmp_path):
    dirs = []
    for k in range(3):
        folder = tmp_path / f"snap{k}"
        _write_ticket(folder, 10 * k, 50.0, np.ones((len(LAYERS), 4)) * (1 + k))  # constant accuracy
        dirs.append(folder)
    out = tmp_path / "out"
    summary = figures.make_figure(dirs, png=out / "f.png", pdf=out / "f.pdf", data_csv=out / "f.csv",
                                  corr_csv=out / "c.csv", corr_json=out / "c.json")
    assert summary["equal_weights_fallback"]
    assert all(r["rho"] is None or math.isnan(r["rho"]) for r in summary["correlations"])
    corr = pd.read_csv(out / "c.csv")
    fig = figures.plot_figure(pd.read_csv(out / "f.csv"), corr)
    assert "n/a" in fig.axes[0].get_title() and "constant accuracy" in fig.axes[0].get_title()
    assert len(fig.axes[0].lines) == 0


def test_ticket_table_with_real_graph_metrics(tmp_path):
    """graph.csv as fullspectrum.graph writes it, for masks on a tiny ResNet."""
    from fullspectrum import graph

    net = models.build_seeded("resnet18", 10, 4, 0)
    dirs = []
    for k in range(3):
        masks = pruning.make_mask(net, "erk", 0.3, seed=k)
        folder = tmp_path / f"snap{k}"
        folder.mkdir()
        io.write_csv(graph.model_metrics(net, masks), folder / "graph.csv")
        io.write_json({"final_acc": 50.0 + k, "mask_meta": {"snapshot": k, "step": 5 * k}}, folder / "metrics.json")
        dirs.append(folder)
    table, weighting = figures.ticket_table(dirs)
    assert len(table) == 3 and np.isfinite(table[figures.DISTANCE]).all()
    assert sum(weighting["weights"].values()) == pytest.approx(1.0)
