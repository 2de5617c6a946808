"""Device assignment without GPUs: concurrent jobs take different per-GPU locks (real processes, real flock), a
scheduler's CUDA_VISIBLE_DEVICES stands, and every reason CUDA can be unusable is named in one line."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from fullspectrum import devices
from fullspectrum.provenance import provenance

HOLD = ("import sys, time; from fullspectrum import devices; "
        "print(devices.claim_gpu(2, sys.argv[1], poll_seconds=0.05), flush=True); time.sleep(600)")


def holder(lock_dir) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", HOLD, str(lock_dir)], stdout=subprocess.PIPE, text=True, env=env)


def test_concurrent_jobs_take_different_gpus_and_a_killed_job_frees_its_gpu(tmp_path):
    first, second = holder(tmp_path), holder(tmp_path)
    third = None
    try:
        first_gpu, second_gpu = int(first.stdout.readline()), int(second.stdout.readline())
        assert {first_gpu, second_gpu} == {0, 1}
        for index in (0, 1):  # both locks are held, so a third job must wait
            fd = os.open(tmp_path / f"gpu{index}.lock", os.O_RDWR)
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(fd)
        third = holder(tmp_path)
        first.send_signal(signal.SIGKILL)  # the kernel releases the lock of a killed job
        first.wait(timeout=30)
        assert int(third.stdout.readline()) == first_gpu
    finally:
        for proc in (first, second, third):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_a_schedulers_choice_stands_and_no_gpu_means_no_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert devices.assign_local_gpu(tmp_path) == "3" and not any(tmp_path.iterdir())
    assert provenance()["cuda_visible_devices"] == "3"  # what metrics.json records
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    if not devices.gpu_device_files():
        assert devices.assign_local_gpu(tmp_path) is None and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_step_runs_torch_with_the_threads_its_rule_declares(digits_path, tmp_path):
    from fullspectrum import masks, models, pruning

    net = models.build_seeded("resnet18", 10, 4, 0)
    models.save_weights(tmp_path / "w.pt", net, {"model": "resnet18", "num_classes": 10, "width": 4})
    mask = pruning.make_mask(net, "erk", 0.25, seed=0)
    masks.save_mask_file(tmp_path / "m" / "mask.pt", mask, masks.build_meta(
        mask, method="erk", target_density=0.25, seed=0, model="resnet18", dataset="digits", source="w.pt"))
    train = '{"epochs": 1, "batch_size": 512, "lr": 0.1}'
    result = subprocess.run([sys.executable, "-m", "workflow_scripts.sparse_train", "--mask", tmp_path / "m" / "mask.pt",
                             "--weights", tmp_path / "w.pt", "--data", digits_path, "--train", train, "--seed", "0",
                             "--device", "cpu", "--threads", "2", "--out", tmp_path / "m" / "metrics.json",
                             "--graph", tmp_path / "m" / "graph.csv"],
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["device"] == "cpu (2 threads)" and (tmp_path / "m" / "graph.csv").is_file()


@pytest.mark.parametrize("build, driver, visible, available, cause", [
    (None, "550.54.15", None, False, "is a CPU-only build"),
    ("12.8", "550.54.15", "", False, "this job was given no GPU"),
    ("12.8", None, None, False, "no NVIDIA driver on node7"),
    ("12.8", "470.82.01", None, False, "NVIDIA driver 470.82.01 on node7 is too old for torch's CUDA 12.8 build"),
    ("13.0", "570.86.15", None, False, "needs >= 580.65.6"),
    ("12.8", "570.86.15", None, False, "torch cannot use CUDA 12.8 on node7 although NVIDIA driver 570.86.15"),
])
def test_each_reason_cuda_is_unusable_is_named(build, driver, visible, available, cause):
    problem = devices.cuda_problem(build, driver, visible, available, "node7")
    assert cause in problem and "\n" not in problem


def test_usable_cuda_is_no_problem():
    assert devices.cuda_problem("12.8", "570.86.15", "0", True, "node7") is None


@pytest.mark.parametrize("line, version", [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024", "550.54.15"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build", "570.86.15"),
])
def test_driver_version_is_read_from_the_kernel_modules_file(tmp_path, line, version):
    (tmp_path / "version").write_text(line + "\nGCC version: gcc version 12.2.0\n")
    assert devices.driver_version(str(tmp_path / "version")) == version
    assert devices.driver_version(str(tmp_path / "missing")) is None


def cuda_usable() -> bool:
    return devices.cuda_problem(torch.version.cuda, devices.driver_version(), os.environ.get("CUDA_VISIBLE_DEVICES"),
                                torch.cuda.is_available(), "here") is None


@pytest.mark.skipif(cuda_usable(), reason="CUDA works here: benchmarks/gpu_check.sh runs the whole check")
def test_gpu_check_without_a_gpu_says_why_in_one_line_and_exits_0():
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, PYTHON=sys.executable))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no usable GPU here, nothing checked: "), result.stdout


@pytest.mark.cuda
@pytest.mark.skipif(not cuda_usable(), reason="needs a usable CUDA GPU")
def test_a_cuda_step_computes_on_the_one_gpu_it_took(tmp_path):
    code = ("import os, torch; from fullspectrum import devices; device = devices.pick_device('cuda'); "
            "x = torch.ones(3, device=device); "
            "print(os.environ['CUDA_VISIBLE_DEVICES'], torch.cuda.device_count(), int(x.sum()), x.device.type)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), FULLSPECTRUM_GPU_LOCKS=str(tmp_path))
    preset = env.get("CUDA_VISIBLE_DEVICES")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    visible, count, total, kind = result.stdout.split()
    assert (int(total), kind) == (3, "cuda")
    if preset is None:  # no scheduler chose: the step took one GPU of this machine
        assert int(count) == 1 and int(visible) in range(len(devices.gpu_device_files()))
    else:
        assert visible == preset
