"""Run a slice of the workflow through Snakemake's SLURM executor on a real cluster.

Opt-in: needs FULLSPECTRUM_SLURM=1 and a working `sinfo`. On a throwaway
Debian 12 machine (root) a single-node cluster comes up with

    sudo tests/slurm/start_slurm.sh          # ~15 s from nothing, ~3 s warm
    FULLSPECTRUM_SLURM=1 .venv/bin/python -m pytest -m slurm tests/test_slurm.py
    sudo tests/slurm/stop_slurm.sh

The run uses the real SLURM profile plus the test overlay:

    snakemake --profile profiles/slurm --profile tests/slurm/profile \
        --workflow-profile none --configfile config/test_slurm.yaml slurm_slice

and checks that every job Snakemake submitted is COMPLETED in `sacct` and that
the target is up to date afterwards.
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
PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "slurm" / "profile"
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
        "--profile", str(PROFILE),
        "--profile", str(TEST_PROFILE),
        "--workflow-profile", "none",
        "--configfile", CONFIGFILE,
        *extra,
    ]


def _sacct(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (State, Comment) from the accounting database."""
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
         "-o", "JobID,State,Comment%200"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) >= 3:
            rows[parts[0]] = (parts[1].split()[0], parts[2])
    return rows


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
        rows: dict[str, tuple[str, str]] = {}
        for _ in range(30):  # slurmdbd may lag the controller by a few seconds
            rows = _sacct(submitted)
            if set(submitted) <= set(rows) and all(
                rows[j][0] == "COMPLETED" for j in submitted
            ):
                break
            time.sleep(2)
        bad = {j: rows.get(j, ("MISSING", ""))[0] for j in submitted
               if rows.get(j, ("MISSING", ""))[0] != "COMPLETED"}
        assert not bad, f"SLURM jobs not COMPLETED in sacct: {bad}; log tail:\n{tail}"
        rules = sorted({c.split("_wildcards_")[0].removeprefix("rule_")
                        for _, c in rows.values() if c})
        print(f"slurm_slice: {len(submitted)} SLURM jobs COMPLETED in {elapsed:.0f}s; "
              f"rules: {rules}")

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
