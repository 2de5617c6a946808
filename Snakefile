# Workflow for "Don't Just Prune by Magnitude! Your Mask Topology is Another Secret Weapon" (NeurIPS 2023).
#   snakemake --cores 8 --use-conda                  the paper grid (config.yaml)
#   snakemake --configfile config/embedded.yaml ...   the embedded CPU default (make demo)
#   snakemake table2 | fig1 | tables | figures         one artefact and only what it needs


configfile: "config.yaml"


include: "rules/common.smk"


wildcard_constraints:
    dataset=r"digits|cifar10|cifar100",
    model=r"resnet18|resnet34",
    seed=r"\d+",
    iters=r"\d+",
    density=r"[0-9.e-]+",


include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/masks.smk"
include: "rules/train.smk"
include: "rules/search.smk"
include: "rules/baselines.smk"
include: "rules/itop.smk"
include: "rules/report.smk"


if "study" in config:

    include: "rules/study.smk"


localrules:
    all,
    prepare_data,
    prepare_split,
    pags_results,
    lth_summary,
    table,
    figure,


TABLE_NAMES = list(config["tables"])
FIGURE_NAMES = list(config["figures"])


rule all:
    input:
        mask_results(f"{run.dir(RESULTS)}/pai" for run in RUNS),
        [f"{run.dir(RESULTS)}/pags/results.json" for run in RUNS],
        [path for run in BASELINES for path in baseline_outputs(run)],
        [path for name in TABLE_NAMES for path in table_files(name)],
        [path for name in FIGURE_NAMES for path in figure_files(name)],
        LANDING,


rule tables:
    input:
        [path for name in TABLE_NAMES for path in table_files(name)],


rule figures:
    input:
        [path for name in FIGURE_NAMES for path in figure_files(name)],


# Named targets: table1..3 and fig1..2, one per table and figure the config defines.
for _name in TABLE_NAMES + FIGURE_NAMES:

    rule:
        name:
            _name
        input:
            table_files(_name) if _name.startswith("table") else figure_files(_name),


rule slurm_slice:
    input:
        mask_results(f"{run.dir(RESULTS)}/pai" for run in RUNS),
        [f"{run.dir(RESULTS)}/pags/results.json" for run in RUNS],
