# The study (config/study.yaml, `make study`): the pre-registered verdict over the grid's seeds, from every run's
# PaI baseline and search results, and the ITOP tickets of the figure `study.figure` (README, "The study").

STUDY_RUNS = wf.grid_runs(config)  # one setting per method and seed (wf.check_study)


localrules:
    study,
    study_verdict,


rule study_verdict:
    input:
        baselines=[f"{run.dir(RESULTS)}/pai/metrics.json" for run in STUDY_RUNS],
        searches=[f"{run.dir(RESULTS)}/pags/results.json" for run in STUDY_RUNS],
        tickets=figure_files(config["study"]["figure"])[2],
    output:
        markdown=report(f"{RESULTS}/study.md", category="Study", caption="../report/study.rst",
                        labels={"artefact": "verdict table"}),
        csv=f"{RESULTS}/study.csv",
        seeds=f"{RESULTS}/study_seeds.csv",
        json=f"{RESULTS}/study.json",
        png=report(f"{RESULTS}/study_differences.png", category="Study", caption="../report/study.rst",
                   labels={"artefact": "paired differences"}),
    params:
        settings=as_json(config["study"]),
        code=code("study"),
    threads: 1
    log:
        log_path("study_verdict", "study"),
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m workflow_scripts.study --baselines {input.baselines} --searches {input.searches} "
        "--tickets {input.tickets} --settings '{params.settings}' --markdown {output.markdown} "
        "--csv {output.csv} --seeds-csv {output.seeds} --json {output.json} --png {output.png} > {log} 2>&1"


rule study:
    input:
        rules.study_verdict.output,
        table_files("table1"),
        figure_files(config["study"]["figure"]),
        LANDING,  # the report opens on the landing page with the study's verdict (rules/report.smk)
