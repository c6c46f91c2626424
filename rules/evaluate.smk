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


rule sample_size_table:
    """Per-example correlation at alpha_train and cosine similarity to the full fit, per sample size."""
    input:
        fits=lambda w: expand("results/{{setup}}/sample_size/coar-m{m}.npz", m=sample_sizes(w.setup)),
        full="results/{setup}/attributions/coar.npz",
        loo="results/{setup}/attributions/loo.npz",
        test=lambda w: f"results/{w.setup}/masks/{test_split(SETUPS[w.setup]['alpha_train'])}.json",
    output:
        "results/{setup}/sample_size/table.csv",
    log:
        "logs/{setup}/sample_size.log",
    conda:
        ENV
    script:
        "../workflow/scripts/sample_size.py"
