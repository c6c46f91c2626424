# Evaluation (paper eq. 6): per-example correlation on fresh masks at every alpha_test, for every method.


rule evaluate:
    input:
        attributions=lambda w: attribution_files(w.setup),
        tests=lambda w: test_receipts(w.setup),
    output:
        correlations="results/{setup}/evaluation/correlations.csv",
        scatter="results/{setup}/evaluation/scatter.csv",
    params:
        spec=lambda w: setup_spec(w.setup, "evaluate"),
        scatter_alpha=config["figures"].get("fig2", {}).get("scatter_alpha"),
    log:
        "logs/{setup}/evaluate.log",
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate.py"
