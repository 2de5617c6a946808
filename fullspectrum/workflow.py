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
import re
from typing import Iterable, Mapping


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


MASK_DIR = re.compile(
    r"^(?P<results>.+)/(?P<dataset>[^/]+)/(?P<model>[^/]+)/d(?P<density>[0-9.e-]+)/(?P<method>[^/]+)/"
    r"pre(?P<iters>\d+)/s(?P<seed>\d+)/(?P<leaf>.+)$"
)


def parse_mask_dir(path: str) -> dict:
    """Split a mask directory into its identity (dataset, model, density, method, iters, seed, leaf)."""
    match = MASK_DIR.match(path.rstrip("/"))
    if not match:
        raise ValueError(f"{path!r} is not a mask directory of this workflow "
                         "(expected {results}/{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}/...)")
    parts = match.groupdict()
    parts["iters"], parts["seed"] = int(parts["iters"]), int(parts["seed"])
    return parts


def pretrain_path(results: str, dataset: str, model: str, seed: int, iters: int) -> str:
    return f"{results}/{dataset}/{model}/s{seed}/pretrain/iter{iters}.pt"


def data_path(results: str, dataset: str) -> str:
    return f"{results}/data/{dataset}.pt"


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
    """LTH and EB runs: per dataset, model, density and seed; LTH rewinds to `lth.rewind_iters`, EB starts @0."""
    runs = set()
    for block in config["grid"]:
        for baseline in block.get("baselines", []):
            iters = config["lth"]["rewind_iters"] if baseline == "lth" else 0
            for model in block["models"]:
                for density in block["densities"]:
                    for seed in block["seeds"]:
                        runs.add(Run(block["dataset"], model, float(density), baseline, iters, seed))
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
    search = config["search"]
    if search["snapshot_every"] > max(search["population"], 1):
        raise ConfigError(f"search.snapshot_every ({search['snapshot_every']}) exceeds search.population "
                          f"({search['population']}): no snapshot would ever be taken")


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
