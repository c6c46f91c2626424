# Every figure of the paper is a target figures/figN.pdf (N from 2 to 27) with a rule below. One the preset does
# not configure, or a number the paper does not have, fails at once (while the DAG is built, before any job runs)
# with a message saying why.

rule fig2:
    input:
        correlations=lambda w: expand(
            "results/{setup}/evaluation/correlations.csv", setup=figure_setups("fig2")
        ),
        scatter=lambda w: expand("results/{setup}/evaluation/scatter.csv", setup=figure_setups("fig2")),
        models=lambda w: [model_file(s) for s in figure_setups("fig2")],
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


rule fig_alpha_profile:
    """Figs. 13 and 26: COAR's mean correlation over one alpha_test grid, one line per setup."""
    input:
        tables=lambda w: [f for s in figure_setups(f"fig{w.n}")
                          for f in evaluation_files(s, config["figures"][f"fig{w.n}"]["alpha_test"])],
    output:
        figure=report("figures/fig{n}.pdf", caption="../workflow/report/figure.rst", category="Attribution accuracy"),
        table="results/fig{n}/correlations.csv",
    params:
        setups=lambda w: figure_specs(f"fig{w.n}"),
        preset=config["preset"],
    wildcard_constraints:
        n="13|26",
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_alpha_profile.py"


rule fig25:
    input:
        tables=lambda w: expand("results/{setup}/ablation_effect.csv", setup=figure_setups("fig25")),
    output:
        figure=report("figures/fig25.pdf", caption="../workflow/report/fig25.rst", category="Ablation"),
        table="results/fig25/ablation_effect.csv",
    params:
        setups=lambda w: figure_specs("fig25"),
        preset=config["preset"],
    log:
        "logs/fig25.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig25.py"


rule fig27:
    input:
        zero=lambda w: attribution_file(fig27_setting("zero"), "coar"),
        scale=lambda w: attribution_file(fig27_setting("scale"), "coar"),
        scale_on_zero=lambda w: evaluation_files(fig27_setting("scale"), fig27_setting("alpha_test"), on=fig27_setting("zero")),
        zero_on_zero=lambda w: evaluation_files(fig27_setting("zero"), fig27_setting("alpha_test")),
    output:
        figure=report("figures/fig27.pdf", caption="../workflow/report/fig27.rst", category="Ablation"),
        cosine="results/fig27/cosine.csv",
        table="results/fig27/correlations.csv",
    params:
        setups=lambda w: figure_specs("fig27", [fig27_setting("zero"), fig27_setting("scale")]),
        preset=config["preset"],
    log:
        "logs/fig27.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig27.py"


rule fig_example_scatters:
    """Figs. 15 and 16: true vs estimated counterfactuals of random examples, every method."""
    input:
        tables=lambda w: expand("results/{setup}/evaluation/fig{n}-scatters.csv", setup=figure_setups(f"fig{w.n}"),
                                n=w.n),
    output:
        figure=report("figures/fig{n}.pdf", caption="../workflow/report/figure.rst", category="Attribution accuracy"),
        table="results/fig{n}/scatters.csv",
    params:
        setups=lambda w: figure_specs(f"fig{w.n}"),
        preset=config["preset"],
    wildcard_constraints:
        n="15|16",
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_example_scatters.py"


rule fig_attribution_examples:
    """Fig. 17: examples with the most positive attribution per component; Fig. 18: nearest neighbours in
    attribution space."""
    input:
        attributions=lambda w: attribution_file(attribution_setup(w.n), "coar"),
        examples=lambda w: examples_file(attribution_setup(w.n)),
        model=lambda w: model_file(attribution_setup(w.n)),
    output:
        figure=report("figures/fig{n}.pdf", caption="../workflow/report/figure.rst", category="Attribution examples"),
        table="results/fig{n}/examples.csv",
    params:
        drawing=lambda w: drawing(w.n),
        suptitle=lambda w: suptitle(w.n),
        setups=lambda w: figure_specs(f"fig{w.n}", [attribution_setup(w.n)]),
        options=lambda w: config["figures"][f"fig{w.n}"],
        preset=config["preset"],
    wildcard_constraints:
        n="17|18",
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_attribution_examples.py"


rule fig_correlation_panels:
    """Figs. 8-12 (and the other "COAR on more models / data" figures): one panel per setup, mean correlation
    vs alpha_test for every method of the setup."""
    input:
        tables=lambda w: expand("results/{setup}/evaluation/correlations.csv", setup=figure_setups(f"fig{w.n}")),
    output:
        figure=report("figures/fig{n}.pdf", caption="../workflow/report/figure.rst", category="Attribution accuracy"),
        table="results/fig{n}/correlations.csv",
    params:
        setups=lambda w: figure_specs(f"fig{w.n}"),
        preset=config["preset"],
    wildcard_constraints:
        n="8|9|10|11|12",
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_correlation_panels.py"


rule fig_edit_single:
    """Figs. 3, 19-22: single-example edits (fix or induce); Fig. 5: subpopulations. With the random control."""
    input:
        sweep=lambda w: [f"results/edits/{e}/sweep.csv" for e in figure_edits(f"fig{w.n}")],
        summary=lambda w: [f"results/edits/{e}/summary.csv" for e in figure_edits(f"fig{w.n}")],
        components=lambda w: f"results/edits/{edit_figure(f'fig{w.n}')}/components.csv",
    output:
        figure=report("figures/fig{n}.pdf", caption="../workflow/report/figure.rst", category="Editing"),
        table="results/fig{n}/summary.csv",
    params:
        drawing=lambda w: drawing(w.n),
        suptitle=lambda w: suptitle(w.n),
        options=lambda w: config["figures"][f"fig{w.n}"],
        edit=lambda w: config["edits"][edit_figure(f"fig{w.n}")],
        setups=lambda w: figure_specs(f"fig{w.n}", list(dict.fromkeys(edit_setup(e) for e in figure_edits(f"fig{w.n}")))),
        preset=config["preset"],
    wildcard_constraints:
        n="3|5|19|20|21|22",
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_edit.py"


rule fig_edit_forget:
    """Figs. 4 and 23: forgetting a class."""
    input:
        sweep=lambda w: forget_outputs(edit_figure(f"fig{w.n}"), "sweep.csv", forget_classes_shown(w.n)),
        classwise=lambda w: forget_outputs(edit_figure(f"fig{w.n}"), "classwise.csv", forget_classes_shown(w.n)),
        chosen=lambda w: forget_outputs(edit_figure(f"fig{w.n}"), "chosen.json", forget_classes_shown(w.n)),
        shifted=lambda w: forget_outputs(edit_figure(f"fig{w.n}"), "shifted.csv", forget_classes_shown(w.n)),
    output:
        figure=report("figures/fig{n}.pdf", caption="../workflow/report/figure.rst", category="Editing"),
        table="results/fig{n}/summary.csv",
    params:
        drawing=lambda w: drawing(w.n),
        suptitle=lambda w: suptitle(w.n),
        options=lambda w: config["figures"][f"fig{w.n}"],
        edit=lambda w: config["edits"][edit_figure(f"fig{w.n}")],
        setups=lambda w: figure_specs(f"fig{w.n}", [edit_setup(edit_figure(f"fig{w.n}"))]),
        preset=config["preset"],
    wildcard_constraints:
        n="4|23",
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_edit.py"


rule fig_backdoor:
    """Fig. 6: a backdoor and its removal by COAR-EDIT; Fig. 7: typographic attacks on zero-shot CLIP and their
    removal."""
    input:
        sweep=lambda w: f"results/edits/{edit_figure(f'fig{w.n}')}/sweep.csv",
        summary=lambda w: f"results/edits/{edit_figure(f'fig{w.n}')}/summary.csv",
        components=lambda w: f"results/edits/{edit_figure(f'fig{w.n}')}/components.csv",
        outputs=lambda w: f"results/edits/{edit_figure(f'fig{w.n}')}/outputs.csv",
        model=lambda w: model_file(edit_setup(edit_figure(f"fig{w.n}"))),  # the plan checked the edit's kind
        heldout=lambda w: heldout_file(edit_figure(f"fig{w.n}")),
    output:
        figure=report("figures/fig{n}.pdf", caption="../workflow/report/figure.rst", category="Editing"),
        table="results/fig{n}/summary.csv",
    params:
        options=lambda w: config["figures"][f"fig{w.n}"],
        edit=lambda w: config["edits"][edit_figure(f"fig{w.n}")],
        setups=lambda w: figure_specs(f"fig{w.n}", [edit_setup(edit_figure(f"fig{w.n}"))]),
        spec=lambda w: setup_spec(edit_setup(edit_figure(f"fig{w.n}")), "baseline"),
        dataset=lambda w: SETUPS[edit_setup(edit_figure(f"fig{w.n}"))]["dataset"],
        preset=config["preset"],
        data_root=config["data_root"],
        download_root=config["download_root"],
    wildcard_constraints:
        n="6|7",
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_backdoor.py"


rule backdoor_saliency:
    """Fig. 24's measurements: input-x-gradient saliency of the components COAR-EDIT ranks first to remove the
    backdoor and of random control components, their share inside the trigger square, and how far the trigger
    moves their outputs."""
    input:
        components=lambda w: f"results/edits/{edit_figure('fig24')}/components.csv",
        model=lambda w: model_file(edit_setup(edit_figure("fig24"), ("backdoor",))),
        heldout=lambda w: heldout_file(edit_figure("fig24")),
    output:
        maps="results/fig24/saliency.npz",
        table="results/fig24/summary.csv",
    params:
        options=lambda w: config["figures"]["fig24"],
        spec=lambda w: setup_spec(edit_setup(edit_figure("fig24")), "baseline"),
        dataset=lambda w: SETUPS[edit_setup(edit_figure("fig24"))]["dataset"],
    log:
        "logs/backdoor_saliency.log",
    conda:
        ENV
    script:
        "../workflow/scripts/backdoor_saliency.py"


rule fig_backdoor_saliency:
    """Fig. 24: saliency of the components COAR-EDIT ranks first to remove the backdoor."""
    input:
        maps="results/fig24/saliency.npz",
        table="results/fig24/summary.csv",
    output:
        figure=report("figures/fig24.pdf", caption="../workflow/report/fig24.rst", category="Editing"),
    params:
        options=lambda w: config["figures"]["fig24"],
        edit=lambda w: config["edits"][edit_figure("fig24")],
        setups=lambda w: figure_specs("fig24", [edit_setup(edit_figure("fig24"))]),
        preset=config["preset"],
    log:
        "logs/fig24.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fig_saliency.py"


rule unknown_figure:
    input:
        _unknown_figure,
    output:
        "figures/fig{n}.pdf",
    wildcard_constraints:
        n=unknown_figure_pattern(),
    log:
        "logs/fig{n}.log",
    conda:
        ENV
    shell:
        "false"

