"""Model registry: every architecture the component tables know, buildable offline with random weights.

build_model(name, pretrained=False) returns a model in eval mode whose attention (if any) has explicit hook
sites (see attention.make_hookable). Pretrained loading uses the real hubs (torchvision / Hugging Face) and
fails with a clear error when offline. device="meta" builds shapes only (for counting components).
config= (from architecture(model)) rebuilds a hub model's own shape, as the hub configured it, for loading
a checkpoint of its weights.
"""
from __future__ import annotations

import contextlib
import json

import torch
from torch import nn

from ...errors import CoarError
from ...attention import HookableMultiheadAttention, make_hookable
from .cifar import MLP, CifarResNet, cifar_resnet, resnet18_cifar, resnet18_w8, resnet18_w32, resnet_mini, resnet_small, resnet_tiny, vit_small, vit_tiny

from ..model_names import HF_ARCHITECTURES, IMAGE_MODELS, MODELS, TEXT_MODELS  # noqa: F401 - the registry's names
HUB_IDS = {"gpt2": "gpt2", "phi2": "microsoft/phi-2", "clip_vit_b_16": "openai/clip-vit-base-patch16"}
# The dtype each hub model's weights are published in (its config.json's torch_dtype), read as such: Phi-2 ships
# float16, GPT-2 and CLIP float32. The paper names no dtype; the evaluation harness it follows for Phi-2 (Gao et
# al., dtype "auto") loads the published one. The weights are then held in float32, which represents every float16
# value exactly, so each job computes in float32 (or in the precision its sampling settings ask for) on the
# published values, whatever transformers' own default is (float32 before 5.0, the published dtype since).
PUBLISHED_DTYPES = {"gpt2": "float32", "phi2": "float16", "clip_vit_b_16": "float32"}


def _hf():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise CoarError("this model needs the [text] extra: pip install 'coar[text]'") from exc
    transformers.logging.set_verbosity_error()
    return transformers


def _hf_config(name: str):
    t = _hf()
    if name == "gpt2":
        return t.GPT2Config()
    if name == "gpt2_tiny":
        return t.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=512)
    if name == "gpt2_bytes":  # byte-level GPT-2 for the offline text stand-in (vocabulary 256)
        return t.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=256)
    if name == "phi2":
        return t.PhiConfig(vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                           num_attention_heads=32, partial_rotary_factor=0.4, max_position_embeddings=2048)
    if name == "phi2_tiny":
        return t.PhiConfig(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, partial_rotary_factor=0.4, max_position_embeddings=128)
    if name == "clip_vit_b_16":
        return t.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                  num_attention_heads=12, patch_size=16, image_size=224)
    raise KeyError(name)


def build_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                pretrained: bool = False, device: str | torch.device | None = None,
                config: dict | None = None) -> nn.Module:
    """config: the architecture(model) of a Hugging Face or zero-shot CLIP model (random init of that shape,
    not the registry's default one; pretrained models come with the hub's)."""
    if name not in MODELS:
        raise CoarError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    if config is not None and (pretrained or name not in HF_ARCHITECTURES):
        raise CoarError(f"config= gives the architecture of a checkpoint of {', '.join(sorted(HF_ARCHITECTURES))}; "
                        f"not usable for {name!r}" + (" with pretrained=True" if pretrained else ""))
    ctx = torch.device(device) if device is not None else contextlib.nullcontext()
    with ctx:
        model = _build(name, num_classes, in_channels, image_size, pretrained, config)
    return make_hookable(model).eval()


# models whose shape is the hub's configuration, not fixed by (name, num_classes, in_channels, image_size)


def architecture(model: nn.Module) -> dict:
    """build_model kwargs that rebuild `model`'s shape: {"config": <the Hugging Face config as JSON data>} for
    a Hugging Face model, {"config": {"vision_config": ..., "projection_dim": ...}} for a ZeroShotCLIP, {} for
    any other (its registry name and kwargs determine it). The training rule stores these with a checkpoint of
    published weights, so the checkpoint loads whatever configuration the hub held (the released one, or a
    rehearsal's tiny stand-in)."""
    from .clip_zeroshot import ZeroShotCLIP

    def as_json(cfg) -> dict:
        return json.loads(cfg.to_json_string(use_diff=False))

    if isinstance(model, ZeroShotCLIP):
        return {"config": {"vision_config": as_json(model.vision_model.config),
                           "projection_dim": int(model.visual_projection.out_features)}}
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "to_json_string"):
        return {"config": as_json(cfg)}
    return {}


def _build(name, num_classes, in_channels, image_size, pretrained, config=None):
    if name in ("cifar_resnet", "resnet18_cifar", "resnet18_w8", "resnet18_w32", "resnet_small", "resnet_tiny", "resnet_mini", "vit_small", "vit_tiny"):
        if pretrained:
            raise CoarError(f"{name} has no published weights: train it with the workflow's training rule")
        builders = {"cifar_resnet": cifar_resnet, "resnet18_cifar": resnet18_cifar, "resnet18_w8": resnet18_w8, "resnet18_w32": resnet18_w32,
                    "resnet_small": resnet_small, "resnet_tiny": resnet_tiny, "resnet_mini": resnet_mini,
                    "vit_small": vit_small, "vit_tiny": vit_tiny}
        return builders[name](num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    if name in ("mlp", "mlp_small"):
        if pretrained:
            raise CoarError(f"{name} has no published weights: train it with the workflow's training rule")
        # mlp: the paper's one-layer CIFAR-10 MLP (3,072 hidden neurons); mlp_small: 256, the CPU stand-in
        return MLP(in_channels * image_size * image_size, 3072 if name == "mlp" else 256, num_classes)
    if name in ("resnet50", "vit_b_16"):
        import torchvision

        builder = getattr(torchvision.models, name)
        if not pretrained:  # random init (offline tests) or a fine-tuned checkpoint's architecture
            return builder(weights=None, num_classes=num_classes)
        try:
            return builder(weights="IMAGENET1K_V1")
        except Exception as exc:
            raise CoarError(f"could not load torchvision {name} weights IMAGENET1K_V1: {exc}") from exc
    if name == "clip_zeroshot":
        if pretrained:
            raise CoarError("clip_zeroshot needs its class names: the training rule builds it with "
                            "coar.paper.models.clip_zeroshot.build_zero_shot_clip(class_names)")
        from .clip_zeroshot import skeleton

        if config is None:
            return skeleton(num_classes)
        vision = _hf().CLIPVisionConfig.from_dict(config["vision_config"])
        return skeleton(num_classes, vision, projection_dim=int(config["projection_dim"]))
    t = _hf()
    cls = t.CLIPVisionModel if name == "clip_vit_b_16" else (t.PhiForCausalLM if name.startswith("phi") else t.GPT2LMHeadModel)
    if pretrained:
        if name not in HUB_IDS:
            raise CoarError(f"{name} is a test configuration without published weights")
        try:
            return cls.from_pretrained(HUB_IDS[name], dtype=getattr(torch, PUBLISHED_DTYPES[name])).float()
        except Exception as exc:
            raise CoarError(f"could not load {HUB_IDS[name]} from the Hugging Face hub: {exc}") from exc
    return cls(cls.config_class.from_dict(config) if config is not None else _hf_config(name))


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A fresh `num_classes`-way head on a torchvision ResNet (fc) or ViT (heads.head), for fine-tuning published
    weights; the head is not a component (convs named conv* and encoder rows only), so component sets are kept."""
    if isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif isinstance(getattr(getattr(model, "heads", None), "head", None), nn.Linear):
        model.heads.head = nn.Linear(model.heads.head.in_features, num_classes)
    else:
        raise CoarError(f"{type(model).__name__} has no fc or heads.head classification layer to replace")
    return model


__all__ = ["build_model", "architecture", "replace_head", "MODELS", "IMAGE_MODELS", "TEXT_MODELS", "make_hookable", "HookableMultiheadAttention",
           "CifarResNet", "MLP"]
