"""Estimators that need fewer masks than per-example least squares: prior shrinkage, a shared low-rank
prior, and the lasso / elastic net.

All three work in the standardized coordinates of :mod:`coar.regression` (u = D w, D = diag(column std))
on one :class:`~coar.regression.Factorization` A = Z^T Z = V diag(e) V^T of the centred, standardized
mask Gram, with q = V^T Z^T y_c.  The intercept is never penalized.

Shrinkage toward a scaled prior
-------------------------------
``prior`` (:func:`fit_prior`) solves, per example and penalty lam,

    min_{u, s}  ||y_c - Z u||^2 + lam ||u - s u0||^2

with u0 the example's prior attributions (from any attribution file: leave-one-out, gradient x parameter,
another fit) and the scale s fitted, not penalized.  Profiling out s gives, with F = diag(1/(e+lam)) and
p = V^T u0,

    s = p^T F q / p^T E F p,        u = V F (q + lam s p) + s (u0 - V p),

so each (lam, example) costs O(r) on top of the shared factorisation, never a refit.  The fit is a linear
smoother with degrees of freedom  sum e/(e+lam) + lam p^T E F^2 p / p^T E F p  (plus one for the
intercept), which gives generalized cross-validation from the Gram statistics alone.  lam -> 0 gives least
squares, lam -> inf the best scaled prior; with the true attributions as prior and noise-free outputs every
lam returns them exactly.

A prior learned from all examples
---------------------------------
``lowrank`` (:func:`fit_lowrank`): a pilot ridge fit of every example gives the mean attribution vector and
the top principal directions of the N x C attribution matrix; P = [mean, top k] (orthonormal).  Each example
is fitted by ridge with the penalty lam (I - c P P^T), the posterior mean under a Gaussian prior whose
covariance is low-rank plus isotropic, learned from all examples.  By Woodbury the k x k system is shared by
all examples, so each lam again costs a solve.

Sparsity
--------
``lasso`` (:func:`fit_lasso`): min 1/2 ||y_c - Z u||^2 + lam (l1_ratio ||u||_1 + (1 - l1_ratio)/2 ||u||^2),
by ADMM on the shared factorisation (all examples at once, matrix products only, warm-started along a path
of per-example penalties lam = ratio * lam_max, lam_max = max_j |(Z^T y_c)_j| / l1_ratio).

Hyperparameter selection
------------------------
Only training masks are ever used.  ``select="gcv"`` (prior, lowrank) scores every lam by GCV on all
training masks.  ``select="holdout"`` (every estimator) fits on the first 1 - holdout_fraction of the training masks,
scores on the rest, and refits on all of them with the chosen values (ridge-type penalties rescaled by
M / M_fit, so that the penalty per mask stays the same).  Evaluation masks never enter.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .attributions import Attributions
from . import gram as reg
from .errors import CoarError, ShapeError

__all__ = ["METHODS", "fit_prior", "fit_lowrank", "fit_lasso", "default_lambdas", "split_holdout"]

#: Methods of this module (``coar.regression.fit(data, method=...)`` dispatches to them).
METHODS = ("prior", "lowrank", "lasso")

_REL_LAMBDAS = np.logspace(-3, 3, 13)  # penalties per mask: lam = m * these (A's diagonal is m)
_LASSO_RATIOS = np.logspace(0, -4, 13)


def default_lambdas(m: int) -> np.ndarray:
    """The penalty grid used when none is given: m * 10^(-3 .. 3), 13 values (the Gram's diagonal is m)."""
    return float(m) * _REL_LAMBDAS


# --------------------------------------------------------------------------------- data
class _Holdout:
    """Held-out training masks, scored in the standardized coordinates of a factorisation."""

    def __init__(self, data, fac):
        self.fac = fac
        if isinstance(data, reg.GramAccumulator):
            h, cxx, cxy, cyy = fac.holdout_blocks(data)
            self.kind, self.h, self.cxx, self.cxy, self.cyy = "gram", h, cxx, cxy, cyy
            self.var = np.maximum(cyy / h - ((data.sum_y - h * fac.ybar) / h) ** 2, 1e-300)
        else:
            keep, y = data
            self.kind, self.h = "rows", keep.shape[0]
            if self.h < 1:
                raise CoarError("the held-out part of the training masks is empty")
            self.z = fac._centered_rows(keep)
            self.yc = y - fac.ybar[None, :]
            self.var = np.maximum(y.var(axis=0), 1e-300)

    def mse(self, u: np.ndarray) -> np.ndarray:
        """Held-out mean squared error [N] of standardized coefficients u [C, N] (intercept = training mean)."""
        if self.kind == "rows":
            return np.mean((self.yc - self.z @ u) ** 2, axis=0)
        quad = np.einsum("cn,cn->n", u, self.cxx @ u)
        return np.maximum((self.cyy - 2.0 * np.einsum("cn,cn->n", u, self.cxy) + quad) / self.h, 0.0)


def split_holdout(data, holdout_fraction: float):
    """(fit part, held-out part, all) of the training data.

    ``data`` is a (keep [M, C], y [M, N]) pair, split by rows (the last ``holdout_fraction`` of the masks are
    held out; masks are i.i.d., so the order does not matter), or a pair of GramAccumulators (fit part,
    held-out part) collected separately.
    """
    f = float(holdout_fraction)
    if not 0.0 < f < 1.0:
        raise CoarError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, reg.GramAccumulator) for d in data):
        fit_acc, hold_acc = data
        if (fit_acc.n_components, fit_acc.n_examples) != (hold_acc.n_components, hold_acc.n_examples):
            raise ShapeError("the fit and held-out accumulators cover different (components, examples)")
        whole = reg.GramAccumulator(fit_acc.n_components, fit_acc.n_examples, device=fit_acc.device)
        whole.merge(fit_acc).merge(hold_acc)
        return fit_acc, hold_acc, whole
    if isinstance(data, (tuple, list)) and len(data) == 2:
        keep, y = (reg._to_numpy(a, n) for a, n in zip(data, ("keep", "y")))
        if keep.ndim != 2 or y.ndim != 2:
            raise ShapeError(f"keep must be [M, C] and y [M, N], got shapes {keep.shape} and {y.shape}")
        keep, y = reg._check_batch(keep, y, keep.shape[1], y.shape[1], "training data")
        M = keep.shape[0]
        h = int(round(f * M))
        if h < 1 or M - h < 2:
            raise CoarError(f"cannot hold out {f:g} of {M} training masks: need >= 1 held out and >= 2 to fit")
        return (keep[: M - h], y[: M - h]), (keep[M - h :], y[M - h :]), (keep, y)
    raise CoarError('select="holdout" needs the training data as a (keep, y) pair or as a pair of '
                    "GramAccumulators (fit part, held-out part); a single accumulator cannot be split")


def _factorize(data, standardize, rcond, device):
    if isinstance(data, reg.Factorization):
        return reg._as_factorization(data, standardize, rcond, device)
    if isinstance(data, reg.GramAccumulator):
        return reg.factorize(data, standardize=standardize, rcond=rcond, device=device)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(d, reg.GramAccumulator) for d in data):
        acc = reg.GramAccumulator(data[0].n_components, data[0].n_examples, device=device)
        acc.merge(data[0]).merge(data[1])  # (fit part, held-out part): all of it
        return reg.factorize(acc, standardize=standardize, rcond=rcond, device=device)
    if isinstance(data, (tuple, list)) and len(data) == 2:  # fewer masks than components: the dual form
        return reg.factorize_rows(data[0], data[1], standardize=standardize, rcond=rcond, device=device)
    raise CoarError("data must be a GramAccumulator, a Factorization or a (keep, y) pair")


def _lambdas(lambdas, m: int) -> np.ndarray:
    lams = default_lambdas(m) if lambdas is None else np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    if lams.ndim != 1 or lams.size == 0 or not np.all(np.isfinite(lams)) or np.any(lams < 0):
        raise CoarError("penalties (lambdas) must be a non-empty list of finite values >= 0, "
                        f"got {np.ravel(lams).tolist()}")
    return lams


def _to_attributions(fac, u: np.ndarray, method: str, components: str, meta: dict,
                     w_const: np.ndarray | None = None) -> Attributions:
    """Attributions from standardized coefficients u [C, N]. Columns that never vary in the masks carry no
    information (their weight is confounded with the intercept): they get ``w_const`` [C, N] where given
    (a prior's value), 0 otherwise."""
    w = u * fac.dinv[:, None] if fac.dinv is not None else u
    if w_const is not None and fac.dinv is not None:
        const = fac.dinv == 0
        w[const] = w_const[const]
    b = fac.ybar - fac.xbar @ w
    return Attributions(w.T, b, method, components, {**reg._factorization_meta(fac), **meta})


# ------------------------------------------------------------------ subspace shrinkage
def _prior_solve(fac, p: np.ndarray, n: np.ndarray, lam: float, idx=slice(None)):
    """Per-example one-column subspace (the scaled prior). p = V^T u0 [r, N], n = u0 - V p [C, N] of the
    examples ``idx``.  Returns (u [C, N], s [N], rss [N], df [N])."""
    e, q, syy = fac.evals, fac.q[:, idx], fac.syy[idx]
    f = 1.0 / (e + lam)
    den = np.einsum("rn,r->n", p * p, e * f)
    ok = den > 1e-12 * np.maximum(np.einsum("rn,rn->n", p, p) * (e.max() if e.size else 1.0), 1e-300)
    s = np.where(ok, np.einsum("rn,rn->n", p, f[:, None] * q) / np.where(ok, den, 1.0), 0.0)
    a = f[:, None] * (q + lam * s[None, :] * p)
    u = fac.evecs @ a + s[None, :] * n
    rss = np.maximum(syy - 2.0 * np.einsum("rn,rn->n", a, q) + np.einsum("r,rn->n", e, a * a), 0.0)
    extra = np.where(ok, lam * np.einsum("rn,r->n", p * p, e * f * f) / np.where(ok, den, 1.0), 0.0)
    df = float(np.sum(e * f)) + extra
    return u, s, rss, df


def _gcv(fac, rss: np.ndarray, df: np.ndarray) -> np.ndarray:
    m = fac.m
    denom = 1.0 - (np.asarray(df) + 1.0) / m
    return np.where(denom > 1e-12, rss / m / np.where(denom > 1e-12, denom, 1.0) ** 2, np.inf)


def _check_prior(prior, n_components: int, n_examples: int, components: str) -> np.ndarray:
    if not isinstance(prior, Attributions):
        raise CoarError(f"the prior must be an Attributions object (an attribution file), got {type(prior).__name__}")
    if prior.n_components != n_components:
        raise ShapeError(f"the prior ({prior.method}) has {prior.n_components} components, the masks have "
                         f"{n_components}; give attributions of the same component set")
    if prior.n_examples != n_examples:
        raise ShapeError(f"the prior ({prior.method}) covers {prior.n_examples} examples, the outputs cover "
                         f"{n_examples}; give attributions of the same examples")
    if components and prior.components and prior.components != components:
        raise CoarError(f"the prior ({prior.method}) was computed on component set {prior.components}, the masks on "
                        f"{components}; give attributions of the same component set")
    w0 = np.asarray(prior.weights, dtype=np.float64)
    if not np.all(np.isfinite(w0)):
        raise CoarError(f"the prior ({prior.method}) holds non-finite attributions")
    return w0


def _prior_coords(fac, w0: np.ndarray):
    """The prior [N, C] in standardized coordinates, split into (V^T u0, null part)."""
    u0 = w0.T.copy()
    if fac.dinv is not None:
        std = np.zeros_like(fac.dinv)
        nz = fac.dinv > 0
        std[nz] = 1.0 / fac.dinv[nz]
        u0 *= std[:, None]
    p = fac.evecs.T @ u0
    return p, u0 - fac.evecs @ p


def fit_prior(data, prior: Attributions, lambdas: Sequence[float] | None = None, select: str = "gcv",
              holdout_fraction: float = 0.2, standardize: bool = True, *, components: str,
              rcond: float | None = None, device=None) -> Attributions:
    """Ridge shrunk toward a scaled prior: per example min ||y - b - X w||^2 + lam ||w - s w_prior||^2.

    s is fitted per example jointly with w; lam is chosen per example from ``lambdas`` (default
    :func:`default_lambdas` of the number of masks) by GCV on all training masks (``select="gcv"``; ``data`` a
    GramAccumulator, Factorization or (keep, y) pair) or by held-out training masks (``select="holdout"``; see
    :func:`split_holdout`).  ``meta`` records ``lambda`` and ``scale`` (s) per example and the prior's method.
    """
    if select not in ("gcv", "holdout"):
        raise CoarError(f'select must be "gcv" or "holdout", got {select!r}')
    if select == "holdout":
        fit_part, hold_part, whole = split_holdout(data, holdout_fraction)
        fac_fit = _factorize(fit_part, standardize, rcond, device)
        w0 = _check_prior(prior, fac_fit.n_components, fac_fit.n_examples, components)
        lams = _lambdas(lambdas, fac_fit.m)
        hold = _Holdout(hold_part, fac_fit)
        p, n = _prior_coords(fac_fit, w0)
        scores = np.stack([hold.mse(_prior_solve(fac_fit, p, n, lam)[0]) for lam in lams])
        fac = _factorize(whole, standardize, rcond, device)
        lams_all = lams * (fac.m / fac_fit.m)  # the same penalty per mask
    else:
        fac = _factorize(data, standardize, rcond, device)
        w0 = _check_prior(prior, fac.n_components, fac.n_examples, components)
        lams = lams_all = _lambdas(lambdas, fac.m)
        scores = None
    p, n = _prior_coords(fac, w0)
    if scores is None:
        scores = np.stack([_gcv(fac, *_prior_solve(fac, p, n, lam)[2:]) for lam in lams])
    chosen = np.argmin(scores, axis=0)
    u = np.empty((fac.n_components, fac.n_examples))
    s = np.empty(fac.n_examples)
    for li in np.unique(chosen):
        idx = chosen == li
        ul, sl, _, _ = _prior_solve(fac, p[:, idx], n[:, idx], lams_all[li], idx)
        u[:, idx], s[idx] = ul, sl
    meta = {"select": select, "lambdas": lams_all.tolist(), "lambda": lams_all[chosen].tolist(),
            "scale": s.tolist(), "prior": prior.method}
    if select == "holdout":
        meta["holdout_fraction"] = float(holdout_fraction)
    return _to_attributions(fac, u, "coar-prior", components, meta, w_const=w0.T * s[None, :])


def _lowrank_basis(fac, k_max: int, lambdas):
    """[mean, top principal directions] of a ridge (GCV) pilot fit of all examples, standardized coords."""
    lams = _lambdas(lambdas, fac.m)
    chosen = np.argmin(fac.gcv(lams), axis=0)
    u = np.empty((fac.n_components, fac.n_examples))
    for li in np.unique(chosen):
        idx = chosen == li
        u[:, idx] = fac.evecs @ (fac.q[:, idx] / (fac.evals + lams[li])[:, None])
    mu = u.mean(axis=1)
    k = min(k_max, min(u.shape) - 1)
    dirs = np.linalg.svd(u - mu[:, None], full_matrices=False)[0][:, : max(k, 0)]
    return np.column_stack([mu / max(np.linalg.norm(mu), 1e-300), dirs])


def _coupled_solve(fac, pv: np.ndarray, nk: np.ndarray, lam: float, c: float):
    """Ridge with penalty lam (I - c P P^T) for orthonormal P [C, k] (pv = V^T P, nk = P - V pv), all examples.

    c = 0 is ridge, c -> 1 leaves the span of P unpenalized. By Woodbury around M = A + lam I (whose inverse is
    V F V^T + (I - V V^T) / lam): u = M^-1 t + M^-1 P Q P^T M^-1 t with Q = (I / (lam c) - P^T M^-1 P)^-1, a
    k x k matrix shared by all examples. Returns (u [C, N], rss [N], df [N])."""
    e, q = fac.evals, fac.q
    if lam == 0.0:  # no penalty: least squares (minimum norm)
        a, null = q / e[:, None], 0.0
        df = float(e.size)
    else:
        f = 1.0 / (e + lam)
        k = pv.shape[1]
        if c > 0:
            S = pv.T @ (f[:, None] * pv) + nk.T @ nk / lam
            Q = np.linalg.pinv(np.eye(k) / (lam * c) - S, rcond=1e-12, hermitian=True)
        else:  # ridge
            Q = np.zeros((k, k))
        h = Q @ (pv.T @ (f[:, None] * q))  # [k, N]
        a = f[:, None] * (q + pv @ h)
        null = nk @ h / lam
        df = float(np.sum(e * f) + np.trace(Q @ (pv.T @ ((e * f * f)[:, None] * pv))))
    u = fac.evecs @ a + null
    rss = np.maximum(fac.syy - 2.0 * np.einsum("rn,rn->n", a, q) + np.einsum("r,rn->n", e, a * a), 0.0)
    return u, rss, np.full(fac.n_examples, df)


def fit_lowrank(data, ranks: Sequence[int] = (0, 1, 2, 4, 8, 16), couplings: Sequence[float] = (0.5, 0.9, 0.99, 1.0),
                lambdas: Sequence[float] | None = None, select: str = "gcv", holdout_fraction: float = 0.2,
                standardize: bool = True, *, components: str, rcond: float | None = None,
                device=None) -> Attributions:
    """Ridge with a Gaussian prior whose mean and low-rank covariance are learned from all examples.

    A pilot ridge fit (GCV) of every example gives the mean attribution vector and the top principal
    directions of the attribution matrix; P = [mean, top k directions] (orthonormalized).  Each example is
    fitted by ridge with the penalty lam (I - c P P^T): the span of P, where the examples' attributions live,
    is penalized 1 - c times as much as the rest (c = 1 would leave it free).  k and c (one for all examples:
    the smallest mean score relative to each example's output variance) and lam (per example) are chosen by
    GCV on all training masks (``select="gcv"``) or on held-out training masks (``select="holdout"``,
    :func:`split_holdout`; the pilot then sees only the fit part).  ``meta`` records ``rank`` (k),
    ``coupling`` (c) and ``lambda`` per example.
    """
    ranks = sorted({int(k) for k in np.atleast_1d(ranks)})
    if not ranks or ranks[0] < 0:
        raise CoarError(f"ranks must be a non-empty list of integers >= 0, got {list(ranks)}")
    cs = sorted({float(c) for c in np.atleast_1d(couplings)})
    if not cs or cs[0] < 0 or cs[-1] > 1:
        raise CoarError(f"couplings must be a non-empty list of values in [0, 1], got {list(couplings)}")
    if select not in ("gcv", "holdout"):
        raise CoarError(f'select must be "gcv" or "holdout", got {select!r}')
    if select == "holdout":
        fit_part, hold_part, whole = split_holdout(data, holdout_fraction)
        fac_sel = _factorize(fit_part, standardize, rcond, device)
        hold = _Holdout(hold_part, fac_sel)
        norm = hold.var
    else:
        fac_sel = _factorize(data, standardize, rcond, device)
        norm = np.maximum(fac_sel.syy / fac_sel.m, 1e-300)
    lams = _lambdas(lambdas, fac_sel.m)

    def directions(fac, k):
        P = np.linalg.qr(_lowrank_basis(fac, k, lambdas)[:, : k + 1])[0]
        pv = fac.evecs.T @ P
        return pv, P - fac.evecs @ pv

    grid, scores = [], []
    for k in ranks:
        pv, nk = directions(fac_sel, k)
        for c in cs:
            rows = []
            for lam in lams:
                u, rss, df = _coupled_solve(fac_sel, pv, nk, lam, c)
                rows.append(hold.mse(u) if select == "holdout" else _gcv(fac_sel, rss, df))
            grid.append((k, c))
            scores.append(np.stack(rows))
    grid_score = [float(np.mean(sc.min(axis=0) / norm)) for sc in scores]
    best = int(np.argmin(grid_score))
    k, c = grid[best]
    chosen = np.argmin(scores[best], axis=0)
    if select == "holdout":
        fac = _factorize(whole, standardize, rcond, device)
        lams_all = lams * (fac.m / fac_sel.m)
    else:
        fac, lams_all = fac_sel, lams
    pv, nk = directions(fac, k)
    u = np.empty((fac.n_components, fac.n_examples))
    for li in np.unique(chosen):
        idx = chosen == li
        u[:, idx] = _coupled_solve(fac, pv, nk, lams_all[li], c)[0][:, idx]
    meta = {"select": select, "ranks": ranks, "couplings": cs, "rank": k, "coupling": c,
            "grid_score": [[kk, cc, sc] for (kk, cc), sc in zip(grid, grid_score)],
            "lambdas": lams_all.tolist(), "lambda": lams_all[chosen].tolist()}
    if select == "holdout":
        meta["holdout_fraction"] = float(holdout_fraction)
    return _to_attributions(fac, u, "coar-lowrank", components, meta)


# ------------------------------------------------------------------------------- lasso
def _soft(z, t):
    return np.sign(z) * np.maximum(np.abs(z) - t, 0.0)


def _lasso_path(fac, ratios: np.ndarray, l1_ratio: float, tol: float, max_iter: int):
    """ADMM for every example at once along penalties ratios * lam_max, warm-started; yields (u [C, N], lam_max).

    Splitting u = z: the u-step is a ridge solve (A + rho I)^-1 b through the shared eigenbasis (two
    [C, r] x [r, N] products, no factorisation per penalty or example), the z-step the elastic-net proximal
    map (soft threshold), and w the scaled dual.  The returned u is z (exactly sparse).  A penalty's loop stops
    when neither the primal residual |u - z| nor the change of z exceeds ``tol`` times the example's output
    scale (sqrt of its centred sum of squares, per unit of column norm), or after ``max_iter`` iterations.
    """
    V, e = fac.evecs, fac.evals
    C, N = fac.n_components, fac.n_examples
    t = V @ fac.q  # Z^T y_c
    diag = np.einsum("cr,r,cr->c", V, e, V)  # the Gram's diagonal (0 for columns that never vary)
    unit = np.sqrt(np.maximum(diag, 0.0))[:, None] / np.sqrt(np.maximum(fac.syy, 1e-300))[None, :]
    lam_max = np.max(np.abs(t), axis=0) / max(l1_ratio, 1e-3)
    rho = float(np.mean(diag[diag > 0])) if np.any(diag > 0) else 1.0
    shrink = (1.0 / (e + rho) - 1.0 / rho)[:, None]
    z = np.zeros((C, N))
    w = np.zeros((C, N))
    for ratio in ratios:
        lam = ratio * lam_max
        l1, l2 = lam * l1_ratio / rho, lam * (1.0 - l1_ratio) / rho
        for _ in range(max(1, int(max_iter))):
            b = t + rho * (z - w)
            x = b / rho + V @ (shrink * (V.T @ b))
            v = x + w
            z_old = z
            z = _soft(v, l1) / (1.0 + l2)
            w = v - z
            if max(np.max(np.abs(x - z) * unit), np.max(np.abs(z - z_old) * unit)) < tol:
                break
        yield z.copy(), lam_max


def fit_lasso(data, ratios: Sequence[float] | None = None, l1_ratio: float = 1.0, holdout_fraction: float = 0.2,
              standardize: bool = True, *, components: str, tol: float = 1e-4, max_iter: int = 2000,
              rcond: float | None = None, device=None) -> Attributions:
    """Lasso (``l1_ratio`` 1) or elastic net (0 < l1_ratio < 1) per example, penalty chosen on held-out masks.

    Objective: 1/2 ||y_c - Z u||^2 + lam (l1_ratio ||u||_1 + (1 - l1_ratio)/2 ||u||^2) in standardized
    coordinates, lam = ratio * lam_max per example over ``ratios`` (default 13 values from 1 down to 1e-4).
    ``ratios`` containing 0 with l1_ratio 1 gives least squares.  Solved by ADMM on the shared factorisation
    (:func:`_lasso_path`: matrix products only, all examples at once); a penalty's loop stops when the
    attributions move and violate the split by less than ``tol`` times the example's output scale (sqrt of its
    centred sum of squares, per unit of column norm), or after ``max_iter`` iterations.  ``meta`` records
    ``lambda`` per example and the number of nonzero attributions.
    """
    l1_ratio = float(l1_ratio)
    if not 0.0 < l1_ratio <= 1.0:
        raise CoarError(f"l1_ratio must be in (0, 1], got {l1_ratio}")
    rs = _LASSO_RATIOS if ratios is None else np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    if rs.ndim != 1 or rs.size == 0 or not np.all(np.isfinite(rs)) or np.any(rs < 0):
        raise CoarError("lasso penalty ratios must be a non-empty list of finite values >= 0, "
                        f"got {np.ravel(rs).tolist()}")
    rs = np.sort(rs)[::-1]  # warm starts run from the largest penalty down
    fit_part, hold_part, whole = split_holdout(data, holdout_fraction)
    fac_fit = _factorize(fit_part, standardize, rcond, device)
    hold = _Holdout(hold_part, fac_fit)
    chosen = np.argmin(np.stack([hold.mse(u) for u, _ in _lasso_path(fac_fit, rs, l1_ratio, tol, max_iter)]), axis=0)
    fac = _factorize(whole, standardize, rcond, device)
    u = np.empty((fac.n_components, fac.n_examples))
    for li, (ul, lam_max) in enumerate(_lasso_path(fac, rs[: int(chosen.max()) + 1], l1_ratio, tol, max_iter)):
        idx = chosen == li
        u[:, idx] = ul[:, idx]
    meta = {"select": "holdout", "holdout_fraction": float(holdout_fraction), "l1_ratio": l1_ratio,
            "ratios": rs.tolist(), "ratio": rs[chosen].tolist(), "lambda": (rs[chosen] * lam_max).tolist(),
            "nonzero": np.count_nonzero(u, axis=0).tolist()}
    return _to_attributions(fac, u, "coar-lasso", components, meta)
