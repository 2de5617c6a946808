"""What a config's grid costs before it is submitted: jobs per rule, SLURM jobs, trainings, training epochs,
GPU-hours and wall-clock on N GPUs, per table and figure and in total (runs shared between tables counted once).

    python -m fullspectrum.plan --configfile config.yaml --gpus 8        (make plan GPUS=8)

GPU time comes from `resources.minutes_per_epoch` (per model; `benchmarks/train_step.py --device cuda` measures
it) and `resources.seconds_per_candidate` (a search candidate's graph metrics and bookkeeping; `benchmarks/pags.py`
measures it). A value counts as measured only when `resources.measured` says where it was measured (for example
`measured: {minutes_per_epoch: {resnet18: "A100 40GB, benchmarks/train_step.py"}}`); every GPU-hour and
wall-clock figure that rests on a value not listed there is marked `*`, and the plan names those values and the
command that measures each. How many snapshots a search selects is known only after it ran, so every search contributes a range
of trainings: at least 1, at most population / snapshot_every (or `train_cap`), with the run's own search
settings (`search.overrides`). One case is known in advance: under `search.snapshot_rule: authors` an ERK search
whose ERK densities keep a layer dense redraws that layer identical to the best's in every candidate, which sets
the save flag, so it saves exactly population / snapshot_every snapshots (the width-8 digits models at 0.2 do; the
paper grid's width-64 ResNets with their 100-way head at 0.01 keep none dense). Snapshots are doubled by the
no-criterion control when `search.control` is on, plus up to as
many equal-density masks with `search.equal_density`. Early-Bird is counted at its full epoch budget (it may stop
sooner). Wall-clock is the larger of GPU-hours / N and the longest chain of dependent
GPU jobs (pretraining -> mask -> search -> training, or the LTH rounds one after another).

Jobs are not trainings: with `train.members` > 1 the masks of one search (its selections, controls and
equal-density masks) and the snapshot tickets of one ITOP run are trained by `train_chunk` jobs of up to that many
masks each (ceil(masks / members) jobs), and each mask's metrics are then copied into its own folder by a local
`chunk_member` job; PaI baselines, LTH rounds and EB tickets stay one `sparse_train` job each (with members 1,
everything is). `trainings` and `epochs` count masks trained; the jobs per rule count jobs; `slurm jobs` counts every
job of a rule that is not local (LOCAL_RULES: they run in the Snakemake process; pretraining @0 is a CPU job but a
SLURM job). A chunk's GPU time (`Costs.chunk_minutes`, also its SLURM runtime) is the sum of its members' under
`train.mode: sequential`, that divided by `resources.fused_speedup` under `fused` (never less than one member's);
fused_speedup is a cost value like the others (`resources.measured.fused_speedup` says where it was measured). A
run's chain ends with its longest chunk: min(members, masks) masks.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Mapping

import yaml

from . import workflow as wf
from .methods import DATA_METHODS

WORKFLOW_CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}  # fullspectrum.data.DATASETS, without importing torch
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}  # fullspectrum.models.ARCHITECTURES
# Rules that run in the Snakemake process rather than as SLURM jobs: the `localrules:` of Snakefile and rules/*.smk,
# and chunk_member (it copies a chunk member's metrics.json into the member's mask folder).
LOCAL_RULES = frozenset({"all", "prepare_data", "prepare_split", "pags_results", "lth_summary", "table", "figure",
                         "landing", "study", "study_verdict", "chunk_member"})
# How to measure each cost value on the GPU the grid will run on.
MEASURE = {
    "minutes_per_epoch": "python benchmarks/train_step.py --device cuda --width 64 --model {model}  "
                         "(its 'minutes_per_epoch' line)",
    "seconds_per_candidate": "python benchmarks/pags.py --device cuda  (its 'everything else per candidate' line; "
                             "it times ResNet18)",
    "fused_speedup": "bash benchmarks/gpu_check.sh  (its 'suggested train.members' line), or python "
                     "benchmarks/fused_train.py --device cuda --width 64",
}
UNMEASURED_MARK = "*"
REPORT_WIDTH = 160  # the table wraps its jobs per rule at this width


@dataclasses.dataclass(frozen=True)
class Span:
    """A quantity known only as a range (the snapshot trainings make most totals one)."""

    lo: float
    hi: float

    def __add__(self, other: "Span") -> "Span":
        return Span(self.lo + other.lo, self.hi + other.hi)

    def scale(self, factor: float) -> "Span":
        return Span(self.lo * factor, self.hi * factor)


ZERO = Span(0, 0)


def resnet_shapes(model: str, width: int, outputs: int) -> dict[str, tuple[int, ...]]:
    """The prunable weights' shapes of fullspectrum.models' CIFAR ResNet, named as its parameters (no torch)."""
    shapes = {"conv1.weight": (width, 3, 3, 3)}
    in_planes = width
    for stage, count in enumerate(BLOCKS[model]):
        planes = width * 2**stage
        for block in range(count):
            prefix = f"layer{stage + 1}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (planes, in_planes, 3, 3)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            if (stage > 0 and block == 0) or in_planes != planes:
                shapes[f"{prefix}.shortcut.0.weight"] = (planes, in_planes, 1, 1)
            in_planes = planes
    shapes["linear.weight"] = (outputs, in_planes)
    return shapes


def erk_dense_layers(shapes: Mapping[str, tuple[int, ...]], density: float) -> list[str]:
    """The layers the ERK rule keeps dense at `density` (fullspectrum.pruning.erk_layer_densities' loop)."""
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numel[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while len(dense) < len(shapes):
        sparse = [name for name in shapes if name not in dense]
        epsilon = ((density * sum(numel.values()) - sum(numel[name] for name in dense))
                   / sum(raw[name] * numel[name] for name in sparse))
        largest = max(raw[name] for name in sparse)
        if epsilon * largest <= 1.0:
            break
        dense.update(name for name in sparse if raw[name] == largest)
    return [name for name in shapes if name in dense]


def exact(value: float) -> Span:
    return Span(value, value)


@dataclasses.dataclass(frozen=True)
class Jobs:
    """Jobs of one rule for one purpose: how many, the masks they train, the epochs they train, the GPU minutes they
    take. A train_chunk job trains several masks, so `count` (jobs) and `trainings` (masks) differ."""

    rule: str
    count: Span
    epochs: Span = ZERO
    gpu_minutes: Span = ZERO
    uses: frozenset = frozenset()  # the cost values its GPU minutes come from: {("minutes_per_epoch", model), ...}
    #                                ("fused_speedup", None): a value for every model
    trainings: Span = ZERO  # masks trained


def merged_config(configfiles: list[str]) -> dict:
    """config.yaml with each --configfile laid over it, nested keys merged, as Snakemake does."""
    def overlay(base: Mapping, top: Mapping) -> dict:
        merged = dict(base)
        for key, value in top.items():
            both = isinstance(value, Mapping) and isinstance(base.get(key), Mapping)
            merged[key] = overlay(base[key], value) if both else value
        return merged

    config = yaml.safe_load(WORKFLOW_CONFIG.read_text())
    for path in configfiles:
        if Path(path).resolve() != WORKFLOW_CONFIG:
            config = overlay(config, yaml.safe_load(Path(path).read_text()))
    return config


@dataclasses.dataclass
class Part:
    """The jobs of a table or figure by key (shared keys are the same job) and its chains of dependent jobs."""

    jobs: dict = dataclasses.field(default_factory=dict)
    chains: dict = dataclasses.field(default_factory=dict)

    def add(self, other: "Part") -> None:
        self.jobs.update(other.jobs)
        self.chains.update(other.chains)


class Costs:
    """The jobs a config's tables and figures need, each with its cost in epochs and GPU minutes."""

    def __init__(self, config: Mapping):
        self.config = config
        self.train = config["train"]
        self.resources = config["resources"]

    def minutes(self, model: str, epochs: float) -> float:
        return self.resources["minutes_per_epoch"][model] * epochs

    @property
    def members(self) -> int:
        """Masks one train_chunk job trains at most (`train.members`; 1: no chunks, a sparse_train job per mask)."""
        return self.train.get("members", 1)

    @property
    def fused(self) -> bool:
        return self.train.get("mode", "sequential") == "fused"

    @property
    def speedup(self) -> float:
        """Member-images/s of a fused chunk over sequential training: resources.fused_speedup, 1 when sequential."""
        return self.resources.get("fused_speedup", 1.0) if self.fused else 1.0

    def chunk_minutes(self, model: str, epochs: float, members: int) -> float:
        """GPU minutes of one train_chunk job training `members` masks for `epochs` each (the Snakefile's runtime for
        it is int(this) + 10): their minutes one after another, or divided by the fused speed-up, but never less
        than one member's (a fused chunk of one trains one model)."""
        one = self.minutes(model, epochs)
        return max(one, members * one / self.speedup) if self.fused else members * one

    @staticmethod
    def epoch_rate(model: str, epochs: float) -> frozenset:
        """The cost value behind `minutes(model, epochs)`: none when nothing is trained."""
        return frozenset({("minutes_per_epoch", model)}) if epochs > 0 else frozenset()

    def scoring_epochs(self, run: wf.Run, batches: int | str) -> float:
        """Scoring `batches` mini-batches (SNIP, GraSP; "all" = one epoch) costs about as many training steps;
        other methods ~0."""
        if run.method not in DATA_METHODS:
            return 0.0
        steps_per_epoch = math.ceil(wf.TRAIN_SIZES[run.dataset] / self.train["batch_size"])
        return 1.0 if batches == "all" else batches / steps_per_epoch

    def search_minutes(self, run: wf.Run) -> float:
        """GPU minutes of a run's search: per candidate, its scoring batches plus graph metrics and bookkeeping;
        with the control, its draws (at most one per snapshot); with equal density, the baseline's scoring pass."""
        search = wf.resolved_search(self.config, run)
        per_candidate = (self.minutes(run.model, self.scoring_epochs(run, search["batches"]))
                         + self.resources.get("seconds_per_candidate", {}).get(run.model, 0.0) / 60)
        control_draws = search["population"] // search["snapshot_every"] if search.get("control") else 0
        minutes = (search["population"] + control_draws) * per_candidate
        if wf.writes_equal_density(self.config, run):
            minutes += self.minutes(run.model, self.scoring_epochs(run, self.config["pai"]["scoring_batches"]))
        return minutes

    def search_uses(self, run: wf.Run) -> frozenset:
        search = wf.resolved_search(self.config, run)
        return self.epoch_rate(run.model, self.scoring_epochs(run, search["batches"])) | {
            ("seconds_per_candidate", run.model)}

    def training(self, rule: str, model: str, epochs: float, count: Span = exact(1)) -> Jobs:
        return Jobs(rule, count, count.scale(epochs), count.scale(self.minutes(model, epochs)),
                    self.epoch_rate(model, epochs), trainings=count)

    def mask_trainings(self, key: tuple, model: str, epochs: float, masks: Span) -> dict[tuple, Jobs]:
        """The jobs that train one search's masks (or one ITOP run's tickets): a sparse_train job per mask with
        train.members 1; otherwise ceil(masks / members) train_chunk jobs and a local chunk_member job per mask."""
        if self.members == 1:
            return {key: self.training("sparse_train", model, epochs, masks)}
        uses = self.epoch_rate(model, epochs) | ({("fused_speedup", None)} if self.fused else set())
        chunks = Span(math.ceil(masks.lo / self.members), math.ceil(masks.hi / self.members))
        minutes = masks.scale(self.minutes(model, epochs) / self.speedup)
        chunk = Jobs("train_chunk", chunks, masks.scale(epochs), minutes, frozenset(uses), trainings=masks)
        return {key: chunk, key + ("members",): Jobs("chunk_member", masks)}

    def longest_chunk(self, model: str, epochs: float, masks: Span) -> Span:
        """The GPU minutes of the longest job training these masks: a chunk of min(members, masks) of them."""
        return Span(*(self.chunk_minutes(model, epochs, min(self.members, n)) for n in (masks.lo, masks.hi)))

    def pretrain(self, dataset: str, model: str, seed: int, iters: int) -> tuple[tuple, Jobs]:
        """The checkpoint a run starts from (@0, the initialisation, is made on the CPU)."""
        epochs = iters * self.config["pretrain"]["batch_size"] / wf.TRAIN_SIZES[dataset]
        return ("pretrain", dataset, model, seed, iters), Jobs("pretrain", exact(1),
                                                               gpu_minutes=exact(self.minutes(model, epochs)),
                                                               uses=self.epoch_rate(model, epochs))

    def saves_every_time(self, run: wf.Run) -> bool:
        """Whether the run's search is known to save a snapshot at every sampling point: the authors' snapshot rule
        and an ERK mask with a dense layer (redrawn identical in every candidate, so always accepted)."""
        if run.method != "erk" or wf.snapshot_rule(self.config, run) != "authors":
            return False
        outputs = wf.model_head(self.config, run.dataset)["outputs"] or CLASSES[run.dataset]
        return bool(erk_dense_layers(resnet_shapes(run.model, self.config["model_width"], outputs), run.density))

    def selections(self, run: wf.Run) -> Span:
        """Masks a search hands to training: its snapshots (1 .. population / snapshot_every, or the cap; exactly
        the most when `saves_every_time`), as many control masks again when the control is on, and with
        `equal_density` up to as many equal-density masks (score-based methods only: ERK and Random selections
        never drift)."""
        search = wf.resolved_search(self.config, run)
        most = search["population"] // search["snapshot_every"]
        if search["train_cap"] is not None:
            most = min(most, search["train_cap"])
        snapshots = exact(max(1, most)) if self.saves_every_time(run) else Span(1, max(1, most))
        masks = snapshots.scale(2 if search.get("control") else 1)
        if wf.writes_equal_density(self.config, run):
            masks = masks + Span(0, snapshots.hi)
        return masks

    def pai_run(self, run: wf.Run) -> Part:
        key = dataclasses.astuple(run)
        start_key, start = self.pretrain(run.dataset, run.model, run.seed, run.iters)
        scoring = self.scoring_epochs(run, self.config["pai"]["scoring_batches"])
        pai = Jobs("pai_mask", exact(1), gpu_minutes=exact(self.minutes(run.model, scoring)),
                   uses=self.epoch_rate(run.model, scoring))
        searching = Jobs("pags_search", exact(1), gpu_minutes=exact(self.search_minutes(run)),
                         uses=self.search_uses(run))
        selected, epochs = self.selections(run), self.train["epochs"]
        if self.members == 1:  # the PaI baseline trains as soon as its mask exists, the selections after the search
            trainings = {key + ("train_pai",): self.training("sparse_train", run.model, epochs),
                         **self.mask_trainings(key + ("train_selected",), run.model, epochs, selected)}
        else:  # the PaI baseline joins its search's chunks (same weights, same seed)
            selected = selected + exact(1)
            trainings = self.mask_trainings(key + ("train_selected",), run.model, epochs, selected)
        jobs = {start_key: start, key + ("pai_mask",): pai, key + ("pags_search",): searching, **trainings,
                key + ("pags_results",): Jobs("pags_results", exact(1))}
        # the trainings (their chunks) run in parallel after the search, which needs the mask, which needs the
        # checkpoint; the PaI baseline's own training (one mask) is never longer than the longest chunk
        last = self.longest_chunk(run.model, epochs, selected)
        return Part(jobs, {key: start.gpu_minutes + pai.gpu_minutes + searching.gpu_minutes + last})

    def baseline_run(self, run: wf.Run) -> Part:
        key = dataclasses.astuple(run)
        start_key, start = self.pretrain(run.dataset, run.model, run.seed, run.iters)
        ticket = self.training("sparse_train", run.model, self.train["epochs"])
        if run.method == "lth":
            lth = self.config["lth"]
            rounds = wf.lth_rounds(run.density, lth["prune_fraction"])
            dense = self.training("lth_dense_round", run.model, lth["round_epochs"])
            later = self.training("lth_round", run.model, lth["round_epochs"], exact(rounds - 1))
            drawing = {key + ("dense",): dense, key + ("rounds",): later,
                       key + ("summary",): Jobs("lth_summary", exact(1))}
            chain = dense.gpu_minutes + later.gpu_minutes  # the rounds run one after another
        else:
            early_bird = self.training("early_bird", run.model, self.config["early_bird"]["epochs"])
            drawing, chain = {key + ("draw",): early_bird}, early_bird.gpu_minutes
        jobs = {start_key: start, key + ("ticket",): ticket, **drawing}
        return Part(jobs, {key: start.gpu_minutes + chain + ticket.gpu_minutes})

    def figure(self, name: str) -> Part:
        spec = self.config["figures"][name]
        dataset, model, seed = spec["dataset"], spec["model"], spec["seed"]
        tickets = wf.itop_snapshot_count(self.config, dataset)
        key = ("itop", dataset, model, seed)
        start_key, start = self.pretrain(dataset, model, seed, 0)
        itop = self.training("itop", model, self.config["itop"]["epochs"])
        jobs = {start_key: start, key: itop,
                **self.mask_trainings(key + ("tickets",), model, self.train["epochs"], exact(tickets)),
                ("figure", name): Jobs("figure", exact(1))}
        return Part(jobs, {key: itop.gpu_minutes + self.longest_chunk(model, self.train["epochs"], exact(tickets))})

    def table(self, name: str) -> Part:
        part = Part({("table", name): Jobs("table", exact(1))})
        for run in wf.table_runs(self.config, name):
            part.add(self.pai_run(run))
        for run in wf.table_baselines(self.config, name):
            part.add(self.baseline_run(run))
        return part


@dataclasses.dataclass
class Summary:
    jobs_per_rule: dict[str, Span]
    trainings: Span               # masks trained (a train_chunk job trains several)
    epochs: Span
    gpu_hours: Span
    wall_hours: Span
    uses: frozenset = frozenset()  # the cost values behind gpu_hours and wall_hours

    @property
    def slurm_jobs(self) -> Span:
        """Jobs submitted to SLURM: those of every rule that is not local."""
        return sum((n for rule, n in self.jobs_per_rule.items() if rule not in LOCAL_RULES), ZERO)


def unmeasured(config: Mapping, uses: frozenset) -> list[tuple[str, str | None]]:
    """The cost values among `uses` that `resources.measured` does not list, sorted (model None: a value for all
    models, measured when `resources.measured.<key>` says where)."""
    measured = config["resources"].get("measured") or {}

    def known(key: str, model: str | None) -> bool:
        return bool(measured.get(key)) if model is None else model in (measured.get(key) or {})
    return sorted(((key, model) for key, model in uses if not known(key, model)), key=lambda u: (u[0], u[1] or ""))


def summarise(part: Part, gpus: int) -> Summary:
    per_rule: dict[str, Span] = {}
    trainings = epochs = minutes = ZERO
    uses: set = set()
    for job in part.jobs.values():
        per_rule[job.rule] = per_rule.get(job.rule, ZERO) + job.count
        minutes = minutes + job.gpu_minutes
        uses |= job.uses
        trainings, epochs = trainings + job.trainings, epochs + job.epochs
    chain = max((c.lo for c in part.chains.values()), default=0), max((c.hi for c in part.chains.values()), default=0)
    wall = Span(max(minutes.lo / gpus, chain[0]), max(minutes.hi / gpus, chain[1]))
    return Summary(per_rule, trainings, epochs, minutes.scale(1 / 60), wall.scale(1 / 60), frozenset(uses))


def plan(config: Mapping, gpus: int) -> dict[str, Summary]:
    """{table or figure name: its Summary, ..., 'total': all of them with shared jobs counted once}."""
    costs, everything, out = Costs(config), Part(), {}
    parts = {name: costs.table(name) for name in config["tables"]}
    parts.update({name: costs.figure(name) for name in config["figures"]})
    for name, part in parts.items():
        out[name] = summarise(part, gpus)
        everything.add(part)
    datasets = {spec["dataset"] for spec in [*config["tables"].values(), *config["figures"].values()]}
    everything.jobs[("prepare_data",)] = Jobs("prepare_data", exact(len(datasets)))
    out["total"] = summarise(everything, gpus)
    return out


def span_text(span: Span, digits: int = 0) -> str:
    def one(value: float) -> str:
        return f"{value:,.{digits}f}"
    return one(span.lo) if one(span.lo) == one(span.hi) else f"{one(span.lo)}..{one(span.hi)}"


def chunks_text(config: Mapping) -> str:
    """How many masks one job trains, and how: the report's line on train.members and train.mode."""
    costs = Costs(config)
    if costs.members == 1:
        return "PaI baselines, search selections and ITOP tickets: one job per mask (train.members 1)."
    how = (f"at once, fused, x{costs.speedup:.2f} speed-up (resources.fused_speedup)" if costs.fused
           else "one after another (train.mode sequential)")
    return (f"A PaI baseline with its search's selections, and ITOP tickets: up to {costs.members} masks per job "
            f"(train.members), trained {how}.")


def wrap_items(items: list[str], width: int) -> list[str]:
    """`items` joined by ", " into lines of at most `width` characters (longer only for an item that is), breaking
    only between items."""
    lines = [""]
    for item in items:
        joined = f"{lines[-1]}, {item}" if lines[-1] else item
        if len(joined) + 1 > width and lines[-1]:  # + 1: the comma the line ends with
            lines[-1] += ","
            lines.append(item)
        else:
            lines[-1] = joined
    return lines


def report(summaries: dict[str, Summary], gpus: int, config: Mapping) -> str:
    rates = ", ".join(f"{m} {v} min" for m, v in config["resources"]["minutes_per_epoch"].items())
    local = sorted(LOCAL_RULES & {rule for s in summaries.values() for rule in s.jobs_per_rule})
    lines = [f"Cost plan on {gpus} GPU(s); one training epoch takes {rates} (resources.minutes_per_epoch).",
             chunks_text(config),
             "Ranges: each search selects 1..max snapshots, known only after it ran (exactly max for an ERK search "
             "that keeps a layer dense, under the authors' snapshot rule).",
             f"trainings and epochs count masks trained; slurm jobs: every job but those of local rules "
             f"({', '.join(local)}).", ""]
    columns = f"{'':8} {'trainings':>13} {'epochs':>18} {'GPU-hours':>16} {'wall-clock h':>16} {'slurm jobs':>12}  "
    lines.append(columns + "jobs per rule")
    for name, s in summaries.items():
        mark = UNMEASURED_MARK if unmeasured(config, s.uses) else ""
        wrapped = wrap_items([f"{rule} {span_text(count)}" for rule, count in sorted(s.jobs_per_rule.items())],
                             REPORT_WIDTH - len(columns))
        lines.append(f"{name:8} {span_text(s.trainings):>13} {span_text(s.epochs):>18} "
                     f"{span_text(s.gpu_hours, 1) + mark:>16} {span_text(s.wall_hours, 1) + mark:>16} "
                     f"{span_text(s.slurm_jobs):>12}  {wrapped[0]}")
        lines.extend(" " * len(columns) + more for more in wrapped[1:])
    return "\n".join(lines + unmeasured_notes(summaries, config))


def unmeasured_notes(summaries: dict[str, Summary], config: Mapping) -> list[str]:
    """What the `*` means: each unmeasured value the costs rest on, its value, and the command that measures it."""
    values = unmeasured(config, frozenset().union(*(s.uses for s in summaries.values())))
    if not values:
        return []
    lines = ["", f"{UNMEASURED_MARK} rests on values nobody measured (not listed under resources.measured):"]
    for key, model in values:
        value = config["resources"].get(key) if model is None else config["resources"].get(key, {}).get(model)
        shown = "not set, counted as 0" if value is None else f"{value}, not measured"
        name = key if model is None else f"{key}.{model}"
        lines.append(f"  resources.{name} = {shown}; measure: {MEASURE[key].format(model=model)}")
    fused = ', fused_speedup: "A100 40GB, fused_train.py"' if ("fused_speedup", None) in values else ""
    lines.append("  Put the measured value in resources and say where it was measured, e.g. resources.measured: "
                 f"{{minutes_per_epoch: {{resnet18: \"A100 40GB, train_step.py\"}}{fused}}}.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", nargs="+", default=[str(WORKFLOW_CONFIG)],
                        help="config files laid over config.yaml, as with snakemake --configfile")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs the grid runs on at once")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be at least 1")
    config = merged_config(args.configfile)
    print(report(plan(config, args.gpus), args.gpus, config))


if __name__ == "__main__":
    main()
