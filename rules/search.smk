# pags_search: the full-spectrum mask search (PAGS @0, PEGS @N) from a grid cell's PaI baseline mask. How many
# distinct snapshots it selects is known only after it ran, so it is a checkpoint. Each selection (select{k}),
# with `search.control` each no-criterion control mask (control{k}), and with `search.equal_density` each
# selection put at the baseline's weight count (equal{k}, where its count differs) then gets a mask directory
# pags/{name}/, which sparse_train trains and measures like any other, reading the mask in place from the
# search's output pags/search/{name}.pt.


checkpoint pags_search:
    input:
        weights=run_weights,
        baseline=f"{RUN_DIR}/pai/mask.pt",
        data=data_file,
    output:
        directory(f"{RUN_DIR}/pags/search"),
    priority: 10  # resolve the checkpoints early, so the selections' trainings spread over the whole run
    params:
        search=lambda wildcards: as_json(wf.search_settings(config, run_of(wildcards))),
        extras=lambda wildcards: wf.search_flags(config, run_of(wildcards)),
        device=DEVICE,
        code=code("pags_search"),
    threads: THREADS
    resources:
        gpu=GPU,
        cpus_per_gpu=CPUS,
        mem_mb=MEM_MB,
        runtime=lambda wildcards: search_minutes(run_of(wildcards)),
    log:
        log_path("pags_search", "{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}"),
    benchmark:
        benchmark_path("pags_search", "{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}")
    conda:
        "../envs/torch.yaml"
    shell:
        "python -m workflow_scripts.pags_search --weights {input.weights} --baseline {input.baseline} "
        "--data {input.data} --search '{params.search}' {params.extras} "
        "--device {params.device} --threads {threads} --out {output} > {log} 2>&1"


rule pags_results:
    input:
        selected_results,
    output:
        f"{RUN_DIR}/pags/results.json",
    params:
        equal=lambda wildcards: "--equal-density" if wf.resolved_search(config, run_of(wildcards)).get(
            "equal_density") else "",  # ERK/Random too: their selections stand for themselves
        code=code("collect_results"),
    threads: 1
    log:
        log_path("pags_results", "{dataset}/{model}/d{density}/{method}/pre{iters}/s{seed}"),
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m workflow_scripts.collect_results --out {output} {params.equal} {input} > {log} 2>&1"
