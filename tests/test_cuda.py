"""GPU checks (skipped without CUDA): hooks == surgery on the device, bf16 close to fp32, regression on
the device equals the CPU."""
import numpy as np
import pytest
import torch

from coar import regression
from coar.ablation import counterfactual_outputs, surgery_outputs
from coar.components import component_set
from coar.models import build_model
from coar.outputs import margin
from coar.sampling import sample_masks

pytestmark = pytest.mark.cuda


def test_hooks_equal_surgery_on_gpu():
    torch.manual_seed(0)
    model = build_model("resnet_small").cuda()
    cset = component_set(model, "resnet_small")
    x, y = torch.randn(32, 3, 32, 32, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    keep = sample_masks(cset.size, 12, 0.1, seed=0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    fast = counterfactual_outputs(model, cset, x, y, keep, margin, masks_per_pass=6)
    slow = surgery_outputs(model, cset, x, y, keep, margin)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)


def test_bf16_counterfactuals_track_fp32():
    torch.manual_seed(1)
    model = build_model("resnet_small").cuda()
    cset = component_set(model, "resnet_small")
    x, y = torch.randn(64, 3, 32, 32, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    keep = sample_masks(cset.size, 16, 0.1, seed=1)
    fp32 = counterfactual_outputs(model, cset, x, y, keep, margin, masks_per_pass=8)
    bf16 = counterfactual_outputs(model.to(torch.bfloat16), cset, x.bfloat16(), y, keep, margin, masks_per_pass=8)
    r = np.corrcoef(fp32.ravel(), bf16.ravel())[0, 1]
    assert r > 0.99, r


def test_regression_on_gpu_equals_cpu():
    rng = np.random.default_rng(0)
    keep = rng.random((3000, 200)) > 0.1
    y = keep @ rng.normal(size=(200, 50)) + 0.1 * rng.normal(size=(3000, 50))
    cpu = regression.fit_ols(regression.GramAccumulator.from_arrays(keep, y))
    gpu = regression.fit_ols(regression.GramAccumulator.from_arrays(keep, y, device="cuda"), device="cuda")
    np.testing.assert_allclose(gpu.weights, cpu.weights, rtol=1e-6, atol=1e-8)
