"""CelebA (Liu et al., 2015, "Deep Learning Face Attributes in the Wild") as used for subpopulation
robustness (paper Sec. 5.3, App. C.3, following Sagawa et al., 2020): classify hair as blond or not, with
gender (the `Male` attribute) as the spurious attribute. Label = Blond_Hair (1 if blond); groups are
2 * label + Male, so group 3 ("blond, male") is the rare worst group.

The data is the aligned-and-cropped release (img_align_celeba, 202,599 JPEGs of 178x218) with its official
attribute and partition files, in torchvision's layout:

    <root>/celeba/img_align_celeba/000001.jpg ...
    <root>/celeba/list_attr_celeba.txt      line 1: image count; line 2: the 40 attribute names;
                                            then `filename v1 ... v40` with values 1 / -1 (runs of spaces)
    <root>/celeba/list_eval_partition.txt   `filename split`, split 0 train, 1 valid, 2 test

The text files are parsed here (and validated: header, row lengths, values, count); downloading is left to
torchvision.datasets.CelebA, which fetches the files from Google Drive with the gdown package (the `paper` extra:
pip install 'coar[paper]') and checks their MD5 sums. Google Drive often refuses these downloads (quota); the
error then explains how to place the files by hand, as it does when gdown is missing.
Images are decoded with the ImageNet evaluation transform (coar.paper.data.images.decode_image).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import CoarError
from .images import PAPER_EXTRA, decode_images, import_gdown, seeded_subset

BASE = "celeba"
IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = {"train": 0, "val": 1, "valid": 1, "test": 2}
TARGET_ATTR = "Blond_Hair"
SPURIOUS_ATTR = "Male"
CLASS_NAMES = ("not blond", "blond")
GROUP_NAMES = ("not blond, female", "not blond, male", "blond, female", "blond, male")
PROJECT_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


def _instructions(root: Path) -> str:
    base = root / BASE
    return (f"Place CelebA by hand (from {PROJECT_URL}, 'Align&Cropped Images' and 'Anno'/'Eval' folders of its "
            f"Google Drive): unzip img_align_celeba.zip so that {base / IMAGE_DIR}/000001.jpg exists, and put "
            f"{ATTR_FILE} and {PARTITION_FILE} in {base}/. With download=True, torchvision.datasets.CelebA "
            f"tries the download (it needs the gdown package, `{PAPER_EXTRA}`, and Google Drive's permission)")


def _layout_ok(base: Path) -> bool:
    return (base / IMAGE_DIR).is_dir() and (base / ATTR_FILE).is_file() and (base / PARTITION_FILE).is_file()


def ensure_celeba(root: str | os.PathLike, download: bool = True) -> Path:
    """root/celeba with the image directory and both text files present; downloads with torchvision if allowed."""
    root = Path(root)
    base = root / BASE
    if _layout_ok(base):
        return base
    missing = [str(p) for p in (base / IMAGE_DIR, base / ATTR_FILE, base / PARTITION_FILE) if not p.exists()]
    if not download:
        raise CoarError(f"CelebA not found: missing {missing}. {_instructions(root)}")
    try:
        from torchvision.datasets import CelebA

        CelebA(str(root), split="all", target_type="attr", download=True)
    except Exception as exc:  # Drive quota, network, MD5 mismatch: all need the same manual fix
        # gdown missing (torchvision needs it only when files are to be fetched): say how to install it
        import_gdown("CelebA", _instructions(root))
        raise CoarError(f"CelebA download via torchvision failed ({type(exc).__name__}: {exc}). "
                        f"{_instructions(root)}") from exc
    if not _layout_ok(base):
        raise CoarError(f"CelebA download finished but the layout under {base} is incomplete. {_instructions(root)}")
    return base


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CoarError(f"cannot read CelebA file {path}: {exc}") from exc


def read_attributes(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(attribute names, filenames [N] (str), values int8 [N, n_attrs] in {-1, 1}) from list_attr_celeba.txt.
    The count on line 1 must equal the number of rows (a truncated file is reported, not used)."""
    path = Path(path)
    lines = _lines(path)
    if len(lines) < 2:
        raise CoarError(f"{path}: expected a count line and an attribute-name line, found {len(lines)} line(s)")
    try:
        count = int(lines[0].strip())
    except ValueError as exc:
        raise CoarError(f"{path}, line 1: expected the image count, found {lines[0]!r}") from exc
    names = lines[1].split()
    if not names or len(set(names)) != len(names):
        raise CoarError(f"{path}, line 2: expected distinct attribute names, found {lines[1]!r}")
    width = len(names) + 1
    filenames: list[str] = []
    line_numbers: list[int] = []
    values = np.empty((len(lines) - 2, len(names)), dtype=np.int8)  # row by row: no 8M-string list in memory
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != width:
            raise CoarError(f"{path}, line {number}: expected a filename and {len(names)} values, found "
                            f"{len(parts)} field(s)")
        try:
            values[len(filenames)] = parts[1:]
        except (ValueError, OverflowError) as exc:
            raise CoarError(f"{path}, line {number} ({parts[0]}): attribute values must be 1 or -1 ({exc})") from exc
        filenames.append(parts[0])
        line_numbers.append(number)
    values = values[: len(filenames)]
    if len(filenames) != count:
        raise CoarError(f"{path}: line 1 announces {count} images but {len(filenames)} rows follow (truncated file?)")
    bad = np.argwhere((values != 1) & (values != -1))
    if bad.size:
        r, c = bad[0]
        raise CoarError(f"{path}, line {line_numbers[r]} ({filenames[r]}): attribute {names[c]} is {values[r, c]}, expected "
                        f"1 or -1")
    return names, np.array(filenames, dtype=object), values


def read_partition(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(filenames [N] (str), split int64 [N] in {0, 1, 2}) from list_eval_partition.txt."""
    path = Path(path)
    filenames: list[str] = []
    splits: list[int] = []
    for number, line in enumerate(_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise CoarError(f"{path}, line {number}: expected `filename split` with split 0, 1 or 2, found "
                            f"{line!r}")
        filenames.append(parts[0])
        splits.append(int(parts[1]))
    if not filenames:
        raise CoarError(f"{path} lists no images")
    return np.array(filenames, dtype=object), np.array(splits, dtype=np.int64)


def index_celeba(split: str, root: str | os.PathLike, download: bool = True):
    """(image paths [N], labels int64 [N] (1 = blond), groups int64 [N] = 2 * label + Male) of a split, in
    partition-file order, without decoding anything; every listed image is checked to exist."""
    if split not in SPLITS:
        raise CoarError(f"CelebA split must be one of ('train', 'val', 'test'), got {split!r}")
    base = ensure_celeba(root, download=download)
    names, attr_files, values = read_attributes(base / ATTR_FILE)
    for attr in (TARGET_ATTR, SPURIOUS_ATTR):
        if attr not in names:
            raise CoarError(f"{base / ATTR_FILE}: the attribute header lacks {attr!r} (has {names})")
    part_files, part_splits = read_partition(base / PARTITION_FILE)
    chosen = part_files[part_splits == SPLITS[split]]
    if chosen.size == 0:
        raise CoarError(f"{base / PARTITION_FILE} lists no images in split {SPLITS[split]} ({split})")
    row_of = {name: i for i, name in enumerate(attr_files)}
    no_attr = [f for f in chosen if f not in row_of]
    if no_attr:
        raise CoarError(f"{len(no_attr)} image(s) of the {split} split in {base / PARTITION_FILE} have no row in "
                        f"{base / ATTR_FILE}, e.g. {no_attr[:5]}")
    present = {entry.name for entry in os.scandir(base / IMAGE_DIR)}
    missing = [f for f in chosen if f not in present]
    if missing:
        raise CoarError(f"{len(missing)} image(s) of the {split} split listed in {base / PARTITION_FILE} are missing "
                        f"from {base / IMAGE_DIR}, e.g. {missing[:5]}. {_instructions(Path(root))}")
    rows = np.array([row_of[f] for f in chosen], dtype=np.int64)
    labels = (values[rows, names.index(TARGET_ATTR)] == 1).astype(np.int64)
    male = (values[rows, names.index(SPURIOUS_ATTR)] == 1).astype(np.int64)
    return np.array([base / IMAGE_DIR / f for f in chosen], dtype=object), labels, 2 * labels + male


def load_celeba(split: str, root: str | os.PathLike, download: bool = True, size: int = 224,
                n: int | None = None, seed: int = 0, progress: bool = True):
    """(images uint8 [N, 3, size, size], labels int64 [N] (1 = blond), groups int64 [N] = 2 * label + Male),
    in partition-file order. `n` takes a seeded random subset (kept in file order) before decoding."""
    paths, labels, groups = index_celeba(split, root, download)
    keep = seeded_subset(len(paths), n, seed, f"CelebA {split}")
    return decode_images(list(paths[keep]), size=size, progress=progress), labels[keep], groups[keep]
