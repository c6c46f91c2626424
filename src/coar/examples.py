"""A fixed set of examples (inputs + targets) stored once as arrays with a checksum.

Images stay uint8 [N, C, H, W] and are normalised when moved to the model's device, so mask sampling never
decodes images again (this replaces the authors' FFCV loaders). Token inputs are int64 [N, T].
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import StoreError
from .io import atomic_savez, load_npz


def normalize(images: torch.Tensor, mean: float | list = 0.5, std: float | list = 0.5) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 standardised. In place on a float copy, so the peak is one float32
    copy of the set (ImageNet's 50,000 validation images: 30 GB, not 60). `images` itself is never changed,
    also when it is already float32 (where `.float()` would return the same tensor)."""
    x = images.to(torch.float32, copy=True).div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


@dataclass
class Examples:
    inputs: np.ndarray  # uint8 [N, C, H, W] or int64 tokens [N, T]
    targets: np.ndarray  # int64 [N] labels or [N, T] next-token labels
    kind: str = "image"  # "image" | "tokens"
    meta: dict = field(default_factory=dict)  # mean/std, dataset, split, indices

    def __len__(self) -> int:
        return len(self.inputs)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.inputs, self.targets):
            h.update(str(a.shape).encode() + str(a.dtype).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def norm(self) -> tuple:
        """(mean, std) that `normalize` standardises these images with."""
        return self.meta.get("mean", 0.5), self.meta.get("std", 0.5)

    def tensors(self, device="cpu", normalized: bool = True):
        """(model inputs, targets) as tensors ready for a forward pass. normalized=False keeps images uint8 (a
        quarter of the memory) for code that normalises per batch with `norm()` (training)."""
        x = torch.from_numpy(np.ascontiguousarray(self.inputs)).to(device)
        if self.kind == "image" and normalized:
            x = normalize(x, *self.norm())
        return x, torch.from_numpy(np.ascontiguousarray(self.targets)).to(device)

    def subset(self, idx) -> "Examples":
        idx = np.asarray(idx)
        return Examples(self.inputs[idx], self.targets[idx], self.kind, dict(self.meta))

    def save(self, path: str | os.PathLike) -> None:
        atomic_savez(path, header={"kind": self.kind, "meta": self.meta, "fingerprint": self.fingerprint()},
                     inputs=self.inputs, targets=self.targets)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Examples":
        arrays, header = load_npz(path, "examples", ("inputs", "targets"))
        ex = cls(arrays["inputs"], arrays["targets"], header["kind"], header["meta"])
        if ex.fingerprint() != header["fingerprint"]:
            raise StoreError(f"examples file {path}: checksum mismatch (file corrupted)")
        return ex
