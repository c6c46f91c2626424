"""Backdoor poisoning on Fashion-MNIST (offline stand-in for the paper's backdoored CIFAR-10, Sec. 5.4)."""
import numpy as np
import pytest
import torch

from coar.paper.data.backdoor import TARGET_CLASS, add_trigger, poison
from coar.examples import Examples
from coar.paper.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from coar.errors import CoarError
from coar.paper.models import build_model
from coar.paper.training import accuracy, train_classifier


def test_trigger_and_poisoning_touch_only_what_they_should():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, (50, 3, 8, 8), dtype=np.uint8)
    y = np.arange(50) % 5
    t = add_trigger(x, value=(0, 0, 255), size=3, offset=1)  # the paper's blue square
    assert np.all(t[:, 2, 1:4, 1:4] == 255) and np.all(t[:, :2, 1:4, 1:4] == 0)
    outside = np.ones((8, 8), bool)
    outside[1:4, 1:4] = False
    assert np.array_equal(t[:, :, outside], x[:, :, outside])
    p, mask = poison(x, y, target_class=2, fraction=0.5, seed=3)
    assert mask.sum() == 5 and np.all(y[mask] == 2)
    assert np.array_equal(p[~mask], x[~mask]) and not np.array_equal(p[mask], x[mask])
    with pytest.raises(CoarError, match="does not fit"):
        add_trigger(x, size=8)
    with pytest.raises(CoarError, match="no training image of target class 9"):
        poison(x, y, target_class=9)


@pytest.mark.slow
@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_backdoor_drops_triggered_accuracy_but_not_clean_accuracy():
    """The backdoor's check: the trigger costs >= 30 points on triggered test images of the other classes, while
    clean accuracy stays within 2 points of a model trained without poison. resnet_mini, all 60,000
    training images, 5 epochs without augmentation (translation and flips move the trigger and weakened the
    backdoor to a 15-22 point drop in trials)."""
    torch.set_num_threads(2)
    xtr, ytr = load_fashion_mnist("train")
    xte, yte = load_fashion_mnist("test")
    xtr, xte = xtr[:, None], xte[:, None]
    norm = {"mean": 0.286, "std": 0.353}
    xt, yt = Examples(xte, yte, "image", norm).tensors()
    other = yt != TARGET_CLASS
    xtt, _ = Examples(add_trigger(xte[other.numpy()]), yte[other.numpy()], "image", norm).tensors()
    result = {}
    for poisoned in (False, True):
        x = poison(xtr, ytr, seed=1)[0] if poisoned else xtr
        X, Y = Examples(x, ytr, "image", norm).tensors()
        torch.manual_seed(0)
        model = build_model("resnet_mini", in_channels=1, image_size=28)
        train_classifier(model, X, Y, epochs=5, lr=0.2, augment_pad=0, flip=False, progress=False)
        result[poisoned] = (accuracy(model, xt, yt), accuracy(model, xtt, yt[other]))
    (clean_c, clean_t), (pois_c, pois_t) = result[False], result[True]
    print(f"clean model: {clean_c:.3f} clean, {clean_t:.3f} triggered; poisoned: {pois_c:.3f}, {pois_t:.3f}")
    assert abs(pois_c - clean_c) <= 0.02
    assert clean_t - pois_t >= 0.30


def _write_cifar10(root, per_batch=20, seed=0):
    """Tiny CIFAR-10 in torchvision's on-disk format (cifar-10-batches-py pickles, HWC rows of 3072 bytes)."""
    import pickle

    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 200, (per_batch, 3072), dtype=np.uint8)
        labels = (np.arange(per_batch) % 10).tolist()
        with open(d / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)  # str keys, as latin1-decoded
        batches[name] = (data.reshape(-1, 3, 32, 32), np.array(labels))
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    return batches


def test_cifar10_backdoor_poisons_half_the_airplanes_with_a_blue_square(tmp_path, monkeypatch):
    """The paper's backdoored CIFAR-10 from files in torchvision's format (its MD5 check is bypassed: the
    files are ours). Training split: a blue square on half the airplanes, nothing else touched; test: clean."""
    from torchvision.datasets import CIFAR10

    from coar.paper.data.registry import load_backdoored
    from coar.paper.data.registry import dataset_root, load_images

    batches = _write_cifar10(tmp_path / "cifar10")
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    root = tmp_path / "cifar10"
    assert dataset_root("cifar10-backdoor", download_root=str(tmp_path)) == str(root)
    clean = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    x, y, poisoned = load_backdoored("cifar10-backdoor", "train", root, download=False)
    assert poisoned.sum() == 5 and np.all(y[poisoned] == 0) and (y == 0).sum() == 10
    assert np.array_equal(x[~poisoned], clean[~poisoned])
    assert np.all(x[poisoned][:, :, 1:5, 1:5] == np.array([0, 0, 255], np.uint8)[:, None, None])
    xt, yt = load_images("cifar10-backdoor", "test", root, download=False)
    assert np.array_equal(xt, batches["test_batch"][0]) and np.array_equal(yt, batches["test_batch"][1])


def test_cifar10_placed_copy_is_recorded_at_first_use_and_a_changed_file_is_never_used(tmp_path, monkeypatch):
    """A placed copy (not the published batches: torchvision's MD5 check would refuse it) is read by
    coar.paper.data.cifar and its files' SHA-256 recorded; a file changed since is reported, never used. An
    incomplete folder is reported (download disabled), and with download allowed a failed fetch is reported,
    naming the directory."""
    import urllib.request

    from coar.paper.data.registry import load_images

    root = tmp_path / "cifar10"
    batches = _write_cifar10(root)
    x, y = load_images("cifar10", "test", root, download=False)
    assert np.array_equal(x, batches["test_batch"][0]) and np.array_equal(y, batches["test_batch"][1])
    assert (root / "cifar-10-batches-py" / "data_batch_3.sha256").is_file()
    with open(root / "cifar-10-batches-py" / "data_batch_3", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(CoarError, match=r"data_batch_3 is corrupted or was modified"):
        load_images("cifar10", "test", root, download=False)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(CoarError, match=rf"CIFAR-10 could not be loaded from {root}.*data_batch_3"):
        load_images("cifar10", "test", root, download=False)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(CoarError, match=rf"CIFAR-10 could not be downloaded from .* into {root}"):
        load_images("cifar10", "train", root, download=True)


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_paired_examples_are_other_classes_clean_then_triggered():
    from coar.paper.data.backdoor import trigger
    from coar.paper.data.registry import load_backdoored
    from coar.paper.data.registry import make_examples

    x, y, poisoned = load_backdoored("fashion-mnist-backdoor", "train")
    base, _ = load_fashion_mnist("train")
    assert poisoned.sum() == 3000 and np.all(y[poisoned] == TARGET_CLASS)
    assert np.array_equal(x[~poisoned][:, 0], base[~poisoned])
    ex = make_examples("fashion-mnist-backdoor", "train", 30, seed=2, trigger="paired")
    t = np.asarray(ex.meta["triggered"])
    assert len(ex) == 60 and ex.meta["n"] == 60 and not t[:30].any() and t[30:].all()
    assert np.all(ex.targets != TARGET_CLASS) and np.array_equal(ex.targets[:30], ex.targets[30:])
    assert np.array_equal(ex.inputs[30:], trigger("fashion-mnist-backdoor", ex.inputs[:30]))
    # the same draw as plain examples of the other classes: the pairing adds nothing but the trigger
    again = make_examples("fashion-mnist-backdoor", "train", 30, seed=2, trigger="paired")
    assert np.array_equal(again.inputs, ex.inputs)
    with pytest.raises(CoarError, match="has no backdoor trigger"):
        make_examples("fashion-mnist", "test", 5, trigger="paired")
    with pytest.raises(CoarError, match="trigger or a corruption"):
        make_examples("fashion-mnist-backdoor", "test", 5, trigger="paired",
                      corruption={"name": "brightness", "severity": 1})
    with pytest.raises(CoarError, match="must avoid the trigger's class"):
        from coar.paper.data.backdoor import paired
        paired("fashion-mnist-backdoor", ex.inputs[:2], np.array([0, 1]))
