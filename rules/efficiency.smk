# Attribution accuracy against the forward-pass budget: every estimator of coar.regression on the first
# masks of each setup's training stores, the priors' own forward passes counted (coar.paper.efficiency;
# benchmarks/efficiency.py runs the same study from the command line).
# Not part of `all`: it refits every estimator at six budgets per setup (minutes on a CPU, the lasso most).


rule efficiency:
    input:
        train=lambda w: [train_receipt(s) for s in efficiency_setups()],
        test=lambda w: efficiency_test_receipts(),
        priors=lambda w: [attribution_file(s, p) for s in efficiency_setups() for p in ("loo", "gp")],
    output:
        figure=report(
            "figures/efficiency.pdf",
            caption="../workflow/report/efficiency.rst",
            category="Attribution accuracy",
        ),
        table="results/efficiency/curves.csv",
        goal="results/efficiency/goal.csv",
    params:
        setups=lambda w: {s: setup_spec(s, "fig2") for s in efficiency_setups()},
        alphas=lambda w: {s: efficiency_alphas(s) for s in efficiency_setups()},
        preset=config["preset"],
    log:
        "logs/efficiency.log",
    conda:
        ENV
    script:
        "../workflow/scripts/efficiency.py"
