"""PAGS/PEGS: the acceptance rule, monotone layer metrics, determinism, resume, and the baseline as first best."""

import os
import signal

import pytest
import torch

from fullspectrum import graph, models, pruning, search
from fullspectrum.masks import prunable_parameters
from fullspectrum.errors import Preempted

CFG = search.SearchConfig(population=6, batches=1, batch_size=64, snapshot_every=2)


@pytest.fixture(scope="module")
def model():
    return models.build_seeded("resnet18", 10, 8, 0)


def same_masks(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_acceptance_rule_on_a_hand_made_population():
    best = {"a": torch.tensor([True, False]), "b": torch.tensor([True, False]), "c": torch.tensor([True, False])}
    best_metrics = {"a": {"delta_r_imdb": 1.0, "l2": 1.0}, "b": {"delta_r_imdb": 1.0, "l2": 1.0},
                    "c": {"delta_r_imdb": 1.0, "l2": 1.0}}
    cand = {k: torch.tensor([False, True]) for k in best}
    cand_metrics = {"a": {"delta_r_imdb": 2.0, "l2": 1.0},   # both >=: accepted (ties count)
                    "b": {"delta_r_imdb": 2.0, "l2": 0.5},   # l2 lower: refused
                    "c": {"delta_r_imdb": 0.9, "l2": 5.0}}   # topology lower: refused
    accepted = search.accept_layers(best, best_metrics, cand, cand_metrics)
    assert accepted == ["a"]
    assert torch.equal(best["a"], cand["a"]) and torch.equal(best["b"], torch.tensor([True, False]))
    assert best_metrics["a"]["delta_r_imdb"] == 2.0 and best_metrics["b"]["l2"] == 1.0


def authors_loop(best_metrics, best_masks, candidates, sampling):
    """lth_tickets_generation.py:616-705 (ScottHoang/dst-ram-pruning) transcribed: every layer of every candidate
    is compared with `>=` on layer_imdb and layer_full_spectrum; an accepted layer sets save_flag; at each
    `mask_no % mask_sampling == 0` the best is saved if save_flag. Returns [(mask_no, saved masks)]."""
    best_metrics, best_masks = dict(best_metrics), dict(best_masks)
    save_flag, saved = False, []
    for mask_no, (masks, metrics) in enumerate(candidates, start=1):
        for target in masks:
            loose_condition = (metrics[target]["delta_r_imdb"] >= best_metrics[target]["delta_r_imdb"]
                               and metrics[target]["l2"] >= best_metrics[target]["l2"])
            if loose_condition:
                best_metrics[target], best_masks[target] = metrics[target], masks[target]
                save_flag = True
        if mask_no % sampling == 0 and save_flag:
            saved.append((mask_no, dict(best_masks)))
            save_flag = False
    return saved


def test_snapshot_rule_on_a_hand_made_search_matches_the_authors_loop(digits, monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))

    def mask(layer, k):  # the k-th hand-made mask of a layer: one weight set, at position k
        shape = (3, 4) if layer == "0.weight" else (2, 3)
        out = torch.zeros(shape, dtype=torch.bool)
        out.view(-1)[k] = True
        return out

    metrics = {("0.weight", 0): (1.0, 1.0), ("0.weight", 1): (2.0, 2.0), ("0.weight", 2): (0.5, 0.5),
               ("0.weight", 3): (2.0, 2.0),  # a different mask that ties the best: accepted under both rules
               ("1.weight", 0): (1.0, 1.0), ("1.weight", 1): (0.5, 3.0)}  # topology lower: refused
    # Candidates as (mask of layer 0, mask of layer 1); the baseline is (0, 0). Layer 1 is the baseline's own mask
    # in candidates 1, 2 and 4 (as ERK redraws a dense layer): the authors' `>=` accepts it there.
    plan = [(1, 0), (2, 0), (2, 1), (2, 0), (3, 1), (2, 1)]
    candidates = [{"0.weight": mask("0.weight", a), "1.weight": mask("1.weight", b)} for a, b in plan]
    lookup = {(layer, int(mask(layer, k).flatten().nonzero())): {"delta_r_imdb": imdb, "lambda_imdb": 0.0, "l2": l2}
              for (layer, k), (imdb, l2) in metrics.items()}

    def hand_measure(params, masks, names, groups):
        return {n: dict(lookup[(n, int(masks[n].flatten().nonzero()))]) for n in names}

    def hand_draw(model, method, density, data, cfg, seed):
        return {k: v.clone() for k, v in candidates[seed - search.candidate_seed(0, 1)].items()}

    monkeypatch.setattr(search, "measure", hand_measure)
    monkeypatch.setattr(search, "draw_candidate", hand_draw)
    baseline = {"0.weight": mask("0.weight", 0), "1.weight": mask("1.weight", 0)}
    ran = {}
    for rule in search.SNAPSHOT_RULES:
        cfg = search.SearchConfig(population=6, batches=1, batch_size=64, snapshot_every=2, snapshot_rule=rule)
        ran[rule] = search.pags(model, "erk", 0.5, digits, cfg, seed=0, baseline=baseline, progress=False)
    # By hand: candidate 1 improves layer 0 (saved at 2), candidate 4 changes nothing but repeats layer 1 (saved at 4
    # by the authors' rule only), candidate 5 ties layer 0 with another mask (saved at 6 by both).
    assert [s.after_candidates for s in ran["authors"].selected] == [2, 4, 6]
    assert [s.after_candidates for s in ran["changed"].selected] == [2, 6]
    reference = authors_loop({n: lookup[(n, 0)] for n in baseline}, baseline,
                             [(c, {n: lookup[(n, int(c[n].flatten().nonzero()))] for n in c}) for c in candidates], 2)
    assert [after for after, _ in reference] == [2, 4, 6]
    for (after, masks), snapshot in zip(reference, ran["authors"].selected):
        assert snapshot.after_candidates == after and same_masks(snapshot.load(), masks)
    last = {"0.weight": mask("0.weight", 3), "1.weight": mask("1.weight", 0)}
    assert same_masks(ran["authors"].selected[-1].load(), last)
    assert ran["authors"].summary["layers_accepted_identical"] == 3
    assert ran["authors"].summary["layers_accepted"] == 5 and ran["changed"].summary["layers_accepted"] == 2
    rows = [(r["candidate"], r["layer"]) for r in ran["authors"].log if r["identical"]]
    assert rows == [(1, "1.weight"), (2, "1.weight"), (4, "1.weight")]


def test_erk_search_keeping_dense_layers_saves_at_every_sampling_point(model, digits):
    dense = [n for n, d in pruning.erk_layer_densities(model, 0.1).items() if d == 1.0]
    assert len(dense) == 4  # conv1, two 1x1 shortcuts and the classifier of the width-8 ResNet18 at ERK 0.1
    result = search.pags(model, "erk", 0.1, digits, CFG, seed=4, progress=False)
    assert [s.after_candidates for s in result.selected] == [2, 4, 6]
    assert result.summary["layers_accepted_identical"] >= CFG.population * len(dense)


def test_snapshot_rule_is_checked():
    with pytest.raises(ValueError, match="invalid search settings"):
        search.SearchConfig(population=6, snapshot_rule="sometimes")


@pytest.mark.parametrize("method", ["snip", "erk"])
def test_selected_masks_dominate_the_baseline_layer_by_layer(model, digits, method):
    result = search.pags(model, method, 0.1, digits, CFG, seed=0, scoring_batches=2, progress=False)
    params = prunable_parameters(model)
    base = graph.measure_layers({n: (p.detach(), result.baseline[n]) for n, p in params.items()})
    for snapshot in result.selected:
        mine = graph.measure_layers({n: (p.detach(), snapshot.load()[n]) for n, p in params.items()})
        for name in params:
            for key in search.SEARCH_KEYS:
                assert mine[name][key] >= base[name][key] - 1e-12, (name, key)
    assert len(result.log) == CFG.population * len(params)
    assert 0 < result.summary["explored_share"] <= 1


def test_first_best_is_the_full_data_pai_mask_and_population_zero_returns_it(model, digits):
    empty = search.SearchConfig(population=0, batches=1, batch_size=64, snapshot_every=1)
    result = search.pags(model, "snip", 0.1, digits, empty, seed=3, scoring_batches=2, progress=False)
    expected = pruning.make_mask(model, "snip", 0.1, batches=digits.random_batches(2, 64, seed=3, augment=True),
                                 seed=3)
    assert same_masks(result.baseline, expected)
    assert len(result.selected) == 1 and result.selected[0].index == 0
    assert same_masks(result.selected[0].masks, expected)


def test_search_is_deterministic(model, digits):
    a = search.pags(model, "snip", 0.1, digits, CFG, seed=1, scoring_batches=2, progress=False)
    b = search.pags(model, "snip", 0.1, digits, CFG, seed=1, scoring_batches=2, progress=False)
    assert [s.index for s in a.selected] == [s.index for s in b.selected]
    assert all(same_masks(x.load(), y.load()) for x, y in zip(a.selected, b.selected))
    assert a.log == b.log


def test_every_snapshot_is_selected_unless_capped(model, digits, tmp_path):
    every = search.pags(model, "erk", 0.1, digits, CFG, seed=4, progress=False)
    taken = every.summary["snapshots"]
    assert taken >= 2  # ERK redraws change layers often enough on a tiny model
    assert [s.index for s in every.selected] == list(range(1, taken + 1))
    assert [s.after_candidates for s in every.selected] == sorted({s.after_candidates for s in every.selected})
    capped_cfg = search.SearchConfig(population=6, batches=1, batch_size=64, snapshot_every=2, train_cap=1)
    capped = search.pags(model, "erk", 0.1, digits, capped_cfg, seed=4, workdir=tmp_path, progress=False)
    assert [s.index for s in capped.selected] == [taken]
    assert same_masks(capped.selected[0].load(), every.selected[-1].load())
    assert sorted(p.name for p in tmp_path.glob("snapshot*.pt")) == [f"snapshot{taken}.pt"]  # older ones dropped


def test_candidates_are_scored_on_their_own_augmented_batches(model, digits):
    cfg = search.SearchConfig(population=1, batches=4, batch_size=64, snapshot_every=1)
    seed = search.candidate_seed(5, 1)
    candidate = search.draw_candidate(model, "snip", 0.1, digits, cfg, seed)
    batches = digits.random_batches(4, 64, seed=seed, augment=True)
    assert len(batches) == 4
    assert same_masks(candidate, pruning.make_mask(model, "snip", 0.1, batches=batches, seed=seed))
    plain = pruning.make_mask(model, "snip", 0.1, batches=digits.random_batches(4, 64, seed=seed), seed=seed)
    assert not same_masks(candidate, plain)  # the crops and flips changed the scores


def test_search_killed_by_sigterm_resumes_to_the_same_result(model, digits, tmp_path, monkeypatch):
    state = tmp_path / "work"
    uninterrupted = search.pags(model, "snip", 0.1, digits, CFG, seed=2, scoring_batches=2, progress=False)
    original = search.draw_candidate
    calls = []

    def draw_then_signal(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # SLURM's SIGTERM arrives while candidate 3 is being scored
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(search, "draw_candidate", draw_then_signal)
    with pytest.raises(Preempted, match="after candidate 3"):
        search.pags(model, "snip", 0.1, digits, CFG, seed=2, scoring_batches=2, workdir=state, progress=False)
    monkeypatch.setattr(search, "draw_candidate", original)
    resumed = search.pags(model, "snip", 0.1, digits, CFG, seed=2, scoring_batches=2, workdir=state,
                          progress=False)
    assert resumed.summary["resumed_at_candidate"] == 3
    assert [s.index for s in resumed.selected] == [s.index for s in uninterrupted.selected]
    assert all(same_masks(x.load(), y.load()) for x, y in zip(resumed.selected, uninterrupted.selected))
    assert resumed.log == uninterrupted.log


def test_the_control_is_the_first_candidates_drawn_without_the_criterion(model, digits):
    result = search.pags(model, "snip", 0.1, digits, CFG, seed=6, scoring_batches=2, progress=False)
    controls = list(search.control_masks(model, "snip", 0.1, digits, CFG, 6, len(result.selected)))
    assert len(controls) == len(result.selected) >= 1
    for index, control in enumerate(controls, start=1):
        seed = search.candidate_seed(6, index)
        batches = digits.random_batches(CFG.batches, CFG.batch_size, seed=seed, augment=True)
        assert same_masks(control, pruning.make_mask(model, "snip", 0.1, batches=batches, seed=seed))
        assert not any(same_masks(control, snapshot.load()) for snapshot in result.selected)


def test_equal_density_puts_a_drifted_selection_at_the_baseline_count_by_the_baseline_scores(model, digits):
    batches = digits.random_batches(2, 64, seed=6, augment=True)
    result = search.pags(model, "snip", 0.1, digits, CFG, seed=6, scoring_batches=2, progress=False)
    baseline_count = sum(int(m.sum()) for m in result.baseline.values())
    scores = pruning.scores(model, "snip", batches, seed=6)
    assert same_masks(pruning.global_topk_mask(scores, k=baseline_count), result.baseline)  # the baseline's scores
    calls = []
    def baseline_scores():  # noqa: E306
        calls.append(1)
        return scores
    for snapshot in result.selected:
        selection = snapshot.load()
        adjusted = search.equal_density(selection, result.baseline, baseline_scores)
        count = sum(int(m.sum()) for m in selection.values())
        if count == baseline_count:
            assert adjusted is None
            continue
        assert sum(int(m.sum()) for m in adjusted.values()) == baseline_count
        changed = {n: adjusted[n] ^ selection[n] for n in selection}
        moved = sum(int(c.sum()) for c in changed.values())
        assert moved == abs(count - baseline_count)  # only the difference moves, all in one direction
        inside = torch.cat([scores[n][selection[n]].flatten() for n in selection])
        moved_scores = torch.cat([scores[n][changed[n]].flatten() for n in selection])
        if count > baseline_count:  # trimmed: the dropped weights are the selection's lowest-scored
            assert all(bool((adjusted[n] <= selection[n]).all()) for n in selection)
            assert moved_scores.max() <= torch.sort(inside).values[moved - 1]
        else:  # topped up: the added weights are the highest-scored outside it
            outside = torch.cat([scores[n][~selection[n]].flatten() for n in selection])
            assert all(bool((adjusted[n] >= selection[n]).all()) for n in selection)
            assert moved_scores.min() >= torch.sort(outside, descending=True).values[moved - 1]
    assert 1 <= len(calls) <= len(result.selected)  # this search drifts: its selections keep 2-7% more weights


def test_erk_selections_never_drift_so_equal_density_leaves_them(model, digits):
    result = search.pags(model, "erk", 0.1, digits, CFG, seed=2, progress=False)
    assert len(result.selected) >= 1
    for snapshot in result.selected:
        def no_scores():
            raise AssertionError("an ERK selection needs no scores")
        assert search.equal_density(snapshot.load(), result.baseline, no_scores) is None
