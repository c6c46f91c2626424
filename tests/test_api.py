"""The front door: coar.attribute / coar.evaluate / coar.edit on models the library has no table for."""
import doctest
import importlib
import inspect
import pkgutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import coar
import coar.api
from coar.paper.data.fashion_mnist import DEBIAN_ROOT
from coar.errors import ArgumentError, StoreMismatchError

needs_fashion = pytest.mark.skipif(not DEBIAN_ROOT.exists(), reason="Debian's dataset-fashion-mnist is not installed")

# A model the library has no table for: its components are given as rules (4 conv channels + 8 hidden units).
TINY_RULES = [coar.Rule(r"0", ("Conv2d",)), coar.Rule(r"3", ("Linear",))]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(),
                         nn.Linear(8, 3)).eval()


def tiny_data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


TINY = dict(components=TINY_RULES, masks=48, alpha=0.25, masks_per_shard=20, batch_size=5, masks_per_pass=3,
            progress=False)


# ------------------------------------------------------------------------------------------- the names
def test_coar_evaluate_is_the_function_after_every_submodule_is_imported():
    """coar.evaluate was a submodule; a function of that name would be replaced by an import of it."""
    for info in pkgutil.walk_packages(coar.__path__, "coar."):
        importlib.import_module(info.name)
    assert inspect.isfunction(coar.evaluate) and coar.evaluate.__module__ == "coar.api"
    assert inspect.isfunction(coar.attribute) and inspect.isfunction(coar.edit)
    from coar import attribute, edit, evaluate  # noqa: F401  (the same names by `from coar import`)

    assert evaluate is coar.api.evaluate
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("coar.evaluate")
    assert coar.Rule is coar.components.Rule and coar.ComponentSet is coar.components.ComponentSet


def test_importing_coar_stays_torch_free():
    import subprocess
    import sys

    code = "import sys, coar, coar.store, coar.correlation; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_docstring_examples_run():
    result = doctest.testmod(coar.api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


def test_fit_chunks_reads_in_the_chunks_load_shards_yields():
    """The in-memory fit must be fed the chunks the store fit reads, or the float64 sums differ in the last bits."""
    from coar.store import load_shards

    assert coar.api.FIT_CHUNK_ROWS == inspect.signature(load_shards).parameters["chunk_rows"].default


# ------------------------------------------------------------------------------------ store and memory
def test_memory_and_store_give_bitwise_the_same_attributions_and_the_store_holds_the_shard_masks(tmp_path):
    from coar.sampling import sample_masks
    from coar.store import ShardStore

    model, (x, y) = tiny_model(), tiny_data()
    mem = coar.attribute(model, x, y, **TINY)
    st = coar.attribute(model, x, y, store=tmp_path / "s", **TINY)
    assert np.array_equal(mem.weights, st.weights) and np.array_equal(mem.bias, st.bias)
    assert mem.meta["provenance"] == st.meta["provenance"]
    assert mem.meta["provenance"]["shards"] == [[0, 0], [0, 1], [0, 2]]  # 48 masks in shards of 20, 20, 8
    assert mem.components == coar.component_set(model, TINY_RULES).fingerprint() != ""
    for shard, m in enumerate((20, 20, 8)):
        with ShardStore.open(tmp_path / "s" / f"shard-{shard:03d}", readonly=True) as store:
            assert store.meta["dtype"] == "float32" and store.meta["m"] == m
            assert np.array_equal(store.masks, sample_masks(12, m, 0.25, 0, shard))
    # other settings in the same directory are refused, naming what differs
    with pytest.raises(StoreMismatchError, match="alpha"):
        coar.attribute(model, x, y, store=tmp_path / "s", **{**TINY, "alpha": 0.5})


def test_an_interrupted_store_resumes_to_the_same_attributions(tmp_path, monkeypatch):
    model, (x, y) = tiny_model(), tiny_data()
    whole = coar.attribute(model, x, y, **TINY)
    real = coar.api._Setup.outputs
    calls = []

    def dies_in_the_second_shard(self, keep):
        calls.append(len(keep))
        if len(calls) == 3:  # blocks of 12 masks: 2 blocks fill shard 0, the third is in shard 1
            raise KeyboardInterrupt
        return real(self, keep)

    monkeypatch.setattr(coar.api._Setup, "outputs", dies_in_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        coar.attribute(model, x, y, store=tmp_path / "s", **TINY)
    monkeypatch.setattr(coar.api._Setup, "outputs", real)
    assert (tmp_path / "s" / "shard-000" / "COMPLETE").is_file()
    assert not (tmp_path / "s" / "shard-001" / "COMPLETE").exists()
    resumed = coar.attribute(model, x, y, store=tmp_path / "s", **TINY)
    assert np.array_equal(resumed.weights, whole.weights) and np.array_equal(resumed.bias, whole.bias)
    again = coar.attribute(model, x, y, store=tmp_path / "s", **TINY)  # complete: nothing is evaluated again
    assert np.array_equal(again.weights, whole.weights)


def test_masks_do_not_depend_on_batching_and_outputs_barely(tmp_path):
    model, (x, y) = tiny_model(), tiny_data()
    a = coar.attribute(model, x, y, **TINY)
    b = coar.attribute(model, x, y, **{**TINY, "batch_size": 12, "masks_per_pass": 7})
    assert a.meta["provenance"] == b.meta["provenance"]
    np.testing.assert_allclose(a.predict(np.ones((1, 12), bool)), b.predict(np.ones((1, 12), bool)), atol=1e-4)
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-4)


def test_a_dataloader_gives_the_same_attributions_as_its_tensors():
    model, (x, y) = tiny_model(), tiny_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=5, shuffle=False)
    a = coar.attribute(model, loader, **TINY)
    b = coar.attribute(model, x, y, **TINY)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
    table = coar.evaluate(a, model, loader, components=TINY_RULES, masks=30, alpha=0.25, progress=False)
    assert len(table) == len(x)


def test_caller_inputs_and_model_are_never_changed():
    model, (x, y) = tiny_model(), tiny_data()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x0, y0 = x.clone(), y.clone()
    attr = coar.attribute(model, x, y, **TINY)
    coar.evaluate(attr, model, x, y, components=TINY_RULES, masks=20, alpha=0.25, progress=False)
    edited, _ = coar.edit(model, attr, TINY_RULES, targets=[0], references=[1, 2], k=2)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert edited is not model and not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_a_callable_output_is_recorded_by_name_and_must_be_given_again_to_evaluate():
    model, (x, y) = tiny_model(), tiny_data()

    def class_0_logit(logits, targets):
        return logits[:, 0]

    attr = coar.attribute(model, x, y, output=class_0_logit, **TINY)
    assert attr.meta["provenance"]["output_fn"].startswith("callable:") and "class_0_logit" in \
        attr.meta["provenance"]["output_fn"]
    by_name = coar.attribute(model, x, y, output="logit:0", **TINY)  # the library's own "logit:<class>"
    assert np.array_equal(attr.weights, by_name.weights)
    with pytest.raises(ArgumentError, match="^output: "):
        coar.evaluate(attr, model, x, y, components=TINY_RULES, masks=20, alpha=0.25, progress=False)
    table = coar.evaluate(attr, model, x, y, components=TINY_RULES, masks=20, alpha=0.25, output=class_0_logit,
                          progress=False)
    assert table["correlation"].notna().all()


@pytest.mark.cuda
def test_on_a_gpu_the_store_equals_memory_and_the_cpu_run_closely(tmp_path):
    model, (x, y) = tiny_model(), tiny_data()
    cpu = coar.attribute(model, x, y, **TINY)
    gpu = coar.attribute(model, x, y, device="cuda", **TINY)
    stored = coar.attribute(model, x, y, device="cuda", store=tmp_path / "s", **TINY)
    assert next(model.parameters()).device.type == "cpu"  # the caller's model stays where it was
    assert np.array_equal(gpu.weights, stored.weights) and np.array_equal(gpu.bias, stored.bias)
    np.testing.assert_allclose(gpu.weights, cpu.weights, atol=1e-3)


def test_api_equals_the_workflow_pipeline_on_a_library_table(tmp_path):
    """On a table the library has (resnet_tiny), the API's store-backed run writes the outputs the workflow's
    sample_store writes for the same masks, and its attributions equal fit_stores on the workflow's shards."""
    from coar.examples import Examples
    from coar.paper.models import build_model
    from coar.pipeline import fit_stores, sample_store
    from coar.store import ShardStore

    torch.manual_seed(0)
    model = build_model("resnet_tiny", num_classes=10, in_channels=1, image_size=28)
    g = np.random.default_rng(0)
    ex = Examples(g.integers(0, 256, (6, 1, 28, 28), dtype=np.uint8), g.integers(0, 10, 6), "image",
                  {"mean": 0.2860, "std": 0.3530})
    x, y = ex.tensors()
    kw = dict(components="resnet_tiny", alpha=0.1, batch_size=6, masks_per_pass=4, progress=False)
    attr = coar.attribute(model, x, y, masks=70, masks_per_shard=35, store=tmp_path / "api", **kw)
    cset = coar.component_set(model, "resnet_tiny")
    paths = [sample_store(tmp_path / "wf" / f"shard-{s}", model, cset, ex, m=35, alpha=0.1, seed=0, shard=s,
                          dtype="float32", batch_size=6, masks_per_pass=4, progress=False).path for s in range(2)]
    for s, path in enumerate(paths):
        with ShardStore.open(path, readonly=True) as wf, ShardStore.open(tmp_path / "api" / f"shard-{s:03d}",
                                                                          readonly=True) as api:
            assert np.array_equal(wf.masks, api.masks) and np.array_equal(wf.outputs, api.outputs)
            assert wf.meta["model_fingerprint"] == api.meta["model_fingerprint"]
    ref = fit_stores(paths)
    assert np.array_equal(attr.weights, ref.weights) and np.array_equal(attr.bias, ref.bias)
    assert attr.components == ref.components == cset.fingerprint()


# ------------------------------------------------------------------------------------------- validation
def _bn_in_training():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 8), nn.ReLU(),
                      nn.Linear(8, 3))
    return m.train()


def _wrong_shape(logits, targets):
    return logits  # [n, 3], not [n]


class _FunctionalDropout(nn.Sequential):
    """The tiny model with F.dropout(training=self.training) in its forward: no Dropout module to spot."""

    def __init__(self):
        super().__init__(*tiny_model())

    def forward(self, x):
        return F.dropout(super().forward(x), 0.5, training=self.training)


class _Noisy(nn.Sequential):
    """In eval mode, yet random: its forward draws noise itself."""

    def __init__(self):
        super().__init__(*tiny_model())

    def forward(self, x):
        return super().forward(x) + torch.randn(x.shape[0], 3)


def _dropout2d_in_training():
    model = tiny_model()
    model.insert(1, nn.Dropout2d(0.5))  # a Dropout2d is not an nn.Dropout
    return model.train()


BAD_ATTRIBUTE = [
    ("model", dict(model="a model")),
    ("model", dict(model=_bn_in_training())),
    ("model", dict(model=_dropout2d_in_training())),
    ("model", dict(model=_FunctionalDropout().train())),
    ("model", dict(model=_Noisy().eval())),
    ("inputs", dict(inputs=np.zeros((12, 1, 8, 8), np.float32))),
    ("inputs", dict(inputs=torch.zeros(12, 1, 5, 5))),  # the model cannot take them
    ("inputs", dict(inputs=torch.full((12, 1, 8, 8), float("nan")))),
    ("targets", dict(targets=torch.zeros(11, dtype=torch.long))),
    ("targets", dict(targets=torch.full((12,), 5))),  # 3 classes
    ("targets", dict(targets=None)),
    ("targets", dict(targets=[0] * 12)),
    ("alpha", dict(alpha=0.0)),
    ("alpha", dict(alpha=1.5)),
    ("alpha", dict(alpha=0.01)),  # round(0.01 * 12) = 0 components ablated
    ("alpha", dict(alpha=0.97)),  # round(0.97 * 12) = 12: every mask ablates every component
    ("masks", dict(masks=0)),
    ("masks", dict(masks="100")),
    ("masks", dict(masks=10 ** 12)),  # about 15 TiB of masks and outputs: refused before anything is drawn
    ("seed", dict(seed=-1)),
    ("output", dict(output="nope")),
    ("output", dict(output=_wrong_shape)),
    ("components", dict(components="no_such_table")),
    ("components", dict(components=[])),
    ("components", dict(components=[coar.Rule(r"nothing", ("Linear",))])),
    ("inputs", dict(inputs=torch.zeros(12, 4, dtype=torch.uint8))),
    ("method", dict(method="lars")),
    ("method", dict(method="prior")),
    ("method.ranks", dict(method=coar.FitSettings("ols", ranks=(1,)))),
    ("method.prior", dict(method=coar.FitSettings("prior", prior="loo.npz"))),
    ("batch_size", dict(batch_size=0)),
    ("masks_per_pass", dict(masks_per_pass=0)),
    ("mechanism", dict(mechanism="surgery")),
    ("mechanism", dict(mechanism="weights", masks_per_pass=3)),
    ("mechanism", dict(mechanism="shared", components=[coar.Rule(r"3", ("Linear",), site="input")])),
    ("memory_format", dict(memory_format="nhwc")),
    ("batchnorm", dict(batchnorm="merge")),
    ("batchnorm", dict(batchnorm="fold")),  # the tiny model has no BatchNorm to fold
    ("masks_per_shard", dict(masks_per_shard=0)),
    ("ablation", dict(ablation="mean")),
    ("scheme", dict(scheme="poisson")),
]


def test_sizes_are_checked_against_memory_and_disk_before_anything_is_drawn(tmp_path, tiny_attr):
    model, x, y, attr = tiny_attr
    with pytest.raises(ArgumentError, match=r"^store: 1,000,000,000,000 masks .* TiB under .* free there"):
        coar.attribute(model, x, y, **{**TINY, "masks": 10 ** 12, "store": tmp_path / "big"})
    assert not (tmp_path / "big").exists()
    with pytest.raises(ArgumentError, match=r"^masks: .* TiB of memory, more than the .* available; use fewer masks$"):
        coar.evaluate(attr, model, x, y, components=TINY_RULES, masks=10 ** 12, alpha=0.25, progress=False)


@pytest.mark.parametrize("model,words", [(_FunctionalDropout().train(), "modules in training mode: _FunctionalDropout"),
                                         (_Noisy().eval(), "draws random numbers itself")])
def test_a_random_model_is_refused_after_two_unablated_passes(model, words):
    x, y = tiny_data()
    with pytest.raises(ArgumentError, match="not deterministic: two unablated passes on the same inputs differ") as e:
        coar.attribute(model, x, y, **TINY)
    assert words in str(e.value)


@pytest.mark.parametrize("argument,change", BAD_ATTRIBUTE, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_ATTRIBUTE)])
def test_attribute_refuses_bad_arguments_naming_them(argument, change):
    x, y = tiny_data()
    call = dict(model=tiny_model(), inputs=x, targets=y, **TINY)
    call.update(change)
    with pytest.raises(ArgumentError, match=rf"^{argument}: ") as info:
        coar.attribute(call.pop("model"), call.pop("inputs"), call.pop("targets"), **call)
    assert info.value.argument == argument and isinstance(info.value, coar.CoarError)


def test_a_dataloader_with_targets_is_refused():
    x, y = tiny_data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    with pytest.raises(ArgumentError, match="^targets: "):
        coar.attribute(tiny_model(), loader, y, **TINY)


@pytest.fixture(scope="module")
def tiny_attr():
    model, (x, y) = tiny_model(), tiny_data()
    return model, x, y, coar.attribute(model, x, y, **TINY)


@pytest.mark.parametrize("argument,change", [
    ("k", dict(k=13)), ("k", dict(k=12)), ("k", dict(k=0)), ("k", dict(k=1.5)),  # 12 components: k=12 ablates all
    ("targets", dict(targets=[12])), ("targets", dict(targets=[])), ("targets", dict(targets=[1, 1])),
    ("references", dict(references=[-1])), ("references", dict(references=[0, 2])),
    ("mode", dict(mode="flip")),
    ("components", dict(components=[coar.Rule(r"3", ("Linear",))])),
    ("model", dict(model=tiny_model(seed=1))),
    ("attributions", dict(attributions="attr.npz")),
])
def test_edit_refuses_bad_arguments_naming_them(tiny_attr, argument, change):
    model, _, _, attr = tiny_attr
    call = dict(model=model, attributions=attr, components=TINY_RULES, targets=[0], references=[1, 2], k=2)
    call.update(change)
    with pytest.raises(ArgumentError, match=rf"^{argument}: "):
        coar.edit(call.pop("model"), call.pop("attributions"), call.pop("components"), **call)


@pytest.mark.parametrize("argument,change", [
    ("seed", dict(seed=0)),  # the training masks' seed
    ("inputs", dict(inputs=tiny_data(seed=1)[0])),
    ("model", dict(model=tiny_model(seed=1))),
    ("masks", dict(masks=1)),
    ("alpha", dict(alpha=1.0)),
])
def test_evaluate_refuses_bad_arguments_naming_them(tiny_attr, argument, change):
    model, x, y, attr = tiny_attr
    call = dict(model=model, inputs=x, targets=y, components=TINY_RULES, masks=20, alpha=0.25, progress=False)
    call.update(change)
    with pytest.raises(ArgumentError, match=rf"^{argument}: "):
        coar.evaluate(attr, call.pop("model"), call.pop("inputs"), call.pop("targets"), **call)


def test_default_batching_per_device_and_overrides():
    assert coar.api.default_batching("cpu", 784, 500) == (250, 1)  # one mask a pass, two equal batches
    assert coar.api.default_batching("cpu", 784, 200) == (200, 1)
    assert coar.api.default_batching("cpu", 784, 64) == (64, 1)
    assert coar.api.default_batching("cpu", 784, 5) == (5, 51)  # 255 rows: 51 masks a pass
    assert coar.api.default_batching("cuda", 3 * 224 * 224, 50_000) == (443, 1)  # 113 batches of at most 445
    assert coar.api.default_batching("cuda", 3 * 32 * 32, 64) == (64, 16)
    assert coar.api.default_batching("cuda", 3 * 32 * 32, 600) == (600, 1)
    model, (x, y) = tiny_model(), tiny_data()
    for kw, want in ((dict(), ("hooks", 12, 21)), (dict(batch_size=4), ("hooks", 4, 64)),
                     (dict(batch_size=4, masks_per_pass=3), ("hooks", 4, 3)), (dict(masks_per_pass=1), ("weights", 12, 1)),
                     (dict(mechanism="weights"), ("weights", 12, 1))):
        s = coar.api._Setup(model, x, y, TINY_RULES, coar.SampleSettings(2, 0.25, **kw), None)
        p = s.engine.plan
        assert (p.mechanism, p.batch_size, p.masks_per_pass) == want, kw
        assert s.block == p.masks_per_call


def test_every_mechanism_gives_the_same_attributions():
    model, (x, y) = tiny_model(), tiny_data()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    auto = coar.attribute(model, x, y, **{**TINY, "batch_size": None, "masks_per_pass": None})
    for mechanism, fmt in (("weights", "contiguous"), ("weights", "channels_last"), ("hooks", "channels_last"),
                           ("shared", "contiguous")):
        other = coar.attribute(model, x, y, **{**TINY, "batch_size": None, "masks_per_pass": None,
                                               "mechanism": mechanism, "memory_format": fmt})
        np.testing.assert_allclose(other.weights, auto.weights, atol=1e-4)
        assert other.meta["provenance"] == auto.meta["provenance"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_folded_and_kept_batchnorm_give_the_same_attributions():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8),
                          nn.ReLU(), nn.Linear(8, 3))
    model(torch.randn(32, 1, 8, 8))  # training-mode pass: non-trivial running statistics
    model.eval()
    x, y = tiny_data()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kept = coar.attribute(model, x, y, **{**TINY, "batchnorm": "keep"})
    folded = coar.attribute(model, x, y, **{**TINY, "batchnorm": "fold"})
    np.testing.assert_allclose(folded.weights, kept.weights, atol=1e-4)
    assert np.abs(kept.weights).max() > 1e-2 and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


# ------------------------------------------------------------------------ acceptance on Fashion-MNIST
def fashion_net():
    """Convs and linears in a plain nn.Sequential: no table of the library describes it."""
    return nn.Sequential(nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))


FASHION_RULES = [coar.Rule(r"0|2", ("Conv2d",)), coar.Rule(r"5", ("Linear",))]  # 8 + 16 + 32 = 56 components
FASHION = dict(components=FASHION_RULES, masks=500, alpha=0.05, progress=False)


@pytest.fixture(scope="module")
def fashion():
    from coar.paper.data.fashion_mnist import fashion_mnist_examples

    torch.manual_seed(0)
    model = fashion_net()
    xt, yt = fashion_mnist_examples("train", 2000, seed=0).tensors()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for i in torch.randperm(len(xt)).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i]), yt[i]).backward()
            opt.step()
    model.eval()
    x, y = fashion_mnist_examples("test", 128, seed=1).tensors()
    t = time.perf_counter()
    attr = coar.attribute(model, x, y, **FASHION)
    return model, x, y, attr, time.perf_counter() - t


@needs_fashion
@pytest.mark.slow
def test_acceptance_a_custom_sequential_on_fashion_mnist(fashion, tmp_path):
    """Rules on a model without a table: mean correlation >= 0.8 on fresh masks, and the store-backed run gives
    bitwise the in-memory attributions."""
    model, x, y, attr, seconds = fashion
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.6
    assert attr.weights.shape == (128, 56)
    table = coar.evaluate(attr, model, x, y, components=FASHION_RULES, masks=200, alpha=0.05, progress=False)
    mean = table["correlation"].fillna(0).mean()
    print(f"\nfashion-mnist custom net: accuracy {accuracy:.3f}, mean r {mean:.3f} on 200 fresh masks, "
          f"attribute {seconds:.1f} s")
    assert mean >= 0.8
    stored = coar.attribute(model, x, y, store=tmp_path / "store", **FASHION)
    assert np.array_equal(stored.weights, attr.weights) and np.array_equal(stored.bias, attr.bias)


@needs_fashion
@pytest.mark.slow
def test_edit_moves_the_target_margin_in_the_intended_direction_on_a_copy(fashion):
    from coar.outputs import margin

    model, x, y, attr, _ = fashion
    with torch.no_grad():
        before = margin(model(x), y)
    worst = int(before.argmin())  # misclassified: "fix" raises its margin
    fragile = int(torch.where(before > 0, before, torch.inf).argmin())  # barely right: "induce" lowers its margin
    cset = coar.component_set(model, FASHION_RULES)
    for mode, target, sign in (("fix", worst, 1), ("induce", fragile, -1)):
        references = [i for i in range(40) if i != target]
        edited, ablated = coar.edit(model, attr, FASHION_RULES, targets=[target], references=references, k=3,
                                    mode=mode)
        assert edited is not model and len(ablated) == 3
        for j in ablated:
            g, u = cset.locate(int(j))
            assert torch.all(edited.get_submodule(cset.groups[g].module).weight[u] == 0)
            assert torch.any(model.get_submodule(cset.groups[g].module).weight[u] != 0)
        with torch.no_grad():
            after = margin(edited(x[target: target + 1]), y[target: target + 1])
        assert sign * (after.item() - before[target].item()) > 0.1, (mode, before[target].item(), after.item())


# ------------------------------------------------------------------------------------------ examples/
def run_example(name, argv):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.mark.parametrize("name", ["image_folder", "language_model", "edit_prediction"])
def test_every_example_has_a_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_example(name, ["--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_example_image_folder_on_a_few_pngs(tmp_path, capsys):
    from PIL import Image

    g = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(3):
            pixels = g.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / cls / f"{i}.png")
    mean = run_example("image_folder", ["--images", str(tmp_path / "images"), "--size", "32", "--masks", "24",
                                        "--alpha", "0.05", "--test-masks", "8", "--store", str(tmp_path / "store"),
                                        "--out", str(tmp_path / "attr.npz")])
    out = capsys.readouterr().out
    assert "6 images, 3904 components: mean correlation" in out and np.isfinite(mean)
    attr = coar.Attributions.load(tmp_path / "attr.npz")
    assert attr.weights.shape == (6, 3904) and (tmp_path / "store" / "shard-000" / "COMPLETE").is_file()


def test_example_language_model_on_a_tiny_gpt2(capsys):
    mean = run_example("language_model", ["--tiny", "--masks", "40", "--test-masks", "10", "--alpha", "0.05"])
    out = capsys.readouterr().out
    # 2 layers x (32 c_attn + 32 c_proj + 32 c_fc + 128 c_proj input rows)
    assert "5 sentences, 448 components: mean correlation" in out and np.isfinite(mean)


@needs_fashion
def test_example_edit_prediction_on_a_small_fashion_mnist_copy(tmp_path, capsys):
    from coar.paper.data.fashion_mnist import FILES, load_fashion_mnist, write_idx

    for split, n in (("train", 600), ("test", 100)):
        images, labels = load_fashion_mnist(split)
        write_idx(tmp_path / FILES[split][0], images[:n])
        write_idx(tmp_path / FILES[split][1], labels[:n].astype(np.uint8))
    result = run_example("edit_prediction", ["--data", str(tmp_path), "--train", "600", "--epochs", "3", "--examples",
                                             "60", "--masks", "300", "--references", "30", "--max-k", "3"])
    assert 1 <= result["k"] == len(result["ablated"]) <= 3 and "k=1: ablating" in capsys.readouterr().out
    assert result["margin_after"] > result["margin_before"]
