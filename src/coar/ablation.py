"""Component ablation (paper Sec. 2, Remark 2; App. E.2): the only module that registers hooks.

Semantics are those of the authors' released code: ablating a component multiplies its WEIGHT slice by
gamma (mode "zero": gamma = 0; mode "scale": gamma in [0, 1]). Biases and BatchNorm are untouched, so an
ablated output unit becomes  bias + gamma * (y - bias)  and an ablated input feature is scaled by gamma.

Three mechanisms give the same numbers (tests prove it to 1e-5 in fp32 for every component type):
  (a) ablate_weights(): weight surgery on a copy of the model, one mask per forward pass (the reference);
  (b) ablation_hooks(): forward hooks with per-sample keep-masks. A batch of K*B rows is K blocks of B
      rows (mask-major); block r runs with keep-mask r, so K masks run in one forward pass;
  (c) the engine's "weights" mechanism (coar.engine): (a) in place on the model itself, mask after mask, its
      weights restored bitwise afterwards; bitwise equal to (a).
coar.engine.counterfactual_outputs() runs whichever the engine picks for the model, device and size.
Shapes: K masks, B examples, C components.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .components import ComponentGroup, ComponentSet
from .errors import CoarError, ComponentError, ShapeError

MODES = ("zero", "scale")


def unit_factors(keep, mode: str = "zero", gamma: float = 0.5) -> torch.Tensor:
    """Multiplier per component: 1 if kept, 0 (zero) or gamma (scale) if ablated. keep: [..., C]."""
    if mode not in MODES:
        raise CoarError(f"ablation mode must be one of {MODES}, got {mode!r}")
    if mode == "scale" and not 0.0 <= gamma <= 1.0:
        raise CoarError(f"ablation gamma must be in [0, 1], got {gamma}")
    keep = torch.as_tensor(np.asarray(keep) if not isinstance(keep, torch.Tensor) else keep)
    s = keep.to(torch.float32)
    if mode == "scale":
        s = s + (1.0 - s) * gamma
    return s


def _expand(s: torch.Tensor, group: ComponentGroup) -> torch.Tensor:
    """[..., units] -> [..., width] (each unit covers `block` contiguous features)."""
    if group.block == 1:
        return s
    return s.repeat_interleave(group.block, dim=-1)[..., : group.width]


def _module(model: nn.Module, group: ComponentGroup):
    name = group.module
    try:
        return model.get_submodule(name)
    except AttributeError:
        parent, _, leaf = name.rpartition(".")
        if leaf == "in_proj":
            try:
                mha = model.get_submodule(parent)
            except AttributeError:
                mha = None
            if isinstance(mha, nn.MultiheadAttention):
                return mha
        raise ComponentError(f"component group {name!r} is not a module of {type(model).__name__}") from None


def weight_slot(model: nn.Module, group: ComponentGroup) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """(weight parameter, dim indexing the group's features, bias or None) of a component group."""
    m = _module(model, group)
    if isinstance(m, nn.MultiheadAttention):
        return m.in_proj_weight, 0, m.in_proj_bias
    kinds = {c.__name__ for c in type(m).__mro__}
    if "Conv1D" in kinds:  # HF Conv1D: weight (in, out)
        return (m.weight, 0, None) if group.site == "input" else (m.weight, 1, m.bias)
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        return (m.weight, 1, None) if group.site == "input" else (m.weight, 0, m.bias)
    raise ComponentError(f"component group {group.module!r}: unsupported module type {type(m).__name__}")


@torch.no_grad()
def ablate_weights(model: nn.Module, cset: ComponentSet, keep, mode: str = "zero", gamma: float = 0.5,
                   inplace: bool = False) -> nn.Module:
    """Reference mechanism (a): scale the weight slices of ablated components. keep: [C] (1 = kept)."""
    s_all = unit_factors(keep, mode, gamma)
    if s_all.shape != (cset.size,):
        raise ShapeError(f"keep mask must have shape [{cset.size}], got {tuple(s_all.shape)}")
    target = model if inplace else copy.deepcopy(model)
    for i, group in enumerate(cset.groups):
        weight, dim, _ = weight_slot(target, group)
        s = _expand(s_all[cset.group_range(i)], group).to(weight.device, weight.dtype)
        shape = [1] * weight.dim()
        shape[dim] = group.width
        weight.mul_(s.view(shape))
    return target


def _scaler(t: torch.Tensor, s: torch.Tensor, bterm: torch.Tensor | None, chan_dim: int,
            inplace: bool = False) -> torch.Tensor:
    """Apply per-block factors s [K, W] (and additive bias term [K, W]) to t [K*B, ...].

    inplace: only for a module's own fresh output (never for an input, which other modules may share),
    and only when autograd does not need the original values.
    """
    K, W = s.shape
    if t.shape[0] % K:
        raise ShapeError(f"batch of {t.shape[0]} rows is not a multiple of the {K} masks in this pass")
    if t.shape[chan_dim] != W:
        raise ShapeError(f"hooked tensor of shape {tuple(t.shape)} has {t.shape[chan_dim]} features at dim "
                         f"{chan_dim}, component group expects {W}")
    s = s.to(t.dtype)
    # [K*B, ...] -> [K, B, ...] is a view for any strides (channels_last too); the factors broadcast over
    # every dim but the block and the feature dim, so no copy changes the tensor's memory format
    nd = t.dim()
    shape = [K] + [1] * nd
    shape[chan_dim % nd + 1] = W
    s_ = s.view(shape)
    b_ = None if bterm is None else bterm.to(t.dtype).view(shape)
    v = t.unflatten(0, (K, -1))
    if inplace and not (t.requires_grad and torch.is_grad_enabled()):
        v.mul_(s_)  # in place: no extra activation-sized allocation per hooked layer
        if b_ is not None:
            v.add_(b_)
        return t
    out = torch.addcmul(b_, v, s_) if b_ is not None else v * s_
    return out.flatten(0, 1)


#: Modules whose output depends on training mode: in it, they mix the masks of one pass or draw random numbers.
MODE_DEPENDENT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


def training_modules(model: nn.Module) -> list[str]:
    """Names of the BatchNorm and dropout modules (every kind: Dropout, Dropout1d/2d/3d, AlphaDropout...) that are
    in training mode."""
    return [n or type(m).__name__ for n, m in model.named_modules() if m.training and isinstance(m, MODE_DEPENDENT)]


def _check_eval(model: nn.Module) -> None:
    training = training_modules(model)
    if training:
        raise CoarError(f"model must be in eval mode for masked ablation (BatchNorm/dropout in training mode "
                        f"mixes masks across the batch or draws random numbers): {', '.join(training[:3])}"
                        f"{', ...' if len(training) > 3 else ''}; call model.eval()")


@torch.no_grad()
def check_deterministic(model: nn.Module, x: torch.Tensor, first: torch.Tensor | None = None) -> None:
    """Refuse a model whose unablated outputs differ between two passes on the same inputs `x` (`first`: the
    logits of a pass already made): attributions of a random function would be noise. Names the modules in
    training mode when there are any (a forward calling F.dropout(training=self.training), say)."""
    a = logits_of(model(x)) if first is None else first
    b = logits_of(model(x))
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        return  # not logits: the output function's own check reports it
    if torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5, equal_nan=True):
        return
    gap = float((a.float() - b.float()).abs().max())
    training = [n or type(m).__name__ for n, m in model.named_modules() if m.training]
    where = (f"modules in training mode: {', '.join(training[:3])}{', ...' if len(training) > 3 else ''}; call "
             "model.eval()" if training else "no module is in training mode, so its forward pass draws random "
             "numbers itself (torch.rand, F.dropout(training=True), ...); make it deterministic")
    raise CoarError(f"the model is not deterministic: two unablated passes on the same inputs differ by up to "
                    f"{gap:.3g} ({where})")


@contextlib.contextmanager
def ablation_hooks(model: nn.Module, cset: ComponentSet, keep, mode: str = "zero", gamma: float = 0.5):
    """Mechanism (b): while active, a forward over K*B rows applies keep-mask r to rows [r*B, (r+1)*B).

    keep: [K, C] (bool/0-1). Model must be in eval mode.
    """
    _check_eval(model)
    s_all = unit_factors(keep, mode, gamma)
    if s_all.dim() == 1:
        s_all = s_all[None]
    if s_all.dim() != 2 or s_all.shape[1] != cset.size:
        raise ShapeError(f"keep masks must have shape [K, {cset.size}], got {tuple(s_all.shape)}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    s_all = s_all.to(device)

    handles: list = []
    try:  # registration inside the try: a failure half-way still removes what was registered
        for i, group in enumerate(cset.groups):
            module = _module(model, group)
            if isinstance(module, nn.MultiheadAttention):
                raise ComponentError(
                    f"{group.module}: nn.MultiheadAttention's fused path skips hooks; convert the model with "
                    "coar.attention.make_hookable(model) first")
            s = _expand(s_all[:, cset.group_range(i)], group)
            _, _, bias = weight_slot(model, group)
            if group.site == "output":
                chan = 1 if isinstance(module, nn.Conv2d) else -1
                bterm = None if bias is None else bias.detach()[None, :] * (1.0 - s)

                def hook(mod, args, out, s=s, bterm=bterm, chan=chan):
                    return _scaler(out, s, bterm, chan, inplace=True)

                handles.append(module.register_forward_hook(hook))
            else:
                chan = 1 if isinstance(module, nn.Conv2d) else -1

                def pre_hook(mod, args, s=s, chan=chan):
                    return (_scaler(args[0], s, None, chan),) + tuple(args[1:])

                handles.append(module.register_forward_pre_hook(pre_hook))
        yield
    finally:
        for h in handles:
            h.remove()


def logits_of(out) -> torch.Tensor:
    """Model output -> logits tensor (HF models return objects with .logits)."""
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def surgery_outputs(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor, keep,
                    output_fn: Callable, mode: str = "zero", gamma: float = 0.5, batch_size: int = 256,
                    progress: bool = False) -> np.ndarray:
    """The reference loop of the authors' code: one weight-surgered copy and one pass set per mask. [M, N]."""
    keep = np.asarray(keep)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    out = np.empty((len(keep), len(inputs)), dtype=np.float32)
    for i in tqdm(range(len(keep)), desc="surgery", disable=not progress, leave=False):
        edited = ablate_weights(model, cset, keep[i], mode, gamma)
        for j in range(0, len(inputs), batch_size):
            x = inputs[j: j + batch_size].to(device)
            y = targets[j: j + batch_size].to(device)
            out[i, j: j + len(x)] = output_fn(logits_of(edited(x)), y).float().cpu().numpy()
    return out
