"""Intervals and paired differences against scipy on hand-made numbers; out-of-sample rho where fitting overfits."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from fullspectrum.analysis import figures, stats


def test_paired_difference_is_students_t_interval_over_seeds():
    a, b = [91.0, 92.5, 90.0, 93.0], [90.0, 90.5, 89.5, 91.5]
    diffs = np.subtract(a, b)
    low, high = scipy_stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=scipy_stats.sem(diffs))
    out = stats.paired_difference(a, b)
    assert out["mean"] == pytest.approx(diffs.mean()) and out["n"] == 4 and out["positive"] == 4
    assert (out["low"], out["high"]) == (pytest.approx(low), pytest.approx(high))
    assert low > 0 and not out["excludes_zero"]  # 4 seeds: the interval is shown, nothing is claimed
    five = stats.paired_difference(a + [92.0], b + [91.0])
    assert five["n"] == stats.MIN_SEEDS and five["low"] > 0 and five["excludes_zero"]


def test_two_agreeing_seeds_give_a_zero_width_interval_and_no_claim():
    out = stats.paired_difference([93.33, 90.0], [90.0, 86.67])
    assert out["high"] - out["low"] == pytest.approx(0.0, abs=1e-9) and not out["excludes_zero"]


def test_an_interval_that_straddles_zero_claims_nothing_and_one_seed_has_no_interval():
    out = stats.paired_difference([1.0, -1.0, 0.5], [0.0, 0.0, 0.0])
    assert out["low"] < 0 < out["high"] and not out["excludes_zero"] and out["positive"] == 2
    single = stats.paired_difference([91.0], [90.0])
    assert single == {"n": 1, "mean": 1.0, "low": None, "high": None, "positive": 1, "excludes_zero": False}


def test_rho_interval_agrees_with_scipys_percentile_bootstrap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = 0.6 * x + rng.normal(scale=0.8, size=30)
    low, high = stats.rho_interval(x, y, draws=4000, seed=1)
    reference = scipy_stats.bootstrap((x, y), lambda u, v: scipy_stats.pearsonr(u, v)[0], paired=True,
                                      vectorized=False, method="percentile", n_resamples=4000, random_state=2)
    assert low < np.corrcoef(x, y)[0, 1] < high
    assert low == pytest.approx(reference.confidence_interval.low, abs=0.04)
    assert high == pytest.approx(reference.confidence_interval.high, abs=0.04)


def _rhos(seed, tickets=8, layers=3):
    """In-sample and leave-one-out rho of the full-spectrum distance when every metric is pure noise."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(1.0, 2.0, size=(tickets, layers, 4))
    accuracy = rng.normal(50.0, 1.0, size=tickets)
    means = pd.DataFrame(values.mean(axis=1), columns=figures.WEIGHTED_METRICS)
    weights = figures.rho_weights(means, accuracy)["weights"]
    in_sample = figures.full_spectrum_distance(values, [weights[m] for m in figures.WEIGHTED_METRICS])
    out_of_sample = figures.out_of_sample_distance(means, accuracy, values)
    return np.corrcoef(in_sample, accuracy)[0, 1], np.corrcoef(out_of_sample, accuracy)[0, 1]


def test_out_of_sample_rho_is_not_inflated_where_in_sample_fitting_overfits():
    """With metrics unrelated to accuracy, weights fitted on the same tickets pick whichever metric correlates by
    chance, inflating |rho| (measured: 0.47 vs 0.37 over 300 draws of 8 tickets); leave-one-out does not."""
    rhos = np.array([_rhos(seed) for seed in range(200)])
    in_sample, out_of_sample = np.abs(rhos).mean(axis=0)
    assert in_sample > out_of_sample + 0.05, (in_sample, out_of_sample)


def test_out_of_sample_distance_uses_weights_fitted_without_the_ticket():
    rng = np.random.default_rng(3)
    values = rng.uniform(1.0, 2.0, size=(6, 4, 4))
    accuracy = rng.normal(50.0, 1.0, size=6)
    means = pd.DataFrame(values.mean(axis=1), columns=figures.WEIGHTED_METRICS)
    out_of_sample = figures.out_of_sample_distance(means, accuracy, values)
    rest = figures.rho_weights(means.iloc[1:].reset_index(drop=True), accuracy[1:])["weights"]
    by_hand = np.linalg.norm(values[0] * [rest[m] for m in figures.WEIGHTED_METRICS], axis=-1).mean()
    assert out_of_sample[0] == pytest.approx(by_hand)
