"""Fashion-MNIST IDX loading (self-made real-format files, plus the Debian package when installed),
fixed example sets with checksums, augmentation."""
import gzip

import numpy as np
import pytest
import torch

from coar.examples import Examples
from coar.paper.data.fashion_mnist import fashion_mnist_examples
from coar.paper.data.fashion_mnist import DEBIAN_ROOT, FILES, load_fashion_mnist, read_idx, write_idx
from coar.errors import CoarError, StoreError
from coar.paper.training import augment


def make_fake_root(root, n_train=30, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(root / f"{FILES[split][0]}.gz", imgs)
        write_idx(root / f"{FILES[split][1]}.gz", labels)
        data[split] = (imgs, labels)
    return data


def test_idx_roundtrip_and_loader(tmp_path):
    data = make_fake_root(tmp_path)
    imgs, labels = load_fashion_mnist("test", root=tmp_path)
    assert np.array_equal(imgs, data["test"][0]) and np.array_equal(labels, data["test"][1])
    assert labels.dtype == np.int64
    write_idx(tmp_path / "raw.idx", data["train"][0])
    assert np.array_equal(read_idx(tmp_path / "raw.idx"), data["train"][0])


def test_env_variable_root(tmp_path, monkeypatch):
    make_fake_root(tmp_path, n_test=7)
    monkeypatch.setenv("COAR_FASHION_MNIST", str(tmp_path))
    # no root given: the environment variable's directory is used (not Debian's)
    assert len(load_fashion_mnist("test")[0]) == 7
    # an explicit root without the files is refused, naming it, never replaced by another copy
    with pytest.raises(CoarError, match=r"Fashion-MNIST not found in .*nowhere \(no such directory\)"):
        load_fashion_mnist("test", root=tmp_path / "nowhere")


def test_truncated_and_corrupted_files_are_reported(tmp_path):
    make_fake_root(tmp_path)
    path = tmp_path / f"{FILES['test'][0]}.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))  # valid gzip, body shorter than the header says
    with pytest.raises(CoarError, match="header says shape"):
        load_fashion_mnist("test", root=tmp_path)
    path.write_bytes(path.read_bytes()[:40])  # truncated gzip stream
    with pytest.raises(CoarError, match="truncated|unreadable"):
        read_idx(path)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(CoarError, match="magic"):
        read_idx(bad)


def test_missing_dataset_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("COAR_FASHION_MNIST", raising=False)
    monkeypatch.setattr("coar.paper.data.fashion_mnist.DEBIAN_ROOT", tmp_path / "absent")
    with pytest.raises(CoarError, match="dataset-fashion-mnist"):
        load_fashion_mnist("test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoarError, match=r"not found in .*empty: missing train-images-idx3-ubyte, "):
        load_fashion_mnist("test", root=tmp_path / "empty")
    with pytest.raises(CoarError, match="split"):
        load_fashion_mnist("val", root=tmp_path)


def test_examples_roundtrip_and_checksum(tmp_path):
    make_fake_root(tmp_path)
    ex = fashion_mnist_examples("train", n=10, seed=1, root=tmp_path)
    assert ex.inputs.shape == (10, 1, 28, 28) and ex.inputs.dtype == np.uint8
    ex.save(tmp_path / "ex.npz")
    back = Examples.load(tmp_path / "ex.npz")
    assert back.fingerprint() == ex.fingerprint() and back.meta["split"] == "train"
    x, y = back.tensors()
    assert x.dtype == torch.float32 and x.shape == (10, 1, 28, 28) and abs(x.mean().item()) < 3
    # corrupt: same header, different content
    with np.load(tmp_path / "ex.npz") as z:
        header, targets = z["header"], z["targets"]
    np.savez(tmp_path / "bad.npz", inputs=ex.inputs[::-1], targets=targets, header=header)
    with pytest.raises(StoreError, match="checksum"):
        Examples.load(tmp_path / "bad.npz")
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "ex.npz").read_bytes()[:500])
    with pytest.raises(StoreError, match="truncated|unreadable"):
        Examples.load(tmp_path / "trunc.npz")


def test_augment_translates_and_flips():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3, 3] = 1.0
    out = augment(x, g, pad=2, flip=True)
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) <= 1)
    pos = {tuple(torch.nonzero(o[0])[0].tolist()) for o in out if o.sum() == 1}
    assert len(pos) > 5  # the dot moved to several places
    rows, cols = zip(*pos)
    assert min(rows) >= 1 and max(rows) <= 5


@pytest.mark.skipif(not DEBIAN_ROOT.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_the_real_dataset():
    imgs, labels = load_fashion_mnist("test")
    assert imgs.shape == (10000, 28, 28) and imgs.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    tr, trl = load_fashion_mnist("train")
    assert tr.shape == (60000, 28, 28) and np.bincount(trl).tolist() == [6000] * 10


def test_normalize_in_place_equals_the_plain_formula_and_leaves_the_images_alone():
    import torch

    from coar.examples import normalize

    x = torch.randint(0, 256, (16, 3, 5, 5), dtype=torch.uint8)
    before = x.clone()
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    plain = (x.float() / 255.0 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    assert torch.equal(normalize(x, mean, std), plain) and torch.equal(x, before)


def test_tensors_leaves_a_callers_float_array_alone_and_repeats():
    """Examples built on a caller's float32 images: tensors() twice gives the same tensors and the caller's array
    is unchanged (torch.from_numpy shares memory and .float() of a float32 tensor is the same tensor)."""
    images = np.random.default_rng(0).uniform(0, 255, (4, 1, 6, 6)).astype(np.float32)
    before = images.copy()
    ex = Examples(images, np.arange(4), "image", {"mean": 0.5, "std": 0.25})
    x1, _ = ex.tensors()
    x2, _ = ex.tensors()
    assert np.array_equal(images, before)
    assert torch.equal(x1, x2)
    assert torch.allclose(x1, (torch.from_numpy(before) / 255.0 - 0.5) / 0.25)
