"""Many masks, one job (fullspectrum.chunk): a chunk's members against single-mask jobs, divergence, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from fullspectrum import chunk, chunk_files, models, pruning, runs
from fullspectrum import masks as mask_lib
from fullspectrum.errors import NonFiniteLossError, PREEMPTED_EXIT_CODE
from fullspectrum.train import TrainConfig

CFG = TrainConfig(epochs=2, batch_size=128, lr=0.1, nesterov=True, schedule="multistep")
TIMING = ("train_seconds", "images_per_second", "provenance", "trained_with", "checkpoint_bytes",
          "checkpoints_written")


def save_weights(path: Path, net) -> Path:
    models.save_weights(path, net, {"model": "resnet18", "num_classes": 10, "width": 4, "dataset": "digits",
                                    "seed": 0, "iters": 0})
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory) -> list[chunk.Member]:
    """Three ERK masks at 0.25 on the seed-0 initialisation of a width-4 ResNet18, as a search hands them on."""
    base = tmp_path_factory.mktemp("chunk_inputs")
    net = models.build_seeded("resnet18", 10, 4, 0)
    weights = save_weights(base / "iter0.pt", net)
    out = []
    for k in range(3):
        mask = pruning.make_mask(net, "erk", 0.25, seed=k)
        path = base / f"select{k}.pt"
        mask_lib.save_mask_file(path, mask, mask_lib.build_meta(mask, method="erk", target_density=0.25, seed=k,
                                                                model="resnet18", dataset="digits",
                                                                source=str(weights)))
        out.append(chunk.Member(f"select{k}", str(path), str(weights)))
    return out


@pytest.fixture(scope="module")
def diverging(members, tmp_path_factory) -> chunk.Member:
    """Member 1's mask on weights whose stem BatchNorm shift is NaN: its loss is not finite from the first step
    (its graph metrics, which read the prunable weights alone, are the healthy member's)."""
    net, _ = models.load_weights(members[1].weights)
    with torch.no_grad():
        net.bn1.bias.fill_(float("nan"))
    weights = save_weights(tmp_path_factory.mktemp("diverging") / "huge.pt", net)
    return chunk.Member(members[1].name, members[1].mask, str(weights))


def read(out: Path, name: str) -> dict:
    return json.loads((out / name / "metrics.json").read_text())


def results(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING}


def relative(a: list[float], b: list[float]) -> float:
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def test_a_sequential_chunk_writes_what_single_mask_jobs_write_bit_for_bit(members, digits, tmp_path):
    out = tmp_path / "chunk0"
    summary = chunk.train_chunk(members, data=digits, cfg=CFG, seed=0, mode="sequential", out=out, progress=False)
    assert summary["mode"] == "sequential" and not any(m["diverged"] for m in summary["members"].values())
    assert not chunk_files.work_dir(out).exists() and sorted(p.name for p in out.iterdir()) == [
        "chunk.json", "select0", "select1", "select2"]
    for member in members:
        single = tmp_path / "single" / member.name / "metrics.json"
        runs.train_mask(weights=member.weights, mask=member.mask, data=digits, cfg=CFG, seed=0, out=single,
                        progress=False)
        runs.graph_metrics(weights=member.weights, mask=member.mask, out=single.with_name("graph.csv"))
        assert results(read(out, member.name)) == results(json.loads(single.read_text()))
        assert (out / member.name / "graph.csv").read_bytes() == single.with_name("graph.csv").read_bytes()


def test_a_fused_chunk_trains_each_member_as_the_sequential_chunk_does(members, digits, tmp_path):
    sequential, fused = tmp_path / "sequential", tmp_path / "fused"
    chunk.train_chunk(members, data=digits, cfg=CFG, seed=0, mode="sequential", out=sequential, progress=False)
    chunk.train_chunk(members, data=digits, cfg=CFG, seed=0, mode="fused", out=fused, progress=False)
    for member in members:
        a, b = read(sequential, member.name), read(fused, member.name)
        assert b["trained_with"] == {"mode": "fused", "members": [m.name for m in members]}
        assert (a["epochs"], a["steps"], a["density"], a["mask"]) == (b["epochs"], b["steps"], b["density"], b["mask"])
        # two epochs at lr 0.1 amplify the grouped convolutions' rounding (test_fused bounds one step at 1e-5)
        assert relative([h["train_loss"] for h in b["curve"]], [h["train_loss"] for h in a["curve"]]) < 1e-3
        assert abs(a["final_acc"] - b["final_acc"]) <= 1.0  # at most a few of the 360 test images


@pytest.mark.parametrize("mode", ["sequential", "fused"])
def test_a_diverging_member_is_named_and_the_others_finish_unchanged(mode, members, diverging, digits, tmp_path):
    healthy, sick = tmp_path / "healthy", tmp_path / "sick"
    chunk.train_chunk(members, data=digits, cfg=CFG, seed=0, mode=mode, out=healthy, progress=False)
    summary = chunk.train_chunk([members[0], diverging, members[2]], data=digits, cfg=CFG, seed=0, mode=mode,
                                out=sick, progress=False)
    assert "select1" in summary["members"]["select1"]["diverged"] and "epoch 1, step 1" in \
        summary["members"]["select1"]["diverged"]
    assert not (sick / "select1" / "metrics.json").exists()
    for name in ("select0", "select2"):
        assert summary["members"][name]["diverged"] is None
        assert results(read(sick, name)) == results(read(healthy, name))  # fused too: no member reads another
    with pytest.raises(NonFiniteLossError, match="select1: loss became"):
        chunk_files.publish_member(sick, "select1", tmp_path / "m" / "metrics.json", tmp_path / "m" / "graph.csv")
    chunk_files.publish_member(sick, "select0", tmp_path / "m" / "metrics.json", tmp_path / "m" / "graph.csv")
    assert (tmp_path / "m" / "metrics.json").read_bytes() == (sick / "select0" / "metrics.json").read_bytes()


def chunk_args(members, data, out: Path, mode: str) -> list[str]:
    settings = {"epochs": 3, "batch_size": 128, "lr": 0.1, "nesterov": True, "schedule": "multistep",
                "momentum": 0.9, "weight_decay": 5e-4, "mode": mode, "checkpoint_minutes": 0}
    return [sys.executable, "-m", "workflow_scripts.train_chunk", "--members",
            json.dumps([vars(m) for m in members]), "--data", str(data), "--train", json.dumps(settings),
            "--seed", "0", "--device", "cpu", "--out", str(out)]


def run(args, log: Path) -> int:
    with log.open("w") as stream:
        return subprocess.run(args, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, timeout=600).returncode


def interrupt_when(args, condition, log: Path) -> int:
    """Start the chunk script, SIGTERM it as soon as `condition()` holds, return its exit code."""
    with log.open("w") as stream:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not condition():
            assert proc.poll() is None, f"ended before the checkpoint:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=300)


@pytest.mark.parametrize("mode", ["sequential", "fused"])
def test_a_chunk_stopped_mid_training_resumes_to_the_same_bits_and_refuses_the_other_mode(
        mode, members, digits_path, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "run"
    assert run(chunk_args(members, digits_path, reference, mode), tmp_path / "reference.log") == 0
    work = chunk_files.work_dir(out)
    # sequential: mid-way through the second member, the first one done; fused: after the first epoch
    state = work / "select1" / chunk.MEMBER_STATE if mode == "sequential" else work / chunk.FUSED_STATE
    log = tmp_path / "interrupted.log"
    assert interrupt_when(chunk_args(members, digits_path, out, mode), state.exists, log) == PREEMPTED_EXIT_CODE, \
        log.read_text()[-3000:]
    assert "rerun to resume" in log.read_text() and state.exists() and not out.exists()
    finished_first = work / "select0" / "metrics.json"
    assert finished_first.exists() == (mode == "sequential")
    first_bytes = finished_first.read_bytes() if mode == "sequential" else None

    other = "fused" if mode == "sequential" else "sequential"
    assert run(chunk_args(members, digits_path, out, other), tmp_path / "other.log") != 0
    assert f"train.mode {mode}, not {other}: set train.mode: {mode} to resume" in (tmp_path / "other.log").read_text()
    assert state.exists()  # nothing of the stopped run was lost

    assert run(chunk_args(members, digits_path, out, mode), tmp_path / "resumed.log") == 0, \
        (tmp_path / "resumed.log").read_text()[-3000:]
    assert "resumed from" in (tmp_path / "resumed.log").read_text() and not work.exists()
    for member in members:
        a, b = read(reference, member.name), read(out, member.name)
        assert results({**a, "resumed_from": None}) == results({**b, "resumed_from": None}), member.name
    if mode == "sequential":  # the member finished before the signal was not trained again
        assert (out / "select0" / "metrics.json").read_bytes() == first_bytes
        assert read(out, "select1")["resumed_from"]["epoch"] >= 1
    else:
        assert all(read(out, m.name)["resumed_from"]["epoch"] >= 1 for m in members)
    assert all(read(out, m.name)["checkpoints_written"] >= 2 for m in members[1:])


def test_a_chunk_of_unknown_mode_or_repeated_names_is_refused(members, digits, tmp_path):
    with pytest.raises(ValueError, match="train.mode must be one of"):
        chunk.train_chunk(members, data=digits, cfg=CFG, seed=0, mode="parallel", out=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="distinct names"):
        chunk.train_chunk([members[0], members[0]], data=digits, cfg=CFG, seed=0, mode="sequential",
                          out=tmp_path / "c", progress=False)
