"""The linear algebra under every estimator: the streaming Gram accumulator (X^T X, X^T Y and the sums of a
mask store, on the host or on a torch device), the Cholesky solve of least squares and ridge at given penalties
(solve_cholesky), and the eigendecomposition of the centred, standardised Gram (factorize) for the fits that need
the spectrum. coar.regression's least squares and ridge and coar.estimators' shrinkage, low-rank and sparse fits
all solve on these; see coar.regression for the derivation."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CoarError, ShapeError, StoreError
from .io import atomic_savez, load_npz

_F32_EXACT_ROWS = 1 << 24  # 0/1 products sum exactly in float32 below this many rows
_FORMAT_VERSION = 1
#: What an accumulator file holds besides its format version: name -> dtype (integer counts, float sums).
_STATISTICS = {"m": np.int64, "sum_x": np.int64, "xtx": np.int64, "sum_y": np.float64, "xty": np.float64,
               "sum_yy": np.float64}


# ----------------------------------------------------------------------------- helpers
def _to_numpy(x, name: str) -> np.ndarray:
    """Accept numpy arrays, array-likes and torch tensors (copied to the host)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class _Ops:
    """Matrix products and eigendecomposition, in numpy or in torch float64 on a device."""

    def __init__(self, device=None):
        self.device = device
        if device is not None:
            import torch  # deferred: numpy is the default path

            self.torch = torch
            self.dev = torch.device(device)

    def _t(self, a, dtype=None):
        torch = self.torch
        return torch.as_tensor(np.ascontiguousarray(a), device=self.dev, dtype=dtype or torch.float64)

    def mm(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if self.device is None:
            return a @ b
        return (self._t(a) @ self._t(b)).cpu().numpy()

    def mask_gram(self, keep: np.ndarray) -> np.ndarray:
        """keep^T keep for binary keep [b, C] with b < 2^24: exact in float32, returned int64."""
        if self.device is None:
            kf = keep.astype(np.float32)
            g = kf.T @ kf
        else:
            kf = self._t(keep, self.torch.float32)
            g = (kf.T @ kf).cpu().numpy()
        return np.rint(g).astype(np.int64)

    def eigh(self, a: np.ndarray):
        if self.device is None:
            return np.linalg.eigh(a)
        e, v = self.torch.linalg.eigh(self._t(a))
        return e.cpu().numpy(), v.cpu().numpy()


def _check_binary(keep: np.ndarray, name: str = "keep") -> None:
    if keep.dtype == np.bool_:
        return
    if not np.all((keep == 0) | (keep == 1)):
        raise CoarError(f"{name} masks must be binary (0/1 or bool), got values outside {{0, 1}}")


def _check_batch(keep, y, n_components: int, n_examples: int, what: str = "batch"):
    keep = _to_numpy(keep, "keep")
    y = _to_numpy(y, "y")
    if keep.ndim != 2 or keep.shape[1] != n_components:
        raise ShapeError(
            f"{what}: keep masks must have shape [b, C={n_components}], got shape {keep.shape}"
        )
    if y.ndim != 2 or y.shape != (keep.shape[0], n_examples):
        raise ShapeError(
            f"{what}: outputs y must have shape [b={keep.shape[0]}, N={n_examples}] to match "
            f"keep {keep.shape}, got shape {y.shape}"
        )
    _check_binary(keep)
    y = y.astype(np.float64, copy=False)
    if not np.all(np.isfinite(y)):
        raise CoarError(f"{what}: outputs y contain NaN or inf")
    return keep, y


def _array_problem(arrays: dict) -> str | None:
    """What makes the arrays of an accumulator file unfit to build one from (before their values are checked):
    a format version other than this coar's, counts that are not integers, sums that are not floats, xty not
    [C, N]."""
    version = arrays["version"]
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != _FORMAT_VERSION:
        return f"format version {version.tolist()!r} ({version.dtype}); this coar reads version {_FORMAT_VERSION}"
    for name, dtype in _STATISTICS.items():
        kind = "iu" if np.dtype(dtype).kind == "i" else "f"
        if arrays[name].dtype.kind not in kind:
            return f"{name} must hold {'integer counts' if kind == 'iu' else 'floats'}, got {arrays[name].dtype}"
    if arrays["m"].shape != ():
        return f"the mask count m must be a single number, got shape {arrays['m'].shape}"
    if arrays["xty"].ndim != 2 or 0 in arrays["xty"].shape:
        return f"xty must be [C, N] with C, N >= 1, got shape {arrays['xty'].shape}"
    return None


# ----------------------------------------------------------------------- accumulation
_FLOAT_STATS = ("sum_y", "xty", "sum_yy")


def _torch_dtype_name(t) -> str:
    return str(t.dtype).replace("torch.", "")


def _host_to_device(array: np.ndarray, dev):
    """One host-to-device copy of ``array`` in its own dtype (bool / uint8 masks and float32 outputs stay as they
    are stored; the cast to the accumulation dtypes happens on the device)."""
    import torch

    if not (array.flags.c_contiguous or array.flags.f_contiguous) or any(st < 0 for st in array.strides):
        array = np.ascontiguousarray(array)  # torch cannot wrap negative strides; same dtype
    return torch.from_numpy(array).to(dev)


def _device_input(x, dev, name: str, what: str):
    """``x`` (torch tensor anywhere, numpy array or array-like) as a torch tensor on ``dev``."""
    if hasattr(x, "detach") and hasattr(x, "to"):
        return x.detach().to(dev)
    a = np.asarray(x)
    if a.dtype.kind not in "biuf":
        raise CoarError(f"{what}: {name} must hold numbers (bool, integers or floats), got dtype {a.dtype}")
    return _host_to_device(a, dev)


class GramAccumulator:
    """Streaming sufficient statistics of (masks, outputs) for all examples at once.

    After any number of :meth:`add` calls (one pass, any chunking) it holds
    ``m`` (masks seen), ``sum_x`` [C] and ``xtx`` [C, C] (int64, exact counts),
    ``sum_y`` [N], ``xty`` [C, N] and ``sum_yy`` [N] (float64).

    ``device=None``: the statistics are numpy arrays and every chunk is summed on the host.
    ``device`` a torch device (``"cuda"``, ``"cpu"``, ...): the statistics live on that device as torch tensors
    for the whole stream. :meth:`add` then takes tensors already there without any host round trip, or host
    arrays / tensors, which are copied once in their stored dtype (bool or uint8 masks, float16/float32 outputs)
    and cast on the device; the 0/1 and finiteness checks run on the device (one scalar comes back per chunk).
    Per chunk of fewer than 2^24 masks, X^T X is a float32 matrix product of the 0/1 masks: 0 and 1 are exact in
    float32, TF32 and bfloat16 and every product is accumulated in float32, so each count (< 2^24) is exact
    under any ``torch.set_float32_matmul_precision`` setting; the counts are summed into an int64 tensor. X^T Y
    is a float64 product on the device (the 0/1 x float32 products are exact; the sums are float64 ones), and
    so are the output sums. The attributes ``xtx``, ``xty``, ... then return read-only host (numpy) copies, made
    when first asked for after a change; the solvers of this module read the device tensors directly.
    """

    def __init__(self, n_components: int, n_examples: int, device=None):
        if int(n_components) < 1 or int(n_examples) < 1:
            raise ShapeError(
                f"GramAccumulator needs n_components >= 1 and n_examples >= 1, "
                f"got C={n_components}, N={n_examples}"
            )
        self.n_components = int(n_components)
        self.n_examples = int(n_examples)
        self.device = device
        self._ops = _Ops(device)
        C, N = self.n_components, self.n_examples
        self.m = 0
        self._host: dict = {}
        self._dev: dict | None = None
        if device is None:
            self._host = {"sum_x": np.zeros(C, dtype=np.int64), "xtx": np.zeros((C, C), dtype=np.int64),
                          "sum_y": np.zeros(N, dtype=np.float64), "xty": np.zeros((C, N), dtype=np.float64),
                          "sum_yy": np.zeros(N, dtype=np.float64)}
        else:
            torch = self._ops.torch
            dev = self._ops.dev
            self._dev = {"sum_x": torch.zeros(C, dtype=torch.int64, device=dev),
                         "xtx": torch.zeros((C, C), dtype=torch.int64, device=dev),
                         "sum_y": torch.zeros(N, dtype=torch.float64, device=dev),
                         "xty": torch.zeros((C, N), dtype=torch.float64, device=dev),
                         "sum_yy": torch.zeros(N, dtype=torch.float64, device=dev)}

    # -- the statistics: numpy arrays (host) or device tensors with host copies on demand -----------------
    def _get(self, name: str) -> np.ndarray:
        if self._dev is None:
            return self._host[name]
        cached = self._host.get(name)
        if cached is None:
            cached = self._dev[name].cpu().numpy()
            cached.flags.writeable = False  # a copy: writing to it would not reach the device statistics
            self._host[name] = cached
        return cached

    def _set(self, name: str, value) -> None:
        if self._dev is None:
            self._host[name] = value
            return
        dtype = np.int64 if name in ("sum_x", "xtx") else np.float64
        self._dev[name] = _device_input(np.asarray(_to_numpy(value, name), dtype=dtype), self._ops.dev, name,
                                        "GramAccumulator")
        self._host.pop(name, None)

    sum_x = property(lambda self: self._get("sum_x"), lambda self, v: self._set("sum_x", v))
    xtx = property(lambda self: self._get("xtx"), lambda self, v: self._set("xtx", v))
    sum_y = property(lambda self: self._get("sum_y"), lambda self, v: self._set("sum_y", v))
    xty = property(lambda self: self._get("xty"), lambda self, v: self._set("xty", v))
    sum_yy = property(lambda self: self._get("sum_yy"), lambda self, v: self._set("sum_yy", v))

    def tensors(self, device=None) -> dict:
        """The statistics (without m) as torch tensors on ``device`` (default: the accumulator's device; for a
        host accumulator, wrapping the numpy arrays without a copy on the CPU)."""
        import torch

        dev = torch.device(device if device is not None else (self.device or "cpu"))
        if self._dev is not None:
            return {name: t.to(dev) for name, t in self._dev.items()}
        return {name: torch.from_numpy(a).to(dev) for name, a in self._host.items()}

    def __repr__(self) -> str:
        where = "" if self.device is None else f", device={self.device!r}"
        return f"GramAccumulator(C={self.n_components}, N={self.n_examples}, m={self.m}{where})"

    @classmethod
    def from_arrays(cls, keep, y, chunk_size: int = 8192, device=None) -> "GramAccumulator":
        if device is None:
            keep = _to_numpy(keep, "keep")
            y = _to_numpy(y, "y")
        elif not hasattr(keep, "detach"):
            keep, y = np.asarray(keep), (y if hasattr(y, "detach") else np.asarray(y))
        if keep.ndim != 2 or y.ndim != 2:
            raise ShapeError(f"keep must be [M, C] and y [M, N], got shapes {tuple(keep.shape)} and "
                             f"{tuple(y.shape)}")
        acc = cls(keep.shape[1], y.shape[1], device=device)
        for s in range(0, keep.shape[0], chunk_size):
            acc.add(keep[s : s + chunk_size], y[s : s + chunk_size])
        return acc

    def add(self, keep, y) -> "GramAccumulator":
        """Add a batch: ``keep`` [b, C] binary, ``y`` [b, N] outputs of the N examples."""
        if self._dev is not None:
            return self._add_device(keep, y)
        keep, y = _check_batch(keep, y, self.n_components, self.n_examples)
        b = keep.shape[0]
        if b == 0:
            return self
        h = self._host
        for s in range(0, b, _F32_EXACT_ROWS - 1):
            kb = keep[s : s + _F32_EXACT_ROWS - 1]
            h["xtx"] += self._ops.mask_gram(kb)
        kf = keep.astype(np.float64)
        h["xty"] += self._ops.mm(kf.T, y)
        h["sum_x"] += keep.sum(axis=0, dtype=np.int64)
        h["sum_y"] += y.sum(axis=0)
        h["sum_yy"] += np.einsum("ij,ij->j", y, y)
        self.m += b
        return self

    def _add_device(self, keep, y, what: str = "batch") -> "GramAccumulator":
        torch = self._ops.torch
        dev = self._ops.dev
        C, N = self.n_components, self.n_examples
        keep = _device_input(keep, dev, "keep masks", what)
        y = _device_input(y, dev, "outputs y", what)
        if keep.dim() != 2 or keep.shape[1] != C:
            raise ShapeError(f"{what}: keep masks must have shape [b, C={C}], got shape {tuple(keep.shape)}")
        if y.dim() != 2 or tuple(y.shape) != (keep.shape[0], N):
            raise ShapeError(f"{what}: outputs y must have shape [b={keep.shape[0]}, N={N}] to match keep "
                             f"{tuple(keep.shape)}, got shape {tuple(y.shape)}")
        if y.dtype.is_complex or keep.dtype.is_complex:
            raise CoarError(f"{what}: keep masks and outputs must be real, got {keep.dtype} and {y.dtype}")
        b = keep.shape[0]
        if b == 0:
            return self
        flags = [torch.zeros((), dtype=torch.bool, device=dev)] * 2
        if keep.dtype != torch.bool:
            flags[0] = ((keep != 0) & (keep != 1)).any()
        if y.dtype.is_floating_point:
            flags[1] = ~torch.isfinite(y).all()
        nonbinary, nonfinite = torch.stack(flags).tolist()  # the one value that comes back per chunk
        if nonbinary:
            raise CoarError(f"{what}: keep masks must be binary (0/1 or bool), got values outside {{0, 1}} "
                            f"(dtype {_torch_dtype_name(keep)})")
        if nonfinite:
            bad = ~torch.isfinite(y)
            row, col = (int(v) for v in bad.nonzero()[0].tolist())
            raise CoarError(f"{what}: outputs y contain NaN or inf ({int(bad.sum())} of {y.numel()} values; the "
                            f"first at mask {row}, example {col}, is {float(y[row, col])})")
        d = self._dev
        yd = y.to(torch.float64)
        for s in range(0, b, _F32_EXACT_ROWS - 1):
            kf = keep[s : s + _F32_EXACT_ROWS - 1].to(torch.float32)
            d["xtx"] += (kf.T @ kf).to(torch.int64)  # integer counts < 2^24: exact in float32
            del kf
        kd = keep.to(torch.float64)
        d["xty"].addmm_(kd.T, yd)
        del kd
        d["sum_x"] += keep.sum(dim=0, dtype=torch.int64)
        d["sum_y"] += yd.sum(dim=0)
        d["sum_yy"] += (yd * yd).sum(dim=0)
        self.m += b
        self._host.clear()
        return self

    def merge(self, other: "GramAccumulator") -> "GramAccumulator":
        """Add the statistics of ``other`` (e.g. another shard) into ``self``; returns self."""
        if not isinstance(other, GramAccumulator):
            raise TypeError(f"can only merge a GramAccumulator, got {type(other).__name__}")
        if (other.n_components, other.n_examples) != (self.n_components, self.n_examples):
            raise ShapeError(
                f"cannot merge accumulators of shape (C, N)=({other.n_components}, {other.n_examples}) "
                f"into ({self.n_components}, {self.n_examples})"
            )
        self.m += other.m
        if self._dev is None:
            for name in _STATISTICS:
                if name != "m":
                    self._host[name] += getattr(other, name)
            return self
        for name, t in other.tensors(self._ops.dev).items():
            self._dev[name] += t
        self._host.clear()
        return self

    def problem(self) -> str | None:
        """What no stream of binary keep masks and finite outputs could have produced (a corrupted file), or None:
        the one rule for accumulator files both ways (`save` refuses to write them, `load` to read them). Shapes
        [C], [C, C], [N], [C, N], [N]; integer counts 0 <= sum_x, xtx <= m with xtx symmetric and its diagonal
        sum_x (a 0/1 mask squared is itself); finite output sums, and sums of squares >= 0."""
        C, N = self.n_components, self.n_examples
        for name, shape in (("sum_x", (C,)), ("xtx", (C, C)), ("sum_y", (N,)), ("xty", (C, N)), ("sum_yy", (N,))):
            if getattr(self, name).shape != shape:
                return f"{name} has shape {getattr(self, name).shape}, expected {shape} (C={C}, N={N})"
        m = self.m
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 0:
            return f"the mask count m must be an integer >= 0, got {m!r}"
        for name in ("sum_x", "xtx"):
            counts = getattr(self, name)
            if counts.dtype.kind not in "iu" or counts.min() < 0 or counts.max() > m:
                return f"{name} must hold integer counts in [0, m={m}], got {counts.dtype} in [{counts.min()}, " \
                       f"{counts.max()}]"
        if not np.array_equal(self.xtx, self.xtx.T) or not np.array_equal(np.diag(self.xtx), self.sum_x):
            return "xtx must be symmetric with diagonal sum_x (the Gram matrix of 0/1 keep masks)"
        for name in ("sum_y", "xty", "sum_yy"):
            if not np.isfinite(getattr(self, name)).all():
                return f"{name} holds NaN or inf"
        if (self.sum_yy < 0).any():
            return "sum_yy (sums of squared outputs) must be >= 0"
        return None

    def save(self, path: str | os.PathLike) -> None:
        """Write as .npz atomically (temporary file + os.replace); statistics `problem` finds fault with are
        refused and nothing is written."""
        bad = self.problem()
        if bad:
            raise CoarError(f"Gram accumulator not written to {path}: {bad}")
        atomic_savez(Path(path), version=np.array(_FORMAT_VERSION),
                     **{name: np.asarray(getattr(self, name), dtype=dtype) for name, dtype in _STATISTICS.items()})

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "GramAccumulator":
        """Read a file `save` wrote; refused (StoreError naming the file) when it is unreadable, of another format
        version, or holds statistics `save` would not have written."""
        arrays, _ = load_npz(path, "Gram accumulator", ("version", *_STATISTICS), header_keys=None)
        bad = _array_problem(arrays)
        if bad is None:
            acc = cls(*arrays["xty"].shape, device=device)
            acc.m = int(arrays["m"])
            for name, dtype in _STATISTICS.items():
                if name != "m":
                    setattr(acc, name, arrays[name].astype(dtype))
            bad = acc.problem()
        if bad:
            raise StoreError(f"Gram accumulator file {path} cannot be used: {bad}")
        return acc

    # -- centred statistics ---------------------------------------------------------
    def centered(self):
        """(Sxx [C, C], Sxy [C, N], Syy [N], xbar [C], ybar [N]) in float64.

        Sxx = (m X^T X - sx sx^T) / m is formed in integers (exact for m < ~3e9), so the
        only rounding is the final division.
        """
        m = self.m
        if m < 2:
            raise CoarError(f"need at least 2 masks to fit, the accumulator holds m={m}")
        sx = self.sum_x
        if m < 3_000_000_000:
            sxx = (m * self.xtx - np.outer(sx, sx)).astype(np.float64) / m
        else:  # pragma: no cover - int64 would overflow
            sxf = sx.astype(np.float64)
            sxx = self.xtx.astype(np.float64) - np.outer(sxf, sxf) / m
        xbar = sx.astype(np.float64) / m
        ybar = self.sum_y / m
        sxy = self.xty - np.outer(xbar, self.sum_y)
        syy = np.maximum(self.sum_yy - self.sum_y * ybar, 0.0)
        return sxx, sxy, syy, xbar, ybar


# ---------------------------------------------------------------------- factorization
def _default_rcond(m: int, c: int) -> float:
    # Cut-off on eigenvalues of the Gram relative to the largest; eigh leaves null-space
    # eigenvalues at ~ eps * ||A|| * (size), so stay a decade above that.
    return 10.0 * max(m, c) * np.finfo(np.float64).eps


@dataclass
class Factorization:
    """Eigenbasis of the (standardized) centred mask Gram, shared by OLS and ridge.

    Only eigenpairs above the cut-off are kept (``evals`` [r], ``evecs`` [C, r]);
    ``q`` = V^T D^-1 Sxy [r, N].  ``dinv`` is 1/std per column (0 for constant columns)
    when standardized, None otherwise.
    """

    m: int
    n_components: int
    n_examples: int
    xbar: np.ndarray
    ybar: np.ndarray
    syy: np.ndarray
    dinv: np.ndarray | None
    evals: np.ndarray
    evecs: np.ndarray
    q: np.ndarray
    cutoff: float
    rcond: float
    standardize: bool
    device: object = None
    solver: str = "primal-eigh"  # "dual-eigh": built from the M x M kernel (factorize_rows with M < C)

    @property
    def rank(self) -> int:
        return int(self.evals.shape[0])

    def _ops(self) -> _Ops:
        return _Ops(self.device)

    def _lams(self, lambdas) -> np.ndarray:
        lams = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
        if lams.ndim != 1 or lams.size == 0:
            raise ShapeError(f"lambdas must be a scalar or a non-empty 1-D sequence, got shape {lams.shape}")
        if np.any(~np.isfinite(lams)) or np.any(lams < 0):
            raise CoarError(f"ridge penalties must be finite and >= 0, got {lams.tolist()}")
        return lams

    def filters(self, lambdas) -> np.ndarray:
        """1 / (e + lambda) for every lambda and kept eigenvalue: [L, r]."""
        lams = self._lams(lambdas)
        return 1.0 / (self.evals[None, :] + lams[:, None])

    def df(self, lambdas) -> np.ndarray:
        """Effective degrees of freedom of the slope fit (intercept excluded): [L]."""
        lams = self._lams(lambdas)
        return (self.evals[None, :] / (self.evals[None, :] + lams[:, None])).sum(axis=1)

    def rss(self, lambdas) -> np.ndarray:
        """Training residual sum of squares [L, N] from the Gram statistics alone."""
        lams = self._lams(lambdas)
        e = self.evals[None, :]
        g = (e + 2.0 * lams[:, None]) / (e + lams[:, None]) ** 2  # [L, r]
        return np.maximum(self.syy[None, :] - g @ (self.q**2), 0.0)

    def gcv(self, lambdas) -> np.ndarray:
        """GCV(lambda) = (RSS/m) / (1 - (df+1)/m)^2 per (lambda, example): [L, N]; inf if df+1 >= m."""
        lams = self._lams(lambdas)
        m = self.m
        denom = 1.0 - (self.df(lams) + 1.0) / m
        scores = self.rss(lams) / m / np.where(denom > 0, denom, 1.0)[:, None] ** 2
        scores[denom <= 1e-12, :] = np.inf
        return scores

    def _centered_rows(self, keep: np.ndarray) -> np.ndarray:
        z = keep.astype(np.float64) - self.xbar[None, :]
        if self.dinv is not None:
            z *= self.dinv[None, :]
        return z

    def holdout_blocks(self, holdout: "GramAccumulator"):
        """(H, Cxx [C, C], Cxy [C, N], Cyy [N]) of held-out masks' statistics, centred on this factorisation's
        training means and scaled like its standardised coordinates: the sums from which any coefficients'
        held-out squared error follows without the held-out rows."""
        if (holdout.n_components, holdout.n_examples) != (self.n_components, self.n_examples):
            raise ShapeError(
                f"held-out accumulator has (C, N)=({holdout.n_components}, {holdout.n_examples}), "
                f"expected ({self.n_components}, {self.n_examples})"
            )
        h = holdout.m
        if h < 1:
            raise CoarError("the held-out part of the training masks is empty")
        xb, yb = self.xbar, self.ybar
        sx = holdout.sum_x.astype(np.float64)
        cxx = holdout.xtx.astype(np.float64) - np.outer(sx, xb) - np.outer(xb, sx) + h * np.outer(xb, xb)
        cxy = holdout.xty - np.outer(sx, yb) - np.outer(xb, holdout.sum_y) + h * np.outer(xb, yb)
        cyy = holdout.sum_yy - 2.0 * yb * holdout.sum_y + h * yb**2
        if self.dinv is not None:
            cxx = cxx * self.dinv[:, None] * self.dinv[None, :]
            cxy = cxy * self.dinv[:, None]
        return h, cxx, cxy, cyy

    def holdout_mse(self, lambdas, holdout) -> np.ndarray:
        """Held-out mean squared error [L, N] for every lambda and example.

        ``holdout`` is either a tuple ``(keep_h [H, C], y_h [H, N])`` (predictions are
        formed through the eigenbasis, H*r*N per lambda) or a :class:`GramAccumulator` of
        held-out masks (MSE from its statistics, r^2*N per lambda).
        """
        lams = self._lams(lambdas)
        F = self.filters(lams)
        ops = self._ops()
        if isinstance(holdout, GramAccumulator):
            h, cxx, cxy, cyy = self.holdout_blocks(holdout)
            V = self.evecs
            U = ops.mm(V.T, ops.mm(cxx, V))  # [r, r]
            T = ops.mm(V.T, cxy)  # [r, N]
            out = np.empty((lams.size, self.n_examples))
            for li in range(lams.size):
                R = F[li][:, None] * self.q  # [r, N] rotated coefficients
                quad = np.einsum("in,in->n", ops.mm(U, R), R)
                out[li] = (cyy - 2.0 * np.einsum("in,in->n", R, T) + quad) / h
            return np.maximum(out, 0.0)
        if not (isinstance(holdout, (tuple, list)) and len(holdout) == 2):
            raise CoarError("holdout must be a (keep_h, y_h) pair or a GramAccumulator of held-out data")
        keep_h, y_h = _check_batch(holdout[0], holdout[1], self.n_components, self.n_examples, "holdout")
        if keep_h.shape[0] < 1:
            raise CoarError("held-out set is empty")
        P = ops.mm(self._centered_rows(keep_h), self.evecs)  # [H, r]
        yc = y_h - self.ybar[None, :]
        out = np.empty((lams.size, self.n_examples))
        for li in range(lams.size):
            pred = ops.mm(P, F[li][:, None] * self.q)
            out[li] = np.mean((yc - pred) ** 2, axis=0)
        return out

    def coefficients(self, lam_per_example=None):
        """(weights [C, N], bias [N]) in float64.

        ``lam_per_example`` None means OLS (pseudo-inverse, lambda = 0 on the kept
        eigenvalues); otherwise a scalar or [N] penalties.
        """
        N = self.n_examples
        lam = np.zeros(N) if lam_per_example is None else np.broadcast_to(
            np.asarray(lam_per_example, dtype=np.float64), (N,)
        )
        self._lams(lam)
        ops = self._ops()
        w = np.empty((self.n_components, N))
        for u in np.unique(lam):
            idx = np.nonzero(lam == u)[0]
            f = 1.0 / (self.evals + u)
            w[:, idx] = ops.mm(self.evecs, f[:, None] * self.q[:, idx])
        if self.dinv is not None:
            w *= self.dinv[:, None]
        b = self.ybar - self.xbar @ w
        return w, b


def _standard_scale(acc: GramAccumulator, standardize: bool):
    """(dinv [C] or None, var [C]) from the integer column sums alone: the diagonal of the centred Gram is
    (m sx - sx^2) / m, bitwise the one :meth:`GramAccumulator.centered` forms, so dinv is the same."""
    m = acc.m
    sx = np.asarray(acc.sum_x, dtype=np.int64)
    var = (m * sx - sx * sx).astype(np.float64) / m / m
    if not standardize:
        return None, var
    dinv = np.zeros_like(var)
    nz = var > 0
    dinv[nz] = 1.0 / np.sqrt(var[nz])
    return dinv, var


def _device_gram(acc: GramAccumulator, dev, cols, scale):
    """The centred Gram of ``acc`` restricted to the columns ``cols`` (int64 index array, None for all), scaled
    by ``scale`` [len(cols)] on both sides (None: unscaled), as a float64 torch tensor on ``dev``. m X^T X -
    sx sx^T is exact in float64 while m^2 < 2^53 (formed in int64 otherwise), so the only roundings are the
    division by m and the scaling, as on the host."""
    import torch

    xtx = acc._dev["xtx"].to(dev) if acc._dev is not None else torch.from_numpy(acc.xtx).to(dev)
    sx = acc.tensors(dev)["sum_x"] if acc._dev is not None else torch.from_numpy(np.asarray(acc.sum_x)).to(dev)
    if cols is not None:
        idx = torch.as_tensor(cols, device=dev)
        xtx, sx = xtx.index_select(0, idx).index_select(1, idx), sx.index_select(0, idx)
    m = acc.m
    if m < (1 << 26):
        A = xtx.to(torch.float64)
        sxf = sx.to(torch.float64)
        A.mul_(m).sub_(torch.outer(sxf, sxf))
    else:  # pragma: no cover - more masks than any store holds
        A = (m * xtx - torch.outer(sx, sx)).to(torch.float64)
    del xtx
    A.div_(m)
    if scale is not None:
        st = torch.as_tensor(scale, dtype=torch.float64, device=dev)
        A.mul_(st[:, None]).mul_(st[None, :])
    return A


def factorize(acc: GramAccumulator, standardize: bool = True, rcond: float | None = None, device=None) -> Factorization:
    """Eigendecompose the (standardized) centred Gram of ``acc`` once (C x C, float64).

    This is the factorisation for fits that need the spectrum: ridge with the penalty chosen by GCV or on held-out
    masks, the low-rank, lasso and prior estimators. Its cost is O(C^3) with a large constant (a symmetric
    eigendecomposition with eigenvectors costs several times a Cholesky factorisation of the same matrix;
    measured 1.5x with the solve, C = 2,000 on a 2-core CPU, docs/benchmarks.md), plus a
    C x C matrix of eigenvectors; least squares and ridge at given penalties solve by :func:`solve_cholesky`
    instead. ``device`` (default: the accumulator's own device) runs it in torch float64 there; an accumulator
    that lives on a device is centred and decomposed there without a host copy of its C x C statistics.
    """
    if not isinstance(acc, GramAccumulator):
        raise TypeError(f"factorize needs a GramAccumulator, got {type(acc).__name__}")
    if acc._dev is not None:
        return _factorize_device(acc, standardize, rcond, acc.device if device is None else device)
    ops = _Ops(device)
    sxx, sxy, syy, xbar, ybar = acc.centered()
    dinv = None
    if standardize:
        var = np.diag(sxx) / acc.m
        dinv = np.zeros_like(var)
        nz = var > 0
        dinv[nz] = 1.0 / np.sqrt(var[nz])
        sxx = sxx * dinv[:, None] * dinv[None, :]
        sxy = sxy * dinv[:, None]
    evals, evecs = ops.eigh(sxx)
    del sxx
    rc = _default_rcond(acc.m, acc.n_components) if rcond is None else float(rcond)
    emax = float(evals.max()) if evals.size else 0.0
    cutoff = rc * emax
    keep = evals > max(cutoff, 0.0)
    evals, evecs = evals[keep], np.ascontiguousarray(evecs[:, keep])
    q = ops.mm(evecs.T, sxy)
    return Factorization(
        m=acc.m,
        n_components=acc.n_components,
        n_examples=acc.n_examples,
        xbar=xbar,
        ybar=ybar,
        syy=syy,
        dinv=dinv,
        evals=evals,
        evecs=evecs,
        q=q,
        cutoff=cutoff,
        rcond=rc,
        standardize=bool(standardize),
        device=device,
    )


def _host_vectors(acc: GramAccumulator):
    """(xbar [C], ybar [N], syy [N]) on the host: the small vectors every fit needs."""
    m = acc.m
    if m < 2:
        raise CoarError(f"need at least 2 masks to fit, the accumulator holds m={m}")
    sum_y = acc.sum_y
    ybar = sum_y / m
    return np.asarray(acc.sum_x).astype(np.float64) / m, ybar, np.maximum(acc.sum_yy - sum_y * ybar, 0.0)


def _factorize_device(acc: GramAccumulator, standardize: bool, rcond, device) -> Factorization:
    import torch

    dev = torch.device(device)
    xbar, ybar, syy = _host_vectors(acc)
    dinv, _ = _standard_scale(acc, standardize)
    A = _device_gram(acc, dev, None, dinv)
    evals, evecs = torch.linalg.eigh(A)
    del A
    rc = _default_rcond(acc.m, acc.n_components) if rcond is None else float(rcond)
    emax = float(evals.max()) if evals.numel() else 0.0
    cutoff = rc * emax
    kept = evals > max(cutoff, 0.0)
    evals, evecs = evals[kept], evecs[:, kept].contiguous()
    q = torch.empty((evals.numel(), acc.n_examples), dtype=torch.float64, device=dev)
    t = acc.tensors(dev)
    xb = torch.as_tensor(xbar, device=dev)
    dv = None if dinv is None else torch.as_tensor(dinv, device=dev)
    for s in range(0, acc.n_examples, _N_BLOCK):
        sxy = t["xty"][:, s : s + _N_BLOCK] - torch.outer(xb, t["sum_y"][s : s + _N_BLOCK])
        if dv is not None:
            sxy.mul_(dv[:, None])
        q[:, s : s + _N_BLOCK] = evecs.T @ sxy
    return Factorization(m=acc.m, n_components=acc.n_components, n_examples=acc.n_examples, xbar=xbar, ybar=ybar,
                         syy=syy, dinv=dinv, evals=evals.cpu().numpy(), evecs=evecs.cpu().numpy(),
                         q=q.cpu().numpy(), cutoff=cutoff, rcond=rc, standardize=bool(standardize), device=device)


# --------------------------------------------------------------------- Cholesky solve
_N_BLOCK = 4096  # examples solved at a time (bounds the [C, block] float64 right-hand sides)
#: The Cholesky solve is trusted when the smallest eigenvalue of the matrix it factorised is above this many
#: times the eigenvalue cut-off (rcond * largest eigenvalue); below it the eigendecomposition decides.
_CHOLESKY_MARGIN = 1e3


class SingularGram(CoarError):
    """The centred Gram is singular beyond what :func:`solve_cholesky` removes exactly; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(f"the Cholesky solve does not apply: {reason}")
        self.reason = reason


class _Dense:
    """float64 dense linear algebra of the Cholesky solve: numpy / scipy on the host (device None) or torch."""

    def __init__(self, device=None):
        self.torch = None
        if device is not None:
            import torch

            self.torch, self.dev = torch, torch.device(device)

    def array(self, a):
        if self.torch is None:
            return np.asarray(a, dtype=np.float64)
        return self.torch.as_tensor(np.ascontiguousarray(a), dtype=self.torch.float64, device=self.dev)

    def host(self, a) -> np.ndarray:
        return a if self.torch is None else a.cpu().numpy()

    def cholesky(self, A):
        """Lower Cholesky factor of A, or None when A is not (numerically) positive definite."""
        if self.torch is None:
            try:
                return np.linalg.cholesky(A)
            except np.linalg.LinAlgError:
                return None
        L, info = self.torch.linalg.cholesky_ex(A)
        return None if int(info) else L

    def cho_solve(self, L, B):
        if self.torch is None:
            try:  # scipy comes with the workflow extra; the engine alone has torch (on the CPU, float64, LAPACK too)
                import scipy.linalg
            except ImportError:
                import torch

                return torch.cholesky_solve(torch.from_numpy(np.ascontiguousarray(B)),
                                            torch.from_numpy(np.ascontiguousarray(L))).numpy()
            return scipy.linalg.cho_solve((L, True), B, check_finite=False)
        return self.torch.cholesky_solve(B, L)

    def orth(self, X):
        return np.linalg.qr(X)[0] if self.torch is None else self.torch.linalg.qr(X).Q

    def add_diag(self, A, value: float):
        if self.torch is None:
            A[np.diag_indices_from(A)] += value
        else:
            A.diagonal().add_(value)


def _null_direction(acc: GramAccumulator) -> bool:
    """Whether every mask keeps the same number of components (sum_j x_j constant, as with exact-alpha masks),
    decided exactly from the integer statistics: X^T X 1 = s sum_x with s = sum(sum_x) / m, i.e.
    m (X^T X 1) == sum_x * sum(sum_x). Then the centred Gram has the null direction 1 (in standardized
    coordinates u_j = std_j)."""
    m = acc.m
    C = acc.n_components
    if m * m * C >= (1 << 62):  # pragma: no cover - beyond int64; the factorisation then finds the direction
        return False
    if acc._dev is not None:
        xtx, sx = acc._dev["xtx"], acc._dev["sum_x"]
        return bool((m * xtx.sum(dim=1) == sx * sx.sum()).all())
    sx = np.asarray(acc.sum_x, dtype=np.int64)
    return bool(np.array_equal(m * acc.xtx.sum(axis=1), sx * sx.sum()))


def _extreme_eigenvalues(la: _Dense, matvec, L, n: int, iters: int = 10, k: int = 4):
    """(largest eigenvalue of the operator ``matvec``, smallest eigenvalue of the one L L^T factorises), both by
    block (inverse) subspace iteration with a Rayleigh-Ritz step: O(k n^2) per iteration, next to the n^3 / 3 of
    the factorisation. The smallest is an upper estimate that converges fast exactly when it is small."""
    rng = np.random.default_rng(0)
    k = min(k, n)
    X = la.orth(la.array(rng.standard_normal((n, k))))
    for _ in range(iters):
        X = la.orth(matvec(X))
    top = float(np.linalg.eigvalsh(la.host(X.T @ matvec(X))).max())
    if L is None:
        return top, None
    X = la.orth(la.array(rng.standard_normal((n, k))))
    for _ in range(iters):
        X = la.orth(la.cho_solve(L, X))
    T = la.host(X.T @ matvec(X))
    return top, float(np.linalg.eigvalsh((T + T.T) / 2).min())


def solve_cholesky(acc: GramAccumulator, lam_per_example=None, standardize: bool = True, rcond: float | None = None,
                   device=None):
    """(weights [C, N], bias [N], meta) of least squares (``lam_per_example`` None) or ridge (a scalar or [N]
    penalties) by a float64 Cholesky factorisation of the (standardized) centred Gram A, on ``device``
    (default: the accumulator's own; numpy/scipy on the host when both are None).

    The solution is the one :func:`factorize`'s eigendecomposition gives, without it (n^3 / 3 flops instead of
    several times that): columns that never vary are dropped (weight 0, as their zero rows and columns of A
    give there); when every mask keeps the same number of components (:func:`_null_direction`, exact on the
    integer statistics) A u = 0 for u = std (1 unstandardized), and (A + c u u^T) w = b with c u^T u = m (A's
    diagonal) is solved instead: b = Z^T y_c is orthogonal to u, so w is A's pseudo-inverse times b, the
    minimum-norm solution (projected on u's complement to rounding). Raises :class:`SingularGram` when the
    matrix factorised is not positive definite or its smallest eigenvalue (estimated by inverse iteration) is
    within ``_CHOLESKY_MARGIN`` of the eigenvalue cut-off rcond * largest eigenvalue (other rank deficiency, e.g.
    fewer masks than components or components always ablated together): the eigendecomposition then decides.
    """
    if not isinstance(acc, GramAccumulator):
        raise TypeError(f"solve_cholesky needs a GramAccumulator, got {type(acc).__name__}")
    dev = acc.device if device is None else device
    la = _Dense(dev)
    m, C, N = acc.m, acc.n_components, acc.n_examples
    xbar, ybar, _ = _host_vectors(acc)
    lam = np.zeros(N) if lam_per_example is None else np.broadcast_to(
        np.asarray(lam_per_example, dtype=np.float64), (N,))
    if np.any(~np.isfinite(lam)) or np.any(lam < 0):
        raise CoarError(f"ridge penalties must be finite and >= 0, got {np.unique(lam).tolist()}")
    dinv, var = _standard_scale(acc, standardize)
    cols = np.nonzero(var > 0)[0]
    rc = _default_rcond(m, C) if rcond is None else float(rcond)
    meta = {"solver": "primal-cholesky", "standardize": bool(standardize), "n_masks": m, "rcond": float(rc)}
    w = np.zeros((C, N))
    if cols.size == 0:  # no component ever varies: every weight 0, the mean output is the bias
        return w, ybar.copy(), {**meta, "rank": 0}
    scale = dinv[cols] if standardize else None
    null = _null_direction(acc)
    if la.torch is None:
        sx = np.asarray(acc.sum_x, dtype=np.int64)[cols]
        A = (m * acc.xtx[np.ix_(cols, cols)] - np.outer(sx, sx)).astype(np.float64) / m
        if scale is not None:
            A = A * scale[:, None] * scale[None, :]
    else:
        A = _device_gram(acc, la.dev, None if cols.size == C else cols, scale)
    n = cols.size
    u = la.array(1.0 / scale if scale is not None else np.ones(n))
    uhat = u / float((u * u).sum()) ** 0.5
    c = float(m)  # u u^T's eigenvalue in A + c uhat uhat^T: A's diagonal, m, in standardized coordinates

    def matvec(X, shift=0.0, aug=False):
        out = A @ X
        if shift:
            out = out + shift * X
        if aug:
            out = out + c * uhat[:, None] * (uhat[None, :] @ X)
        return out

    emax, _ = _extreme_eigenvalues(la, matvec, None, n)
    cutoff = rc * emax
    t = acc.tensors(la.dev) if la.torch is not None else None
    xb = la.array(xbar[cols])
    for value in np.unique(lam):
        idx = np.nonzero(lam == value)[0]
        Ap = A if value == 0 and not null else (A.copy() if la.torch is None else A.clone())
        if value:
            la.add_diag(Ap, float(value))
        if null and la.torch is None:
            Ap += c * np.outer(uhat, uhat)
        elif null:
            Ap.addr_(uhat, uhat, alpha=c)
        L = la.cholesky(Ap)
        del Ap
        if L is None:
            raise SingularGram("the centred Gram is not positive definite after dropping constant columns"
                               + (" and the exact-alpha direction" if null else ""))
        _, lmin = _extreme_eigenvalues(la, lambda X: matvec(X, float(value), null), L, n)
        if lmin <= _CHOLESKY_MARGIN * cutoff:
            raise SingularGram(f"the centred Gram is near-singular (smallest eigenvalue {lmin:.3g}, cut-off "
                               f"{cutoff:.3g} = rcond * largest eigenvalue {emax:.3g})")
        for s in range(0, idx.size, _N_BLOCK):
            ex = idx[s : s + _N_BLOCK]
            if la.torch is None:
                B = acc.xty[np.ix_(cols, ex)] - np.outer(xb, acc.sum_y[ex])
            else:
                ext = la.torch.as_tensor(ex, device=la.dev)
                ct = la.torch.as_tensor(cols, device=la.dev)
                B = t["xty"].index_select(1, ext).index_select(0, ct) - la.torch.outer(
                    xb, t["sum_y"].index_select(0, ext))
            if scale is not None:
                B *= la.array(scale)[:, None]
            if null:
                B -= uhat[:, None] * (uhat[None, :] @ B)
            W = la.cho_solve(L, B)
            if null:
                W -= uhat[:, None] * (uhat[None, :] @ W)
            if scale is not None:
                W *= la.array(scale)[:, None]
            w[np.ix_(cols, ex)] = la.host(W)
        del L
    b = ybar - xbar @ w
    return w, b, {**meta, "rank": int(n - null)}


def dual_kernel(keep: np.ndarray, standardize: bool, block: int, ops: _Ops):
    """(K [M, M], xbar [C], dinv [C] or None, zblock) of binary masks ``keep`` [M, C]: K = Z Z^T for the centred
    (and standardized) masks Z, formed ``block`` columns at a time; ``zblock(s)`` is Z[:, s : s + block] in
    float64. The masks stay binary in memory."""
    M, C = keep.shape
    sx = keep.sum(axis=0, dtype=np.int64)
    xbar = sx / M
    dinv = None
    scale = np.ones(C)
    if standardize:
        var = (M * sx - sx * sx) / (M * M)  # binary columns: sum x^2 = sum x
        dinv = np.zeros(C)
        nz = var > 0
        dinv[nz] = 1.0 / np.sqrt(var[nz])
        scale = dinv

    def zblock(s):
        return (keep[:, s : s + block].astype(np.float64) - xbar[None, s : s + block]) * scale[None, s : s + block]

    K = np.zeros((M, M))
    for s in range(0, C, block):
        zb = zblock(s)
        K += ops.mm(zb, zb.T)
    return K, xbar, dinv, zblock


def factorize_rows(keep, y, standardize: bool = True, rcond: float | None = None, device=None,
                   block: int = 4096) -> Factorization:
    """The Factorization of masks and outputs given as arrays: from the C x C Gram when M >= C, and from the
    M x M kernel when M < C (dual: K = Z Z^T = U E U^T gives the Gram's nonzero eigenpairs, V = Z^T U E^-1/2,
    so no C x C matrix is ever formed; the eigenvectors kept are C x r with r <= M). Both forms give the same
    eigenvalues, eigenspace and cut-off, so every fit made from it is the same."""
    keep = _to_numpy(keep, "keep")
    y = _to_numpy(y, "y")
    if keep.ndim != 2 or y.ndim != 2:
        raise ShapeError(f"keep must be [M, C] and y [M, N], got shapes {keep.shape} and {y.shape}")
    M, C = keep.shape
    keep, y = _check_batch(keep, y, C, y.shape[1])
    if M < 2:
        raise CoarError(f"need at least 2 masks to fit, got M={M}")
    if M >= C:
        return factorize(GramAccumulator.from_arrays(keep, y, device=device), standardize, rcond, device)
    ops = _Ops(device)
    K, xbar, dinv, zblock = dual_kernel(keep, standardize, block, ops)
    e, U = ops.eigh(K)
    del K
    rc = _default_rcond(M, C) if rcond is None else float(rcond)
    cutoff = rc * (float(e.max()) if e.size else 0.0)
    kept = e > max(cutoff, 0.0)
    e, U = e[kept], np.ascontiguousarray(U[:, kept])
    ybar = y.mean(axis=0)
    yc = y - ybar[None, :]
    V = np.empty((C, e.size))
    Ue = U / np.sqrt(e)[None, :]
    for s in range(0, C, block):
        V[s : s + block] = ops.mm(zblock(s).T, Ue)
    return Factorization(m=M, n_components=C, n_examples=y.shape[1], xbar=xbar, ybar=ybar,
                         syy=np.einsum("mn,mn->n", yc, yc), dinv=dinv, evals=e, evecs=V,
                         q=np.sqrt(e)[:, None] * ops.mm(U.T, yc), cutoff=cutoff, rcond=rc,
                         standardize=bool(standardize), device=device, solver="dual-eigh")


def _as_factorization(data, standardize, rcond, device) -> Factorization:
    if isinstance(data, Factorization):
        if data.standardize != bool(standardize):
            raise CoarError(
                f"factorization was computed with standardize={data.standardize}, "
                f"but standardize={standardize} was requested"
            )
        return data
    return factorize(data, standardize=standardize, rcond=rcond, device=device)


# ------------------------------------------------------------------------------- fits
def _factorization_meta(fac: Factorization) -> dict:
    return {"solver": fac.solver, "standardize": fac.standardize, "n_masks": fac.m, "rank": fac.rank,
            "rcond": fac.rcond}
