# Every figure of the paper is a target figures/figN.pdf. Those this version builds have rules below; the
# others fail at once (while the DAG is built, before any job runs) with a message saying why.

rule fig2:
    input:
        correlations=lambda w: expand(
            "results/{setup}/evaluation/correlations.csv", setup=figure_setups("fig2")
        ),
        scatter=lambda w: expand("results/{setup}/evaluation/scatter.csv", setup=figure_setups("fig2")),
        models=lambda w: expand("results/{setup}/model.pt", setup=figure_setups("fig2")),
    output:
        figure=report(
            "figures/fig2.pdf",
            caption="../workflow/report/fig2.rst",
            category="Attribution accuracy",
        ),
        table="results/fig2/correlations.csv",
        summary="results/fig2/summary.csv",
    params:
        setups=lambda w: {s: setup_spec(s, "fig2") for s in figure_setups("fig2")},
        preset=config["preset"],
    log:
        "logs/fig2.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig2.py"


rule fig14:
    input:
        tables=lambda w: expand("results/{setup}/sample_size/table.csv", setup=figure_setups("fig14")),
    output:
        figure=report(
            "figures/fig14.pdf",
            caption="../workflow/report/fig14.rst",
            category="Attribution accuracy",
        ),
        table="results/fig14/sample_size.csv",
    params:
        setups=lambda w: {s: setup_spec(s, "fig14") for s in figure_setups("fig14")},
        preset=config["preset"],
    log:
        "logs/fig14.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig14.py"


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

