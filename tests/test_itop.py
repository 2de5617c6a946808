"""ITOP dynamic sparse training: prune-and-regrow, cosine decay, exploration, snapshots, resume, the schedule."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from fullspectrum import itop, masks as mask_lib, models, pruning, runs, workflow
from fullspectrum.train import Callback, Trainer, TrainConfig

from conftest import ROOT, CrashAt

CFG = TrainConfig(epochs=2, batch_size=128, lr=0.05)  # digits: 12 steps per epoch, 24 steps


def tiny(seed=0):
    return models.build_seeded("resnet18", 10, 4, seed)


# ----------------------------------------------------------------------------------------- prune and regrow


def test_prune_and_regrow_keeps_count_and_avoids_just_pruned_positions():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 8, 3, 3)
    mask = torch.rand(16, 8, 3, 3, generator=torch.Generator().manual_seed(1)) < 0.3
    active = int(mask.sum())
    count = itop.prune_count(0.5, active)
    result = itop.prune_and_regrow(weight, mask, count, generator)
    assert int(result.mask.sum()) == active
    assert len(result.pruned) == len(result.regrown) == count == math.ceil(0.5 * active)
    # the pruned weights are the `count` smallest magnitudes among the active ones
    flat_w, flat_m = weight.reshape(-1).abs(), mask.reshape(-1)
    threshold = flat_w[result.pruned].max()
    assert bool((flat_w[flat_m] >= threshold).sum() >= active - count)
    kept = flat_m.clone()
    kept[result.pruned] = False
    assert bool((flat_w[kept] >= threshold).all())
    # regrown only at positions that were inactive, never at the ones just pruned
    assert not bool(flat_m[result.regrown].any())
    assert not bool(torch.isin(result.regrown, result.pruned).any())
    assert len(result.restored) == 0 and len(result.grown) == count
    assert len(set(result.regrown.tolist())) == count


def test_prune_and_regrow_falls_back_to_just_pruned_only_when_nothing_else_is_free():
    generator = torch.Generator().manual_seed(0)
    weight = torch.arange(1.0, 11.0)
    mask = torch.ones(10, dtype=torch.bool)
    mask[[3, 7]] = False  # 8 active, 2 free
    result = itop.prune_and_regrow(weight, mask, 4, generator)  # prunes 4 > 2 free
    assert int(result.mask.sum()) == 8
    assert sorted(result.pruned.tolist()) == [0, 1, 2, 4]  # the 4 smallest active magnitudes
    assert sorted(result.grown.tolist()) == [3, 7]  # every free position first
    assert len(result.restored) == 2 and set(result.restored.tolist()) <= {0, 1, 2, 4}
    dense = torch.ones(6, dtype=torch.bool)  # a dense layer: nothing free, the mask cannot change
    result = itop.prune_and_regrow(torch.randn(6), dense, 3, generator)
    assert torch.equal(result.mask, dense) and len(result.grown) == 0


def test_prune_and_regrow_is_seeded():
    weight, mask = torch.randn(50), torch.arange(50) % 3 == 0
    a = itop.prune_and_regrow(weight, mask, 5, torch.Generator().manual_seed(7))
    b = itop.prune_and_regrow(weight, mask, 5, torch.Generator().manual_seed(7))
    c = itop.prune_and_regrow(weight, mask, 5, torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)


def test_cosine_decay_values():
    """From 0.5 down to the authors' eta_min 0.005: 0.005 + 0.495 / 2 * (1 + cos(pi t / T)), by hand."""
    assert itop.death_rate_at(0, 100, 0.5) == pytest.approx(0.5)
    assert itop.death_rate_at(50, 100, 0.5) == pytest.approx(0.2525)
    assert itop.death_rate_at(100, 100, 0.5) == pytest.approx(0.005)  # ends at eta_min, not 0
    assert itop.death_rate_at(25, 100, 0.5) == pytest.approx(0.005 + 0.2475 * (1 + math.sqrt(0.5)))
    assert itop.death_rate_at(200, 100, 0.5) == pytest.approx(0.005)  # clipped at the end
    # the authors' CosineDecay (sparselearning/core.py:67-80): an SGD's lr under CosineAnnealingLR(T, eta_min=0.005),
    # stepped once per training step before the update (core.py:299-304)
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    stepper = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, 100, 0.005)
    for step in range(1, 101):
        sgd.step()  # no gradient: leaves the parameter, keeps the scheduler's order check quiet
        stepper.step()
        assert itop.death_rate_at(step, 100, 0.5) == pytest.approx(sgd.param_groups[0]["lr"], rel=1e-9), step
    assert itop.prune_count(0.25, 10) == 3 and itop.prune_count(0.5, 10) == 5 and itop.prune_count(0.0, 10) == 0


def test_exploration_rate_of_a_hand_made_sequence():
    first = {"a": torch.tensor([1, 0, 0, 0], dtype=torch.bool), "b": torch.tensor([[1, 0], [0, 0]], dtype=torch.bool)}
    explored = {k: v.clone() for k, v in first.items()}
    assert itop.exploration_rate(explored) == pytest.approx(2 / 8)
    sequence = [
        ({"a": [0, 1, 0, 0], "b": [[1, 0], [0, 0]]}, 3 / 8),
        ({"a": [1, 0, 0, 0], "b": [[0, 1], [0, 0]]}, 4 / 8),  # revisiting a position adds nothing
        ({"a": [0, 0, 1, 1], "b": [[0, 0], [1, 1]]}, 8 / 8),
    ]
    for step, expected in sequence:
        step = {k: torch.tensor(v, dtype=torch.bool) for k, v in step.items()}
        explored = itop.update_explored(explored, step)
        assert itop.exploration_rate(explored) == pytest.approx(expected)


# ----------------------------------------------------------------------------------------- in the trainer


class Recorder(Callback):
    """Captures the state around ITOP's update at `step` (it runs after the ITOP callback)."""

    def __init__(self, step):
        self.step, self.seen = step, None

    def on_step_end(self, trainer, step):
        if step == self.step:
            self.seen = {
                "masks": {k: v.clone().cpu() for k, v in trainer.masks.items()},
                "weights": {k: p.detach().clone() for k, p in mask_lib.prunable_parameters(trainer.model).items()},
                "momentum": {k: trainer.optimizer.momentum_buffer(p).clone()
                             for k, p in mask_lib.prunable_parameters(trainer.model).items()},
            }


def test_update_in_the_trainer_zeroes_regrown_weights_and_momentum(digits):
    model = tiny()
    masks = pruning.make_mask(model, "erk", 0.1, seed=0)
    before = Recorder(5)
    callback = itop.ITOPCallback(masks=masks, total_steps=24, update_frequency=6, death_rate=0.5,
                                 snapshot_every=1, seed=0)
    after = Recorder(6)
    trainer = Trainer(model, digits, TrainConfig(epochs=1, max_steps=6, lr=0.05), seed=0, masks=masks,
                      callbacks=[before, callback, after], progress=False)
    trainer.fit()
    old, new = before.seen["masks"], after.seen["masks"]
    assert len(callback.updates) == 1 and callback.updates[0]["step"] == 6
    changed = 0
    for name in old:
        assert int(new[name].sum()) == int(old[name].sum()), name  # exact count per layer
        grown = new[name] & ~old[name]
        changed += int(grown.sum())
        assert bool((after.seen["weights"][name][grown] == 0).all()), name
        assert bool((after.seen["momentum"][name][grown] == 0).all()), name
        assert bool((after.seen["weights"][name][~new[name]] == 0).all()), name
        assert bool((after.seen["momentum"][name][~new[name]] == 0).all()), name
    assert changed > 0
    assert callback.updates[0]["pruned"] == callback.updates[0]["regrown"]
    assert callback.exploration > mask_lib.density(old)


def _run(digits, tmp_path, crash_at=None):
    model = tiny()
    masks = pruning.make_mask(model, "erk", 0.1, seed=0)
    snaps = {}

    def on_snapshot(index, trainer, step, exploration):
        snaps[index] = {k: v.clone().cpu() for k, v in trainer.masks.items()}

    callback = itop.ITOPCallback(masks=masks, total_steps=24, update_frequency=5, death_rate=0.5,
                                 snapshot_every=2, seed=3, on_snapshot=on_snapshot)
    extra = [CrashAt(crash_at)] if crash_at else []
    trainer = Trainer(model, digits, CFG, seed=0, masks=masks, checkpoint=tmp_path / "state.pt",
                      callbacks=[callback, *extra], progress=False)
    return trainer, callback, snaps


def test_resume_matches_an_uninterrupted_run(digits, tmp_path):
    reference, ref_callback, ref_snaps = _run(digits, tmp_path / "a")
    reference.fit()
    crashed, _, _ = _run(digits, tmp_path / "b", crash_at=17)  # after the epoch-1 checkpoint (12 steps)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    resumed, callback, snaps = _run(digits, tmp_path / "b")
    resumed.fit()
    assert resumed.resumed_from == {"epoch": 1, "step": 12}
    assert callback.updates == ref_callback.updates
    assert callback.snapshots == ref_callback.snapshots
    for name in ref_callback.explored:
        assert torch.equal(callback.explored[name], ref_callback.explored[name])
        assert torch.equal(resumed.masks[name].cpu(), reference.masks[name].cpu())
    for key, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert set(snaps) == {2}  # replayed after the resume: the update at step 20 is the 2nd snapshot
    for name in snaps[2]:
        assert torch.equal(snaps[2][name], ref_snaps[2][name])


# ----------------------------------------------------------------------------------------- run_itop


@pytest.fixture(scope="module")
def itop_run(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("itop")
    weights = folder / "iter0.pt"
    runs.pretrain(model="resnet18", width=4, dataset="digits", data=digits, iters=0, seed=0, cfg=CFG, out=weights,
                  progress=False)
    config = {"results": str(folder / "results"), "train": {"batch_size": 128},
              "itop": {"epochs": 2, "update_frequency": 5, "snapshot_every": 2, "density": 0.1, "death_rate": 0.5}}
    expected = workflow.itop_snapshot_count(config, "digits")
    out = Path(workflow.itop_dir(config, "digits", "resnet18", 0))
    assert out == folder / "results/digits/resnet18/d0.1/itop/pre0/s0"
    summary = itop.run_itop(weights=weights, data=digits, cfg=CFG, density=0.1, update_frequency=5, death_rate=0.5,
                            snapshot_every=2, seed=0, out_dir=out, expected_snapshots=expected, progress=False)
    return {"weights": weights, "out": out, "summary": summary, "expected": expected}


def test_run_itop_writes_every_snapshot(itop_run):
    out, summary = itop_run["out"], itop_run["summary"]
    assert itop_run["expected"] == 3  # updates at 5, 10, 15, 20 of 24 steps; snapshots at 0, 10, 20
    assert summary["update_steps"] == [5, 10, 15, 20] and summary["snapshot_steps"] == [0, 10, 20]
    assert json.loads((out / "itop.json").read_text())["snapshot_steps"] == [0, 10, 20]
    assert not (out / itop.WORK_DIR).exists()
    explorations = [e["exploration"] for e in summary["exploration"]]
    assert explorations == sorted(explorations) and explorations[-1] > explorations[0]
    counts = None
    for k, step in enumerate([0, 10, 20]):
        net, weights_meta = models.load_weights(out / f"snap{k}" / "weights.pt")
        masks, meta = mask_lib.load_mask_file(out / f"snap{k}" / "mask.pt", net)
        assert meta["method"] == "itop" and meta["snapshot"] == k and meta["step"] == step
        assert meta["exploration"] == pytest.approx(summary["snapshots"][k]["exploration"])
        assert weights_meta["itop_step"] == step and weights_meta["model"] == "resnet18"
        layer_counts = {name: int(m.sum()) for name, m in masks.items()}
        assert counts is None or layer_counts == counts  # ITOP never changes a layer's count
        counts = layer_counts
        for name, param in mask_lib.prunable_parameters(net).items():
            assert bool((param[~masks[name]] == 0).all())
    first, _ = mask_lib.load_mask_file(out / "snap0" / "mask.pt")
    erk = pruning.make_mask(models.load_weights(itop_run["weights"])[0], "erk", 0.1, seed=0)
    assert all(torch.equal(first[name], erk[name]) for name in erk)
    assert workflow.start_weights(str(out / "snap1")) == f"{out}/snap1/weights.pt"


def test_run_itop_refuses_a_schedule_the_workflow_did_not_declare(itop_run, digits, tmp_path):
    with pytest.raises(ValueError, match="expects 4"):
        itop.run_itop(weights=itop_run["weights"], data=digits, cfg=CFG, density=0.1, update_frequency=5,
                      death_rate=0.5, snapshot_every=2, seed=0, out_dir=tmp_path, expected_snapshots=4,
                      progress=False)
    assert not any(tmp_path.iterdir())


def test_snapshot_count_of_the_configs():
    paper = yaml.safe_load((ROOT / "config.yaml").read_text())
    embedded = yaml.safe_load((ROOT / "config" / "embedded.yaml").read_text())
    # The authors' settings: 391 steps x 250 epochs = 97750; an update every 1500 iterations at 1500..96000 -> 65,
    # a snapshot at every update, plus the ERK mask @0
    assert workflow.itop_total_steps(paper, "cifar100") == 97750
    assert workflow.itop_snapshot_count(paper, "cifar100") == 1 + 65
    # digits at batch 64: 23 steps x 2 epochs = 46; updates every 5 at 5..45 -> 9, all kept, plus @0
    assert workflow.itop_total_steps(embedded, "digits") == 46
    assert workflow.itop_snapshot_count(embedded, "digits") == 10
    assert workflow.itop_snapshot_steps(36, 6, 1) == [0, 6, 12, 18, 24, 30]
    assert workflow.itop_snapshot_steps(36, 6, 2) == [0, 12, 24]
    assert workflow.itop_snapshot_dirs(embedded, "digits", "resnet18", 0)[-1] == \
        "results/embedded/digits/resnet18/d0.2/itop/pre0/s0/snap9"


def test_update_on_channels_last_weights(digits):
    """On CUDA the trainer keeps the model channels-last; masks and zeroing must follow the logical layout."""
    model = tiny()
    masks = pruning.make_mask(model, "erk", 0.1, seed=0)
    trainer = Trainer(model, digits, TrainConfig(epochs=1, max_steps=2, lr=0.05), seed=0, masks=masks,
                      progress=False)
    trainer.fit()
    trainer.model.to(memory_format=torch.channels_last)
    callback = itop.ITOPCallback(masks=masks, total_steps=24, update_frequency=2, death_rate=0.5,
                                 snapshot_every=1, seed=0)
    old = {k: v.clone() for k, v in trainer.masks.items()}
    callback.update(trainer, 2)
    for name, param in mask_lib.prunable_parameters(trainer.model).items():
        new = trainer.masks[name]
        assert int(new.sum()) == int(old[name].sum())
        assert bool((param[~new] == 0).all()) and bool((param[new & ~old[name]] == 0).all())
        assert bool((trainer.optimizer.momentum_buffer(param)[~new | ~old[name]] == 0).all())
