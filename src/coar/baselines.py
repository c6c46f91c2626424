"""Baseline component attributions (paper Sec. 4 "Baselines", App. A.3): LOO, GP, NC and II.

Every baseline returns an `Attributions` with bias 0 (App. A.3: "setting the bias term to zero and taking
the sum over attribution scores of components that are not ablated"), so the estimate of a counterfactual is
    g(z)(keep) = sum_j weights[z, j] * keep[j]          (keep[j] = 1 if component j is NOT ablated).

Sign convention. The paper writes the leave-one-out score as the ablation *effect* f(z, {c_j}) - f(z, {}).
Because our weights are coefficients on the KEEP indicator, a component whose ablation lowers the output
must get a positive coefficient, so every baseline here stores the NEGATED effect:
    LOO  w_j = f(z, {}) - f(z, {c_j})
    GP   w_j = -grad_{theta_cj} f(z) . delta_cj,   delta_cj = (gamma_eff - 1) * theta_cj
         (gamma_eff = 0 for mode "zero", gamma for mode "scale"), i.e. w_j = (1 - gamma_eff) grad . theta.
With these signs  sum_{j kept} w_j = const - sum_{j ablated} effect_j, the additive first-order estimate
of f(z, C'), up to a per-example constant that the correlation metric (paper eq. 6) ignores.
NC and II are importance scores (Captum LayerConductance / InternalInfluence) and are used as they are; every
layer's scores come from one integration per batch (_all_layers_integral), equal to Captum's per-layer ones.

Shapes: N examples, C components, B examples per batch.
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .ablation import _check_eval, _module, logits_of, unit_factors, weight_slot
from .engine import Engine
from .attributions import Attributions
from .components import ComponentGroup, ComponentSet
from .errors import CoarError, ComponentError, ShapeError

BASELINES = ("loo", "gp", "nc", "ii")


# --------------------------------------------------------------------------------------------------
# helpers
def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _check_inputs(cset: ComponentSet, inputs, targets) -> None:
    if len(inputs) != len(targets):
        raise ShapeError(f"inputs ({len(inputs)}) and targets ({len(targets)}) differ in length")
    if len(inputs) == 0:
        raise ShapeError("no examples: inputs is empty")
    if cset.size == 0:  # pragma: no cover - ComponentSet refuses empty sets
        raise ComponentError("empty component set")


def _gamma_eff(mode: str, gamma: float) -> float:
    """Weight multiplier of an ablated component (validates mode and gamma through unit_factors)."""
    return float(unit_factors(np.zeros((1,), dtype=bool), mode, gamma)[0])


def _hook_module(model: nn.Module, group: ComponentGroup) -> nn.Module:
    module = _module(model, group)
    if isinstance(module, nn.MultiheadAttention):
        raise ComponentError(
            f"{group.module}: nn.MultiheadAttention keeps in_proj as a bare parameter with no hook site; convert "
            "the model with coar.attention.make_hookable(model) first")
    return module


def _feature_dim(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Conv2d) else -1


def _per_feature(t: torch.Tensor, chan: int, width: int, batch: int, where: str) -> torch.Tensor:
    """[B, ...] with `width` features at dim `chan` -> [B, width], summing every other (position) dim."""
    if t.dim() < 2 or t.shape[0] != batch or t.shape[chan] != width:
        raise ShapeError(f"{where}: tensor of shape {tuple(t.shape)} does not have batch {batch} at dim 0 and "
                         f"{width} features at dim {chan}")
    if chan != -1 and chan != t.dim() - 1:
        t = t.movedim(chan, -1)
    return t.reshape(batch, -1, width).sum(1)


def _per_unit(t: torch.Tensor, group: ComponentGroup) -> torch.Tensor:
    """[B, width] -> [B, units]: a unit's score is the sum over the `block` features it covers."""
    if group.block == 1:
        return t
    pad = group.units * group.block - group.width
    if pad:
        t = torch.nn.functional.pad(t, (0, pad))
    return t.reshape(t.shape[0], group.units, group.block).sum(-1)


def _result(weights: np.ndarray, method: str, cset: ComponentSet, meta: dict) -> Attributions:
    weights = np.asarray(weights, dtype=np.float32)
    return Attributions(weights, np.zeros(weights.shape[0], np.float32), method, cset.fingerprint(),
                        {"components_name": cset.name, "n_examples": int(weights.shape[0]), **meta})


# --------------------------------------------------------------------------------------------------
# LOO
def loo(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor, output_fn: Callable,
        mode: str = "zero", gamma: float = 0.5, batch_size: int | None = None, masks_per_pass: int | None = None,
        progress: bool = True, chunk: int | None = None, n_components: int | None = None,
        seed: int = 0) -> Attributions:
    """Leave-one-out: w_j = f(z, {}) - f(z, {c_j}) for every component j and example z.

    n_components: measure only this many components, drawn at random (seeded); the others get 0 and the
    result's meta lists the measured ones ("measured"). It bounds the cost (one forward pass per component and
    example) where a full leave-one-out is not affordable; None measures every component.

    This is the NEGATIVE of the paper's ablation effect f(z, {c_j}) - f(z, {}) (App. A.3), because the
    weights are coefficients on the keep indicator (see the module docstring). Uses C + 1 masked forwards
    per example through one coar.engine.Engine (batch_size, masks_per_pass: the engine's unless given); the C
    single-ablation masks are built `chunk` at a time so memory stays O(chunk * C).
    """
    _check_inputs(cset, inputs, targets)
    _gamma_eff(mode, gamma)
    C, N = cset.size, len(inputs)
    if n_components is not None and not 1 <= int(n_components):
        raise CoarError(f"n_components must be at least 1, got {n_components}")
    engine = Engine(model, cset, inputs, targets, output_fn, mode, gamma, batch_size=batch_size,
                    masks_per_pass=masks_per_pass)
    chunk = int(chunk) if chunk else max(engine.plan.masks_per_pass, 256)
    measured = np.arange(C) if n_components is None or n_components >= C else np.sort(
        np.random.default_rng(seed).choice(C, int(n_components), replace=False))
    full = engine(np.ones((1, C), dtype=bool))[0]  # [N]
    weights = np.zeros((N, C), dtype=np.float32)
    with tqdm(total=len(measured), desc="leave-one-out", disable=not progress, leave=False) as bar:
        for start in range(0, len(measured), chunk):
            idx = measured[start:start + chunk]
            keep = np.ones((len(idx), C), dtype=bool)
            keep[np.arange(len(idx)), idx] = False
            out = engine(keep)  # [len(idx), N]
            weights[:, idx] = (full[None, :] - out).T
            bar.update(len(idx))
    meta = {"mode": mode, "gamma": gamma if mode == "scale" else 0.0}
    if len(measured) < C:
        meta.update(measured=measured.tolist(), seed=int(seed))
    return _result(weights, "loo", cset, meta)


# --------------------------------------------------------------------------------------------------
# GP
def grad_times_param(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor,
                     output_fn: Callable, mode: str = "zero", gamma: float = 0.5, batch_size: int = 256,
                     progress: bool = True) -> Attributions:
    """Gradient-times-parameter: first-order Taylor estimate of the LOO effect, negated (module docstring).

    effect_j = grad_{theta_cj} f(z) . delta_cj with delta_cj = (gamma_eff - 1) theta_cj;  w_j = -effect_j.

    One forward + backward per batch gives every example's score at once. Examples are independent in eval
    mode, so the gradient of sum_z f(z) w.r.t. an example's activation is that example's gradient, and
    grad_theta . theta is computed from activations:
      * output unit j (weight row / filter):  sum over positions of  df/dy_j * (y_j - b_j)
      * input unit i (Linear/Conv column, HF Conv1D row):  sum over positions of  x_i * df/dx_i, where the
        gradient flows through THIS module only (the pre-hook hands the module a fresh copy x + 0).
    Each hook site adds a zero leaf tensor e (y + e) whose gradient is df/dy, even if later code modifies the
    activation in place. A module called several times contributes the sum over calls (shared weights).
    """
    _check_inputs(cset, inputs, targets)
    _check_eval(model)
    scale = 1.0 - _gamma_eff(mode, gamma)
    device = _device(model)
    N = len(inputs)
    weights = np.zeros((N, cset.size), dtype=np.float32)
    modules = [_hook_module(model, g) for g in cset.groups]
    biases = [weight_slot(model, g)[2] if g.site == "output" else None for g in cset.groups]

    for j in tqdm(range(0, N, batch_size), desc="grad x param", disable=not progress, leave=False):
        x = inputs[j: j + batch_size].to(device)
        y = targets[j: j + batch_size].to(device)
        B = len(x)
        records: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (group, zero leaf e, value)
        handles = []
        try:
            for gi, (group, module) in enumerate(zip(cset.groups, modules)):
                chan = _feature_dim(module)
                if group.site == "output":
                    def hook(mod, args, out, gi=gi, chan=chan, bias=biases[gi]):
                        if not isinstance(out, torch.Tensor):
                            raise ComponentError(f"{cset.groups[gi].module}: output site needs a tensor output")
                        e = torch.zeros_like(out, requires_grad=True)
                        val = out.detach()
                        if bias is not None:
                            shape = [1] * out.dim()
                            shape[chan] = -1
                            val = val - bias.detach().to(val.dtype).view(shape)
                        records.append((gi, e, val))
                        return out + e

                    handles.append(module.register_forward_hook(hook))
                else:
                    def pre_hook(mod, args, gi=gi):
                        e = torch.zeros_like(args[0], requires_grad=True)
                        fresh = args[0] + e  # consumed by this module only
                        records.append((gi, e, fresh.detach()))
                        return (fresh,) + tuple(args[1:])

                    handles.append(module.register_forward_pre_hook(pre_hook))
            with torch.enable_grad():
                f = output_fn(logits_of(model(x)), y)
                if f.shape != (B,):
                    raise ShapeError(f"output_fn must return one value per example [{B}], got {tuple(f.shape)}")
                if not records:
                    raise ComponentError("no component module ran in the forward pass")
                grads = torch.autograd.grad(f.sum(), [r[1] for r in records], allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        scores = [None] * len(cset.groups)
        for (gi, _, val), g in zip(records, grads):
            if g is None:
                continue
            group = cset.groups[gi]
            s = _per_feature((g * val).float(), _feature_dim(modules[gi]), group.width, B, group.module)
            scores[gi] = s if scores[gi] is None else scores[gi] + s
        for gi, group in enumerate(cset.groups):
            if scores[gi] is not None:
                weights[j: j + B, cset.group_range(gi)] = (scale * _per_unit(scores[gi], group)).cpu().numpy()
    return _result(weights, "gp", cset, {"mode": mode, "gamma": gamma if mode == "scale" else 0.0})


# --------------------------------------------------------------------------------------------------
# NC / II (Captum)
def _measured_groups(n_groups_total: int, n_groups: int | None) -> list[int]:
    """Every group (None), or n_groups of them evenly spaced from the first to the last."""
    if n_groups is None or n_groups >= n_groups_total:
        return list(range(n_groups_total))
    if int(n_groups) < 1:
        raise CoarError(f"n_groups must be at least 1 (or None for every group), got {n_groups}")
    return sorted({int(round(v)) for v in np.linspace(0, n_groups_total - 1, int(n_groups))})


def _captum_layer_scores(kind: str, model, cset, inputs, targets, output_fn, n_steps, batch_size,
                         internal_batch_size, method, progress, n_groups=None, per_layer: bool = False) -> Attributions:
    """NC ("nc") or II ("ii") scores of the measured groups.

    per_layer=False (the default): every measured group from ONE integration per batch of examples
    (_all_layers_integral): a forward and a backward pass over the interpolated inputs give the gradient of
    f with respect to every layer's activation at once, whereas Captum's LayerConductance / InternalInfluence
    take one layer each and so repeat the whole integration once per group. per_layer=True calls Captum once
    per group and batch (the reference the tests compare the one-pass path with).
    """
    _check_inputs(cset, inputs, targets)
    _check_eval(model)
    if not torch.is_tensor(inputs) or not inputs.is_floating_point():
        raise CoarError(
            f"{kind.upper()} (Captum {'LayerConductance' if kind == 'nc' else 'InternalInfluence'}) integrates "
            "along a path from a zero baseline to the input and so needs continuous inputs; integer token ids "
            f"(dtype {getattr(inputs, 'dtype', type(inputs).__name__)}) cannot be interpolated. The paper reports "
            "no NC/II baselines for language models: use LOO or GP there")
    try:
        from captum.attr import InternalInfluence, LayerConductance
        from captum.attr._utils.approximation_methods import approximation_parameters
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise CoarError("NC and II need the captum package: pip install captum") from exc
    cls = LayerConductance if kind == "nc" else InternalInfluence
    device = _device(model)

    def forward_func(x, y):
        out = output_fn(logits_of(model(x)), y)
        return out.float()

    N = len(inputs)
    weights = np.zeros((N, cset.size), dtype=np.float32)
    modules = [_hook_module(model, g) for g in cset.groups]
    measured = _measured_groups(len(cset.groups), n_groups)

    def store(gi, j, attr, B):
        group, module = cset.groups[gi], modules[gi]
        s = _per_feature(attr.detach().float(), _feature_dim(module), group.width, B, group.module)
        weights[j: j + B, cset.group_range(gi)] = _per_unit(s, group).cpu().numpy()

    if per_layer:
        steps = [(gi, j) for gi in measured for j in range(0, N, batch_size)]
        for gi, j in tqdm(steps, desc=kind, disable=not progress, leave=False):
            x = inputs[j: j + batch_size].to(device)
            y = targets[j: j + batch_size].to(device)
            attr = cls(forward_func, modules[gi]).attribute(
                x, baselines=torch.zeros_like(x), additional_forward_args=(y,), n_steps=n_steps, method=method,
                internal_batch_size=internal_batch_size, attribute_to_layer_input=cset.groups[gi].site == "input")
            if isinstance(attr, tuple):
                attr = attr[0]
            store(gi, j, attr, len(x))
    else:
        if int(n_steps) < 1:
            raise CoarError(f"n_steps must be at least 1, got {n_steps}")
        try:
            step_sizes_func, alphas_func = approximation_parameters(method)
        except ValueError as exc:
            raise CoarError(f"{kind.upper()}: {exc}") from None
        # one site per (module, site): two groups on one module and site share it
        sites = {gi: (id(modules[gi]), cset.groups[gi].site) for gi in measured}
        hooked = {key: (modules[gi], key[1]) for gi, key in sites.items()}
        for j in tqdm(range(0, N, batch_size), desc=kind, disable=not progress, leave=False):
            x = inputs[j: j + batch_size].to(device)
            y = targets[j: j + batch_size].to(device)
            attrs = _all_layers_integral(kind, forward_func, hooked, x, y, int(n_steps), internal_batch_size,
                                         step_sizes_func, alphas_func)
            for gi in measured:
                store(gi, j, attrs[sites[gi]], len(x))
    meta = {"n_steps": n_steps, "method": method, "baseline": "zeros"}
    if len(measured) < len(cset.groups):
        meta["measured_groups"] = [cset.groups[gi].module for gi in measured]
    return _result(weights, kind, cset, meta)


def _all_layers_integral(kind: str, forward_func: Callable, hooked: dict, x: torch.Tensor, y: torch.Tensor,
                         n_steps: int, internal_batch_size: int | None, step_sizes_func, alphas_func) -> dict:
    """Captum's LayerConductance ("nc") / InternalInfluence ("ii") of every hooked site, in one integration.

    hooked: {key: (module, site)}; returns {key: attribution shaped like that site's tensor [B, ...]}.
    Mirrors Captum 0.9 (layer_conductance.py, internal_influence.py, _utils/batching.py,
    _utils/gradient.compute_layer_gradients_and_eval) with a zero baseline:
      * inputs  baseline + alpha (x - baseline) for alpha in alphas, concatenated along dim 0, requires_grad;
        the targets repeated once per alpha;
      * nc: alphas_func(n_steps + 1) points; sum over consecutive points of (a[k+1] - a[k]) * df/da[k],
        a = the site's activation;
      * ii: step_sizes_func(n_steps), alphas_func(n_steps); sum over points of step_size * df/da;
      * a site is the module's output (forward hook) or its first input (forward pre-hook, Captum's
        attribute_to_layer_input); the hook keeps the tensor, hands the network a clone (so later in-place
        operations leave it intact) and, for a module called several times, keeps the LAST call, as Captum's
        hook does; df/da is torch.autograd.grad of the unbound outputs;
      * internal_batch_size: the points in chunks of max(1, internal_batch_size // B) (at least 2 for nc,
        which differences consecutive points), as Captum's _batch_attribution; consecutive nc chunks share
        their boundary point, which Captum evaluates twice and this function once (carried over).
    Captum's multi-layer helper (compute_layer_gradients_and_eval with a list of layers) is private, unused by
    Captum itself and takes one attribute_to_layer_input for all layers, so the hooks are written out here.
    """
    B = len(x)
    conductance = kind == "nc"
    points = n_steps + 1 if conductance else n_steps
    alphas = alphas_func(points)
    step_sizes = None if conductance else step_sizes_func(points)
    per_pass = points
    if internal_batch_size is not None:
        if internal_batch_size < B:
            warnings.warn(f"Internal batch size cannot be less than the number of input examples. Defaulting to "
                          f"internal batch size of {B} equal to the number of examples.", stacklevel=3)
        per_pass = max(1, internal_batch_size // B)
        if conductance and per_pass < 2:
            per_pass = 2
            warnings.warn("This method computes finite differences between evaluations at consecutive steps, so "
                          f"internal batch size must be at least twice the number of examples. Defaulting to "
                          f"internal batch size of {2 * B} equal to twice the number of examples.", stacklevel=3)
    # Captum's chunks of points [start, end); for nc consecutive chunks share a point, evaluated here once
    chunks, start = [], 0
    while start < points:
        end = min(start + per_pass, points)
        chunks.append((start + (1 if conductance and chunks else 0), end))
        start = end - 1 if conductance and end < points else end
    base = torch.zeros_like(x)
    total: dict = {}
    carried: dict = {}  # nc: the previous chunk's last point (activation, gradient) per site
    for lo, hi in chunks:
        P = hi - lo
        scaled = torch.cat([base + alpha * (x - base) for alpha in alphas[lo:hi]], dim=0).requires_grad_()
        evals, grads = _site_gradients_and_evals(forward_func, hooked, scaled, torch.cat([y] * P, dim=0))
        for key in hooked:
            ev, gr = evals[key].detach(), grads[key]
            if conductance:
                if key in carried:
                    ev, gr = torch.cat([carried[key][0], ev]), torch.cat([carried[key][1], gr])
                carried[key] = (ev[-B:], gr[-B:])
                n = len(ev) // B - 1
                cur = ((ev[B:] - ev[:-B]) * gr[:-B]).reshape((n, B) + tuple(ev.shape[1:])).sum(0)
            else:
                sizes = torch.tensor(step_sizes[lo:hi]).view(P, 1).to(gr.device)
                cur = (gr.contiguous().view(P, -1) * sizes).reshape((P, B) + tuple(gr.shape[1:])).sum(0)
            total[key] = cur if key not in total else total[key] + cur
    return total


def _site_gradients_and_evals(forward_func: Callable, hooked: dict, scaled: torch.Tensor,
                              y: torch.Tensor) -> tuple[dict, dict]:
    """One forward and one backward pass: {key: activation} and {key: df/d activation} of every hooked site
    (module output, or its first input for site "input"), as Captum's compute_layer_gradients_and_eval."""
    saved: dict = {}
    handles = []

    def keep(key, t):
        if not isinstance(t, torch.Tensor):
            raise ComponentError(f"{type(hooked[key][0]).__name__}: the {hooked[key][1]} site needs a tensor")
        if t.is_floating_point() and not t.requires_grad:
            t.requires_grad_()
        saved[key] = t  # a module called again overwrites it: the last call counts, as in Captum
        return t.clone()

    try:
        for key, (module, site) in hooked.items():
            if site == "output":
                handles.append(module.register_forward_hook(lambda mod, args, out, key=key: keep(key, out)))
            else:
                handles.append(module.register_forward_pre_hook(
                    lambda mod, args, key=key: (keep(key, args[0]),) + tuple(args[1:])))
        with torch.autograd.set_grad_enabled(True):
            out = forward_func(scaled, y)
            if out.shape != (len(scaled),):
                raise ShapeError(f"output_fn must return one value per example [{len(scaled)}], got "
                                 f"{tuple(out.shape)}")
            missing = [k for k in hooked if k not in saved]
            if missing:
                raise ComponentError(f"{', '.join(type(hooked[k][0]).__name__ for k in missing)}: module did not "
                                     "run in the forward pass")
            keys = list(hooked)
            grads = torch.autograd.grad(torch.unbind(out), [saved[k] for k in keys])
    finally:
        for h in handles:
            h.remove()
    return saved, dict(zip(keys, grads))


def neuron_conductance(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor,
                       output_fn: Callable, n_steps: int = 20, batch_size: int = 64,
                       internal_batch_size: int | None = None, method: str = "gausslegendre",
                       progress: bool = True, n_groups: int | None = None) -> Attributions:
    """Neuron conductance [DSY18]: captum.attr.LayerConductance of each group's module.

    forward_func is f(z) (output_fn on the logits with the example's target), baseline input zeros. The layer's
    output (site "output") or input (site "input", attribute_to_layer_input=True) conductance is summed over
    positions to one score per feature and over a unit's block. Continuous inputs only (CoarError otherwise).
    Every group comes from one integration per batch of examples (one forward and one backward pass over the
    n_steps + 1 interpolated inputs, in chunks of internal_batch_size rows), with Captum's formula and
    quadrature written out (_all_layers_integral); Captum itself would integrate once per group.
    n_groups: attribute only this many component groups (layers), evenly spaced; the others get 0 and meta
    lists the measured ones (it saves the per-layer arithmetic and memory, no longer whole passes).
    """
    return _captum_layer_scores("nc", model, cset, inputs, targets, output_fn, n_steps, batch_size,
                                internal_batch_size, method, progress, n_groups)


def internal_influence(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor,
                       output_fn: Callable, n_steps: int = 20, batch_size: int = 64,
                       internal_batch_size: int | None = None, method: str = "gausslegendre",
                       progress: bool = True, n_groups: int | None = None) -> Attributions:
    """Internal influence [LSD+18]: captum.attr.InternalInfluence of each group's module, all groups in one
    integration per batch (n_steps points); aggregation as in neuron_conductance."""
    return _captum_layer_scores("ii", model, cset, inputs, targets, output_fn, n_steps, batch_size,
                                internal_batch_size, method, progress, n_groups)


_FUNCS = {"loo": loo, "gp": grad_times_param, "nc": neuron_conductance, "ii": internal_influence}


def compute_baseline(name: str, model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor,
                     output_fn: Callable, **kwargs) -> Attributions:
    """Dispatch by name: "loo" | "gp" | "nc" | "ii"; kwargs go to that function."""
    key = str(name).lower()
    if key not in _FUNCS:
        raise CoarError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return _FUNCS[key](model, cset, inputs, targets, output_fn, **kwargs)


__all__ = ["BASELINES", "loo", "grad_times_param", "neuron_conductance", "internal_influence", "compute_baseline"]
