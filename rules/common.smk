# Shared helpers: config validation, the grid, and path functions. Logic lives in fullspectrum.workflow.
import json
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")

# This checkout: the folder above rules/. Not workflow.basedir, which is the using workflow's folder when this one
# is used as a module of another workflow.
CHECKOUT = os.path.dirname(str(workflow.current_basedir))
sys.path.insert(0, CHECKOUT)

from fullspectrum import workflow as wf  # noqa: E402
from fullspectrum.plan import Costs  # noqa: E402
from fullspectrum.code_version import code_hash  # noqa: E402
from fullspectrum.stale_lock import clear_stale_lock  # noqa: E402

# The rules run `python -m workflow_scripts.<step>` and the steps import the package, both from this checkout
# (locally, in conda envs, on cluster nodes, from any working directory).
wf.export_package_path(CHECKOUT)

try:
    validate(config, "../schemas/config.schema.yaml")
    wf.check_config(config)
except Exception as error:  # the schema's or ours: one clear line naming the key, before any job runs
    raise WorkflowError(f"invalid config: {error}") from None

# A killed run's lock is removed here, before Snakemake locks, when no Snakemake process works in this folder.
if workflow.is_main_process:
    _lock_note = clear_stale_lock(os.getcwd())
    if _lock_note:
        print(_lock_note, file=sys.stderr)

RESULTS = config["results"]
RUNS = wf.grid_runs(config)
BASELINES = wf.baseline_runs(config)
TRAIN = config["train"]
COSTS = Costs(config)


def log_path(rule_name, *parts):
    return os.path.join(RESULTS, "logs", rule_name, *parts) + ".log"


def data_file(wildcards):
    return wf.run_data_path(config, wildcards.dataset, wildcards.seed)


def as_json(value):
    """A params value passed to a script on the command line, inside single quotes: an apostrophe in the config
    (a caption note, say) travels as the JSON escape \\u0027 so it cannot end the shell quote."""
    return json.dumps(value, sort_keys=True).replace("'", "\\u0027")


def code(script):
    """A params entry: the hash of a step's script and the package code it imports, so editing that code re-runs
    the step and what depends on it (README: Reruns after code changes)."""
    return code_hash(os.path.join(CHECKOUT, "workflow_scripts", f"{script}.py"), CHECKOUT)


def benchmark_path(rule_name, *parts):
    """Snakemake's benchmark record (wall time, memory, CPU) of a GPU job."""
    return os.path.join(RESULTS, "benchmarks", rule_name, *parts) + ".tsv"


def train_minutes(model, epochs):
    return int(config["resources"]["minutes_per_epoch"].get(model, 1.0) * epochs) + 10


def search_minutes(run):
    """A search's time limit: twice the cost plan's estimate (scoring + graph metrics per candidate), + 10 minutes."""
    return int(2 * COSTS.search_minutes(run)) + 10


GPU = config["resources"]["gpu"]
CPUS = config["resources"]["cpus_per_gpu"]
MEM_MB = config["resources"]["mem_mb"]
DEVICE = config["device"]
THREADS = CPUS  # CPU threads of a GPU job (torch.set_num_threads); SLURM allocates them with --cpus-per-gpu

def mask_results(mask_dirs):
    """What every mask directory gets: its trained metrics and its graph metrics."""
    return [f"{d}/{name}" for d in mask_dirs for name in ("metrics.json", "graph.csv")]


# A grid cell's directory, as a wildcard pattern.
RUN_DIR = f"{RESULTS}/{{dataset}}/{{model}}/d{{density}}/{{method}}/pre{{iters}}/s{{seed}}"


def run_of(wildcards):
    """The grid cell a rule's wildcards name."""
    return wf.Run(wildcards.dataset, wildcards.model, float(wildcards.density), wildcards.method,
                  int(wildcards.iters), int(wildcards.seed))


def run_weights(wildcards):
    return wf.pretrain_path(RESULTS, wildcards.dataset, wildcards.model, wildcards.seed, wildcards.iters)


# Any mask directory: its mask, and where its weights, data and runtime come from.
def member_mask(mask_dir):
    """The mask a mask directory trains: its own mask.pt, or a search's mask read in place from the search's
    output (wf.search_mask_file)."""
    return wf.search_mask_file(mask_dir) or f"{mask_dir}/mask.pt"


def member_mask_input(mask_dir):
    """What a mask directory's training waits for: its mask.pt, or the whole output directory of the search
    (the checkpoint) that holds its mask."""
    in_search = wf.search_mask_file(mask_dir)
    return os.path.dirname(in_search) if in_search else f"{mask_dir}/mask.pt"


def mask_file(wildcards):
    return member_mask(wildcards.maskdir)


def mask_input(wildcards):
    return member_mask_input(wildcards.maskdir)


def mask_start_weights(wildcards):
    return wf.start_weights(wildcards.maskdir)


def mask_data(mask_dir):
    parts = wf.parse_mask_dir(mask_dir)
    return wf.run_data_path(config, parts["dataset"], parts["seed"])


def mask_train_minutes(wildcards):
    return train_minutes(wf.parse_mask_dir(wildcards.maskdir)["model"], TRAIN["epochs"])


# PAGS/PEGS selections: known once the search checkpoint ran.
def selected_mask_dirs(run):
    """The mask directories of a run's PAGS/PEGS selection, its control and its equal-density selections
    (evaluates the search checkpoint)."""
    search_dir = checkpoints.pags_search.get(
        dataset=run.dataset, model=run.model, density=wf.density_str(run.density), method=run.method,
        iters=run.iters, seed=run.seed).output[0]
    summary = json.loads(open(f"{search_dir}/summary.json").read())
    if wf.writes_equal_density(config, run) and not summary.get("equal_density"):
        raise WorkflowError(f"{search_dir} was written without search.equal_density; delete it so the search "
                            "reruns and writes the equal-density selections")
    names = summary["selected_files"] + summary.get("control_files", []) + summary.get("equal_files", [])
    return [f"{run.dir(RESULTS)}/pags/{name.removesuffix('.pt')}" for name in names]


def selected_results(wildcards):
    return mask_results(selected_mask_dirs(run_of(wildcards)))


# Many masks per job (train.members > 1): a group's members (a search's selections, an ITOP run's tickets) are
# trained in chunks by train_chunk; chunk_member copies each member's files into its own mask directory.
CHUNKED = wf.chunked(config)
MEMBERS = TRAIN["members"]


def group_member_dirs(group):
    """A group's mask directories in training order (a search's: its run's PaI baseline, then what the search hands
    to training, which evaluates the search checkpoint)."""
    parts = wf.parse_group(group)
    if parts["kind"] == "search":
        run = wf.Run(parts["dataset"], parts["model"], float(parts["density"]), parts["method"], parts["iters"],
                     parts["seed"])
        return [f"{run.dir(RESULTS)}/pai"] + selected_mask_dirs(run)
    return wf.itop_snapshot_dirs(config, parts["dataset"], parts["model"], parts["seed"])


def chunk_member_dirs(wildcards):
    return wf.chunk_members(group_member_dirs(wildcards.group), int(wildcards.k), MEMBERS)


def chunk_inputs(wildcards):
    dirs = chunk_member_dirs(wildcards)
    return {"masks": wf.unique(member_mask_input(d) for d in dirs),
            "weights": wf.unique(wf.start_weights(d) for d in dirs),
            "data": mask_data(dirs[0])}


def chunk_members_json(wildcards):
    """The chunk's members for the script: name, mask file, starting weights."""
    return as_json([{"name": os.path.basename(d), "mask": member_mask(d), "weights": wf.start_weights(d)}
                    for d in chunk_member_dirs(wildcards)])


def chunk_minutes(wildcards):
    """A chunk's time limit: its members' training (COSTS.chunk_minutes), + 10 minutes."""
    model = wf.parse_group(wildcards.group)["model"]
    return int(COSTS.chunk_minutes(model, TRAIN["epochs"], len(chunk_member_dirs(wildcards)))) + 10


def chunk_seed(wildcards):
    return wf.parse_group(wildcards.group)["seed"]


def member_chunk(wildcards):
    """The chunk folder that trains a member's mask."""
    return wf.chunk_of(group_member_dirs(wf.group_of(wildcards.maskdir)), wildcards.maskdir, MEMBERS)


# Tables and baselines.
def table_inputs(wildcards):
    return wf.table_inputs(config, wildcards.table)


def table_files(name):
    return [f"{RESULTS}/tables/{name}.{ext}" for ext in ("csv", "md", "tex")]


def baseline_outputs(run):
    """What a table needs of an EB or LTH run, plus the graph metrics of every LTH round's mask."""
    files = list(wf.baseline_files(RESULTS, run).values())
    if run.method == "lth":
        rounds = wf.lth_rounds(run.density, config["lth"]["prune_fraction"])
        files += [f"{run.dir(RESULTS)}/round{k}/graph.csv" for k in range(1, rounds + 1)]
    return files


# ITOP snapshot tickets and Figures 1-2.
ITOP = config["itop"]


FIGURES = config["figures"]


ITOP_DIR = f"{RESULTS}/{{dataset}}/{{model}}/d{wf.density_str(ITOP['density'])}/itop/pre0/s{{seed}}"


def itop_init_weights(wildcards):
    """The seed's initialisation: ITOP starts from the pretraining checkpoint @0."""
    return wf.pretrain_path(RESULTS, wildcards.dataset, wildcards.model, wildcards.seed, 0)


def _itop_groups():
    """{snapshot count: [datasets]} over the datasets the figures use."""
    groups = {}
    for dataset in wf.unique(figure["dataset"] for figure in FIGURES.values()):
        groups.setdefault(wf.itop_snapshot_count(config, dataset), []).append(dataset)
    return groups


_ITOP_GROUPS = _itop_groups()


def _figure(name):
    if name not in FIGURES:
        raise WorkflowError(f"no figure {name!r} in the config's `figures` (has: {', '.join(FIGURES) or 'none'})")
    return FIGURES[name]


def figure_ticket_dirs(name):
    """The snapshot tickets' mask directories behind figure `name`."""
    spec = _figure(name)
    return wf.itop_snapshot_dirs(config, spec["dataset"], spec["model"], spec["seed"])


def figure_files(name):
    """What figure `name` (fig1, fig2) is made of: PNG, PDF, the plotted data, correlations (CSV and JSON)."""
    spec = _figure(name)
    stem = f"{RESULTS}/figures/{name}_{spec['dataset']}_{spec['model']}"
    return [f"{stem}.png", f"{stem}.pdf", f"{stem}.csv", f"{stem}_correlations.csv", f"{stem}_correlations.json"]


def _checked_ticket_dirs(wildcards):
    spec = _figure(wildcards.fig)
    if (spec["dataset"], spec["model"]) != (wildcards.dataset, wildcards.model):
        raise WorkflowError(f"figure {wildcards.fig} is configured for {spec['dataset']}/{spec['model']}, not "
                            f"{wildcards.dataset}/{wildcards.model}; ask for {figure_files(wildcards.fig)[0]}")
    return figure_ticket_dirs(wildcards.fig)


def figure_metrics(wildcards):
    return [f"{d}/metrics.json" for d in _checked_ticket_dirs(wildcards)]


def figure_graphs(wildcards):
    return [f"{d}/graph.csv" for d in _checked_ticket_dirs(wildcards)]


def figure_title(wildcards):
    spec = _figure(wildcards.fig)
    return (f"{wildcards.fig}: ITOP snapshot tickets, {spec['model']} on {spec['dataset']} "
            f"(density {ITOP['density']}, seed {spec['seed']})")
