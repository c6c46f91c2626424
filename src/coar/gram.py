"""The linear algebra under every estimator: the streaming Gram accumulator (X^T X, X^T Y and the sums of a
mask store, in float64) and its one factorisation (the eigendecomposition of the centred, standardised Gram).
coar.regression's least squares and ridge and coar.estimators' shrinkage, low-rank and sparse fits all solve
on these; see coar.regression for the derivation."""
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
class GramAccumulator:
    """Streaming sufficient statistics of (masks, outputs) for all examples at once.

    After any number of :meth:`add` calls (one pass, any chunking) it holds
    ``m`` (masks seen), ``sum_x`` [C] and ``xtx`` [C, C] (int64, exact counts),
    ``sum_y`` [N], ``xty`` [C, N] and ``sum_yy`` [N] (float64).
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
        self.sum_x = np.zeros(C, dtype=np.int64)
        self.xtx = np.zeros((C, C), dtype=np.int64)
        self.sum_y = np.zeros(N, dtype=np.float64)
        self.xty = np.zeros((C, N), dtype=np.float64)
        self.sum_yy = np.zeros(N, dtype=np.float64)

    def __repr__(self) -> str:
        return f"GramAccumulator(C={self.n_components}, N={self.n_examples}, m={self.m})"

    @classmethod
    def from_arrays(cls, keep, y, chunk_size: int = 8192, device=None) -> "GramAccumulator":
        keep = _to_numpy(keep, "keep")
        y = _to_numpy(y, "y")
        if keep.ndim != 2 or y.ndim != 2:
            raise ShapeError(f"keep must be [M, C] and y [M, N], got shapes {keep.shape} and {y.shape}")
        acc = cls(keep.shape[1], y.shape[1], device=device)
        for s in range(0, keep.shape[0], chunk_size):
            acc.add(keep[s : s + chunk_size], y[s : s + chunk_size])
        return acc

    def add(self, keep, y) -> "GramAccumulator":
        """Add a batch: ``keep`` [b, C] binary, ``y`` [b, N] outputs of the N examples."""
        keep, y = _check_batch(keep, y, self.n_components, self.n_examples)
        b = keep.shape[0]
        if b == 0:
            return self
        for s in range(0, b, _F32_EXACT_ROWS - 1):
            kb = keep[s : s + _F32_EXACT_ROWS - 1]
            self.xtx += self._ops.mask_gram(kb)
        kf = keep.astype(np.float64)
        self.xty += self._ops.mm(kf.T, y)
        self.sum_x += keep.sum(axis=0, dtype=np.int64)
        self.sum_y += y.sum(axis=0)
        self.sum_yy += np.einsum("ij,ij->j", y, y)
        self.m += b
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
        self.sum_x += other.sum_x
        self.xtx += other.xtx
        self.sum_y += other.sum_y
        self.xty += other.xty
        self.sum_yy += other.sum_yy
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


def factorize(acc: GramAccumulator, standardize: bool = True, rcond: float | None = None, device=None) -> Factorization:
    """Eigendecompose the (standardized) centred Gram of ``acc`` once (C x C, float64)."""
    if not isinstance(acc, GramAccumulator):
        raise TypeError(f"factorize needs a GramAccumulator, got {type(acc).__name__}")
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
