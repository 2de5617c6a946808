# Baselines of the tables: LTH (iterative magnitude pruning with rewinding) and Early-Bird (unstructured).
# Each ends in a ticket mask directory, `{run}/ticket/mask.pt`, that the generic rules train (sparse_train ->
# ticket/metrics.json and ticket/graph.csv). The ticket trains from workflow.start_weights: the rewind point
# round1/rewind.pt for LTH, ticket/weights.pt (the draw) for EB.
# What a table reads of a baseline run: wf.baseline_files(RESULTS, run).
#
#   lth_dense_round {run}/round1/mask.pt + round.json + graph.csv + rewind.pt (dense from the init; the rewind point
#                   is its weights after lth.rewind_epoch epochs)
#   lth_round   {run}/round{k}/mask.pt + round.json + graph.csv   (k = 2..K: from rewind.pt with round k-1's mask)
#   lth_summary {run}/rounds.csv, {run}/ticket/mask.pt, {run}/cost.json   (cheap: a local rule)
#   early_bird  {run}/ticket/mask.pt, ticket/weights.pt, {run}/eb.json, {run}/cost.json

LTH_DIR = f"{RESULTS}/{{dataset}}/{{model}}/d{{density}}/lth/pre{{iters}}/s{{seed}}"
EB_DIR = f"{RESULTS}/{{dataset}}/{{model}}/d{{density}}/eb/pre{{iters}}/s{{seed}}"
LTH = config["lth"]
EARLY_BIRD = config["early_bird"]


LTH_SHELL = (
    "python -m workflow_scripts.lth_round --weights {input.weights} {params.prev} --data {input.data} "
    "--round {params.round} --density {wildcards.density} --seed {wildcards.seed} --lth '{params.lth}' "
    "--train '{params.train}' --device {params.device} --threads {threads} --out-mask {output.mask} "
    "--out-json {output.record} --out-graph {output.graph} {params.rewind} > {log} 2>&1"
)

# An LTH round's graph.csv comes with its mask (rounds are not trained by sparse_train).
ruleorder: lth_dense_round > sparse_train
ruleorder: lth_round > sparse_train


rule lth_dense_round:
    input:
        weights=run_weights,  # the seed's initialisation (LTH runs are pre0)
        data=data_file,
    output:
        mask=f"{LTH_DIR}/round1/mask.pt",
        record=f"{LTH_DIR}/round1/round.json",
        graph=f"{LTH_DIR}/round1/graph.csv",
        rewind=f"{LTH_DIR}/round1/rewind.pt",  # the weights after lth.rewind_epoch epochs: later rounds start here
    params:
        lth=as_json(LTH),
        train=as_json({**TRAIN, "epochs": LTH["round_epochs"]}),
        round=1,
        prev="",
        rewind=lambda w, output: f"--out-rewind {output.rewind}",
        device=DEVICE,
        code=code("lth_round"),
    threads: THREADS
    resources:
        gpu=GPU,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=lambda w: train_minutes(w.model, LTH["round_epochs"]),
    log:
        log_path("lth_round", "{dataset}/{model}/d{density}/pre{iters}/s{seed}/round1"),
    benchmark:
        benchmark_path("lth_round", "{dataset}/{model}/d{density}/pre{iters}/s{seed}/round1")
    conda:
        "../envs/torch.yaml"
    shell:
        LTH_SHELL


rule lth_round:
    input:
        weights=lambda w: wf.lth_rewind_path(wf.lth_run_dir(RESULTS, w)),
        prev=lambda w: wf.lth_previous_mask(RESULTS, w),
        data=data_file,
    output:
        mask=f"{LTH_DIR}/round{{k}}/mask.pt",
        record=f"{LTH_DIR}/round{{k}}/round.json",
        graph=f"{LTH_DIR}/round{{k}}/graph.csv",
    wildcard_constraints:
        k=r"[2-9]|[1-9]\d+",
    params:
        lth=as_json(LTH),
        train=as_json({**TRAIN, "epochs": LTH["round_epochs"]}),
        round=lambda w: w.k,
        prev=lambda w, input: f"--prev-mask {input.prev}",
        rewind="",
        device=DEVICE,
        code=code("lth_round"),
    threads: THREADS
    resources:
        gpu=GPU,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=lambda w: train_minutes(w.model, LTH["round_epochs"]),
    log:
        log_path("lth_round", "{dataset}/{model}/d{density}/pre{iters}/s{seed}/round{k}"),
    benchmark:
        benchmark_path("lth_round", "{dataset}/{model}/d{density}/pre{iters}/s{seed}/round{k}")
    conda:
        "../envs/torch.yaml"
    shell:
        LTH_SHELL


rule lth_summary:
    input:
        rounds=lambda w: wf.lth_round_files(RESULTS, w, LTH["prune_fraction"], "round.json"),
        last=lambda w: wf.lth_round_files(RESULTS, w, LTH["prune_fraction"], "mask.pt")[-1],
    output:
        csv=f"{LTH_DIR}/rounds.csv",
        ticket=f"{LTH_DIR}/ticket/mask.pt",
        cost=f"{LTH_DIR}/cost.json",
    params:
        code=code("lth_summary"),
    threads: 1
    log:
        log_path("lth_summary", "{dataset}/{model}/d{density}/pre{iters}/s{seed}"),
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.lth_summary --rounds {input.rounds} --last-mask {input.last} "
        "--out-csv {output.csv} --out-ticket {output.ticket} --out-cost {output.cost} > {log} 2>&1"


rule early_bird:
    input:
        weights=run_weights,  # where dense training starts: pretraining checkpoint pre{iters} (0 = the init)
        data=data_file,
    output:
        mask=f"{EB_DIR}/ticket/mask.pt",
        weights=f"{EB_DIR}/ticket/weights.pt",
        record=f"{EB_DIR}/eb.json",
        cost=f"{EB_DIR}/cost.json",
    params:
        early_bird=as_json(EARLY_BIRD),
        train=as_json({**TRAIN, "epochs": EARLY_BIRD["epochs"]}),
        device=DEVICE,
        code=code("early_bird"),
    threads: THREADS
    resources:
        gpu=GPU,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=lambda w: train_minutes(w.model, EARLY_BIRD["epochs"]),
    log:
        log_path("early_bird", "{dataset}/{model}/d{density}/pre{iters}/s{seed}"),
    benchmark:
        benchmark_path("early_bird", "{dataset}/{model}/d{density}/pre{iters}/s{seed}")
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.early_bird --weights {input.weights} --data {input.data} "
        "--density {wildcards.density} --seed {wildcards.seed} --early-bird '{params.early_bird}' "
        "--train '{params.train}' --device {params.device} --threads {threads} --out-mask {output.mask} "
        "--out-weights {output.weights} --out-json {output.record} --out-cost {output.cost} > {log} 2>&1"
