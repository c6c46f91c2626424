# Data sources, obtained once; fixed evaluation sets decoded from them once into uint8 arrays with a checksum
# (coar.examples.Examples).


rule dataset:
    """Obtain one data source (download it, or check what was placed by hand), verify it with its loader's
    checks over every split, and record what was found (coar.paper.data.sources). Jobs reading the source wait for
    this one, so it is fetched once, never by two jobs at once. A local rule: under a cluster profile it runs
    on the submitting machine, which has the internet access compute nodes often lack."""
    output:
        "data/datasets/{source}.json",
    params:
        root=lambda w: source_root(w.source, config["data_root"], config["download_root"], config["imagenet_root"]),
    wildcard_constraints:
        source="|".join(re.escape(s) for s in sources()),
    localrule: True
    log:
        "logs/datasets/{source}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/prepare_dataset.py"


rule weights:
    """Fetch one set of published weights (torchvision) or one Hugging Face model with its tokenizer into the
    libraries' caches, check every file's hash and record them (coar.paper.hub). A local rule, like `dataset`:
    it runs on the submitting machine, and the jobs that load the weights run offline and wait for it."""
    output:
        "data/weights/{asset}.json",
    wildcard_constraints:
        asset="|".join(re.escape(a) for a in ASSETS),
    localrule: True
    log:
        "logs/weights/{asset}.log",
    conda:
        ENV
    script:
        "../workflow/scripts/fetch_weights.py"


rule fetch:
    """Every data source and every set of published weights the preset reads, obtained and verified: the one
    command to run on a cluster's login node before submitting (`snakemake --cores 1 fetch`, docs/cluster.md)."""
    input:
        fetch_manifests(),
    localrule: True


rule examples:
    input:
        lambda w: examples_inputs(w.setup),
    output:
        "data/{setup}/examples.npz",
    params:
        spec=lambda w: examples_spec(w.setup),
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
    input:
        lambda w: examples_inputs(w.setup),
    output:
        "data/{setup}/heldout-{n}.npz",
    params:
        spec=lambda w: examples_spec(w.setup),
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
    input:
        lambda w: source_manifest(shift_spec(w.edit, w.shift)["dataset"], shift_spec(w.edit, w.shift)["corruption"]),
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
