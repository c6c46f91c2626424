# COAR regression: one streaming pass over the training shards, one factorisation for all examples.


rule fit:
    input:
        unpack(fit_inputs),
    output:
        "results/{setup}/attributions/coar.npz",
    params:
        spec=lambda w: setup_spec(w.setup, "fit"),
        max_masks=None,
    resources:
        gpu=1,
    log:
        "logs/{setup}/fit.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fit.py"


rule fit_sample_size:
    """COAR refitted on the first m training masks (paper Fig. 14): `coar` with the setup's regression,
    `ridge` with ridge regression and the setup's lambda grid, at the same sample sizes."""
    input:
        unpack(fit_inputs),
    output:
        "results/{setup}/sample_size/{fit}-m{m}.npz",
    params:
        spec=lambda w: fit_spec(w.setup, w.fit),
        max_masks=lambda w: int(w.m),
    wildcard_constraints:
        m=r"\d+",
        fit="coar|ridge",
    log:
        "logs/{setup}/fit-{fit}-m{m}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fit.py"
