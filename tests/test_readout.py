"""The authors' readout (lth_acc_readout.py) on hand-made accuracies, against numpy."""

import numpy as np
import pytest

from fullspectrum.analysis.readout import authors_readout


def test_ties_count_as_at_least_as_good_as_the_baseline():
    out = authors_readout(90.0, [90.0, 92.0, 85.0])
    assert out["best"] == 92.0 and out["n"] == 3 and out["n_avg"] == 2
    assert out["avg"] == pytest.approx(91.0) and out["std"] == pytest.approx(np.std([90.0, 92.0], ddof=1))


def test_exactly_one_snapshot_above_the_baseline_pools_all():
    snapshots = [91.0, 85.0, 80.0]
    out = authors_readout(90.0, snapshots)
    assert out["best"] == 91.0 and out["n_avg"] == 3
    assert out["avg"] == pytest.approx(np.mean(snapshots)) and out["std"] == pytest.approx(np.std(snapshots, ddof=1))


def test_no_snapshot_above_the_baseline_pools_all_and_best_is_still_the_max():
    out = authors_readout(95.0, [91.0, 85.0])
    assert (out["best"], out["avg"], out["n_avg"]) == (91.0, 88.0, 2)
    assert out["std"] == pytest.approx(np.std([91.0, 85.0], ddof=1))


def test_one_snapshot_has_no_std_and_none_has_nothing():
    assert authors_readout(90.0, [93.0]) == {"best": 93.0, "avg": 93.0, "std": None, "n": 1, "n_avg": 1}
    assert authors_readout(90.0, [])["best"] is None
