"""Zero-shot CLIP classifier whose components are the vision tower's weight rows (paper Sec. 5.5, App. D.5).

Real model: OpenAI CLIP ViT-B/16, Hugging Face id `openai/clip-vit-base-patch16` (CLIPModel + CLIPTokenizer).
The paper edits "a zero-shot CLIP ViT-B/16 classifier" over 82,944 components: every weight row of the
self-attention (q/k/v/out projections) and MLP (fc1, fc2) Linear modules of the 12 vision blocks
(12 x (4 x 768 + 3072 + 768) = 82,944). The paper does not say which prompt templates it used.

Zero-shot recipe (CLIP, Radford et al. 2021): for every class, embed each prompt template filled with the
class name with the text tower, L2-normalise, average over templates and L2-normalise again. An image is
classified by logit_scale * <normalised image embedding, class embedding>. The text side is evaluated once
and frozen into the buffer `class_embeddings`; only the vision tower (plus `visual_projection`) remains a
module, so `coar.components.component_set(model, "clip_vit_b_16")` finds exactly the vision components
(module names `vision_model.encoder.layers.<i>....`).

TEMPLATES is a handful of prompt templates taken verbatim from CLIP's list of 80 ImageNet templates
(the full list is longer; this subset is our choice).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CoarError, ShapeError

HUB_ID = "openai/clip-vit-base-patch16"

# CLIP's image normalisation (OpenAI CLIP preprocessing, also in the HF CLIPImageProcessor config).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Seven of the 80 ImageNet prompt templates of CLIP (our subset; the paper does not list its templates).
TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
)


def _pooled(out) -> torch.Tensor:
    """pooler_output of an HF encoder output (object, dict or tuple)."""
    if hasattr(out, "pooler_output"):
        return out.pooler_output
    if isinstance(out, dict):
        return out["pooler_output"]
    return out[1]


class ZeroShotCLIP(nn.Module):
    """CLIP vision tower + projection, classifying against fixed text embeddings of K classes.

    vision_model: the CLIP vision transformer (`CLIPModel.vision_model`); visual_projection: Linear
    hidden -> D; class_embeddings: [K, D] (re-normalised here); logit_scale: the multiplier applied to the
    cosine similarities (CLIP's exp(logit_scale) parameter, i.e. 100 for the released model).
    forward(pixel_values [N, 3, H, W] normalised with CLIP_MEAN / CLIP_STD) -> logits [N, K].
    """

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module, class_embeddings: torch.Tensor,
                 logit_scale: float | torch.Tensor, class_names: Sequence[str] | None = None,
                 templates: Sequence[str] | None = None):
        super().__init__()
        self.vision_model = vision_model
        self.visual_projection = visual_projection
        emb = torch.as_tensor(class_embeddings).detach()
        dim = getattr(visual_projection, "out_features", None)
        if emb.dim() != 2 or (dim is not None and emb.shape[1] != dim):
            raise ShapeError(f"class_embeddings must have shape [K, {dim}] (visual_projection.out_features), "
                             f"got {tuple(emb.shape)}")
        if class_names is not None and len(class_names) != emb.shape[0]:
            raise ShapeError(f"{len(class_names)} class names for class_embeddings of shape {tuple(emb.shape)}")
        self.register_buffer("class_embeddings", F.normalize(emb.float(), dim=-1))
        scale = torch.as_tensor(logit_scale, dtype=torch.float32).detach().reshape(())
        self.register_buffer("logit_scale", scale.clone())
        self.class_names = list(class_names) if class_names is not None else None
        self.templates = list(templates) if templates is not None else None
        self.eval()

    @property
    def num_classes(self) -> int:
        return int(self.class_embeddings.shape[0])

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected image embeddings [N, D]."""
        pooled = _pooled(self.vision_model(pixel_values=pixel_values))
        return F.normalize(self.visual_projection(pooled), dim=-1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ShapeError(f"pixel_values must have shape [N, 3, H, W], got {tuple(pixel_values.shape)}")
        emb = self.image_embeddings(pixel_values)
        cls = self.class_embeddings.to(emb.dtype)
        return self.logit_scale.to(emb.dtype) * emb @ cls.T


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def encode_prompts(model: nn.Module, tokenizer, prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised CLIP text embeddings [P, D] of `prompts` (text tower + text_projection of a CLIPModel)."""
    if not prompts:
        raise CoarError("no prompts to encode")
    text_cfg = model.config.text_config
    eos_cfg = getattr(text_cfg, "eos_token_id", None)
    eos_tok = getattr(tokenizer, "eos_token_id", None)
    # eos_token_id == 2 is HF's legacy CLIP config, which pools at argmax(input_ids) (the EOS token has the
    # largest id in CLIP's vocabulary); any other value must be the tokenizer's EOS id.
    if eos_cfg not in (None, 2) and eos_tok is not None and eos_cfg != eos_tok:
        raise CoarError(f"text_config.eos_token_id={eos_cfg} differs from the tokenizer's eos_token_id={eos_tok}: "
                        "the text tower would pool at the wrong position")
    max_len = int(getattr(text_cfg, "max_position_embeddings", 77))
    device = _device(model)
    was_training = model.training
    model.eval()
    feats = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(list(prompts[i: i + batch_size]), padding=True, truncation=True, max_length=max_len,
                            return_tensors="pt")
            out = model.text_model(input_ids=enc["input_ids"].to(device),
                                   attention_mask=enc["attention_mask"].to(device))
            feats.append(F.normalize(model.text_projection(_pooled(out)).float(), dim=-1))
    finally:
        model.train(was_training)
    return torch.cat(feats)


def class_embeddings(model: nn.Module, tokenizer, class_names: Sequence[str],
                     templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    """[K, D]: per class, the normalised mean over templates of the normalised prompt embeddings."""
    if not class_names:
        raise CoarError("class_names is empty")
    if not templates:
        raise CoarError("templates is empty")
    for t in templates:
        if "{}" not in t:
            raise CoarError(f"prompt template {t!r} has no '{{}}' placeholder for the class name")
    prompts = [t.format(c) for c in class_names for t in templates]
    emb = encode_prompts(model, tokenizer, prompts).view(len(class_names), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def _load_pretrained(hub_id: str, model, tokenizer):
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise CoarError("zero-shot CLIP needs the [text] extra: pip install 'coar[text]'") from exc
    transformers.logging.set_verbosity_error()
    try:
        if model is None:
            model = transformers.CLIPModel.from_pretrained(hub_id, dtype=torch.float32)  # as published
        if tokenizer is None:
            tokenizer = transformers.CLIPTokenizer.from_pretrained(hub_id)
    except Exception as exc:
        raise CoarError(f"could not load {hub_id} (CLIPModel / CLIPTokenizer) from the Hugging Face hub: {exc}") from exc
    return model, tokenizer


def build_zero_shot_clip(class_names: Sequence[str], templates: Sequence[str] = TEMPLATES, model=None,
                         tokenizer=None, pretrained: bool = True, hub_id: str = HUB_ID) -> ZeroShotCLIP:
    """Zero-shot classifier over `class_names`.

    pretrained=True loads whichever of model / tokenizer is not given from the hub (`hub_id`); with
    pretrained=False both must be passed (tests use a random-init CLIPModel and an offline tokenizer).
    The returned module shares the vision tower and projection with `model` and is in eval mode.
    """
    if model is None or tokenizer is None:
        if not pretrained:
            raise CoarError("build_zero_shot_clip(pretrained=False) needs both `model` (a transformers.CLIPModel) "
                            "and `tokenizer` (a CLIPTokenizer)")
        model, tokenizer = _load_pretrained(hub_id, model, tokenizer)
    for attr in ("vision_model", "visual_projection", "text_model", "text_projection", "logit_scale"):
        if not hasattr(model, attr):
            raise CoarError(f"model {type(model).__name__} has no attribute {attr!r}: pass a transformers.CLIPModel")
    emb = class_embeddings(model, tokenizer, class_names, templates)
    scale = model.logit_scale.detach().float().exp()
    return ZeroShotCLIP(model.vision_model, model.visual_projection, emb, scale, class_names, templates).eval()


def skeleton(num_classes: int, vision_config=None, projection_dim: int = 512) -> ZeroShotCLIP:
    """A random-init ZeroShotCLIP of ViT-B/16's shape (projection to 512) with `num_classes` zero class
    embeddings: the architecture a saved zero-shot classifier's weights load into (no download). A checkpoint
    records its own vision_config and projection_dim (coar.paper.models.architecture); tests pass small ones."""
    import transformers as t

    vision = vision_config or t.CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                 num_attention_heads=12, patch_size=16, image_size=224)
    text = t.CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    clip = t.CLIPModel(t.CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                    projection_dim=projection_dim))
    return ZeroShotCLIP(clip.vision_model, clip.visual_projection, torch.zeros(num_classes, projection_dim), 100.0)


__all__ = ["ZeroShotCLIP", "build_zero_shot_clip", "skeleton", "class_embeddings", "encode_prompts", "TEMPLATES",
           "CLIP_MEAN", "CLIP_STD", "HUB_ID"]
