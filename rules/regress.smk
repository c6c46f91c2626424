# COAR regression: one streaming pass over the training shards, one factorisation for all examples.


rule fit:
    input:
        "results/{setup}/masks/train.json",
    output:
        "results/{setup}/attributions/coar.npz",
    params:
        spec=lambda w: setup_spec(w.setup, "fit"),
    resources:
        gpu=1,
    log:
        "logs/{setup}/fit.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fit.py"
