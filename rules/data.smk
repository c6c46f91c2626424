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
