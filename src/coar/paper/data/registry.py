"""One entry point for every image dataset the workflow uses: uint8 images [N, C, H, W] and int64 labels.

fashion-mnist  offline (Debian's package, COAR_FASHION_MNIST, or torchvision's download)
cifar10        the python release under `root`: a placed copy (checked, its SHA-256 recorded at first use) or
               torchvision's download (MD5-checked); coar.paper.data.cifar
*-backdoor     the base dataset with a trigger on half of one class's training images (coar.paper.data.backdoor)
tinystories    GPT-2 tokens of TinyStories validation stories (Hugging Face hub); boolq: Phi-2 prompts of
               BoolQ's dev set (its release URL); both in coar.paper.data.hf_text
waterbirds     Sagawa et al.'s release (downloaded), groups 2 * bird + background (coar.paper.data.waterbirds)
typographic    the clean photos of the typographic-attack dataset (by hand: coar.paper.data.typographic); paired
               examples add our synthetic attacks
celeba-blond   CelebA (torchvision's download, which needs gdown: the `paper` extra; or by hand), blond hair with
               gender groups (coar.paper.data.celeba)
imagenet       manual: the validation set laid out as root/val/<wnid>/*.JPEG, or the two official archives in
               root (it cannot be downloaded without an account); anything else fails with instructions
mimic-cxr      MIMIC-CXR-JPG 2.1.0 or 2.0.0 (credentialed: placed by hand), frontal views, binary Cardiomegaly
               labels (uncertain ones left out); coar.paper.data.mimic
imagenet-sketch  ImageNet-Sketch (downloaded), split "test"; imagenet-star: an ImageNet* shift placed by hand
               (the release's <shift>.zip, which the dataset preparation unpacks, or its folder), the split names
               the shift (e.g. in_the_water); both in coar.paper.data.imagenet
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ...errors import CoarError
from .specs import SPECS, spec

if TYPE_CHECKING:  # imported where examples are made: coar.examples imports torch, and the workflow's plan reads
    from ...examples import Examples  # this module's tables while Snakemake builds its DAG

# Views of the specs (coar.paper.data.specs), for the code that iterates over kinds of datasets.
DATASETS = {name: {**s.norm, "channels": s.channels, "size": s.size, "classes": s.classes}
            for name, s in SPECS.items() if s.kind == "image"}
from .specs import SPLIT_SIZES  # noqa: E402,F401 - kept here for callers of the registry
# the paper's text datasets (coar.paper.data.hf_text; scored with published models, never trained here) and the
# output function each is scored with
TEXT_DATASETS = {name: s.output for name, s in SPECS.items() if s.kind == "tokens" and s.pretrained_only}
FILE_DATASETS = tuple(name for name, s in SPECS.items() if s.storage == "files")  # decoded for the examples chosen
GROUPED = tuple(name for name, s in SPECS.items() if s.grouped)  # every example has a group
DECODED = tuple(name for name, s in SPECS.items() if s.decodable)  # can be decoded at any size
SPLITS = ("train", "test", "val")  # of every dataset but imagenet-star, whose splits are its shifts

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MIMIC_CLASSES = ("no cardiomegaly", "cardiomegaly")
IMAGENET_FAMILY = ("imagenet", "imagenet-sketch", "imagenet-star")  # read by coar.paper.data.imagenet


def decode_size(dataset: str, image_size: int) -> int | None:
    """The size to decode `dataset`'s images at for a model taking `image_size` pixels: None (the dataset's own
    size, DATASETS[dataset]["size"]) when they are equal, and for datasets stored as arrays, which come at one
    size. A convolutional model such as ResNet-50 takes other sizes than the 224 its weights were trained at."""
    if dataset not in DECODED or int(image_size) == DATASETS[dataset]["size"]:
        return None
    return int(image_size)


def _size(dataset: str, size: int | None) -> int:
    """The decode size of `dataset` (its own unless `size` is given); a size for a dataset stored as arrays is
    refused, since it would be ignored."""
    if size is not None and dataset not in DECODED and int(size) != DATASETS[dataset]["size"]:
        raise CoarError(f"{dataset} images come at {DATASETS[dataset]['size']} pixels (stored as arrays); they "
                        f"cannot be decoded at {size}")
    return int(size) if size is not None else DATASETS[dataset]["size"]


def _module(dataset: str):
    from . import celeba, spurious, waterbirds

    return {"fashion-mnist-spurious": spurious, "waterbirds": waterbirds, "celeba-blond": celeba}[dataset]


def group_names(dataset: str) -> list[str]:
    if dataset not in GROUPED:
        raise CoarError(f"dataset {dataset!r} has no groups; group-labelled datasets: {', '.join(GROUPED)}")
    return list(_module(dataset).GROUP_NAMES)


def _file_index(dataset: str, split: str, root, download: bool = True):
    """(image paths, labels, groups or None) of a split of a file-backed dataset, nothing decoded."""
    if dataset == "mimic-cxr":  # frontal views; a binary Cardiomegaly task, studies marked uncertain left out
        from . import mimic

        paths, labels = mimic.index_mimic(split, root or "data/raw/mimic-cxr")
        keep, targets = mimic.cardiomegaly_task(labels, uncertain="exclude")
        return paths[keep], targets, None
    if dataset in IMAGENET_FAMILY:
        from . import imagenet

        root = Path(root or f"data/raw/{dataset}")
        if dataset == "imagenet-star":
            return (*imagenet.index_imagenet_star(root, split), None)
        if split != ("val" if dataset == "imagenet" else "test"):
            raise CoarError(f"{dataset} has one split here, {'val' if dataset == 'imagenet' else 'test'}, not "
                            f"{split!r}")
        if dataset == "imagenet":
            return (*imagenet.index_imagenet_val(root), None)
        return (*imagenet.index_sketch(root, download), None)
    from .celeba import index_celeba
    from .waterbirds import index_waterbirds

    index = index_waterbirds if dataset == "waterbirds" else index_celeba
    return index(split, root or f"data/raw/{dataset}", download)


def load_grouped(dataset: str, split: str, root=None, download: bool = True, size: int | None = None):
    """(uint8 images [N, C, H, W], int64 labels, int64 groups) of a whole split of a group-labelled dataset,
    decoded at `size` (None: the dataset's own)."""
    if dataset == "fashion-mnist-spurious":
        from .spurious import load_spurious_fashion_mnist

        return load_spurious_fashion_mnist(split, root, download=download)
    from .images import decode_images

    paths, labels, groups = _file_index(dataset, split, root, download)
    return decode_images(list(paths), _size(dataset, size)), labels, groups


def class_names(dataset: str, root=None) -> list[str] | None:
    """Display names of the classes (ImageNet's from torchvision's packaged weight metadata; the typographic
    dataset's from its annotations under `root`)."""
    if dataset == "typographic":
        from .typographic import load_typographic

        return load_typographic(root or "data/raw/typographic", size=8).class_names
    dataset = spec(dataset).backdoor_of or dataset
    if dataset == "fashion-mnist":
        from .fashion_mnist import CLASSES

        return list(CLASSES)
    if dataset == "cifar10":
        return list(CIFAR10_CLASSES)
    if dataset in GROUPED:
        return list(_module(dataset).CLASS_NAMES)
    if dataset == "mimic-cxr":
        return list(MIMIC_CLASSES)
    if dataset in IMAGENET_FAMILY:
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    return None


def dataset_root(dataset: str, data_root=None, download_root="data/raw", imagenet_root="data/raw/imagenet"):
    """Where a dataset's files live, from the workflow's three root settings (its spec's `root`)."""
    s = spec(dataset)
    if s.root == "data":
        return data_root  # None: Debian's package, COAR_FASHION_MNIST or torchvision's download
    if s.root == "imagenet":
        return imagenet_root
    return f"{download_root}/{s.source}"


def load_backdoored(dataset: str, split: str, root=None, download: bool = True):
    """(uint8 images [N, C, H, W], int64 labels, bool poisoned [N]) of a backdoored dataset: its base dataset's
    split, the training split poisoned, the test split clean (coar.paper.data.backdoor)."""
    from .backdoor import backdoor_of, poisoned_split

    images, labels = load_images(backdoor_of(dataset).base, split, root, download)
    return poisoned_split(dataset, split, images, labels)


def load_images(dataset: str, split: str, root: str | Path | None = None, download: bool = True,
                size: int | None = None):
    """(uint8 [N, C, H, W], int64 [N]) for a dataset split; image files are decoded at `size` (None: the
    dataset's own)."""
    if dataset not in DATASETS:
        raise CoarError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    size = _size(dataset, size)
    if dataset == "fashion-mnist":
        from .fashion_mnist import load_fashion_mnist

        images, labels = load_fashion_mnist(split, root, download=download)
        return images[:, None], labels
    if dataset in GROUPED:
        return load_grouped(dataset, split, root, download, size)[:2]
    if spec(dataset).backdoor_of:
        return load_backdoored(dataset, split, root, download)[:2]
    if dataset == "cifar10":  # a placed copy of the python release, or torchvision's download (coar.paper.data.cifar)
        from .cifar import load_cifar10

        if split not in ("train", "test"):
            raise CoarError(f"CIFAR-10 has the splits train and test, not {split!r}")
        return load_cifar10(split, Path(root or "data/raw/cifar10"), download)
    from .images import decode_images  # imagenet and its shifts: every image of the split, decoded

    paths, labels, _ = _file_index(dataset, split, root, download)
    return decode_images(list(paths), size), labels


def make_examples(dataset: str, split: str, n: int | None, seed: int = 0, root=None,
                  every: int | None = None, corruption: dict | None = None, length: int | None = None,
                  offset: int = 0, trigger: str | None = None, whole_classes: Sequence[int] = (),
                  size: int | None = None) -> Examples:
    """A fixed evaluation set: every `every`-th example, or n drawn by a seeded permutation, or all.

    trigger "paired" (backdoored datasets): n images of the classes other than the trigger's, each twice,
    first clean, then with the trigger (meta "triggered"), as the paper's paired examples (Sec. 5.4). For
    the typographic dataset (its clean photos, split "test"), the second copy carries a synthetic attack, a
    random word per photo (meta "attack_words"), as the paper's targets (App. D.5).

    whole_classes: every example of these classes is added to the n drawn (the shifted sets a forgotten class
    is evaluated on, Sec. 5.2; with an offset, to the held-out draw too, as at the paper's scale, where the
    setup's examples and its held-out ones are both the whole split). The result is in dataset order; its
    meta lists the dataset indices and which examples were drawn ("drawn"), so the other classes can be
    scored on the random draw alone.

    corruption {name, severity}: the same test examples, corrupted: CIFAR-10-C's published images for
    cifar10 (read from the parent of `root`), our synthetic corruptions otherwise (coar.paper.data.corruptions).

    size: the size image files are decoded at (None: the dataset's own; see decode_size).
    """
    from ...examples import Examples

    from .corruptions import corrupt, load_cifar10c

    if dataset == "os-text":
        from .text import text_examples

        return text_examples(split, n, length or 64, seed, root)
    if dataset in TEXT_DATASETS:  # the paper's text data (coar.paper.data.hf_text); validation splits only
        from . import hf_text

        if split != "val":
            raise CoarError(f"{dataset} examples come from its validation split (split: val), not {split!r}")
        if dataset == "tinystories":
            return hf_text.tinystories_examples(n, length or 256, seed, root)
        return hf_text.boolq_examples(n, seed, root, max_length=length)

    if corruption and split != "test":
        raise CoarError(f"corrupted examples are made from the test split, not {split!r}")
    size = _size(dataset, size)
    groups = paths = None
    extra_meta = {}
    published = bool(corruption) and spec(dataset).corruptions == "published"
    if published:
        images, labels = load_cifar10c(Path(root or "data/raw/cifar10").parent, corruption["name"],
                                       corruption["severity"])
    elif dataset in FILE_DATASETS:  # decode only the chosen files
        paths, labels, groups = _file_index(dataset, split, root)
    elif dataset in GROUPED:
        images, labels, groups = load_grouped(dataset, split, root, size=size)
    elif dataset == "typographic":  # the clean photos; the attacked ones are not examples (the edit scores them)
        from .typographic import load_typographic

        if split != "test":
            raise CoarError(f"the typographic dataset has one split, test (its clean photos), not {split!r}")
        data = load_typographic(root or "data/raw/typographic", size=size)
        images, labels = data.clean_images.numpy(), data.clean_labels.numpy()
        extra_meta = {"class_names": data.class_names, "files": np.array(data.clean_files, dtype=object)}
    else:
        images, labels = load_images(dataset, split, root, size=size)
    idx = np.arange(len(labels))
    if trigger is not None:
        from .backdoor import backdoor_of

        if trigger != "paired":
            raise CoarError(f"examples.trigger must be 'paired' or null, got {trigger!r}")
        if corruption:
            raise CoarError("examples take a trigger or a corruption, not both")
        if spec(dataset).attack != "typographic":  # any photo can carry a typographic attack
            idx = idx[labels != backdoor_of(dataset).target]  # fails naming the dataset when it has no trigger
    if every:
        idx = idx[::every]
    if n is not None:  # offset: the next n of the same permutation (disjoint held-out sets)
        if offset + n > len(idx):
            raise CoarError(f"asked for {n} {dataset} {split} examples after the first {offset}, only {len(idx)} "
                            "are available")
        idx = np.sort(np.random.default_rng(seed).permutation(idx)[offset:offset + n])
    if len(whole_classes):
        if trigger is not None:
            raise CoarError("whole_classes does not combine with a trigger")
        extra = np.flatnonzero(np.isin(labels, np.asarray(whole_classes)))
        if not len(extra):
            raise CoarError(f"{dataset} {split} has no examples of the classes {list(whole_classes)}")
        drawn = idx
        idx = np.union1d(idx, extra)
    info = DATASETS[dataset]
    if paths is not None:
        from .images import decode_images

        chosen = decode_images(list(paths[idx]), size)
    else:
        chosen = np.ascontiguousarray(images[idx])
    meta = {"dataset": dataset, "split": split, "n": len(idx), "seed": seed, "mean": info["mean"], "std": info["std"]}
    if offset:
        meta["offset"] = offset
    if len(whole_classes):
        # drawn: which examples came from the random draw (the others were added for their class)
        meta.update(whole_classes=[int(c) for c in whole_classes], indices=idx.tolist(),
                    drawn=np.isin(idx, drawn).tolist())
    if groups is not None:  # label x spurious attribute, for subpopulation experiments
        meta["groups"] = groups[idx].tolist()
    meta.update({k: v[idx].tolist() if isinstance(v, np.ndarray) else v for k, v in extra_meta.items()})
    if trigger and spec(dataset).attack == "typographic":
        import torch

        from .typographic import random_attacks

        attacked, words = random_attacks(torch.from_numpy(chosen), seed=seed)
        meta.update(n=2 * len(idx), triggered=[False] * len(idx) + [True] * len(idx), attack_words=list(words))
        return Examples(np.concatenate([chosen, attacked.numpy()]), np.concatenate([labels[idx]] * 2), "image", meta)
    if trigger:
        from .backdoor import paired

        chosen, y_chosen, triggered = paired(dataset, chosen, labels[idx])
        meta.update(n=len(chosen), triggered=triggered.tolist())
        return Examples(chosen, y_chosen, "image", meta)
    if corruption:
        source = "CIFAR-10-C" if published else "synthetic"
        meta["corruption"] = {**corruption, "source": source}
        if source == "synthetic":
            chosen = corrupt(chosen, corruption["name"], corruption["severity"], seed)
    return Examples(chosen, labels[idx], "image", meta)
