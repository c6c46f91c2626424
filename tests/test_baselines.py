"""Baselines (LOO, GP, NC, II) against independent references: weight surgery, per-example autograd, Captum."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from coar.ablation import logits_of, surgery_outputs, weight_slot
from coar.baselines import (compute_baseline, grad_times_param, internal_influence, loo, neuron_conductance)
from coar.components import ComponentGroup, ComponentSet, Rule, component_set
from coar.errors import CoarError
from coar.paper.models import build_model
from coar.outputs import class_logit, margin, token_margin
from tests.helpers import assert_no_hooks, randomize_bn





@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = randomize_bn(build_model("resnet_small", in_channels=1, image_size=16))
    cset = component_set(model, "resnet_small")
    x, y = torch.randn(4, 1, 16, 16), torch.tensor([0, 3, 5, 9])
    return model, cset, x, y


def surgery_loo(model, cset, x, y, idx, output_fn, mode="zero", gamma=0.5):
    """Reference LOO (keep convention): f(z, {}) - f(z, {c_j}) by weight surgery, [N, len(idx)]."""
    keep = np.ones((len(idx) + 1, cset.size), bool)
    keep[np.arange(1, len(idx) + 1), idx] = False
    out = surgery_outputs(model, cset, x, y, keep, output_fn, mode, gamma)
    return (out[0][None, :] - out[1:]).T


def pick(cset, seed=0, per_group=2):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.arange(cset.offsets[i], cset.offsets[i + 1]), per_group, replace=False)
                           for i in range(len(cset.groups))])


# ---------------------------------------------------------------- LOO
@pytest.fixture(scope="module")
def resnet_loo(resnet):
    """LOO on the ResNet in both modes (computed once; batch and mask chunks deliberately uneven)."""
    model, cset, x, y = resnet
    return {mode: loo(model, cset, x, y, margin, mode=mode, gamma=0.5, batch_size=3, masks_per_pass=40,
                      progress=False, chunk=64) for mode in ("zero", "scale")}


@pytest.mark.parametrize("mode", ["zero", "scale"])
def test_loo_equals_surgery(resnet, resnet_loo, mode):
    model, cset, x, y = resnet
    att = resnet_loo[mode]
    assert att.weights.shape == (4, cset.size) and att.method == "loo"
    assert att.components == cset.fingerprint() and np.all(att.bias == 0)
    idx = pick(cset)
    ref = surgery_loo(model, cset, x, y, idx, margin, mode, 0.5)
    np.testing.assert_allclose(att.weights[:, idx], ref, rtol=1e-5, atol=1e-5)
    assert np.abs(ref).max() > 1e-3  # ablations really change the output
    assert_no_hooks(model)


def test_loo_scale_is_not_zero(resnet_loo):
    assert np.abs(resnet_loo["scale"].weights - resnet_loo["zero"].weights).max() > 1e-3


# ---------------------------------------------------------------- GP
def explicit_gp(model, cset, x, y, output_fn, mode="zero", gamma=0.5):
    """Per example: torch.autograd.grad of f(z) w.r.t. each weight parameter, dotted with the ablation delta."""
    g_eff = 0.0 if mode == "zero" else gamma
    out = np.zeros((len(x), cset.size), np.float64)
    params = [weight_slot(model, g) for g in cset.groups]
    for n in range(len(x)):
        f = output_fn(logits_of(model(x[n: n + 1])), y[n: n + 1]).sum()
        grads = torch.autograd.grad(f, [w for w, _, _ in params])
        for gi, (group, (w, dim, _), g) in enumerate(zip(cset.groups, params, grads)):
            prod = (g * (g_eff - 1.0) * w.detach()).double().movedim(dim, 0).reshape(group.width, -1).sum(1)
            for u in range(group.units):
                out[n, cset.offsets[gi] + u] = -prod[group.unit_slice(u)].sum()
    return out


def assert_rel_close(a, b, rtol=1e-4):
    scale = np.abs(b).max()
    assert scale > 1e-6
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("mode", ["zero", "scale"])
def test_gp_conv_resnet(resnet, mode):
    model, cset, x, y = resnet
    att = grad_times_param(model, cset, x, y, margin, mode=mode, gamma=0.3, batch_size=3, progress=False)
    assert att.method == "gp" and np.all(att.bias == 0)
    assert_rel_close(att.weights, explicit_gp(model, cset, x, y, margin, mode, 0.3))
    assert_no_hooks(model)
    assert all(p.grad is None for p in model.parameters())  # no side effect on .grad


def test_gp_linear_rows_with_bias():
    torch.manual_seed(2)
    model = build_model("mlp", in_channels=1, image_size=8)
    with torch.no_grad():
        model.fc1.bias.normal_()
    cset = component_set(model, "mlp")
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([1, 2, 3, 4, 5])
    att = grad_times_param(model, cset, x, y, margin, batch_size=4, progress=False)
    assert_rel_close(att.weights, explicit_gp(model, cset, x, y, margin))


def test_gp_gpt2_conv1d_input_rows():
    torch.manual_seed(4)
    model = build_model("gpt2_tiny")
    cset = component_set(model, "gpt2_tiny")
    tokens = torch.randint(0, 512, (3, 10))
    att = grad_times_param(model, cset, tokens, tokens, token_margin, batch_size=2, progress=False)
    ref = explicit_gp(model, cset, tokens, tokens, token_margin)
    assert_rel_close(att.weights, ref)
    assert_no_hooks(model)


def test_gp_blocks_and_output_site_linear():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 7), nn.Tanh(), nn.Linear(7, 3))
    model.eval()
    cset = ComponentSet([ComponentGroup("1", "output", 4, 10, 3, "linear"),
                         ComponentGroup("3", "input", 4, 10, 3, "linear"),
                         ComponentGroup("5", "input", 7, 7, 1, "linear")])
    x, y = torch.randn(6, 12), torch.randint(0, 3, (6,))
    att = grad_times_param(model, cset, x, y, margin, progress=False)
    assert_rel_close(att.weights, explicit_gp(model, cset, x, y, margin))


def test_gp_vit_attention_and_inplace_activation():
    torch.manual_seed(8)
    vit = build_model("vit_small", in_channels=1, image_size=28)  # hookable attention: in_proj is a Linear
    with torch.no_grad():
        vit.heads.head.weight.normal_(0, 0.2)  # torchvision zero-initialises the head
    cset = component_set(vit, "vit_small")
    assert any(g.module.endswith("self_attention.in_proj") for g in cset.groups)
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    assert_rel_close(grad_times_param(vit, cset, x, y, margin, progress=False).weights,
                     explicit_gp(vit, cset, x, y, margin))
    # an in-place activation right after an output-site module must not corrupt values or gradients
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 4)).eval()
    cset = component_set(net, [Rule("0", ("Linear",))])
    x, y = torch.randn(5, 6), torch.randint(0, 4, (5,))
    assert_rel_close(grad_times_param(net, cset, x, y, margin, progress=False).weights,
                     explicit_gp(net, cset, x, y, margin))


def linear_model():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[1].bias.normal_()
    return model, torch.randn(5, 4, 4), torch.zeros(5, dtype=torch.long)


@pytest.mark.parametrize("site", ["output", "input"])
@pytest.mark.parametrize("mode", ["zero", "scale"])
def test_gp_equals_loo_when_linear_in_each_slice(site, mode):
    model, x, y = linear_model()
    cset = component_set(model, [Rule("1", ("Linear",), site=site)])
    out_fn = class_logit(1)
    gp = grad_times_param(model, cset, x, y, out_fn, mode=mode, gamma=0.25, progress=False).weights
    lo = loo(model, cset, x, y, out_fn, mode=mode, gamma=0.25, progress=False).weights
    np.testing.assert_allclose(gp, lo, rtol=1e-5, atol=1e-5)
    assert np.abs(lo).max() > 1e-2


def test_gp_differs_from_loo_when_nonlinear(resnet, resnet_loo):
    model, cset, x, y = resnet
    gp = grad_times_param(model, cset, x, y, margin, progress=False).weights
    lo = resnet_loo["zero"].weights
    assert np.abs(gp - lo).max() > 1e-3  # the equality above is not a tautology


# ---------------------------------------------------------------- NC / II
def small_cnn():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 5 * 5, 5)).eval()
    return model, torch.randn(3, 2, 5, 5), torch.tensor([0, 2, 4])


@pytest.mark.parametrize("name", ["nc", "ii"])
def test_captum_aggregation_matches_direct_captum(name):
    from captum.attr import InternalInfluence, LayerConductance

    model, x, y = small_cnn()
    cset = ComponentSet([ComponentGroup("0", "output", 3, 6, 2, "conv2d"),
                         ComponentGroup("2", "input", 6, 6, 1, "conv2d"),
                         ComponentGroup("5", "input", 100, 100, 1, "linear")])
    att = compute_baseline(name, model, cset, x, y, margin, n_steps=10, batch_size=2, progress=False)
    assert att.weights.shape == (3, cset.size) and att.method == name and np.all(att.bias == 0)
    cls = LayerConductance if name == "nc" else InternalInfluence

    def direct(layer, to_input):
        return cls(lambda inp, t: margin(model(inp), t), layer).attribute(
            x, baselines=torch.zeros_like(x), additional_forward_args=(y,), n_steps=10,
            attribute_to_layer_input=to_input).detach()

    a0 = direct(model[0], False).sum((2, 3)).view(3, 3, 2).sum(-1)  # blocks of 2 channels
    a2 = direct(model[2], True).sum((2, 3))
    a5 = direct(model[5], True)
    ref = torch.cat([a0, a2, a5], 1).numpy()
    np.testing.assert_allclose(att.weights, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert np.abs(ref).max() > 1e-3
    assert_no_hooks(model)


def test_conductance_completeness_on_mlp():
    torch.manual_seed(5)
    model = build_model("mlp", in_channels=1, image_size=6)
    with torch.no_grad():
        model.fc1.bias.normal_(0, 0.1)
    cset = component_set(model, "mlp")  # fc1 rows: every path from input to output crosses them
    x, y = torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 3])
    att = neuron_conductance(model, cset, x, y, margin, n_steps=200, progress=False)
    with torch.no_grad():
        gap = (margin(model(x), y) - margin(model(torch.zeros_like(x)), y)).numpy()
    total = att.weights.sum(1)
    np.testing.assert_allclose(total, gap, rtol=0.05, atol=0.02 * np.abs(gap).max())
    assert np.abs(gap).max() > 0.05


def test_nc_ii_shapes_on_resnet(resnet):
    model, cset, x, y = resnet
    for fn in (neuron_conductance, internal_influence):
        att = fn(model, cset, x[:2], y[:2], margin, n_steps=4, progress=False)
        assert att.weights.shape == (2, cset.size) and np.isfinite(att.weights).all()
        assert np.abs(att.weights).max() > 0
    assert_no_hooks(model)


@pytest.mark.parametrize("name", ["nc", "ii"])
def test_nc_ii_refuse_token_inputs(name):
    model = build_model("gpt2_tiny")
    cset = component_set(model, "gpt2_tiny")
    tokens = torch.randint(0, 512, (2, 6))
    with pytest.raises(CoarError, match="continuous"):
        compute_baseline(name, model, cset, tokens, tokens, token_margin, progress=False)


def test_compute_baseline_dispatch_and_errors(resnet):
    model, cset, x, y = resnet
    a = compute_baseline("gp", model, cset, x[:2], y[:2], margin, progress=False)
    b = grad_times_param(model, cset, x[:2], y[:2], margin, progress=False)
    np.testing.assert_array_equal(a.weights, b.weights)
    with pytest.raises(CoarError, match="unknown baseline"):
        compute_baseline("shap", model, cset, x, y, margin)
    with pytest.raises(CoarError, match="gamma"):
        loo(model, cset, x, y, margin, mode="scale", gamma=1.5, progress=False)
    with pytest.raises(CoarError):
        grad_times_param(model, cset, x, y[:2], margin, progress=False)


def test_loo_on_a_subset_measures_those_components_exactly_and_no_others(resnet, resnet_loo):
    model, cset, x, y = resnet
    sub = loo(model, cset, x, y, margin, n_components=7, seed=3, progress=False)
    measured = np.asarray(sub.meta["measured"])
    assert len(measured) == 7 and len(set(measured.tolist())) == 7
    np.testing.assert_allclose(sub.weights[:, measured], resnet_loo["zero"].weights[:, measured], rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(cset.size), measured)
    assert np.all(sub.weights[:, others] == 0) and np.abs(sub.weights[:, measured]).max() > 1e-3
    again = loo(model, cset, x, y, margin, n_components=7, seed=3, progress=False)
    assert again.meta["measured"] == sub.meta["measured"]
    assert "measured" not in loo(model, cset, x, y, margin, n_components=cset.size, progress=False).meta


@pytest.mark.parametrize("fn", [neuron_conductance, internal_influence])
def test_nc_ii_on_a_subset_of_layers_equal_the_full_run_on_those_layers(resnet, fn):
    model, cset, x, y = resnet
    full = fn(model, cset, x, y, margin, n_steps=3, progress=False)
    sub = fn(model, cset, x, y, margin, n_steps=3, n_groups=2, progress=False)
    names = [g.module for g in cset.groups]
    assert sub.meta["measured_groups"] == [names[0], names[-1]]  # evenly spaced: the first and the last
    for gi, group in enumerate(cset.groups):
        cols = cset.group_range(gi)
        if group.module in sub.meta["measured_groups"]:
            np.testing.assert_allclose(sub.weights[:, cols], full.weights[:, cols], rtol=1e-5, atol=1e-7)
            assert np.abs(sub.weights[:, cols]).max() > 0
        else:
            assert np.all(sub.weights[:, cols] == 0)
    assert "measured_groups" not in fn(model, cset, x, y, margin, n_steps=3, n_groups=len(names),
                                       progress=False).meta
    with pytest.raises(CoarError, match="n_groups must be at least 1"):
        fn(model, cset, x, y, margin, n_groups=0, progress=False)


# ---------------------------------------------------------------- NC / II: one integration for every layer
def _paper_model(name):
    torch.manual_seed(21)
    size = {"resnet_tiny": 16, "vit_tiny": 28, "mlp_small": 8}[name]
    model = randomize_bn(build_model(name, in_channels=1, image_size=size))
    if name == "vit_tiny":
        with torch.no_grad():
            model.heads.head.weight.normal_(0, 0.2)  # torchvision zero-initialises the head
    x = torch.randn(3, 1, size, size)
    return model, component_set(model, name), x, torch.tensor([1, 4, 7])


def assert_scores_close(a, b):
    scale = np.abs(b).max()
    assert scale > 1e-4
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("kind", ["nc", "ii"])
@pytest.mark.parametrize("name", ["resnet_tiny", "vit_tiny", "mlp_small"])
def test_nc_ii_one_pass_equals_captum_per_layer(name, kind):
    """All groups from one integration per batch give Captum's per-layer numbers: every group, a subset of the
    groups, and with the interpolated rows in chunks (internal_batch_size; uneven batches of examples)."""
    from coar.baselines import _captum_layer_scores

    model, cset, x, y = _paper_model(name)
    if name == "vit_tiny":  # the weight rows of the attention in-projection, its out-projection and the MLP
        assert {g.module.rsplit(".", 1)[-1] for g in cset.groups} == {"in_proj", "out_proj", "0", "3"}
    n_sub = 3 if len(cset.groups) > 3 else None
    for kw in ({}, {"n_groups": n_sub, "internal_batch_size": 5}):
        args = (kind, model, cset, x, y, margin, 4, 2, kw.get("internal_batch_size"), "gausslegendre", False,
                kw.get("n_groups"))
        new = _captum_layer_scores(*args)
        ref = _captum_layer_scores(*args, per_layer=True)
        assert new.meta == ref.meta and new.method == ref.method == kind
        assert_scores_close(new.weights, ref.weights)
        if kw.get("n_groups") and len(cset.groups) > 3:
            assert len(new.meta["measured_groups"]) == 3
            measured = np.zeros(cset.size, bool)
            for gi, g in enumerate(cset.groups):
                measured[cset.group_range(gi)] = g.module in new.meta["measured_groups"]
            assert np.all(new.weights[:, ~measured] == 0) and np.abs(new.weights[:, measured]).max() > 0
    assert_no_hooks(model)


class _Twice(nn.Module):
    """lin1 runs twice (shared weights) and carries groups at both sites; an in-place ReLU follows lin2."""

    def __init__(self):
        super().__init__()
        self.lin1, self.lin2, self.lin3 = nn.Linear(6, 6), nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x):
        h = torch.tanh(self.lin1(x))
        h = torch.tanh(self.lin1(h)) + h
        return self.lin3(torch.relu_(self.lin2(h)))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
@pytest.mark.parametrize("kind", ["nc", "ii"])
def test_nc_ii_one_pass_on_shared_modules_mixed_sites_and_repeated_calls(kind, method):
    from coar.baselines import _captum_layer_scores

    torch.manual_seed(9)
    model = _Twice().eval()
    cset = ComponentSet([ComponentGroup("lin1", "output", 3, 6, 2, "linear"),
                         ComponentGroup("lin1", "input", 6, 6, 1, "linear"),
                         ComponentGroup("lin2", "output", 5, 5, 1, "linear"),
                         ComponentGroup("lin2", "output", 5, 5, 1, "linear"),
                         ComponentGroup("lin3", "input", 5, 5, 1, "linear")])
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    for ibs in (None, 3, 8):
        args = (kind, model, cset, x, y, margin, 6, 3, ibs, method, False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Captum's and ours: internal_batch_size 3 is below 2 examples x 3
            new = _captum_layer_scores(*args).weights
            ref = _captum_layer_scores(*args, per_layer=True).weights
        assert_scores_close(new, ref)
        np.testing.assert_array_equal(new[:, cset.group_range(2)], new[:, cset.group_range(3)])
    assert_no_hooks(model)


def test_nc_ii_one_pass_runs_the_model_once_per_batch_for_all_layers(resnet):
    model, cset, x, y = resnet
    calls = []
    handle = model.register_forward_hook(lambda mod, args, out: calls.append(len(args[0])))
    try:
        neuron_conductance(model, cset, x, y, margin, n_steps=4, batch_size=3, progress=False)
        internal_influence(model, cset, x, y, margin, n_steps=4, batch_size=3, progress=False)
    finally:
        handle.remove()
    assert calls == [5 * 3, 5 * 1, 4 * 3, 4 * 1]  # (n_steps + 1) or n_steps points, batches of 3 and 1 example
    with pytest.raises(CoarError, match="n_steps"):
        neuron_conductance(model, cset, x, y, margin, n_steps=0, progress=False)
    with pytest.raises(CoarError, match="approximation method"):
        internal_influence(model, cset, x, y, margin, method="simpson", progress=False)
