"""coar.engine: every mechanism x memory format equals the reference weight zeroing (per model family in
test_ablation.py, on random models and masks here), the weights mechanism restores the model bitwise even when
interrupted, and the plan follows its rule."""
import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from coar.ablation import ablation_hooks, surgery_outputs
from coar.components import Rule, component_set
from coar.engine import (CPU_FULL_ROWS, CPU_ROWS, SHARED_MACS, SHARED_SHARE, Engine, counterfactual_outputs,
                         first_layer, full_rows, model_memory_format, plan, rows_per_pass)
from coar.errors import CoarError
from coar.outputs import margin
from coar.paper.models import build_model
from tests.helpers import assert_no_hooks, randomize_bn

VARIANTS = [("weights", "contiguous"), ("weights", "channels_last"), ("hooks", "contiguous"),
            ("hooks", "channels_last"), ("shared", "contiguous"), ("shared", "channels_last")]


def snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_bitwise_unchanged(model: nn.Module, before: dict) -> None:
    """Every tensor bitwise as before (a -0.0 where 0.0 was counts as a change) and in its original layout."""
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        w = after[k].detach()
        assert w.stride() == v.stride(), f"{k}: layout changed"
        assert torch.equal(w.contiguous().view(-1).view(torch.uint8), v.contiguous().view(-1).view(torch.uint8)), k


def small_convnet(seed: int, bias: bool) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6), nn.ReLU(),
                          nn.Conv2d(6, 5, 3, stride=2, bias=bias), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 3 * 3, 7),
                          nn.ReLU(), nn.Linear(7, 4))
    return randomize_bn(model, seed).eval()


RULES = [Rule(r"0|3", ("Conv2d",)), Rule(r"6", ("Linear",)), Rule(r"8", ("Linear",), site="input")]


# -------------------------------------------------------------------------- equivalence on random problems
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), masks=st.integers(1, 6),
       mode=st.sampled_from(["zero", "scale"]), gamma=st.floats(0.0, 1.0), bias=st.booleans(),
       variant=st.sampled_from(VARIANTS), batch=st.integers(1, 9), per_pass=st.integers(1, 4),
       batchnorm=st.sampled_from(["auto", "keep"]))
def test_every_mechanism_equals_weight_zeroing_on_random_models_and_masks(seed, n, masks, mode, gamma, bias,
                                                                          variant, batch, per_pass, batchnorm):
    model = small_convnet(seed, bias)
    cset = component_set(model, RULES)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 2, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    keep = torch.rand(masks, cset.size, generator=g) > 0.3
    before = snapshot(model)
    ref = surgery_outputs(model, cset, x, y, keep.numpy(), margin, mode, gamma, batch_size=batch)
    mechanism, fmt = variant
    engine = Engine(model, cset, x, y, margin, mode, gamma, batch_size=batch,
                    masks_per_pass=1 if mechanism == "weights" else per_pass, mechanism=mechanism,
                    memory_format=fmt, batchnorm=batchnorm)
    assert engine.plan.folded == (("1",) if batchnorm == "auto" else ())  # the BatchNorm after conv 0
    assert engine.plan.mechanism == mechanism  # conv 0 runs first and once: the shared mechanism can take it
    out = engine(keep)
    if variant == ("weights", "contiguous") and batchnorm == "keep":  # the reference's products: bitwise
        assert np.array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert_bitwise_unchanged(model, before)
    assert_no_hooks(model)
    assert "forward" not in vars(model[0]) and "forward" not in vars(engine.model.get_submodule("0"))


def test_the_masks_change_the_outputs_so_the_equivalence_is_not_vacuous():
    model = small_convnet(0, True)
    cset = component_set(model, RULES)
    x, y = torch.randn(6, 2, 8, 8), torch.randint(0, 4, (6,))
    keep = np.random.default_rng(0).random((4, cset.size)) > 0.3
    out = counterfactual_outputs(model, cset, x, y, keep, margin, mechanism="weights")
    full = counterfactual_outputs(model, cset, x, y, np.ones((1, cset.size), bool), margin, mechanism="weights")
    assert np.abs(out - full).min(axis=1).max() > 1e-3


# ------------------------------------------------------------------------- weights restored when interrupted
@pytest.mark.parametrize("fmt,batchnorm", [("contiguous", "keep"), ("channels_last", "keep"),
                                           ("contiguous", "auto")])
@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_weights_mechanism_restores_the_model_bitwise_when_interrupted(fmt, batchnorm, error):
    model = randomize_bn(build_model("resnet_small", in_channels=1, image_size=28))
    cset = component_set(model, "resnet_small")
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 10, (5,))
    with torch.no_grad():  # negative weights: zeroing them by a product gives -0.0, which must not stay behind
        model.conv1.weight[0] = -model.conv1.weight[0].abs()
    before = snapshot(model)
    params = {k: (p, p.data_ptr()) for k, p in model.named_parameters()}
    calls = []

    def output_fn(logits, targets):
        calls.append(1)
        if len(calls) == 3:  # the third mask's forward pass: two masks have been written into the weights
            raise error("stop")
        return margin(logits, targets)

    keep = np.random.default_rng(1).random((6, cset.size)) > 0.5
    engine = Engine(model, cset, x, y, output_fn, mechanism="weights", memory_format=fmt, batchnorm=batchnorm)
    assert (engine.model is model) == (fmt == "contiguous" and batchnorm == "keep")  # in place, else on a copy
    run_before = snapshot(engine.model)
    with pytest.raises(error):
        engine(keep)
    assert len(calls) == 3
    assert_bitwise_unchanged(model, before)
    assert_bitwise_unchanged(engine.model, run_before)  # the copy too: the engine can be called again
    assert all(p is dict(model.named_parameters())[k] and p.data_ptr() == ptr for k, (p, ptr) in params.items())
    # and the engine still gives the reference numbers afterwards
    calls.clear()
    ok = Engine(model, cset, x, y, margin, mechanism="weights", memory_format="contiguous", batchnorm="keep")(keep)
    assert np.array_equal(ok, surgery_outputs(model, cset, x, y, keep, margin))


def test_weights_mechanism_on_a_weight_shared_by_two_groups_multiplies_like_the_reference():
    """An input-site and an output-site group on one Linear: both factors land on the same weight, in order."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    cset = component_set(model, [Rule("0", ("Linear",)), Rule("0", ("Linear",), site="input")])
    x, y = torch.randn(4, 5), torch.randint(0, 3, (4,))
    keep = np.random.default_rng(2).random((5, cset.size)) > 0.4
    for mode in ("zero", "scale"):
        ref = surgery_outputs(model, cset, x, y, keep, margin, mode, 0.3)
        out = counterfactual_outputs(model, cset, x, y, keep, margin, mode, 0.3, mechanism="weights")
        assert np.array_equal(out, ref)


# --------------------------------------------------------------------------------------------- the plan
def resnet(n=200):
    model = build_model("resnet_tiny", in_channels=1, image_size=28)
    return model, component_set(model, "resnet_tiny"), torch.zeros(n, 1, 28, 28)


@pytest.mark.parametrize("n,mechanism,batch,per_pass", [
    (200, "weights", 200, 1),    # a full pass (64 rows on a CPU): one mask a pass, all examples
    (256, "weights", 256, 1),
    (600, "weights", 200, 1),    # three equal batches of at most 256 rows
    (64, "weights", 64, 1),
    (63, "hooks", 63, 4),        # less than a full pass: as many masks as fit in 256 rows
    (50, "hooks", 50, 5),
    (1, "hooks", 1, CPU_ROWS),
])
def test_cpu_plan_by_number_of_examples(n, mechanism, batch, per_pass):
    model, cset, x = resnet(n)
    p = plan(model, cset, x)
    assert (p.mechanism, p.batch_size, p.masks_per_pass) == (mechanism, batch, per_pass)
    assert p.rows_per_pass <= CPU_ROWS and p.memory_format == "channels_last"
    assert p.masks_per_call == 4 * per_pass


def test_memory_format_follows_the_share_of_convolution_flops():
    vit = build_model("vit_tiny", in_channels=1, image_size=28)
    assert plan(vit, component_set(vit, "vit_tiny"), torch.zeros(8, 1, 28, 28)).memory_format == "contiguous"
    mlp = build_model("mlp_small", in_channels=1, image_size=28)
    assert plan(mlp, component_set(mlp, "mlp_small"), torch.zeros(8, 1, 28, 28)).memory_format == "contiguous"
    gpt = build_model("gpt2_tiny")
    p = plan(gpt, component_set(gpt, "gpt2_tiny"), torch.zeros(8, 16, dtype=torch.long))
    assert p.memory_format == "contiguous"
    with pytest.raises(CoarError, match="channels_last needs image inputs"):
        plan(gpt, component_set(gpt, "gpt2_tiny"), torch.zeros(8, 16, dtype=torch.long), memory_format="channels_last")


def test_given_choices_are_kept_and_contradictions_refused():
    model, cset, x = resnet(200)
    assert plan(model, cset, x, masks_per_pass=3).mechanism == "hooks"
    assert plan(model, cset, x, masks_per_pass=3).batch_size == CPU_ROWS // 3
    p = plan(model, cset, x, batch_size=16)
    assert (p.mechanism, p.masks_per_pass) == ("hooks", 16)  # rows per pass kept
    assert plan(model, cset, x[:10], masks_per_pass=1).mechanism == "weights"
    assert plan(model, cset, x[:10], batch_size=10, masks_per_pass=1).batch_size == 10
    assert plan(model, cset, x, memory_format="contiguous", mechanism="hooks").memory_format == "contiguous"
    with pytest.raises(CoarError, match="one mask per pass"):
        plan(model, cset, x, mechanism="weights", masks_per_pass=2)
    for bad in (dict(mechanism="surgery"), dict(memory_format="nhwc"), dict(batch_size=0), dict(masks_per_pass=True)):
        with pytest.raises(CoarError):
            plan(model, cset, x, **bad)


def test_a_parametrized_weight_is_left_to_the_hooks():
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    parametrizations.weight_norm(model[0])
    cset = component_set(model, [Rule("0", ("Linear",))])
    x, y = torch.randn(300, 4), torch.randint(0, 2, (300,))
    p = plan(model, cset, x)
    assert p.mechanism == "hooks" and "parametrized" in p.reason
    with pytest.raises(CoarError, match="parametrized"):
        plan(model, cset, x, mechanism="weights")
    keep = np.random.default_rng(0).random((3, 6)) > 0.5
    plain = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()  # the weights the forward pass uses
    with torch.no_grad():
        plain[0].weight.copy_(model[0].weight)
        plain[0].bias.copy_(model[0].bias)
        plain[2].load_state_dict(model[2].state_dict())
    np.testing.assert_allclose(counterfactual_outputs(model, cset, x, y, keep, margin),
                               surgery_outputs(plain, cset, x, y, keep, margin), rtol=1e-5, atol=1e-5)


def test_gpu_rows_per_pass_scale_with_the_input_size():
    assert rows_per_pass("cpu", 3 * 224 * 224) == CPU_ROWS and full_rows("cpu", 784) == CPU_FULL_ROWS
    assert rows_per_pass("cuda", 3 * 32 * 32) == 1024 and full_rows("cuda", 3 * 32 * 32) == 513
    assert rows_per_pass("cuda", 3 * 224 * 224) == 2 ** 26 // (3 * 224 * 224) == 445


def test_the_callers_model_keeps_its_format_and_the_run_copy_is_channels_last():
    model, cset, x = resnet(8)
    engine = Engine(model, cset, x, torch.zeros(8, dtype=torch.long), margin)
    assert engine.plan.memory_format == "channels_last" and engine.model is not model
    assert model_memory_format(model) == "contiguous" and model_memory_format(engine.model) == "channels_last"


def test_hooks_keep_a_channels_last_activation_channels_last():
    """The scaled conv output stays channels-last, so the next layers keep the fast kernels."""
    model = small_convnet(1, True).to(memory_format=torch.channels_last)
    cset = component_set(model, RULES)
    x = torch.randn(3, 2, 8, 8).contiguous(memory_format=torch.channels_last)
    seen = []
    model[1].register_forward_pre_hook(lambda m, args: seen.append(args[0]))  # the BN after the hooked conv
    keep = np.random.default_rng(0).random((2, cset.size)) > 0.5
    with torch.no_grad(), ablation_hooks(model, cset, keep):
        model(x.repeat(2, 1, 1, 1).contiguous(memory_format=torch.channels_last))
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()


def test_engine_is_deterministic_across_calls_and_block_splits():
    model, cset, _ = resnet(40)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 28, 28, generator=g), torch.randint(0, 10, (40,), generator=g)
    engine = Engine(copy.deepcopy(model), cset, x, y, margin)
    keep = np.random.default_rng(3).random((12, cset.size)) > 0.1
    whole = engine(keep)
    k = engine.plan.masks_per_pass
    parts = np.concatenate([engine(keep[i: i + k]) for i in range(0, 12, k)])
    assert np.array_equal(whole, parts) and np.array_equal(whole, engine(keep))


# -------------------------------------------------------------------------------------- BatchNorm folding
def _outputs(model, cset, x, y, keep, **kw):
    return Engine(model, cset, x, y, margin, "scale", 0.3, **kw)(keep)


@pytest.mark.parametrize("conv,bn,shape", [(nn.Conv1d(3, 6, 3, bias=True), nn.BatchNorm1d(6), (5, 3, 9)),
                                           (nn.Conv2d(4, 8, 3, groups=4, bias=False), nn.BatchNorm2d(8), (5, 4, 7, 7)),
                                           (nn.Conv3d(2, 4, 2, bias=True), nn.BatchNorm3d(4), (5, 2, 4, 4, 4)),
                                           (nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6, affine=False),
                                            (5, 3, 6, 6))])
def test_folding_is_exact_for_every_convolution_kind_and_both_sites(conv, bn, shape):
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)), 0)
    model(torch.randn(*shape))
    model.eval()
    rules = ([Rule("0", ("Conv2d",)), Rule("0", ("Conv2d",), site="input")] if isinstance(conv, nn.Conv2d)
             else [Rule("4", ("Linear",), site="input")])  # only 2-D convolutions hold components
    cset = component_set(model, rules)
    x, y = torch.randn(*shape), torch.randint(0, 3, (shape[0],))
    keep = np.random.default_rng(0).random((6, cset.size)) > 0.4
    ref = surgery_outputs(model, cset, x, y, keep, margin, "scale", 0.3)
    for mechanism in ("weights", "hooks"):
        engine = Engine(model, cset, x, y, margin, "scale", 0.3, mechanism=mechanism, batchnorm="fold")
        assert engine.plan.folded == ("1",) and isinstance(engine.model, torch.fx.GraphModule)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in engine.model.modules())
        np.testing.assert_allclose(engine(keep), ref, rtol=1e-5, atol=1e-5)
    assert isinstance(model[1], type(bn)), "the caller's model keeps its BatchNorm"


class _Skip(nn.Module):
    """A convolution whose output feeds its BatchNorm and a skip connection: folding would change the skip."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x)
        return self.head((self.bn(h) + h).mean((2, 3)))


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 3)

    def forward(self, x):
        h = self.bn(self.conv(x))
        if h.sum() > -1e9:
            h = h.relu()
        return self.head(h.mean((2, 3)))


@pytest.mark.parametrize("make,why", [
    (lambda: randomize_bn(_Skip(), 0), "alone reads"),
    (lambda: randomize_bn(_Branchy(), 0), "cannot trace"),
    (lambda: _hooked(randomize_bn(_Skip(), 0)), "alone reads"),
])
def test_batchnorm_is_kept_where_folding_would_not_be_exact(make, why):
    model = make().eval()
    cset = component_set(model, [Rule("conv", ("Conv2d",))])
    x, y = torch.randn(5, 2, 6, 6), torch.randint(0, 3, (5,))
    p = plan(model, cset, x)
    assert p.folded == ()
    with pytest.raises(CoarError, match=why):
        plan(model, cset, x, batchnorm="fold")
    keep = np.random.default_rng(1).random((4, cset.size)) > 0.4
    np.testing.assert_allclose(_outputs(model, cset, x, y, keep), surgery_outputs(model, cset, x, y, keep, margin,
                                                                                   "scale", 0.3), rtol=1e-5, atol=1e-5)


def _hooked(model):
    model.bn.register_forward_hook(lambda m, a, out: None)
    return model


def test_a_hooked_batchnorm_is_not_folded():
    model = small_convnet(2, True)
    cset = component_set(model, RULES)
    x = torch.randn(4, 2, 8, 8)
    assert plan(model, cset, x).folded == ("1",)
    handle = model[1].register_forward_pre_hook(lambda m, a: None)
    assert plan(model, cset, x).folded == ()
    handle.remove()
    assert plan(model, cset, x, batchnorm="keep").folded == ()
    with pytest.raises(CoarError, match="batchnorm must be one of"):
        plan(model, cset, x, batchnorm="merge")


def test_a_model_without_batchnorm_runs_as_given():
    mlp = build_model("mlp_small", in_channels=1, image_size=28).eval()
    cset = component_set(mlp, "mlp_small")
    x = torch.randn(70, 1, 28, 28)
    engine = Engine(mlp, cset, x, torch.zeros(70, dtype=torch.long), margin)
    assert engine.plan.folded == () and engine.model is mlp
    with pytest.raises(CoarError, match="nothing to fold.*no BatchNorm"):
        plan(mlp, cset, x, batchnorm="fold")


@pytest.mark.parametrize("name", ["resnet_tiny", "vit_tiny", "mlp_small"])
def test_convolution_share_agrees_with_torchs_flop_counter(name):
    """The hook count the plan uses (no sympy import at every job's start) against torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from coar.engine import conv_flop_share

    model = build_model(name, in_channels=1, image_size=28).eval()
    x = torch.randn(1, 1, 28, 28)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    conv = sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
    assert conv_flop_share(model, x) == pytest.approx(conv / counter.get_total_flops(), abs=0.01)


def test_convolution_share_counts_attention_and_transposed_convolutions():
    from coar.engine import conv_flop_share

    attn = nn.MultiheadAttention(16, 2, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.attn = nn.ConvTranspose2d(3, 16, 2, stride=2), attn

        def forward(self, x):
            h = self.up(x).flatten(2).transpose(1, 2)  # [1, 64, 16]
            return self.attn(h, h, h)[0].mean(1)

    conv = 3 * 16 * 4 * 16  # every input value (3 x 4 x 4) meets 16 output channels x a 2 x 2 kernel
    other = (64 + 2 * 64) * 16 * 16 + 64 * 16 * 16 + 2 * 64 * 64 * 16
    assert conv_flop_share(Net().eval(), torch.randn(1, 3, 4, 4)) == pytest.approx(conv / (conv + other))


# ------------------------------------------------------------------------------------------------ torch.compile
COMPILED = """
import numpy as np, torch
from coar.ablation import surgery_outputs
from coar.components import component_set
from coar.engine import Engine
from coar.outputs import margin
from coar.paper.models import build_model
from tests.helpers import assert_no_hooks, randomize_bn
torch.manual_seed(5)
model = randomize_bn(build_model("resnet_tiny", in_channels=1, image_size=28)).eval()
cset = component_set(model, "resnet_tiny")
g = torch.Generator().manual_seed(1)
x, y = torch.randn(70, 1, 28, 28, generator=g), torch.randint(0, 10, (70,), generator=g)
keep = torch.rand(5, cset.size, generator=g) > 0.2
before = {k: v.clone() for k, v in model.state_dict().items()}
engine = Engine(model, cset, x, y, margin, mechanism="weights", compile="default")
assert isinstance(engine._forward, torch._dynamo.eval_frame.OptimizedModule)
out = engine(keep)
ref = surgery_outputs(model, cset, x, y, keep.numpy(), margin)
np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
assert np.abs(out[0] - out[1]).max() > 1e-3  # each mask's own weights were read, not the first compilation's
assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
assert_no_hooks(model)
print("compiled ok", np.abs(out - ref).max())
"""


def test_compiled_weights_mechanism_equals_weight_zeroing_and_restores_the_weights():
    """One compilation serves every mask (the masks are written into the parameters in place and the compiled module
    reads them at every call): its outputs are the weight-zeroing reference's to float32 rounding, the caller's
    weights come back bitwise, and the hooks mechanism (a recompilation per block) is refused. The compilation runs
    in a fresh interpreter: inductor builds C++ through setuptools, whose distutils shim depends on what the
    process imported before."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", COMPILED], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "compiled ok" in r.stdout, r.stderr[-3000:]
    model = build_model("resnet_tiny", in_channels=1, image_size=28).eval()
    cset = component_set(model, "resnet_tiny")
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with pytest.raises(CoarError, match="weights mechanism only"):
        Engine(model, cset, x, y, margin, mechanism="hooks", compile="default")
    with pytest.raises(CoarError, match="compile must be one of"):
        Engine(model, cset, x, y, margin, compile="fast")


# ------------------------------------------------------------------------------- the shared first layer
def mlp(seed=0, hidden=(256,), in_features=784):
    torch.manual_seed(seed)
    layers, d = [nn.Flatten()], in_features
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    model = nn.Sequential(*layers, nn.Linear(d, 10)).eval()
    with torch.no_grad():  # non-trivial biases: an ablated row outputs its bias
        for m in model:
            if isinstance(m, nn.Linear):
                m.bias.normal_()
    return model


@pytest.mark.parametrize("mode", ["zero", "scale"])
@pytest.mark.parametrize("n,kw", [(200, {}), (10, {}), (30, dict(batch_size=8)), (30, dict(masks_per_pass=3)),
                                  (30, dict(batch_size=7, masks_per_pass=2))])
def test_shared_first_layer_equals_weight_zeroing(mode, n, kw):
    """mlp_small's first layer is computed once; every mask, K a pass, in batches of every size, gives the weight
    zeroing reference's outputs (bitwise in zero mode when the batches are the reference's), call after call."""
    model = build_model("mlp_small", in_channels=1, image_size=28).eval()
    with torch.no_grad():
        model.fc1.bias.normal_()
    cset = component_set(model, "mlp_small")
    g = torch.Generator().manual_seed(n)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    keep = torch.rand(7, cset.size, generator=g) > 0.3
    before = snapshot(model)
    engine = Engine(model, cset, x, y, margin, mode, 0.3, **kw)
    assert engine.plan.mechanism == "shared" and "fc1 carries 99% of the FLOPs" in engine.plan.reason
    ref = surgery_outputs(model, cset, x, y, keep.numpy(), margin, mode, 0.3, batch_size=engine.plan.batch_size)
    out = engine(keep)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    if mode == "zero" and engine.plan.batch_size == n:
        assert np.array_equal(out, ref)
    assert np.array_equal(engine(keep), out) and np.array_equal(engine(keep[3:]), out[3:])
    assert np.abs(out - out[:1]).max() > 1e-3
    assert_bitwise_unchanged(model, before)
    assert_no_hooks(model)
    assert "forward" not in vars(model.fc1)


def test_shared_first_layer_with_later_components_masked_by_hooks():
    model = mlp(1, hidden=(32, 16), in_features=600)
    cset = component_set(model, [Rule("1|3", ("Linear",)), Rule("5", ("Linear",), site="input")])
    x, y = torch.randn(40, 600), torch.randint(0, 10, (40,))
    keep = np.random.default_rng(0).random((9, cset.size)) > 0.3
    for kw in (dict(), dict(masks_per_pass=4, batch_size=9)):
        engine = Engine(model, cset, x, y, margin, "scale", 0.2, mechanism="shared", **kw)
        np.testing.assert_allclose(engine(keep), surgery_outputs(model, cset, x, y, keep, margin, "scale", 0.2),
                                   rtol=1e-5, atol=1e-5)
    assert_no_hooks(model)


def test_the_rule_shares_only_a_heavy_first_layer():
    model, cset, x = mlp(), None, torch.randn(200, 784)
    cset = component_set(model, [Rule("1", ("Linear",))])
    index, share, per_output, why = first_layer(model, cset, x[:1])
    assert (index, per_output, why) == (0, 784, "") and share > 0.95
    p = plan(model, cset, x)
    assert (p.mechanism, p.masks_per_pass, p.batch_size) == ("shared", 1, 200)
    assert (plan(model, cset, x[:10]).mechanism, plan(model, cset, x[:10]).masks_per_pass) == ("shared", 25)
    assert plan(model, cset, torch.randn(600, 784)).batch_size == 200  # equal batches, as the weights mechanism's
    light = mlp(hidden=(256, 1024), in_features=64)  # the first layer: 6% of the FLOPs
    cset = component_set(light, [Rule("1", ("Linear",))])
    assert first_layer(light, cset, torch.randn(1, 64))[1] < SHARED_SHARE
    assert plan(light, cset, torch.randn(200, 64)).mechanism == "weights"
    assert plan(light, cset, torch.randn(200, 64), mechanism="shared").mechanism == "shared"
    conv = small_convnet(0, True)  # conv 0: 18 MACs an output value, fewer than SHARED_MACS
    cset = component_set(conv, RULES)
    index, share, per_output, _ = first_layer(conv, cset, torch.randn(1, 2, 8, 8))
    assert index == 0 and per_output == 18 < SHARED_MACS
    assert plan(conv, cset, torch.randn(200, 2, 8, 8)).mechanism == "weights"
    for name in ("resnet_tiny", "vit_tiny"):  # the preset's other models keep their plans
        m = build_model(name, in_channels=1, image_size=28).eval()
        assert plan(m, component_set(m, name), torch.zeros(200, 1, 28, 28)).mechanism == "weights"


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.fc1(self.fc1(x)).relu())


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)
        self.fc2.weight = self.fc1.weight

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


class _Sometimes(nn.Module):
    """Calls fc1 a second time only when its input is large: the probe's one example cannot see it."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc1(x)
        if x.abs().max() > 10:
            h = self.fc1(h)
        return self.fc2(h.relu())


def _weight_normed():
    from torch.nn.utils import parametrizations

    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    parametrizations.weight_norm(model[0])
    return model


def _hooked_first():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    model[0].register_forward_pre_hook(lambda m, a: None)
    return model


@pytest.mark.parametrize("make,rules,why", [
    (_Twice, [Rule("fc1", ("Linear",))], "called 2 times"),
    (_Tied, [Rule("fc1", ("Linear",))], "shared with another module"),
    (_weight_normed, [Rule("0", ("Linear",))], "parametrized"),
    (_hooked_first, [Rule("0", ("Linear",))], "has hooks"),
    (lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)),
     [Rule("0", ("Linear",), site="input"), Rule("2", ("Linear",))], "not only its output units"),
    (lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)), [Rule("2", ("Linear",), site="input")],
     "not only its output units"),
    (lambda: nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)), [Rule("0", ("Linear",)), Rule("2", ("Linear",))],
     None),
])
def test_shared_eligibility_is_checked_and_a_forced_shared_names_the_problem(make, rules, why):
    model = make().eval()
    cset = component_set(model, rules)
    x = torch.randn(70, 8)
    index, _, _, reason = first_layer(model, cset, x[:1])
    if why is None:
        assert index == 0 and plan(model, cset, x, mechanism="shared").mechanism == "shared"
        return
    assert index == -1 and why in reason
    assert plan(model, cset, x).mechanism in ("weights", "hooks")  # the rule falls back to the current plan
    with pytest.raises(CoarError, match=f"shared mechanism cannot run on this model: .*{why}"):
        plan(model, cset, x, mechanism="shared")


def test_shared_refuses_control_flow_the_probe_did_not_see_and_restores_the_model():
    torch.manual_seed(0)
    model = _Sometimes().eval()
    cset = component_set(model, [Rule("fc1", ("Linear",))])
    x, y = torch.randn(70, 8), torch.randint(0, 3, (70,))
    engine = Engine(model, cset, x, y, margin, mechanism="shared")
    keep = np.random.default_rng(0).random((3, 8)) > 0.3
    np.testing.assert_allclose(engine(keep), surgery_outputs(model, cset, x, y, keep, margin), rtol=1e-5, atol=1e-5)
    x[5] = 100.0  # now fc1 runs twice on this batch
    engine = Engine(model, cset, x, y, margin, mechanism="shared")
    with pytest.raises(CoarError, match="called twice in one forward pass"):
        engine(keep)
    assert "forward" not in vars(model.fc1)
    assert_no_hooks(model)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_shared_restores_the_first_layer_when_interrupted(error):
    model = mlp()
    cset = component_set(model, [Rule("1", ("Linear",))])
    x, y = torch.randn(20, 784), torch.randint(0, 10, (20,))
    calls = []

    def output_fn(logits, targets):
        calls.append(1)
        if len(calls) == 2:  # the second mask's pass
            raise error("stop")
        return margin(logits, targets)

    keep = np.random.default_rng(1).random((4, cset.size)) > 0.5
    engine = Engine(model, cset, x, y, output_fn, mechanism="shared", masks_per_pass=1)
    with pytest.raises(error):
        engine(keep)
    assert len(calls) == 2 and "forward" not in vars(model[1])
    calls.extend([1] * 10)  # the next calls pass
    np.testing.assert_allclose(engine(keep), surgery_outputs(model, cset, x, y, keep, margin), rtol=1e-5, atol=1e-5)
