"""Where a step computes: its own GPU when several jobs share a machine, never a silent CPU fallback, and the
CPU threads its rule declares.

`--resources gpu=N` lets Snakemake start N GPU jobs at once on one machine, but every CUDA process would pick
GPU 0. Before CUDA starts, a job therefore takes the first free per-GPU lock (an flock the kernel releases when the
process ends, even on SIGKILL) and restricts itself to that GPU with CUDA_VISIBLE_DEVICES. Where a scheduler
already set CUDA_VISIBLE_DEVICES (SLURM with --gpus), its choice stands.
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import logging
import os
import platform
import re
import time
from pathlib import Path

import torch

LOCK_DIR = os.environ.get("FULLSPECTRUM_GPU_LOCKS", "/tmp/fullspectrum-gpu-locks")  # one per machine, not per run
DRIVER_FILE = "/proc/driver/nvidia/version"
# Oldest Linux driver each CUDA major release runs on (CUDA's minor-version compatibility; NVIDIA release notes).
MIN_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}

_held: list[int] = []  # descriptors of the GPU locks this process holds, open until it exits
log = logging.getLogger(__name__)


class DeviceError(ValueError):
    """The step asked for CUDA and none is usable; the message says why in one line."""


def gpu_device_files() -> list[str]:
    """The NVIDIA GPU device files of this machine (/dev/nvidia0, /dev/nvidia1, ...)."""
    return sorted(glob.glob("/dev/nvidia[0-9]*"), key=lambda p: int(re.sub(r"\D", "", p)))


def claim_gpu(count: int, lock_dir: str | os.PathLike = LOCK_DIR, poll_seconds: float = 1.0) -> int:
    """Take the lowest-numbered free GPU of `count` (waiting while all are taken); held until the process ends."""
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index in range(count):
            fd = os.open(Path(lock_dir) / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held.append(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
            return index
        if not waited:
            log.info("all %d GPUs of this machine are taken by other jobs (locks in %s); waiting", count, lock_dir)
            waited = True
        time.sleep(poll_seconds)


def assign_local_gpu(lock_dir: str | os.PathLike = LOCK_DIR) -> str | None:
    """Give this process a GPU of its own via CUDA_VISIBLE_DEVICES, unless a scheduler chose already."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return os.environ["CUDA_VISIBLE_DEVICES"]
    count = len(gpu_device_files())
    if count == 0:
        return None
    os.environ["CUDA_VISIBLE_DEVICES"] = str(claim_gpu(count, lock_dir))
    log.info("this job uses GPU %s of %d (CUDA_VISIBLE_DEVICES)", os.environ["CUDA_VISIBLE_DEVICES"], count)
    return os.environ["CUDA_VISIBLE_DEVICES"]


def driver_version(path: str = DRIVER_FILE) -> str | None:
    """The loaded NVIDIA kernel driver's version, e.g. '550.54.15', or None without one."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else "unknown"


def cuda_problem(cuda_build: str | None, driver: str | None, visible: str | None, available: bool,
                 host: str) -> str | None:
    """Why CUDA cannot be used, in one line naming the cause, or None when it can."""
    if cuda_build is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build; install envs/torch.yaml's CUDA build "
                "(README: Running the paper grid)")
    if visible is not None and visible.strip() in ("", "-1", "NoDevFiles"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} on {host}: this job was given no GPU (ask for resources gpu=1)"
    if driver is None:
        return f"no NVIDIA driver on {host} ({DRIVER_FILE} is missing): this machine has no usable GPU"
    if available:
        return None
    needed = MIN_DRIVER.get(int(cuda_build.split(".")[0]))
    if needed and driver != "unknown" and tuple(int(p) for p in driver.split(".")) < needed:
        return (f"NVIDIA driver {driver} on {host} is too old for torch's CUDA {cuda_build} build (needs >= "
                f"{'.'.join(map(str, needed))}); update the driver or install a torch built for an older CUDA")
    return (f"torch cannot use CUDA {cuda_build} on {host} although NVIDIA driver {driver} is loaded "
            f"(CUDA_VISIBLE_DEVICES={visible!r}); check nvidia-smi")


def pick_device(requested: str = "auto") -> torch.device:
    """The device a step asked for: `cuda` fails at once naming why it is unusable; `auto` says when it uses the CPU."""
    if requested == "cpu":
        return torch.device("cpu")
    assign_local_gpu()  # before CUDA initialises: it reads CUDA_VISIBLE_DEVICES once
    problem = cuda_problem(torch.version.cuda, driver_version(), os.environ.get("CUDA_VISIBLE_DEVICES"),
                           torch.cuda.is_available(), platform.node())
    if problem is None:
        return torch.device("cuda")
    if requested == "cuda":
        raise DeviceError(f"device 'cuda' requested, but {problem}")
    log.warning("device 'auto': running on the CPU because %s", problem)
    return torch.device("cpu")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --threads, which every computing step takes from its rule (params.device, threads)."""
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (the rule's `threads:`)")


def from_args(args: argparse.Namespace) -> torch.device:
    """Apply --threads to torch and pick --device."""
    torch.set_num_threads(args.threads)
    return pick_device(args.device)
