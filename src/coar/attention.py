"""Self-attention with explicit hook sites, numerically equal to torch.nn.MultiheadAttention.

nn.MultiheadAttention keeps its in-projection as a bare parameter and, in eval + no_grad, takes a fused
fast path that never calls out_proj as a module, so forward hooks on its components would silently not
fire. make_hookable() swaps every instance for HookableMultiheadAttention, whose in_proj and out_proj are
ordinary nn.Linear modules, copying the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ComponentError


class HookableMultiheadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, batch_first: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ComponentError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.batch_first, self.dropout = embed_dim, num_heads, batch_first, dropout
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "HookableMultiheadAttention":
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ComponentError("only MultiheadAttention with packed in_proj, no bias_k/v and no add_zero_attn "
                                 "can be made hookable")
        new = cls(mha.embed_dim, mha.num_heads, mha.in_proj_bias is not None, mha.batch_first, mha.dropout)
        new = new.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(mha.in_proj_weight)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                new.in_proj.bias.copy_(mha.in_proj_bias)
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        return new

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not (query is key and key is value):
            raise ComponentError("HookableMultiheadAttention supports self-attention only (query is key is value)")
        x = query if self.batch_first else query.transpose(0, 1)
        B, T, D = x.shape
        H = self.num_heads
        q, k, v = self.in_proj(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        mask = attn_mask
        if key_padding_mask is not None:
            pad = key_padding_mask.view(B, 1, 1, T)
            pad = pad if pad.dtype != torch.bool else torch.zeros_like(pad, dtype=q.dtype).masked_fill(pad, float("-inf"))
            mask = pad if mask is None else mask + pad
        if mask is not None and mask.dtype == torch.bool:  # MHA: True = masked out; SDPA: True = attend
            mask = ~mask
        drop = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / (D // H) ** 0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
            weights = F.dropout(scores.softmax(-1), drop, self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=is_causal)
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(B, T, D))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
        return out, weights


def make_hookable(model: nn.Module) -> nn.Module:
    """Replace every nn.MultiheadAttention in `model` (in place) by HookableMultiheadAttention."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, child_name, HookableMultiheadAttention.from_mha(child))
    return model
