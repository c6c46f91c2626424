"""Fit COAR's per-example linear component models from shared ablation masks.

Responsibility
--------------
Given a design of binary keep-masks ``X`` ([M, C], True = component kept) that is
*shared* by all N examples, and model outputs ``Y`` ([M, N]), fit for every example z
the linear datamodel of paper eq. 3,

    theta_z = argmin_w  (1/M) * sum_i ( y_z(keep_i) - b_z - <w, keep_i> )^2 ,

i.e. ordinary least squares on the masks with an unpenalized intercept, and return the
result as :class:`coar.attributions.Attributions` (``weights`` [N, C], ``bias`` [N]).
The authors fit this with SAGA at lambda = 0 on standardized mask columns, run to
convergence, which is OLS (the minimum-norm solution when M <= C); ridge with a
per-example penalty is provided as well.

Because the masks are shared, everything needed is a handful of sufficient statistics
that one streaming pass over the data collects (:class:`GramAccumulator`): the mask
count m, column sums of X and Y, the mask Gram X^T X, the cross moments X^T Y and the
per-example sums of y^2.  From them:

* centred statistics  Sxx = X^T X - m xbar xbar^T,  Sxy = X^T Y - m xbar ybar^T,
  Syy = sum y^2 - m ybar^2;
* optional standardization D = diag(column std); the solution is computed in
  standardized coordinates, w = D^-1 pinv(D^-1 Sxx D^-1) D^-1 Sxy (columns with zero
  variance get weight 0), so for M <= C the minimum-norm solution is the one of the
  standardized problem, as with the authors' solver;
* the intercept is never penalized: b = ybar - xbar^T w.

One eigendecomposition of the (standardized) centred Gram, A = V diag(e) V^T, is
computed once (:func:`factorize`) and serves OLS (pseudo-inverse with a relative
eigenvalue cut-off, like lstsq's rcond) and ridge for any penalty and all examples at
once: with Q = V^T D^-1 Sxy, w(lambda) = D^-1 V diag(1/(e + lambda)) Q.  The residual sum
of squares of every (lambda, example) pair follows from the same statistics,
RSS(lambda) = Syy - sum_i q_i^2 (e_i + 2 lambda) / (e_i + lambda)^2, which gives the
generalized cross-validation score without revisiting the data:
GCV(lambda) = (RSS/m) / (1 - (df + 1)/m)^2 with df = sum_i e_i / (e_i + lambda) (the +1
counts the intercept).  A held-out set of masks can be used instead (per-example
minimum held-out MSE), from raw arrays or from a second accumulator.

Identifiability
---------------
With exact-alpha masks (every mask ablates exactly k components, as in the paper)
sum_j keep_j = C - k is constant, so the all-ones direction of w is confounded with the
intercept: w + c*1, b - c*(C - k) fits equally well.  The eigenvalue cut-off drops that
null direction, so the minimum-norm solution (in standardized coordinates when
``standardize``) is returned; predictions and w - mean(w) do not depend on the choice.

Numerics and memory
-------------------
Mask Gram entries are integer counts <= M.  They are exact in float32 while M < 2^24,
so the C x C Gram can be accumulated in float32 tiles (also on a GPU; TF32 keeps 0/1
inputs exact and accumulates in float32) and summed into an int64 matrix; this module
does so chunk-wise.  The centring (m * X^T X - sx sx^T) / m is done in integers too.

The primal form needs C x C matrices (Gram and eigenvectors).  When M < C the dual form
(:func:`fit_dual`) uses the M x M kernel K = Xc Xc^T instead: w = Xc^T pinv(K) Yc is the
same minimum-norm solution.  :func:`memory_plan` counts the bytes of both.  For
ViT-B/16 (C = 82,944 components, M = 200,000 masks, N = 5,000 examples, float64):

    primal: Gram C^2        55,037,657,088 B (55.0 GB)
            X^T Y C*N        3,317,760,000 B  (3.3 GB)
            eigvecs C^2     55,037,657,088 B (55.0 GB)   total 113.4 GB
    dual:   K M^2          320,000,000,000 B (320 GB)
            X M*C (bool)    16,588,800,000 B (16.6 GB)
            eigvecs M^2    320,000,000,000 B (320 GB)    total 656.6 GB
    chosen: primal (m >= C)

so at that M the primal form is the smaller one; below M = C = 82,944 masks the dual
wins.  Either way the 55 GB float64 Gram does not fit one GPU; float32 Gram tiles
(27.5 GB) do.

Heavy matrix products and the eigendecomposition may be run with torch in float64 on a
given ``device`` (e.g. ``"cuda"``); numpy on the CPU is the default.  Inputs may be numpy
arrays or torch tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .attributions import Attributions
from .errors import CoarError, ShapeError, StoreError
from .io import atomic_savez

__all__ = [
    "GramAccumulator",
    "Factorization",
    "factorize",
    "fit_ols",
    "fit_ridge",
    "fit_dual",
    "fit",
    "fit_chunks",
    "memory_plan",
    "METHODS",
]

_F32_EXACT_ROWS = 1 << 24  # 0/1 products sum exactly in float32 below this many rows
_FORMAT_VERSION = 1


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

    def save(self, path: str | os.PathLike) -> None:
        """Write as .npz atomically (temporary file + os.replace)."""
        atomic_savez(
            Path(path),
            version=np.array(_FORMAT_VERSION),
            m=np.array(self.m, dtype=np.int64),
            sum_x=self.sum_x,
            xtx=self.xtx,
            sum_y=self.sum_y,
            xty=self.xty,
            sum_yy=self.sum_yy,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device=None) -> "GramAccumulator":
        path = Path(path)
        if not path.exists():
            raise StoreError(f"Gram accumulator file not found: {path}")
        try:
            with np.load(path) as z:
                if int(z["version"]) != _FORMAT_VERSION:
                    raise StoreError(f"{path}: unsupported accumulator format version {int(z['version'])}")
                C, N = z["xty"].shape
                acc = cls(C, N, device=device)
                acc.m = int(z["m"])
                acc.sum_x = z["sum_x"].astype(np.int64)
                acc.xtx = z["xtx"].astype(np.int64)
                acc.sum_y = z["sum_y"].astype(np.float64)
                acc.xty = z["xty"].astype(np.float64)
                acc.sum_yy = z["sum_yy"].astype(np.float64)
        except StoreError:
            raise
        except Exception as exc:  # KeyError, ValueError, BadZipFile, OSError, ...
            raise StoreError(f"Gram accumulator file {path} is unreadable or truncated: {exc}") from exc
        if acc.sum_x.shape != (C,) or acc.xtx.shape != (C, C) or acc.sum_y.shape != (N,) or acc.sum_yy.shape != (N,):
            raise StoreError(f"Gram accumulator file {path} has inconsistent array shapes")
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
            if (holdout.n_components, holdout.n_examples) != (self.n_components, self.n_examples):
                raise ShapeError(
                    f"held-out accumulator has (C, N)=({holdout.n_components}, {holdout.n_examples}), "
                    f"expected ({self.n_components}, {self.n_examples})"
                )
            h = holdout.m
            if h < 1:
                raise CoarError("held-out accumulator is empty")
            xb, yb = self.xbar, self.ybar
            sx = holdout.sum_x.astype(np.float64)
            cxx = holdout.xtx.astype(np.float64) - np.outer(sx, xb) - np.outer(xb, sx) + h * np.outer(xb, xb)
            cxy = holdout.xty - np.outer(sx, yb) - np.outer(xb, holdout.sum_y) + h * np.outer(xb, yb)
            cyy = holdout.sum_yy - 2.0 * yb * holdout.sum_y + h * yb**2
            if self.dinv is not None:
                cxx = cxx * self.dinv[:, None] * self.dinv[None, :]
                cxy = cxy * self.dinv[:, None]
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
def _primal_meta(fac: Factorization) -> dict:
    return {"solver": "primal-eigh", "standardize": fac.standardize, "n_masks": fac.m, "rank": fac.rank,
            "rcond": fac.rcond}


def fit_ols(
    acc: GramAccumulator | Factorization,
    standardize: bool = True,
    *,
    rcond: float | None = None,
    components: str,
    device=None,
) -> Attributions:
    """Least squares with intercept for all examples (minimum-norm when rank-deficient)."""
    fac = _as_factorization(acc, standardize, rcond, device)
    w, b = fac.coefficients(None)
    meta = {**_primal_meta(fac), "lambda": [0.0] * fac.n_examples}
    return Attributions(w.T, b, "coar-ols", components, meta)


def fit_ridge(
    acc: GramAccumulator | Factorization,
    lambdas: float | Sequence[float],
    select: str = "gcv",
    holdout=None,
    standardize: bool = True,
    *,
    rcond: float | None = None,
    components: str,
    device=None,
) -> Attributions:
    """Ridge (unpenalized intercept) with the penalty chosen per example from ``lambdas``.

    Objective per example: sum_i (y_i - b - x_i^T w)^2 + lambda ||w||^2, in standardized
    coordinates when ``standardize`` (same as sklearn Ridge on StandardScaler'd masks).
    ``select="gcv"`` minimizes GCV computed from the Gram statistics; ``select="holdout"``
    minimizes held-out MSE on ``holdout`` ((keep_h, y_h) or a GramAccumulator).  With a
    single lambda no selection is done.  Chosen penalties: ``meta["lambda"]`` (list, [N]).
    """
    fac = _as_factorization(acc, standardize, rcond, device)
    lams = fac._lams(lambdas)
    if lams.size == 1:
        chosen_idx = np.zeros(fac.n_examples, dtype=np.int64)
        scores = None
    elif select == "gcv":
        scores = fac.gcv(lams)
        chosen_idx = np.argmin(scores, axis=0)
    elif select == "holdout":
        if holdout is None:
            raise CoarError('select="holdout" needs holdout=(keep_h, y_h) or a GramAccumulator')
        scores = fac.holdout_mse(lams, holdout)
        chosen_idx = np.argmin(scores, axis=0)
    else:
        raise CoarError(f'select must be "gcv" or "holdout", got {select!r}')
    chosen = lams[chosen_idx]
    w, b = fac.coefficients(chosen)
    meta = {
        **_primal_meta(fac),
        "select": select if lams.size > 1 else "fixed",
        "lambdas": lams.tolist(),
        "lambda": chosen.tolist(),
    }
    if scores is not None:
        meta["score"] = scores[chosen_idx, np.arange(fac.n_examples)].tolist()
    return Attributions(w.T, b, "coar-ridge", components, meta)


def fit_dual(
    keep,
    y,
    lam: float = 0.0,
    standardize: bool = True,
    *,
    rcond: float | None = None,
    components: str,
    block: int = 4096,
    device=None,
) -> Attributions:
    """Dual (kernel) form for M < C: w = Xc^T pinv(K + lam I) Yc with K = Xc Xc^T [M, M].

    Gives the same minimum-norm OLS (lam = 0) or ridge solution as the primal form
    without any C x C matrix.  Masks stay binary in memory; centred float64 columns are
    formed ``block`` components at a time.
    """
    keep = _to_numpy(keep, "keep")
    y = _to_numpy(y, "y")
    if keep.ndim != 2:
        raise ShapeError(f"keep masks must have shape [M, C], got shape {keep.shape}")
    M, C = keep.shape
    if y.ndim != 2 or y.shape[0] != M:
        raise ShapeError(f"outputs y must have shape [M={M}, N] to match keep {keep.shape}, got shape {y.shape}")
    keep, y = _check_batch(keep, y, C, y.shape[1])
    N = y.shape[1]
    if M < 2:
        raise CoarError(f"need at least 2 masks to fit, got M={M}")
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise CoarError(f"ridge penalty must be finite and >= 0, got {lam}")
    ops = _Ops(device)
    sx = keep.sum(axis=0, dtype=np.int64)
    xbar = sx / M
    dinv = np.ones(C)
    if standardize:
        var = (M * sx - sx * sx) / (M * M)  # binary columns: sum x^2 = sum x
        dinv = np.zeros(C)
        nz = var > 0
        dinv[nz] = 1.0 / np.sqrt(var[nz])

    def zblock(s):
        zb = keep[:, s : s + block].astype(np.float64) - xbar[None, s : s + block]
        return zb * dinv[None, s : s + block]

    K = np.zeros((M, M))
    for s in range(0, C, block):
        zb = zblock(s)
        K += ops.mm(zb, zb.T)
    e, U = ops.eigh(K)
    del K
    rc = _default_rcond(M, C) if rcond is None else float(rcond)
    cutoff = rc * float(e.max())
    kept = e > max(cutoff, 0.0)
    e, U = e[kept], U[:, kept]
    ybar = y.mean(axis=0)
    yc = y - ybar[None, :]
    A = ops.mm(U, (1.0 / (e + lam))[:, None] * ops.mm(U.T, yc))  # [M, N]
    w = np.empty((C, N))
    for s in range(0, C, block):
        w[s : s + block] = ops.mm(zblock(s).T, A)
    w *= dinv[:, None]
    b = ybar - xbar @ w
    meta = {
        "solver": "dual-eigh",
        "standardize": bool(standardize),
        "n_masks": M,
        "rank": int(e.size),
        "rcond": rc,
        "lambda": [lam] * N,
    }
    return Attributions(w.T, b, "coar-ols" if lam == 0 else "coar-ridge", components, meta)


def memory_plan(m: int, n_components: int, n_examples: int, dtype_bytes: int = 8) -> dict:
    """Bytes of the large arrays of the primal and the dual form; ``chosen`` is "dual" iff m < C.

    primal: gram C^2, xty C*N, eigvecs C^2.   dual: kernel M^2, eigvecs M^2 (times ``dtype_bytes``)
    and masks M*C bytes (kept as bool; centred float blocks are formed on the fly).
    """
    m, c, n, d = int(m), int(n_components), int(n_examples), int(dtype_bytes)
    if min(m, c, n, d) < 1:
        raise ShapeError(f"memory_plan needs positive sizes, got m={m}, C={c}, N={n}, dtype_bytes={d}")
    primal = {"gram": c * c * d, "xty": c * n * d, "eigvecs": c * c * d}
    primal["total"] = sum(primal.values())
    dual = {"kernel": m * m * d, "masks": m * c, "eigvecs": m * m * d}  # masks stay bool: 1 byte each
    dual["total"] = sum(dual.values())
    return {
        "m": m,
        "n_components": c,
        "n_examples": n,
        "dtype_bytes": d,
        "primal": primal,
        "dual": dual,
        "chosen": "dual" if m < c else "primal",
    }


def fit_chunks(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    m: int,
    n_components: int,
    n_examples: int,
    *,
    components: str,
    method: str = "ols",
    lambdas: Sequence[float] | None = (0.1, 1, 10, 100, 1000),
    standardize: bool = True,
    device=None,
    **options,
) -> Attributions:
    """Fit on the first ``m`` masks of a stream of ``(keep [k, C], y [k, N])`` chunks, read once.

    OLS with fewer masks than components uses the dual form on the concatenated masks; otherwise one
    :class:`GramAccumulator` pass (fed the chunks as they come: the float64 sums depend on the chunking, so
    the same chunks give bitwise the same fit) and one factorisation (ridge: the penalty per example by GCV
    over ``lambdas``). The estimators of :mod:`coar.estimators` (``method`` "prior", "lowrank", "lasso") take
    their ``options`` (e.g. ``prior``, ``select``, ``ranks``, ``l1_ratio``, ``holdout_fraction``); where they
    select on held-out training masks, the last ``holdout_fraction`` of the ``m`` masks go to a second
    accumulator. ``components`` is the component-set fingerprint the attributions carry (``""`` only when
    there is no component set). Raises CoarError when the stream holds fewer than ``m`` masks.
    """
    _check_method(method)
    if options and method in ("ols", "ridge"):
        raise CoarError(f"options {sorted(options)} do not apply to method {method!r}")
    m = int(m)
    if method == "ols" and m >= 2 and memory_plan(m, n_components, n_examples)["chosen"] == "dual":
        # fewer masks than components: the M x M kernel instead of the C x C Gram (the same minimum-norm fit)
        keep, y = (np.concatenate(parts)[:m] for parts in zip(*chunks))
        if len(keep) < m:
            raise CoarError(f"asked to fit on {m} masks, the stores hold only {len(keep)}")
        return fit_dual(keep, y, standardize=standardize, components=components, device=device)
    split = method == "lasso" or options.get("select") == "holdout"
    n_fit = m - int(round(float(options.get("holdout_fraction", 0.2)) * m)) if split else m
    accs = [GramAccumulator(n_components, n_examples, device=device)]
    if split:
        accs.append(GramAccumulator(n_components, n_examples, device=device))
    seen = 0
    for keep, y in chunks:
        keep, y = keep[: m - seen], y[: m - seen]
        if len(keep) == 0:
            break
        cut = max(0, min(len(keep), n_fit - seen))
        if cut:
            accs[0].add(keep[:cut], y[:cut])
        if cut < len(keep):
            accs[-1].add(keep[cut:], y[cut:])
        seen += len(keep)
    if seen < m:
        raise CoarError(f"asked to fit on {m} masks, the stores hold only {seen}")
    if method == "ols":
        return fit_ols(accs[0], standardize=standardize, components=components, device=device)
    if method == "ridge":
        return fit_ridge(accs[0], list(lambdas), select="gcv", standardize=standardize, components=components,
                         device=device)
    if method != "lasso":
        options["lambdas"] = lambdas
    return fit(tuple(accs) if split else accs[0], method, standardize=standardize, components=components,
               device=device, **options)


METHODS = ("ols", "ridge", "prior", "lowrank", "lasso")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise CoarError(f"regression method must be one of {', '.join(METHODS)}; got {method!r}")


def fit(data, method: str = "ols", **kwargs) -> Attributions:
    """Dispatch: ``data`` is a GramAccumulator, a Factorization or a (keep, y) pair.

    ``method``: "ols" (:func:`fit_ols`; a (keep, y) pair with fewer masks than components goes to
    :func:`fit_dual`), "ridge" (:func:`fit_ridge`), or one of :mod:`coar.estimators`: "prior"
    (:func:`~coar.estimators.fit_prior`, needs ``prior=``), "lowrank" (:func:`~coar.estimators.fit_lowrank`),
    "lasso" (:func:`~coar.estimators.fit_lasso`); the last three also take a pair of accumulators (fit part,
    held-out part). ``kwargs`` go to the fit and must name ``components`` (the component-set fingerprint;
    ``""`` to say there is none).
    """
    _check_method(method)
    if method in ("prior", "lowrank", "lasso"):
        from . import estimators

        if method == "lasso" and kwargs.pop("lambdas", None) is not None:
            raise CoarError("the lasso takes penalty ratios (ratios=...), not lambdas")
        if method == "prior" and kwargs.get("prior") is None:
            raise CoarError('method "prior" needs prior= (attributions to shrink toward, e.g. leave-one-out)')
        return {"prior": estimators.fit_prior, "lowrank": estimators.fit_lowrank,
                "lasso": estimators.fit_lasso}[method](data, **kwargs)
    if isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise CoarError("data must be a GramAccumulator, a Factorization or a (keep, y) pair")
        keep, y = (_to_numpy(a, n) for a, n in zip(data, ("keep", "y")))
        if keep.ndim != 2 or y.ndim != 2:
            raise ShapeError(f"keep must be [M, C] and y [M, N], got shapes {keep.shape} and {y.shape}")
        if method == "ols" and memory_plan(keep.shape[0], keep.shape[1], y.shape[1])["chosen"] == "dual":
            return fit_dual(keep, y, **kwargs)
        data = GramAccumulator.from_arrays(keep, y, device=kwargs.get("device"))
    if method == "ols":
        return fit_ols(data, **kwargs)
    return fit_ridge(data, **kwargs)
