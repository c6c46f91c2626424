"""The model registry's names (coar.paper.models builds them), importable without torch: the workflow's plan
checks a config's model names when Snakemake builds its DAG, and importing torch there cost 2 s of every
`snakemake` call, dry runs included."""

IMAGE_MODELS = {"cifar_resnet", "resnet18_cifar", "resnet18_w8", "resnet18_w32", "resnet_small", "resnet_tiny",
                "resnet_mini", "vit_tiny", "mlp", "mlp_small", "vit_small", "resnet50", "vit_b_16", "clip_zeroshot",
                "clip_vit_b_16"}
TEXT_MODELS = {"gpt2", "gpt2_tiny", "gpt2_bytes", "phi2", "phi2_tiny"}
MODELS = sorted(IMAGE_MODELS | TEXT_MODELS)
#: models whose shape comes from a Hugging Face configuration (their own or CLIP's)
HF_ARCHITECTURES = TEXT_MODELS | {"clip_vit_b_16", "clip_zeroshot"}
