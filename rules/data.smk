# prepare_data: download (or find) a dataset and materialise it once as compact uint8 tensors.
# prepare_split: with `data.split: per_seed` (digits), each seed's own stratified train/test split.


rule prepare_data:
    output:
        f"{RESULTS}/data/{{dataset}}.pt",
    params:
        root=config["data"]["root"],
        download="--download" if config["data"]["download"] else "",
        verify="" if config["data"]["verify_checksums"] else "--no-verify",
        code=code("prepare_data"),
    threads: 1
    log:
        log_path("prepare_data", "{dataset}"),
    conda:
        "../envs/torch.yaml"
    cache: True
    shell:
        "python -m workflow_scripts.prepare_data --dataset {wildcards.dataset} --root {params.root} "
        "{params.download} {params.verify} --out {output} > {log} 2>&1"


rule prepare_split:
    output:
        f"{RESULTS}/data/{{dataset}}/split{{seed}}.pt",
    wildcard_constraints:
        dataset="digits",
    params:
        code=code("prepare_data"),
    threads: 1
    log:
        log_path("prepare_split", "{dataset}/split{seed}"),
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.prepare_data --dataset {wildcards.dataset} --split-seed {wildcards.seed} "
        "--out {output} > {log} 2>&1"
