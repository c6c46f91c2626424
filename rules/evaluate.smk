# Evaluation (paper eq. 6): per-example correlation on fresh masks at every alpha_test, for every method.
# One table per (setup, alpha); figures ask for the alphas they need and share the evaluation masks.


rule evaluate_alpha:
    """Every method of a setup on the evaluation masks at one alpha."""
    input:
        attributions=lambda w: attribution_files(w.setup),
        test=lambda w: test_receipt(w.setup, float(w.alpha)),
    output:
        "results/{setup}/evaluation/alpha-{alpha}.csv",
    wildcard_constraints:
        alpha=r"[0-9.e-]+",
    log:
        "logs/{setup}/evaluate/alpha-{alpha}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate_alpha.py"


rule evaluate_on:
    """A setup's COAR attributions on another setup's evaluation masks (same model and examples, other
    ablation semantics; paper Fig. 27)."""
    input:
        attributions=lambda w: attribution_files(w.setup, ["coar"]),
        test=lambda w: test_receipt(w.other, float(w.alpha)),
    output:
        "results/{setup}/evaluation/on-{other}/alpha-{alpha}.csv",
    wildcard_constraints:
        alpha=r"[0-9.e-]+",
    log:
        "logs/{setup}/evaluate/on-{other}-alpha-{alpha}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/evaluate_alpha.py"


rule evaluate:
    """The setup's alpha_test grid in one table, and one example's scatter for Fig. 2."""
    input:
        tables=lambda w: evaluation_files(w.setup),
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
        fits=lambda w: expand("results/{{setup}}/sample_size/{fit}-m{m}.npz", m=sample_sizes(w.setup),
                              fit=["coar", "ridge"] if config["figures"]["fig14"].get("ridge") else ["coar"]),
        full=lambda w: attribution_file(w.setup, "coar"),
        loo=lambda w: attribution_file(w.setup, "loo"),
        test=lambda w: test_receipt(w.setup, SETUPS[w.setup]["alpha_train"]),
    output:
        "results/{setup}/sample_size/table.csv",
    log:
        "logs/{setup}/sample_size.log",
    conda:
        ENV
    script:
        "../workflow/scripts/sample_size.py"


rule ablation_effect:
    """Accuracy and output correlation of the ablated model at each alpha of Fig. 25 (paper App. E.1),
    read off the evaluation masks."""
    input:
        model=lambda w: model_file(w.setup),
        examples=lambda w: examples_file(w.setup),
        tests=lambda w: test_receipts(w.setup, config["figures"]["fig25"]["alphas"]),
    output:
        "results/{setup}/ablation_effect.csv",
    params:
        spec=lambda w: setup_spec(w.setup, "baseline"),
    log:
        "logs/{setup}/ablation_effect.log",
    conda:
        ENV
    script:
        "../workflow/scripts/ablation_effect.py"


rule example_scatters:
    """True vs estimated counterfactuals of random examples for every method (paper Figs. 15-16)."""
    input:
        attributions=lambda w: attribution_files(w.setup),
        test=lambda w: test_receipt(w.setup, SETUPS[w.setup]["alpha_train"]),
    output:
        "results/{setup}/evaluation/fig{n}-scatters.csv",
    params:
        examples=lambda w: config["figures"][f"fig{w.n}"]["examples"],
        seed=lambda w: config["figures"][f"fig{w.n}"]["seed"],
    wildcard_constraints:
        n="15|16",
    log:
        "logs/{setup}/example_scatters-fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/example_scatters.py"
