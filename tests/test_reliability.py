"""Reliability: the workflow survives kills, bad input and reruns without losing or corrupting results.

Every fault is injected for real: SIGKILL of a whole Snakemake process tree, SIGTERM of the real step scripts,
truncated and corrupted files fed to the real scripts, config mistakes given to `snakemake -n`, a second
invocation while one runs, a full tmpfs, a pickle that would run code on load. Only the ENOSPC of
`test_injected_enospc_*` is simulated (besides the real full disk).

The runs that need Snakemake for real use a private copy of the workflow (`checkout`): its own `.snakemake`
(locks, metadata, incomplete markers), so that no other Snakemake run in the repository can release or take its
locks (Snakemake removes the whole lock directory when any run ends) and `--unlock` here touches nobody else.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

from conftest import ROOT, copy_workflow, run_snakemake, snakemake_bin
from fullspectrum import graph, io, masks as mask_lib, models, pruning, torch_io, workflow
from fullspectrum.errors import PREEMPTED_EXIT_CODE

CONFIG = "config/test_reliability.yaml"
TARGET = "table3"  # the smallest target that runs every step behind a table
RESULTS = "results/test_reliability"


def env() -> dict:
    """The environment of every subprocess: this interpreter's tools first, the package importable."""
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # One thread per process, as in conftest: two jobs at once on a small shared CPU each spinning a thread pool
    # are many times slower. (Results depend on the thread count: every run compared here uses the same one.)
    environment["OMP_NUM_THREADS"] = "1"
    return environment


def wait_for(condition, proc: subprocess.Popen, what: str, log: Path, timeout: float = 300.0) -> None:
    """Poll `condition` until it holds; fail (with the log) if `proc` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


# ============================================================================================ Snakemake for real


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A private copy of the workflow (see the module docstring)."""
    return copy_workflow(tmp_path_factory.mktemp("checkout"))


def smk_args(results: str, *extra: str, configfile: str = CONFIG) -> list[str]:
    return [TARGET, "--configfile", configfile, "--config", f"results={results}", "--cores", "2", *extra]


def smk(checkout: Path, results: str, *extra: str, check: bool = True, configfile: str = CONFIG):
    result = subprocess.run([snakemake_bin(), *smk_args(results, *extra, configfile=configfile)], cwd=checkout,
                            env=env(), capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def start_smk(checkout: Path, results: str, log: Path) -> subprocess.Popen:
    """Snakemake in its own session (process group), so the whole tree can be killed at once."""
    return subprocess.Popen([snakemake_bin(), *smk_args(results)], cwd=checkout, env=env(),
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def job_counts(output: str) -> dict[str, int]:
    """The first 'Job stats' table of Snakemake's output as {rule: count}."""
    table = output.split("Job stats:")[1].split("\n\n")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    counts.pop("total", None)
    return counts


def normalised_table(path: Path, results: str) -> pd.DataFrame:
    table = pd.read_csv(path)
    table["sources"] = table["sources"].fillna("").str.replace(results, "RESULTS", regex=False)
    return table


def mask_dirs(results_dir: Path) -> list[Path]:
    """Every mask directory: those holding their mask.pt, and those that trained a search's mask in place (not the
    chunk folders {group}/train/chunk{k}/{name}/ their files are copied from)."""
    holders = {p.parent for p in results_dir.rglob("mask.pt")} | {p.parent for p in results_dir.rglob("metrics.json")}
    return sorted(d.relative_to(results_dir) for d in holders if "train" not in d.relative_to(results_dir).parts)


def mask_file(results_dir: Path, rel: Path) -> Path:
    """A mask directory's mask: its own mask.pt, or a search's mask in the search's output."""
    return Path(workflow.search_mask_file(str(results_dir / rel)) or results_dir / rel / "mask.pt")


def assert_every_file_complete(results_dir: Path) -> None:
    """Every result file that exists under its final name is whole (the temporary `.*.part` files aside)."""
    for path in results_dir.rglob("*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.suffix == ".pt":
            torch_io.load_torch(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            assert len(pd.read_csv(path).columns) > 1, path


@pytest.fixture(scope="module")
def reference_run(checkout, tmp_path_factory):
    """An uninterrupted run; while it runs, a second identical invocation tries the same directory."""
    results = f"{RESULTS}/reference"
    log = tmp_path_factory.mktemp("logs") / "reference.log"
    started = time.monotonic()
    first = start_smk(checkout, results, log)
    locks = checkout / ".snakemake" / "locks"
    wait_for(lambda: any(locks.glob("*.output.lock")), first, "the first run locked the directory", log)
    second = smk(checkout, results, check=False)
    first_still_running = first.poll() is None
    first.wait(timeout=600)
    return {"results": results, "dir": checkout / results, "first_rc": first.returncode, "log": log, "pid": first.pid,
            "second": second, "first_still_running": first_still_running, "seconds": time.monotonic() - started}


@pytest.mark.workflow
def test_second_invocation_is_refused_by_the_lock_and_the_first_finishes_intact(reference_run):
    second = reference_run["second"]
    assert reference_run["first_still_running"], "the second invocation came too late to meet the first"
    assert second.returncode != 0
    assert "Directory cannot be locked" in second.stdout + second.stderr
    # and it names the Snakemake process that holds the lock
    checkout = os.path.realpath(reference_run["dir"].parents[2])
    holder = f"is held by a Snakemake process working in {checkout} (pid {reference_run['pid']}: "
    assert holder in second.stderr, second.stderr[-3000:]
    assert reference_run["first_rc"] == 0, reference_run["log"].read_text()[-3000:]
    tables = reference_run["dir"] / "tables"
    cells = pd.read_csv(tables / f"{TARGET}.csv")
    assert cells["value"].notna().all() and (tables / f"{TARGET}.md").exists()
    assert_every_file_complete(reference_run["dir"])
    metrics = json.loads((reference_run["dir"] / mask_dirs(reference_run["dir"])[0] / "metrics.json").read_text())
    assert metrics["final_acc"] > 10.0  # the tiny runs learn something: equal tables below are not all chance


@pytest.mark.workflow
def test_sigkill_of_the_whole_run_then_rerun_gives_the_same_results(checkout, reference_run, tmp_path):
    import psutil  # a dependency of Snakemake

    results = f"{RESULTS}/killed"
    killed_dir = checkout / results
    log = tmp_path / "killed.log"
    proc = start_smk(checkout, results, log)
    wait_for(lambda: glob.glob(f"{killed_dir}/**/metrics.json", recursive=True), proc,
             "the first metrics.json", log)

    def running_steps():
        steps = []
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if any("workflow_scripts" in part for part in child.cmdline()):
                    steps.append(child)
        return steps

    wait_for(running_steps, proc, "a step script running", log)  # kill in the middle of a job
    tree = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: Snakemake, its shells and the step scripts
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(tree, timeout=30)
    for child in alive:  # none is left running (a zombie is dead, merely not reaped by its new parent yet)
        with contextlib.suppress(psutil.NoSuchProcess):
            assert child.status() == psutil.STATUS_ZOMBIE, child
    assert not (killed_dir / "tables" / f"{TARGET}.csv").exists(), "the kill came after the end"
    assert_every_file_complete(killed_dir)  # nothing half-written under a final name

    assert any((checkout / ".snakemake" / "locks").iterdir())  # the killed run could not release its lock
    rerun = smk(checkout, results)  # the same command, no --unlock: nothing else runs here, so the lock is stale
    assert "removed the stale lock" in rerun.stderr and "Finished" in rerun.stdout + rerun.stderr

    reference = reference_run["dir"]
    for ext in ("csv",):
        pd.testing.assert_frame_equal(
            normalised_table(killed_dir / "tables" / f"{TARGET}.{ext}", results),
            normalised_table(reference / "tables" / f"{TARGET}.{ext}", reference_run["results"]), check_exact=True)
    for ext in ("md", "tex"):
        assert ((killed_dir / "tables" / f"{TARGET}.{ext}").read_text().replace(results, "R")
                == (reference / "tables" / f"{TARGET}.{ext}").read_text().replace(reference_run["results"], "R"))
    assert mask_dirs(killed_dir) == mask_dirs(reference) and len(mask_dirs(reference)) >= 2
    for rel in mask_dirs(reference):
        ours, theirs = (mask_lib.load_mask_file(mask_file(d, rel))[0] for d in (killed_dir, reference))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), rel
        a, b = (json.loads((d / rel / "metrics.json").read_text()) for d in (killed_dir, reference))
        assert a["curve"] == b["curve"] and a["final_acc"] == b["final_acc"], rel  # losses and accuracies, bit-exact
        assert (killed_dir / rel / "graph.csv").exists() == (reference / rel / "graph.csv").exists()
        if (reference / rel / "graph.csv").exists():  # (the table needs those of the selections only)
            pd.testing.assert_frame_equal(pd.read_csv(killed_dir / rel / "graph.csv"),
                                          pd.read_csv(reference / rel / "graph.csv"), check_exact=True)


def edited_config(checkout: Path, name: str, edit) -> str:
    config = yaml.safe_load((checkout / CONFIG).read_text())
    edit(config)
    path = checkout / "config" / f"_edited_{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path.relative_to(checkout))


def dry_run_jobs(checkout: Path, results: str, configfile: str) -> tuple[dict[str, int], str]:
    result = smk(checkout, results, "-n", "--quiet", "rules", configfile=configfile)
    output = result.stdout + result.stderr
    return (job_counts(output) if "Job stats:" in output else {}), output


@pytest.mark.workflow
def test_a_changed_hyperparameter_reruns_exactly_the_steps_that_use_it(checkout, reference_run):
    assert reference_run["first_rc"] == 0
    results = reference_run["results"]
    # train.lr: every training of a mask, and what is made from the trained metrics; not the data, the
    # initialisation, the PaI mask, the search or the graph metrics (which do not train).
    jobs, output = dry_run_jobs(checkout, results, edited_config(checkout, "lr", lambda c: c["train"].update(lr=0.05)))
    selections = len([d for d in mask_dirs(reference_run["dir"]) if "pags" in str(d)])
    # the PaI baseline and the search's masks train in one chunk (train.members 16), each then copied into its
    # mask directory
    assert jobs == {"train_chunk": 1, "chunk_member": 1 + selections, "pags_results": 1, "table": 1, TARGET: 1}, \
        output[-3000:]
    assert "params have changed since last execution" in output
    # search.population: the search and everything after it, which with chunks includes the PaI baseline's training
    # (it trains in its search's chunk; not the PaI mask); the chunk's jobs are planned once the search has run
    jobs, output = dry_run_jobs(checkout, results,
                                edited_config(checkout, "population", lambda c: c["search"].update(population=3)))
    assert set(jobs) == {"pags_search", "chunk_member", "pags_results", "table", TARGET}, output[-3000:]
    assert jobs["chunk_member"] == 1 and "pai_mask" not in jobs  # the PaI baseline's, waiting on the search
    # pretrain.lr: only pretrained checkpoints (@N > 0) train; this grid starts every run from @0, the untrained
    # initialisation, so nothing changes
    for name, edit in [("pretrain_lr", lambda c: c["pretrain"].update(lr=0.05)), ("same", lambda c: None)]:
        jobs, output = dry_run_jobs(checkout, results, edited_config(checkout, name, edit))
        assert not jobs and "Nothing to be done" in output, (name, output[-3000:])
    # and after all those dry runs, the config the results were made with still has nothing to do
    assert "Nothing to be done" in smk(checkout, results, "-n").stdout


@pytest.mark.workflow
def test_a_bad_config_fails_before_any_job_runs_or_any_file_is_written(checkout):
    results = f"{RESULTS}/bad_config"
    path = edited_config(checkout, "bad", lambda c: c["grid"][0].update(methods=["erk", "snap"]))
    result = smk(checkout, results, configfile=path, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "invalid config" in output and "'snap' is not one of" in output
    assert "On instance['grid'][0]['methods'][1]" in output
    assert not (checkout / results).exists() and "Building DAG" not in output


# ================================================================================ config mistakes, by `snakemake -n`


def paper_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


# (tests/test_config.py has: train.epochs of the wrong type, unknown model and method, grid density 0 and 1,
#  an empty grid, unknown keys in `train` and at the top, a table asking for pretrain_iters or a baseline the
#  grid does not make.) Each case: the edit, then what the message must say, the key's path included.
CONFIG_MISTAKES = {
    "unknown key in a grid block": (lambda c: c["grid"][0].update(density=[0.1]),
                                    ["'density' was unexpected", "On instance['grid'][0]"]),
    "unknown key in a table": (lambda c: c["tables"]["table1"].update(paper=1),
                               ["'paper' was unexpected", "On instance['tables']['table1']"]),
    "unknown table": (lambda c: c["tables"].update(table4=dict(c["tables"]["table1"])),
                      ["'table4' was unexpected", "On instance['tables']"]),
    "unknown key in a figure": (lambda c: c["figures"]["fig1"].update(width=8),
                                ["'width' was unexpected", "On instance['figures']['fig1']"]),
    "unknown key in data": (lambda c: c["data"].update(path="data"), ["'path' was unexpected", "On instance['data']"]),
    "misspelt search key": (lambda c: c["search"].update(populaton=10),
                            ["'populaton' was unexpected", "On instance['search']"]),
    "unknown model in resources": (lambda c: c["resources"]["minutes_per_epoch"].update(vgg16=3),
                                   ["'vgg16' was unexpected", "On instance['resources']['minutes_per_epoch']"]),
    "width not an integer": (lambda c: c.update(model_width="wide"),
                             ["'wide' is not of type 'integer'", "On instance['model_width']"]),
    "download not a boolean": (lambda c: c["data"].update(download="yes"),
                               ["'yes' is not of type 'boolean'", "On instance['data']['download']"]),
    "seed as a string": (lambda c: c["grid"][0].update(seeds=["0"]),
                         ["'0' is not of type 'integer'", "On instance['grid'][0]['seeds'][0]"]),
    "densities not a list": (lambda c: c["grid"][1].update(densities=0.05),
                             ["0.05 is not of type 'array'", "On instance['grid'][1]['densities']"]),
    "lr as a string": (lambda c: c["train"].update(lr="0.1"),
                       ["'0.1' is not of type 'number'", "On instance['train']['lr']"]),
    "table models not a list": (lambda c: c["tables"]["table2"].update(models="resnet18"),
                                ["'resnet18' is not of type 'array'", "On instance['tables']['table2']['models']"]),
    "unknown dataset": (lambda c: c["grid"][0].update(dataset="imagenet"),
                        ["'imagenet' is not one of", "On instance['grid'][0]['dataset']"]),
    "unknown baseline": (lambda c: c["grid"][0].update(baselines=["eb", "rigl"]),
                         ["'rigl' is not one of", "On instance['grid'][0]['baselines'][1]"]),
    "unknown device": (lambda c: c.update(device="tpu"), ["'tpu' is not one of", "On instance['device']"]),
    "unknown method in a table": (lambda c: c["tables"]["table3"].update(methods=["snip", "snap"]),
                                  ["'snap' is not one of", "On instance['tables']['table3']['methods'][1]"]),
    "unknown model in a figure": (lambda c: c["figures"]["fig2"].update(model="vgg16"),
                                  ["'vgg16' is not one of", "On instance['figures']['fig2']['model']"]),
    "empty methods": (lambda c: c["grid"][0].update(methods=[]),
                      ["[] should be non-empty", "On instance['grid'][0]['methods']"]),
    "empty seeds": (lambda c: c["grid"][1].update(seeds=[]),
                    ["[] should be non-empty", "On instance['grid'][1]['seeds']"]),
    "empty table models": (lambda c: c["tables"]["table1"].update(models=[]),
                           ["[] should be non-empty", "On instance['tables']['table1']['models']"]),
    "table density 1": (lambda c: c["tables"]["table1"].update(density=1),
                        ["1 is greater than or equal to the maximum of 1",
                         "On instance['tables']['table1']['density']"]),
    "itop density 0": (lambda c: c["itop"].update(density=0),
                       ["0 is less than or equal to the minimum of 0", "On instance['itop']['density']"]),
    "negative grid density": (lambda c: c["grid"][0].update(densities=[0.05, -0.1]),
                              ["-0.1 is less than or equal to the minimum of 0",
                               "On instance['grid'][0]['densities'][1]"]),
    "prune fraction 1": (lambda c: c["lth"].update(prune_fraction=1.0),
                         ["1.0 is greater than or equal to the maximum of 1", "On instance['lth']['prune_fraction']"]),
    "table density the grid does not make": (
        lambda c: c["tables"]["table1"].update(density=0.1),
        ["tables.table1 asks for snip on cifar10/resnet18 at density 0.1 @100, which no grid block makes"]),
    "table method the grid does not make": (
        lambda c: c["tables"]["table3"].update(methods=["synflow"]),
        ["tables.table3 asks for synflow on cifar100/resnet34", "which no grid block makes"]),
    "table dataset the grid does not make": (
        lambda c: c["tables"]["table1"].update(dataset="digits"),
        ["tables.table1 asks for snip on digits/resnet18", "which no grid block makes"]),
    "table model the grid does not make": (
        lambda c: c["grid"][0].update(models=["resnet18"]),
        ["tables.table1 asks for snip on cifar10/resnet34"]),
    "a grid value listed twice": (lambda c: c["grid"][1].update(pretrain_iters=[0, 100, 0]),
                                  ["grid[1].pretrain_iters lists a value twice"]),
    "snapshots never taken": (lambda c: c["search"].update(population=5, snapshot_every=10, overrides=[]),
                              ["search.snapshot_every (10) exceeds search.population (5)"]),
}


@pytest.mark.workflow
@pytest.mark.parametrize("mistake", CONFIG_MISTAKES)
def test_config_mistake_is_rejected_by_a_dry_run_naming_the_key(tmp_path, mistake):
    edit, expected = CONFIG_MISTAKES[mistake]
    config = paper_config()
    edit(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_snakemake(["-n", "--configfile", str(path)], check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "invalid config" in output and "Building DAG" not in output, output[-2000:]
    for text in expected:
        assert text in output, (text, output[-3000:])


# ================================================================================== the step scripts, for real

TRAIN = {"epochs": 2, "batch_size": 32, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"}
SEARCH = {"population": 40, "batches": 1, "batch_size": 64, "snapshot_every": 1, "train_cap": 3}
LTH = json.dumps({"prune_fraction": 0.5, "rewind_epoch": 1})


def script(name: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"workflow_scripts/{name}.py", *map(str, args)], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def interrupted(name: str, args: list, checkpoint: Path, log: Path) -> int:
    """Run a step script, SIGTERM it once its first checkpoint is on disk (mid-run), return its exit code."""
    proc = subprocess.Popen([sys.executable, f"workflow_scripts/{name}.py", *map(str, args)], cwd=ROOT, env=env(),
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_for(checkpoint.exists, proc, f"{checkpoint.name} (the first checkpoint)", log, timeout=240)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=240)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, digits_path) -> dict:
    """A weights file (the initialisation of a width-4 ResNet18), SNIP and ERK masks on it, and the data."""
    base = tmp_path_factory.mktemp("inputs")
    net = models.build_seeded("resnet18", 10, 4, 0)
    weights = base / "iter0.pt"
    models.save_weights(weights, net, {"model": "resnet18", "num_classes": 10, "width": 4, "dataset": "digits",
                                       "seed": 0, "iters": 0})
    from fullspectrum import data

    batches = data.DeviceData(digits_path).random_batches(1, 64, seed=0)
    out = {"weights": weights, "data": digits_path, "net": net, "dir": base}
    for method in ("snip", "erk"):
        mask = pruning.make_mask(net, method, 0.25, batches=batches, seed=0)
        out[method] = base / method / "mask.pt"
        mask_lib.save_mask_file(out[method], mask, mask_lib.build_meta(
            mask, method=method, target_density=0.25, seed=0, model="resnet18", dataset="digits", source=str(weights)))
    return out


def same_masks(a: Path, b: Path) -> None:
    (ma, meta_a), (mb, meta_b) = mask_lib.load_mask_file(a), mask_lib.load_mask_file(b)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma), (a, b)
    assert meta_a == meta_b


def test_sigterm_mid_training_checkpoints_exits_75_and_resumes_bit_exact(inputs, tmp_path):
    def args(out):
        return ["--mask", inputs["erk"], "--weights", inputs["weights"], "--data", inputs["data"], "--train",
                json.dumps(TRAIN), "--seed", 0, "--device", "cpu", "--out", out, "--graph", out.with_name("graph.csv")]

    reference, out = tmp_path / "reference" / "metrics.json", tmp_path / "run" / "metrics.json"
    ok(script("sparse_train", *args(reference)))
    checkpoint = out.with_name(".train_state.pt")
    log = tmp_path / "interrupted.log"
    assert interrupted("sparse_train", args(out), checkpoint, log) == PREEMPTED_EXIT_CODE, log.read_text()[-3000:]
    assert "rerun to resume" in log.read_text() and checkpoint.exists() and not out.exists()
    resumed = ok(script("sparse_train", *args(out)))
    assert "resumed from" in resumed.stderr and not checkpoint.exists()
    a, b = json.loads(reference.read_text()), json.loads(out.read_text())
    steps_per_epoch = math.ceil(1437 / TRAIN["batch_size"])
    assert a["resumed_from"] is None and steps_per_epoch <= b["resumed_from"]["step"] < a["steps"]  # mid epoch 2
    for key in ("curve", "final_acc", "best_acc", "best_epoch", "epochs", "steps", "density", "mask_meta"):
        assert a[key] == b[key], key  # the curve holds every epoch's mean loss and accuracy, to the bit


def test_sigterm_mid_search_saves_state_exits_75_and_resumes_to_the_same_selection(inputs, tmp_path):
    def args(out):
        return ["--weights", inputs["weights"], "--baseline", inputs["snip"], "--data", inputs["data"], "--search",
                json.dumps(SEARCH), "--device", "cpu", "--out", out]

    reference, out = tmp_path / "reference" / "search", tmp_path / "run" / "search"
    ok(script("pags_search", *args(reference)))
    state = out.parent / ".search_work" / "state.pt"
    log = tmp_path / "interrupted.log"
    assert interrupted("pags_search", args(out), state, log) == PREEMPTED_EXIT_CODE, log.read_text()[-3000:]
    assert "rerun to resume" in log.read_text() and state.exists() and not (out / "summary.json").exists()
    ok(script("pags_search", *args(out)))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (reference, out))
    assert a["resumed_at_candidate"] == 0 and 0 < b["resumed_at_candidate"] < SEARCH["population"]
    assert a["selected_files"] == b["selected_files"] and len(a["selected_files"]) >= 1
    for name in a["selected_files"]:
        same_masks(reference / name, out / name)
    assert (reference / "candidates.csv").read_bytes() == (out / "candidates.csv").read_bytes()
    for key in ("selected", "best_layer_metrics", "best_mean", "layers_accepted", "snapshots", "explored_share"):
        assert a[key] == b[key], key
    assert not state.exists()


def test_sigterm_mid_lth_round_checkpoints_exits_75_and_resumes_to_the_same_mask(inputs, tmp_path):
    def args(directory):
        return ["--weights", inputs["weights"], "--data", inputs["data"], "--round", 1, "--density", 0.25,
                "--seed", 0, "--lth", LTH, "--train", json.dumps(TRAIN),
                "--device", "cpu", "--out-mask", directory / "mask.pt", "--out-json", directory / "round.json",
                "--out-rewind", directory / "rewind.pt", "--out-graph", directory / "graph.csv"]

    reference, run = tmp_path / "reference" / "round1", tmp_path / "run" / "round1"
    ok(script("lth_round", *args(reference)))
    checkpoint = run / ".lth_state.pt"
    log = tmp_path / "interrupted.log"
    assert interrupted("lth_round", args(run), checkpoint, log) == PREEMPTED_EXIT_CODE, log.read_text()[-3000:]
    assert not (run / "mask.pt").exists() and not (run / "round.json").exists()
    resumed = ok(script("lth_round", *args(run)))
    assert "resumed from" in resumed.stderr
    a, b = (json.loads((d / "round.json").read_text()) for d in (reference, run))
    assert a["resumed_from"] is None and 0 < b["resumed_from"]["step"] < a["steps"]
    for key in ("curve", "final_acc", "density", "target_density", "trained_density", "steps", "empty_layers"):
        assert a[key] == b[key], key
    same_masks(reference / "mask.pt", run / "mask.pt")  # pruned by magnitude: equal masks need equal weights
    assert not checkpoint.exists()


# ----------------------------------------------------------------------------- truncated and corrupted inputs


def cut_in_half(source: Path, dest: Path) -> Path:
    data = source.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[:len(data) // 2])
    return dest


def graph_args(inputs, mask, weights, graph_csv) -> list:
    """sparse_train's arguments; it measures the graph metrics (into `graph_csv`) before it trains."""
    return ["--mask", mask, "--weights", weights, "--data", inputs["data"], "--train", json.dumps(TRAIN), "--seed", 0,
            "--device", "cpu", "--out", Path(graph_csv).with_name("metrics.json"), "--graph", graph_csv]


def graph_and_metrics(inputs, directory: Path) -> Path:
    """A trained-mask directory as collect_results reads it (metrics.json + graph.csv)."""
    masks, _ = mask_lib.load_mask_file(inputs["erk"])
    directory.mkdir(parents=True, exist_ok=True)
    io.write_csv(graph.model_metrics(inputs["net"], masks), directory / "graph.csv")
    io.write_json({"final_acc": 50.0, "best_acc": 51.0, "density": 0.25, "epochs": 1}, directory / "metrics.json")
    return directory


def case_truncated_mask(inputs, tmp):
    bad = cut_in_half(inputs["erk"], tmp / "bad" / "mask.pt")
    return ("sparse_train", ["--mask", bad, "--weights", inputs["weights"], "--data", inputs["data"], "--train",
                             json.dumps(TRAIN), "--seed", 0, "--device", "cpu", "--out", tmp / "out" / "metrics.json",
                             "--graph", tmp / "out" / "graph.csv"],
            bad, "truncated or corrupted")


def case_weights_of_wrong_shapes(inputs, tmp):
    bad = tmp / "bad" / "weights.pt"  # the state of a width-8 network, described as width 4
    models.save_weights(bad, models.build_seeded("resnet18", 10, 8, 0),
                        {"model": "resnet18", "num_classes": 10, "width": 4, "dataset": "digits", "iters": 0})
    return ("sparse_train", graph_args(inputs, inputs["erk"], bad, tmp / "out" / "graph.csv"),
            bad, "does not fit a resnet18 of width 4: Error(s) in loading state_dict")


def case_mask_for_another_width(inputs, tmp):
    bad = tmp / "bad" / "mask.pt"
    mask = pruning.make_mask(models.build("resnet18", 10, 8), "random", 0.25, seed=0)
    mask_lib.save_mask_file(bad, mask, mask_lib.build_meta(mask, method="random", target_density=0.25, seed=0,
                                                           model="resnet18", dataset="digits", source="x"))
    return ("sparse_train", graph_args(inputs, bad, inputs["weights"], tmp / "out" / "graph.csv"),
            bad, "mask 'conv1.weight' has shape (8, 3, 3, 3) but the model's weight has (4, 3, 3, 3)")


def case_dataset_missing(inputs, tmp):
    bad = tmp / "bad" / "digits.pt"
    return ("pai_mask", ["--weights", inputs["weights"], "--data", bad, "--method", "snip", "--density", 0.25, "--seed",
                         0, "--pai", json.dumps({"scoring_batches": 1, "batch_size": 64, "augment": True}), "--device", "cpu",
                         "--out", tmp / "out" / "mask.pt", "--layers", tmp / "out" / "layers.csv"],
            bad, "prepared dataset {bad} does not exist")


def case_dataset_truncated(inputs, tmp):
    bad = cut_in_half(inputs["data"], tmp / "bad" / "digits.pt")
    return ("lth_round", ["--weights", inputs["weights"], "--data", bad, "--round", 1, "--density", 0.25, "--seed", 0,
                          "--lth", LTH, "--train", json.dumps(TRAIN), "--device",
                          "cpu", "--out-mask", tmp / "out" / "mask.pt", "--out-json", tmp / "out" / "round.json",
                          "--out-rewind", tmp / "out" / "rewind.pt", "--out-graph", tmp / "out" / "graph.csv"],
            bad, "truncated or corrupted")


def case_empty_search_baseline(inputs, tmp):
    bad = tmp / "bad" / "mask.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"")
    return ("pags_search", ["--weights", inputs["weights"], "--baseline", bad, "--data", inputs["data"], "--search",
                            json.dumps(SEARCH), "--device", "cpu", "--out", tmp / "out" / "search"],
            bad, "truncated or corrupted")


def case_graph_csv_missing_a_column(inputs, tmp):
    directory = graph_and_metrics(inputs, tmp / "bad")
    bad = directory / "graph.csv"
    pd.read_csv(bad).drop(columns=["l2"]).to_csv(bad, index=False)
    return ("collect_results", ["--out", tmp / "out" / "results.json", directory / "metrics.json", bad],
            bad, "lacks column(s) ['l2']")


def case_metrics_json_truncated(inputs, tmp):
    directory = graph_and_metrics(inputs, tmp / "bad")
    bad = cut_in_half(directory / "metrics.json", directory / "metrics.json")
    return ("collect_results", ["--out", tmp / "out" / "results.json", bad, directory / "graph.csv"],
            bad, "is not valid JSON")


def case_previous_lth_mask_of_another_kind(inputs, tmp):
    return ("lth_round", ["--weights", inputs["weights"], "--prev-mask", inputs["erk"], "--data", inputs["data"],
                          "--round", 2, "--density", 0.25, "--seed", 0, "--lth", LTH,
                          "--train", json.dumps(TRAIN), "--device", "cpu", "--out-mask", tmp / "out" / "mask.pt",
                          "--out-json", tmp / "out" / "round.json", "--out-graph", tmp / "out" / "graph.csv"],
            inputs["erk"], "is not the mask of LTH round 1 (method 'erk'")


BAD_INPUTS = [case_truncated_mask, case_weights_of_wrong_shapes, case_mask_for_another_width, case_dataset_missing,
              case_dataset_truncated, case_empty_search_baseline, case_graph_csv_missing_a_column,
              case_metrics_json_truncated, case_previous_lth_mask_of_another_kind]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.__name__.removeprefix("case_"))
def test_bad_input_file_is_refused_with_exit_1_naming_it_and_nothing_is_written(inputs, tmp_path, case):
    name, args, bad, message = case(inputs, tmp_path)
    result = script(name, *args)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and str(bad) in error and message.format(bad=bad) in error, error
    out = tmp_path / "out"
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_a_corrupted_training_checkpoint_is_ignored_and_the_step_starts_over(inputs, tmp_path):
    out = tmp_path / "run" / "metrics.json"
    out.parent.mkdir()
    (out.parent / ".train_state.pt").write_bytes(b"PK\x03\x04 not a real checkpoint")
    result = ok(script("sparse_train", "--mask", inputs["erk"], "--weights", inputs["weights"], "--data",
                       inputs["data"], "--train", json.dumps({**TRAIN, "epochs": 1}), "--seed", 0, "--device", "cpu",
                       "--out", out, "--graph", out.with_name("graph.csv")))
    assert "starting over" in result.stderr and "truncated or corrupted" in result.stderr
    assert json.loads(out.read_text())["resumed_from"] is None


# ============================================================================================ a full disk


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 256 KiB file system that fills up; skipped where mounting is not permitted."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8); the injected-ENOSPC tests cover the code path")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}); the injected-ENOSPC tests cover it")
    yield mount_point
    if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(directory: Path) -> None:
    """Write zeros until the file system is full."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "filler")


WRITERS = {
    "torch": (lambda path: torch_io.save_torch({"x": torch.zeros(100_000)}, path), ".pt"),
    "json": (lambda path: io.write_json({"values": list(range(60_000))}, path), ".json"),
    "text": (lambda path: io.write_text("x" * 400_000, path), ".md"),
    "csv": (lambda path: io.write_csv(pd.DataFrame({"a": np.arange(60_000)}), path), ".csv"),
    "mask": (lambda path: mask_lib.save_mask_file(path, {"w": torch.ones(3_000_000, dtype=torch.bool)}, {
        **dict.fromkeys(mask_lib.REQUIRED_META, "x")}), ".pt"),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_full_disk_leaves_no_half_written_file_and_says_so(small_tmpfs, writer):
    write, suffix = WRITERS[writer]
    target = small_tmpfs / f"result{suffix}"
    with pytest.raises(OSError, match="no space left on device while writing") as failure:
        write(target)
    assert failure.value.errno == errno.ENOSPC and str(target) in str(failure.value)
    assert leftovers(small_tmpfs) == []  # neither the target nor a temporary file


def test_full_disk_keeps_the_previous_version_of_a_file(small_tmpfs):
    target = small_tmpfs / "weights.pt"
    torch_io.save_torch({"x": torch.arange(10)}, target)
    before = target.read_bytes()
    with pytest.raises(OSError, match="no space left"):
        torch_io.save_torch({"x": torch.zeros(100_000)}, target)
    assert target.read_bytes() == before and torch.equal(torch_io.load_torch(target)["x"], torch.arange(10))
    assert leftovers(small_tmpfs) == ["weights.pt"]


def test_full_disk_in_a_step_script_exits_1_with_one_line(inputs, small_tmpfs):
    fill(small_tmpfs)
    out = small_tmpfs / "graph.csv"
    result = script("sparse_train", *graph_args(inputs, inputs["erk"], inputs["weights"], out))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"no space left on device while writing {out}" in result.stderr.strip().splitlines()[-1]
    assert leftovers(small_tmpfs) == []


def test_injected_enospc_from_torch_save_or_fsync(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def wrapped(*args, **kwargs):  # torch.save reports a failed write as a RuntimeError raised while handling it
        try:
            no_space()
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos 704 vs 598")

    for attribute, replacement in (("save", no_space), ("save", wrapped)):
        with monkeypatch.context() as patch:
            patch.setattr(torch_io.torch, attribute, replacement)
            with pytest.raises(OSError, match=f"no space left on device while writing {target}"):
                torch_io.save_torch({"x": torch.zeros(3)}, target)
        assert list(tmp_path.iterdir()) == []
    with monkeypatch.context() as patch:
        patch.setattr(io.os, "fsync", no_space)
        with pytest.raises(OSError, match="no space left on device while writing"):
            io.write_json({"a": 1}, target.with_suffix(".json"))
    assert list(tmp_path.iterdir()) == []
    def io_error(*args, **kwargs):
        raise OSError(errno.EIO, "I/O error")

    with monkeypatch.context() as patch:  # any other failure is passed on unchanged, and cleaned up as well
        patch.setattr(torch_io.torch, "save", io_error)
        with pytest.raises(OSError, match="I/O error") as failure:
            torch_io.save_torch({"x": torch.zeros(3)}, target)
        assert failure.value.errno == errno.EIO
    assert list(tmp_path.iterdir()) == []


# ====================================================================== a pickle that would run code on load


class RunsCode:
    """Unpickling this calls os.system: what a malicious or tampered checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(inputs, tmp_path):
    marker = tmp_path / "code-ran"
    payload = RunsCode(marker)
    files = {
        "mask": tmp_path / "mask.pt", "weights": tmp_path / "weights.pt", "data": tmp_path / "digits.pt",
        "legacy": tmp_path / "legacy.pt",
    }
    torch.save({"masks": {"conv1.weight": payload}, "meta": {}}, files["mask"])
    torch.save({"state_dict": payload, "meta": {"model": "resnet18", "num_classes": 10, "width": 4}}, files["weights"])
    torch.save({"train_x": payload}, files["data"])
    torch.save({"masks": payload, "meta": {}}, files["legacy"], _use_new_zipfile_serialization=False)
    from fullspectrum import data

    loaders = [(torch_io.load_torch, files["legacy"]), (mask_lib.load_mask_file, files["mask"]),
               (models.load_weights, files["weights"]), (data.load_prepared, files["data"])]
    for load, path in loaders:
        with pytest.raises(io.InputFileError, match="unsafe to load") as refused:
            load(path)
        assert str(path) in str(refused.value) and "weights_only=True refused it" in str(refused.value)
    result = script("sparse_train", *graph_args(inputs, files["mask"], inputs["weights"], tmp_path / "graph.csv"))
    assert result.returncode == 1 and "unsafe to load" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists() and not (tmp_path / "graph.csv").exists()
    # the control: loading the same file the unsafe way does run the code, so the refusal above mattered
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(files['mask'])!r}, weights_only=False)"],
                   env=env(), capture_output=True, timeout=120)
    assert marker.exists()


# ==================================================================================== properties of mask arithmetic

SHAPES = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple), min_size=1, max_size=5)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(shapes=SHAPES, density=st.floats(0.0, 1.0), ties=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_global_topk_keeps_exactly_round_density_n_of_the_highest_scores(shapes, density, ties, seed):
    generator = torch.Generator().manual_seed(seed)
    scores = {f"l{i}": torch.randint(-2, 3, shape, generator=generator).float() if ties
              else torch.randn(shape, generator=generator) for i, shape in enumerate(shapes)}
    total = sum(s.numel() for s in scores.values())
    result = pruning.global_topk_mask(scores, density)
    kept = sum(int(m.sum()) for m in result.values())
    assert kept == int(round(density * total))
    assert all(result[k].dtype == torch.bool and result[k].shape == scores[k].shape for k in scores)
    assert mask_lib.density(result) == kept / total
    flat_scores = torch.cat([s.flatten() for s in scores.values()])
    flat_mask = torch.cat([m.flatten() for m in result.values()])
    if 0 < kept < total:
        assert flat_scores[flat_mask].min() >= flat_scores[~flat_mask].max()
    k = seed % (total + 1)
    assert sum(int(m.sum()) for m in pruning.global_topk_mask(scores, k=k).values()) == k


LAYERS = st.lists(st.tuples(st.integers(1, 12), st.sampled_from([None, 1, 2, 3])), min_size=1, max_size=5)


def layered_model(in_channels: int, layers) -> nn.Module:
    modules, channels = [], in_channels
    for out, kernel in layers:
        modules.append(nn.Linear(channels, out) if kernel is None else nn.Conv2d(channels, out, kernel))
        channels = out
    return nn.Sequential(*modules)


@PROPERTY
@given(in_channels=st.integers(1, 8), layers=LAYERS, method=st.sampled_from(["random", "erk"]),
       density=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True), seed=st.integers(0, 2**31 - 1))
def test_random_and_erk_masks_keep_exact_per_layer_counts(in_channels, layers, method, density, seed):
    model = layered_model(in_channels, layers)
    params = mask_lib.prunable_parameters(model)
    result = pruning.make_mask(model, method, density, seed=seed)
    assert list(result) == list(params)
    targets = (pruning.erk_layer_densities(model, density) if method == "erk" else dict.fromkeys(params, density))
    for name, param in params.items():
        assert result[name].dtype == torch.bool and result[name].shape == param.shape
        assert int(result[name].sum()) == int(round(targets[name] * param.numel())), name
        assert 0.0 <= targets[name] <= 1.0
    kept, total = sum(int(m.sum()) for m in result.values()), sum(p.numel() for p in params.values())
    assert mask_lib.density(result) == kept / total
    assert abs(kept - density * total) <= 0.5 * len(params) + 1e-6  # only per-layer rounding
    again = pruning.make_mask(model, method, density, seed=seed)
    assert all(torch.equal(result[k], again[k]) for k in result)


@PROPERTY
@given(shapes=SHAPES, seed=st.integers(0, 2**31 - 1))
def test_density_and_layer_densities_match_the_counts(shapes, seed):
    generator = torch.Generator().manual_seed(seed)
    masks = {f"l{i}": torch.rand(shape, generator=generator) < 0.3 for i, shape in enumerate(shapes)}
    kept = {k: int(m.sum()) for k, m in masks.items()}
    assert mask_lib.density(masks) == sum(kept.values()) / sum(m.numel() for m in masks.values())
    layer = mask_lib.layer_densities(masks)
    assert all(layer[k] == pytest.approx(kept[k] / masks[k].numel(), abs=1e-7) for k in masks)
    assert mask_lib.empty_layers(masks) == [k for k in masks if kept[k] == 0]


@PROPERTY
@given(out_channels=st.integers(1, 24), in_channels=st.integers(1, 8), kernel=st.sampled_from([None, 1, 3]),
       density=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1))
def test_graph_metrics_do_not_depend_on_neuron_order_or_weight_signs(out_channels, in_channels, kernel, density,
                                                                       seed):
    # tests/test_graph.py checks finite-exactly-where-defined on random shapes; this adds invariance: the metrics
    # are properties of the weighted bipartite graph, so renumbering its nodes or flipping signs changes nothing.
    rng = np.random.default_rng(seed)
    shape = (out_channels, in_channels) if kernel is None else (out_channels, in_channels, kernel, kernel)
    mask, weight = rng.random(shape) < density, rng.standard_normal(shape)
    original = graph.layer_metrics(weight, mask)
    flat_w, flat_m = weight.reshape(out_channels, -1), mask.reshape(out_channels, -1)
    rows, cols = rng.permutation(flat_w.shape[0]), rng.permutation(flat_w.shape[1])
    signs = rng.choice([-1.0, 1.0], size=flat_w.shape)
    relabelled = graph.layer_metrics((flat_w * signs)[rows][:, cols], flat_m[rows][:, cols])
    for key in graph.METRICS:
        a, b = original[key], relabelled[key]
        assert math.isnan(a) == math.isnan(b), key
        if not math.isnan(a):
            assert b == pytest.approx(a, rel=1e-6, abs=1e-9), key
