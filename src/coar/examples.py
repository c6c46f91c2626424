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

    def problem(self) -> str | None:
        """What makes this set unfit to save or use, or None: the one rule for example files both ways (`save`
        refuses to write them, `load` to read them). Images are uint8 pixel values [N, C, H, W], standardised by
        meta's mean and std when they are used (float images already scaled to [0, 1] would be divided by 255
        again); tokens are non-negative integers [N, T]; targets are integers, one row per input."""
        if self.kind not in ("image", "tokens"):
            return f"kind must be 'image' or 'tokens', got {self.kind!r}"
        if not isinstance(self.meta, dict):
            return f"meta must be a dict, got {type(self.meta).__name__}"
        x, y = np.asarray(self.inputs), np.asarray(self.targets)
        if x.ndim == 0 or len(x) == 0:
            return "the set holds no examples" + (f" (inputs are a single {x.dtype} value)" if x.ndim == 0 else "")
        if y.ndim not in (1, 2) or len(y) != len(x):
            return f"targets {y.shape} must have one row per input ({len(x)} inputs)"
        if not np.issubdtype(y.dtype, np.integer):
            frac = y[np.isfinite(y) & (y != np.round(y))] if np.issubdtype(y.dtype, np.floating) else y[:0]
            return (f"targets must be integer labels, got {y.dtype}"
                    + (f" with fractional values ({frac.ravel()[0]:g}, ...)" if len(frac) else "")
                    + "; labels are not rounded or truncated silently")
        if self.kind == "tokens":
            if not np.issubdtype(x.dtype, np.integer) or x.ndim != 2 or x.shape[1] == 0 or x.min() < 0:
                return f"token inputs must be non-negative integers [N, T] with T >= 1, got {x.dtype} {x.shape}"
            return None
        if x.ndim != 4 or 0 in x.shape:
            return f"image inputs must be [N, C, H, W] with every size >= 1, got shape {x.shape}"
        if x.dtype != np.uint8:
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
            scaled = 0.0 <= lo and hi <= 1.0
            return (f"image inputs must be uint8 pixel values 0..255 (standardised with meta's mean and std when "
                    f"used), got {x.dtype} in [{lo:g}, {hi:g}]"
                    + (": already scaled to [0, 1]? Store round(x * 255) as uint8" if scaled else ""))
        for name in ("mean", "std"):
            try:
                v = np.atleast_1d(np.asarray(self.meta.get(name, 0.5), dtype=float))
            except (TypeError, ValueError):  # a string, a mapping, a ragged list: not numbers
                v = np.array([np.nan])
            if v.ndim != 1 or len(v) not in (1, x.shape[1]) or not np.isfinite(v).all() or (name == "std" and
                                                                                          (v <= 0).any()):
                return (f"meta {name} must be one finite number or one per channel ({x.shape[1]})"
                        + (", each > 0" if name == "std" else "") + f", got {self.meta.get(name)!r}")
        return None

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically; a set `problem` finds fault with is refused and nothing is written."""
        bad = self.problem()
        if bad:
            raise StoreError(f"examples not written to {path}: {bad}")
        atomic_savez(path, header={"kind": self.kind, "meta": self.meta, "fingerprint": self.fingerprint()},
                     inputs=self.inputs, targets=self.targets)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Examples":
        """Read a file `save` wrote, refused (StoreError naming it) when unreadable, corrupted, lacking a header
        key, or holding a set `save` would not have written."""
        arrays, header = load_npz(path, "examples", ("inputs", "targets"), ("kind", "meta", "fingerprint"))
        ex = cls(arrays["inputs"], arrays["targets"], header["kind"], header["meta"])
        if ex.fingerprint() != header["fingerprint"]:
            raise StoreError(f"examples file {path}: checksum mismatch (file corrupted)")
        bad = ex.problem()
        if bad:
            raise StoreError(f"examples file {path} cannot be used: {bad}")
        return ex
