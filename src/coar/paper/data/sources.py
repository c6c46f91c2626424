"""Obtaining a data source once, before any job reads it (the workflow's `dataset` rule).

A *source* is what is downloaded or placed by hand; several registry datasets can share one (the backdoored
and spurious-background Fashion-MNIST variants are made from Fashion-MNIST's files, the backdoored CIFAR-10
from CIFAR-10's). `prepare(source, root)` downloads what is missing (or, for credentialed and manual sources,
checks what was placed and fails with instructions), runs each loader's own verification (checksums, layout,
counts) over every split, and returns a manifest of what was found. The workflow writes the manifest as
data/datasets/<source>.json; every job that reads the source waits for it, so no two jobs download or
extract the same files at once.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...errors import CoarError
from .specs import SPECS

# registry dataset -> source, and the sources a user must place by hand (coar.paper.data.specs)
SOURCE_OF = {name: s.source for name, s in SPECS.items()}
MANUAL = tuple(dict.fromkeys(s.source for s in SPECS.values() if s.manual))


def source_of(dataset: str, corruption: dict | None = None) -> str:
    """The source a dataset's examples are read from (CIFAR-10's corrupted examples: CIFAR-10-C)."""
    if dataset not in SOURCE_OF:
        raise CoarError(f"unknown dataset {dataset!r}; known: {', '.join(SOURCE_OF)}")
    if corruption and SPECS[dataset].corruptions == "published":  # CIFAR-10-C
        return "cifar10-c"
    return SOURCE_OF[dataset]


def sources() -> tuple[str, ...]:
    return (*dict.fromkeys(SOURCE_OF.values()), "cifar10-c")


def source_root(source: str, data_root=None, download_root="data/raw", imagenet_root="data/raw/imagenet"):
    """Where a source's files live: the root its datasets are read from (CIFAR-10-C: CIFAR-10's, whose parent
    holds it, as make_examples reads it)."""
    from .registry import dataset_root

    dataset = "cifar10" if source == "cifar10-c" else next((d for d, s in SOURCE_OF.items() if s == source), None)
    if dataset is None:
        raise CoarError(f"unknown data source {source!r}; known: {', '.join(sources())}")
    return dataset_root(dataset, data_root, download_root, imagenet_root)


def _fashion_mnist(root):
    from .fashion_mnist import find_fashion_mnist, load_fashion_mnist

    counts = {split: len(load_fashion_mnist(split, root, download=True)[1]) for split in ("train", "test")}
    return {**counts, "location": str(find_fashion_mnist(root))}


def _os_text(root):
    from .text import load_corpus, text_root

    train, held = load_corpus(root)
    return {"train_bytes": len(train), "held_out_bytes": len(held), "location": str(text_root(root))}


def _cifar10(root):
    from .registry import load_images

    return {split: len(load_images("cifar10", split, root)[1]) for split in ("train", "test")}


def _cifar10c(root):
    # root: CIFAR-10's root; CIFAR-10-C lives beside it (as make_examples reads it). Every corruption's array
    # is loaded once, so its shape is checked and its SHA-256 recorded (and checked on later uses).
    from .corruptions import CIFAR10C_NAMES, load_cifar10c

    parent = Path(root).parent
    return {name: len(load_cifar10c(parent, name, 1)[1]) for name in CIFAR10C_NAMES}


def _file_splits(dataset: str, splits) -> Callable:
    def prepare(root):
        from .registry import _file_index

        return {split: len(_file_index(dataset, split, root, download=True)[1]) for split in splits}
    return prepare


def _mimic(root):
    # the location is the release directory read (…/mimic-cxr-jpg/2.1.0 or 2.0.0: the newest present)
    from .mimic import find_release

    return {**_file_splits("mimic-cxr", ("train", "val", "test"))(root), "location": str(find_release(root))}


def _imagenet_star(root):
    # the release's <shift>.zip files are unpacked here, once, before any job reads a shift; then every shift
    # folder is indexed (imagenet.star_shifts: folders holding class folders, hidden ones and __MACOSX ignored)
    from .imagenet import index_imagenet_star, star_shifts, unpack_star_zips

    root = Path(root)
    unpack_star_zips(root)
    shifts = star_shifts(root)
    if not shifts:
        index_imagenet_star(root, "in_the_water")  # fails naming the folder and where to get the shifts
    return {shift: len(index_imagenet_star(root, shift)[1]) for shift in shifts}


def _typographic(root):
    from .typographic import load_typographic

    data = load_typographic(root, size=8, download=True)  # small decode: the check is of files and annotations
    return {"clean": len(data.clean_labels), "classes": len(data.class_names)}


def _tinystories(root):
    from .hf_text import load_tinystories

    stories, path = load_tinystories(root, download=True)
    return {"val_stories": len(stories), "location": str(path)}


def _boolq(root):
    from .hf_text import find_boolq, read_boolq

    path = find_boolq(root, download=True)
    return {"val": len(read_boolq(path)), "location": str(path)}


_PREPARE: dict[str, Callable] = {
    "fashion-mnist": _fashion_mnist, "os-text": _os_text, "cifar10": _cifar10, "cifar10-c": _cifar10c,
    "waterbirds": _file_splits("waterbirds", ("train", "val", "test")),
    "celeba-blond": _file_splits("celeba-blond", ("train", "val", "test")),
    "mimic-cxr": _mimic,
    "imagenet": _file_splits("imagenet", ("val",)),
    "imagenet-sketch": _file_splits("imagenet-sketch", ("test",)),
    "imagenet-star": _imagenet_star, "typographic": _typographic, "tinystories": _tinystories, "boolq": _boolq,
}
assert set(_PREPARE) == set(sources())


def prepare(source: str, root) -> dict:
    """Obtain and verify a source under `root` (the registry's dataset_root of its datasets); returns the
    manifest {source, location (where the files were found), manual, counts (per split or file)}. Raises
    CoarError naming what is missing or corrupt."""
    if source not in _PREPARE:
        raise CoarError(f"unknown data source {source!r}; known: {', '.join(_PREPARE)}")
    counts = _PREPARE[source](root)
    location = counts.pop("location", None if root is None else str(root))
    if not counts or min(counts.values()) <= 0:
        raise CoarError(f"data source {source} at {location}: an empty split or file ({counts})")
    return {"source": source, "location": location, "manual": source in MANUAL, "counts": counts}
