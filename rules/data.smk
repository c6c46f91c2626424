# Fixed evaluation sets: decoded once into uint8 arrays with a checksum (coar.data.examples.Examples).


rule examples:
    output:
        "data/{setup}/examples.npz",
    params:
        spec=lambda w: setup_spec(w.setup, "examples"),
        data_root=config["data_root"],
        download_root=config["download_root"],
        imagenet_root=config["imagenet_root"],
    log:
        "logs/{setup}/examples.log",
    conda:
        ENV
    script:
        "../workflow/scripts/prepare_examples.py"


rule heldout_examples:
    """Examples disjoint from a setup's own: the next n of the same seeded permutation (edit evaluation)."""
    output:
        "data/{setup}/heldout-{n}.npz",
    params:
        spec=lambda w: setup_spec(w.setup, "examples"),
        data_root=config["data_root"],
        download_root=config["download_root"],
        imagenet_root=config["imagenet_root"],
    wildcard_constraints:
        n=r"\d+",
    log:
        "logs/{setup}/heldout-{n}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/prepare_examples.py"
