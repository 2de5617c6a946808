import pytest
import torch

from fullspectrum import masks, models


def test_resnet18_parameter_counts_match_the_cifar_reference():
    net = models.build("resnet18", 10)
    prunable = masks.prunable_parameters(net)
    assert sum(p.numel() for p in net.parameters()) == 11_173_962
    assert len(prunable) == 21
    assert sum(p.numel() for p in prunable.values()) == 11_164_352
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "linear.weight"} <= set(prunable)


def test_resnet34_has_36_prunable_layers_and_width_scales():
    net = models.build("resnet34", 100, width=8)
    prunable = masks.prunable_parameters(net)
    assert len(prunable) == 1 + 2 * (3 + 4 + 6 + 3) + 3 + 1
    assert prunable["linear.weight"].shape == (100, 64)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_seeded_build_is_reproducible_and_weights_file_round_trips(tmp_path):
    a, b = models.build_seeded("resnet18", 10, 4, 7), models.build_seeded("resnet18", 10, 4, 7)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    models.save_weights(tmp_path / "w.pt", a, {"model": "resnet18", "num_classes": 10, "width": 4})
    c, meta = models.load_weights(tmp_path / "w.pt")
    assert meta["width"] == 4
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        models.build("vgg16", 10)


def test_the_seed_initialisation_is_the_authors_init_random():
    """Conv N(0, sqrt(2 / (k*k*C_out))), BatchNorm scale 0.5 and shift 0, Linear N(0, 0.01), zero biases."""
    net = models.build_seeded("resnet18", 100, 64, 0)
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            k, out = module.kernel_size[0], module.out_channels
            w = module.weight.detach().double()
            expected = (2.0 / (k * k * out)) ** 0.5
            assert abs(w.mean()) < 4 * expected / w.numel() ** 0.5, name  # mean 0 within 4 standard errors
            assert w.std().item() == pytest.approx(expected, rel=0.05 if w.numel() > 5000 else 0.2), name
        elif isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.weight == 0.5) and torch.all(module.bias == 0), name
    linear = net.linear
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.05) and torch.all(linear.bias == 0)
    default = models.build_seeded("resnet18", 100, 64, 0, init="pytorch")
    assert torch.all(default.bn1.weight == 1.0)  # PyTorch's own stays available
    with pytest.raises(ValueError, match="unknown initialisation"):
        models.build_seeded("resnet18", 10, 4, 0, init="xavier")


def test_pretraining_starts_from_pytorchs_initialisation_and_iter0_is_the_authors(tmp_path, digits):
    """@N: PyTorch's default initialisation under the seed (BatchNorm scale 1, conv weights inside the
    Kaiming-uniform bound 1/sqrt(fan_in)), as lth_tickets_pretraining.py; @0: the authors' init_random (scale 0.5).
    The @N step here moves the weights by at most lr * gradient ~ 1e-9, so they are still the start."""
    from fullspectrum import runs, train
    cfg = train.TrainConfig(epochs=1, batch_size=64, lr=1e-9, momentum=0.0, weight_decay=0.0)
    common = dict(model="resnet18", width=4, dataset="digits", data=digits, seed=3, cfg=cfg, progress=False)
    runs.pretrain(iters=1, init="pytorch", out=tmp_path / "iter1.pt", **common)
    runs.pretrain(iters=0, init="authors", out=tmp_path / "iter0.pt", **common)
    pretrained, meta = models.load_weights(tmp_path / "iter1.pt")
    assert meta["init"] == "pytorch" and meta["pretrain_metrics"]["steps"] == 1
    for name, module in pretrained.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.allclose(module.weight, torch.ones_like(module.weight), atol=1e-6), name
        elif isinstance(module, torch.nn.Conv2d):
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            assert module.weight.abs().max() <= fan_in ** -0.5 + 1e-6, name
    start = models.build_seeded("resnet18", 10, 4, 3, init="pytorch")
    assert torch.allclose(pretrained.conv1.weight, start.conv1.weight, atol=1e-6)  # that seed's own draw
    iter0, meta0 = models.load_weights(tmp_path / "iter0.pt")
    assert meta0["init"] == "authors" and torch.all(iter0.bn1.weight == 0.5)


def test_the_authors_head_has_100_outputs_and_no_bias(tmp_path, digits):
    from fullspectrum import runs, train
    cfg = train.TrainConfig(epochs=1, batch_size=64, lr=0.1, momentum=0.9, weight_decay=5e-4)
    meta = runs.pretrain(model="resnet18", width=4, dataset="digits", data=digits, iters=2, seed=0, cfg=cfg,
                         init="pytorch", outputs=100, head_bias=False, out=tmp_path / "w.pt", progress=False)
    assert (meta["num_classes"], meta["classes"], meta["head_bias"]) == (100, 10, False)
    net, _ = models.load_weights(tmp_path / "w.pt")
    assert net.linear.out_features == 100 and net.linear.bias is None
    assert "linear.weight" in masks.prunable_parameters(net)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 100)
    with pytest.raises(ValueError, match="cannot predict"):
        runs.pretrain(model="resnet18", width=4, dataset="digits", data=digits, iters=0, seed=0, cfg=cfg,
                      outputs=5, out=tmp_path / "x.pt", progress=False)
