"""Backdoor poisoning on Fashion-MNIST (offline stand-in for the paper's backdoored CIFAR-10, Sec. 5.4)."""
import numpy as np
import pytest
import torch

from coar.data.backdoor import TARGET_CLASS, add_trigger, poison
from coar.data.examples import Examples
from coar.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from coar.errors import CoarError
from coar.models import build_model
from coar.training import accuracy, train_classifier


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
    """Issue 4's check: the trigger costs >= 30 points on triggered test images of the other classes, while
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
