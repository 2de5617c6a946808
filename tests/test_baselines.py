"""LTH and Early-Bird (fullspectrum.baselines): schedules, pruning, rewinding, the draw rule, tiny end-to-end runs."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch import nn

from fullspectrum import baselines, data, models, runs
from fullspectrum.io import read_json
from fullspectrum.masks import load_mask_file, prunable_parameters, save_mask_file, build_meta
from fullspectrum.train import TrainConfig, Trainer
from fullspectrum.workflow import Run, baseline_files, lth_rounds

WIDTH = 4


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    data.prepare("digits", path)
    return data.DeviceData(path, "cpu")


@pytest.fixture(scope="module")
def init_weights(tmp_path_factory, digits):
    """The seed's initialisation of a width-4 ResNet18 as a weights file (the @0 pretraining checkpoint)."""
    path = tmp_path_factory.mktemp("pretrain") / "iter0.pt"
    runs.pretrain(model="resnet18", width=WIDTH, dataset="digits", data=digits, iters=0, seed=0,
                  cfg=TrainConfig(), out=path, progress=False)
    return path


def one_epoch(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 128, "augment": True, **overrides})


def kept(masks) -> int:
    return sum(int(m.sum()) for m in masks.values())


def total(masks) -> int:
    return sum(m.numel() for m in masks.values())


# ------------------------------------------------------------------------------------------------------ LTH


def test_lth_schedule_prunes_twenty_percent_per_round_and_ends_exactly_at_the_target():
    schedule = baselines.lth_schedule(0.05, 0.2)
    assert len(schedule) == lth_rounds(0.05, 0.2) == 14
    for k, d in enumerate(schedule[:-1], start=1):
        assert d == pytest.approx(0.8**k)
    assert schedule[-1] == 0.05
    assert baselines.lth_schedule(0.25, 0.5) == [0.5, 0.25]
    assert baselines.lth_schedule(0.9, 0.2) == [0.9]  # one round, clipped at the target
    with pytest.raises(ValueError, match="rounds 1..2"):
        baselines.lth_round_density(3, 0.25, 0.5)


def test_lth_magnitude_rounds_keep_exact_counts_among_alive_weights():
    net = models.build_seeded("resnet18", 10, WIDTH, 0)
    n = sum(p.numel() for p in prunable_parameters(net).values())
    alive = None
    generator = torch.Generator().manual_seed(0)
    for k, d in enumerate(baselines.lth_schedule(0.1, 0.2), start=1):
        with torch.no_grad():  # "training" moves every weight; pruned ones stay zero
            for name, p in prunable_parameters(net).items():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
                if alive is not None:
                    p.mul_(alive[name])
        masks = baselines.magnitude_mask(net, d, alive=alive)
        assert kept(masks) == round(d * n)
        assert kept(masks) / n == pytest.approx(min(1.0, max(0.1, 0.8**k)), abs=1 / n)
        if alive is not None:
            assert all(bool((masks[name] <= alive[name]).all()) for name in masks)  # nothing revived
        alive = masks
    assert kept(alive) == round(0.1 * n)  # exact at the last round
    with pytest.raises(ValueError, match="still alive"):
        baselines.magnitude_mask(net, 0.5, alive=alive)


def _lth_mask_file(path, net, masks, round_index):
    meta = build_meta(masks, method="lth", target_density=0.5, run_target_density=0.25, round=round_index,
                      rounds=2, seed=0, model="resnet18", dataset="digits", source="x")
    save_mask_file(path, masks, meta)


def test_rewinding_restores_the_checkpoint_bits_with_a_fresh_optimiser(tmp_path, digits, init_weights):
    net, _ = models.load_weights(init_weights)
    with torch.no_grad():  # a mask made on other ("trained") weights, as after round 1
        trained = models.build_seeded("resnet18", 10, WIDTH, 1)
    masks = baselines.magnitude_mask(trained, 0.5)
    _lth_mask_file(tmp_path / "round1.pt", net, masks, 1)
    trainer, _, prev_meta = baselines.lth_round_trainer(
        weights=init_weights, prev_mask=tmp_path / "round1.pt", round_index=2, target_density=0.25,
        prune_fraction=0.5, data=digits, cfg=one_epoch(), seed=0, progress=False)
    assert prev_meta["round"] == 1
    reference = torch.load(init_weights, weights_only=True)["state_dict"]
    state = trainer.model.state_dict()
    assert set(state) == set(reference)
    for name, value in reference.items():
        expected = value * masks[name] if name in masks else value
        assert torch.equal(state[name], expected), name  # bit for bit (pruned weights zero)
    assert trainer.optimizer.buffers is None and trainer.step == 0 and trainer.epoch == 0
    # round 1 is dense and refuses a mask; round 2 needs round 1's mask, not another round's
    with pytest.raises(ValueError, match="dense"):
        baselines.lth_round_trainer(weights=init_weights, prev_mask=tmp_path / "round1.pt", round_index=1,
                                    target_density=0.25, prune_fraction=0.5, data=digits, cfg=one_epoch(), seed=0)
    _lth_mask_file(tmp_path / "round0.pt", net, masks, 0)
    with pytest.raises(ValueError, match="round 1"):
        baselines.lth_round_trainer(weights=init_weights, prev_mask=tmp_path / "round0.pt", round_index=2,
                                    target_density=0.25, prune_fraction=0.5, data=digits, cfg=one_epoch(), seed=0)


def test_lth_end_to_end_two_rounds_rewinding_to_an_epoch_of_the_dense_round(tmp_path, digits, init_weights):
    lth_dir = tmp_path / "lth"
    cfg = TrainConfig(epochs=2, batch_size=128, lr=0.05, schedule="constant")
    rewind = lth_dir / "round1/rewind.pt"
    records, previous, weights = [], None, init_weights
    for k in (1, 2):
        record = baselines.lth_round(
            weights=weights, prev_mask=previous, round_index=k, target_density=0.25, prune_fraction=0.5,
            data=digits, cfg=cfg, seed=0, out_mask=lth_dir / f"round{k}/mask.pt",
            out_json=lth_dir / f"round{k}/round.json", rewind_epoch=1, out_rewind=rewind if k == 1 else None,
            progress=False)
        previous, weights = lth_dir / f"round{k}/mask.pt", rewind
        records.append(record)
        assert not (lth_dir / f"round{k}/.lth_state.pt").exists()
    # the rewind point is the dense run after 1 of its 2 epochs: a separate 1-epoch run (constant lr) is bit-equal
    alone, _ = models.load_weights(init_weights)
    Trainer(alone, digits, dataclasses.replace(cfg, epochs=1), seed=0, progress=False).fit()
    rewound, rewind_meta = models.load_weights(rewind)
    assert rewind_meta["lth_rewind_epoch"] == 1
    assert all(torch.equal(a, b) for a, b in zip(alone.state_dict().values(), rewound.state_dict().values()))
    net, _ = models.load_weights(init_weights)
    m1, meta1 = load_mask_file(lth_dir / "round1/mask.pt", net)
    m2, meta2 = load_mask_file(lth_dir / "round2/mask.pt", net)
    n = total(m1)
    assert kept(m1) == round(0.5 * n) and kept(m2) == round(0.25 * n)
    assert all(bool((m2[name] <= m1[name]).all()) for name in m1)
    assert (meta1["method"], meta1["round"], meta1["source"]) == ("lth", 1, str(init_weights))
    assert (meta2["round"], meta2["source"], meta2["rewind_epoch"]) == (2, str(rewind), 1)  # restarted from it
    assert records[0]["trained_density"] == 1.0 and records[1]["trained_density"] == pytest.approx(0.5, abs=1 / n)
    assert records[1]["density"] == meta2["density"] == kept(m2) / n
    assert all(r["epochs"] == 2 and r["final_acc"] is not None for r in records)
    with pytest.raises(ValueError, match="only round 1, writes the rewind point"):
        baselines.lth_round(weights=rewind, prev_mask=previous, round_index=2, target_density=0.25,
                            prune_fraction=0.5, data=digits, cfg=cfg, seed=0, out_mask=tmp_path / "x/mask.pt",
                            out_json=tmp_path / "x/r.json", out_rewind=tmp_path / "x/rewind.pt", progress=False)

    cost = baselines.lth_summary(round_jsons=[lth_dir / "round2/round.json", lth_dir / "round1/round.json"],
                                 last_mask=lth_dir / "round2/mask.pt", out_csv=lth_dir / "rounds.csv",
                                 out_ticket=lth_dir / "ticket/mask.pt", out_cost=lth_dir / "cost.json")
    table = pd.read_csv(lth_dir / "rounds.csv")
    assert list(table["round"]) == [1, 2]
    assert list(table["density"]) == [records[0]["density"], records[1]["density"]]
    ticket, ticket_meta = load_mask_file(lth_dir / "ticket/mask.pt", net)
    assert all(torch.equal(ticket[name], m2[name]) for name in m2)
    assert ticket_meta["ticket"] and ticket_meta["target_density"] == 0.25 and ticket_meta["round"] == 2
    assert read_json(lth_dir / "cost.json") == cost
    steps = records[0]["steps"]
    assert (cost["search_epochs"], cost["dense_epochs"], cost["sparse_epochs"]) == (4, 2, 2)
    assert cost["search_steps"] == 2 * steps
    assert cost["pretrain_epochs"] == 4  # starts @0: only the rounds count
    full = baselines.total_cost(cost, {"epochs": 3, "steps": 3 * steps})
    assert (full["total_epochs"], full["total_steps"]) == (7, 2 * steps + 3 * steps)
    with pytest.raises(ValueError, match="expected 1..2"):
        baselines.lth_summary(round_jsons=[lth_dir / "round2/round.json"], last_mask=lth_dir / "round2/mask.pt",
                              out_csv=tmp_path / "x.csv", out_ticket=tmp_path / "t.pt", out_cost=tmp_path / "c.json")


# ----------------------------------------------------------------------------------------------- Early-Bird


def test_hamming_distance_on_hand_made_masks():
    a = {"x": torch.tensor([True, False, True, False]), "y": torch.tensor([[True, True], [False, False]])}
    b = {"x": torch.tensor([True, True, True, False]), "y": torch.tensor([[False, True], [False, True]])}
    assert baselines.hamming_distance(a, a) == 0.0
    assert baselines.hamming_distance(a, b) == baselines.hamming_distance(b, a) == 3 / 8
    flipped = {name: ~m for name, m in a.items()}
    assert baselines.hamming_distance(a, flipped) == 1.0
    with pytest.raises(ValueError, match="different layers"):
        baselines.hamming_distance(a, {"x": a["x"], "z": a["y"]})
    with pytest.raises(ValueError, match="different"):
        baselines.hamming_distance(a["x"], a["y"][0])


def _flips(base: torch.Tensor, count: int, offset: int = 0) -> dict:
    mask = base.clone()
    mask[offset:offset + count] = ~mask[offset:offset + count]
    return {"w": mask}


def test_early_bird_draws_at_the_first_epoch_where_the_full_window_is_close():
    base = torch.zeros(100, dtype=torch.bool)
    base[:50] = True
    # distances to the newest mask, window 3, threshold 0.1:
    # e1: FIFO not full; e2: not full (identical masks do not count early); e3: [0.3, 0.3] -> no;
    # e4: vs e2, e3 -> [0.25, 0.05] -> no; e5: vs e3, e4 -> [0.08, 0.03] -> draw at 5
    sequence = [{"w": base}, {"w": base}, _flips(base, 30), _flips(base, 25), _flips(base, 22), _flips(base, 22)]
    callback = baselines.EarlyBirdCallback(density=0.5, window=3, threshold=0.1)
    drawn = [callback.observe(mask, epoch, last=epoch == 6) for epoch, mask in enumerate(sequence, start=1)]
    assert drawn == [False, False, False, False, True, True]
    assert (callback.draw_epoch, callback.drawn_early) == (5, True)
    assert torch.equal(callback.ticket["w"], sequence[4]["w"])
    history = callback.history
    assert len(history) == 5  # nothing is recorded after the draw
    assert history[0]["distances"] == [] and history[1]["distances"] == [0.0] and not history[1]["fifo_full"]
    assert history[2]["distances"] == [0.3, 0.3] and history[2]["fifo_full"]
    assert history[3]["distances"] == [0.25, 0.05]
    assert history[4]["distances"] == pytest.approx([0.08, 0.03]) and history[4]["max_distance"] == 0.08


def test_early_bird_that_never_converges_draws_at_the_last_epoch_and_says_so():
    base = torch.zeros(10, dtype=torch.bool)
    callback = baselines.EarlyBirdCallback(density=0.5, window=2, threshold=0.1)
    results = [callback.observe(_flips(base, 5 * (epoch % 2)), epoch, last=epoch == 4) for epoch in range(1, 5)]
    assert results == [False, False, False, True]
    assert (callback.draw_epoch, callback.drawn_early) == (4, False)
    assert [h["max_distance"] for h in callback.history] == [None, 0.5, 0.5, 0.5]
    # the boundary: a distance equal to the threshold converges
    edge = baselines.EarlyBirdCallback(density=0.5, window=2, threshold=0.5)
    assert not edge.observe(_flips(base, 0), 1) and edge.observe(_flips(base, 5), 2)


def test_early_bird_callback_state_round_trips_and_resumes_identically():
    base = torch.zeros(37, dtype=torch.bool)  # not a multiple of 8: the packed FIFO must keep its length
    # window 3: epoch 3's FIFO still holds epoch 1's distant mask, so the draw is at 4; a resumed callback that
    # lost its FIFO would draw only at the last epoch (6)
    sequence = [_flips(base, 20), _flips(base, 0), _flips(base, 1, 7), _flips(base, 1, 7), _flips(base, 0),
                _flips(base, 0)]
    straight = baselines.EarlyBirdCallback(density=0.5, window=3, threshold=0.1)
    for epoch, mask in enumerate(sequence, start=1):
        if straight.observe(mask, epoch, last=epoch == 6):
            break
    assert (straight.draw_epoch, straight.drawn_early) == (4, True)
    resumed = baselines.EarlyBirdCallback(density=0.5, window=3, threshold=0.1)
    for epoch, mask in enumerate(sequence[:3], start=1):
        resumed.observe(mask, epoch)
    state = resumed.state_dict()
    fresh = baselines.EarlyBirdCallback(density=0.5, window=3, threshold=0.1)
    fresh.load_state_dict(state)
    assert len(fresh.fifo) == len(resumed.fifo) == 3
    assert all(torch.equal(x, y) and x.dtype == torch.bool for x, y in zip(fresh.fifo, resumed.fifo))
    for epoch, mask in enumerate(sequence[3:], start=4):
        if fresh.observe(mask, epoch, last=epoch == 6):
            break
    assert (fresh.draw_epoch, fresh.drawn_early, fresh.history) == (straight.draw_epoch, straight.drawn_early,
                                                                   straight.history)
    assert torch.equal(fresh.ticket["w"], straight.ticket["w"])
    with pytest.raises(ValueError, match="window"):
        baselines.EarlyBirdCallback(density=0.5, window=4, threshold=0.1).load_state_dict(state)


def test_early_bird_callback_reads_the_global_magnitude_mask_of_the_model():
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.arange(12.0).reshape(3, 4) - 6)
        net[1].weight.copy_(torch.tensor([[0.1, 7.0, -0.2], [9.0, 0.0, 0.3]]))
    callback = baselines.EarlyBirdCallback(density=0.25, window=2, threshold=0.0)
    trainer = SimpleNamespace(model=net, epochs=2)
    assert not callback.on_epoch_end(trainer, 1, 50.0)
    assert callback.on_epoch_end(trainer, 2, 60.0)  # same weights: distance 0 <= 0
    ticket = callback.ticket
    assert kept(ticket) == round(0.25 * 18)  # |w| in {9, 7, 6, 5, 5(-5)} -> 9, 7, 6, then the first 5 (ties in order)
    assert ticket["1.weight"].tolist() == [[False, True, False], [True, False, False]]
    assert ticket["0.weight"].flatten().tolist() == [True, True] + [False] * 9 + [False]
    assert callback.history[-1]["test_acc"] == 60.0


def _eb(tmp, digits, init_weights, **overrides):
    kwargs = dict(weights=init_weights, data=digits, cfg=TrainConfig(epochs=3), density=0.2, window=2,
                  threshold=1.0, seed=0, out_mask=tmp / "ticket/mask.pt", out_weights=tmp / "ticket/weights.pt",
                  out_json=tmp / "eb.json", out_cost=tmp / "cost.json", progress=False)
    return baselines.early_bird(**{**kwargs, **overrides})


@pytest.fixture(scope="module")
def eb_reference(tmp_path_factory, digits, init_weights):
    out = tmp_path_factory.mktemp("eb")
    return out, _eb(out, digits, init_weights)


def test_early_bird_end_to_end(eb_reference, init_weights):
    out, record = eb_reference
    # window 2, threshold 1: the FIFO is full (and close enough) at epoch 2, so the ticket is drawn there
    assert (record["draw_epoch"], record["drawn_early"], record["dense_epochs"]) == (2, True, 2)
    assert len(record["history"]) == 2 and len(record["history"][1]["distances"]) == 1
    assert "channel" in record["note"]
    net, weights_meta = models.load_weights(out / "ticket/weights.pt")
    masks, meta = load_mask_file(out / "ticket/mask.pt", net)
    n = total(masks)
    assert kept(masks) == round(0.2 * n) and meta["method"] == "eb" and meta["draw_epoch"] == 2
    assert meta["source"] == str(out / "ticket/weights.pt") and weights_meta["eb_draw_epoch"] == 2
    # the ticket is the magnitude mask of the saved weights (the weights at the draw)
    assert all(torch.equal(masks[k], v) for k, v in baselines.magnitude_mask(net, 0.2).items())
    cost = read_json(out / "cost.json")
    assert (cost["search_epochs"], cost["sparse_epochs"], cost["search_steps"]) == (2, 0, record["dense_steps"])
    assert cost["search_steps"] == 2 * math.ceil(1437 / 128) and cost["pretrain_epochs"] == 2
    assert not (out / ".eb_state.pt").exists()


class _Killed(Exception):
    pass


def _killing_trainer(after_epoch):
    class KilledTrainer(Trainer):
        def save_checkpoint(self):
            super().save_checkpoint()
            if self.epoch == after_epoch:
                raise _Killed(f"killed after epoch {after_epoch}")
    return KilledTrainer


@pytest.mark.parametrize("after_epoch", [1, 2])  # mid-run (the FIFO must survive); after the draw (no more training)
def test_early_bird_resumed_run_matches(tmp_path, monkeypatch, digits, init_weights, eb_reference, after_epoch):
    ref_dir, reference = eb_reference
    with monkeypatch.context() as patch:
        patch.setattr(baselines, "Trainer", _killing_trainer(after_epoch))
        with pytest.raises(_Killed):
            _eb(tmp_path, digits, init_weights)
    assert (tmp_path / ".eb_state.pt").exists() and not (tmp_path / "eb.json").exists()
    record = _eb(tmp_path, digits, init_weights)
    assert record["resumed_from"]["epoch"] == after_epoch
    for key in ("draw_epoch", "drawn_early", "dense_epochs", "dense_steps", "history"):
        assert record[key] == reference[key], key
    ref_masks, _ = load_mask_file(ref_dir / "ticket/mask.pt")
    masks, _ = load_mask_file(tmp_path / "ticket/mask.pt")
    assert all(torch.equal(masks[k], ref_masks[k]) for k in ref_masks)
    ref_state = torch.load(ref_dir / "ticket/weights.pt", weights_only=True)["state_dict"]
    state = torch.load(tmp_path / "ticket/weights.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], ref_state[k]) for k in ref_state)


def test_baseline_files_name_what_the_tables_read():
    lth = baseline_files("res", Run("digits", "resnet18", 0.1, "lth", 0, 0))
    assert lth == {"metrics": "res/digits/resnet18/d0.1/lth/pre0/s0/ticket/metrics.json",
                   "graph": "res/digits/resnet18/d0.1/lth/pre0/s0/ticket/graph.csv",
                   "cost": "res/digits/resnet18/d0.1/lth/pre0/s0/cost.json",
                   "rounds": "res/digits/resnet18/d0.1/lth/pre0/s0/rounds.csv"}
    assert baseline_files("res", Run("digits", "resnet18", 0.1, "eb", 0, 0))["eb"] == \
        "res/digits/resnet18/d0.1/eb/pre0/s0/eb.json"
    with pytest.raises(ValueError):
        baseline_files("res", Run("digits", "resnet18", 0.1, "snip", 0, 0))


def test_lth_rule_inputs_follow_the_round_chain():
    from fullspectrum import workflow

    w = SimpleNamespace(dataset="digits", model="resnet18", density="0.1", iters="0", seed="0", k="3")
    base = "res/digits/resnet18/d0.1/lth/pre0/s0"
    assert workflow.lth_previous_mask("res", w) == [f"{base}/round2/mask.pt"]
    assert workflow.lth_previous_mask("res", SimpleNamespace(**{**vars(w), "k": "1"})) == []
    assert workflow.lth_round_files("res", w, 0.5, "round.json") == [f"{base}/round{k}/round.json"
                                                                      for k in (1, 2, 3, 4)]
