"""GPU checks (skipped without CUDA): every engine path gives on the device what it gives on the CPU, the
paper's torchvision models included; bf16 sampling tracks fp32; training on the device learns."""
import copy

import numpy as np
import pytest
import torch

from coar import regression
from coar.ablation import surgery_outputs
from coar.engine import counterfactual_outputs
from coar.baselines import compute_baseline
from coar.components import component_set
from coar.examples import Examples
from coar.paper.models import build_model
from coar.outputs import margin
from coar.pipeline import sample_store
from coar.sampling import sample_masks

from tests.helpers import randomize_bn

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def exact_fp32():
    """Full float32 matmuls and convolutions (no TF32), so device and CPU can be compared to rounding."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _paper_model(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=1000, image_size=224).eval()
    with torch.no_grad():  # torchvision's ViT starts with a zero head: every margin would be 0
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                p.normal_(0, 0.02)
    return model


def test_hooks_equal_surgery_on_gpu():
    torch.manual_seed(0)
    model = build_model("resnet_small").cuda()
    cset = component_set(model, "resnet_small")
    x, y = torch.randn(32, 3, 32, 32, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    keep = sample_masks(cset.size, 12, 0.1, seed=0)
    fast = counterfactual_outputs(model, cset, x, y, keep, margin, masks_per_pass=6)
    slow = surgery_outputs(model, cset, x, y, keep, margin)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16"])
def test_paper_models_hooks_equal_surgery_on_gpu(name):
    model = _paper_model(name).cuda()
    cset = component_set(model, name)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 224, 224, generator=g).cuda(), torch.randint(0, 1000, (4,), generator=g).cuda()
    keep = sample_masks(cset.size, 4, 0.05, seed=1)
    fast = counterfactual_outputs(model, cset, x, y, keep, margin, masks_per_pass=2)
    slow = surgery_outputs(model, cset, x, y, keep, margin)
    np.testing.assert_allclose(fast, slow, rtol=1e-3, atol=1e-3 * np.abs(slow).max())


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


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16"])
def test_bf16_margins_track_fp32_on_paper_models(name):
    model = _paper_model(name).cuda()
    cset = component_set(model, name)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 3, 224, 224, generator=g).cuda(), torch.randint(0, 1000, (16,), generator=g).cuda()
    keep = sample_masks(cset.size, 8, 0.05, seed=2)
    fp32 = counterfactual_outputs(model, cset, x, y, keep, margin, masks_per_pass=4)
    bf16 = counterfactual_outputs(copy.deepcopy(model).bfloat16(), cset, x.bfloat16(), y, keep, margin,
                                  masks_per_pass=4)
    r = np.corrcoef(fp32.ravel(), bf16.ravel())[0, 1]
    print(f"{name}: bf16 vs fp32 margins r {r:.5f}, max |d| {np.abs(fp32 - bf16).max():.3g} "
          f"(fp32 range {np.ptp(fp32):.3g})")
    assert r > 0.99, r


def _small_setup():
    torch.manual_seed(0)
    model = randomize_bn(build_model("resnet_tiny", in_channels=1, image_size=28)).eval()
    g = np.random.default_rng(0)
    examples = Examples(g.integers(0, 256, (24, 1, 28, 28), dtype=np.uint8), g.integers(0, 10, 24).astype(np.int64))
    return model, component_set(model, "resnet_tiny"), examples


def test_sample_store_on_gpu_equals_cpu(tmp_path):
    model, cset, examples = _small_setup()
    stores = {}
    for device in ("cpu", "cuda"):
        stores[device] = sample_store(tmp_path / device, copy.deepcopy(model).to(device), cset, examples, m=48,
                                      alpha=0.1, seed=3, shard=0, dtype="float32", device=device, progress=False)
    assert stores["cpu"].meta == stores["cuda"].meta  # same fingerprints: the device is not part of a store
    assert np.array_equal(stores["cpu"].masks, stores["cuda"].masks)
    np.testing.assert_allclose(np.asarray(stores["cuda"].outputs), np.asarray(stores["cpu"].outputs),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["loo", "gp", "nc", "ii"])
def test_baselines_on_gpu_equal_cpu(name):
    model, cset, examples = _small_setup()
    x, y = examples.tensors("cpu")
    kw = {"n_steps": 4} if name in ("nc", "ii") else {}
    cpu = compute_baseline(name, model, cset, x[:8], y[:8], margin, progress=False, **kw)
    gpu = compute_baseline(name, copy.deepcopy(model).cuda(), cset, x[:8].cuda(), y[:8].cuda(), margin,
                           progress=False, **kw)
    w_cpu, w_gpu = np.asarray(cpu.weights), np.asarray(gpu.weights)
    np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-3, atol=1e-4 * np.abs(w_cpu).max())


def test_regression_on_gpu_equals_cpu():
    rng = np.random.default_rng(0)
    keep = rng.random((3000, 200)) > 0.1
    y = keep @ rng.normal(size=(200, 50)) + 0.1 * rng.normal(size=(3000, 50))
    cpu = regression.fit_ols(regression.GramAccumulator.from_arrays(keep, y), components="")
    gpu = regression.fit_ols(regression.GramAccumulator.from_arrays(keep, y, device="cuda"), device="cuda",
                              components="")
    np.testing.assert_allclose(gpu.weights, cpu.weights, rtol=1e-6, atol=1e-8)


def test_dual_regression_on_gpu_equals_cpu():
    rng = np.random.default_rng(1)
    keep = rng.random((300, 1000)) > 0.05  # fewer masks than components: the dual form
    y = keep @ rng.normal(size=(1000, 20)) + 0.1 * rng.normal(size=(300, 20))
    cpu = regression.fit_dual(keep, y, components="")
    gpu = regression.fit_dual(keep, y, device="cuda", components="")
    np.testing.assert_allclose(gpu.weights, cpu.weights, rtol=1e-6, atol=1e-8 * np.abs(cpu.weights).max())


def test_training_on_gpu_learns_fashion_mnist():
    from coar.paper.data.fashion_mnist import load_fashion_mnist
    from coar.paper.training import accuracy, train_classifier

    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    norm = ((float(xtr.mean()) / 255,), (float(xtr.std()) / 255,))
    torch.manual_seed(0)
    model = build_model("resnet_tiny", in_channels=1, image_size=28).cuda()
    x = torch.as_tensor(xtr[:8000]).unsqueeze(1).cuda()
    y = torch.as_tensor(ytr[:8000]).cuda()
    train_classifier(model, x, y, epochs=2, lr=0.2, progress=False, norm=norm)
    xt, yt = torch.as_tensor(xte[:2000]).unsqueeze(1).cuda(), torch.as_tensor(yte[:2000]).cuda()
    acc = accuracy(model.eval(), xt, yt, norm=norm)
    assert acc > 0.75, acc
