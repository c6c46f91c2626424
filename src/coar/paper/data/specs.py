"""What each dataset of the paper's reproduction is, declared once: one `DatasetSpec` per dataset name.

Everything that depends on a dataset's nature reads its spec: the registry's loaders (coar.paper.data.registry),
the sources the workflow obtains (coar.paper.data.sources), and the workflow's plan-time checks (which split
sizes bound a config's counts, which output function a text dataset is scored with, which edits a dataset
supports). Adding a dataset means adding a spec here and its loader; no code tests dataset names elsewhere.
This module imports nothing but the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

IMAGENET_NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
CLIP_NORM = {"mean": (0.48145466, 0.4578275, 0.40821073), "std": (0.26862954, 0.26130258, 0.27577711)}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    source: str  # what is downloaded or placed by hand (several datasets can share one)
    storage: str  # "arrays": whole splits at one size; "files": image files, decoded for the examples chosen;
    #               "folder": image files decoded together; "tokens": token sequences
    root: str = "download"  # where its files live: "data" (data_root), "download" (download_root/<source>),
    #                         "imagenet" (imagenet_root)
    splits: Mapping[str, int | None] | None = None  # split -> published size (None: not fixed); None: the splits
    #                                                 are free-form names (ImageNet*'s shifts)
    mean: float | tuple = 0.5
    std: float | tuple = 0.5
    channels: int = 3
    size: int | None = None  # pixels of a side as stored or as the models take it
    classes: int | None = None
    output: str = "margin"  # the output function its examples are scored with by default
    grouped: bool = False  # every example has a group (label x spurious attribute)
    backdoor_of: str | None = None  # the clean dataset whose training split it poisons
    attack: str | None = None  # the edit experiment its paired (triggered) examples serve: backdoor | typographic
    corruptions: str | None = None  # "published" (CIFAR-10-C) or "synthetic" corrupted test examples
    pretrained_only: bool = False  # its models are used with published weights, never trained here
    zero_shot: bool = False  # classified zero-shot (class names as prompts), by the zero-shot CLIP model only
    manual: bool = False  # its source must be placed by hand (credentialed or licence-bound)

    @property
    def kind(self) -> str:
        """"tokens" for text datasets, "image" otherwise (the Examples kind)."""
        return "tokens" if self.storage == "tokens" else "image"

    @property
    def decodable(self) -> bool:
        """Read from image files, so it can be decoded at any size (a convolutional model takes other sizes)."""
        return self.storage in ("files", "folder")

    @property
    def norm(self) -> dict:
        return {"mean": list(self.mean) if isinstance(self.mean, tuple) else self.mean,
                "std": list(self.std) if isinstance(self.std, tuple) else self.std}


_FMNIST = dict(root="data", splits={"train": 60000, "test": 10000}, mean=0.2860, std=0.3530, channels=1, size=28,
               classes=10, corruptions="synthetic")
_CIFAR = dict(splits={"train": 50000, "test": 10000}, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
              size=32, classes=10)
_IMAGENET = dict(size=224, classes=1000, **IMAGENET_NORM)

SPECS: dict[str, DatasetSpec] = {s.name: s for s in (
    # offline: Debian's package, COAR_FASHION_MNIST or torchvision's download
    DatasetSpec("fashion-mnist", "fashion-mnist", "arrays", **_FMNIST),
    DatasetSpec("fashion-mnist-backdoor", "fashion-mnist", "arrays", backdoor_of="fashion-mnist", attack="backdoor",
                **_FMNIST),
    DatasetSpec("fashion-mnist-spurious", "fashion-mnist", "arrays", root="data", splits={"train": None, "test": None},
                mean=0.40, std=0.30, channels=1, size=28, classes=2, grouped=True, corruptions="synthetic"),
    DatasetSpec("os-text", "os-text", "tokens", root="data", splits={"train": None, "test": None},
                output="token_margin"),  # the offline stand-in for TinyStories: the OS's text files
    DatasetSpec("cifar10", "cifar10", "arrays", corruptions="published", **_CIFAR),
    DatasetSpec("cifar10-backdoor", "cifar10", "arrays", backdoor_of="cifar10", attack="backdoor",
                corruptions="synthetic", **_CIFAR),
    DatasetSpec("imagenet", "imagenet", "files", root="imagenet", splits={"val": 50000}, pretrained_only=True,
                manual=True, corruptions="synthetic", **_IMAGENET),
    DatasetSpec("imagenet-sketch", "imagenet-sketch", "files", splits={"test": None}, corruptions="synthetic",
                **_IMAGENET),
    DatasetSpec("imagenet-star", "imagenet-star", "files", splits=None, manual=True, corruptions="synthetic",
                **_IMAGENET),
    DatasetSpec("waterbirds", "waterbirds", "files", splits={"train": 4795, "val": 1199, "test": 5794}, grouped=True,
                corruptions="synthetic", **{**_IMAGENET, "classes": 2}),
    DatasetSpec("celeba-blond", "celeba-blond", "files", splits={"train": 162770, "val": 19867, "test": 19962},
                grouped=True, corruptions="synthetic", **{**_IMAGENET, "classes": 2}),
    DatasetSpec("mimic-cxr", "mimic-cxr", "files", splits={"train": None, "val": None, "test": None}, manual=True,
                corruptions="synthetic", **{**_IMAGENET, "classes": 2}),
    DatasetSpec("typographic", "typographic", "folder", splits={"test": None}, size=224, classes=None,
                attack="typographic", zero_shot=True, corruptions="synthetic", **CLIP_NORM),
    DatasetSpec("tinystories", "tinystories", "tokens", splits={"val": None}, output="token_margin",
                pretrained_only=True),  # GPT-2 with its published weights (paper App. B)
    DatasetSpec("boolq", "boolq", "tokens", splits={"val": None}, output="answer_margin",
                pretrained_only=True),  # Phi-2 with its published weights (paper App. B)
)}

# CIFAR-10-C, the published corruptions of CIFAR-10's test split, is a source of its own
EXTRA_SOURCES = ("cifar10-c",)


def spec(dataset: str) -> DatasetSpec:
    """The spec of `dataset`; an unknown name is refused, listing the known ones."""
    from ...errors import CoarError

    if dataset not in SPECS:
        raise CoarError(f"unknown dataset {dataset!r}; known: {', '.join(SPECS)}")
    return SPECS[dataset]


def image_datasets() -> list[str]:
    return [name for name, s in SPECS.items() if s.kind == "image"]


# published split sizes, for the workflow's plan-time check of example and training-image counts (a smaller
# copy than these is still caught by the job that loads it). Here, not in registry (which imports torch through
# coar.examples): the plan reads them while Snakemake builds its DAG.
SPLIT_SIZES = {(name, split): n for name, s in SPECS.items() for split, n in (s.splits or {}).items()
               if n is not None}
