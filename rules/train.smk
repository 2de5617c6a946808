# sparse_train: train any mask the workflow makes (PaI baseline, PAGS/PEGS selection, LTH/EB/ITOP ticket) from
# the weights it was made from (a search's masks are read in place from the search's output). One loop for all,
# so every number in the tables comes from the same code. The same job first writes the mask's per-layer graph
# metrics (Ramanujan gap, weighted spectral gap, their iterative means, l2) on those weights: seconds of CPU, not
# a cluster job of their own.
#
# With train.members > 1 the masks of one search (its selections, controls, equal-density masks) and the tickets
# of one ITOP run are trained by train_chunk instead, up to train.members masks per job (train.mode: one after
# another, or fused on the device), into {group}/train/chunk{k}/; chunk_member then copies each member's
# metrics.json and graph.csv into its own mask directory, so everything downstream reads the same files.


rule sparse_train:
    input:
        mask=mask_input,
        weights=mask_start_weights,
        data=lambda wildcards: mask_data(wildcards.maskdir),
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


if CHUNKED:

    ruleorder: chunk_member > sparse_train

    localrules:
        chunk_member,

    rule train_chunk:
        input:
            unpack(chunk_inputs),
        output:
            directory("{group}/train/chunk{k}"),
        wildcard_constraints:
            group=wf.CHUNK_GROUP,
            k=r"\d+",
        params:
            members=chunk_members_json,
            seed=chunk_seed,
            train=as_json(TRAIN),
            device=DEVICE,
            code=code("train_chunk"),
        threads: THREADS
        resources:
            gpu=GPU,
            cpus_per_gpu=CPUS,
            mem_mb=MEM_MB,
            runtime=chunk_minutes,
        log:
            "{group}/train/chunk{k}.log",
        benchmark:
            "{group}/train/chunk{k}.benchmark.tsv"
        conda:
            "../envs/torch.yaml"
        shell:
            "python -m workflow_scripts.train_chunk --members '{params.members}' --data {input.data} "
            "--train '{params.train}' --seed {params.seed} --device {params.device} --threads {threads} "
            "--out {output} > {log} 2>&1"

    rule chunk_member:
        input:
            member_chunk,
        output:
            metrics="{maskdir}/metrics.json",
            graph="{maskdir}/graph.csv",
        wildcard_constraints:
            maskdir=wf.CHUNK_MEMBER,
        params:
            code=code("chunk_member"),
        threads: 1
        log:
            "{maskdir}/train.log",
        conda:
            "../envs/analysis.yaml"
        shell:
            "python -m workflow_scripts.chunk_member --chunk {input} --name $(basename {wildcards.maskdir}) "
            "--metrics {output.metrics} --graph {output.graph} > {log} 2>&1"
