# Every figure of the paper is a target figures/figN.pdf. Those this version builds have rules below; the
# others fail at once (while the DAG is built, before any job runs) with a message saying why.

rule fig2:
    input:
        correlations=lambda w: expand(
            "results/{setup}/evaluation/correlations.csv", setup=config["figures"]["fig2"]["setups"]
        ),
        scatter=lambda w: expand(
            "results/{setup}/evaluation/scatter.csv", setup=config["figures"]["fig2"]["setups"]
        ),
        models=lambda w: expand("results/{setup}/model.pt", setup=config["figures"]["fig2"]["setups"]),
    output:
        figure=report(
            "figures/fig2.pdf",
            caption="../workflow/report/fig2.rst",
            category="Attribution accuracy",
        ),
        table="results/fig2/correlations.csv",
        summary="results/fig2/summary.csv",
    params:
        setups=lambda w: {s: setup_spec(s, "fig2") for s in config["figures"]["fig2"]["setups"]},
        preset=config["preset"],
    log:
        "logs/fig2.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig2.py"


rule figure_unavailable:
    input:
        _unavailable,
    output:
        "figures/fig{n}.pdf",
    wildcard_constraints:
        n=unbuilt_figure_pattern(),
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    shell:
        "false"

