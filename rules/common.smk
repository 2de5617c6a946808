# Shared helpers: config validation, the grid, and path functions. Logic lives in fullspectrum.workflow.
import json
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# Workflow scripts import the package from this checkout, locally, in conda envs and on cluster nodes alike.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, workflow.basedir)

from fullspectrum import workflow as wf  # noqa: E402

try:
    validate(config, "../schemas/config.schema.yaml")
    wf.check_config(config)
except Exception as error:  # the schema's or ours: one clear line naming the key, before any job runs
    raise WorkflowError(f"invalid config: {error}") from None

RESULTS = config["results"]
RUNS = wf.grid_runs(config)
BASELINES = wf.baseline_runs(config)
TRAIN = config["train"]


wildcard_constraints:
    dataset=r"digits|cifar10|cifar100",
    model=r"resnet18|resnet34",
    seed=r"\d+",
    iters=r"\d+",
    density=r"[0-9.e-]+",


def log_path(rule_name, *parts):
    return f"{RESULTS}/logs/{rule_name}/" + "/".join(parts) + ".log"


def data_file(wildcards):
    return wf.data_path(RESULTS, wildcards.dataset)


def as_json(value):
    """A params value passed to a script on the command line."""
    return json.dumps(value, sort_keys=True)


def train_minutes(model, epochs):
    return int(config["resources"]["minutes_per_epoch"].get(model, 1.0) * epochs) + 10


GPU = config["resources"]["gpu"]
CPUS = config["resources"]["cpus_per_gpu"]
MEM_MB = config["resources"]["mem_mb"]
DEVICE = config["device"]

def mask_results(mask_dirs):
    """What every mask directory gets: its trained metrics and its graph metrics."""
    return [f"{d}/{name}" for d in mask_dirs for name in ("metrics.json", "graph.csv")]


# A grid cell's directory, as a wildcard pattern.
RUN_DIR = f"{RESULTS}/{{dataset}}/{{model}}/d{{density}}/{{method}}/pre{{iters}}/s{{seed}}"


def run_weights(wildcards):
    return wf.pretrain_path(RESULTS, wildcards.dataset, wildcards.model, wildcards.seed, wildcards.iters)


# Any mask directory ({maskdir}/mask.pt): where its weights, data and runtime come from.
def mask_start_weights(wildcards):
    return wf.start_weights(wildcards.maskdir)


def mask_data(wildcards):
    return wf.data_path(RESULTS, wf.parse_mask_dir(wildcards.maskdir)["dataset"])


def mask_train_minutes(wildcards):
    return train_minutes(wf.parse_mask_dir(wildcards.maskdir)["model"], TRAIN["epochs"])


# PAGS/PEGS selections: known once the search checkpoint ran.
def selected_mask_dirs(run):
    """The mask directories of a run's PAGS/PEGS selection (evaluates the search checkpoint)."""
    search_dir = checkpoints.pags_search.get(
        dataset=run.dataset, model=run.model, density=wf.density_str(run.density), method=run.method,
        iters=run.iters, seed=run.seed).output[0]
    summary = json.loads(open(f"{search_dir}/summary.json").read())
    return [f"{run.dir(RESULTS)}/pags/{name.removesuffix('.pt')}" for name in summary["selected_files"]]


def selected_results(wildcards):
    run = wf.Run(wildcards.dataset, wildcards.model, float(wildcards.density), wildcards.method,
                 int(wildcards.iters), int(wildcards.seed))
    return mask_results(selected_mask_dirs(run))


# Tables and baselines.
def table_inputs(wildcards):
    return wf.table_inputs(config, wildcards.table)


def table_files(name):
    return [f"{RESULTS}/tables/{name}.{ext}" for ext in ("csv", "md", "tex")]


def baseline_outputs(run):
    return list(wf.baseline_files(RESULTS, run).values())

