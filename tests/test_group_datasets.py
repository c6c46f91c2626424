"""Loaders of the group-labelled image datasets (Waterbirds, CelebA) and their shared helpers, offline: every
test writes small files in the real formats (JPEGs, metadata.csv, CelebA's text files, a .tar.gz) into
tmp_path and checks decoded pixels, labels, groups, splits and the error paths."""
from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from coar.paper.data import celeba, waterbirds
from coar.paper.data.celeba import load_celeba
from coar.paper.data.images import decode_image, decode_images, download_verified, sha256_file
from coar.paper.data.waterbirds import DIRNAME, extract_tarball, load_waterbirds
from coar.errors import CoarError

RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 230, 20)

# Solid colours far apart from one another, so a decoded image's mean colour identifies its file.
PALETTE = [(240, 10, 10), (10, 240, 10), (10, 10, 240), (240, 240, 10), (240, 10, 240), (10, 240, 240),
           (128, 128, 128), (250, 250, 250), (10, 10, 10), (128, 10, 60), (60, 128, 10), (10, 60, 128)]


def _solid(path, colour, size=(300, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG", quality=95)


def _halves(path, size, first, second, vertical_split=True):
    """JPEG with its left/right (or top/bottom) half in two colours."""
    w, h = size
    img = Image.new("RGB", size, second)
    img.paste(Image.new("RGB", (w // 2, h) if vertical_split else (w, h // 2), first), (0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=95)
    return img


def _noise_jpeg(path, size=(300, 200), seed=0):
    data = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data).save(path, "JPEG", quality=90)


def _truncate_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _mean_colour(image):
    return image.reshape(3, -1).mean(axis=1)


def _reference(pil, size=224):
    """torchvision's ImageNet evaluation transform on the same PIL image, as uint8 [3, size, size]."""
    transform = v2.Compose([v2.Resize(round(size * 256 / 224)), v2.CenterCrop(size), v2.PILToTensor()])
    return transform(pil.convert("RGB")).numpy()


# --------------------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("size", [224, 112])
@pytest.mark.parametrize("shape", [(300, 200), (180, 260), (224, 224), (500, 120)])
def test_decode_image_matches_torchvision_resize_centercrop(tmp_path, shape, size):
    path = tmp_path / "img.jpg"
    _noise_jpeg(path, shape, seed=shape[0])
    out = decode_image(path, size=size)
    assert out.shape == (3, size, size) and out.dtype == np.uint8
    with Image.open(path) as pil:
        ref = _reference(pil, size)
    assert ref.shape == out.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_decode_image_wide_crop_keeps_centre_columns(tmp_path):
    # 300x200 -> resized to 384x256 -> columns 80..303 kept. The original split at x=150 lands at resized
    # x=192, i.e. output column 112; a green stripe in the leftmost 40 original columns (resized 0..51) is cut.
    path = tmp_path / "wide.jpg"
    img = _halves(path, (300, 200), RED, BLUE)
    img.paste(Image.new("RGB", (40, 200), GREEN), (0, 0))
    img.save(path, "JPEG", quality=95)
    out = decode_image(path).astype(int)
    left, right = out[:, :, :100], out[:, :, 125:]
    assert (left[0] > 180).all() and (left[2] < 70).all(), "columns left of the centre must be red"
    assert (right[2] > 180).all() and (right[0] < 70).all(), "columns right of the centre must be blue"
    assert (out[1] < 80).all(), "the green stripe at the far left must be cropped away"
    with Image.open(path) as pil:
        ref = _reference(pil)
    assert np.abs(out - ref.astype(int)).max() <= 1


def test_decode_image_tall_crop_keeps_centre_rows(tmp_path):
    # 180x260 -> resized to 256x369 -> rows 72..295 kept; the split at y=130 lands at row 184.5 - 72 = 112.
    path = tmp_path / "tall.jpg"
    _halves(path, (180, 260), RED, BLUE, vertical_split=False)
    out = decode_image(path).astype(int)
    assert (out[0, :100] > 180).all() and (out[2, :100] < 70).all()
    assert (out[2, 125:] > 180).all() and (out[0, 125:] < 70).all()


def test_decode_image_converts_grayscale_and_palette_to_rgb(tmp_path):
    Image.new("L", (250, 240), 77).save(tmp_path / "gray.jpg", "JPEG", quality=95)
    Image.new("RGB", (230, 230), (200, 30, 90)).convert("P").save(tmp_path / "pal.png")
    gray = decode_image(tmp_path / "gray.jpg")
    assert gray.shape == (3, 224, 224) and np.abs(gray.astype(int) - 77).max() <= 2
    pal = decode_image(tmp_path / "pal.png").astype(int)
    assert np.abs(_mean_colour(pal) - np.array([200, 30, 90])).max() < 8


def test_decode_image_errors_name_the_file(tmp_path):
    path = tmp_path / "broken_photo.jpg"
    _noise_jpeg(path)
    _truncate_half(path)
    with pytest.raises(CoarError, match="broken_photo.jpg"):
        decode_image(path)
    text = tmp_path / "not_an_image.jpg"
    text.write_text("hello")
    with pytest.raises(CoarError, match="not_an_image.jpg"):
        decode_image(text)
    with pytest.raises(CoarError, match="absent.jpg"):
        decode_image(tmp_path / "absent.jpg")


def test_decode_images_keeps_order_and_threads_do_not_change_result(tmp_path):
    paths = []
    for i, colour in enumerate(PALETTE[:5]):
        paths.append(tmp_path / f"{i}.jpg")
        _solid(paths[-1], colour, size=(300, 200) if i % 2 else (180, 260))
    serial = decode_images(paths, size=64, progress=False, workers=1)
    threaded = decode_images(paths, size=64, progress=False, workers=2)
    assert serial.shape == (5, 3, 64, 64) and serial.dtype == np.uint8
    assert np.array_equal(serial, threaded)
    for image, colour in zip(serial, PALETTE[:5]):
        assert np.abs(_mean_colour(image) - np.array(colour)).max() < 6
    assert decode_images([], size=32, progress=False).shape == (0, 3, 32, 32)


# --------------------------------------------------------------------------------------------- downloads

def test_download_verified_with_known_hash(tmp_path):
    src = tmp_path / "src" / "payload.bin"
    src.parent.mkdir()
    payload = np.random.default_rng(0).bytes(300_000)
    src.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    assert sha256_file(src) == digest
    dest = tmp_path / "dl" / "payload.bin"
    assert download_verified(src.as_uri(), dest, sha256=digest) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"], "no temporary file left"
    # a corrupted copy already in place is re-verified and replaced
    dest.write_bytes(b"garbage")
    download_verified(src.as_uri(), dest, sha256=digest.upper())
    assert dest.read_bytes() == payload


def test_download_verified_wrong_hash_leaves_nothing(tmp_path):
    src = tmp_path / "payload.bin"
    src.write_bytes(b"real bytes" * 1000)
    dest = tmp_path / "dl" / "copy.bin"
    wrong = "0" * 64
    with pytest.raises(CoarError) as info:
        download_verified(src.as_uri(), dest, sha256=wrong)
    msg = str(info.value)
    assert src.as_uri() in msg and wrong in msg and sha256_file(src) in msg
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    with pytest.raises(CoarError, match="64 hex digits"):
        download_verified(src.as_uri(), dest, sha256="abc")


def test_download_verified_records_hash_and_detects_later_modification(tmp_path):
    src = tmp_path / "release.tar.gz"
    src.write_bytes(b"first version" * 500)
    first = sha256_file(src)
    dest = tmp_path / "dl" / "release.tar.gz"
    record = tmp_path / "dl" / "release.tar.gz.sha256"
    download_verified(src.as_uri(), dest)
    assert record.read_text().split()[0] == first
    src.write_bytes(b"second version" * 500)  # the server changes: an intact local copy is not re-fetched
    download_verified(src.as_uri(), dest)
    assert sha256_file(dest) == first
    dest.write_bytes(b"first version" * 499)  # local corruption (e.g. truncation) is reported, never used
    with pytest.raises(CoarError, match="(?i)delete") as info:
        download_verified(src.as_uri(), dest)
    assert str(dest) in str(info.value) and first in str(info.value)
    assert dest.read_bytes() == b"first version" * 499, "the corrupted file is reported, not silently replaced"
    dest.unlink()  # the user deletes it; the re-download no longer matches the record of the first download
    with pytest.raises(CoarError, match="recorded") as info:
        download_verified(src.as_uri(), dest)
    assert sha256_file(src) in str(info.value)
    assert not dest.exists() and sorted(p.name for p in dest.parent.iterdir()) == ["release.tar.gz.sha256"]


def test_download_verified_unreachable_url(tmp_path):
    dest = tmp_path / "dl" / "x.bin"
    with pytest.raises(CoarError, match="nowhere.bin"):
        download_verified((tmp_path / "nowhere.bin").as_uri(), dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


# --------------------------------------------------------------------------------------------- Waterbirds

# (img_filename, y, split, place): a few rows of each split, every group present in the test split.
WB_ROWS = [
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", 1, 0, 1),
    ("014.Indigo_Bunting/Indigo_Bunting_0001_12469.jpg", 0, 0, 0),
    ("014.Indigo_Bunting/Indigo_Bunting_0002_12470.jpg", 0, 0, 1),
    ("045.Northern_Fulmar/Northern_Fulmar_0001_43.jpg", 1, 1, 0),
    ("029.American_Crow/American_Crow_0001_25053.jpg", 0, 1, 0),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", 1, 2, 1),
    ("029.American_Crow/American_Crow_0002_25054.jpg", 0, 2, 1),
    ("045.Northern_Fulmar/Northern_Fulmar_0002_44.jpg", 1, 2, 0),
    ("014.Indigo_Bunting/Indigo_Bunting_0003_12471.jpg", 0, 2, 0),
    ("045.Northern_Fulmar/Northern_Fulmar_0003_45.jpg", 1, 2, 1),
]


def _waterbirds(root, rows=WB_ROWS, header="img_id,img_filename,y,split,place,place_filename"):
    d = root / DIRNAME
    d.mkdir(parents=True)
    lines = [header]
    for i, (name, y, split, place) in enumerate(rows):
        _solid(d / name, PALETTE[i], size=(300, 200) if i % 2 else (180, 260))
        lines.append(f"{i + 1},{name},{y},{split},{place},/b/bamboo_forest/00000{i}.jpg")
    (d / "metadata.csv").write_text("\n".join(lines) + "\n")
    return d


@pytest.mark.parametrize("split,code", [("train", 0), ("val", 1), ("test", 2)])
def test_load_waterbirds_splits_labels_groups(tmp_path, split, code):
    _waterbirds(tmp_path)
    images, labels, groups = load_waterbirds(split, tmp_path, download=False, size=64, progress=False)
    idx = [i for i, r in enumerate(WB_ROWS) if r[2] == code]
    assert images.shape == (len(idx), 3, 64, 64) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and groups.dtype == np.int64
    assert labels.tolist() == [WB_ROWS[i][1] for i in idx]
    assert groups.tolist() == [2 * WB_ROWS[i][1] + WB_ROWS[i][3] for i in idx]
    for image, i in zip(images, idx):  # the right file, in metadata order
        assert np.abs(_mean_colour(image) - np.array(PALETTE[i])).max() < 6


def test_waterbirds_group_names_match_group_ids(tmp_path):
    _waterbirds(tmp_path)
    _, labels, groups = load_waterbirds("test", tmp_path, download=False, size=32, progress=False)
    assert sorted(set(groups.tolist())) == [0, 1, 2, 3]
    for y, g in zip(labels, groups):
        bird, background = waterbirds.GROUP_NAMES[g].split(", ")
        assert bird == waterbirds.CLASS_NAMES[y]
    # the second test row (WB_ROWS[6]): a landbird (y=0) on water (place=1) is the "landbird, water" minority group
    assert waterbirds.GROUP_NAMES[groups[1]] == "landbird, water"


def test_load_waterbirds_default_size_is_224(tmp_path):
    _waterbirds(tmp_path)
    images, _, _ = load_waterbirds("val", tmp_path, download=False, progress=False)
    assert images.shape == (2, 3, 224, 224)


def test_load_waterbirds_seeded_subset(tmp_path):
    _waterbirds(tmp_path)
    full, full_y, full_g = load_waterbirds("test", tmp_path, download=False, size=32, progress=False)
    a = load_waterbirds("test", tmp_path, download=False, size=32, n=3, seed=7, progress=False)
    b = load_waterbirds("test", tmp_path, download=False, size=32, n=3, seed=7, progress=False)
    assert a[0].shape == (3, 3, 32, 32)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    rows = [next(j for j in range(len(full)) if np.array_equal(full[j], img)) for img in a[0]]
    assert rows == sorted(set(rows)), "a subset of distinct images, kept in metadata order"
    assert np.array_equal(a[1], full_y[rows]) and np.array_equal(a[2], full_g[rows])
    with pytest.raises(CoarError, match="n=6"):
        load_waterbirds("test", tmp_path, download=False, n=6, progress=False)


def test_waterbirds_missing_layout_gives_instructions(tmp_path):
    with pytest.raises(CoarError) as info:
        load_waterbirds("test", tmp_path, download=False)
    msg = str(info.value)
    assert waterbirds.TARBALL_URL in msg and str(tmp_path / DIRNAME / "metadata.csv") in msg
    with pytest.raises(CoarError, match="split"):
        load_waterbirds("validation", tmp_path, download=False)


def test_waterbirds_bad_metadata_and_missing_images(tmp_path):
    d = _waterbirds(tmp_path / "a", header="img_id,img_filename,y,split,background,place_filename")
    with pytest.raises(CoarError, match="place") as info:
        load_waterbirds("train", tmp_path / "a", download=False)
    assert str(d / "metadata.csv") in str(info.value)

    d = _waterbirds(tmp_path / "b")
    (d / WB_ROWS[6][0]).unlink()
    with pytest.raises(CoarError, match="American_Crow_0002_25054.jpg"):
        load_waterbirds("test", tmp_path / "b", download=False)
    assert load_waterbirds("val", tmp_path / "b", download=False, size=32, progress=False)[0].shape[0] == 2

    rows = list(WB_ROWS)
    rows[0] = (rows[0][0], 2, 0, 1)  # y outside {0, 1}
    _waterbirds(tmp_path / "c", rows=rows)
    with pytest.raises(CoarError, match="'y'"):
        load_waterbirds("train", tmp_path / "c", download=False)


def test_waterbirds_corrupt_jpeg_is_named(tmp_path):
    d = _waterbirds(tmp_path)
    target = d / WB_ROWS[3][0]
    _noise_jpeg(target)
    _truncate_half(target)
    with pytest.raises(CoarError, match="Northern_Fulmar_0001_43.jpg"):
        load_waterbirds("val", tmp_path, download=False, progress=False)


def _tarball(tmp_path):
    """A .tar.gz of a Waterbirds layout, as the release is packed (top-level directory DIRNAME)."""
    src = tmp_path / "packing"
    _waterbirds(src)
    tarball = tmp_path / "upstream" / f"{DIRNAME}.tar.gz"
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src / DIRNAME, arcname=DIRNAME)
    return tarball


def test_waterbirds_download_and_extract(tmp_path, monkeypatch):
    tarball = _tarball(tmp_path)
    monkeypatch.setattr(waterbirds, "TARBALL_URL", tarball.as_uri())
    root = tmp_path / "data"
    images, labels, groups = load_waterbirds("test", root, download=True, size=32, progress=False)
    assert images.shape == (5, 3, 32, 32)
    assert groups.tolist() == [2 * r[1] + r[3] for r in WB_ROWS if r[2] == 2]
    assert (root / DIRNAME / "metadata.csv").is_file()
    record = root / f"{DIRNAME}.tar.gz.sha256"
    assert record.read_text().split()[0] == sha256_file(tarball)
    assert sorted(p.name for p in root.iterdir()) == sorted([DIRNAME, f"{DIRNAME}.tar.gz", record.name])


def test_waterbirds_truncated_tarball_leaves_no_layout(tmp_path):
    tarball = _tarball(tmp_path)
    _truncate_half(tarball)
    root = tmp_path / "data"
    with pytest.raises(CoarError, match="truncated or corrupt") as info:
        extract_tarball(tarball, root)
    assert str(tarball) in str(info.value)
    assert list(root.iterdir()) == [], "neither the dataset directory nor a temporary one is left behind"
    with pytest.raises(CoarError, match="metadata.csv"):
        load_waterbirds("test", root, download=False)


def test_waterbirds_tarball_with_unsafe_member_is_refused(tmp_path):
    tarball = tmp_path / "evil.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in (f"{DIRNAME}/metadata.csv", "../escaped.txt"):
            data = b"img_id,img_filename,y,split,place,place_filename\n"
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    root = tmp_path / "data"
    with pytest.raises(CoarError, match="escaped.txt"):
        extract_tarball(tarball, root)
    assert not (tmp_path / "escaped.txt").exists() and list(root.iterdir()) == []


# --------------------------------------------------------------------------------------------- CelebA

ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
         "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
         "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
         "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
         "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
BLOND, MALE = ATTRS.index("Blond_Hair"), ATTRS.index("Male")

# (blond, male, split) per image 000001.jpg ... 000012.jpg
CELEBA = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 0),
          (1, 0, 1), (0, 1, 1),
          (0, 0, 2), (1, 1, 2), (0, 1, 2), (1, 0, 2), (0, 0, 2)]


def _celeba(root, entries=CELEBA, attrs=ATTRS, count=None):
    base = root / "celeba"
    rng = np.random.default_rng(0)
    attr_lines = [str(len(entries) if count is None else count), " ".join(attrs) + " "]
    part_lines = []
    for i, (blond, male, split) in enumerate(entries):
        name = f"{i + 1:06d}.jpg"
        _solid(base / "img_align_celeba" / name, PALETTE[i], size=(178, 218))
        values = rng.choice([-1, 1], size=len(attrs))
        if "Blond_Hair" in attrs:
            values[attrs.index("Blond_Hair")] = 1 if blond else -1
        if "Male" in attrs:
            values[attrs.index("Male")] = 1 if male else -1
        attr_lines.append(name + "".join(f"{v:>3d}" if j % 2 else f" {v:>2d}" for j, v in enumerate(values)))
        part_lines.append(f"{name} {split}")
    (base / "list_attr_celeba.txt").write_text("\n".join(attr_lines) + "\n")
    (base / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")
    return base


@pytest.mark.parametrize("split,code", [("train", 0), ("val", 1), ("test", 2)])
def test_load_celeba_splits_labels_groups(tmp_path, split, code):
    _celeba(tmp_path)
    images, labels, groups = load_celeba(split, tmp_path, download=False, size=48, progress=False)
    idx = [i for i, e in enumerate(CELEBA) if e[2] == code]
    assert images.shape == (len(idx), 3, 48, 48) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and groups.dtype == np.int64
    assert labels.tolist() == [CELEBA[i][0] for i in idx]
    assert groups.tolist() == [2 * CELEBA[i][0] + CELEBA[i][1] for i in idx]
    for image, i in zip(images, idx):
        assert np.abs(_mean_colour(image) - np.array(PALETTE[i])).max() < 6


def test_celeba_parsing_of_real_format(tmp_path):
    base = _celeba(tmp_path)
    text = (base / "list_attr_celeba.txt").read_text().splitlines()
    assert "  " in text[2], "the fixture uses runs of spaces, as the real file does"
    names, files, values = celeba.read_attributes(base / "list_attr_celeba.txt")
    assert names == ATTRS and files.tolist() == [f"{i + 1:06d}.jpg" for i in range(len(CELEBA))]
    assert values.shape == (len(CELEBA), 40) and set(np.unique(values)) <= {-1, 1}
    assert ((values[:, BLOND] == 1).astype(int) == [e[0] for e in CELEBA]).all()
    assert ((values[:, MALE] == 1).astype(int) == [e[1] for e in CELEBA]).all()
    group_of = {g: name for g, name in enumerate(celeba.GROUP_NAMES)}
    _, labels, groups = load_celeba("test", tmp_path, download=False, size=32, progress=False)
    assert [group_of[g] for g in groups] == ["not blond, female", "blond, male", "not blond, male",
                                             "blond, female", "not blond, female"]
    assert [celeba.CLASS_NAMES[y] for y in labels][:2] == ["not blond", "blond"]


def test_load_celeba_seeded_subset_before_decoding(tmp_path, monkeypatch):
    _celeba(tmp_path)
    full = load_celeba("train", tmp_path, download=False, size=32, progress=False)
    decoded = []
    real = celeba.decode_images

    def counting(paths, **kw):
        paths = list(paths)
        decoded.append(len(paths))
        return real(paths, **kw)

    monkeypatch.setattr(celeba, "decode_images", counting)
    subsets = []
    for seed in range(8):
        images, labels, groups = load_celeba("train", tmp_path, download=False, size=32, n=2, seed=seed,
                                             progress=False)
        rows = [next(j for j in range(len(full[0])) if np.array_equal(full[0][j], img)) for img in images]
        assert len(set(rows)) == 2 and rows == sorted(rows)
        assert np.array_equal(labels, full[1][rows]) and np.array_equal(groups, full[2][rows])
        subsets.append(tuple(rows))
    assert decoded == [2] * 8, "only the n chosen images are decoded"
    again = load_celeba("train", tmp_path, download=False, size=32, n=2, seed=3, progress=False)
    assert np.array_equal(again[0], load_celeba("train", tmp_path, download=False, size=32, n=2, seed=3,
                                                progress=False)[0])
    assert len(set(subsets)) > 1, "different seeds pick different subsets"


def test_celeba_missing_layout_and_failed_download(tmp_path, monkeypatch):
    with pytest.raises(CoarError, match="list_attr_celeba.txt") as info:
        load_celeba("test", tmp_path, download=False)
    assert "img_align_celeba" in str(info.value)

    import torchvision.datasets

    def refuse(*args, **kwargs):
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setattr(torchvision.datasets, "CelebA", refuse)
    with pytest.raises(CoarError, match="Too many users") as info:
        load_celeba("test", tmp_path, download=True)
    assert "by hand" in str(info.value) and "list_eval_partition.txt" in str(info.value)


def test_celeba_validation_errors(tmp_path):
    _celeba(tmp_path / "a", attrs=[a for a in ATTRS if a != "Blond_Hair"])
    with pytest.raises(CoarError, match="Blond_Hair"):
        load_celeba("test", tmp_path / "a", download=False)

    base = _celeba(tmp_path / "b", count=13)
    with pytest.raises(CoarError, match="announces 13 images but 12"):
        load_celeba("test", tmp_path / "b", download=False)

    base = _celeba(tmp_path / "c")
    lines = (base / "list_attr_celeba.txt").read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]  # one value short
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(CoarError, match="line 5"):
        load_celeba("test", tmp_path / "c", download=False)

    base = _celeba(tmp_path / "d")
    lines = (base / "list_attr_celeba.txt").read_text().splitlines()
    lines[3] = lines[3].replace("-1", " 0", 1)
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(CoarError, match="expected 1 or -1"):
        load_celeba("test", tmp_path / "d", download=False)

    base = _celeba(tmp_path / "e")
    (base / "img_align_celeba" / "000009.jpg").unlink()
    with pytest.raises(CoarError, match="000009.jpg"):
        load_celeba("test", tmp_path / "e", download=False)
    assert load_celeba("val", tmp_path / "e", download=False, size=16, progress=False)[0].shape == (2, 3, 16, 16)

    base = _celeba(tmp_path / "f")
    with open(base / "list_eval_partition.txt", "a") as fh:
        fh.write("000013.jpg 3\n")
    with pytest.raises(CoarError, match="line 13"):
        load_celeba("test", tmp_path / "f", download=False)

    base = _celeba(tmp_path / "g")
    _noise_jpeg(base / "img_align_celeba" / "000010.jpg", size=(178, 218))
    _truncate_half(base / "img_align_celeba" / "000010.jpg")
    with pytest.raises(CoarError, match="000010.jpg"):
        load_celeba("test", tmp_path / "g", download=False, progress=False)
    with pytest.raises(CoarError, match="split"):
        load_celeba("everything", tmp_path / "g", download=False)


def test_images_feed_torch_as_uint8(tmp_path):
    _celeba(tmp_path)
    images, labels, groups = load_celeba("val", tmp_path, download=False, size=32, progress=False)
    x, y, g = torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(groups)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and g.dtype == torch.int64
    assert x.is_contiguous() and tuple(x.shape) == (2, 3, 32, 32)


# ------------------------------------------------------------------------------ through the registry (workflow)

def test_registry_examples_decode_only_the_chosen_files_and_carry_groups(tmp_path, monkeypatch):
    """make_examples draws from the file index (nothing decoded), so held-out offsets and subsets of a
    160k-image split cost only the images chosen; every example keeps its group."""
    import coar.paper.data.images as images_mod
    from coar.paper.data.registry import group_names, load_images, make_examples

    _celeba(tmp_path)
    decoded = []
    real = images_mod.decode_images

    def counting(paths, size=224, **kw):
        decoded.append(len(paths))
        return real(paths, size, **kw)

    monkeypatch.setattr(images_mod, "decode_images", counting)
    first = make_examples("celeba-blond", "test", 2, seed=3, root=tmp_path)
    rest = make_examples("celeba-blond", "test", 3, seed=3, root=tmp_path, offset=2)
    assert decoded == [2, 3] and first.inputs.shape == (2, 3, 224, 224)
    test_rows = [e for e in CELEBA if e[2] == 2]
    whole, labels = load_images("celeba-blond", "test", tmp_path)
    assert len(whole) == 5 and labels.tolist() == [b for b, _, _ in test_rows]
    for ex in (first, rest):  # each example is the split's image, label and group at its index
        idx = [int(np.argmin(np.abs(whole.astype(int) - x.astype(int)).sum((1, 2, 3)))) for x in ex.inputs]
        assert ex.targets.tolist() == [test_rows[i][0] for i in idx]
        assert ex.meta["groups"] == [2 * test_rows[i][0] + test_rows[i][1] for i in idx]
    assert group_names("celeba-blond")[3] == "blond, male"
    _waterbirds(tmp_path)
    wb = make_examples("waterbirds", "test", None, root=tmp_path)
    assert wb.targets.tolist() == [r[1] for r in WB_ROWS if r[2] == 2]
    assert wb.meta["groups"] == [2 * r[1] + r[3] for r in WB_ROWS if r[2] == 2]


def test_fine_tuning_head_keeps_the_components_and_round_trips_through_a_checkpoint(tmp_path):
    """ResNet-50 fine-tuned on a 2-class task: a fresh 2-way head, the same 22,720 filters, and the checkpoint
    rebuilds the 2-class architecture (no published weights are needed to check the architecture)."""
    from coar.components import component_set
    from coar.errors import CoarError
    from coar.paper.models import build_model, replace_head
    from coar.paper.training import load_checkpoint, save_checkpoint

    model = replace_head(build_model("resnet50"), 2)  # as from_pretrained does, on random weights
    assert model.fc.out_features == 2 and component_set(model, "resnet50").size == 22720
    x = torch.randn(2, 3, 64, 64)
    save_checkpoint(tmp_path / "m.pt", model, "resnet50", {"num_classes": 2, "in_channels": 3, "image_size": 224})
    again, _ = load_checkpoint(tmp_path / "m.pt")
    with torch.no_grad():
        assert torch.equal(model.eval()(x), again(x))
    vit = replace_head(build_model("vit_b_16"), 3)
    assert vit.heads.head.out_features == 3
    with pytest.raises(CoarError, match="no fc or heads.head"):
        replace_head(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), 2)
