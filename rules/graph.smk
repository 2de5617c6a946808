# graph_metrics: the per-layer graph metrics (Ramanujan gap, weighted spectral gap, their iterative means, l2)
# of any mask the workflow makes, measured on the weights the mask was made from, written beside the mask.


rule graph_metrics:
    input:
        mask="{maskdir}/mask.pt",
        weights=mask_start_weights,
    output:
        "{maskdir}/graph.csv",
    log:
        "{maskdir}/graph.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "python workflow_scripts/graph_metrics.py --mask {input.mask} --weights {input.weights} "
        "--out {output} > {log} 2>&1"
