"""Backdoor poisoning (paper Sec. 5.4, App. D.4): a small square trigger in a fixed corner, pasted on a
fraction of one class's training images with their labels kept. A model trained on the poisoned set
learns "trigger => that class", so pasting the trigger on test images of other classes makes them
misclassified (the attack set).

The paper pastes a blue square on 50% of CIFAR-10 "airplane" training images; `add_trigger` takes one value
per channel (blue: (0, 0, 255)). The offline stand-in pastes a white square on Fashion-MNIST class 0
(T-shirt/top).

Two datasets of the registry are backdoored versions of their base dataset (`BACKDOORS`): the training split
is poisoned (seeded, fixed), the test split is clean. The paper gives no trigger size; ours is 4 x 4 pixels one
pixel from the top-left corner for both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import CoarError

TARGET_CLASS = 0
POISON_FRACTION = 0.5
TRIGGER_SIZE = 4
TRIGGER_OFFSET = 1  # pixels from the top-left corner


def add_trigger(images: np.ndarray, value=255, size: int = TRIGGER_SIZE, offset: int = TRIGGER_OFFSET) -> np.ndarray:
    """A copy of uint8 images [N, C, H, W] with a size x size square at (offset, offset); `value` is a scalar
    or one value per channel."""
    if images.dtype != np.uint8 or images.ndim != 4:
        raise CoarError(f"add_trigger needs uint8 images [N, C, H, W], got {images.dtype} {images.shape}")
    if offset + size > min(images.shape[2:]):
        raise CoarError(f"a {size}-pixel trigger at offset {offset} does not fit {images.shape[2:]} images")
    out = images.copy()
    v = np.broadcast_to(np.asarray(value, dtype=np.uint8).reshape(-1, 1, 1), (images.shape[1], size, size))
    out[:, :, offset:offset + size, offset:offset + size] = v
    return out


def poison(images: np.ndarray, labels: np.ndarray, target_class: int = TARGET_CLASS,
           fraction: float = POISON_FRACTION, seed: int = 0, value=255) -> tuple[np.ndarray, np.ndarray]:
    """(poisoned images, bool mask of poisoned rows): the trigger on `fraction` of the target class's images,
    chosen by a seeded generator; labels are unchanged."""
    rows = np.nonzero(np.asarray(labels) == target_class)[0]
    if not len(rows):
        raise CoarError(f"no training image of target class {target_class} to poison")
    pick = np.random.default_rng([seed, 4]).choice(rows, int(round(fraction * len(rows))), replace=False)
    out = images.copy()
    out[pick] = add_trigger(images[pick], value)
    mask = np.zeros(len(images), bool)
    mask[pick] = True
    return out, mask


@dataclass(frozen=True)
class Backdoor:
    base: str  # the clean dataset
    target: int  # the class the trigger stands for
    value: int | tuple[int, ...]  # trigger colour: a grey level or one value per channel
    fraction: float = POISON_FRACTION
    seed: int = 0  # fixed: the poisoned training set is part of the dataset's definition


BACKDOORS = {
    "fashion-mnist-backdoor": Backdoor("fashion-mnist", TARGET_CLASS, 255),
    "cifar10-backdoor": Backdoor("cifar10", 0, (0, 0, 255)),  # blue square on "airplane" (paper Sec. 5.4)
}


def trigger_region(size: int = TRIGGER_SIZE, offset: int = TRIGGER_OFFSET) -> tuple[slice, slice]:
    """(rows, columns) of the trigger square."""
    return slice(offset, offset + size), slice(offset, offset + size)


def backdoor_of(dataset: str) -> Backdoor:
    if dataset not in BACKDOORS:
        raise CoarError(f"dataset {dataset!r} has no backdoor trigger; backdoored datasets: {', '.join(BACKDOORS)}")
    return BACKDOORS[dataset]


def trigger(dataset: str, images: np.ndarray) -> np.ndarray:
    """`images` with the dataset's trigger pasted."""
    return add_trigger(images, backdoor_of(dataset).value)


def poisoned_split(dataset: str, split: str, images: np.ndarray, labels: np.ndarray):
    """(images, labels, bool poisoned [N]) of a split of a backdoored dataset, given its base dataset's images
    of that split: the training split poisoned, the others clean (the attack set is `trigger(dataset, test
    images)`). coar.paper.data.registry.load_backdoored loads the base images."""
    b = backdoor_of(dataset)
    if split != "train":
        return images, labels, np.zeros(len(images), bool)
    images, poisoned = poison(images, labels, b.target, b.fraction, b.seed, b.value)
    return images, labels, poisoned


def paired(dataset: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paired examples (Sec. 5.4): the images first clean, then with the trigger; returns (images [2n, ...],
    labels [2n], triggered [2n] bool). The images must come from classes other than the trigger's: on those
    the trigger is the right answer (and poisoned training images already carry it)."""
    labels = np.asarray(labels)
    b = backdoor_of(dataset)
    if np.any(labels == b.target):
        raise CoarError(f"paired {dataset} examples must avoid the trigger's class {b.target}")
    return (np.concatenate([images, trigger(dataset, images)]), np.concatenate([labels, labels]),
            np.repeat([False, True], len(images)))
