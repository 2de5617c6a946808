# sparse_train: train any mask the workflow makes (PaI baseline, PAGS/PEGS selection, LTH/EB/ITOP ticket) from
# the weights it was made from (a search's masks are read in place from the search's output). One rule for all, so every number in the tables comes from the same loop. The same
# job first writes the mask's per-layer graph metrics (Ramanujan gap, weighted spectral gap, their iterative means,
# l2) on those weights: seconds of CPU, not a cluster job of their own.


rule sparse_train:
    input:
        mask=mask_input,
        weights=mask_start_weights,
        data=mask_data,
    output:
        metrics="{maskdir}/metrics.json",
        graph="{maskdir}/graph.csv",
    params:
        mask=mask_file,
        train=as_json(TRAIN),
        device=DEVICE,
        code=code("sparse_train"),
    threads: THREADS
    resources:
        gpu=GPU,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=mask_train_minutes,
    log:
        "{maskdir}/train.log",
    benchmark:
        "{maskdir}/train.benchmark.tsv"
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.sparse_train --mask {params.mask} --weights {input.weights} "
        "--data {input.data} --train '{params.train}' --device {params.device} --threads {threads} "
        "--out {output.metrics} --graph {output.graph} > {log} 2>&1"
