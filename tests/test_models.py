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
