"""Run a slice of the workflow through Snakemake's SLURM executor on a real cluster.

Opt-in: needs FULLSPECTRUM_SLURM=1 and a working `sinfo`. On a throwaway
Debian 12 machine (root) a single-node cluster comes up with

    sudo tests/slurm/start_slurm.sh          # ~15 s from nothing, ~3 s warm
    FULLSPECTRUM_SLURM=1 .venv/bin/python -m pytest -m slurm tests/test_slurm.py
    sudo tests/slurm/stop_slurm.sh

The run uses the README's SLURM command as it stands, with this test's grid and
target (the node has 2 GPUs as gres; start_slurm.sh makes placeholder devices):

    snakemake --profile profiles/slurm --configfile config/test_slurm.yaml slurm_slice

and checks in `sacct` that every job Snakemake submitted is COMPLETED, that every
job of a GPU rule asked for a GPU, that at least two GPU jobs ran at the same
time (the profiles put no one-GPU limit on a cluster run), and that the target
is up to date afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILE = "profiles/slurm"
GPU_RULES = {"pai_mask", "pags_search", "train_chunk"}  # the slice's rules that declare `gpu` (test_slurm.yaml: 1)
CONFIGFILE = "config/test_slurm.yaml"
TARGET = "slurm_slice"
# Hard limit for the whole SLURM run (seconds); override for slow machines.
TIMEOUT_S = int(os.environ.get("FULLSPECTRUM_SLURM_TIMEOUT", "1500"))


def _slurm_skip_reason() -> str | None:
    if os.environ.get("FULLSPECTRUM_SLURM") != "1":
        return "set FULLSPECTRUM_SLURM=1 (after sudo tests/slurm/start_slurm.sh) to run the SLURM test"
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return "SLURM client tools (sinfo, sacct) not found; run tests/slurm/start_slurm.sh"
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo does not answer: {exc}"
    if out.returncode != 0:
        return f"sinfo failed ({out.stderr.strip()}); run tests/slurm/start_slurm.sh"
    states = out.stdout.split()
    if not any(s.rstrip("*~#") in {"idle", "mixed", "allocated", "completing"} for s in states):
        return f"no usable SLURM node (sinfo states: {states or 'none'})"
    return None


_SKIP_REASON = _slurm_skip_reason()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(_SKIP_REASON is not None, reason=str(_SKIP_REASON)),
]


def _env() -> dict[str, str]:
    """Environment for Snakemake: the submitting PATH reaches every SLURM job.

    The plugin submits with `sbatch --export=ALL` and does not touch PATH; the
    job-side Snakemake runs with this interpreter (sys.executable), but `shell:`
    commands resolve `python` through PATH. Put this interpreter's bin first.
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for var in list(env):  # never inherit an enclosing allocation's settings
        if var.startswith(("SLURM_", "SBATCH_", "SRUN_")):
            env.pop(var)
    return env


def _snakemake(*extra: str) -> list[str]:
    return [
        sys.executable, "-m", "snakemake", TARGET,
        "--profile", PROFILE,
        "--configfile", CONFIGFILE,
        *extra,
    ]


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """SLURM job id -> {State, Comment, Start, End, ReqTRES} from the accounting database."""
    fields = ["JobID", "State", "Comment", "Start", "End", "ReqTRES"]
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == len(fields):
            row = dict(zip(fields, parts))
            row["State"] = row["State"].split()[0]
            rows[row["JobID"]] = row
    return rows


def _rule(row: dict[str, str]) -> str:
    """The rule of a job, from the comment the plugin submits (rule_<name>[_wildcards_...])."""
    return row["Comment"].split("_wildcards_")[0].removeprefix("rule_")


def _overlapping(rows: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Pairs of jobs whose [Start, End) intervals intersect (sacct's ISO times sort as strings)."""
    return [(a["JobID"], b["JobID"]) for i, a in enumerate(rows) for b in rows[i + 1:]
            if a["Start"] < b["End"] and b["Start"] < a["End"]]


def test_slurm_slice_runs_on_slurm(tmp_path):
    assert (REPO / CONFIGFILE).is_file(), f"{CONFIGFILE} is missing"
    env = _env()
    log_path = tmp_path / "snakemake.log"

    t0 = time.monotonic()
    # SIGINT first so that Snakemake cancels its SLURM jobs (scancel), then KILL.
    cmd = ["timeout", "-s", "INT", "-k", "60", str(TIMEOUT_S),
           *_snakemake("--forceall")]
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=TIMEOUT_S + 120)
    elapsed = time.monotonic() - t0
    text = log_path.read_text()
    run_id = re.search(r"SLURM run ID: (\S+)", text)
    tail = "\n".join(text.splitlines()[-80:])
    try:
        assert proc.returncode == 0, (
            f"snakemake exited {proc.returncode} after {elapsed:.0f}s "
            f"(124 = hit the {TIMEOUT_S}s timeout); log tail:\n{tail}"
        )

        # Every job Snakemake submitted is COMPLETED in the accounting database.
        submitted = re.findall(r"submitted with SLURM jobid (\d+)", text)
        assert submitted, f"no job was submitted to SLURM; log tail:\n{tail}"
        rows: dict[str, dict[str, str]] = {}
        for _ in range(30):  # slurmdbd may lag the controller by a few seconds
            rows = _sacct(submitted)
            if set(submitted) <= set(rows) and all(
                rows[j]["State"] == "COMPLETED" for j in submitted
            ):
                break
            time.sleep(2)
        bad = {j: rows.get(j, {"State": "MISSING"})["State"] for j in submitted
               if rows.get(j, {"State": "MISSING"})["State"] != "COMPLETED"}
        assert not bad, f"SLURM jobs not COMPLETED in sacct: {bad}; log tail:\n{tail}"
        rules = sorted({_rule(row) for row in rows.values() if row["Comment"]})
        print(f"slurm_slice: {len(submitted)} SLURM jobs COMPLETED in {elapsed:.0f}s; "
              f"rules: {rules}")

        # Every job of a GPU rule asked for a GPU, and GPU jobs ran side by side.
        gpu_jobs = [row for row in rows.values() if _rule(row) in GPU_RULES]
        assert {_rule(row) for row in gpu_jobs} == GPU_RULES, rules
        no_gpu = {row["JobID"]: row["ReqTRES"] for row in gpu_jobs if "gres/gpu=1" not in row["ReqTRES"]}
        assert not no_gpu, f"GPU jobs submitted without a GPU request: {no_gpu}"
        overlapping = _overlapping(sorted(gpu_jobs, key=lambda row: row["Start"]))
        times = {row["JobID"]: (_rule(row), row["Start"], row["End"]) for row in gpu_jobs}
        assert overlapping, f"no two GPU jobs overlapped in time: {times}"
        print(f"GPU jobs running at the same time: {overlapping}")

        # The target's outputs exist and are up to date: nothing left to do.
        dry = subprocess.run(_snakemake("--dry-run"), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "Nothing to be done" in dry.stdout + dry.stderr, (
            "outputs of slurm_slice missing or outdated after the SLURM run:\n"
            + (dry.stdout + dry.stderr)[-4000:]
        )
    finally:
        if proc.returncode != 0 and run_id:  # leave no jobs of this run behind
            subprocess.run(["scancel", "--name", run_id.group(1)],
                           capture_output=True, timeout=60)
