"""What produced a result: config subset, package versions, device and GPU, host, git commit, wall time."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("fullspectrum", "torch", "torchvision", "numpy", "scipy", "pandas", "snakemake")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(config: dict | None = None, device: str | None = None, wall_seconds: float | None = None) -> dict:
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "host": platform.node(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "git_commit": _git_commit(),
        "device": device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),  # the GPU a scheduler or devices.py gave
        "wall_seconds": wall_seconds,
        "config": config,
    }
