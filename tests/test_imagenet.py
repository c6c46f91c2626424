"""ImageNet-format folders (validation set, ImageNet-Sketch, ImageNet*), offline: the tests write class folders
of small JPEGs, the Sketch release's zip and ImageNet*'s masks.npy in their real formats, and check labels,
order (torchvision's ImageFolder), decoding, the download, and every error path."""
from __future__ import annotations

import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from coar.paper.data import imagenet
from coar.paper.data.images import decode_image, sha256_file
from coar.paper.data.registry import class_names, decode_size, load_images, make_examples
from coar.errors import CoarError

WNIDS = imagenet.wnids()


def _jpeg(path, value, size=(40, 30)):
    """A solid grey JPEG whose level identifies it after decoding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, "JPEG", quality=95)


def _level(label: int, k: int) -> int:
    return (label * 7 + k * 40) % 250


def _class_tree(directory, classes, per_class=1, names=None, ext=".JPEG"):
    """directory/<wnid or name>/img_<k>.JPEG for each class; returns {path: label}."""
    made = {}
    for c in classes:
        folder = directory / (names[c] if names else WNIDS[c])
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            path = folder / f"img_{k}{ext}"
            _jpeg(path, _level(c, k))
            made[path] = c
    return made


@pytest.fixture(scope="module")
def val_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    _class_tree(root / "val", range(1000))
    _jpeg(root / "val" / WNIDS[3] / "nested" / "deep.JPEG", 1)  # ImageFolder walks subfolders
    (root / "val" / WNIDS[3] / "notes.txt").write_text("not an image")
    return root


def test_wnids_are_the_sorted_1000_classes_of_torchvision_weights():
    assert len(WNIDS) == 1000 and list(WNIDS) == sorted(set(WNIDS))
    assert WNIDS[0] == "n01440764" and WNIDS[-1] == "n15075141"  # tench, toilet tissue
    assert len(class_names("imagenet-sketch")) == 1000 and class_names("imagenet-star")[0] == "tench"


def test_validation_index_matches_imagefolder_order_and_wnid_labels(val_root):
    paths, labels = imagenet.index_imagenet_val(val_root)
    folder = ImageFolder(str(val_root / "val"))
    assert [str(p) for p in paths] == [s[0] for s in folder.samples]
    assert labels.tolist() == [WNIDS.index(folder.classes[t]) for _, t in folder.samples]
    assert len(paths) == 1001 and labels.dtype == np.int64
    assert labels[3] == 3 and labels[4] == 3 and str(paths[4]).endswith("nested/deep.JPEG")


def test_examples_decode_only_the_chosen_images_with_the_evaluation_transform(val_root, monkeypatch):
    decoded = []
    real = decode_image

    def counting(path, size=224):
        decoded.append(path)
        return real(path, size)

    monkeypatch.setattr("coar.paper.data.images.decode_image", counting)
    ex = make_examples("imagenet", "val", n=5, seed=3, root=val_root)
    assert ex.inputs.shape == (5, 3, 224, 224) and ex.inputs.dtype == np.uint8 and len(decoded) == 5
    paths, labels = imagenet.index_imagenet_val(val_root)
    chosen = [paths.tolist().index(p) for p in decoded]
    assert ex.targets.tolist() == labels[sorted(chosen)].tolist()
    for image, path in zip(ex.inputs, sorted(decoded, key=lambda p: paths.tolist().index(p))):
        assert np.array_equal(image, real(path, 224))
    assert ex.meta["mean"] == [0.485, 0.456, 0.406]
    every = make_examples("imagenet", "val", n=None, every=100, root=val_root)
    assert every.targets.tolist() == labels[::100].tolist()


def test_another_decode_size_is_the_same_transform_at_that_size(val_root):
    """A model that takes any size (ResNet-50) can be given its images at another: the same draw, each image
    decoded by the same resize-and-centre-crop at that size. Datasets stored as arrays refuse a size."""
    at224 = make_examples("imagenet", "val", n=5, seed=3, root=val_root)
    at64 = make_examples("imagenet", "val", n=5, seed=3, root=val_root, size=decode_size("imagenet", 64))
    paths, _ = imagenet.index_imagenet_val(val_root)
    assert at64.inputs.shape == (5, 3, 64, 64) and at64.targets.tolist() == at224.targets.tolist()
    idx = [paths.tolist().index(p) for p in paths[np.sort(np.random.default_rng(3).permutation(len(paths))[:5])]]
    for image, i in zip(at64.inputs, idx):
        assert np.array_equal(image, decode_image(paths[i], 64))
    assert decode_size("imagenet", 224) is None and decode_size("fashion-mnist", 32) is None
    with pytest.raises(CoarError, match="fashion-mnist images come at 28 pixels"):
        make_examples("fashion-mnist", "test", n=2, size=32)


def test_whole_classes_adds_every_example_of_the_forgotten_classes(val_root):
    ex = make_examples("imagenet", "val", n=4, seed=0, root=val_root, whole_classes=[3])
    assert (ex.targets == 3).sum() == 2  # both images of class 3, whether drawn or not
    assert len(ex) in (5, 6) and ex.meta["whole_classes"] == [3] and ex.meta["n"] == len(ex)
    drawn = np.asarray(ex.meta["drawn"])
    assert drawn.sum() == 4 and (ex.targets[~drawn] == 3).all()
    with pytest.raises(CoarError, match="no examples of the classes"):
        make_examples("imagenet-star", "in_the_water", n=1, root=_star(val_root.parent / "s1", [0, 1]),
                      whole_classes=[5])


def test_validation_errors_say_what_is_missing(tmp_path):
    with pytest.raises(CoarError, match=r"found 0 class folders, need 1000.*image-net.org.*imagenet_root"):
        imagenet.index_imagenet_val(tmp_path)
    _class_tree(tmp_path / "val", range(998))
    with pytest.raises(CoarError, match="found 998 class folders"):
        imagenet.index_imagenet_val(tmp_path)
    _class_tree(tmp_path / "val", [998])
    (tmp_path / "val" / WNIDS[999]).mkdir()
    with pytest.raises(CoarError, match=rf"1 empty, e.g. \['{WNIDS[999]}'\]"):
        imagenet.index_imagenet_val(tmp_path)
    (tmp_path / "val" / WNIDS[999]).rmdir()
    (tmp_path / "val" / "n99999999").mkdir()
    with pytest.raises(CoarError, match=r"neither ImageNet WordNet IDs.*n99999999"):
        imagenet.index_imagenet_val(tmp_path)
    flat = tmp_path / "flat"
    _jpeg(flat / "val" / "ILSVRC2012_val_00000001.JPEG", 3)
    with pytest.raises(CoarError, match="flat layout"):
        imagenet.index_imagenet_val(flat)
    with pytest.raises(CoarError, match="one split here, val"):
        make_examples("imagenet", "train", n=1, root=tmp_path)


def test_corrupted_official_archives_fail_their_md5_check_and_leave_no_layout(tmp_path):
    for name in (imagenet.VAL_ARCHIVE, imagenet.DEVKIT_ARCHIVE):
        with tarfile.open(tmp_path / name, "w:gz" if name.endswith("gz") else "w") as tar:
            tar.addfile(tarfile.TarInfo("empty"))
    with pytest.raises(CoarError, match=r"could not be prepared.*MD5.*download it again") as info:
        imagenet.index_imagenet_val(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert not (tmp_path / "val").exists()


# ---------------------------------------------------------------------------------------------- sketch

def _sketch_zip(tmp_path, members=None):
    src = tmp_path / "src"
    made = _class_tree(src / "sketch", range(1000))
    archive = tmp_path / "release" / "ImageNet-Sketch.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(made):
            zf.write(path, path.relative_to(src).as_posix())
        for name, data in (members or {}).items():
            zf.writestr(name, data)
    return archive, made


def test_sketch_is_downloaded_verified_extracted_and_indexed(tmp_path, monkeypatch):
    archive, made = _sketch_zip(tmp_path)
    monkeypatch.setattr(imagenet, "SKETCH_URL", archive.as_uri())
    root = tmp_path / "data"
    ex = make_examples("imagenet-sketch", "test", n=3, seed=1, root=root)
    assert ex.inputs.shape == (3, 3, 224, 224)
    paths, labels = imagenet.index_sketch(root, download=False)
    assert len(paths) == 1000 and labels.tolist() == list(range(1000))
    grey = {made[p]: p for p in made}
    for image, label in zip(ex.inputs, ex.targets):  # each image is its class's file
        assert np.array_equal(image, decode_image(grey[int(label)]))
    assert (root / "ImageNet-Sketch.zip.sha256").read_text().split()[0] == sha256_file(archive)
    assert sorted(p.name for p in root.iterdir()) == ["ImageNet-Sketch.zip", "ImageNet-Sketch.zip.sha256", "sketch"]
    # once extracted, the folder is used and the zip is not read again: damaging it changes nothing
    (root / "ImageNet-Sketch.zip").write_bytes(b"damaged")
    assert imagenet.index_sketch(root, download=True)[1].tolist() == labels.tolist()
    with pytest.raises(CoarError, match="one split here, test"):
        make_examples("imagenet-sketch", "val", n=1, root=root)


def test_sketch_corrupt_or_unsafe_zip_is_reported_and_leaves_nothing(tmp_path, monkeypatch):
    archive, _ = _sketch_zip(tmp_path)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(imagenet, "SKETCH_URL", archive.as_uri())
    root = tmp_path / "data"
    with pytest.raises(CoarError, match="truncated or corrupt"):
        imagenet.ensure_sketch(root)
    assert sorted(p.name for p in root.iterdir()) == ["ImageNet-Sketch.zip", "ImageNet-Sketch.zip.sha256"]
    # the recorded hash now protects the download: a changed file at the same place is refused, not used
    (root / "ImageNet-Sketch.zip").write_bytes(b"something else")
    with pytest.raises(CoarError, match="corrupted or was modified"):
        imagenet.ensure_sketch(root)

    unsafe_dir = tmp_path / "unsafe"
    unsafe_dir.mkdir()
    unsafe, _ = _sketch_zip(unsafe_dir, members={"../evil.txt": "x"})
    monkeypatch.setattr(imagenet, "SKETCH_URL", unsafe.as_uri())
    root2 = tmp_path / "data2"
    with pytest.raises(CoarError, match="unsafe member"):
        imagenet.ensure_sketch(root2)
    assert not (root2 / "sketch").exists() and not (tmp_path / "evil.txt").exists()
    with pytest.raises(CoarError, match=r"ImageNet-Sketch not found.*unzip"):
        imagenet.ensure_sketch(tmp_path / "none", download=False)


# ---------------------------------------------------------------------------------------------- ImageNet*

def _star(root, classes, shift="in_the_water", per_class=2):
    names = {c: str(c) for c in classes}  # ImageNet* style: class-index folders
    _class_tree(root / shift, classes, per_class=per_class, names=names, ext=".jpg")
    return root


def test_star_class_index_folders_follow_imagefolder_order_with_numeric_labels(tmp_path):
    root = _star(tmp_path, [0, 1, 2, 10, 100])
    paths, labels = imagenet.index_imagenet_star(root, "in_the_water")
    folder = ImageFolder(str(root / "in_the_water"))
    assert [str(p) for p in paths] == [s[0] for s in folder.samples]  # "0", "1", "10", "100", "2"
    assert labels.tolist() == [0, 0, 1, 1, 10, 10, 100, 100, 2, 2]
    images, y = load_images("imagenet-star", "in_the_water", root)
    assert images.shape == (10, 3, 224, 224) and y.tolist() == labels.tolist()


def test_star_masks_filter_images_and_mismatches_are_reported(tmp_path):
    root = _star(tmp_path, [0, 1, 2])
    keep = np.array([1, 0, 1, 1, 0, 1])
    np.save(root / "masks.npy", {"in_the_water": keep, "green": np.ones(3)}, allow_pickle=True)
    paths, labels = imagenet.index_imagenet_star(root, "in_the_water")
    assert [p.name for p in paths] == ["img_0.jpg", "img_0.jpg", "img_1.jpg", "img_1.jpg"]
    assert labels.tolist() == [0, 1, 1, 2]
    _star(root, [0, 1, 2], shift="green")
    with pytest.raises(CoarError, match="has 3 entries but .* holds 6 images"):
        imagenet.index_imagenet_star(root, "green")
    _star(root, [0], shift="orange")
    with pytest.raises(CoarError, match="no mask for shift 'orange'"):
        imagenet.index_imagenet_star(root, "orange")
    with pytest.raises(CoarError, match=r"'at_dusk' not found.*shifts found: \['green', 'in_the_water', 'orange'\]"
                                        r".*madrylab/imagenet-star"):
        imagenet.index_imagenet_star(root, "at_dusk")
    (root / "masks.npy").write_bytes(b"garbage")
    with pytest.raises(CoarError, match="cannot be read as ImageNet"):
        imagenet.index_imagenet_star(root, "in_the_water")
