# Tables 1-3 from the trained masks' results, and the artefacts Snakemake's report shows.


rule table:
    input:
        table_inputs,
    output:
        csv=report(f"{RESULTS}/tables/{{table}}.csv", category="Tables", caption="../report/table.rst",
                   labels={"table": "{table}", "format": "csv"}),
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
        "--csv {output.csv} --markdown {output.markdown} --latex {output.latex} > {log} 2>&1"
