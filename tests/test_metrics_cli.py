"""`fullspectrum metrics` and fullspectrum.measure: models, weights and masks made outside the project."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import torchvision
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn.utils import prune

from benchmarks.graph_reference import dense_top_two, eigsh_top_two, expand_groups, straightforward_metrics
from fullspectrum import __main__ as command, graph, measure, models
from fullspectrum.masks import prunable_parameters, pruned_masks, save_mask_file, weight_groups

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4  # the agreement for a model measured from the command line


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    with threadpool_limits(1, user_api="blas"):
        yield


def reference(weight: torch.Tensor, mask: torch.Tensor, groups: int) -> dict[str, float]:
    """Straight from the definitions, on the ungrouped layer's full square adjacency (eigsh when it is large)."""
    w, m = expand_groups(weight.detach().double().numpy(), groups), expand_groups(mask.numpy(), groups)
    b = m.reshape(m.shape[0], -1)
    nodes = b.any(1).sum() + b.any(0).sum()
    return straightforward_metrics(w, m, dense_top_two if nodes <= 700 else eigsh_top_two)


def assert_table_matches_reference(table: pd.DataFrame, model: nn.Module, masks, rtol: float) -> None:
    rows = table.set_index("layer")
    groups = weight_groups(model)
    for name, param in prunable_parameters(model).items():
        expected = reference(param, masks[name].cpu(), groups[name])
        for key in graph.METRICS:
            got = rows.loc[name, key]
            if math.isnan(expected[key]):
                assert math.isnan(got) and key in rows.loc[name, "undefined"].split(), f"{name} {key}"
            else:
                assert got == pytest.approx(expected[key], rel=rtol, abs=1e-7), f"{name} {key}"
    assert rows.index[-1] == "model_mean"
    assert rows.loc["model_mean", "l2"] == pytest.approx(rows["l2"].iloc[:-1].mean())


class Small(nn.Module):
    """A grouped conv, a depthwise conv, a Conv1d, an attention block and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(8, 24, 3, groups=2)
        self.depthwise = nn.Conv2d(24, 72, 3, groups=24)
        self.conv1d = nn.Conv1d(6, 16, 5)
        self.attention = nn.MultiheadAttention(16, 4)
        self.head = nn.Linear(16, 10)


def random_masks(model: nn.Module, density: float, seed: int) -> dict[str, torch.Tensor]:
    """Masks made the way a user would, with plain torch."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.rand(param.shape, generator=generator) < density
            for name, param in prunable_parameters(model).items()}


# ------------------------------------------------------------------------------------ torch.nn.utils.prune

def test_torch_prune_masks_are_read_from_the_model():
    torch.manual_seed(0)
    model = Small()
    prune.random_unstructured(model.grouped, "weight", amount=0.6)
    prune.l1_unstructured(model.depthwise, "weight", amount=0.3)
    prune.random_unstructured(model.attention, "in_proj_weight", amount=0.7)
    prune.l1_unstructured(model.attention.out_proj, "weight", amount=0.5)
    found = pruned_masks(model)
    assert list(found) == ["grouped.weight", "depthwise.weight", "attention.in_proj_weight",
                           "attention.out_proj.weight"]
    assert torch.equal(found["grouped.weight"], model.grouped.weight_mask.bool())
    assert prunable_parameters(model)["grouped.weight"] is model.grouped.weight_orig
    masks, dense = measure.with_dense(found, model)
    assert dense == ["conv1d.weight", "head.weight"] and bool(masks["head.weight"].all())
    table = measure.metrics_table(model, masks)
    assert_table_matches_reference(table, model, masks, rtol=1e-5)


def test_a_pruned_state_dict_carries_weights_and_masks():
    torch.manual_seed(1)
    model = Small()
    prune.random_unstructured(model.conv1d, "weight", amount=0.5)
    fresh = Small()
    found = measure.load_state(fresh, model.state_dict(), "test")
    assert list(found) == ["conv1d.weight"]
    assert torch.equal(found["conv1d.weight"], model.conv1d.weight_mask.bool())
    assert torch.equal(fresh.conv1d.weight, model.conv1d.weight_orig)


# ------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize("change,message", [
    (lambda m: m.pop("depthwise.weight"), "no mask for prunable weight 'depthwise.weight'"),
    (lambda m: m.update({"conv1d.weight": torch.ones(16, 6, 3, dtype=torch.bool)}),
     r"mask 'conv1d.weight' has shape \(16, 6, 3\) but the model's weight has \(16, 6, 5\)"),
    (lambda m: m.update({"extra.weight": torch.ones(2, 2, dtype=torch.bool)}), "'extra.weight'"),
    (lambda m: m.update({"head.weight": torch.full((10, 16), 0.5)}), "'head.weight' is not a mask"),
])
def test_a_mask_that_does_not_fit_is_refused_naming_the_first_mismatch(tmp_path, change, message):
    model = Small()
    masks = random_masks(model, 0.5, seed=0)
    change(masks)
    torch.save(masks, tmp_path / "mask.pt")
    with pytest.raises(ValueError, match=message):
        measure.read_masks(tmp_path / "mask.pt", model)


def test_command_refuses_a_mask_for_another_model_in_one_line(tmp_path, capsys):
    masks = random_masks(models.build("resnet18", 10, 8), 0.2, seed=0)
    torch.save(masks, tmp_path / "mask.pt")
    with pytest.raises(SystemExit) as exit_info:
        command.main(["metrics", "--model", "resnet18", "--width", "4", "--mask", str(tmp_path / "mask.pt")])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "mask 'conv1.weight' has shape (8, 3, 3, 3)" in error


def unreadable_files(folder: Path) -> dict[str, Path]:
    """Files a user might pass by mistake, none of them torch's: each must end in one line, whatever it holds."""
    folder.mkdir(parents=True, exist_ok=True)
    real = folder / "real.pt"
    torch.save(random_masks(models.build("resnet18", 10, 4), 0.2, seed=0), real)
    contents = {
        "text": b"hello world\nthese are notes, not weights\n",  # torch's unpickler raised KeyError: 101
        "csv": b"layer,density\nconv1.weight,0.2\n",
        "json": b'{"conv1.weight": [1, 0, 1]}',
        "empty": b"",
        "random": bytes(range(256)) * 3,
        "truncated": real.read_bytes()[: real.stat().st_size // 2],
        "zip of text": b"PK\x03\x04" + b"\x00" * 60,
        "python": b"import os\nos.system('echo hi')\n",
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.pt"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("option", ["--weights", "--mask"])
def test_an_unreadable_file_ends_in_one_line_whatever_it_holds(tmp_path, capsys, option):
    for name, path in unreadable_files(tmp_path).items():
        with pytest.raises(SystemExit) as exit_info:
            command.main(["metrics", "--model", "resnet18", "--width", "4", option, str(path), "--random-mask", "erk",
                          "--density", "0.2"] if option == "--weights" else
                         ["metrics", "--model", "resnet18", "--width", "4", option, str(path)])
        assert exit_info.value.code == 1, name
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and "Traceback" not in error, (name, error)
        assert error.startswith("error: ") and "is not a readable torch file" in error, (name, error)
        assert str(path) in error and "weights_only=False" not in error, (name, error)


@pytest.mark.parametrize("argv,message", [
    (["--model", "torchvision:no_such_net", "--random-mask", "erk", "--density", "0.1"],
     "not a torchvision classification model"),
    (["--model", "resnet18", "--width", "4", "--random-mask", "erk"], "--random-mask and --density go together"),
    (["--model", "resnet18", "--width", "4"], "no mask"),
    (["--model", "resnet18", "--width", "4", "--random-mask", "erk", "--density", "1.5"], "density must lie"),
])
def test_command_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        command.main(["metrics", *argv])
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err


def test_weights_that_do_not_fit_are_refused(tmp_path):
    torch.save(Small().state_dict(), tmp_path / "weights.pt")
    state, meta = measure.read_weights(tmp_path / "weights.pt")
    assert meta == {}
    with pytest.raises(ValueError, match="no entry for 'conv1.weight'"):
        measure.load_state(models.build("resnet18", 10, 4), state, "weights")


# ------------------------------------------------------------------------------------ the table

def test_csv_round_trips(tmp_path):
    model = Small()
    masks = random_masks(model, 0.4, seed=3)
    masks["head.weight"] = torch.eye(10, 16, dtype=torch.bool)  # too sparse: delta_r and lambda_gap undefined
    table = measure.metrics_table(model, masks)
    assert table.loc[table["layer"] == "head.weight", "undefined"].item() == "delta_r lambda_gap"
    assert table["groups"].tolist()[:2] == [2, 24]
    measure.write_table(table, tmp_path / "table.csv")
    pd.testing.assert_frame_equal(measure.read_table(tmp_path / "table.csv"), table, check_exact=True)


def test_project_files_are_read(tmp_path):
    model = models.build_seeded("resnet18", 10, 4, seed=1)
    models.save_weights(tmp_path / "w.pt", model, {"model": "resnet18", "num_classes": 10, "width": 4})
    masks = random_masks(model, 0.3, seed=1)
    save_mask_file(tmp_path / "m.pt", masks, {key: None for key in (
        "method", "target_density", "density", "layer_density", "seed", "model", "dataset", "source")})
    state, meta = measure.read_weights(tmp_path / "w.pt")
    built = measure.build_model("resnet18", meta["num_classes"], meta["width"], seed=0)
    measure.load_state(built, state, "w.pt")
    read = measure.read_masks(tmp_path / "m.pt", built)
    expected = graph.model_metrics(model, masks)
    pd.testing.assert_frame_equal(graph.model_metrics(built, read), expected)


# ------------------------------------------------------------------------------------ the command

@pytest.fixture(scope="module")
def outside_files(tmp_path_factory):
    """A torchvision model's state dict and mask saved with plain torch, as a user outside the project would."""
    folder = tmp_path_factory.mktemp("outside")
    torch.manual_seed(5)
    model = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10)
    masks = random_masks(model, 0.3, seed=5)
    torch.save(model.state_dict(), folder / "state_dict.pt")
    torch.save(masks, folder / "mask.pt")
    return folder, model, masks


def run_command(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "fullspectrum", "metrics", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_command_on_a_torchvision_model_agrees_with_the_reference(outside_files):
    folder, model, masks = outside_files
    result = run_command("--model", "torchvision:shufflenet_v2_x0_5", "--num-classes", "10", "--weights",
                         str(folder / "state_dict.pt"), "--mask", str(folder / "mask.pt"), "--out",
                         str(folder / "table.csv"), "--device", "cpu")
    assert "model_mean" in result.stdout.splitlines()[-1]
    table = measure.read_table(folder / "table.csv")
    assert list(table["layer"]) == [*prunable_parameters(model), "model_mean"]
    assert_table_matches_reference(table, model, masks, rtol=RTOL)


def test_command_reads_a_torch_prune_state_dict(outside_files):
    folder, model, masks = outside_files
    pruned = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=10)
    pruned.load_state_dict(model.state_dict())
    for name, mask in masks.items():
        module_name, _, attribute = name.rpartition(".")
        prune.custom_from_mask(pruned.get_submodule(module_name), attribute, mask)
    torch.save(pruned.state_dict(), folder / "pruned.pt")
    run_command("--model", "torchvision:shufflenet_v2_x0_5", "--num-classes", "10", "--weights",
                str(folder / "pruned.pt"), "--out", str(folder / "pruned.csv"), "--device", "cpu")
    table = measure.read_table(folder / "pruned.csv")
    pd.testing.assert_frame_equal(table, measure.metrics_table(model, masks), check_exact=True)
