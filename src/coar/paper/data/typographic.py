"""Typographic attacks on zero-shot CLIP (paper Sec. 5.5, App. D.5): real photos and our synthetic attacks.

Real data [MTB22]: Materzynska, Torralba & Bau, "Disentangling visual and written concepts in CLIP" (CVPR 2022).
Source: https://github.com/joaanna/disentangling_spelling_in_clip (README, section "Typographic attack
dataset"): "We collected 180 images of 20 objects with 8 typographic attack labels", hosted in the Google
Drive folder DATASET_URL. The README documents one annotation JSON mapping image file names to labels:
    {"IMG_2934.JPG": {"true object": "cup", "typographic attack label": "good"}, ...}
The README names the file `annotation.json`; loaders published by others who use the data (Defense-Prefix,
azuma164/Defense-Prefix datasets/disentangling_ta.py; dyslexify, lowlorenz/dyslexify) read `annotations.json`
with the images either in an `images/` folder next to it (Defense-Prefix: <root>/typographic_attack_dataset/
{annotations.json, images/}) or beside it (dyslexify). All of these layouts are accepted (LAYOUT below).

What is NOT verified (we could not open the Drive folder offline):
  * how clean (un-attacked) photos are marked. We treat an empty / missing / "none" / "clean" /
    "no attack" attack label as clean (one third-party docstring shows `"typographic attack label": ""`).
    If no photo comes out clean, loading fails naming the folder and the labels found (the workflow's
    examples are the clean photos), rather than returning an empty clean split.
  * the exact strings of the 8 attack labels (case of "EU", "iPad"); lookups via TypographicData.attack()
    are case-insensitive. The paper evaluates four of them: "taxi", "twitter", "EU", "iPad".
  * the zero-shot label set the paper used. Fig. 7a shows predictions flipped to "taxi" / "twitter" / "EU",
    so the attack words must be classes: by default class_names = the object classes followed by the attack
    words that are not object classes (include_attack_classes=False keeps only objects). If a
    `classes.json` (a dict whose keys are class names, as read by Defense-Prefix) sits beside the
    annotations, its keys give the object classes in their order.

Synthetic attacks (App. D.5: "we render a blob of text on a white background and place it in the centre of
a given image") are our own rendering: render_attack() draws the text in black with Pillow's default
FreeType font (ImageFont.load_default(size=...), Pillow >= 10.1) on a tight white box centred in the image,
sized so the box is at most `scale` of the image width and height. The paper gives neither the font nor
the size, so both are our choice.

Images are returned as uint8 [N, 3, size, size]: EXIF orientation applied (the photos are camera JPEGs),
shorter side resized to `size` (bicubic) and centre-cropped, as in CLIP's preprocessing; normalise with
coar.paper.models.clip_zeroshot.CLIP_MEAN / CLIP_STD before the model.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ...errors import CoarError, ShapeError
from .images import PAPER_EXTRA, import_gdown

DATASET_URL = "https://drive.google.com/drive/folders/17v74pmQs2zHrs9sJ_8D0bfrz5ykB5ZW2"
REPO_URL = "https://github.com/joaanna/disentangling_spelling_in_clip"
SUBDIR = "typographic_attack_dataset"
ANNOTATION_FILES = ("annotations.json", "annotation.json")
CLASSES_FILE = "classes.json"
IMAGE_SUBDIR = "images"
OBJECT_KEY = "true object"
ATTACK_KEY = "typographic attack label"
CLEAN_MARKERS = frozenset({"", "none", "clean", "no attack", "no_attack", "-"})
LAYOUT = (f"<root>/{SUBDIR}/{ANNOTATION_FILES[0]} (or {ANNOTATION_FILES[1]}) with the photos in "
          f"<root>/{SUBDIR}/{IMAGE_SUBDIR}/ or next to the JSON; <root> may also be that folder itself")

# The four real attacks the paper evaluates (App. D.5), used as our synthetic attack texts as well.
ATTACK_WORDS = ("taxi", "twitter", "EU", "iPad")
DEFAULT_SCALE = 0.5


# --------------------------------------------------------------------------------------------------
# Synthetic attacks
@functools.lru_cache(maxsize=64)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError as exc:  # Pillow < 10.1 has no size argument
        raise CoarError("render_attack needs Pillow >= 10.1 (ImageFont.load_default(size=...)); "
                        "pip install -U pillow") from exc


def _text_box(text: str, size: int) -> tuple[int, int, int, int, int]:
    """(width, height, x offset, y offset, padding) of the white box holding `text` at font size `size`."""
    left, top, right, bottom = _font(size).getbbox(text)
    pad = max(1, round(0.15 * size))
    return right - left + 2 * pad, bottom - top + 2 * pad, pad - left, pad - top, pad


@functools.lru_cache(maxsize=256)
def attack_patch(text: str, height: int, width: int, scale: float = DEFAULT_SCALE) -> tuple[np.ndarray, int, int]:
    """The synthetic attack for an image of (height, width): (patch uint8 [3, h, w], top, left).

    The patch is a white box tightly around `text` in black, with the largest font size for which the box
    fits in scale*width x scale*height; (top, left) centre it in the image.
    """
    from PIL import Image, ImageDraw

    if not isinstance(text, str) or not text.strip():
        raise CoarError(f"attack text must be a non-empty string, got {text!r}")
    if not 0.0 < scale <= 1.0:
        raise CoarError(f"attack scale must be in (0, 1], got {scale}")
    max_w, max_h = max(1, int(scale * width)), max(1, int(scale * height))

    def fits(s: int) -> bool:
        w, h, *_ = _text_box(text, s)
        return w <= max_w and h <= max_h

    if not fits(1):
        raise CoarError(f"attack text {text!r} does not fit in {scale:g} of a {height}x{width} image even at "
                        "font size 1; use a larger scale or larger images")
    lo, hi = 1, max(2, height)  # invariant: fits(lo) and not fits(hi); find the largest fitting font size
    while fits(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    w, h, dx, dy, _ = _text_box(text, lo)
    box = Image.new("L", (w, h), 255)
    ImageDraw.Draw(box).text((dx, dy), text, fill=0, font=_font(lo))
    patch = np.repeat(np.asarray(box, dtype=np.uint8)[None], 3, axis=0)
    patch.setflags(write=False)
    return patch, (height - h) // 2, (width - w) // 2


def render_attack(images: torch.Tensor, text: str, scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Synthetic typographic attack: `text` in black on a white box in the centre of every image.

    images: uint8 [N, 3, H, W] (not modified); returns a new uint8 tensor of the same shape in which only
    the pixels of the centred box differ.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise CoarError(f"render_attack needs a uint8 tensor, got {getattr(images, 'dtype', type(images))}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ShapeError(f"images must have shape [N, 3, H, W], got {tuple(images.shape)}")
    H, W = int(images.shape[2]), int(images.shape[3])
    patch, top, left = attack_patch(text, H, W, float(scale))
    out = images.clone()
    out[:, :, top: top + patch.shape[1], left: left + patch.shape[2]] = torch.from_numpy(patch.copy()).to(out.device)
    return out


def random_attacks(images: torch.Tensor, words: Sequence[str] = ATTACK_WORDS, seed: int = 0,
                   scale: float = DEFAULT_SCALE) -> tuple[torch.Tensor, list[str]]:
    """Each image gets one attack word drawn uniformly at random (App. D.5: "a randomly picked synthetic
    attack"). Returns (attacked uint8 images, the word of every image)."""
    if not words:
        raise CoarError("no attack words given")
    rng = np.random.default_rng(seed)
    chosen = [words[i] for i in rng.integers(0, len(words), size=len(images))]
    out = images.clone()
    for w in sorted(set(chosen)):
        idx = torch.tensor([i for i, c in enumerate(chosen) if c == w], dtype=torch.long)
        out[idx] = render_attack(images[idx], w, scale)
    return out, chosen


# --------------------------------------------------------------------------------------------------
# Real attacks [MTB22]
@dataclass
class TypographicData:
    """The [MTB22] photos, split into clean ones and one group per attack text.

    Labels index `class_names`; the first len(object_names) entries of class_names are the objects.
    """

    clean_images: torch.Tensor  # uint8 [Nc, 3, S, S]
    clean_labels: torch.Tensor  # int64 [Nc]
    clean_files: list[str]
    attacked_images: dict[str, torch.Tensor]  # attack text -> uint8 [Na, 3, S, S]
    attacked_labels: dict[str, torch.Tensor]  # attack text -> int64 [Na] (true object)
    attacked_files: dict[str, list[str]]
    class_names: list[str]
    object_names: list[str]
    annotation_file: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def attack_words(self) -> list[str]:
        return list(self.attacked_images)

    def _key(self, word: str) -> str:
        if word in self.attacked_images:
            return word
        hits = [k for k in self.attacked_images if k.casefold() == word.casefold()]
        if len(hits) != 1:
            raise CoarError(f"no typographic attack {word!r} in {self.annotation_file or 'the dataset'}; "
                            f"attacks present: {', '.join(self.attacked_images) or 'none'}")
        return hits[0]

    def attack(self, word: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the photos attacked with `word` (case-insensitive)."""
        k = self._key(word)
        return self.attacked_images[k], self.attacked_labels[k]

    def all_attacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of every attacked photo, attack groups concatenated in attack_words order."""
        if not self.attacked_images:
            size = self.clean_images.shape[-1]
            return torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
        return (torch.cat(list(self.attacked_images.values())), torch.cat(list(self.attacked_labels.values())))


def _is_clean(attack) -> bool:
    return attack is None or (isinstance(attack, str) and attack.strip().casefold() in CLEAN_MARKERS)


def find_layout(root: str | os.PathLike) -> tuple[Path, Path, Path] | None:
    """(dataset folder, annotation JSON, image folder) for `root`, or None if no known layout is there."""
    root = Path(root)
    for d in (root / SUBDIR, root):
        for name in ANNOTATION_FILES:
            ann = d / name
            if ann.is_file():
                images = d / IMAGE_SUBDIR
                return d, ann, images if images.is_dir() else d
    return None


def _entries(data, path: Path) -> list[tuple[str, dict]]:
    """Normalise the annotation JSON to [(file name, record)] in file order."""
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):  # the README calls it "a list of files"
        items = []
        for i, rec in enumerate(data):
            if isinstance(rec, dict) and len(rec) == 1 and isinstance(next(iter(rec.values())), dict):
                items.append(next(iter(rec.items())))
            elif isinstance(rec, dict) and isinstance(rec.get("file"), str):
                items.append((rec["file"], rec))
            else:
                raise CoarError(f"{path}: entry {i} is neither {{file: {{...}}}} nor a record with a 'file' key: {rec!r}")
    else:
        raise CoarError(f"{path}: expected a JSON object mapping image files to labels, got {type(data).__name__}")
    if not items:
        raise CoarError(f"{path}: no annotated images")
    out = []
    for name, rec in items:
        if not isinstance(rec, dict):
            raise CoarError(f"{path}: entry {name!r} must be an object with key {OBJECT_KEY!r}, got {rec!r}")
        obj = rec.get(OBJECT_KEY)
        if not isinstance(obj, str) or not obj.strip():
            raise CoarError(f"{path}: entry {name!r} has no {OBJECT_KEY!r} label (keys: {sorted(rec)})")
        attack = rec.get(ATTACK_KEY)
        if attack is not None and not isinstance(attack, str):
            raise CoarError(f"{path}: entry {name!r} key {ATTACK_KEY!r} must be a string, got {attack!r}")
        out.append((str(name), {"object": obj.strip(), "attack": None if _is_clean(attack) else attack.strip()}))
    return out


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """uint8 [3, size, size]: EXIF-oriented RGB, shorter side resized to `size` (bicubic), centre crop."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
    except Exception as exc:
        raise CoarError(f"could not read image {path}: {exc}") from exc
    w, h = im.size
    r = size / min(w, h)
    nw, nh = max(size, round(w * r)), max(size, round(h * r))
    im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def _missing(root: Path) -> CoarError:
    return CoarError(
        f"typographic attack dataset [MTB22] not found under {root}: expected {LAYOUT}. Download the folder "
        f"{DATASET_URL} (linked from {REPO_URL}; e.g. `{PAPER_EXTRA} && gdown --folder {DATASET_URL} "
        f"-O {root / SUBDIR}`), then put the JSON annotations and the photos there.")


def _download(root: Path) -> None:
    gdown = import_gdown(f"The typographic attack dataset [MTB22] (the Google Drive folder {DATASET_URL})",
                         f"download that folder and put its annotations JSON and photos in {root / SUBDIR} "
                         f"(expected layout: {LAYOUT})")
    target = root / SUBDIR
    target.mkdir(parents=True, exist_ok=True)
    try:
        gdown.download_folder(url=DATASET_URL, output=str(target), quiet=True)
    except Exception as exc:
        raise CoarError(f"could not download {DATASET_URL} into {target}: {exc}") from exc


def load_typographic(root: str | os.PathLike, size: int = 224, download: bool = False,
                     include_attack_classes: bool = True) -> TypographicData:
    """Load the [MTB22] typographic-attack photos from `root` (layout: see LAYOUT and the module docstring)."""
    root = Path(root)
    if size < 1:
        raise CoarError(f"image size must be positive, got {size}")
    layout = find_layout(root)
    if layout is None and download:
        _download(root)
        layout = find_layout(root)
    if layout is None:
        raise _missing(root)
    folder, ann_path, image_dir = layout
    try:
        data = json.loads(ann_path.read_text())
    except (OSError, ValueError) as exc:
        raise CoarError(f"could not parse annotation file {ann_path}: {exc}") from exc
    entries = _entries(data, ann_path)
    if not any(rec["attack"] is None for _, rec in entries):
        found: dict[str, int] = {}
        for _, rec in entries:
            found[rec["attack"]] = found.get(rec["attack"], 0) + 1
        raise CoarError(f"typographic attack dataset in {folder}: 0 clean photos among the {len(entries)} photos "
                        f"annotated in {ann_path.name} (attack labels found: {found}). A photo is clean when its "
                        f"{ATTACK_KEY!r} is empty, missing or one of {sorted(CLEAN_MARKERS - {''})}; the "
                        f"experiments need the clean photos. If this copy marks them otherwise, mark them so "
                        f"in {ann_path}")

    objects = sorted({rec["object"] for _, rec in entries})
    classes_path = folder / CLASSES_FILE
    if classes_path.is_file():
        try:
            listed = list(json.loads(classes_path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise CoarError(f"could not parse class file {classes_path}: {exc}") from exc
        unknown = [o for o in objects if o not in listed]
        if unknown:
            raise CoarError(f"{classes_path}: true objects {unknown} of {ann_path.name} are not listed")
        objects = [str(c) for c in listed]
    class_names = list(objects)
    attacks: list[str] = []
    for _, rec in entries:
        if rec["attack"] is not None and rec["attack"] not in attacks:
            attacks.append(rec["attack"])
    if include_attack_classes:
        class_names += [a for a in attacks if a not in class_names]
    index = {c: i for i, c in enumerate(class_names)}

    groups: dict[str | None, tuple[list, list, list]] = {}
    for name, rec in entries:
        path = image_dir / name
        if not path.is_file() and (folder / name).is_file():
            path = folder / name
        if not path.is_file():
            raise CoarError(f"image {name!r} listed in {ann_path} not found in {image_dir}")
        imgs, labels, files = groups.setdefault(rec["attack"], ([], [], []))
        imgs.append(load_image(path, size))
        labels.append(index[rec["object"]])
        files.append(name)

    def stack(key):
        imgs, labels, files = groups.get(key, ([], [], []))
        x = torch.stack(imgs) if imgs else torch.zeros(0, 3, size, size, dtype=torch.uint8)
        return x, torch.tensor(labels, dtype=torch.long), list(files)

    clean_x, clean_y, clean_f = stack(None)
    att = {a: stack(a) for a in attacks}
    return TypographicData(
        clean_images=clean_x, clean_labels=clean_y, clean_files=clean_f,
        attacked_images={a: v[0] for a, v in att.items()}, attacked_labels={a: v[1] for a, v in att.items()},
        attacked_files={a: v[2] for a, v in att.items()}, class_names=class_names, object_names=list(objects),
        annotation_file=str(ann_path), meta={"size": size, "root": str(root), "source": DATASET_URL})


__all__ = ["ATTACK_WORDS", "DATASET_URL", "REPO_URL", "LAYOUT", "TypographicData", "attack_patch", "render_attack",
           "random_attacks", "load_typographic", "load_image", "find_layout"]
