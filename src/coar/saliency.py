"""What a component responds to in the input: input-times-gradient saliency of one component's output (paper
App. D.4, Fig. 24, made there with Captum's InputXGradient).

`component_outputs` gives the outputs themselves, e.g. to measure how much a trigger shifts them.

A component's output is the sum of its feature map (conv filter: output channel over all positions; Linear
row: that output feature over all tokens). The saliency of an input pixel is input x d(output)/d(input), summed
over the input channels.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .components import ComponentSet
from .errors import CoarError


def component_saliency(model: nn.Module, cset: ComponentSet, component: int, inputs: torch.Tensor,
                       batch_size: int = 64) -> np.ndarray:
    """[N, H, W] input-x-gradient saliency of `component`'s summed output for normalised image inputs
    [N, C, H, W] (Captum's InputXGradient, summed over channels)."""
    try:
        from captum.attr import InputXGradient
    except ImportError as exc:  # pragma: no cover - captum is a dependency
        raise CoarError("saliency needs the captum package: pip install captum") from exc
    if inputs.ndim != 4:
        raise CoarError(f"saliency needs image inputs [N, C, H, W], got shape {tuple(inputs.shape)}")
    g, unit = cset.locate(int(component))
    group = cset.groups[g]
    if group.site != "output" or group.kind not in ("conv2d", "linear"):
        raise CoarError(f"saliency is defined for output units of conv2d / linear modules; component "
                        f"{cset.label(component)} is a {group.kind or 'custom'} {group.site} unit")
    module = model.get_submodule(group.module)
    dim = 1 if group.kind == "conv2d" else -1
    sl = group.unit_slice(unit)
    captured = {}

    def hook(mod, args, out):
        captured["out"] = out

    def forward(x):
        model(x)
        out = captured.pop("out")
        return out.narrow(dim, sl.start, sl.stop - sl.start).reshape(len(x), -1).sum(1)

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        ixg = InputXGradient(forward)
        parts = [ixg.attribute(inputs[i: i + batch_size].detach().clone().requires_grad_(True)).sum(1)
                 for i in range(0, len(inputs), batch_size)]
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(parts).detach().cpu().numpy()


def region_share(saliency: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    """[N] share of each map's absolute saliency inside the region (e.g. the trigger square)."""
    a = np.abs(saliency)
    total = a.sum((1, 2))
    inside = a[:, rows, cols].sum((1, 2))
    return np.divide(inside, total, out=np.zeros_like(total), where=total > 0)


def component_outputs(model: nn.Module, cset: ComponentSet, components, inputs: torch.Tensor,
                      batch_size: int = 256) -> np.ndarray:
    """[N, K] summed outputs (as in `component_saliency`) of the given components on the inputs."""
    located = [cset.locate(int(c)) for c in components]
    per_module: dict[str, list[tuple[int, int, slice]]] = {}
    for k, (g, unit) in enumerate(located):
        group = cset.groups[g]
        if group.site != "output" or group.kind not in ("conv2d", "linear"):
            raise CoarError(f"component {cset.label(int(components[k]))} is not an output unit of a conv2d / linear")
        per_module.setdefault(group.module, []).append((k, 1 if group.kind == "conv2d" else -1,
                                                        group.unit_slice(unit)))
    out = np.zeros((len(inputs), len(located)))
    handles, rows = [], {}

    def hook_for(name):
        def hook(mod, args, o):
            for k, dim, sl in per_module[name]:
                rows[k] = o.narrow(dim, sl.start, sl.stop - sl.start).reshape(len(o), -1).sum(1)
        return hook

    for name in per_module:
        handles.append(model.get_submodule(name).register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad():
            for i in range(0, len(inputs), batch_size):
                model(inputs[i: i + batch_size])
                for k, v in rows.items():
                    out[i: i + batch_size, k] = v.cpu().numpy()
    finally:
        for h in handles:
            h.remove()
    return out
