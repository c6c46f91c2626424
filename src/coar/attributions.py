"""The one attribution type every method returns (COAR, LOO, GP, NC, II) and evaluation/editing consume.

Convention (paper eq. 4): the linear estimate of the component counterfactual is
    g(z)(keep) = bias[z] + sum_j weights[z, j] * keep[j]
where keep[j] = 1 if component j is NOT ablated. Shapes: N examples, C components, M masks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .errors import CoarError, ShapeError
from .io import atomic_savez, load_npz


@dataclass
class Attributions:
    weights: np.ndarray  # [N, C] float32
    bias: np.ndarray  # [N] float32
    method: str
    components: str  # fingerprint of the ComponentSet
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.weights = np.asarray(self.weights, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32)
        if self.weights.ndim != 2:
            raise ShapeError(f"attribution weights must be [N, C], got shape {self.weights.shape}")
        if self.bias.shape != (self.weights.shape[0],):
            raise ShapeError(
                f"attribution bias must be [N]={self.weights.shape[0]}, got shape {self.bias.shape}"
            )

    @property
    def n_examples(self) -> int:
        return self.weights.shape[0]

    @property
    def n_components(self) -> int:
        return self.weights.shape[1]

    def predict(self, keep: np.ndarray) -> np.ndarray:
        """Estimated outputs [M, N] for keep-masks [M, C] (True/1 = component kept)."""
        keep = np.asarray(keep)
        if keep.ndim != 2 or keep.shape[1] != self.n_components:
            raise ShapeError(f"keep masks must be [M, {self.n_components}], got {keep.shape}")
        return keep.astype(np.float32) @ self.weights.T + self.bias[None, :]

    def subset(self, examples) -> "Attributions":
        idx = np.asarray(examples)
        return Attributions(self.weights[idx], self.bias[idx], self.method, self.components, dict(self.meta))

    def problem(self) -> str | None:
        """What makes these attributions unfit to save or use, or None. The one rule for files both ways:
        `save` refuses to write them and `load` refuses to read them. A non-empty method name, a components
        fingerprint that is a string, a dict of metadata, finite weights and biases."""
        if not isinstance(self.method, str) or not self.method:
            return f"the attribution method must be a non-empty string, got {self.method!r}"
        if not isinstance(self.components, str):  # "" (fitted from bare arrays): nothing to check it against
            return f"the attribution components fingerprint must be a string, got {self.components!r}"
        if not isinstance(self.meta, dict):
            return f"the attribution metadata must be a dict, got {type(self.meta).__name__}"
        for name, arr in (("weights", self.weights), ("bias", self.bias)):
            for lo in range(0, len(arr), 1024):  # row blocks: no full-size temporary for large attributions
                bad = np.argwhere(~np.isfinite(arr[lo:lo + 1024]))
                if len(bad):
                    first = (lo + int(bad[0][0]),) + tuple(int(i) for i in bad[0][1:])
                    where = f"example {first[0]}" + (f", component {first[1]}" if arr.ndim == 2 else "")
                    count = int((~np.isfinite(arr)).sum())
                    return (f"{self.method} attribution {name} hold {count} non-finite value(s), the first at {where} "
                            f"({arr[first]})")
        return None

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a crash never leaves a half-written file under the final name. Attributions that
        `problem` finds fault with (non-finite weights, no method name, ...) are refused; nothing is written."""
        bad = self.problem()
        if bad:
            raise CoarError(f"{bad}; nothing written to {path}. Check the outputs or the fit that produced them")
        atomic_savez(path, header={"method": self.method, "components": self.components, "meta": self.meta},
                     weights=self.weights, bias=self.bias)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Attributions":
        """Read a file `save` wrote; refused (StoreError naming the file) when it is unreadable, lacks a header
        key, or holds attributions `save` would not have written."""
        from .errors import StoreError

        arrays, header = load_npz(path, "attribution", ("weights", "bias"), ("method", "components", "meta"))
        try:
            attr = cls(arrays["weights"], arrays["bias"], header["method"], header["components"], header["meta"])
        except (ShapeError, ValueError, TypeError) as exc:
            raise StoreError(f"attribution file {path} holds malformed arrays: {exc}") from None
        bad = attr.problem()
        if bad:
            raise StoreError(f"attribution file {path} cannot be used: {bad}")
        return attr
