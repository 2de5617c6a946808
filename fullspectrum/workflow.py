"""The workflow's view of a config: checks beyond the schema, the grid of runs, and the paths they live at.

Kept in the package (not in rules/common.smk) so tests reach it directly. Every path the workflow writes is
made here, so rules, scripts and tables agree on one layout:

    {results}/data/{dataset}.pt
    {results}/{dataset}/{model}/s{seed}/pretrain/iter{iters}.pt
    {results}/{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}/<leaf>/mask.pt
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Iterable, Mapping

from .methods import DATA_METHODS, GLOBAL_METHODS, NOISY_METHODS


def export_package_path(basedir: str) -> None:
    """Put the checkout on PYTHONPATH so the rules' scripts import this package in any environment.

    Set from the Snakefile at parse time: Snakemake re-parses it inside every cluster job, so jobs get it too.
    """
    paths = [basedir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != basedir]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths)


class ConfigError(ValueError):
    """A config mistake the schema cannot see; the message names the key."""


@dataclasses.dataclass(frozen=True, order=True)
class Run:
    """One cell of the grid: a PaI method (or a baseline: eb, lth) for one model, density, checkpoint, seed."""

    dataset: str
    model: str
    density: float
    method: str
    iters: int
    seed: int

    def dir(self, results: str) -> str:
        return (f"{results}/{self.dataset}/{self.model}/d{density_str(self.density)}/{self.method}/"
                f"pre{self.iters}/s{self.seed}")


def density_str(density: float) -> str:
    """The canonical spelling of a density in paths (0.05 -> '0.05')."""
    return repr(float(density))


_RUN_DIR = (r"^(?P<results>.+)/(?P<dataset>[^/]+)/(?P<model>[^/]+)/d(?P<density>[0-9.e-]+)/(?P<method>[^/]+)/"
            r"pre(?P<iters>\d+)/s(?P<seed>\d+)")
MASK_DIR = re.compile(_RUN_DIR + r"/(?P<leaf>.+)$")


def parse_mask_dir(path: str) -> dict:
    """Split a mask directory into its identity (dataset, model, density, method, iters, seed, leaf)."""
    match = MASK_DIR.match(path.rstrip("/"))
    if not match:
        raise ValueError(f"{path!r} is not a mask directory of this workflow "
                         "(expected {results}/{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}/...)")
    parts = match.groupdict()
    parts["iters"], parts["seed"] = int(parts["iters"]), int(parts["seed"])
    return parts


SEARCH_MASK_DIR = re.compile(r"^(?P<run>.+)/pags/(?P<name>(select|control|equal)\d+)$")


def search_mask_file(mask_dir: str) -> str | None:
    """Where a search's mask (the mask directories pags/select{k}, control{k}, equal{k}) is read from: the file the
    search wrote into its output (pags/search/{name}.pt), in place, so a search's hundreds of snapshots are not
    kept twice. None for every other mask directory, whose mask is its own mask.pt."""
    match = SEARCH_MASK_DIR.match(mask_dir.rstrip("/"))
    return f"{match['run']}/pags/search/{match['name']}.pt" if match else None


def pretrain_path(results: str, dataset: str, model: str, seed: int, iters: int) -> str:
    return f"{results}/{dataset}/{model}/s{seed}/pretrain/iter{iters}.pt"


def data_path(results: str, dataset: str, split_seed: int | None = None) -> str:
    """The prepared dataset: one file per dataset, or with a split seed that seed's own digits split."""
    if split_seed is None:
        return f"{results}/data/{dataset}.pt"
    return f"{results}/data/{dataset}/split{split_seed}.pt"


def run_data_path(config: Mapping, dataset: str, seed: int | str) -> str:
    """The data a run of `seed` trains and scores on: its own split with `data.split: per_seed`, else the shared one."""
    per_seed = config["data"].get("split", "fixed") == "per_seed"
    return data_path(config["results"], dataset, int(seed) if per_seed else None)


def grid_runs(config: Mapping) -> list[Run]:
    """Every PaI run the grid asks for (baselines excluded), without duplicates, in a stable order."""
    runs = {
        Run(block["dataset"], model, float(density), method, iters, seed)
        for block in config["grid"]
        for model in block["models"] for density in block["densities"] for method in block["methods"]
        for iters in block["pretrain_iters"] for seed in block["seeds"]
    }
    return sorted(runs)


def baseline_runs(config: Mapping) -> list[Run]:
    """LTH and EB runs: per dataset, model, density and seed; both start from the seed's initialisation (@0).

    LTH rewinds to epoch `lth.rewind_epoch` of its own dense first round (the authors' `rewind_lt`)."""
    runs = set()
    for block in config["grid"]:
        for baseline in block.get("baselines", []):
            for model in block["models"]:
                for density in block["densities"]:
                    for seed in block["seeds"]:
                        runs.add(Run(block["dataset"], model, float(density), baseline, 0, seed))
    return sorted(runs)


def pretrain_needs(config: Mapping) -> list[tuple[str, str, int, int]]:
    """(dataset, model, seed, iters) of every pretraining checkpoint the grid and the figures start from."""
    needs = {(r.dataset, r.model, r.seed, r.iters) for r in grid_runs(config) + baseline_runs(config)}
    needs |= {(f["dataset"], f["model"], f["seed"], 0) for f in config["figures"].values()}
    return sorted(needs)


def lth_rounds(density: float, prune_fraction: float) -> int:
    """Rounds of pruning `prune_fraction` of the remaining weights until `density` (the last round clips)."""
    return max(1, math.ceil(math.log(density) / math.log(1.0 - prune_fraction) - 1e-9))


def check_config(config: Mapping) -> None:
    """Semantic checks the JSON schema cannot express; raise ConfigError naming the key."""
    runs = set(grid_runs(config))
    baselines = set(baseline_runs(config))
    for block_index, block in enumerate(config["grid"]):
        for key in ("models", "densities", "methods", "pretrain_iters", "seeds"):
            values = block[key]
            if len(set(map(str, values))) != len(values):
                raise ConfigError(f"grid[{block_index}].{key} lists a value twice: {values}")
    for name, table in config.get("tables", {}).items():
        for model in table["models"]:
            for iters in table["pretrain_iters"]:
                for method in table["methods"]:
                    wanted = [r for r in runs if (r.dataset, r.model, r.method, r.iters) ==
                              (table["dataset"], model, method, iters) and math.isclose(r.density, table["density"])]
                    if not wanted:
                        raise ConfigError(
                            f"tables.{name} asks for {method} on {table['dataset']}/{model} at density "
                            f"{table['density']} @{iters}, which no grid block makes; add it to `grid` or drop "
                            f"it from tables.{name}")
            for baseline in table["baselines"]:
                if not any((r.dataset, r.model, r.method) == (table["dataset"], model, baseline)
                           and math.isclose(r.density, table["density"]) for r in baselines):
                    raise ConfigError(
                        f"tables.{name} asks for baseline {baseline} on {table['dataset']}/{model} at density "
                        f"{table['density']}, which no grid block's `baselines` makes")
    if config["data"].get("split") == "per_seed":
        fixed = sorted({r.dataset for r in runs | baselines} - {"digits"})
        if fixed:
            raise ConfigError(f"data.split: per_seed draws a split per seed, which only digits has; {', '.join(fixed)} "
                              "keep their official test sets (set data.split: fixed)")
    if "study" in config:
        check_study(config)
    lth = config["lth"]
    if lth["rewind_epoch"] >= lth["round_epochs"]:
        raise ConfigError(f"lth.rewind_epoch ({lth['rewind_epoch']}) must be below lth.round_epochs "
                          f"({lth['round_epochs']}): the rewind point is taken during the dense first round")
    for run in sorted(runs):
        search = resolved_search(config, run)
        if search["snapshot_every"] > max(search["population"], 1):
            raise ConfigError(f"search.snapshot_every ({search['snapshot_every']}) exceeds search.population "
                              f"({search['population']}) for {run.method} on {run.dataset}/{run.model} @{run.iters}: "
                              "no snapshot would ever be taken")


def check_study(config: Mapping) -> None:
    """The study pairs methods over seeds: one model, density and pretraining setting, the control on, the same
    seeds for every method, and an ITOP figure to read."""
    runs = grid_runs(config)
    settings = {(r.dataset, r.model, r.density, r.iters) for r in runs}
    if len(settings) != 1:
        raise ConfigError("study: the grid must be one dataset, model, density and pretraining setting (it pairs "
                          f"methods over seeds); it has {sorted(settings)}")
    seeds = {m: sorted(r.seed for r in runs if r.method == m) for m in {r.method for r in runs}}
    if len({tuple(s) for s in seeds.values()}) != 1:
        raise ConfigError(f"study: every method needs the same seeds, got {seeds}")
    if not all(resolved_search(config, r)["control"] for r in runs):
        raise ConfigError("study: search.control must be true (the primary comparisons are against the control)")
    if config["study"]["figure"] not in config["figures"]:
        raise ConfigError(f"study.figure {config['study']['figure']!r} is not in `figures` "
                          f"(has: {', '.join(config['figures'])})")


def table_runs(config: Mapping, name: str) -> list[Run]:
    """The grid runs Table `name` reports (the PaI methods; baselines via `table_baselines`)."""
    table = config["tables"][name]
    return [r for r in grid_runs(config)
            if r.dataset == table["dataset"] and r.model in table["models"] and r.method in table["methods"]
            and r.iters in table["pretrain_iters"] and math.isclose(r.density, table["density"])]


def table_baselines(config: Mapping, name: str) -> list[Run]:
    table = config["tables"][name]
    return [r for r in baseline_runs(config)
            if r.dataset == table["dataset"] and r.model in table["models"] and r.method in table["baselines"]
            and math.isclose(r.density, table["density"])]


def unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))


# Methods whose mask directories carry their own starting weights (`weights.pt` beside `mask.pt`): Early-Bird
# tickets are drawn mid-training and ITOP tickets are snapshots of a dynamic sparse run.
OWN_WEIGHTS = ("eb", "itop")


def lth_rewind_path(run_dir: str) -> str:
    """The rewind point of an LTH run: its dense first round's weights after `lth.rewind_epoch` epochs."""
    return f"{run_dir}/round1/rewind.pt"


def start_weights(mask_dir: str) -> str:
    """The weights a mask in `mask_dir` was made from, and that its training starts from."""
    parts = parse_mask_dir(mask_dir)
    if parts["method"] in OWN_WEIGHTS:
        return f"{mask_dir.rstrip('/')}/weights.pt"
    if parts["method"] == "lth":
        return lth_rewind_path(mask_dir.rstrip("/").rsplit("/", 1)[0])
    return pretrain_path(parts["results"], parts["dataset"], parts["model"], parts["seed"], parts["iters"])


# ----- ITOP snapshot tickets (Figures 1-2) ------------------------------------------------------------------
# Snakemake needs every output before anything runs, so the number of ITOP snapshots is computed from the config
# alone: the training-set sizes are fixed by the data preparation (digits: the fixed 80/20 split of 1,797 images).
TRAIN_SIZES = {"digits": 1437, "cifar10": 50000, "cifar100": 50000}


def itop_total_steps(config: Mapping, dataset: str) -> int:
    """Optimiser steps of the ITOP run: `itop.epochs` epochs of `train.batch_size` over the training set."""
    if dataset not in TRAIN_SIZES:
        raise ConfigError(f"no fixed training-set size for dataset {dataset!r}; add it to workflow.TRAIN_SIZES")
    steps_per_epoch = math.ceil(TRAIN_SIZES[dataset] / config["train"]["batch_size"])
    return config["itop"]["epochs"] * steps_per_epoch


def itop_update_steps(total_steps: int, update_frequency: int) -> list[int]:
    """Steps after which ITOP prunes and regrows: every `update_frequency` steps, never at the last step."""
    return list(range(update_frequency, total_steps, update_frequency))


def itop_snapshot_steps(total_steps: int, update_frequency: int, snapshot_every: int) -> list[int]:
    """Steps of the snapshot tickets: 0 (the ERK mask on the initialisation), then every `snapshot_every`-th update."""
    updates = itop_update_steps(total_steps, update_frequency)
    return [0] + [step for number, step in enumerate(updates, start=1) if number % snapshot_every == 0]


def itop_snapshot_count(config: Mapping, dataset: str) -> int:
    itop = config["itop"]
    return len(itop_snapshot_steps(itop_total_steps(config, dataset), itop["update_frequency"],
                                   itop["snapshot_every"]))


def itop_dir(config: Mapping, dataset: str, model: str, seed: int) -> str:
    """Where the ITOP run of (dataset, model, seed) writes itop.json and its snapshot tickets snap{k}/."""
    return Run(dataset, model, float(config["itop"]["density"]), "itop", 0, int(seed)).dir(config["results"])


def itop_snapshot_dirs(config: Mapping, dataset: str, model: str, seed: int) -> list[str]:
    """The mask directories of the snapshot tickets (each trained and measured by sparse_train)."""
    base = itop_dir(config, dataset, model, seed)
    return [f"{base}/snap{k}" for k in range(itop_snapshot_count(config, dataset))]


# ----- many masks per job (fullspectrum.chunk; rules/train.smk: train_chunk, chunk_member) -----------------
# A group is a run's PaI baseline and what its search hands to training ({run}/pai, then {run}/pags/select{k},
# control{k}, equal{k}: one starting point and one seed) or one ITOP run's tickets ({itop run}/snap{k}); its
# members, in order, are trained in chunks of `train.members` by one job each.
CHUNK_GROUP = r".+/pags|.+/itop/pre\d+/s\d+"
CHUNK_MEMBER = (r".+/pre\d+/s\d+/pai|.+/pags/(?:select|control|equal)\d+|"
                r".+/itop/pre\d+/s\d+/snap\d+")


def chunked(config: Mapping) -> bool:
    """Whether groups train in chunks (train.members > 1); otherwise every mask is a job of its own."""
    return config["train"].get("members", 1) > 1


def parse_group(group: str) -> dict:
    """A group's run identity (results, dataset, model, density, method, iters, seed) and its kind: "search" (a
    run's pags/) or "itop" (an ITOP run's tickets)."""
    match = re.match(_RUN_DIR + r"(?P<search>/pags)?$", group.rstrip("/"))
    if not match or not re.fullmatch(CHUNK_GROUP, group.rstrip("/")):
        raise ValueError(f"{group!r} is not a group of masks trained in chunks (a run's pags/ or an ITOP run)")
    parts = match.groupdict()
    parts["kind"] = "search" if parts.pop("search") else "itop"
    parts["iters"], parts["seed"] = int(parts["iters"]), int(parts["seed"])
    return parts


def chunk_dir(group: str, k: int) -> str:
    """The folder chunk k of a group is trained into (each member's files, and chunk.json)."""
    return f"{group}/train/chunk{k}"


def group_of(mask_dir: str) -> str:
    """The group a chunk member belongs to: its run's pags/ for the PaI baseline, else the folder above it."""
    run, leaf = os.path.split(mask_dir.rstrip("/"))
    return f"{run}/pags" if leaf == "pai" else run


def chunk_of(member_dirs: list[str], mask_dir: str, members: int) -> str:
    """The chunk folder that trains `mask_dir`, one of its group's `member_dirs` (in order)."""
    return chunk_dir(group_of(mask_dir), member_dirs.index(mask_dir.rstrip("/")) // members)


def chunk_members(member_dirs: list[str], k: int, members: int) -> list[str]:
    """The mask directories chunk k of a group trains: the group's members k*members .. (k+1)*members - 1."""
    chunk = member_dirs[k * members:(k + 1) * members]
    if not chunk:
        raise ConfigError(f"chunk {k} of {len(member_dirs)} masks in chunks of {members} is empty; ask for one of "
                          f"chunk0..chunk{math.ceil(len(member_dirs) / members) - 1}")
    return chunk


# Baselines (fullspectrum.baselines, rules/baselines.smk): where an LTH or EB run keeps what the tables read.
BASELINE_METHODS = ("lth", "eb")


def lth_run_dir(results: str, wildcards) -> str:
    """The LTH run directory named by a rule's wildcards (dataset, model, density, iters, seed), as spelled."""
    w = wildcards
    return f"{results}/{w.dataset}/{w.model}/d{w.density}/lth/pre{w.iters}/s{w.seed}"


def lth_previous_mask(results: str, wildcards) -> list[str]:
    """Input of LTH round `wildcards.k`: the mask of round k-1 (none for round 1, which trains dense)."""
    k = int(wildcards.k)
    return [f"{lth_run_dir(results, wildcards)}/round{k - 1}/mask.pt"] if k > 1 else []


def lth_round_files(results: str, wildcards, prune_fraction: float, name: str) -> list[str]:
    """`round{k}/{name}` of every round k = 1..K of the LTH run the wildcards name (K from its density)."""
    rounds = lth_rounds(float(wildcards.density), prune_fraction)
    return [f"{lth_run_dir(results, wildcards)}/round{k}/{name}" for k in range(1, rounds + 1)]


def baseline_files(results: str, run: Run) -> dict[str, str]:
    """The files a table needs for a baseline run: the ticket's training metrics and graph metrics, the search
    cost, and the baseline's own record (LTH: `rounds.csv`; EB: `eb.json`)."""
    if run.method not in BASELINE_METHODS:
        raise ValueError(f"{run.method!r} is not a baseline; expected one of {BASELINE_METHODS}")
    base = run.dir(results)
    files = {"metrics": f"{base}/ticket/metrics.json", "graph": f"{base}/ticket/graph.csv",
             "cost": f"{base}/cost.json"}
    if run.method == "lth":
        files["rounds"] = f"{base}/rounds.csv"
    else:
        files["eb"] = f"{base}/eb.json"
    return files


def pags_results_path(run: Run, results: str) -> str:
    return f"{run.dir(results)}/pags/results.json"


def table_sources(config: Mapping, name: str) -> list[dict]:
    """Table `name`'s rows in the paper's layout, each with the result files it is assembled from.

    Blocks per model and pretraining setting ("ResNet18@100"), rows per PaI method; the baselines (EB, LTH)
    follow the last block of each model. Seeds of one cell are pooled (baseline: mean ± std over seeds).
    """
    table, results = config["tables"][name], config["results"]
    runs, baselines = table_runs(config, name), table_baselines(config, name)
    rows = []
    for model in table["models"]:
        for iters in table["pretrain_iters"]:
            for method in table["methods"]:
                cell = [r for r in runs if (r.model, r.iters, r.method) == (model, iters, method)]
                rows.append({
                    "model": model, "iters": iters, "method": method, "kind": "pai",
                    "seeds": [r.seed for r in cell],
                    "baseline": [f"{r.dir(results)}/pai/metrics.json" for r in cell],
                    "search": [pags_results_path(r, results) for r in cell],
                    "cost": [],
                })
        for baseline in table["baselines"]:
            cell = [r for r in baselines if (r.model, r.method) == (model, baseline)]
            rows.append({
                "model": model, "iters": None, "method": baseline, "kind": "baseline",
                "seeds": [r.seed for r in cell],
                "baseline": [f"{r.dir(results)}/ticket/metrics.json" for r in cell],
                "search": [], "cost": [f"{r.dir(results)}/cost.json" for r in cell],
            })
    return rows


def table_inputs(config: Mapping, name: str) -> list[str]:
    return unique(path for row in table_sources(config, name) for key in ("baseline", "search", "cost")
                  for path in row[key])


def table_config(config: Mapping, name: str) -> dict:
    """The part of the config Table `name` depends on (its rule's params: editing anything else keeps it)."""
    return {"results": config["results"], "grid": config["grid"], "tables": {name: config["tables"][name]},
            "train": {"epochs": config["train"]["epochs"]}, "pretrain": {"batch_size": config["pretrain"]["batch_size"]},
            "model_width": config["model_width"], "search": config["search"]}


def pai_settings(config: Mapping, method: str) -> dict:
    """The `pai` settings a method's mask depends on (data-free methods depend on none of them)."""
    return dict(config["pai"]) if method in DATA_METHODS else {}


# What a `search.overrides` entry may select runs by (the rest of the entry are the settings it sets).
SEARCH_SELECTORS = ("dataset", "model", "method", "pretrain_iters")


def _matches(override: Mapping, run: Run) -> bool:
    values = {"dataset": run.dataset, "model": run.model, "method": run.method, "pretrain_iters": run.iters}
    return all(override[key] == values[key] for key in SEARCH_SELECTORS if key in override)


def resolved_search(config: Mapping, run: Run) -> dict:
    """`search` for one run: the defaults, then every `search.overrides` entry that matches it, in order (the
    authors set population and snapshot interval per table and method)."""
    search = {k: v for k, v in config["search"].items() if k != "overrides"}
    for override in config["search"].get("overrides", []):
        if _matches(override, run):
            search.update({k: v for k, v in override.items() if k not in SEARCH_SELECTORS})
    return search


def snapshot_rule(config: Mapping, run: Run) -> str:
    """What sets a run's search's save flag (fullspectrum.search.SNAPSHOT_RULES): "authors" (the default: a candidate
    layer identical to the best's counts as accepted) or "changed" (only a changed layer does)."""
    return resolved_search(config, run).get("snapshot_rule", "authors")


def model_head(config: Mapping, dataset: str) -> dict:
    """The classifier of `dataset`'s models (`model_head`): {"outputs": int, or None for one per class, "bias": bool}."""
    head = (config.get("model_head") or {}).get(dataset) or {}
    return {"outputs": head.get("outputs"), "bias": head.get("bias", True)}


def pretrain_init(config: Mapping, iters: int | str) -> str:
    """The initialisation checkpoint @`iters` starts from: @0 is `model_init`; @N > 0 starts from PyTorch's
    initialisation (`pretrain.init: pytorch`, the authors' lth_tickets_pretraining.py) or from `model_init`."""
    if int(iters) > 0 and config["pretrain"].get("init", "pytorch") == "pytorch":
        return "pytorch"
    return config["model_init"]


def pretrain_flags(config: Mapping, dataset: str, iters: int | str) -> str:
    """The pretrain job's model switches: its initialisation and, where `model_head` names the dataset, the head."""
    head = model_head(config, dataset)
    flags = [f"--init {pretrain_init(config, iters)}"]
    if head["outputs"] is not None:
        flags.append(f"--outputs {head['outputs']}")
    if not head["bias"]:
        flags.append("--no-head-bias")
    return " ".join(flags)


def writes_equal_density(config: Mapping, run: Run) -> bool:
    """Whether a run's search writes equal-density selections: `search.equal_density` on, and a score-based
    method (ERK and Random selections never drift, so toggling the option leaves their searches alone)."""
    return bool(resolved_search(config, run).get("equal_density")) and run.method in GLOBAL_METHODS


def search_flags(config: Mapping, run: Run) -> str:
    """The search job's switches for the extra masks it writes: the control and the equal-density selections."""
    flags = {"--control": bool(resolved_search(config, run).get("control")),
             "--equal-density": writes_equal_density(config, run)}
    return " ".join(flag for flag, on in flags.items() if on)


def search_settings(config: Mapping, run: Run) -> dict:
    """The search settings a run's search depends on, so editing another method's knob re-runs nothing here."""
    search = resolved_search(config, run)
    settings = {key: search[key] for key in ("population", "snapshot_every", "train_cap")}
    settings["snapshot_rule"] = snapshot_rule(config, run)
    if run.method in DATA_METHODS:
        settings.update(batches=search["batches"], augment=search["augment"], batch_size=config["pai"]["batch_size"])
    if run.method in NOISY_METHODS:
        settings["noise"] = search["synflow_noise"]
    return settings
