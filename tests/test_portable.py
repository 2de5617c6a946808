"""The workflow run from another folder (`-s /path/Snakefile --directory /elsewhere`) and as a module of another
workflow, the rerun policy after code changes, and a GPU job on a machine without usable CUDA, all with Snakemake
for real on a tiny target."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import copy_workflow, snakemake_bin
from fullspectrum import devices

pytestmark = pytest.mark.workflow

CELL = "results/test_workflow/digits/resnet18/d0.25/erk/pre0/s0"
TARGET = f"{CELL}/pai/mask.pt"  # data, the initialisation and an ERK mask: three real jobs in seconds


def snakemake(checkout: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake on `checkout`'s Snakefile, working in `workdir`, started from a third folder."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)  # the workflow must find its own package and scripts
    command = [snakemake_bin(), "-s", str(checkout / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(checkout / "config" / "test_workflow.yaml"), "--cores", "2", *args]
    return subprocess.run(command, cwd=workdir.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict:
    """A copy of the workflow, and TARGET made in another folder."""
    base = tmp_path_factory.mktemp("portable")
    checkout, workdir = copy_workflow(base / "checkout"), base / "elsewhere"
    workdir.mkdir()
    result = snakemake(checkout, workdir, TARGET)
    return {"checkout": checkout, "workdir": workdir, "result": result}


def test_a_real_target_runs_from_another_folder(ran):
    result, workdir = ran["result"], ran["workdir"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (workdir / TARGET).is_file() and (workdir / CELL / "pai" / "layers.csv").is_file()
    assert not (ran["checkout"] / "results").exists()  # everything went to the working directory
    assert "Nothing to be done" in snakemake(ran["checkout"], workdir, TARGET, "-n").stdout


def test_a_real_target_runs_with_the_workflow_as_a_module(ran):
    checkout, user = ran["checkout"], ran["workdir"].parent / "user"
    user.mkdir()
    (user / "Snakefile").write_text(
        f'configfile: "{checkout}/config/test_workflow.yaml"\n\n\n'
        f'module fullspectrum:\n    snakefile:\n        "{checkout}/Snakefile"\n    config:\n        config\n\n\n'
        'use rule * from fullspectrum as fullspectrum_*\n')
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    result = subprocess.run([snakemake_bin(), "--cores", "2", TARGET], cwd=user, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (user / TARGET).is_file() and "rule fullspectrum_pai_mask" in result.stdout + result.stderr


def edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def test_editing_code_a_step_imports_reruns_it_and_other_edits_rerun_nothing(ran):
    assert ran["result"].returncode == 0
    checkout, workdir = ran["checkout"], ran["workdir"]
    edit(checkout / "fullspectrum" / "analysis" / "tables.py")  # the tables' code: no step of TARGET imports it
    assert "Nothing to be done" in snakemake(checkout, workdir, TARGET, "-n").stdout
    edit(checkout / "fullspectrum" / "pruning.py")  # the PaI masks' code: pai_mask imports it, pretraining does not
    planned = snakemake(checkout, workdir, TARGET, "-n", "--quiet", "rules")
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    table = planned.stdout.split("Job stats:")[1].split("\n\n")[0]
    assert set(re.findall(r"^(\w+)\s+\d+$", table, re.M)) == {"pai_mask", "total"}, table
    assert "params have changed since last execution" in snakemake(checkout, workdir, TARGET, "-n").stdout


@pytest.mark.skipif(devices.cuda_problem(torch.version.cuda, devices.driver_version(),
                                         os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.is_available(),
                                         "here") is None, reason="CUDA works here")
def test_a_cuda_job_without_usable_cuda_stops_at_once_naming_why(ran):
    assert ran["result"].returncode == 0
    checkout, workdir = ran["checkout"], ran["workdir"]
    failed = snakemake(checkout, workdir, TARGET, "--config", "device=cuda")
    assert failed.returncode != 0
    log = (workdir / "results/test_workflow/logs/pai_mask/digits/resnet18/d0.25/erk/pre0/s0.log").read_text()
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: device 'cuda' requested, but ") and "Traceback" not in log, log
    assert any(cause in last for cause in ("CPU-only build", "no NVIDIA driver", "too old", "given no GPU",
                                           "cannot use CUDA")), last
    assert not (workdir / TARGET).exists()  # the mask made on the CPU before was not kept under a cuda run
