"""The training loop's own SGD: bit for bit torch.optim.SGD, masks kept in the step, no torch._dynamo import."""

import subprocess
import sys

import pytest
import torch

from fullspectrum.sgd import MaskedSGD

LRS = (0.1, 0.1, 0.05, 0.01, 0.01)


def params_and_grads(seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(4, 3, 3, 3), (10, 4), (10,)]
    params = [torch.nn.Parameter(torch.randn(s, generator=generator)) for s in shapes]
    grads = [[torch.randn(s, generator=generator) for s in shapes] for _ in LRS]
    return params, grads


@pytest.mark.parametrize("momentum,weight_decay,nesterov", [(0.9, 5e-4, True), (0.9, 5e-4, False), (0.0, 1e-3, False),
                                                            (0.9, 0.0, True)])
def test_steps_equal_torch_sgd_bit_for_bit(momentum, weight_decay, nesterov):
    mine, grads = params_and_grads()
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    optimizer = MaskedSGD(mine, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    reference = torch.optim.SGD(theirs, lr=LRS[0], momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    for lr, step_grads in zip(LRS, grads):
        for a, b, g in zip(mine, theirs, step_grads):
            a.grad, b.grad = g.clone(), g.clone()
        optimizer.step(lr)
        for group in reference.param_groups:
            group["lr"] = lr
        reference.step()
    for a, b in zip(mine, theirs):
        assert torch.equal(a, b)
    if momentum:
        for a, b in zip(mine, theirs):
            assert torch.equal(optimizer.momentum_buffer(a), reference.state[b]["momentum_buffer"])


def test_masks_zero_weights_and_momentum_and_the_state_round_trips():
    params, grads = params_and_grads(1)
    optimizer = MaskedSGD(params, momentum=0.9, weight_decay=5e-4, nesterov=True)
    mask = torch.rand(params[0].shape, generator=torch.Generator().manual_seed(2)) < 0.3
    optimizer.set_masks([params[0]], [mask.float()])
    assert not params[0][~mask].any()  # zeroed on installation
    for lr, step_grads in zip(LRS, grads):
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        optimizer.step(lr)
        assert not params[0][~mask].any() and not optimizer.momentum_buffer(params[0])[~mask].any()
        assert params[1].ne(0).all()  # an unmasked parameter is left alone
    restored = MaskedSGD(params, momentum=0.9, weight_decay=5e-4, nesterov=True)
    restored.load_state_dict(optimizer.state_dict())
    for a, b in zip(restored.buffers, optimizer.buffers):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="does not fit"):
        MaskedSGD(params[:2], momentum=0.9, weight_decay=0.0, nesterov=False).load_state_dict(optimizer.state_dict())


def test_training_never_imports_torch_dynamo(digits_path):
    """torch.optim imports torch._dynamo (2-3 s of every job's start-up); the training loop must not."""
    script = f"""
import sys
from fullspectrum import data, models, train
net = models.build_seeded("resnet18", 10, 2, 0)
cfg = train.TrainConfig(epochs=1, max_steps=2, batch_size=32)
train.Trainer(net, data.DeviceData({str(digits_path)!r}), cfg, seed=0, progress=False).fit()
assert "torch._dynamo" not in sys.modules, "training imported torch._dynamo"
"""
    subprocess.run([sys.executable, "-c", script], check=True)


def test_a_foreign_or_older_optimiser_state_is_refused_and_a_resume_starts_over(digits, tmp_path):
    params, _ = params_and_grads()
    with pytest.raises(ValueError, match="Nesterov"):
        MaskedSGD(params, momentum=0.0, weight_decay=0.0, nesterov=True)
    with pytest.raises(ValueError, match="not a MaskedSGD state"):  # torch.optim.SGD's state_dict layout
        MaskedSGD(params, momentum=0.9, weight_decay=0.0, nesterov=False).load_state_dict(
            {"state": {}, "param_groups": [{"lr": 0.1}]})

    from fullspectrum import models
    from fullspectrum.torch_io import load_torch, save_torch
    from fullspectrum.train import Trainer, TrainConfig

    cfg, checkpoint = TrainConfig(epochs=2, batch_size=256), tmp_path / "state.pt"
    Trainer(models.build_seeded("resnet18", 10, 2, 0), digits, cfg, seed=0, checkpoint=checkpoint,
            progress=False).fit()
    state = load_torch(checkpoint, what="checkpoint")
    state["optimizer"] = {"state": {}, "param_groups": [{"lr": 0.1}]}  # as an older version of the loop saved it
    save_torch(state, checkpoint)
    fresh = models.build_seeded("resnet18", 10, 2, 0)
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    trainer = Trainer(fresh, digits, cfg, seed=0, checkpoint=checkpoint, progress=False)
    assert trainer.try_resume() is False and trainer.step == 0
    assert all(torch.equal(v, initial[k]) for k, v in trainer.model.state_dict().items())  # nothing taken over
