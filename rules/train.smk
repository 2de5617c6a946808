# sparse_train: train any mask the workflow makes (PaI baseline, PAGS/PEGS selection, LTH/EB/ITOP ticket) from
# the weights it was made from. One rule for all, so every number in the tables comes from the same loop.


rule sparse_train:
    input:
        mask="{maskdir}/mask.pt",
        weights=mask_start_weights,
        data=mask_data,
    output:
        "{maskdir}/metrics.json",
    params:
        train=as_json(TRAIN),
        device=DEVICE,
    resources:
        gpu=GPU,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=mask_train_minutes,
    log:
        "{maskdir}/train.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "python workflow_scripts/sparse_train.py --mask {input.mask} --weights {input.weights} "
        "--data {input.data} --train '{params.train}' --device {params.device} --out {output} > {log} 2>&1"
