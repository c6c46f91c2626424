# Sharded mask sampling. Each shard is one job writing a resumable store directory (not a Snakemake
# output, so a killed job's partial store is kept and resumed, never deleted); the declared output is a
# small receipt written atomically once the store is complete and verified. A gather step per split
# checks every shard before the regression reads them.


rule sample_shard:
    input:
        model=lambda w: model_file(w.setup),
        examples=lambda w: examples_file(w.setup),
    output:
        "results/{setup}/masks/{split}/shard-{shard}.json",
    params:
        store=lambda w: f"results/{w.setup}/masks/{w.split}/shard-{w.shard}",
        spec=lambda w: setup_spec(w.setup, "sample_shard"),
        settings=lambda w: mask_settings(w.setup, w.split, w.shard),
    wildcard_constraints:
        split=r"train|test-[0-9.e-]+",
        shard=r"\d+",
    resources:
        gpu=1,
        batch_size=0,  # examples per pass; 0: the sampling engine's choice (coar.engine.plan)
        masks_per_pass=0,  # masks per pass; 0: the engine's choice (1 = weights in place, > 1 = hooks)
    log:
        "logs/{setup}/masks/{split}/shard-{shard}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/sample.py"


rule gather_masks:
    input:
        lambda w: shard_receipts(w.setup, w.split),
    output:
        "results/{setup}/masks/{split}.json",
    wildcard_constraints:
        split=r"train|test-[0-9.e-]+",
    log:
        "logs/{setup}/masks/{split}.gather.log",
    conda:
        ENV
    script:
        "../workflow/scripts/gather.py"
