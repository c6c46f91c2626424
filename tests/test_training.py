"""Training on real data (Fashion-MNIST) on this CPU: a stated accuracy in float32 and under bfloat16
autocast (the precision train_classifier picks on GPUs), and the checkpoint's provenance."""
import inspect

import numpy as np
import pytest
import torch

from coar.paper.data.fashion_mnist import fashion_mnist_examples
from coar.paper.data.fashion_mnist import find_fashion_mnist
from coar.errors import CoarError
from coar.paper.models import build_model
from coar.paper.training import accuracy, train_classifier, training_memory_format, training_precision


def _train_tiny(**kw):
    """resnet_tiny trained 2 epochs on 5,000 Fashion-MNIST images: (info, test accuracy, the model)."""
    torch.set_num_threads(2)
    x, y = fashion_mnist_examples("train", 5000, seed=0).tensors()
    xt, yt = fashion_mnist_examples("test", 2000, seed=0).tensors()
    torch.manual_seed(0)
    model = build_model("resnet_tiny", in_channels=1, image_size=28)
    info = train_classifier(model, x, y, epochs=2, lr=0.2, progress=False, **kw)
    return info, accuracy(model, xt, yt), model


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_float32_and_bfloat16_training_reach_the_same_stated_accuracy():
    acc, weights = {}, {}
    for precision in ("float32", "bfloat16"):
        info, acc[precision], model = _train_tiny(precision=precision)
        assert info["precision"] == precision
        weights[precision] = model.linear.weight.detach().clone()
        assert model.linear.weight.dtype == torch.float32  # autocast leaves the weights in float32
    print(acc)
    # 5,000 images, 2 epochs (3 s on 2 cores): 71.2% in float32, 71.0% in bfloat16 when written
    assert min(acc.values()) >= 0.68 and abs(acc["float32"] - acc["bfloat16"]) <= 0.03
    assert not torch.equal(weights["float32"], weights["bfloat16"])  # bfloat16 really changed the arithmetic


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_channels_last_training_reaches_the_contiguous_accuracy_and_returns_a_contiguous_model():
    acc, weights = {}, {}
    for fmt in ("contiguous", "auto"):
        info, acc[fmt], model = _train_tiny(memory_format=fmt)
        assert info["memory_format"] == ("channels_last" if fmt == "auto" else "contiguous")
        assert all(p.is_contiguous() for p in model.parameters())
        weights[fmt] = model.conv1.weight.detach().clone()
    assert min(acc.values()) >= 0.68 and abs(acc["contiguous"] - acc["auto"]) <= 0.03
    assert not torch.equal(weights["contiguous"], weights["auto"])  # the other kernels really ran
    # the default stays contiguous: the presets' published numbers come from contiguous training
    assert inspect.signature(train_classifier).parameters["memory_format"].default == "contiguous"


def test_training_memory_format_follows_the_convolution_flops():
    image = torch.zeros(2, 1, 28, 28)
    model = build_model("resnet_tiny", in_channels=1, image_size=28).train()
    assert training_memory_format(model, image) == "channels_last" and model.training
    assert model.bn1.num_batches_tracked.item() == 0  # counted in eval mode: BatchNorm statistics untouched
    assert training_memory_format(build_model("vit_tiny", in_channels=1, image_size=28), image) == "contiguous"
    assert training_memory_format(build_model("mlp_small", in_channels=1, image_size=28), image) == "contiguous"
    with pytest.raises(CoarError, match="memory format"):
        train_classifier(model, image, torch.zeros(2, dtype=torch.long), memory_format="nhwc", progress=False)


def test_precision_is_automatic_only_when_not_given():
    assert training_precision("cpu") == "float32"  # bfloat16 autocast is chosen on GPUs that support it
    assert training_precision("cpu", "bfloat16") == "bfloat16"
    with pytest.raises(CoarError, match="float32, bfloat16 or null"):
        training_precision("cpu", "fp16")


def test_checkpoint_metadata_is_json_so_it_loads_without_unpickling_objects(tmp_path):
    import numpy as np

    from coar.paper.training import load_checkpoint, save_checkpoint

    model = build_model("resnet_tiny", in_channels=1, image_size=28)
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 28}
    # torch.__version__ is a str subclass that torch.load(weights_only=True) refuses; stored as its JSON text
    save_checkpoint(tmp_path / "m.pt", model, "resnet_tiny", kwargs, {"torch": torch.__version__, "split": ("a", 1)})
    _, ck = load_checkpoint(tmp_path / "m.pt")
    assert ck["meta"] == {"torch": str(torch.__version__), "split": ["a", 1]} and type(ck["meta"]["torch"]) is str
    with pytest.raises(CoarError, match="must be JSON data"):
        save_checkpoint(tmp_path / "bad.pt", model, "resnet_tiny", kwargs, {"accuracy": np.float32(0.5)})
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_uint8_images_standardised_per_batch_train_the_same_weights_as_a_normalised_set():
    """The workflow keeps training images uint8 on the device (a quarter of the memory) and standardises each
    batch: bitwise the same training as normalising the whole set first, augmentation included."""
    from coar.paper.training import accuracy

    torch.set_num_threads(2)
    ex = fashion_mnist_examples("train", 600, seed=0)
    states = []
    for raw in (False, True):
        x, y = ex.tensors(normalized=not raw)
        assert x.dtype == (torch.uint8 if raw else torch.float32)
        torch.manual_seed(0)
        model = build_model("resnet_tiny", in_channels=1, image_size=28)
        train_classifier(model, x, y, epochs=1, lr=0.2, progress=False, norm=ex.norm() if raw else None)
        states.append((model.state_dict(), accuracy(model, x, y, batch_size=128, norm=ex.norm() if raw else None)))
    (a, acc_a), (b, acc_b) = states
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and acc_a == acc_b
    x, y = ex.tensors(normalized=False)
    with pytest.raises(CoarError, match="need norm"):
        accuracy(model, x, y)
    with pytest.raises(CoarError, match="already normalised"):
        accuracy(model, *ex.tensors(), norm=ex.norm())


@pytest.mark.parametrize("pct_start", [0.25, 0.1])
def test_one_cycle_runs_any_number_of_steps_with_positive_rates_up_to_the_peak(pct_start):
    """torch's OneCycleLR divides by zero when the warm-up is exactly one step (4 steps at 0.25, 10 at 0.1)."""
    from coar.paper.training import one_cycle

    for steps in range(1, 41):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        sched = one_cycle(opt, 0.1, steps, pct_start)
        used = []
        for _ in range(steps):
            used.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert all(0 < lr <= 0.1 + 1e-12 for lr in used), (steps, used)
        if steps >= 12:  # a real warm-up: the rate rises to the peak, then falls
            peak = int(np.argmax(used))
            assert 0 < peak < steps - 1 and max(used) > 0.09


@pytest.mark.parametrize("arch,kwargs,shape", [
    ("resnet_tiny", {"num_classes": 10, "in_channels": 1, "image_size": 28}, (2, 1, 28, 28)),
    ("vit_tiny", {"num_classes": 10, "in_channels": 1, "image_size": 28}, (2, 1, 28, 28)),
    ("resnet50", {"num_classes": 1000, "image_size": 224}, (1, 3, 224, 224)),
])
def test_a_checkpoint_loads_without_random_init_into_the_same_model(tmp_path, arch, kwargs, shape):
    """load_checkpoint builds on the meta device and assigns the saved tensors: the same parameters, buffers
    and outputs as building the model and loading its state the ordinary way, with nothing left on meta."""
    from coar.paper.training import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model(arch, **kwargs).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so buffers matter
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    save_checkpoint(tmp_path / "m.pt", model, arch, kwargs)
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert not any(t.is_meta for t in (*loaded.parameters(), *loaded.buffers()))
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
