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
        batch_size=32,
        masks_per_pass=8,
    log:
        "logs/{setup}/baseline-{method}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/baseline.py"
