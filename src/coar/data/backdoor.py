"""Backdoor poisoning (paper Sec. 5.4, App. D.4): a small square trigger in a fixed corner, pasted on a
fraction of one class's training images with their labels kept. A model trained on the poisoned set
learns "trigger => that class", so pasting the trigger on test images of other classes makes them
misclassified (the attack set).

The paper pastes a blue square on 50% of CIFAR-10 "airplane" training images; `add_trigger` takes one value
per channel (blue: (0, 0, 255)). The offline stand-in pastes a white square on Fashion-MNIST class 0
(T-shirt/top).
"""
from __future__ import annotations

import numpy as np

from ..errors import CoarError

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
