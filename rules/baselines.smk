# Baseline attributions (paper Sec. 4, App. A.3): leave-one-out, gradient x parameter, Captum's neuron
# conductance and internal influence.


rule baseline:
    input:
        model=lambda w: model_file(w.setup),
        examples=lambda w: examples_file(w.setup),
    output:
        "results/{setup}/attributions/{method}.npz",
    params:
        spec=lambda w: setup_spec(w.setup, "baseline"),
    wildcard_constraints:
        method="loo|gp|nc|ii",
    resources:
        gpu=1,
        batch_size=0,  # examples per pass; 0: the sampling engine's choice (coar.engine.plan)
        masks_per_pass=0,  # masks per pass; 0: the engine's choice (1 = weights in place, > 1 = hooks)
    log:
        "logs/{setup}/baseline-{method}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/baseline.py"
