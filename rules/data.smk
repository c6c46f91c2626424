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


rule shifted_examples:
    """A distribution-shifted set a forget edit is scored on (Sec. 5.2: ImageNet-Sketch, ImageNet*): n random
    examples plus every example of the edit's classes."""
    output:
        "data/edits/{edit}/shift-{shift}.npz",
    params:
        spec=lambda w: shift_spec(w.edit, w.shift),
        data_root=config["data_root"],
        download_root=config["download_root"],
        imagenet_root=config["imagenet_root"],
    wildcard_constraints:
        shift=r"[A-Za-z0-9_]+",
    log:
        "logs/edits/{edit}-shift-{shift}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/prepare_shifted.py"
