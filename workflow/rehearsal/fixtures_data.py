"""Miniature copies of every image data source of the paper preset, each in its real on-disk format, so that the
project's loaders (coar.paper.data) read and verify them unchanged: for an offline rehearsal of the workflow.

    python workflow/rehearsal/fixtures_data.py RAW MIRROR TORCH_HOME   (prints the environment)

RAW is the preset's download_root (imagenet_root is RAW/imagenet); MIRROR is served as COAR_DATA_MIRROR, with
a SHA256SUMS that lists every file published there (entries already in it are kept). What is written:

  * cifar10 (downloaded): MIRROR/cifar-10-python.tar.gz, the python release (cifar-10-batches-py/ with
    data_batch_1..5 of 20 images each, test_batch of 20, batches.meta, readme.html), pickled as the release
    is (Python 2 protocol-2 pickles: byte-string keys and data, numpy.core.multiarray._reconstruct).
  * cifar10-c (downloaded): MIRROR/CIFAR-10-C.tar, CIFAR-10-C/<name>.npy for the 19 corruptions (uint8
    [5 x 20, 32, 32, 3]: severities 1-5 of the 20 test images, in test-set order) and labels.npy.
  * imagenet (placed): RAW/imagenet/val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG in all 1,000 class folders.
    Part of the images are labelled with the prediction of the fixture ResNet-50 (TORCH_HOME, loaded with
    coar.paper.models.build_model), each stored under several names, so that about half of the images are
    classified as their label (the induce edit needs such examples, the fix edit the others); every other
    class gets one image, the classes of the forget edit (FORGET_CLASSES) several. The two official archives
    cannot be imitated: torchvision checks their MD5 sums against the release's.
  * imagenet-sketch (downloaded): MIRROR/ImageNet-Sketch.zip, sketch/<wnid>/<wnid>_<k>.JPEG for all 1,000
    classes (line drawings).
  * imagenet-star (placed): RAW/imagenet-star/<shift>.zip for the paper's five shifts, as the release publishes
    them, each holding <shift>/<class index>/<name>.jpg (one image of each forget class and 24 other classes;
    the dataset preparation unpacks it), and masks.npy (a pickled dict shift -> 0/1 per image in ImageFolder
    order) that drops one image of each shift.
  * waterbirds (downloaded): MIRROR/waterbird_complete95_forest2water2.tar.gz with metadata.csv (img_id,
    img_filename, y, split, place, place_filename) and <species folder>/<species>_<k>_<id>.jpg; the four
    groups equally large in every split.
  * celeba-blond (placed: torchvision's Google Drive download cannot be mirrored):
    RAW/celeba-blond/celeba/{img_align_celeba/<6 digits>.jpg (178 x 218), list_attr_celeba.txt (40
    attributes), list_eval_partition.txt}; the four Blond_Hair x Male groups equally large in every split.
  * mimic-cxr (placed, credentialed): RAW/mimic-cxr/mimic-cxr-jpg/2.0.0/ with the metadata, chexpert, negbio
    and split tables (csv.gz), IMAGE_FILENAMES, SHA256SUMS.txt (every file) and grayscale JPEGs under
    files/p<xx>/p<subject>/s<study>/<dicom>.jpg; frontal and lateral views, Cardiomegaly positive, negative,
    uncertain and not mentioned.
  * typographic (placed: a Google Drive folder): RAW/typographic/typographic_attack_dataset/annotations.json
    and images/IMG_<4 digits>.JPG: 180 photos of 20 objects, each once clean and once with each of 8
    attack words written on a white note (the README's counts), some with an EXIF orientation.

TinyStories and BoolQ are fixtures_models.py's. Everything is seeded: the same bytes on every run.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SEED = 0
MTIME = 1546300800  # 2019-01-01: the date stamped on every archive member
FORGET_CLASSES = (489, 559, 652, 763)  # config/paper.yaml, edits.forget_B.classes
FORGET_IMAGES = 2  # validation images of each of those classes: the forget edit's 2 targets
PREDICTED = 256  # distinct validation images labelled with the fixture ResNet-50's prediction
COPIES = 6  # names each of them is stored under (about 60% of the validation images are predicted ones)
CIFAR_PER_BATCH, CIFAR_TEST = 20, 20
GROUP_COUNTS = {"train": 20, "val": 2, "test": 4}  # Waterbirds and CelebA: images per group and split


# ------------------------------------------------------------------------------------------------ helpers
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([SEED, *key])


def picture(rng: np.random.Generator, width: int, height: int, tint=None) -> Image.Image:
    """A small RGB picture: a smooth random colour field (bilinear from a 4 x 3 grid) with a little noise."""
    grid = rng.integers(0, 256, (3, 4, 3)).astype(np.float64)
    if tint is not None:
        grid = 0.5 * grid + 0.5 * np.asarray(tint, dtype=np.float64)
    field = Image.fromarray(grid.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    noisy = np.asarray(field).astype(np.int16) + rng.integers(-10, 11, (height, width, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 90, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, **kwargs)
    return buf.getvalue()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _parents(names) -> list[str]:
    """Every folder above the members, parents first (archives list their folders too)."""
    out = []
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i]) + "/"
            if d not in out:
                out.append(d)
    return out


def tar_bytes(members: dict[str, bytes], compress: bool = False) -> bytes:
    """A tar (gzip-compressed when `compress`) of `members` (name -> bytes) with their folders; fixed owners,
    modes and times, so the same members give the same bytes."""
    out = io.BytesIO()
    stream = gzip.GzipFile(fileobj=out, mode="wb", mtime=0) if compress else out
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in _parents(members):
            info = tarfile.TarInfo(d.rstrip("/"))
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tar.addfile(info, io.BytesIO(data))
    if compress:
        stream.close()
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A deflated zip of `members` with their folders, fixed times."""
    out = io.BytesIO()
    stamp = (2019, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(out, "w") as zf:
        for d in _parents(members):
            info = zipfile.ZipInfo(d, stamp)
            info.external_attr = (0o40755 << 16) | 0x10
            zf.writestr(info, b"")
        for name, data in members.items():
            info = zipfile.ZipInfo(name, stamp)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            zf.writestr(info, data)
    return out.getvalue()


def publish(mirror: Path, name: str, data: bytes) -> Path:
    """mirror/name, and its SHA-256 in the mirror's SHA256SUMS (sha256sum's format; other entries kept)."""
    from coar.paper.data.mirror import SUMS

    path = _write(Path(mirror) / name, data)
    sums = Path(mirror) / SUMS
    entries = {}
    for line in sums.read_text().splitlines() if sums.exists() else []:
        parts = line.split(None, 1)
        if len(parts) == 2:
            entries[parts[1]] = line
    entries[name] = f"{hashlib.sha256(data).hexdigest()}  {name}"
    sums.write_text("".join(f"{entries[k]}\n" for k in sorted(entries)))
    return path


# ------------------------------------------------------------------------------------------------ CIFAR-10
class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: every str and bytes object a byte string (SHORT_BINSTRING/BINSTRING),
    which Python 3 reads back with encoding="latin1" (as the CIFAR-10 loaders do)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_byte_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_byte_string
    dispatch[bytes] = _save_byte_string


def py2_pickle(obj) -> bytes:
    """`obj` pickled as the CIFAR-10 python release is: Python 2 protocol 2, numpy arrays rebuilt by
    numpy.core.multiarray._reconstruct (numpy 1.x's name, which numpy 2 still resolves)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, 3, 32, 32] pictures tinted by class."""
    tints = _rng(1, 99).integers(0, 256, (10, 3))
    return np.stack([np.asarray(picture(rng, 32, 32, tints[y])).transpose(2, 0, 1) for y in labels])


def make_cifar10(mirror: Path) -> tuple[np.ndarray, np.ndarray]:
    """MIRROR/cifar-10-python.tar.gz; returns the test split (uint8 [n, 3, 32, 32], labels)."""
    from coar.paper.data.cifar import FOLDER
    from coar.paper.data.registry import CIFAR10_CLASSES

    members, test = {}, None
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rng = _rng(1, b)
        n = CIFAR_TEST if name == "test_batch" else CIFAR_PER_BATCH
        labels = rng.permutation(np.arange(n) % 10)
        images = cifar_images(labels, rng)
        files = [f"{CIFAR10_CLASSES[y]}_s_{100 * b + i:06d}.png" for i, y in enumerate(labels)]
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {b + 1} of 5"
        members[f"{FOLDER}/{name}"] = py2_pickle({"batch_label": label, "labels": [int(y) for y in labels],
                                                  "data": images.reshape(n, -1), "filenames": files})
        if name == "test_batch":
            test = images, labels.astype(np.int64)
    members[f"{FOLDER}/batches.meta"] = py2_pickle({"num_cases_per_batch": CIFAR_PER_BATCH,
                                                    "label_names": list(CIFAR10_CLASSES), "num_vis": 3072})
    members[f"{FOLDER}/readme.html"] = (b"<meta HTTP-EQUIV=\"REFRESH\" content=\"0; "
                                        b"url=http://www.cs.toronto.edu/~kriz/cifar.html\">\n")
    publish(mirror, "cifar-10-python.tar.gz", tar_bytes(members, compress=True))
    return test


def make_cifar10c(mirror: Path, test_images: np.ndarray, test_labels: np.ndarray) -> None:
    """MIRROR/CIFAR-10-C.tar: every corruption at severities 1-5 of the test images, NHWC, and labels.npy."""
    from coar.paper.data.corruptions import CIFAR10C_NAMES, SYNTHETIC_NAMES, corrupt

    members = {}
    for i, name in enumerate(CIFAR10C_NAMES):
        rng = _rng(2, i)
        parts = []
        for severity in range(1, 6):
            if name in SYNTHETIC_NAMES:
                x = corrupt(test_images, name, severity, seed=SEED + i)
            else:
                noise = rng.normal(0, 6 * severity, test_images.shape)
                x = (test_images + noise).clip(0, 255).round().astype(np.uint8)
            parts.append(x.transpose(0, 2, 3, 1))
        members[f"CIFAR-10-C/{name}.npy"] = _npy(np.ascontiguousarray(np.concatenate(parts)))
    members["CIFAR-10-C/labels.npy"] = _npy(np.tile(test_labels, 5).astype(np.uint8))
    publish(mirror, "CIFAR-10-C.tar", tar_bytes(members))


# ------------------------------------------------------------------------------------------------ ImageNet
def resnet50_predictions(paths: list[Path], torch_home: Path, batch: int = 32) -> np.ndarray:
    """The fixture ResNet-50's classes (published-weights file under torch_home, loaded as the workflow loads
    it) for the images at `paths`, decoded at the rehearsal's size and normalised as the workflow's examples
    are."""
    import torch
    from torchvision.models import ResNet50_Weights

    from coar.examples import normalize
    from coar.paper.data.images import decode_images
    from coar.paper.data.registry import DATASETS
    from coar.paper.models import build_model

    weights = Path(torch_home) / "hub" / "checkpoints" / os.path.basename(ResNet50_Weights.IMAGENET1K_V1.url)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: make the weights first (fixtures_models.make_models)")
    before = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        model = build_model("resnet50", pretrained=True, num_classes=1000, image_size=224)
    finally:
        if before is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = before
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from preset import IMAGE_SIZES

    x = torch.from_numpy(decode_images(paths, IMAGE_SIZES["resnet50"], progress=False))
    info = DATASETS["imagenet"]
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(model(normalize(x[i:i + batch], info["mean"], info["std"])).argmax(1))
    return torch.cat(out).numpy()


def predicted_images(n: int, work: Path, torch_home: Path) -> list[tuple[int, bytes]]:
    """(predicted class, JPEG bytes) of n natural-looking images, 64 x 48 or 48 x 64."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from fixtures_models import natural_images

    x = (natural_images(n, size=64, seed=SEED + 30) * 255).round().byte().numpy().transpose(0, 2, 3, 1)
    data, paths = [], []
    for i, a in enumerate(x):
        a = a[:48] if i % 2 else a[:, :48]
        data.append(jpeg(Image.fromarray(np.ascontiguousarray(a))))
        paths.append(_write(work / f"{i}.JPEG", data[-1]))
    return list(zip(resnet50_predictions(paths, torch_home).tolist(), data))


def make_imagenet_val(root: Path, torch_home: Path) -> dict[int, int]:
    """root/val/<wnid>/ILSVRC2012_val_<n>.JPEG; returns the number of images per class."""
    from coar.paper.data.imagenet import wnids

    ids = wnids()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".predict-") as work:
        predicted = predicted_images(PREDICTED, Path(work), torch_home)
    entries = [(c, data) for c, data in predicted for _ in range(COPIES)]
    covered = {c for c, _ in predicted}
    rng = _rng(3)
    for c in range(1000):
        extra = FORGET_IMAGES if c in FORGET_CLASSES else 0 if c in covered else 1
        for _ in range(extra):
            image = picture(rng, int(rng.integers(20, 40)), int(rng.integers(20, 40)))
            entries.append((c, jpeg(image.convert("L") if rng.random() < 0.03 else image)))  # a few greyscale
    order = rng.permutation(len(entries))
    counts: dict[int, int] = {}
    for number, i in enumerate(order, start=1):
        c, data = entries[i]
        _write(root / "val" / ids[c] / f"ILSVRC2012_val_{number:08d}.JPEG", data)
        counts[c] = counts.get(c, 0) + 1
    return counts


def sketch(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A line drawing: black strokes on white."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        points = [tuple(int(v) for v in rng.integers(0, (width, height))) for _ in range(3)]
        draw.line(points, fill=(int(rng.integers(0, 60)),) * 3, width=int(rng.integers(1, 3)))
    return image


def make_sketch(mirror: Path) -> None:
    """MIRROR/ImageNet-Sketch.zip: sketch/<wnid>/<wnid>_<k>.JPEG, every class, two of the forget classes."""
    from coar.paper.data.imagenet import wnids

    rng = _rng(4)
    members = {}
    for c, wnid in enumerate(wnids()):
        first = int(rng.integers(1, 20000))
        for k in range(2 if c in FORGET_CLASSES else 1):
            image = sketch(rng, int(rng.integers(24, 40)), int(rng.integers(24, 40)))
            members[f"sketch/{wnid}/{wnid}_{first + k}.JPEG"] = jpeg(image)
    publish(mirror, "ImageNet-Sketch.zip", zip_bytes(members))


SHIFT_TINTS = {"in_the_water": (40, 90, 200), "at_dusk": (200, 90, 60), "orange": (250, 150, 30),
               "pencil_sketch": None, "green": (40, 200, 60)}


def make_imagenet_star(root: Path) -> dict[str, int]:
    """root/<shift>.zip holding <shift>/<class index>/<name>.jpg for the paper's five shifts, and root/masks.npy
    (one image of each shift masked out); returns the images each shift keeps."""
    from coar.paper.data.imagenet import PAPER_STAR_SHIFTS

    assert set(SHIFT_TINTS) == set(PAPER_STAR_SHIFTS)
    masks, kept = {}, {}
    for s, shift in enumerate(PAPER_STAR_SHIFTS):
        rng = _rng(5, s)
        classes = sorted({*FORGET_CLASSES, *rng.choice(1000, 24, replace=False).tolist()})
        names, members = [], {}
        for c in classes:  # the forget classes a small part, as in the real shifts: a random draw holds others
            for k in range(1 if c in FORGET_CLASSES else int(rng.integers(1, 3))):
                w, h = int(rng.integers(24, 40)), int(rng.integers(24, 40))
                image = sketch(rng, w, h) if shift == "pencil_sketch" else picture(rng, w, h, SHIFT_TINTS[shift])
                name = f"{c}/{shift}_{c}_{k}.jpg"
                members[f"{shift}/{name}"] = jpeg(image)
                names.append(name)
        _write(root / f"{shift}.zip", zip_bytes(members))
        # the mask's i-th entry is the i-th image in ImageFolder order: folders, then files, sorted by name
        names.sort(key=lambda n: tuple(n.split("/")))
        mask = np.ones(len(names), dtype=np.uint8)
        droppable = [i for i, n in enumerate(names) if int(n.split("/")[0]) not in FORGET_CLASSES]
        mask[droppable[0]] = 0
        masks[shift], kept[shift] = mask, int(mask.sum())
    _write(root / "masks.npy", _npy(np.array(masks, dtype=object), allow_pickle=True))
    return kept


# ------------------------------------------------------------------------------------------------ Waterbirds
LAND_BIRDS = [("013.Bobolink", "Bobolink"), ("029.American_Crow", "American_Crow"),
              ("094.White_breasted_Nuthatch", "White_Breasted_Nuthatch"), ("118.House_Sparrow", "House_Sparrow")]
WATER_BIRDS = [("001.Black_footed_Albatross", "Black_Footed_Albatross"), ("023.Brandt_Cormorant", "Brandt_Cormorant"),
               ("059.California_Gull", "California_Gull"), ("141.Artic_Tern", "Artic_Tern")]
LAND_PLACES = [("/b/bamboo_forest", (60, 140, 50)), ("/f/forest/broadleaf", (90, 120, 40))]
WATER_PLACES = [("/o/ocean", (30, 80, 180)), ("/l/lake/natural", (50, 110, 160))]


def bird(rng: np.random.Generator, width: int, height: int, body, background) -> Image.Image:
    image = picture(rng, width, height, background)
    draw = ImageDraw.Draw(image)
    cx, cy = width // 2 + int(rng.integers(-4, 5)), height // 2 + int(rng.integers(-4, 5))
    draw.ellipse([cx - width // 4, cy - height // 6, cx + width // 4, cy + height // 6], fill=body)
    return image


def make_waterbirds(mirror: Path) -> dict[str, int]:
    """MIRROR/waterbird_complete95_forest2water2.tar.gz; returns the images per split."""
    from coar.paper.data.waterbirds import DIRNAME, SPLITS

    rng = _rng(6)
    rows, files = [], {}
    for split, code in SPLITS.items():
        for group in range(4):
            y, place = divmod(group, 2)
            for _ in range(GROUP_COUNTS[split]):
                folder, species = (WATER_BIRDS if y else LAND_BIRDS)[int(rng.integers(4))]
                place_name, colour = (WATER_PLACES if place else LAND_PLACES)[int(rng.integers(2))]
                name = ""
                while not name or name in files:
                    name = f"{folder}/{species}_{int(rng.integers(1, 130)):04d}_{int(rng.integers(1, 800000))}.jpg"
                body = (240, 240, 230) if y else (120, 70, 30)
                files[name] = jpeg(bird(rng, int(rng.integers(40, 64)), int(rng.integers(36, 56)), body, colour))
                rows.append((name, y, code, place, f"{place_name}/{int(rng.integers(1, 30000)):08d}.jpg"))
    rows.sort()  # the release lists the images by species folder, the splits interleaved
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
    for i, (name, y, code, place, place_file) in enumerate(rows, start=1):
        writer.writerow([i, name, y, code, place, place_file])
    members = {f"{DIRNAME}/metadata.csv": out.getvalue().encode()}
    members.update({f"{DIRNAME}/{name}": files[name] for name, *_ in rows})
    publish(mirror, f"{DIRNAME}.tar.gz", tar_bytes(members, compress=True))
    return {split: 4 * GROUP_COUNTS[split] for split in SPLITS}


# ------------------------------------------------------------------------------------------------ CelebA
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young").split()


def face(rng: np.random.Generator, blond: bool) -> Image.Image:
    """178 x 218, as the aligned-and-cropped release: a face below a band of hair."""
    image = picture(rng, 178, 218)
    draw = ImageDraw.Draw(image)
    hair = (230, 200, 120) if blond else tuple(int(v) for v in rng.integers(20, 90, 3))
    draw.ellipse([34, 30, 144, 190], fill=hair)
    draw.ellipse([49, 60, 129, 180], fill=tuple(int(v) for v in rng.integers(150, 230, 3)))
    return image


def make_celeba(root: Path) -> dict[str, int]:
    """root/celeba/{img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt}; the images per split."""
    from coar.paper.data.celeba import ATTR_FILE, BASE, IMAGE_DIR, PARTITION_FILE, SPURIOUS_ATTR, TARGET_ATTR

    rng = _rng(7)
    base = root / BASE
    blond_col, male_col = CELEBA_ATTRIBUTES.index(TARGET_ATTR), CELEBA_ATTRIBUTES.index(SPURIOUS_ATTR)
    attr_lines, part_lines, counts = [], [], {}
    number = 0
    for code, split in enumerate(("train", "val", "test")):  # the release numbers train, then val, then test
        groups = rng.permutation(np.repeat(np.arange(4), GROUP_COUNTS[split]))
        for g in groups:
            number += 1
            name = f"{number:06d}.jpg"
            blond, male = divmod(int(g), 2)
            values = rng.choice([-1, 1], len(CELEBA_ATTRIBUTES))
            values[blond_col], values[male_col] = (1 if blond else -1), (1 if male else -1)
            _write(base / IMAGE_DIR / name, jpeg(face(rng, bool(blond))))
            attr_lines.append(name + "".join(f" {v:2d}" for v in values))
            part_lines.append(f"{name} {code}")
        counts[split] = len(groups)
    header = [str(number), " ".join(CELEBA_ATTRIBUTES) + " "]
    (base / ATTR_FILE).write_text("\n".join(header + attr_lines) + "\n")
    (base / PARTITION_FILE).write_text("\n".join(part_lines) + "\n")
    return counts


# ------------------------------------------------------------------------------------------------ MIMIC-CXR-JPG
MIMIC_METADATA = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                  "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                  "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
VIEW_MEANINGS = {"PA": ("postero-anterior", "Erect"), "AP": ("antero-posterior", "Erect"),
                 "LATERAL": ("lateral", "Erect"), "LL": ("left lateral", "Erect")}
MIMIC_SUBJECTS = {"train": 40, "validate": 4, "test": 6}


def _csv_gz(header: list[str], rows: list[list]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as fh:
        fh.write(text.getvalue().encode())
    return out.getvalue()


def xray(rng: np.random.Generator, width: int, height: int, big_heart: bool) -> Image.Image:
    """A greyscale chest film: dark lungs, a bright heart shadow (wider with cardiomegaly)."""
    image = Image.new("L", (width, height), int(rng.integers(150, 200)))
    draw = ImageDraw.Draw(image)
    for left in (True, False):
        x0 = width * 0.12 if left else width * 0.55
        draw.ellipse([x0, height * 0.15, x0 + width * 0.33, height * 0.8], fill=int(rng.integers(30, 70)))
    half = width * (0.2 if big_heart else 0.12)
    draw.ellipse([width * 0.5 - half, height * 0.45, width * 0.5 + half, height * 0.78], fill=230)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-8, 9, (height, width))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8), "L")


def make_mimic(root: Path) -> dict[str, int]:
    """The release directory root/mimic-cxr-jpg/2.0.0; returns the images per split (all views)."""
    from coar.paper.data import mimic

    rng = _rng(8)
    base = root / "mimic-cxr-jpg" / "2.0.0"  # the loader reads the current release, 2.1.0 (mimic.RELEASE), too
    meta, split_rows, chexpert, negbio, counts = [], [], [], [], {}
    cells = ["1.0", "0.0", "-1.0", ""]
    subjects = sorted(10_000_000 + rng.choice(10_000_000, sum(MIMIC_SUBJECTS.values()), replace=False))
    splits = rng.permutation([s for s, n in MIMIC_SUBJECTS.items() for _ in range(n)])  # a subject's split
    studies = iter((50_000_000 + rng.choice(10_000_000, 3 * len(subjects), replace=False)).tolist())
    for subject, split in zip(subjects, splits):
        subject = int(subject)
        for _ in range(int(rng.integers(1, 4))):
            study = next(studies)
            cardio = cells[int(rng.choice(4, p=[0.35, 0.3, 0.1, 0.25]))]
            labels = [cardio if name == "Cardiomegaly" else cells[int(rng.choice(4, p=[0.15, 0.15, 0.05, 0.65]))]
                      for name in mimic.LABELS]
            if rng.random() < 0.9:  # a few studies have no CheXpert row (all labels "not mentioned")
                chexpert.append([subject, study, *labels])
                negbio.append([subject, study, *[c if rng.random() < 0.9 else "" for c in labels]])
            views = [str(rng.choice(["PA", "AP"]))] + (["LATERAL"] if rng.random() < 0.6 else [])
            if rng.random() < 0.1:
                views.append("LL" if rng.random() < 0.5 else "")  # a left lateral, or no recorded view
            date, time = int(rng.integers(21000101, 22001231)), f"{rng.uniform(0, 235959):.3f}"
            for view in views:
                dicom = "-".join(f"{int(v):08x}" for v in rng.integers(0, 2 ** 32, 5))
                width, height = int(rng.integers(36, 48)), int(rng.integers(40, 52))
                _write(mimic.image_path(base, subject, study, dicom), jpeg(xray(rng, width, height, cardio == "1.0")))
                meaning, orientation = VIEW_MEANINGS.get(view, ("", ""))
                meta.append([dicom, subject, study, "CHEST (PA AND LAT)", view, height, width, date, time,
                             "CHEST (PA AND LAT)", meaning, orientation])
                split_rows.append([dicom, study, subject, split])
                counts[split] = counts.get(split, 0) + 1
    order = sorted(range(len(meta)), key=lambda i: (meta[i][1], meta[i][2], meta[i][0]))  # the release's order
    _write(base / mimic.METADATA_FILE, _csv_gz(MIMIC_METADATA, [meta[i] for i in order]))
    _write(base / mimic.SPLIT_FILE, _csv_gz(list(mimic.SPLIT_COLUMNS), [split_rows[i] for i in order]))
    _write(base / mimic.CHEXPERT_FILE, _csv_gz(list(mimic.CHEXPERT_COLUMNS), sorted(chexpert)))
    _write(base / "mimic-cxr-2.0.0-negbio.csv.gz", _csv_gz(list(mimic.CHEXPERT_COLUMNS), sorted(negbio)))
    images = sorted(p.relative_to(base).as_posix() for p in (base / mimic.IMAGE_DIR).rglob("*.jpg"))
    (base / "IMAGE_FILENAMES").write_text("".join(f"{p}\n" for p in images))
    listed = sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    (base / mimic.SUMS_FILE).write_text("".join(f"{hashlib.sha256((base / p).read_bytes()).hexdigest()}  {p}\n"
                                                for p in listed))
    return {"train": counts["train"], "val": counts["validate"], "test": counts["test"]}


# ------------------------------------------------------------------------------------------------ typographic
TYPO_OBJECTS = ("apple", "banana", "book", "bottle", "bowl", "candle", "chair", "clock", "cup", "glasses",
                "keyboard", "lamp", "mouse", "mug", "orange", "pen", "phone", "plant", "scissors", "shoe")
TYPO_ATTACKS = ("taxi", "twitter", "EU", "iPad", "good", "dog", "pizza", "library")  # the paper's four first


def photo(rng: np.random.Generator, word: str | None) -> Image.Image:
    """A small camera photo (64 x 48) of an object, with `word` handwritten on a white note when attacked."""
    image = picture(rng, 64, 48)
    draw = ImageDraw.Draw(image)
    draw.ellipse([12, 8, 40, 40], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    if word is not None:
        draw.rectangle([28, 16, 62, 30], fill=(250, 250, 245))
        draw.text((30, 17), word, fill=(10, 10, 10))
    return image


def make_typographic(root: Path) -> dict[str, int]:
    """root/typographic_attack_dataset/{annotations.json, images/IMG_<n>.JPG}; returns the photo counts."""
    from coar.paper.data.typographic import ANNOTATION_FILES, ATTACK_KEY, IMAGE_SUBDIR, OBJECT_KEY, SUBDIR

    rng = _rng(9)
    folder = root / SUBDIR
    shots = [(obj, word) for obj in TYPO_OBJECTS for word in (None, *TYPO_ATTACKS)]
    numbers = sorted((2000 + rng.choice(8000, len(shots), replace=False)).tolist())
    annotations = {}
    for (obj, word), number in zip(shots, numbers):
        name = f"IMG_{number}.JPG"
        image = photo(rng, word)
        exif = Image.Exif()
        exif[0x0110] = "iPhone 12"  # Model
        if rng.random() < 0.3:  # held sideways: stored rotated, with the EXIF orientation that undoes it
            image = image.transpose(Image.Transpose.ROTATE_90)
            exif[0x0112] = 6
        _write(folder / IMAGE_SUBDIR / name, jpeg(image, exif=exif.tobytes()))
        annotations[name] = {OBJECT_KEY: obj, ATTACK_KEY: word or ""}
    (folder / ANNOTATION_FILES[0]).write_text(json.dumps(annotations, indent=2) + "\n")
    return {"clean": len(TYPO_OBJECTS), "attacked": len(TYPO_OBJECTS) * len(TYPO_ATTACKS)}


# ------------------------------------------------------------------------------------------------ all of them
def make_data(raw: Path, mirror: Path, torch_home: Path) -> dict[str, str]:
    """Every image data source of the paper preset under raw (the preset's download_root; imagenet_root is
    raw/imagenet) and mirror (served as COAR_DATA_MIRROR). The ImageNet validation images are labelled with
    the fixture ResNet-50 under torch_home, which must exist. Returns the environment to run the workflow with."""
    raw, mirror, torch_home = (Path(p).resolve() for p in (raw, mirror, torch_home))
    for d in (raw, mirror):
        d.mkdir(parents=True, exist_ok=True)
    test_images, test_labels = make_cifar10(mirror)
    make_cifar10c(mirror, test_images, test_labels)
    make_imagenet_val(raw / "imagenet", torch_home)
    make_sketch(mirror)
    make_imagenet_star(raw / "imagenet-star")
    make_waterbirds(mirror)
    make_celeba(raw / "celeba-blond")
    make_mimic(raw / "mimic-cxr")
    make_typographic(raw / "typographic")
    return {"COAR_DATA_MIRROR": mirror.as_uri()}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: fixtures_data.py RAW MIRROR TORCH_HOME  (prints the environment to run with)", file=sys.stderr)
        return 2
    env = make_data(*map(Path, argv))
    sys.stdout.write("".join(f"export {k}={v}\n" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
