"""Corrupted evaluation sets (paper Fig. 10): our synthetic corruptions and the CIFAR-10-C reader, the latter
on small files in the release's on-disk format that the test writes itself."""
import numpy as np
import pytest

from coar.paper.data.corruptions import SYNTHETIC_NAMES, corrupt, load_cifar10c
from coar.paper.data.fashion_mnist import find_fashion_mnist
from coar.paper.data.registry import make_examples
from coar.errors import CoarError


def _images(n=64):
    """Real Fashion-MNIST test images (Debian's package; CI installs it)."""
    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST not available")
    return make_examples("fashion-mnist", "test", n, seed=1).inputs


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_synthetic_corruptions_grow_with_severity_and_are_deterministic(name):
    x = _images()
    dist = [np.abs(corrupt(x, name, s, seed=3).astype(float) - x).mean() for s in range(1, 6)]
    assert dist[0] > 0, f"{name} at severity 1 left the images unchanged"
    assert all(b >= a - 1e-9 for a, b in zip(dist, dist[1:])), f"{name}: distortion not monotone {dist}"
    assert dist[-1] > dist[0]
    a, b = corrupt(x, name, 3, seed=3), corrupt(x, name, 3, seed=3)
    assert a.dtype == np.uint8 and a.shape == x.shape and np.array_equal(a, b)


def test_synthetic_corruption_rejects_bad_input():
    with pytest.raises(CoarError, match="unknown synthetic corruption 'snow'"):
        corrupt(_images(), "snow", 3)
    with pytest.raises(CoarError, match="severity must be 1..5"):
        corrupt(_images(), "contrast", 6)
    with pytest.raises(CoarError, match=r"uint8 images \[N, C, H, W\]"):
        corrupt(_images().astype(np.float32), "contrast", 2)


def _write_cifar10c(root, per=4):
    d = root / "CIFAR-10-C"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.tile(rng.integers(0, 10, per), 5).astype(np.uint8)
    images = rng.integers(0, 256, (5 * per, 32, 32, 3), dtype=np.uint8)
    for s in range(5):  # mark the severity block in the first pixel so the slice can be checked
        images[s * per:(s + 1) * per, 0, 0, 0] = s + 1
    np.save(d / "labels.npy", labels)
    np.save(d / "brightness.npy", images)
    return images, labels


def test_cifar10c_reader_takes_the_severity_block_in_channels_first(tmp_path):
    images, labels = _write_cifar10c(tmp_path)
    x, y = load_cifar10c(tmp_path, "brightness", 3, download=False)
    assert x.shape == (4, 3, 32, 32) and y.dtype == np.int64
    assert np.all(x[:, 0, 0, 0] == 3) and np.array_equal(x, images[8:12].transpose(0, 3, 1, 2))
    assert np.array_equal(y, labels[8:12])


def test_cifar10c_truncated_or_missing_files_are_reported(tmp_path):
    images, _ = _write_cifar10c(tmp_path)
    np.save(tmp_path / "CIFAR-10-C" / "brightness.npy", images[:7])  # a truncated re-save
    with pytest.raises(CoarError, match="download again"):
        load_cifar10c(tmp_path, "brightness", 1, download=False)
    (tmp_path / "CIFAR-10-C" / "brightness.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CoarError, match="unreadable"):
        load_cifar10c(tmp_path, "brightness", 1, download=False)
    with pytest.raises(CoarError, match="not found"):
        load_cifar10c(tmp_path, "fog", 1, download=False)
    with pytest.raises(CoarError, match="unknown CIFAR-10-C corruption"):
        load_cifar10c(tmp_path, "rain", 1, download=False)


def test_cifar10c_file_changed_after_its_first_use_is_refused(tmp_path):
    images, _ = _write_cifar10c(tmp_path)
    load_cifar10c(tmp_path, "brightness", 1, download=False)
    assert (tmp_path / "CIFAR-10-C" / "brightness.npy.sha256").is_file()
    flipped = images.copy()
    flipped[0, 0, 0, 0] ^= 1  # same shape and dtype: only the recorded hash can tell
    np.save(tmp_path / "CIFAR-10-C" / "brightness.npy", flipped)
    with pytest.raises(CoarError, match=r"brightness.npy is corrupted or was modified.*download .* again"):
        load_cifar10c(tmp_path, "brightness", 2, download=False)


def test_cifar10_corrupted_examples_match_the_clean_selection(tmp_path):
    _write_cifar10c(tmp_path, per=10)
    ex = make_examples("cifar10", "test", 5, seed=1, root=tmp_path / "cifar10",
                       corruption={"name": "brightness", "severity": 2})
    assert len(ex) == 5 and np.all(ex.inputs[:, 0, 0, 0] == 2)
    assert ex.meta["corruption"] == {"name": "brightness", "severity": 2, "source": "CIFAR-10-C"}
    with pytest.raises(CoarError, match="test split"):
        make_examples("cifar10", "train", 5, root=tmp_path / "cifar10", corruption={"name": "brightness", "severity": 2})
