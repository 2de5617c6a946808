# pai_mask: the pruning-at-initialisation mask (SNIP, GraSP, SynFlow, ERK, Random, Magnitude) of one grid cell,
# scored on the pretraining checkpoint it names, with scoring data drawn with the seed.

rule pai_mask:
    input:
        weights=run_weights,
        data=data_file,
    output:
        mask=f"{RUN_DIR}/pai/mask.pt",
        layers=f"{RUN_DIR}/pai/layers.csv",
    params:
        pai=lambda wildcards: as_json(wf.pai_settings(config, wildcards.method)),
        device=DEVICE,
        code=code("pai_mask"),
    threads: THREADS
    resources:
        gpu=GPU,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=60,
    log:
        log_path("pai_mask", "{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}"),
    benchmark:
        benchmark_path("pai_mask", "{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}")
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.pai_mask --weights {input.weights} --data {input.data} "
        "--method {wildcards.method} --density {wildcards.density} --seed {wildcards.seed} "
        "--pai '{params.pai}' --device {params.device} --threads {threads} --out {output.mask} --layers {output.layers} > {log} 2>&1"
