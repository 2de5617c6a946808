# ITOP snapshot tickets and Figures 1-2.
#
#   itop    {itop_dir}/snap{k}/mask.pt + snap{k}/weights.pt (k = 0..K-1) + {itop_dir}/itop.json
#           dynamic sparse training from an ERK mask on the seed's initialisation (pretraining checkpoint @0);
#           itop_dir = {results}/{dataset}/{model}/d{itop.density}/itop/pre0/s{seed}
#   (generic) sparse_train trains every snapshot ticket from its own weights.pt -> snap{k}/metrics.json and
#             measures it on those weights -> snap{k}/graph.csv
#   figure  {results}/figures/{fig}_{dataset}_{model}.png/.pdf/.csv + _correlations.csv/.json
#
# Snakemake needs every output before anything runs, so K comes from the config alone
# (workflow.itop_snapshot_count: fixed training-set sizes, train.batch_size, itop.epochs, update_frequency,
# snapshot_every). K depends on the dataset (digits and CIFAR have different sizes), so there is one `itop` rule
# per distinct K among the figures' datasets: named `itop` when, as usual, there is one; otherwise
# `itop_<datasets>`.

for _count, _datasets in _ITOP_GROUPS.items():

    rule:
        name:
            "itop" if len(_ITOP_GROUPS) == 1 else "itop_" + "_".join(_datasets)
        input:
            weights=itop_init_weights,
            data=data_file,
        output:
            masks=[f"{ITOP_DIR}/snap{k}/mask.pt" for k in range(_count)],
            weights=[f"{ITOP_DIR}/snap{k}/weights.pt" for k in range(_count)],
            summary=f"{ITOP_DIR}/itop.json",
        wildcard_constraints:
            dataset="|".join(_datasets),
        params:
            itop=as_json(ITOP),
            train=as_json({**TRAIN, "epochs": ITOP["epochs"]}),
            snapshots=_count,
            out_dir=lambda wildcards: ITOP_DIR.format(
                dataset=wildcards.dataset, model=wildcards.model, seed=wildcards.seed
            ),
            device=DEVICE,
            code=code("itop"),
        threads: THREADS
        resources:
            gpu=GPU,
            cpus_per_gpu=CPUS,
            mem_mb=MEM_MB,
            runtime=lambda wildcards: train_minutes(wildcards.model, ITOP["epochs"]),
        log:
            log_path("itop", "{dataset}/{model}/s{seed}"),
        benchmark:
            benchmark_path("itop", "{dataset}/{model}/s{seed}")
        conda:
            "../envs/torch.yaml"
        shell:
            "python -m workflow_scripts.itop --weights {input.weights} --data {input.data} --itop '{params.itop}' "
            "--train '{params.train}' --seed {wildcards.seed} --snapshots {params.snapshots} "
            "--device {params.device} --threads {threads} --out-dir {params.out_dir} > {log} 2>&1"


rule figure:
    input:
        metrics=figure_metrics,
        graphs=figure_graphs,
    output:
        png=report(f"{RESULTS}/figures/{{fig}}_{{dataset}}_{{model}}.png", category="Figures",
                   caption="../report/figure.rst", labels={"figure": "{fig}: {dataset}, {model}"}),
        pdf=f"{RESULTS}/figures/{{fig}}_{{dataset}}_{{model}}.pdf",
        data=f"{RESULTS}/figures/{{fig}}_{{dataset}}_{{model}}.csv",
        corr_csv=f"{RESULTS}/figures/{{fig}}_{{dataset}}_{{model}}_correlations.csv",
        corr_json=f"{RESULTS}/figures/{{fig}}_{{dataset}}_{{model}}_correlations.json",
    wildcard_constraints:
        fig=r"fig\d+",
    params:
        title=figure_title,
        code=code("figure"),
    threads: 1
    log:
        log_path("figure", "{fig}_{dataset}_{model}"),
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m workflow_scripts.figure --metrics {input.metrics} --graphs {input.graphs} "
        "--title '{params.title}' --png {output.png} --pdf {output.pdf} --data {output.data} "
        "--corr-csv {output.corr_csv} --corr-json {output.corr_json} > {log} 2>&1"
