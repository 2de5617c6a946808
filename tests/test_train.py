"""The training engine: exact masks, bit-exact resume after a signal or a crash, NaN guard, stale checkpoints."""

import json
import os
import signal

import pytest
import torch

from fullspectrum import masks as mask_lib
from fullspectrum import models, pruning, runs
from conftest import CrashAt
from fullspectrum.errors import NonFiniteLossError, Preempted
from fullspectrum.train import Callback, Trainer, TrainConfig, lr_factor

CFG = TrainConfig(epochs=2, batch_size=128, lr=0.05)


def tiny(seed=0):
    return models.build_seeded("resnet18", 10, 4, seed)


def random_masks(model, density=0.3, seed=0):
    return pruning.make_mask(model, "random", density, seed=seed)


class SignalAt(Callback):
    """Sends a real signal to this process at a given step, like SLURM before preemption."""

    def __init__(self, step, signum=signal.SIGTERM):
        self.step, self.signum = step, signum

    def on_step_end(self, trainer, step):
        if step == self.step:
            os.kill(os.getpid(), self.signum)


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(digits):
    model = tiny()
    trainer = Trainer(model, digits, CFG, seed=0, masks=random_masks(model), progress=False)
    metrics = trainer.fit()
    return state(trainer.model), metrics


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_checkpoints_and_resume_is_bit_exact(digits, tmp_path, uninterrupted, signum):
    checkpoint = tmp_path / "state.pt"
    model = tiny()
    first = Trainer(model, digits, CFG, seed=0, masks=random_masks(model), checkpoint=checkpoint,
                    callbacks=[SignalAt(5, signum)], progress=False)
    with pytest.raises(Preempted, match="rerun to resume"):
        first.fit()
    assert checkpoint.exists()
    model = tiny()
    second = Trainer(model, digits, CFG, seed=0, masks=random_masks(model), checkpoint=checkpoint, progress=False)
    metrics = second.fit()
    assert second.resumed_from == {"epoch": 0, "step": 5}
    assert_same_bits(state(second.model), uninterrupted[0])
    assert [h["test_acc"] for h in metrics["curve"]] == [h["test_acc"] for h in uninterrupted[1]["curve"]]


def test_crash_resumes_from_the_last_epoch_checkpoint(digits, tmp_path, uninterrupted):
    checkpoint = tmp_path / "state.pt"
    model = tiny()
    steps_per_epoch = -(-digits.train_size // CFG.batch_size)
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, digits, CFG, seed=0, masks=random_masks(model), checkpoint=checkpoint,
                callbacks=[CrashAt(steps_per_epoch + 3)], progress=False).fit()
    model = tiny()
    resumed = Trainer(model, digits, CFG, seed=0, masks=random_masks(model), checkpoint=checkpoint, progress=False)
    resumed.fit()
    assert resumed.resumed_from == {"epoch": 1, "step": steps_per_epoch}
    assert_same_bits(state(resumed.model), uninterrupted[0])


def test_checkpoints_are_written_by_time_and_their_bytes_counted(digits, tmp_path, uninterrupted):
    """checkpoint_minutes 0: a state at every epoch end; 60: only the end's. Either way the same bits, and
    metrics.json's byte count is what went to disk; a resume counts the state it read, and 60 minutes later
    keeps the run's identity (a resume goes on)."""
    def run(minutes, path, callbacks=()):
        model = tiny()
        cfg = TrainConfig(epochs=2, batch_size=128, lr=0.05, checkpoint_minutes=minutes)
        trainer = Trainer(model, digits, cfg, seed=0, masks=random_masks(model), checkpoint=path,
                          callbacks=list(callbacks), progress=False)
        return trainer, trainer.fit()

    every, every_metrics = run(0, tmp_path / "every.pt")
    rarely, rarely_metrics = run(60, tmp_path / "rarely.pt")
    assert every_metrics["checkpoints_written"] == 2 and rarely_metrics["checkpoints_written"] == 1
    assert rarely_metrics["checkpoint_bytes"] == (tmp_path / "rarely.pt").stat().st_size
    assert every_metrics["checkpoint_bytes"] > 1.9 * (tmp_path / "every.pt").stat().st_size
    assert_same_bits(state(every.model), uninterrupted[0])
    assert_same_bits(state(rarely.model), uninterrupted[0])
    # stopped mid-run with checkpoint_minutes 0, resumed with 60: the same run, its first state counted
    steps_per_epoch = -(-digits.train_size // CFG.batch_size)
    with pytest.raises(KeyboardInterrupt):
        run(0, tmp_path / "resumed.pt", [CrashAt(steps_per_epoch + 3)])
    first = (tmp_path / "resumed.pt").stat().st_size
    resumed, metrics = run(60, tmp_path / "resumed.pt")
    assert resumed.resumed_from == {"epoch": 1, "step": steps_per_epoch}
    assert metrics["checkpoints_written"] == 2 and metrics["checkpoint_bytes"] == first + (
        tmp_path / "resumed.pt").stat().st_size
    assert_same_bits(state(resumed.model), uninterrupted[0])


def test_checkpoint_of_other_hyperparameters_is_not_resumed(digits, tmp_path):
    checkpoint = tmp_path / "state.pt"
    model = tiny()
    with pytest.raises(Preempted):
        Trainer(model, digits, CFG, seed=0, checkpoint=checkpoint, callbacks=[SignalAt(3)], progress=False).fit()
    other = TrainConfig(epochs=2, batch_size=128, lr=0.01)
    trainer = Trainer(tiny(), digits, other, seed=0, checkpoint=checkpoint, progress=False)
    assert trainer.try_resume() is False and trainer.step == 0


class CheckMask(Callback):
    def __init__(self):
        self.checked = 0

    def on_step_end(self, trainer, step):
        params = mask_lib.prunable_parameters(trainer.model)
        for name, param in params.items():
            pruned = ~trainer.masks[name]
            assert not param[pruned].any(), f"pruned weight of {name} became non-zero at step {step}"
            buffer = trainer.optimizer.momentum_buffer(param)
            assert not buffer[pruned].any(), f"momentum of pruned {name} non-zero at step {step}"
        self.checked += 1


def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay(digits):
    model = tiny()
    mask = random_masks(model, density=0.1)
    checker = CheckMask()
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.1, momentum=0.9, weight_decay=5e-3, nesterov=True)
    metrics = Trainer(model, digits, cfg, seed=0, masks=mask, callbacks=[checker], progress=False).fit()
    assert checker.checked == metrics["steps"] > 0
    assert metrics["density"] == pytest.approx(mask_lib.density(mask))


class PoisonAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, step):
        if step == self.step:
            with torch.no_grad():
                trainer.model.linear.weight.fill_(float("nan"))


def test_nan_loss_stops_the_run_naming_epoch_and_step_and_writes_no_metrics(digits, digits_path, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 4"):
        Trainer(tiny(), digits, CFG, seed=0, callbacks=[PoisonAt(3)], progress=False).fit()
    # through the recipe: a NaN from a learning rate that diverges leaves no metrics.json behind
    weights = tmp_path / "w.pt"
    net = tiny()
    models.save_weights(weights, net, {"model": "resnet18", "num_classes": 10, "width": 4})
    mask = random_masks(net)
    mask_lib.save_mask_file(tmp_path / "mask.pt", mask, mask_lib.build_meta(
        mask, method="random", target_density=0.3, seed=0, model="resnet18", dataset="digits", source=str(weights)))
    out = tmp_path / "metrics.json"
    with pytest.raises(NonFiniteLossError):
        runs.train_mask(weights=weights, mask=tmp_path / "mask.pt", data=digits,
                        cfg=TrainConfig(epochs=1, lr=1e12), seed=0, out=out, progress=False)
    assert not out.exists()


def test_mask_that_does_not_fit_is_refused_before_training(digits, tmp_path):
    weights = tmp_path / "w.pt"
    models.save_weights(weights, tiny(), {"model": "resnet18", "num_classes": 10, "width": 4})
    other = models.build("resnet18", 10, 8)
    mask = random_masks(other)
    mask_lib.save_mask_file(tmp_path / "mask.pt", mask, mask_lib.build_meta(
        mask, method="random", target_density=0.3, seed=0, model="resnet18", dataset="digits", source="x"))
    with pytest.raises(ValueError, match=r"conv1.weight.*shape"):
        runs.train_mask(weights=weights, mask=tmp_path / "mask.pt", data=digits, cfg=CFG, seed=0,
                        out=tmp_path / "metrics.json", progress=False)


def test_schedules():
    cos = TrainConfig(schedule="cosine")
    assert lr_factor(cos, 0, 100, 10) == 1.0 and lr_factor(cos, 50, 100, 10) == pytest.approx(0.5)
    # 10 epochs of 10 steps: milestones at epochs int(5) and int(7.5) = 7, changing at epoch boundaries only
    step = TrainConfig(schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    factors = [lr_factor(step, s, 100, 10) for s in (49, 50, 69, 70)]
    assert factors == [1.0, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.01)]


class LearningRates(Callback):
    def __init__(self):
        self.lrs = []

    def on_step_end(self, trainer, step):
        self.lrs.append(trainer.lr)


def test_multistep_nesterov_training_equals_torch_sgd_and_multisteplr(digits):
    """The Trainer's recipe against a plain loop: SGD(nesterov=True) + MultiStepLR([int(E/2), int(3E/4)]) per epoch."""
    cfg = TrainConfig(epochs=5, batch_size=256, lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                      schedule="multistep", milestones=(0.5, 0.75), gamma=0.1, augment=False)
    model = models.build("resnet18", 10, 2)
    reference = models.build("resnet18", 10, 2)
    reference.load_state_dict(model.state_dict())
    recorder = LearningRates()
    Trainer(model, digits, cfg, seed=3, callbacks=[recorder], progress=False).fit()

    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[int(5 / 2), int(5 * 3 / 4)], gamma=0.1)
    expected_lrs = []
    reference.train()
    for epoch in range(5):
        order = digits.epoch_order(3, epoch)
        for start in range(0, digits.train_size, 256):
            x, y = digits.train_batch(order[start:start + 256], None, augment=False)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(reference(x), y).backward()
            expected_lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
        scheduler.step()
    assert recorder.lrs[:-1] == pytest.approx(expected_lrs[1:])  # read after each step: the next step's lr
    for (name, mine), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=1e-4), name


def test_sparse_run_on_digits_learns_well_above_chance(digits, tmp_path):
    # PyTorch's initialisation: the authors' (tiny classifier weights, BatchNorm scale 0.5) needs more than 3 epochs
    model = models.build_seeded("resnet18", 10, 16, 0, init="pytorch")
    cfg = TrainConfig(epochs=3, batch_size=128, lr=0.1)
    metrics = Trainer(model, digits, cfg, seed=0, masks=random_masks(model, 0.5), progress=False).fit()
    assert metrics["final_acc"] > 50.0  # chance is 10 %
    assert len(metrics["curve"]) == 3 and metrics["images_per_second"] > 0
    json.dumps(metrics)  # everything a metrics.json holds is plain JSON


def test_pretraining_checkpoints_at_each_count(digits, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1)
    init = models.build_seeded("resnet18", 10, 4, 5)
    saved = {}
    for iters in (0, 3, 7):
        meta = runs.pretrain(model="resnet18", width=4, dataset="digits", data=digits, iters=iters, seed=5, cfg=cfg,
                             out=tmp_path / f"iter{iters}.pt", progress=False)
        net, file_meta = models.load_weights(tmp_path / f"iter{iters}.pt")
        assert file_meta["iters"] == iters == meta["pretrain_metrics"]["steps"]
        saved[iters] = state(net)
    assert_same_bits(saved[0], state(init))  # @0 is the seed's initialisation itself
    assert not torch.equal(saved[3]["conv1.weight"], saved[0]["conv1.weight"])
    # 7 iterations = the first 3 and 4 more: the run is one deterministic trajectory
    again = runs.pretrain(model="resnet18", width=4, dataset="digits", data=digits, iters=7, seed=5, cfg=cfg,
                          out=tmp_path / "again.pt", progress=False)
    assert_same_bits(state(models.load_weights(tmp_path / "again.pt")[0]), saved[7])
    assert again["pretrain_metrics"]["curve"][-1]["step"] == 7
    assert not (tmp_path / "iter7.state.pt").exists()  # the resume state is removed once the weights are written


def test_checkpoint_of_another_mask_with_the_same_counts_is_not_resumed(digits, tmp_path):
    checkpoint = tmp_path / "state.pt"
    model = tiny()
    first, second = random_masks(model, seed=1), random_masks(model, seed=2)  # same counts per layer, other bits
    with pytest.raises(Preempted):
        Trainer(model, digits, CFG, seed=0, masks=first, checkpoint=checkpoint, callbacks=[SignalAt(3)],
                progress=False).fit()
    assert Trainer(tiny(), digits, CFG, seed=0, masks=second, checkpoint=checkpoint, progress=False).try_resume() is False
    assert Trainer(tiny(), digits, CFG, seed=0, masks=first, checkpoint=checkpoint, progress=False).try_resume() is True
