# Tables 1-3 from the trained masks' results, and the artefacts Snakemake's report shows.


rule table:
    input:
        table_inputs,
    output:
        # the report shows the rendered tables (one label: no label pair can be missing) and offers the long CSV
        html=report(f"{RESULTS}/tables/{{table}}.html", category="Tables", caption="../report/table.rst",
                    labels={"table": "{table}"}),
        csv=report(f"{RESULTS}/tables/{{table}}.csv", category="Table data", caption="../report/table_data.rst",
                   labels={"table": "{table} (long CSV)"}),
        markdown=f"{RESULTS}/tables/{{table}}.md",
        latex=f"{RESULTS}/tables/{{table}}.tex",
    params:
        config=lambda wildcards: as_json(wf.table_config(config, wildcards.table)),
        code=code("make_table"),
    threads: 1
    log:
        log_path("table", "{table}"),
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m workflow_scripts.make_table --name {wildcards.table} --config '{params.config}' "
        "--csv {output.csv} --markdown {output.markdown} --latex {output.latex} --html {output.html} > {log} 2>&1"


# The report's landing page (Snakemake's workflow description): what ran, the settings that matter, the verdicts,
# how to read the tables (fullspectrum.landing); for a study (config `study`, rules/study.smk) also the study's
# verdict from its study.csv. `snakemake all` (or `snakemake study`) writes it; until then the report opens on
# report/workflow.rst, which says so.
LANDING = f"{RESULTS}/report/landing.rst"
STUDY_VERDICT = [f"{RESULTS}/study.csv"] if "study" in config else []


localrules:
    landing,


rule landing:
    input:
        tables=[f"{RESULTS}/tables/{name}.csv" for name in config["tables"]],
        study=STUDY_VERDICT,
    output:
        LANDING,
    params:
        config=as_json(config),
        study=" ".join(f"--study-csv {path}" for path in STUDY_VERDICT),
        code=code("landing"),
    threads: 1
    log:
        log_path("landing", "landing"),
    conda:
        "../envs/analysis.yaml"
    shell:
        "python -m workflow_scripts.landing --config '{params.config}' {params.study} --out {output} > {log} 2>&1"


report: os.path.abspath(LANDING) if os.path.exists(LANDING) else "../report/workflow.rst"
