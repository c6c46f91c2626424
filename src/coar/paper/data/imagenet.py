"""ImageNet-format image folders: the ILSVRC2012 validation set (setups B and C), and the two distribution
shifts the paper evaluates a forgotten class on (Sec. 5.2, App. A.2): ImageNet-Sketch and ImageNet*.

Every one of them is a folder of class folders, read in torchvision ImageFolder's order (class folders
sorted by name, then files sorted, walking subfolders) so that per-image side files (ImageNet*'s masks)
line up. A class folder is named by its WordNet ID (``n01440764``) or by its class index (``0`` .. ``999``);
labels are indices into WNIDS, the 1000 ILSVRC2012 WordNet IDs in sorted order, which is the class order of
torchvision's pretrained weights.

ImageNet validation (manual: an ImageNet account is needed)::

    <imagenet_root>/val/n01440764/ILSVRC2012_val_00000293.JPEG ...   1000 folders, 50,000 images

  If instead the two official archives lie in <imagenet_root> (ILSVRC2012_img_val.tar and
  ILSVRC2012_devkit_t12.tar.gz), torchvision.datasets.ImageNet checks their MD5 sums and sorts the images
  into that layout.

ImageNet-Sketch (Wang et al., 2019; downloaded: the release's zip, 7.8 GB, mirrored on the Hugging Face hub)::

    <root>/sketch/n01440764/n01440764_10026.JPEG ...                  1000 folders, 50,889 images

ImageNet* (Vendrow et al., 2023; placed by hand from the Hugging Face dataset madrylab/imagenet-star, which
publishes one <shift>.zip per shift)::

    <root>/<shift>.zip                                              as downloaded: unpacked by the dataset
                                                                    preparation (unpack_star_zips), then kept
    <root>/<shift>/<class folder>/<image> ...                       e.g. <root>/in_the_water/n01440764/...
    <root>/masks.npy                                                optional: the authors' CLIP filter, a
                                                                    pickled dict shift -> 0/1 per image

  A zip holds the shift's class folders under one top-level folder (<shift>/<class>/<image>, as `zip -r` of
  the shift's folder writes it) or at its top; __MACOSX/ and ._* resource forks in it are left out. A shift
  is a subfolder of <root> holding at least one class folder (star_shifts); hidden folders (a hub download's
  .cache, the temporary folders of an unpacking) and __MACOSX are not shifts.

Images are decoded with the ImageNet evaluation transform (coar.paper.data.images.decode_image: shorter side to
256, centre crop 224, bilinear), as torchvision's IMAGENET1K_V1 weights of ResNet-50 and ViT-B/16 expect.
"""
from __future__ import annotations

import glob
import os
import pickle
import shutil
import zipfile
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ...errors import CoarError
from .images import extract_into_place, unsafe_member

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
SKETCH_URL = "https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/ImageNet-Sketch.zip"
SKETCH_PROJECT = "https://github.com/HaohanWang/ImageNet-Sketch"
STAR_URL = "https://huggingface.co/datasets/madrylab/imagenet-star"
# the five ImageNet* shifts of the paper (App. A.2: "in the water", "at dusk", "orange", "pencil sketch",
# "green"), spelled as folder names; the paper's list is the default of the paper preset, any folder works
PAPER_STAR_SHIFTS = ("in_the_water", "at_dusk", "orange", "pencil_sketch", "green")


@lru_cache(maxsize=1)
def wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 WordNet IDs, sorted: index i is class i of torchvision's ImageNet weights."""
    text = resources.files("coar.paper.data").joinpath("imagenet_wnids.txt").read_text()
    ids = tuple(text.split())
    if len(ids) != 1000 or list(ids) != sorted(set(ids)):
        raise CoarError("the packaged list of ImageNet WordNet IDs (coar/paper/data/imagenet_wnids.txt) is damaged")
    return ids


def _class_dirs(directory: Path) -> list[Path]:
    return sorted((d for d in directory.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)


@lru_cache(maxsize=1)
def _wnid_set() -> frozenset[str]:
    return frozenset(wnids())


def _is_class_name(name: str) -> bool:
    """Whether a folder name names a class as index_class_folders reads it: a WordNet ID or an index 0..999."""
    return name in _wnid_set() or (name.isdigit() and int(name) < 1000)


def _holds_class_folders(directory: Path) -> bool:
    return directory.is_dir() and any(_is_class_name(d.name) for d in _class_dirs(directory))


def _label_of(names: list[str], directory: Path, what: str) -> dict[str, int]:
    """Class index of each class-folder name: WordNet IDs, or class indices 0..999."""
    index = {w: i for i, w in enumerate(wnids())}
    if all(n in index for n in names):
        return {n: index[n] for n in names}
    if all(n.isdigit() and int(n) < 1000 for n in names):
        return {n: int(n) for n in names}
    bad = [n for n in names if n not in index and not (n.isdigit() and int(n) < 1000)]
    raise CoarError(f"{what}: {directory} holds folder(s) that are neither ImageNet WordNet IDs nor class indices "
                    f"0-999, e.g. {bad[:5]}; each class must be a folder named like n01440764 (or 0..999)")


def index_class_folders(directory: str | os.PathLike, what: str, require_all: bool = False):
    """(image paths [N] (objects), labels int64 [N]) of a folder of class folders, in ImageFolder's order.
    require_all: every one of the 1000 classes must be present with at least one image."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CoarError(f"{what}: {directory} does not exist or is not a folder")
    dirs = _class_dirs(directory)
    if not dirs:
        raise CoarError(f"{what}: {directory} has no class folders")
    labels_of = _label_of([d.name for d in dirs], directory, what)
    paths, labels, empty = [], [], []
    for d in dirs:
        found = []
        for top, subdirs, files in sorted(os.walk(d, followlinks=True)):
            subdirs.sort()
            found += [Path(top) / f for f in sorted(files) if f.lower().endswith(IMG_EXTENSIONS)]
        if not found:
            empty.append(d.name)
        paths += found
        labels += [labels_of[d.name]] * len(found)
    if not paths:
        raise CoarError(f"{what}: no images ({', '.join(IMG_EXTENSIONS)}) under {directory}")
    if require_all:
        present = set(labels)
        missing = [w for i, w in enumerate(wnids()) if i not in present]
        if missing or empty:
            raise CoarError(f"{what}: {directory} must hold all 1000 classes with images; "
                            + (f"{len(missing)} missing, e.g. {missing[:5]}" if missing else "")
                            + ("; " if missing and empty else "")
                            + (f"{len(empty)} empty, e.g. {empty[:5]}" if empty else ""))
    return np.array(paths, dtype=object), np.asarray(labels, dtype=np.int64)


# ---------------------------------------------------------------------------------------------- validation

VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"


def _val_instructions(root: Path) -> str:
    return (f"ImageNet cannot be downloaded automatically (an account at image-net.org is needed). Either put "
            f"{VAL_ARCHIVE} and {DEVKIT_ARCHIVE} in {root} (they are then checked and sorted into class folders), "
            f"or extract the validation images into {root / 'val'}/<wnid>/*.JPEG yourself (e.g. with the "
            f"widely used valprep.sh), and set the config key `imagenet_root` to that folder's parent")


def _prepare_from_archives(root: Path) -> None:
    """Sort the official validation archive into root/val/<wnid>/ with torchvision (which checks both archives'
    MD5 sums and reads the labels from the devkit)."""
    from torchvision.datasets import ImageNet

    try:
        ImageNet(str(root), split="val")
    except (RuntimeError, OSError, ValueError) as exc:
        shutil.rmtree(root / "val", ignore_errors=True)  # made by this call: never leave a half-sorted layout
        raise CoarError(f"ImageNet archives in {root} could not be prepared ({exc}). A corrupted or incomplete "
                        f"archive fails its MD5 check: download it again. {_val_instructions(root)}") from exc


def index_imagenet_val(root: str | os.PathLike):
    """(paths [50,000], labels int64) of the ImageNet validation set under root/val, all 1000 classes checked."""
    root = Path(root)
    val = root / "val"
    n_classes = len(_class_dirs(val)) if val.is_dir() else 0
    if not val.exists() and (root / VAL_ARCHIVE).is_file() and (root / DEVKIT_ARCHIVE).is_file():
        _prepare_from_archives(root)
        n_classes = len(_class_dirs(val))
    if n_classes != 1000:
        flat = val.is_dir() and any(p.suffix.upper() == ".JPEG" for p in val.iterdir())
        hint = (" The images lie directly in it (the archive's flat layout): sort them into class folders."
                if flat else "")
        raise CoarError(f"ImageNet validation set not found at {val} (found {n_classes} class folders, need 1000)."
                        f"{hint} {_val_instructions(root)}")
    return index_class_folders(val, "ImageNet validation", require_all=True)


# ---------------------------------------------------------------------------------------------- sketch

def _safe_extract_zip(archive: Path, into: Path, skip=None) -> None:
    """Extract `archive` into `into` after checking every member (none may land outside it; CRCs intact);
    members for whose name skip(name) is true are left out."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if unsafe_member(info.filename):
                    raise CoarError(f"zip {archive} holds an unsafe member {info.filename!r}; refusing to extract it")
            bad = zf.testzip()
            if bad is not None:
                raise CoarError(f"zip {archive}: member {bad!r} fails its CRC check (corrupted download)")
            zf.extractall(into, members=[i for i in zf.infolist() if skip is None or not skip(i.filename)])
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CoarError(f"zip {archive} is truncated or corrupt ({exc}); nothing was extracted. Delete it (and "
                        f"{archive}.sha256) and run again to download it") from exc


def ensure_sketch(root: str | os.PathLike, download: bool = True) -> Path:
    """root/sketch with its class folders, downloading and extracting the release's zip when allowed. The
    extraction goes to a temporary folder renamed into place when complete, so a failed one leaves nothing
    that looks like the dataset."""
    root = Path(root)
    final = root / "sketch"
    if final.is_dir() and _class_dirs(final):
        return final
    if not download:
        raise CoarError(f"ImageNet-Sketch not found at {final}. Download ImageNet-Sketch.zip ({SKETCH_URL}, or "
                        f"from {SKETCH_PROJECT}) and unzip it in {root} so that {final}/n01440764/ exists")
    from .mirror import download

    archive = download(SKETCH_URL, root / "ImageNet-Sketch.zip")  # from COAR_DATA_MIRROR when it is set

    def locate(tmp: Path) -> Path:
        if not (tmp / "sketch").is_dir():
            raise CoarError(f"zip {archive} has no top-level folder sketch/; it is not ImageNet-Sketch's release")
        return tmp / "sketch"

    return extract_into_place(root, final, lambda tmp: _safe_extract_zip(archive, tmp), locate,
                              "holds no class folders")


def index_sketch(root: str | os.PathLike, download: bool = True):
    """(paths, labels) of ImageNet-Sketch (all 1000 classes checked)."""
    return index_class_folders(ensure_sketch(root, download), "ImageNet-Sketch", require_all=True)


# ---------------------------------------------------------------------------------------------- ImageNet*

def _not_a_shift(name: str) -> bool:
    """Folder (or zip) names that are never a shift: hidden ones (.cache, an unpacking's temporary folder) and
    __MACOSX."""
    return name.startswith((".", "__"))


def star_shifts(root: str | os.PathLike) -> list[str]:
    """The ImageNet* shifts under `root`, sorted: its subfolders holding at least one class folder (a subfolder
    named by a WordNet ID or a class index 0..999, as index_class_folders reads a shift), except hidden ones
    (a name starting with '.': a hub download's .cache, the temporary folder of an unpacking, never a half-
    unpacked shift) and ones starting with '__' (__MACOSX). Other folders and files are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if not _not_a_shift(d.name) and _holds_class_folders(d))


def _macos_member(name: str) -> bool:
    """Members of a zip made on macOS that are not images: __MACOSX/ and ._* resource forks."""
    parts = name.split("/")
    return "__MACOSX" in parts or parts[-1].startswith("._")


def _shift_in(tmp: Path, archive: Path) -> Path:
    """The folder of an unpacked shift zip that holds its class folders: the zip's top, or the folder it holds
    alone (the release's <shift>/), descending through single folders."""
    here = tmp
    while not _holds_class_folders(here):
        subdirs = [d for d in here.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if len(subdirs) != 1:
            raise CoarError(f"zip {archive} holds no ImageNet* shift: no class folders (named by WordNet ID or class "
                            f"index 0-999) at its top or under its single top-level folder; expected "
                            f"{archive.stem}/<class>/<image>. Nothing was unpacked; the zip is kept")
        here = subdirs[0]
    if here == tmp:
        here.chmod(0o755)  # the temporary folder itself becomes the shift: readable as any dataset folder
    return here


def unpack_star_zips(root: str | os.PathLike) -> list[str]:
    """Unpack every <shift>.zip in `root` (ImageNet*'s release: one zip per shift) into root/<shift>, unless
    that folder already holds the shift; returns the shifts unpacked now. Each zip goes to a temporary hidden
    folder renamed into place only when complete (extract_into_place), so an interrupted unpacking never
    leaves a folder that looks like a shift; the temporary folder of a run killed meanwhile is removed and
    the zip unpacked again. Members that would land outside the folder are refused (CoarError, nothing
    unpacked); the zip is kept. One preparation at a time (the workflow's dataset rule runs it once)."""
    root = Path(root)
    if not root.is_dir():
        return []
    unpacked = []
    for archive in sorted(p for p in root.glob("*.zip") if p.is_file() and not _not_a_shift(p.name)):
        shift = archive.stem
        final = root / shift
        for stale in root.glob(f".{glob.escape(shift)}.extract-*"):  # left by a run killed while unpacking
            shutil.rmtree(stale, ignore_errors=True)
        if _holds_class_folders(final):
            continue
        if final.exists():
            raise CoarError(f"{final} exists but holds no class folder, so {archive} cannot be unpacked there; "
                            f"remove it (or put the shift's class folders in it) and run again")
        extract_into_place(root, final, lambda tmp: _safe_extract_zip(archive, tmp, skip=_macos_member),
                           lambda tmp: _shift_in(tmp, archive), "holds no class folder")
        unpacked.append(shift)
    return unpacked


def index_imagenet_star(root: str | os.PathLike, shift: str):
    """(paths, labels) of one ImageNet* shift, read from the folder root/<shift> (its zip must have been
    unpacked: unpack_star_zips, run by the dataset preparation), filtered by root/masks.npy when present (the
    authors' CLIP filter: the mask's i-th entry belongs to the i-th image in ImageFolder order). The mask file
    is a pickle, as published: place only the authors' file there."""
    root = Path(root)
    directory = root / shift
    if not directory.is_dir():
        archive = root / f"{shift}.zip"
        packed = (f" {archive} is there but not unpacked: the dataset preparation (the workflow's dataset rule, "
                  f"coar.paper.data.sources.prepare('imagenet-star', ...)) unpacks it, or unzip it so that "
                  f"{directory}/<class>/ exists." if archive.is_file() else "")
        raise CoarError(f"ImageNet* shift {shift!r} not found at {directory} (shifts found: "
                        f"{star_shifts(root) or 'none'}).{packed} Download the shift's {shift}.zip from {STAR_URL} "
                        f"into {root} (the dataset preparation unpacks it), or place its images as {directory}/"
                        f"<class>/<image>; the paper uses {', '.join(PAPER_STAR_SHIFTS)}")
    paths, labels = index_class_folders(directory, f"ImageNet* shift {shift!r}")
    mask_file = root / "masks.npy"
    if mask_file.is_file():
        try:
            masks = np.load(mask_file, allow_pickle=True).item()
        except (OSError, ValueError, EOFError, AttributeError, pickle.UnpicklingError) as exc:
            raise CoarError(f"{mask_file} cannot be read as ImageNet*'s mask file (a dict shift -> 0/1 per image): "
                            f"{exc}") from exc
        if shift not in masks:
            raise CoarError(f"{mask_file} has no mask for shift {shift!r} (it has {len(masks)} shifts)")
        keep = np.asarray(masks[shift]).astype(bool).ravel()
        if keep.shape != (len(paths),):
            raise CoarError(f"{mask_file}: the mask of {shift!r} has {keep.size} entries but {directory} holds "
                            f"{len(paths)} images; the folder is incomplete or not the published one")
        paths, labels = paths[keep], labels[keep]
        if not len(paths):
            raise CoarError(f"{mask_file} keeps none of the images of {shift!r}")
    return paths, labels
