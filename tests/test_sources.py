"""Data sources (coar.paper.data.sources, the workflow's dataset rule): every dataset has one, each is obtained and
verified by its loaders' own checks, and a corrupted or missing source is reported, never recorded."""
import numpy as np
import pytest

from coar.paper.data import imagenet, sources
from coar.paper.data.corruptions import CIFAR10C_NAMES
from coar.paper.data.fashion_mnist import find_fashion_mnist
from coar.paper.data.registry import DATASETS, TEXT_DATASETS
from coar.errors import CoarError

from tests.test_imagenet import _sketch_zip, _star


def test_every_dataset_has_a_source_and_every_source_a_preparation():
    assert set(sources.SOURCE_OF) == set(DATASETS) | set(TEXT_DATASETS) | {"os-text"}
    assert set(sources._PREPARE) == set(sources.sources())
    assert sources.source_of("cifar10", {"name": "fog", "severity": 1}) == "cifar10-c"
    assert sources.source_of("fashion-mnist-backdoor") == sources.source_of("fashion-mnist-spurious") == "fashion-mnist"
    with pytest.raises(CoarError, match="unknown dataset 'mnist'"):
        sources.source_of("mnist")
    with pytest.raises(CoarError, match="unknown data source"):
        sources.prepare("mnist", None)


def test_roots_are_where_the_datasets_are_read_from():
    assert sources.source_root("cifar10-c", None, "raw") == "raw/cifar10"  # CIFAR-10-C sits beside CIFAR-10
    assert sources.source_root("cifar10", None, "raw") == "raw/cifar10"  # shared with the backdoored variant
    assert sources.source_root("imagenet", None, "raw", "/ilsvrc") == "/ilsvrc"
    assert sources.source_root("fashion-mnist", "/fm", "raw") == "/fm"


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_fashion_mnist_manifest_counts_both_splits_and_says_where_it_was_found():
    m = sources.prepare("fashion-mnist", None)
    assert m["counts"] == {"train": 60000, "test": 10000} and not m["manual"]
    assert m["location"] == str(find_fashion_mnist())


def test_cifar10c_every_corruption_is_checked_and_a_later_change_is_refused(tmp_path):
    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "labels.npy", np.tile(np.arange(4), 5).astype(np.uint8))
    arrays = {}
    for name in CIFAR10C_NAMES:
        arrays[name] = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
        np.save(d / f"{name}.npy", arrays[name])
    m = sources.prepare("cifar10-c", tmp_path / "cifar10")
    assert m["counts"] == {name: 4 for name in CIFAR10C_NAMES}
    assert all((d / f"{name}.npy.sha256").is_file() for name in CIFAR10C_NAMES)  # recorded at this first use
    flipped = arrays["fog"].copy()
    flipped[3, 1, 1, 1] ^= 1  # same shape: only the recorded hash can tell
    np.save(d / "fog.npy", flipped)
    with pytest.raises(CoarError, match="fog.npy is corrupted or was modified"):
        sources.prepare("cifar10-c", tmp_path / "cifar10")
    (d / "snow.npy").unlink()  # a missing corruption is named (downloading is off: labels.npy is there)
    np.save(d / "fog.npy", arrays["fog"])
    with pytest.raises(CoarError, match="snow.npy not found"):
        sources.prepare("cifar10-c", tmp_path / "cifar10")


def test_imagenet_star_lists_every_placed_shift_and_says_where_to_get_them(tmp_path):
    with pytest.raises(CoarError, match="shift 'in_the_water' not found.*Download the shift"):
        sources.prepare("imagenet-star", tmp_path / "star")
    _star(tmp_path / "star", [3, 7], "at_dusk", per_class=2)
    _star(tmp_path / "star", [1], "green", per_class=3)
    m = sources.prepare("imagenet-star", tmp_path / "star")
    assert m["counts"] == {"at_dusk": 4, "green": 3} and m["manual"]


def test_imagenet_validation_missing_is_reported_with_instructions(tmp_path):
    with pytest.raises(CoarError, match="ILSVRC2012"):
        sources.prepare("imagenet", tmp_path / "imagenet")


def test_sketch_is_downloaded_once_and_counted(tmp_path, monkeypatch):
    archive, _ = _sketch_zip(tmp_path)
    monkeypatch.setattr(imagenet, "SKETCH_URL", archive.as_uri())
    root = tmp_path / "data"
    assert sources.prepare("imagenet-sketch", root)["counts"] == {"test": 1000}
    archive.write_bytes(b"gone")  # later uses read the extracted folder, not the download
    assert sources.prepare("imagenet-sketch", root)["counts"] == {"test": 1000}
