# The model of each setup: trained by us (CIFAR-style models) or published weights (ImageNet models).


rule model:
    input:
        lambda w: model_inputs(w.setup),
    output:
        "results/{setup}/model.pt",
    # every other job of a setup waits for its model, and training is the longest job: start it first, the
    # longest training first
    priority: training_priority
    params:
        spec=lambda w: setup_spec(w.setup, "model"),
        data_root=config["data_root"],
        download_root=config["download_root"],
    resources:
        gpu=lambda w: 0 if SETUPS[w.setup]["pretrained"] else 1,
    log:
        "logs/{setup}/model.log",
    conda:
        ENV
    script:
        "../workflow/scripts/train.py"
