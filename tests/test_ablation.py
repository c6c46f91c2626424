"""Weight surgery (reference semantics) == hooks with per-sample masks, for every component type."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from coar.ablation import ablate_weights, ablation_hooks, logits_of, surgery_outputs
from coar.engine import Engine, counterfactual_outputs, first_layer, foldable
from coar.components import Rule, component_set
from coar.errors import CoarError, ComponentError, ShapeError
from coar.paper.models import build_model, make_hookable
from coar.attention import HookableMultiheadAttention
from coar.paper.models.cifar import vit_small
from coar.outputs import margin, token_margin
from tests.helpers import assert_no_hooks, randomize_bn




def random_keep(C, K, seed, alpha=0.3):
    rng = np.random.default_rng(seed)
    return rng.random((K, C)) >= alpha


ENGINE_VARIANTS = [("weights", "contiguous"), ("weights", "channels_last"), ("hooks", "contiguous"),
                   ("hooks", "channels_last"), ("shared", "contiguous"), ("shared", "channels_last")]


def assert_engine_equals_surgery(model, cset, x, y, output_fn=margin, mode="zero", gamma=0.5, ref_model=None, M=4):
    """Every engine mechanism x memory format (channels_last only for image inputs) x BatchNorm folded or kept
    gives the outputs of the weight-surgered copies (the shared mechanism where the model's first component module
    allows it); the weights mechanism in the model's own format, nothing folded, gives them bitwise; the model is
    left bitwise unchanged. Returns the mechanisms run."""
    keep = random_keep(cset.size, M, 7, alpha=0.2)
    ref = surgery_outputs(ref_model if ref_model is not None else model, cset, x, y, keep, output_fn, mode, gamma)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image = x.dim() == 4 and x.is_floating_point()
    ran = set()
    for (mechanism, fmt), batchnorm in ((v, bn) for v in ENGINE_VARIANTS for bn in ("auto", "keep")):
        if (fmt == "channels_last" and not image) or (mechanism == "shared" and first_layer(model, cset, x[:1])[0] < 0):
            continue
        ran.add(mechanism)
        engine = Engine(model, cset, x, y, output_fn, mode, gamma, masks_per_pass=1 if mechanism == "weights" else 2,
                        mechanism=mechanism, memory_format=fmt, batchnorm=batchnorm)
        out = engine(keep)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5, err_msg=f"{mechanism}, {fmt}, {batchnorm}")
        if mechanism == "weights" and fmt == "contiguous" and ref_model is None and not engine.plan.folded:
            assert np.array_equal(out, ref), "weights in place must give the reference's outputs bitwise"
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k].contiguous().view(-1).view(torch.uint8), v.contiguous().view(-1).view(torch.uint8)), k
    assert_no_hooks(model)
    assert not any("forward" in vars(m) for m in model.modules())
    return ran


def assert_hooks_equal_surgery(model, cset, x, K=3, mode="zero", gamma=0.5, seed=0, ref_model=None):
    """Rows of one hooked pass over K masks == K separate forwards of weight-surgered copies."""
    keep = random_keep(cset.size, K, seed)
    ref_model = ref_model if ref_model is not None else model
    with torch.no_grad():
        with ablation_hooks(model, cset, keep, mode, gamma):
            hooked = logits_of(model(x.repeat(K, *([1] * (x.dim() - 1))))).view(K, len(x), *[-1])
        for r in range(K):
            ref = logits_of(ablate_weights(ref_model, cset, keep[r], mode, gamma)(x))
            torch.testing.assert_close(hooked[r].view_as(ref), ref, rtol=1e-5, atol=1e-5)
        plain = logits_of(model(x))
    # the masks really changed the output (a test that could not fail would be worthless)
    assert (hooked[0].view_as(plain) - plain).abs().max() > 1e-3
    assert_no_hooks(model)



@pytest.mark.parametrize("name,mode", [("resnet_small", "zero"), ("resnet_small", "scale"), ("resnet18_w8", "zero")])
def test_conv_bn_resnet(name, mode):
    torch.manual_seed(0)
    model = randomize_bn(build_model(name, in_channels=1, image_size=28))
    cset = component_set(model, name)
    assert foldable(model, cset)[0], "every BatchNorm of these ResNets follows a convolution"
    assert_hooks_equal_surgery(model, cset, torch.randn(4, 1, 28, 28), mode=mode)
    assert_engine_equals_surgery(model, cset, torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)), mode=mode)


def test_conv_with_bias_and_authors_architecture():
    torch.manual_seed(1)
    model = randomize_bn(build_model("cifar_resnet"))
    model.conv1 = nn.Conv2d(3, 256, 3, 1, 1, bias=True)  # conv bias: an ablated filter outputs its bias
    model.eval()
    cset = component_set(model, "cifar_resnet")
    assert cset.size == 2304
    assert_hooks_equal_surgery(model, cset, torch.randn(2, 3, 32, 32), K=2)
    assert_engine_equals_surgery(model, cset, torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)), M=2)


@pytest.mark.parametrize("mode", ["zero", "scale"])
def test_linear_with_bias(mode):
    torch.manual_seed(2)
    model = build_model("mlp", in_channels=1, image_size=8)
    with torch.no_grad():
        model.fc1.bias.normal_()
    cset = component_set(model, "mlp")
    assert_hooks_equal_surgery(model, cset, torch.randn(5, 1, 8, 8), K=4, mode=mode)
    ran = assert_engine_equals_surgery(model, cset, torch.randn(5, 1, 8, 8), torch.randint(0, 10, (5,)), mode=mode)
    assert "shared" in ran  # fc1 runs first: its output computed once, masked per mask


def test_vit_attention_rows_against_original_fused_module():
    torch.manual_seed(3)
    original = vit_small(num_classes=10, in_channels=1, image_size=28).eval()
    with torch.no_grad():  # non-trivial biases so that "ablated row = its bias" is tested
        for name, p in original.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.5)
        original.heads.head.weight.normal_(0, 0.2)  # torchvision zero-initialises the head
    hooked = make_hookable(copy.deepcopy(original)).eval()
    cset = component_set(original, "vit_small")
    assert cset.fingerprint() == component_set(hooked, "vit_small").fingerprint()
    kinds = {g.kind for g in cset.groups}
    assert {"mha_in_proj", "linear"} <= kinds
    # reference = weight surgery on torchvision's own nn.MultiheadAttention (fused fast path in eval/no_grad)
    assert_hooks_equal_surgery(hooked, cset, torch.randn(3, 1, 28, 28), K=2, ref_model=original)
    assert_engine_equals_surgery(hooked, cset, torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,)),
                                 ref_model=original)
    assert_engine_equals_surgery(hooked, cset, torch.randn(3, 1, 28, 28), torch.randint(0, 10, (3,)))


def test_gpt2_conv1d_input_rows():
    torch.manual_seed(4)
    model = build_model("gpt2_tiny")
    cset = component_set(model, "gpt2_tiny")
    assert all(g.site == "input" and g.kind == "conv1d" for g in cset.groups)
    assert_hooks_equal_surgery(model, cset, torch.randint(0, 512, (3, 16)), K=3)
    assert_hooks_equal_surgery(model, cset, torch.randint(0, 512, (3, 16)), K=2, mode="scale", gamma=0.3)
    ids = torch.randint(0, 512, (3, 16))
    assert_engine_equals_surgery(model, cset, ids, ids.clone(), token_margin)
    assert_engine_equals_surgery(model, cset, ids, ids.clone(), token_margin, mode="scale", gamma=0.3)


def test_phi_blocks_of_ten():
    torch.manual_seed(5)
    model = build_model("phi2_tiny")
    cset = component_set(model, "phi2_tiny")
    assert {g.block for g in cset.groups} == {10}
    assert_hooks_equal_surgery(model, cset, torch.randint(0, 512, (2, 12)), K=2)
    ids = torch.randint(0, 512, (2, 12))
    assert_engine_equals_surgery(model, cset, ids, ids.clone(), token_margin, M=2)


def test_clip_vision_rows():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(6)
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, patch_size=8, image_size=32)
    model = transformers.CLIPVisionModel(cfg).eval()
    cset = component_set(model, "clip_vit_b_16")
    assert cset.size == 2 * (4 * 32 + 64 + 32)
    x = torch.randn(2, 3, 32, 32)
    keep = random_keep(cset.size, 2, 0)
    with torch.no_grad(), ablation_hooks(model, cset, keep):
        hooked = model(pixel_values=x.repeat(2, 1, 1, 1)).pooler_output.view(2, 2, -1)
    with torch.no_grad():
        for r in range(2):
            ref = ablate_weights(model, cset, keep[r])(pixel_values=x).pooler_output
            torch.testing.assert_close(hooked[r], ref, rtol=1e-5, atol=1e-5)
    pooled = lambda out, _: out.pooler_output.sum(-1)  # noqa: E731  (one value per image)
    assert_engine_equals_surgery(model, cset, x, torch.zeros(2), pooled, M=3)


def test_surgery_zeroes_exactly_the_named_slice():
    small = build_model("resnet_small", in_channels=1, image_size=28)
    cs = component_set(small, "resnet_small")
    keep = np.ones(cs.size, bool)
    idx = int(cs.offsets[2]) + 3
    keep[idx] = False
    edited = ablate_weights(small, cs, keep)
    gi, unit = cs.locate(idx)
    name = cs.groups[gi].module + ".weight"
    before, after = dict(small.named_parameters()), dict(edited.named_parameters())
    for n, p in before.items():
        if n == name:
            assert torch.all(after[n][unit] == 0) and torch.equal(after[n][unit + 1:], p[unit + 1:])
        else:
            assert torch.equal(after[n], p), n


def test_ablated_conv_channel_outputs_its_bias_constant():
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=True))
    cset = component_set(conv, [Rule("0", ("Conv2d",))])
    keep = np.array([[True, False, True]])
    with torch.no_grad(), ablation_hooks(conv, cset, keep):
        out = conv(torch.randn(1, 2, 5, 5))
    assert torch.all(out[0, 1] == conv[0].bias[1])


def test_hooks_removed_when_forward_raises():
    model = build_model("resnet_small", in_channels=1, image_size=28)
    cset = component_set(model, "resnet_small")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        with pytest.raises(RuntimeError):
            with ablation_hooks(model, cset, random_keep(cset.size, 2, 0)):
                model(torch.randn(2, 5, 28, 28))  # wrong channel count: raises inside the hooked forward
        assert_no_hooks(model)
        with pytest.raises(ShapeError):  # 3 rows are not a multiple of 2 masks: raised from inside a hook
            with ablation_hooks(model, cset, random_keep(cset.size, 2, 0)):
                model(torch.randn(3, 1, 28, 28))
        assert_no_hooks(model)
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_unconverted_attention_refused_and_nothing_left_registered():
    original = vit_small(in_channels=1, image_size=28).eval()
    cset = component_set(original, "vit_small")
    with pytest.raises(ComponentError, match="make_hookable"):
        with ablation_hooks(original, cset, random_keep(cset.size, 1, 0)):
            pass
    assert_no_hooks(original)


def test_training_mode_batchnorm_refused():
    model = build_model("resnet_small", in_channels=1, image_size=28).train()
    cset = component_set(model, "resnet_small")
    with pytest.raises(CoarError, match="eval"):
        with ablation_hooks(model, cset, random_keep(cset.size, 1, 0)):
            pass


def test_bad_mask_shape():
    model = build_model("mlp", in_channels=1, image_size=8)
    cset = component_set(model, "mlp")
    with pytest.raises(ShapeError, match="3072"):
        with ablation_hooks(model, cset, np.ones((2, 10), bool)):
            pass


def test_hookable_attention_matches_torch_mha():
    torch.manual_seed(7)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        with torch.no_grad():
            mha.in_proj_bias.normal_()
            mha.out_proj.bias.normal_()
        ours = HookableMultiheadAttention.from_mha(mha).eval()
        x = torch.randn(3, 5, 16)
        pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
        causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
        xx = x if batch_first else x.transpose(0, 1)
        for kw in ({}, {"key_padding_mask": pad}, {"attn_mask": causal}):
            for need in (False, True):
                with torch.no_grad():
                    a, wa = mha(xx, xx, xx, need_weights=need, **kw)
                    b, wb = ours(xx, xx, xx, need_weights=need, **kw)
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
                if need:
                    torch.testing.assert_close(wb, wa, rtol=1e-5, atol=1e-5)


def test_counterfactual_outputs_batched_equals_surgery_loop():
    torch.manual_seed(8)
    model = randomize_bn(build_model("resnet_small", in_channels=1, image_size=28))
    cset = component_set(model, "resnet_small")
    x, y = torch.randn(10, 1, 28, 28), torch.randint(0, 10, (10,))
    keep = random_keep(cset.size, 7, 3, alpha=0.1)
    fast = counterfactual_outputs(model, cset, x, y, keep, margin, batch_size=4, masks_per_pass=3)
    slow = surgery_outputs(model, cset, x, y, keep, margin, batch_size=4)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
    assert fast.shape == (7, 10) and fast.std(0).max() > 1e-3


def test_token_margin_lm_counterfactuals():
    torch.manual_seed(9)
    model = build_model("gpt2_tiny")
    cset = component_set(model, "gpt2_tiny")
    ids = torch.randint(0, 512, (4, 10))
    labels = ids.clone()
    labels[1, 7:] = -100  # padding ignored
    keep = random_keep(cset.size, 3, 1, alpha=0.05)
    fast = counterfactual_outputs(model, cset, ids, labels, keep, token_margin, batch_size=2, masks_per_pass=2)
    slow = surgery_outputs(model, cset, ids, labels, keep, token_margin)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_input_site_hook_leaves_a_shared_input_untouched():
    """One tensor feeds two modules; ablating input features of one must not change what the other sees."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x):
            return self.a(x) + self.b(x)

    torch.manual_seed(10)
    model = Shared().eval()
    cset = component_set(model, [Rule("a", ("Linear",), site="input")])
    assert_hooks_equal_surgery(model, cset, torch.randn(4, 6), K=3)
    assert_engine_equals_surgery(model, cset, torch.randn(4, 6), torch.randint(0, 3, (4,)))
