# Workflow for "Don't Just Prune by Magnitude! Your Mask Topology is Another Secret Weapon" (NeurIPS 2023).
#   snakemake --cores 8 --use-conda                  the paper grid (config.yaml)
#   snakemake --configfile config/embedded.yaml ...   the embedded CPU default (make demo)
#   snakemake table2 | fig1 | tables | figures         one artefact and only what it needs


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/masks.smk"
include: "rules/graph.smk"
include: "rules/train.smk"
include: "rules/search.smk"


localrules:
    all,
    prepare_data,
    selected_mask,
    pags_results,


rule all:
    input:
        mask_results(f"{run.dir(RESULTS)}/pai" for run in RUNS),
        [f"{run.dir(RESULTS)}/pags/results.json" for run in RUNS],
