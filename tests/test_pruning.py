"""PaI masks (fullspectrum.pruning) against independent computations on small networks."""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
import torch.nn.functional as F
from torch.func import functional_call

from fullspectrum import models, pruning
from fullspectrum.masks import prunable_parameters


# ------------------------------------------------------------------------------------------------- helpers


def tiny_net(seed: int = 0, dtype=torch.float32) -> nn.Module:
    """Conv/BN/Linear net small enough for exact references; BN has non-trivial running statistics."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 1, bias=True), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5),
    )
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.to(dtype)


def batches_for(seed: int, count: int = 2, size: int = 6, hw: int = 8, classes: int = 5, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, hw, hw, generator=generator, dtype=dtype),
             torch.randint(0, classes, (size,), generator=generator)) for _ in range(count)]


def reference_topk(scores: dict[str, torch.Tensor], density: float) -> dict[str, np.ndarray]:
    """Keep round(density * N) highest scores; ties in index order (a stable sort of the negated scores)."""
    flat = np.concatenate([s.detach().cpu().double().numpy().ravel() for s in scores.values()])
    k = int(round(density * flat.size))
    order = np.argsort(-flat, kind="stable")
    keep = np.zeros(flat.size, dtype=bool)
    keep[order[:k]] = True
    out, offset = {}, 0
    for name, s in scores.items():
        out[name] = keep[offset:offset + s.numel()].reshape(tuple(s.shape))
        offset += s.numel()
    return out


def assert_same_masks(masks, expected):
    assert list(masks) == list(expected)
    for name in expected:
        got = masks[name].cpu().numpy()
        assert got.dtype == bool
        np.testing.assert_array_equal(got, np.asarray(expected[name]), err_msg=name)


def kept(masks) -> int:
    return sum(int(m.sum()) for m in masks.values())


def total(masks) -> int:
    return sum(m.numel() for m in masks.values())


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(3)
    return models.build("resnet18", 10, width=4)


@pytest.fixture(scope="module")
def cifar_batches():
    return batches_for(11, count=2, size=4, hw=16, classes=10)


# --------------------------------------------------------------------------------- methods vs references


def test_snip_matches_hand_computed_gradients():
    net = tiny_net(1)
    batches = batches_for(2)
    reference = copy.deepcopy(net).eval()
    for x, y in batches:  # gradients of the batches accumulate in .grad
        F.cross_entropy(reference(x), y).backward()
    expected_scores = {name: (p.grad * p).abs().detach() for name, p in prunable_parameters(reference).items()}

    got_scores = pruning.scores(net, "snip", batches)
    for name in expected_scores:
        torch.testing.assert_close(got_scores[name], expected_scores[name], rtol=1e-5, atol=1e-9)
    assert_same_masks(pruning.make_mask(net, "snip", 0.3, batches), reference_topk(expected_scores, 0.3))


@pytest.mark.parametrize("count", [1, 3])  # one batch: only the kept graph; three: recomputed graphs too
def test_grasp_matches_functional_hessian_vector_product(count):
    net = tiny_net(4, dtype=torch.float64).eval()
    batches = batches_for(5, count=count, dtype=torch.float64)
    names = list(prunable_parameters(net))
    fixed = {k: v.detach() for k, v in {**dict(net.named_parameters()), **dict(net.named_buffers())}.items()
             if k not in names}
    weights = tuple(prunable_parameters(net)[n].detach().clone() for n in names)

    def loss(*ws):
        state = {**fixed, **dict(zip(names, ws))}
        return sum(F.cross_entropy(functional_call(net, state, (x,)) / 200.0, y) for x, y in batches)

    grad = torch.autograd.grad(loss(*[w.requires_grad_() for w in weights]), weights)
    weights = tuple(w.detach() for w in weights)
    _, hg = torch.autograd.functional.hvp(loss, weights, tuple(g.detach() for g in grad))
    expected = {n: w * h for n, w, h in zip(names, weights, hg)}

    got = pruning.scores(net, "grasp", batches)
    for name in names:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-7, atol=1e-14)
    # Highest w * Hg are kept (the original removes the largest -w * Hg).
    assert_same_masks(pruning.make_mask(net, "grasp", 0.4, batches), reference_topk(expected, 0.4))


def synflow_reference(net: nn.Module, density: float, rounds: int, input_shape=(3, 32, 32)):
    """A straightforward SynFlow loop: abs-valued float64 copy, masks applied inside the forward pass."""
    model = copy.deepcopy(net).double().eval()
    state = {k: (v.abs() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    names = list(prunable_parameters(model))
    masks = {n: torch.ones_like(state[n], dtype=torch.bool) for n in names}
    ones = torch.ones((1, *input_shape), dtype=torch.float64)
    n_total = sum(m.numel() for m in masks.values())
    for t in range(1, rounds + 1):
        weights = {n: state[n].clone().requires_grad_() for n in names}
        current = {**state, **{n: weights[n] * masks[n] for n in names}}
        functional_call(model, current, (ones,)).sum().backward()
        scores = {}
        for n in names:
            s = (weights[n].grad * state[n]).abs()
            s[~masks[n]] = -math.inf
            scores[n] = s
        k_density = round(density ** (t / rounds) * n_total) / n_total
        masks = {n: torch.from_numpy(m) for n, m in reference_topk(scores, k_density).items()}
    return masks


def test_synflow_matches_straightforward_loop():
    net = tiny_net(8)
    expected = synflow_reference(net, 0.2, 100, input_shape=(3, 8, 8))
    got = pruning.make_mask(net, "synflow", 0.2, batches=batches_for(0, count=1, hw=8))
    assert_same_masks(got, expected)
    assert kept(got) == round(0.2 * total(got))


def test_synflow_on_resnet_matches_reference_with_few_rounds(resnet):
    expected = synflow_reference(resnet, 0.1, 5)
    assert_same_masks(pruning.make_mask(resnet, "synflow", 0.1, rounds=5), expected)


def test_synflow_one_shot_scores(resnet):
    model = copy.deepcopy(resnet).double().eval()
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.abs_()
    model(torch.ones(1, 3, 32, 32, dtype=torch.float64)).sum().backward()
    got = pruning.scores(resnet, "synflow")
    for name, p in prunable_parameters(model).items():
        torch.testing.assert_close(got[name], (p.grad * p).abs().detach(), rtol=1e-10, atol=0)


def test_magnitude_matches_numpy_sort_with_ties():
    net = tiny_net(9)
    with torch.no_grad():  # coarse quantisation creates many exact ties at the threshold
        for p in prunable_parameters(net).values():
            p.copy_((p * 10).round() / 10)
    expected = reference_topk({n: p.abs() for n, p in prunable_parameters(net).items()}, 0.37)
    assert_same_masks(pruning.make_mask(net, "magnitude", 0.37), expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=12), min_size=1, max_size=4),
       st.floats(0.0, 1.0))
def test_global_topk_mask_matches_stable_sort(values, density):
    scores = {f"l{i}": torch.tensor(v, dtype=torch.float32) for i, v in enumerate(values)}
    assert_same_masks(pruning.global_topk_mask(scores, density), reference_topk(scores, density))


def test_global_topk_mask_exact_k_and_nan():
    scores = {"a": torch.tensor([1.0, float("nan"), 3.0]), "b": torch.tensor([[2.0, 2.0], [0.0, -math.inf]])}
    masks = pruning.global_topk_mask(scores, k=3)
    assert masks["a"].tolist() == [False, False, True] and masks["b"].tolist() == [[True, True], [False, False]]
    assert kept(pruning.global_topk_mask(scores, k=0)) == 0 and kept(pruning.global_topk_mask(scores, 1.0)) == 7
    with pytest.raises(ValueError):
        pruning.global_topk_mask(scores, 0.5, k=2)
    with pytest.raises(ValueError):
        pruning.global_topk_mask(scores, k=8)


# ------------------------------------------------------------------------------------------------------- ERK


def test_erk_densities_hand_computed_case_with_dense_layers():
    shapes = {"a": (8, 3, 3, 3), "b": (64, 64, 3, 3), "c": (10, 64)}
    # raw ratios 23/216, 134/36864, 74/640: the linear layer c, then a, exceed density 1 and become dense;
    # b then carries the rest of the 0.5 * 37720 weights.
    got = pruning.erk_layer_densities(shapes, 0.5)
    assert got["a"] == 1.0 and got["c"] == 1.0
    assert got["b"] == pytest.approx((0.5 * 37720 - 216 - 640) / 36864, rel=1e-12)


def test_erk_densities_follow_formula_on_resnet(resnet):
    params = prunable_parameters(resnet)
    for density in (0.05, 0.3, 0.8):
        got = pruning.erk_layer_densities(resnet, density)
        assert list(got) == list(params)
        raw = {n: sum(p.shape) / p.numel() for n, p in params.items()}
        numel = {n: p.numel() for n, p in params.items()}
        dense = {n for n, d in got.items() if d == 1.0}
        sparse = [n for n in params if n not in dense]
        # One epsilon for every sparse layer, the global density met, no layer above 1.
        eps = (density * sum(numel.values()) - sum(numel[n] for n in dense)) / sum(raw[n] * numel[n] for n in sparse)
        for n in sparse:
            assert got[n] == pytest.approx(eps * raw[n], rel=1e-9)
            assert got[n] <= 1.0
        # Every dense layer would have exceeded density 1 with the final epsilon.
        assert all(eps * raw[n] >= 1.0 for n in dense)
        assert sum(got[n] * numel[n] for n in params) == pytest.approx(density * sum(numel.values()), rel=1e-9)
    assert any(d == 1.0 for d in pruning.erk_layer_densities(resnet, 0.8).values())
    assert pruning.erk_layer_densities(resnet, 0.05) == pruning.erk_layer_densities(
        {n: tuple(p.shape) for n, p in params.items()}, 0.05)


def test_erk_and_random_exact_per_layer_counts(resnet):
    params = prunable_parameters(resnet)
    densities = pruning.erk_layer_densities(resnet, 0.1)
    erk = pruning.make_mask(resnet, "erk", 0.1, seed=5)
    rnd = pruning.make_mask(resnet, "random", 0.1, seed=5)
    for name, p in params.items():
        assert int(erk[name].sum()) == round(densities[name] * p.numel())
        assert int(rnd[name].sum()) == round(0.1 * p.numel())
    assert not all(torch.equal(a, b) for a, b in zip(erk.values(), pruning.make_mask(resnet, "erk", 0.1, seed=6).values()))


# ---------------------------------------------------------------------------------------- shared contract


@pytest.mark.parametrize("method", pruning.METHODS)
def test_contract_counts_determinism_and_untouched_model(method, resnet, cifar_batches):
    model = copy.deepcopy(resnet).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    first = pruning.make_mask(model, method, 0.2, cifar_batches, seed=7)
    second = pruning.make_mask(model, method, 0.2, cifar_batches, seed=7)

    assert list(first) == list(prunable_parameters(model))
    for name, p in prunable_parameters(model).items():
        assert first[name].dtype == torch.bool and first[name].shape == p.shape
        assert torch.equal(first[name], second[name])
    if method in pruning.GLOBAL_METHODS:
        assert kept(first) == round(0.2 * total(first))
    # The caller's model is untouched: weights, BN statistics, mode, grads and the global RNG.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(p.grad is None and p.requires_grad for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng_before)


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_data_driven_masks_depend_on_the_batches(method, resnet):
    a = pruning.make_mask(resnet, method, 0.2, batches_for(1, size=4, hw=16, classes=10))
    b = pruning.make_mask(resnet, method, 0.2, batches_for(2, size=4, hw=16, classes=10))
    changed = sum(int((a[n] ^ b[n]).sum()) for n in a)
    assert changed > 0


def test_noise_gives_seeded_candidates(resnet):
    base = pruning.make_mask(resnet, "synflow", 0.1, rounds=10)
    one = pruning.make_mask(resnet, "synflow", 0.1, seed=1, noise=0.05, rounds=10)
    again = pruning.make_mask(resnet, "synflow", 0.1, seed=1, noise=0.05, rounds=10)
    two = pruning.make_mask(resnet, "synflow", 0.1, seed=2, noise=0.05, rounds=10)
    assert all(torch.equal(one[n], again[n]) for n in one)
    assert any(not torch.equal(one[n], two[n]) for n in one)
    assert any(not torch.equal(one[n], base[n]) for n in one)
    assert kept(one) == kept(base) == round(0.1 * total(base))
    # Without noise the seed does not matter for a deterministic method.
    assert all(torch.equal(base[n], m) for n, m in pruning.make_mask(resnet, "synflow", 0.1, seed=9, rounds=10).items())


def test_layer_collapse_is_reported(caplog):
    net = tiny_net(10)
    with torch.no_grad():
        net[3].weight.mul_(1e-6)  # the second convolution loses to every other weight by magnitude
    with caplog.at_level(logging.WARNING, logger="fullspectrum.pruning"):
        masks = pruning.make_mask(net, "magnitude", 0.3)
    assert pruning.collapsed_layers(masks) == ["3.weight"]
    assert "layer collapse" in caplog.text and "3.weight" in caplog.text


def test_bad_arguments(resnet, cifar_batches):
    with pytest.raises(ValueError, match="unknown pruning method"):
        pruning.make_mask(resnet, "lottery", 0.1)
    for density in (0, 1, 1.5, -0.1, float("nan"), "x"):
        with pytest.raises(ValueError, match="density"):
            pruning.make_mask(resnet, "magnitude", density)
    for method in ("snip", "grasp"):
        with pytest.raises(ValueError, match="needs scoring batches"):
            pruning.make_mask(resnet, method, 0.1)
        with pytest.raises(ValueError, match="needs scoring batches"):
            pruning.make_mask(resnet, method, 0.1, batches=[])
    with pytest.raises(ValueError, match="noise"):
        pruning.make_mask(resnet, "magnitude", 0.1, noise=-1.0)
    with pytest.raises(ValueError, match="no per-weight score"):
        pruning.scores(resnet, "erk")
    with pytest.raises(ValueError, match="density"):
        pruning.erk_layer_densities(resnet, 1.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", pruning.METHODS)
def test_masks_on_cuda_match_cpu(method, resnet, cifar_batches):
    cpu = pruning.make_mask(resnet, method, 0.2, cifar_batches, seed=3)
    gpu = pruning.make_mask(copy.deepcopy(resnet).cuda(), method, 0.2, cifar_batches, seed=3)
    assert all(m.is_cuda for m in gpu.values())
    if method in ("erk", "random", "magnitude"):
        assert all(torch.equal(cpu[n], gpu[n].cpu()) for n in cpu)
    else:  # floating-point kernels differ between devices: allow a few swaps at the threshold
        differ = sum(int((cpu[n] ^ gpu[n].cpu()).sum()) for n in cpu)
        assert differ <= 0.01 * kept(cpu)
        assert kept(gpu) == kept(cpu)


@pytest.mark.parametrize("count", [0, 3, 5, 8, 12])
def test_trim_or_top_up_against_a_sorted_reference(count):
    scores = {"a": torch.tensor([[0.5, 0.1], [0.9, 0.1]]), "b": torch.tensor([0.7, 0.3, 0.1, 0.8, 0.2, 0.6, 0.4, 0.0])}
    masks = {"a": torch.tensor([[True, True], [False, True]]),
             "b": torch.tensor([True, False, False, True, True, False, False, True])}
    out = pruning.trim_or_top_up(masks, scores, count)
    flat_mask = torch.cat([masks["a"].flatten(), masks["b"]]).numpy()
    flat_scores = torch.cat([scores["a"].flatten(), scores["b"]]).numpy()
    expected = flat_mask.copy()
    kept = int(flat_mask.sum())  # 6
    # stable sort: among equal scores the earlier weight wins, as in global_topk_mask
    if count < kept:
        inside = np.flatnonzero(flat_mask)
        order = inside[np.argsort(-flat_scores[inside], kind="stable")]
        expected[order[count:]] = False
    elif count > kept:
        outside = np.flatnonzero(~flat_mask)
        order = outside[np.argsort(-flat_scores[outside], kind="stable")]
        expected[order[:count - kept]] = True
    got = torch.cat([out["a"].flatten(), out["b"]]).numpy()
    assert got.sum() == count and (got == expected).all()
    assert out["a"].shape == (2, 2) and out["a"].dtype == torch.bool
    with pytest.raises(ValueError, match="count"):
        pruning.trim_or_top_up(masks, scores, 13)
