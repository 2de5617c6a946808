"""Shared fixtures: the prepared digits data (made once per session) and tiny models."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fullspectrum import data  # noqa: E402
from fullspectrum.train import Callback  # noqa: E402

# One thread: on a small shared CPU, torch's default thread pool makes the tiny test models several times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "digits.pt"
    data.prepare("digits", path)
    return path


@pytest.fixture(scope="session")
def digits(digits_path) -> data.DeviceData:
    return data.DeviceData(digits_path, "cpu")


# What a copy of the workflow needs to run on its own (the tests that run Snakemake from another folder or on a
# private checkout).
WORKFLOW_FILES = ("Snakefile", "config.yaml", "config", "rules", "schemas", "workflow_scripts", "fullspectrum",
                  "profiles", "report", "envs")


def copy_workflow(dest: Path) -> Path:
    """A private copy of the workflow's files in `dest` (created if needed)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def snakemake_bin() -> str:
    """The snakemake of the interpreter running the tests (the project's .venv under `make test`)."""
    candidate = Path(sys.executable).parent / "snakemake"
    return str(candidate) if candidate.exists() else shutil.which("snakemake")


def run_snakemake(args, cwd=ROOT, timeout=900, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run([snakemake_bin(), *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


class CrashAt(Callback):
    """A crash (node failure) after the epoch checkpoints were written."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, step):
        if step == self.step:
            raise KeyboardInterrupt
