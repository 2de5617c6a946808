"""fullspectrum.graph against a straightforward reference: dense eigendecompositions of full square adjacencies."""

import math
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from threadpoolctl import threadpool_limits

from torch import nn

from benchmarks.graph_reference import dense_top_two, expand_groups, straightforward_metrics
from fullspectrum import graph, models, pruning
from fullspectrum.masks import prunable_parameters, weight_groups

RTOL = 1e-5
# Two layers, the second with a non-boolean mask: measuring them must fail naming layer 'b'.
BAD_SECOND_LAYER = {"a": (np.ones((3, 3)), np.ones((3, 3), dtype=bool)), "b": (np.ones((3, 3)), np.ones((3, 3)))}


# The reference, written independently of graph.py (shared with benchmarks/graph_metrics.py).
def reference_metrics(weight: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return straightforward_metrics(weight, mask, dense_top_two)


def grouped_reference(weight: np.ndarray, mask: np.ndarray, groups: int) -> dict[str, float]:
    """A grouped layer measured as its ungrouped equivalent (zeros outside each output's group)."""
    return reference_metrics(expand_groups(weight, groups), expand_groups(mask, groups))


def assert_metrics_close(ours: dict, reference: dict, context="") -> None:
    assert set(graph.METRICS) <= set(ours)
    for key in graph.METRICS:
        a, b = ours[key], reference[key]
        if math.isnan(b):
            assert math.isnan(a), f"{context} {key}: {a} but the reference is undefined"
        else:
            # abs: for values that should be 0, such as the gap between two equal singular values.
            assert a == pytest.approx(b, rel=RTOL, abs=1e-7), f"{context} {key}: {a} vs reference {b}"


def random_layer(shape, density, seed, zero_weights=0.0):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    weight = rng.standard_normal(shape)
    weight[rng.random(shape) < zero_weights] = 0.0
    return weight, mask


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """The reference's eigvalsh on one thread: a second OpenBLAS thread on a shared 2-core machine costs 10x."""
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture
def force_lanczos(monkeypatch):
    """Send every graph (and every connected component) of 2+ nodes on its small side through Lanczos."""
    monkeypatch.setattr(graph, "_LANCZOS_MIN_SIDE", 2)


# ------------------------------------------------------------------------------------------- agreement

SHAPES = [
    (64, 3, 3, 3),     # the 3-channel stem
    (32, 16, 3, 3),
    (64, 32, 1, 1),    # 1x1 shortcut, more outputs than inputs
    (32, 64, 1, 1),
    (10, 64),          # linear head, 10 classes
    (100, 64),         # linear head, 100 classes
    (48, 40),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("density", [0.03, 0.12, 0.4, 1.0])
def test_agrees_with_dense_reference(shape, density):
    seed = hash((shape, density)) % 2**32
    weight, mask = random_layer(shape, density, seed)
    assert_metrics_close(graph.layer_metrics(weight, mask), reference_metrics(weight, mask), f"{shape} {density}")


@pytest.mark.parametrize("lanczos", [True, False], ids=["lanczos", "dense-as-on-gpu"])
@pytest.mark.parametrize("shape,density", [((256, 40, 3, 3), 0.04), ((200, 300), 0.05), ((300, 250), 0.08)])
def test_large_layers_agree_by_either_path(shape, density, lanczos, monkeypatch):
    weight, mask = random_layer(shape, density, seed=7)
    b = mask.reshape(shape[0], -1)
    assert min(b.any(1).sum(), b.any(0).sum()) >= graph._LANCZOS_MIN_SIDE  # the whole layer goes to Lanczos
    if not lanczos:
        monkeypatch.setattr(graph, "_LANCZOS_MIN_SIDE", 10**9)
    assert_metrics_close(graph.layer_metrics(weight, mask), reference_metrics(weight, mask), str(shape))


@pytest.mark.parametrize("seed", range(12))
def test_forced_lanczos_agrees_on_small_and_disconnected_graphs(seed, force_lanczos):
    rng = np.random.default_rng(seed)
    shape = [(12, 9), (20, 4, 2, 2), (6, 30), (40, 3, 3, 3)][seed % 4]
    weight, mask = random_layer(shape, rng.choice([0.05, 0.2, 0.5, 1.0]), seed, zero_weights=0.1 * (seed % 2))
    assert_metrics_close(graph.layer_metrics(weight, mask), reference_metrics(weight, mask), f"seed {seed}")


@pytest.mark.parametrize("lanczos", [False, True])
def test_repeated_top_singular_value_across_components(lanczos, monkeypatch):
    """Two identical disjoint K_{4,5} blocks (plus a small one): s1 = s2, which one-vector Lanczos would miss."""
    if lanczos:
        monkeypatch.setattr(graph, "_LANCZOS_MIN_SIDE", 3)
    mask = np.zeros((11, 12), dtype=bool)
    mask[0:4, 0:5] = mask[4:8, 5:10] = mask[8:11, 10:12] = True
    weight = np.ones(mask.shape)
    ours = graph.layer_metrics(weight, mask)
    assert_metrics_close(ours, reference_metrics(weight, mask))
    s = math.sqrt(20)  # the top singular value of K_{4,5}, twice
    assert ours["delta_r"] == pytest.approx(math.sqrt(46 / 11 - 1) + math.sqrt(46 / 12 - 1) - s)
    assert ours["lambda_gap"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("lanczos", [False, True])
def test_zero_weight_bridge_keeps_weighted_components_apart(lanczos, monkeypatch):
    """A kept weight of exactly 0 joins two identical blocks in B but not in B_w, where s1 = s2 again."""
    if lanczos:
        monkeypatch.setattr(graph, "_LANCZOS_MIN_SIDE", 3)
    mask = np.zeros((8, 10), dtype=bool)
    mask[0:4, 0:5] = mask[4:8, 5:10] = True
    mask[0, 9] = True
    weight = mask * 1.5
    weight[0, 9] = 0.0
    ours = graph.layer_metrics(weight, mask)
    assert_metrics_close(ours, reference_metrics(weight, mask))
    assert ours["lambda_gap"] == pytest.approx(0.0, abs=1e-9)


def test_isolated_rows_and_columns_are_dropped():
    weight, mask = random_layer((40, 60), 0.3, seed=3)
    mask[[0, 5, 17], :] = False
    mask[:, 10:25] = False
    ours = graph.measure_layers({"l": (weight, mask)})["l"]
    assert (ours["n_out"], ours["n_in"]) == (37, 45)
    padded_mask = np.zeros((45, 70), dtype=bool)
    padded_mask[:40, :60] = mask
    padded_weight = np.zeros((45, 70))
    padded_weight[:40, :60] = weight
    assert_metrics_close(graph.layer_metrics(padded_weight, padded_mask), reference_metrics(weight, mask))
    assert_metrics_close(ours, reference_metrics(weight, mask))


def test_single_degree_group():
    rng = np.random.default_rng(5)
    mask = np.zeros((30, 50), dtype=bool)
    for column in range(50):  # every input feeds exactly 4 outputs: one group, the whole layer
        mask[rng.choice(30, 4, replace=False), column] = True
    weight = rng.standard_normal(mask.shape)
    layer = graph._layer(weight, mask)
    assert [d for d, _ in layer.groups] == [4]
    assert_metrics_close(graph.layer_metrics(weight, mask), reference_metrics(weight, mask))


def test_too_sparse_layer_is_undefined_and_imdb_zero():
    mask = np.zeros((20, 30), dtype=bool)
    mask[np.arange(20), np.arange(20)] = True  # a matching: every degree is 1
    ours = graph.layer_metrics(np.ones(mask.shape), mask)
    assert math.isnan(ours["delta_r"]) and math.isnan(ours["lambda_gap"])
    assert ours["delta_r_imdb"] == ours["lambda_imdb"] == ours["l2"] == 0.0


def test_empty_mask():
    ours = graph.measure_layers({"l": (np.ones((8, 4, 3, 3)), np.zeros((8, 4, 3, 3), dtype=bool))})["l"]
    assert (ours["n_out"], ours["n_in"], ours["density"]) == (0, 0, 0.0)
    assert math.isnan(ours["delta_r"]) and math.isnan(ours["dbar_out"])
    assert ours["l2"] == 0.0


def test_weights_that_are_zero_under_the_mask():
    weight, mask = random_layer((50, 40), 0.3, seed=11, zero_weights=0.3)
    assert_metrics_close(graph.layer_metrics(weight, mask), reference_metrics(weight, mask))


# ------------------------------------------------------------------------------------------- layer types

LAYER_TYPES = [  # (id, weight shape, groups, density)
    ("grouped-conv2d", (24, 4, 3, 3), 3, 0.3),       # 12 input channels in 3 groups of 4
    ("grouped-conv2d-sparse", (64, 8, 3, 3), 4, 0.1),
    ("depthwise-conv2d-x4", (64, 1, 3, 3), 16, 0.8),  # 16 channels, 4 outputs each
    ("depthwise-conv2d", (16, 1, 5, 5), 16, 0.6),     # 1 output per channel: every input degree <= 1
    ("conv1d", (20, 6, 5), 1, 0.3),
    ("grouped-conv1d", (20, 3, 5), 2, 0.4),
    ("conv3d", (12, 4, 3, 3, 3), 1, 0.2),
    ("linear", (30, 50), 1, 0.2),
    ("attention-in-proj", (48, 16), 1, 0.3),          # packed q, k, v of embed dim 16
]


@pytest.mark.parametrize("path", ["auto", "gram", "lanczos"])
@pytest.mark.parametrize("shape,groups,density", [t[1:] for t in LAYER_TYPES], ids=[t[0] for t in LAYER_TYPES])
def test_layer_types_agree_with_dense_reference(shape, groups, density, path, monkeypatch):
    if path == "lanczos":
        monkeypatch.setattr(graph, "_LANCZOS_MIN_SIDE", 2)
    weight, mask = random_layer(shape, density, seed=sum(shape) + groups)
    ours = graph.layer_metrics(weight, mask, groups, solver="gram" if path == "gram" else "auto")
    assert_metrics_close(ours, grouped_reference(weight, mask, groups), f"{shape} groups={groups}")


@pytest.mark.parametrize("shape,groups", [((24, 36), 1), ((24, 12), 3), ((16, 9), 16)])
def test_the_gpu_edge_listing_matches_the_cpu_one(shape, groups):
    mask = torch.from_numpy(np.random.default_rng(0).random(shape) < 0.3)
    for ours, theirs in zip(graph._column_major_edges(mask, groups), graph._column_major_edges_torch(mask, groups)):
        assert torch.equal(ours, theirs)


def test_depthwise_with_one_output_per_channel_is_undefined():
    weight, mask = random_layer((16, 1, 5, 5), 0.6, seed=1)
    ours = graph.layer_metrics(weight, mask, 16)
    assert math.isnan(ours["delta_r"]) and math.isnan(ours["lambda_gap"])
    assert ours["delta_r_imdb"] == ours["lambda_imdb"] == ours["l2"] == 0.0


def test_groups_are_not_the_plain_reshape():
    """Grouping keeps the groups' input nodes apart: reading the weight ungrouped would merge them."""
    weight, mask = random_layer((24, 4, 3, 3), 0.9, seed=2)
    grouped, plain = graph.layer_metrics(weight, mask, 3), graph.layer_metrics(weight, mask)
    assert graph.measure_layers({"l": (weight, mask, 3)})["l"]["n_in"] == 3 * 36  # 4 * 3 * 3 inputs per group
    assert grouped["delta_r"] != pytest.approx(plain["delta_r"])


@pytest.mark.parametrize("solver", graph.SOLVERS)
def test_large_grouped_layer_by_either_path(solver):
    weight, mask = random_layer((512, 32, 3, 3), 0.08, seed=3)  # 4 groups of 128 outputs and 288 inputs
    assert_metrics_close(graph.layer_metrics(weight, mask, 4, solver=solver), grouped_reference(weight, mask, 4))


class EveryLayerType(nn.Module):
    """One layer of each kind that carries a weight graph (no forward: only the weights are measured)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(4, 12, 3)
        self.grouped = nn.Conv2d(12, 24, 3, groups=3)
        self.depthwise = nn.Conv2d(24, 48, 3, groups=24)
        self.conv3d = nn.Conv3d(2, 8, 3)
        self.norm = nn.BatchNorm2d(8)
        self.attention = nn.MultiheadAttention(16, 4)
        self.cross_attention = nn.MultiheadAttention(16, 2, kdim=8, vdim=12)
        self.head = nn.Linear(16, 10)


def test_prunable_weights_of_every_layer_type():
    model = EveryLayerType()
    assert list(prunable_parameters(model)) == [
        "conv1d.weight", "grouped.weight", "depthwise.weight", "conv3d.weight", "attention.in_proj_weight",
        "attention.out_proj.weight", "cross_attention.q_proj_weight", "cross_attention.k_proj_weight",
        "cross_attention.v_proj_weight", "cross_attention.out_proj.weight", "head.weight"]
    assert weight_groups(model) == {name: {"grouped.weight": 3, "depthwise.weight": 24}.get(name, 1)
                                    for name in prunable_parameters(model)}


def test_cifar_resnet_prunable_weights_are_its_conv2d_and_linear_weights():
    model = models.build("resnet18", 10, 4)
    expected = [f"{name}.weight" for name, module in model.named_modules()
                if isinstance(module, (nn.Conv2d, nn.Linear))]
    assert list(prunable_parameters(model)) == expected
    assert set(weight_groups(model).values()) == {1}


@pytest.mark.parametrize("solver", graph.SOLVERS)
def test_model_metrics_of_every_layer_type(solver):
    model = EveryLayerType()
    masks = pruning.make_mask(model, "erk", 0.3, seed=0)
    table = graph.model_metrics(model, masks, solver=solver).set_index("layer")
    groups = weight_groups(model)
    for name, param in prunable_parameters(model).items():
        reference = grouped_reference(param.detach().double().numpy(), masks[name].numpy(), groups[name])
        assert_metrics_close(table.loc[name].to_dict(), reference, name)


def test_results_do_not_depend_on_the_other_layers(monkeypatch):
    """Lanczos and dense batches mix layers; a layer's values must not depend on which others are measured with
    it, nor on how the batches are cut."""
    model = models.build_seeded("resnet18", 10, 16, seed=0)
    masks = pruning.make_mask(model, "erk", 0.05, seed=0)
    monkeypatch.setattr(graph, "_LANCZOS_MIN_SIDE", 64)  # width 16: layer4's graphs go to Lanczos
    table = graph.model_metrics(model, masks).set_index("layer")
    params = prunable_parameters(model)
    for names in (list(params)[-4:], list(params)[-1:]):
        subset = graph.measure_layers({name: (params[name], masks[name]) for name in names})
        for name, record in subset.items():
            for key in graph.METRICS:
                assert record[key] == pytest.approx(table.loc[name, key], rel=1e-12, nan_ok=True)
    # nor on how the batches are cut: by the vector cap, by the nonzero cap, or one problem per batch
    for numbers, nonzeros in ((256, 10**9), (10**9, 3000), (1, 1)):
        monkeypatch.setattr(graph, "_LANCZOS_BATCH", numbers)
        monkeypatch.setattr(graph, "_LANCZOS_BATCH_NNZ", nonzeros)
        cut = graph.model_metrics(model, masks).set_index("layer")
        for key in graph.METRICS:
            assert cut[key].to_numpy() == pytest.approx(table[key].to_numpy(), rel=1e-12, nan_ok=True), key
    # nor on how the dense solves are batched: one graph per batch (each over the size cap), or one per padded size
    monkeypatch.undo()
    gram = graph.model_metrics(model, masks, solver="gram").set_index("layer")
    for spread, numbers in ((1, 1), (10**9, 2**40)):
        monkeypatch.setattr(graph, "_DENSE_SPREAD", spread)
        monkeypatch.setattr(graph, "_DENSE_BATCH", numbers)
        cut = graph.model_metrics(model, masks, solver="gram").set_index("layer")
        for key in graph.METRICS:
            assert cut[key].to_numpy() == pytest.approx(gram[key].to_numpy(), rel=1e-12, nan_ok=True), key


def test_worker_threads_change_nothing_but_the_threads(monkeypatch):
    """Allowed two torch threads, model_metrics parses on worker threads and runs the dense solves on one beside
    the Lanczos iterations: the values are bitwise those of one thread, errors still name the layer, and the
    caller's thread setting is restored."""
    model = models.build_seeded("resnet18", 10, 16, seed=0)
    masks = pruning.make_mask(model, "erk", 0.05, seed=0)
    monkeypatch.setattr(graph, "_LANCZOS_MIN_SIDE", 64)  # width 16: layer4's graphs go to Lanczos, the rest dense
    solved_on = []
    solve_dense = graph._solve_dense
    monkeypatch.setattr(graph, "_solve_dense", lambda graphs: (solved_on.append(threading.current_thread().name),
                                                               solve_dense(graphs)))
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = graph.model_metrics(model, masks)
        assert solved_on == ["MainThread"]
        torch.set_num_threads(2)
        threaded = graph.model_metrics(model, masks)
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="layer 'b'"):
            graph.measure_layers(BAD_SECOND_LAYER)
    finally:
        torch.set_num_threads(previous)
    assert len(solved_on) > 1 and all(name.startswith("fullspectrum") for name in solved_on[1:])
    pd.testing.assert_frame_equal(threaded, serial, check_exact=True)


def test_dense_batches_keep_devices_apart():
    """A dense batch is one tensor: graphs on different devices (a model split across GPUs, numpy layers beside
    CUDA ones) never share one. The 'meta' device stands in for a GPU here; the batching reads no values."""
    def graph_on(device: str, n_rows: int, n_cols: int) -> graph._Graph:
        edges = torch.zeros(1, dtype=torch.long, device=device)
        return graph._Graph(edges, edges, torch.ones(1, dtype=torch.float64, device=device), n_rows, n_cols)

    graphs = [graph_on(device, 20, 60 + i) for i in range(3) for device in ("cpu", "meta")]
    batches = list(graph._dense_batches(graphs))
    assert sorted(len(batch) for batch, _, _ in batches) == [3, 3]
    for batch, size, width in batches:
        assert len({g.weights.device for g in batch}) == 1 and (size, width) == (24, 62)


def test_worker_threads_only_for_cpu_layers():
    """Layers on a GPU get no worker threads (they would not share the caller's CUDA stream)."""
    on_cpu = {"numpy": (np.ones((2, 2)), np.ones((2, 2), dtype=bool)),
              "torch": (torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool))}
    assert graph._on_cpu(on_cpu)
    assert not graph._on_cpu({**on_cpu, "gpu": (torch.ones(2, 2, device="meta"), torch.ones(2, 2, dtype=torch.bool))})
    assert not graph._on_cpu({"mask on gpu": (torch.ones(2, 2), torch.ones(2, 2, dtype=torch.bool, device="meta"))})


# ------------------------------------------------------------------------------------------- hand-checked

def test_complete_bipartite_k33_by_hand():
    ours = graph.layer_metrics(np.ones((3, 3)), np.ones((3, 3), dtype=bool))
    # s1 = 3, s2 = 0; all degrees 3; one group (d = 3, 3 inputs, 3 outputs) with c = 3 / 5.
    assert ours["delta_r"] == pytest.approx(2 * math.sqrt(2))
    assert ours["lambda_gap"] == pytest.approx(3.0)
    assert ours["delta_r_imdb"] == pytest.approx(0.6 * 2 * math.sqrt(2))
    assert ours["lambda_imdb"] == pytest.approx(1.8)
    assert ours["l2"] == pytest.approx(math.sqrt(8 + 9 + 0.36 * 8 + 1.8**2))
    four_d = graph.layer_metrics(torch.ones(3, 3, 1, 1), torch.ones(3, 3, 1, 1, dtype=torch.bool))
    assert four_d == pytest.approx(ours)


def test_two_weighted_blocks_by_hand():
    """K_{3,3} with weights 1 and K_{3,3} with weights 2: binary s1 = s2 = 3, weighted s1 = 6, s2 = 3."""
    mask = np.zeros((6, 6), dtype=bool)
    mask[:3, :3] = mask[3:, 3:] = True
    weight = np.where(np.arange(6)[:, None] < 3, 1.0, -2.0) * mask
    ours = graph.layer_metrics(weight, mask)
    c = 6 / 11
    assert ours["delta_r"] == pytest.approx(2 * math.sqrt(2) - 3)
    assert ours["lambda_gap"] == pytest.approx(3.0)
    assert ours["delta_r_imdb"] == pytest.approx(c * (2 * math.sqrt(2) - 3))
    assert ours["lambda_imdb"] == pytest.approx(c * 3.0)


# ------------------------------------------------------------------------------------------- inputs

def test_numpy_and_torch_inputs_agree():
    weight, mask = random_layer((24, 8, 3, 3), 0.2, seed=2)
    from_numpy = graph.layer_metrics(weight, mask)
    from_torch = graph.layer_metrics(torch.nn.Parameter(torch.from_numpy(weight).float()), torch.from_numpy(mask))
    assert from_torch == pytest.approx(from_numpy, rel=1e-6, nan_ok=True)  # float32 weights: 1e-7 rounding
    mixed = graph.layer_metrics(torch.from_numpy(weight), mask)
    assert mixed == pytest.approx(from_numpy, nan_ok=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    weight, mask = random_layer((256, 32, 3, 3), 0.05, seed=4)
    on_gpu = graph.layer_metrics(torch.from_numpy(weight).cuda(), torch.from_numpy(mask).cuda())
    assert on_gpu == pytest.approx(graph.layer_metrics(weight, mask), rel=1e-9, nan_ok=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_metrics_of_every_layer_type_match_the_reference():
    model = EveryLayerType()
    masks = pruning.make_mask(model, "erk", 0.3, seed=0)
    cpu_params = {name: param.detach().double().numpy() for name, param in prunable_parameters(model).items()}
    model.cuda()
    table = graph.model_metrics(model, {name: m.cuda() for name, m in masks.items()}).set_index("layer")
    groups = weight_groups(model)
    for name, weight in cpu_params.items():
        reference = grouped_reference(weight, masks[name].numpy(), groups[name])
        assert_metrics_close(table.loc[name].to_dict(), reference, name)


@pytest.mark.parametrize("weight,mask,message", [
    (np.ones((4, 5)), np.ones((4, 6), dtype=bool), "differs from weight shape"),
    (np.ones((4, 5)), np.ones((4, 5)), "boolean mask"),
    (np.ones((4, 5)), np.ones((4, 5), dtype=np.int64), "boolean mask"),
    (np.ones((2,) * 6), np.ones((2,) * 6, dtype=bool), r"\[C_out, C_in\] or \[C_out, C_in / groups, k...\].*6-D"),
    (np.ones(5), np.ones(5, dtype=bool), "got a 1-D"),
    (np.ones((0, 5)), np.ones((0, 5), dtype=bool), "zero-sized"),
    (np.full((4, 5), np.nan), np.ones((4, 5), dtype=bool), "non-finite"),
    ([[1.0]], np.ones((1, 1), dtype=bool), "numpy array or a torch tensor"),
])
def test_bad_input_is_refused(weight, mask, message):
    with pytest.raises(ValueError, match=message):
        graph.layer_metrics(weight, mask)


@pytest.mark.parametrize("groups", [0, 5, 2.0])
def test_bad_groups_are_refused(groups):
    with pytest.raises(ValueError, match="groups must be a positive divisor of C_out = 8"):
        graph.layer_metrics(np.ones((8, 2, 3, 3)), np.ones((8, 2, 3, 3), dtype=bool), groups)


def test_bad_solver_is_refused():
    with pytest.raises(ValueError, match="solver must be one of"):
        graph.layer_metrics(np.ones((3, 3)), np.ones((3, 3), dtype=bool), solver="eigsh")


def test_measure_layers_names_the_bad_layer():
    with pytest.raises(ValueError, match="layer 'b'"):
        graph.measure_layers(BAD_SECOND_LAYER)


# ------------------------------------------------------------------------------------------- property

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(out_channels=st.integers(1, 40), in_channels=st.integers(1, 12), kernel=st.sampled_from([None, 1, 3]),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_metrics_are_finite_exactly_where_defined(out_channels, in_channels, kernel, density, seed):
    shape = (out_channels, in_channels) if kernel is None else (out_channels, in_channels, kernel, kernel)
    weight, mask = random_layer(shape, density, seed)
    ours = graph.layer_metrics(weight, mask)
    b = mask.reshape(out_channels, -1)
    edges, n_out, n_in = b.sum(), b.any(1).sum(), b.any(0).sum()
    defined = bool(n_out) and edges >= 3 * n_out and edges > n_in
    for key in ("delta_r", "lambda_gap"):
        assert math.isfinite(ours[key]) == defined and (defined or math.isnan(ours[key]))
    for key in ("delta_r_imdb", "lambda_imdb", "l2"):
        assert math.isfinite(ours[key])
    assert ours["l2"] >= 0 and ours["lambda_imdb"] >= 0 and (not defined or ours["lambda_gap"] >= -1e-9)


# ------------------------------------------------------------------------------------------- model level

def test_model_metrics_table():
    model = models.build_seeded("resnet18", 10, 8, seed=0)
    masks = pruning.make_mask(model, "erk", 0.1, seed=0)
    table = graph.model_metrics(model, masks)
    params = prunable_parameters(model)
    assert list(table.columns) == list(graph.COLUMNS)
    assert list(table["layer"]) == [*params, "model_mean"]
    layers, mean = table.iloc[:-1], table.iloc[-1]
    for key in graph.METRICS:
        assert mean[key] == pytest.approx(layers[key].dropna().mean())
    assert mean["density"] == pytest.approx(sum(int(m.sum()) for m in masks.values())
                                            / sum(p.numel() for p in params.values()))
    assert pd.isna(mean["n_out"])
    row = table.set_index("layer").loc["layer2.0.conv1.weight"]
    assert row["shape"] == "16x8x3x3"
    expected = graph.layer_metrics(params["layer2.0.conv1.weight"], masks["layer2.0.conv1.weight"])
    assert row[list(graph.METRICS)].to_dict() == pytest.approx(expected, nan_ok=True)
    subset = graph.measure_layers({"linear.weight": (params["linear.weight"], masks["linear.weight"])})
    assert subset["linear.weight"]["l2"] == pytest.approx(table.set_index("layer").loc["linear.weight", "l2"])


def test_model_metrics_refuses_a_mask_for_another_model():
    model = models.build("resnet18", 10, 4)
    masks = pruning.make_mask(models.build("resnet18", 10, 8), "erk", 0.1, seed=0)
    with pytest.raises(ValueError, match="shape"):
        graph.model_metrics(model, masks)
