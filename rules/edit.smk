# COAR-EDIT experiments (paper Sec. 5, App. D): each entry of the config's `edits` is one experiment on a
# setup's model and attributions; its tables feed the editing figures.


rule edit_single:
    """Sec. 5.1: fix misclassified examples (kind fix) or induce errors (kind induce), one target at a time;
    Sec. 5.3: raise the worst group's accuracy (kind subpop). Each with the random-components control."""
    input:
        model=lambda w: model_file(edit_setup(w.edit, ("fix", "induce", "subpop"))),
        examples=lambda w: examples_file(edit_setup(w.edit, ("fix", "induce", "subpop"))),
        attributions=lambda w: attribution_file(edit_setup(w.edit, ("fix", "induce", "subpop")), "coar"),
        heldout=lambda w: heldout_file(w.edit),
    output:
        sweep="results/edits/{edit}/sweep.csv",
        summary="results/edits/{edit}/summary.csv",
        components="results/edits/{edit}/components.csv",
    params:
        edit=lambda w: config["edits"][w.edit],
        spec=lambda w: setup_spec(edit_setup(w.edit), "baseline"),
    wildcard_constraints:
        edit=edits_of_kind("fix", "induce", "subpop"),
    resources:
        gpu=1,
        batch_size=0,  # examples per pass; 0: the sampling engine's choice (coar.engine.plan)
        masks_per_pass=0,  # masks per pass; 0: the engine's choice (1 = weights in place, > 1 = hooks)
    log:
        "logs/edits/{edit}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/edit_single.py"


rule edit_forget:
    """Sec. 5.2: forget one class (k chosen on a validation half of the held-out examples), then score the edit
    on the distribution-shifted sets of `edits.<edit>.shifts`."""
    input:
        model=lambda w: model_file(edit_setup(w.edit, ("forget",))),
        examples=lambda w: examples_file(edit_setup(w.edit, ("forget",))),
        attributions=lambda w: attribution_file(edit_setup(w.edit, ("forget",)), "coar"),
        heldout=lambda w: heldout_file(w.edit),
        shifted=lambda w: shift_files(w.edit),
    output:
        sweep="results/edits/{edit}/class-{cls}/sweep.csv",
        classwise="results/edits/{edit}/class-{cls}/classwise.csv",
        chosen="results/edits/{edit}/class-{cls}/chosen.json",
        shifted="results/edits/{edit}/class-{cls}/shifted.csv",
    params:
        edit=lambda w: config["edits"][w.edit],
        spec=lambda w: setup_spec(edit_setup(w.edit), "baseline"),
        dataset=lambda w: SETUPS[edit_setup(w.edit)]["dataset"],
    wildcard_constraints:
        edit=r"[A-Za-z0-9_]+",
        cls=r"\d+",
    resources:
        gpu=1,
        batch_size=0,  # examples per pass; 0: the sampling engine's choice (coar.engine.plan)
        masks_per_pass=0,  # masks per pass; 0: the engine's choice (1 = weights in place, > 1 = hooks)
    log:
        "logs/edits/{edit}-class-{cls}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/edit_forget.py"


rule edit_backdoor:
    """Sec. 5.4: remove a backdoor with COAR-EDIT on paired examples (triggered targets, clean references); k is
    chosen on a validation half of the held-out images, which are scored clean and with the trigger.
    Sec. 5.5 (kind typographic): the same with synthetic typographic attacks on zero-shot CLIP, and the
    dataset's real attacks scored at every k."""
    input:
        model=lambda w: model_file(edit_setup(w.edit, ("backdoor", "typographic"))),
        examples=lambda w: examples_file(edit_setup(w.edit, ("backdoor", "typographic"))),
        attributions=lambda w: attribution_file(edit_setup(w.edit, ("backdoor", "typographic")), "coar"),
        heldout=lambda w: heldout_file(w.edit),
    output:
        sweep="results/edits/{edit}/sweep.csv",
        summary="results/edits/{edit}/summary.csv",
        components="results/edits/{edit}/components.csv",
        outputs="results/edits/{edit}/outputs.csv",
    params:
        edit=lambda w: config["edits"][w.edit],
        spec=lambda w: setup_spec(edit_setup(w.edit), "baseline"),
        dataset=lambda w: SETUPS[edit_setup(w.edit)]["dataset"],
        data_root=config["data_root"],
        download_root=config["download_root"],
    wildcard_constraints:
        edit=edits_of_kind("backdoor", "typographic"),
    resources:
        gpu=1,
        batch_size=0,  # examples per pass; 0: the sampling engine's choice (coar.engine.plan)
        masks_per_pass=0,  # masks per pass; 0: the engine's choice (1 = weights in place, > 1 = hooks)
    log:
        "logs/edits/{edit}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/edit_backdoor.py"
