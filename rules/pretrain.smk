# pretrain: iter0 is the seed's initialisation itself (`model_init`; PAGS), iterN dense SGD for PEGS from
# PyTorch's initialisation under the seed (`pretrain.init: pytorch`, the authors' lth_tickets_pretraining.py) or from
# `model_init`. The classifier is the dataset's `model_head`.


rule pretrain:
    input:
        data=data_file,
    output:
        f"{RESULTS}/{{dataset}}/{{model}}/s{{seed}}/pretrain/iter{{iters}}.pt",
    params:
        # iter0 is the seed's initialisation, built on the CPU without training: SGD settings and the device do not
        # change it, so editing them re-runs only the pretrained checkpoints (@N > 0) and what depends on them.
        pretrain=lambda wildcards: as_json(config["pretrain"]) if int(wildcards.iters) > 0 else "{}",
        width=config["model_width"],
        model=lambda wildcards: wf.pretrain_flags(config, wildcards.dataset, wildcards.iters),
        device=lambda wildcards: DEVICE if int(wildcards.iters) > 0 else "cpu",
        code=code("pretrain"),
    threads: THREADS
    resources:
        gpu=lambda wildcards: GPU if int(wildcards.iters) > 0 else 0,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=30,
    log:
        log_path("pretrain", "{dataset}/{model}/s{seed}/iter{iters}"),
    conda:
        "../envs/torch.yaml"
    cache: True
    shell:
        "python -m workflow_scripts.pretrain --data {input.data} --dataset {wildcards.dataset} "
        "--model {wildcards.model} --width {params.width} {params.model} --seed {wildcards.seed} "
        "--iters {wildcards.iters} --pretrain '{params.pretrain}' --device {params.device} --threads {threads} "
        "--out {output} > {log} 2>&1"
