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
