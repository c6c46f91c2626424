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

Least squares, and ridge at given penalties, solve A w = D^-1 Sxy (A + lambda I for ridge) by one
float64 Cholesky factorisation of the (standardized) centred Gram A (:func:`coar.gram.solve_cholesky`,
n^3 / 3 flops, on the accumulator's device when it has one).  Where the penalty must be
chosen (GCV, held-out masks) or an estimator of :mod:`coar.estimators` needs the spectrum,
one eigendecomposition A = V diag(e) V^T is computed instead (:func:`factorize`, O(C^3)
with several times the Cholesky's operations) and serves OLS (pseudo-inverse with a relative
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
The Cholesky solve returns the same solution: it detects the constant row sum exactly on
the integer statistics (m X^T X 1 = sum_x * sum(sum_x)), and solves (A + c u u^T) w = b
with u = D 1 the null direction, which gives A^+ b because b is orthogonal to u.  Columns
that never vary get weight 0 in both.  Any other rank deficiency (fewer masks than
components, components always ablated together) makes the Cholesky fall back to the
eigendecomposition, and the fit's ``meta["solver"]`` says so.

Numerics and memory
-------------------
Mask Gram entries are integer counts <= M.  They are exact in float32 while M < 2^24,
so the C x C Gram can be accumulated in float32 tiles (also on a GPU; TF32 and bfloat16
keep 0/1 inputs exact and accumulate in float32) and summed into an int64 matrix; this
module does so chunk-wise.  The centring (m * X^T X - sx sx^T) / m is exact too.  With a
``device``, a :class:`GramAccumulator` keeps its statistics there for the whole stream
(X^T Y as a float64 product on the device) and copies them to the host only when asked.

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

from typing import Iterable, Sequence

import numpy as np

from .attributions import Attributions
from .errors import CoarError, ShapeError
from .gram import (Factorization, GramAccumulator, SingularGram, _as_factorization, _check_batch, _default_rcond,
                   _factorization_meta, _Ops, _to_numpy, dual_kernel, factorize, factorize_rows, solve_cholesky)

__all__ = [
    "GramAccumulator",
    "Factorization",
    "factorize",
    "factorize_rows",
    "solve_cholesky",
    "SOLVERS",
    "fit_ols",
    "fit_ridge",
    "fit_dual",
    "fit",
    "fit_chunks",
    "memory_plan",
    "METHODS",
]

SOLVERS = ("cholesky", "eigh")


def _check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise CoarError(f"solver must be one of {', '.join(SOLVERS)}; got {solver!r}")


def _cholesky_or_none(acc, lam, standardize, rcond, device):
    """(w, b, meta) by :func:`coar.gram.solve_cholesky`, or (None, reason) when the Gram is singular beyond what
    it removes (then the eigendecomposition decides, and the fit's meta says so)."""
    try:
        return solve_cholesky(acc, lam, standardize=standardize, rcond=rcond, device=device), None
    except SingularGram as exc:
        return None, exc.reason


def _fallback_meta(meta: dict, reason: str | None) -> dict:
    if reason is None:
        return meta
    return {**meta, "solver": "primal-eigh (Cholesky fallback)", "cholesky_fallback": reason}


def fit_ols(
    acc: GramAccumulator | Factorization,
    standardize: bool = True,
    *,
    rcond: float | None = None,
    components: str,
    device=None,
    solver: str = "cholesky",
) -> Attributions:
    """Least squares with intercept for all examples (minimum-norm when rank-deficient).

    ``solver="cholesky"`` (default) solves by :func:`coar.gram.solve_cholesky` (one C x C Cholesky
    factorisation; the exact-alpha null direction and constant columns handled exactly, so the solution is the
    eigendecomposition's minimum-norm one); when the Gram is singular beyond that it falls back to the
    eigendecomposition and ``meta["solver"]`` says so (``meta["cholesky_fallback"]``: why).
    ``solver="eigh"`` forces :func:`factorize` (more operations: 1.5x the time
    at C = 2,000 on a 2-core CPU). A :class:`Factorization` given as
    ``acc`` is solved through its eigenbasis."""
    _check_solver(solver)
    reason = None
    if solver == "cholesky" and isinstance(acc, GramAccumulator):
        done, reason = _cholesky_or_none(acc, None, standardize, rcond, device)
        if done is not None:
            w, b, meta = done
            return Attributions(w.T, b, "coar-ols", components, {**meta, "lambda": [0.0] * acc.n_examples})
    fac = _as_factorization(acc, standardize, rcond, device)
    w, b = fac.coefficients(None)
    meta = {**_factorization_meta(fac), "lambda": [0.0] * fac.n_examples}
    return Attributions(w.T, b, "coar-ols", components, _fallback_meta(meta, reason))


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
    solver: str = "cholesky",
) -> Attributions:
    """Ridge (unpenalized intercept) with the penalty chosen per example from ``lambdas``.

    Objective per example: sum_i (y_i - b - x_i^T w)^2 + lambda ||w||^2, in standardized
    coordinates when ``standardize`` (same as sklearn Ridge on StandardScaler'd masks).
    ``select="gcv"`` minimizes GCV computed from the Gram statistics; ``select="holdout"``
    minimizes held-out MSE on ``holdout`` ((keep_h, y_h) or a GramAccumulator).  With a
    single lambda no selection is done: a GramAccumulator is then solved by a Cholesky factorisation
    (``solver="cholesky"``, the default; see :func:`fit_ols`), while selecting among several penalties needs
    the spectrum (one eigendecomposition, :func:`factorize`).  Chosen penalties: ``meta["lambda"]`` (list, [N]).
    """
    _check_solver(solver)
    reason = None
    lams = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    if solver == "cholesky" and isinstance(acc, GramAccumulator) and lams.ndim == 1 and lams.size == 1:
        if not np.isfinite(lams[0]) or lams[0] < 0:
            raise CoarError(f"ridge penalties must be finite and >= 0, got {lams.tolist()}")
        done, reason = _cholesky_or_none(acc, float(lams[0]), standardize, rcond, device)
        if done is not None:
            w, b, meta = done
            meta = {**meta, "select": "fixed", "lambdas": lams.tolist(), "lambda": [float(lams[0])] * acc.n_examples}
            return Attributions(w.T, b, "coar-ridge", components, meta)
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
        **_fallback_meta(_factorization_meta(fac), reason),
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
    K, xbar, dinv, zblock = dual_kernel(keep, standardize, block, ops)
    dinv = np.ones(C) if dinv is None else dinv
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


def memory_plan(m: int, n_components: int, n_examples: int, dtype_bytes: int = 8, solver: str = "cholesky") -> dict:
    """Bytes of the large arrays of the primal and the dual form; ``chosen`` is "dual" iff m < C.

    primal: gram C^2, xty C*N, eigvecs C^2.   dual: kernel M^2, eigvecs M^2 (times ``dtype_bytes``)
    and masks M*C bytes (kept as bool; centred float blocks are formed on the fly).
    ``solver`` ("cholesky", the default of least squares and ridge at given penalties, or "eigh") gives
    ``solver``, the factorisation the fit will run ("primal-cholesky", "primal-eigh" or "dual-eigh"), and
    ``cholesky``: the primal arrays of the Cholesky solve (gram C^2, xty C*N, its factor C^2: the same bytes as
    the eigenvectors, in about a tenth of the time). ``accumulator``: what a :class:`GramAccumulator` on a
    device holds while it streams (int64 counts C^2 * 8, float64 xty C*N * 8, and one chunk's float32 Gram
    C^2 * 4), whatever ``dtype_bytes``.
    """
    _check_solver(solver)
    m, c, n, d = int(m), int(n_components), int(n_examples), int(dtype_bytes)
    if min(m, c, n, d) < 1:
        raise ShapeError(f"memory_plan needs positive sizes, got m={m}, C={c}, N={n}, dtype_bytes={d}")
    primal = {"gram": c * c * d, "xty": c * n * d, "eigvecs": c * c * d}
    primal["total"] = sum(primal.values())
    cholesky = {"gram": c * c * d, "xty": c * n * d, "factor": c * c * d}
    cholesky["total"] = sum(cholesky.values())
    dual = {"kernel": m * m * d, "masks": m * c, "eigvecs": m * m * d}  # masks stay bool: 1 byte each
    dual["total"] = sum(dual.values())
    accumulator = {"xtx": c * c * 8, "xty": c * n * 8, "chunk_gram": c * c * 4}
    accumulator["total"] = sum(accumulator.values())
    chosen = "dual" if m < c else "primal"
    return {
        "m": m,
        "n_components": c,
        "n_examples": n,
        "dtype_bytes": d,
        "primal": primal,
        "cholesky": cholesky,
        "dual": dual,
        "accumulator": accumulator,
        "chosen": chosen,
        "solver": "dual-eigh" if chosen == "dual" else f"primal-{solver}",
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
    solver: str = "cholesky",
    **options,
) -> Attributions:
    """Fit on the first ``m`` masks of a stream of ``(keep [k, C], y [k, N])`` chunks, read once.

    OLS and the estimators with fewer masks than components use the dual form on the concatenated masks
    (:func:`coar.gram.factorize_rows`); otherwise one
    :class:`GramAccumulator` pass (fed the chunks as they come: the float64 sums depend on the chunking, so
    the same chunks give bitwise the same fit) and one factorisation (ridge: the penalty per example by GCV
    over ``lambdas``). The estimators of :mod:`coar.estimators` (``method`` "prior", "lowrank", "lasso") take
    their ``options`` (e.g. ``prior``, ``select``, ``ranks``, ``l1_ratio``, ``holdout_fraction``); where they
    select on held-out training masks, the last ``holdout_fraction`` of the ``m`` masks go to a second
    accumulator. ``components`` is the component-set fingerprint the attributions carry (``""`` only when
    there is no component set). ``solver`` ("cholesky" or "eigh") is that of :func:`fit_ols` and
    :func:`fit_ridge` (a single penalty in ``lambdas``); the accumulators live on ``device`` when one is given
    (chunks are copied there once, in their stored dtypes). Raises CoarError when the stream holds fewer than
    ``m`` masks.
    """
    _check_method(method)
    _check_solver(solver)
    if options and method in ("ols", "ridge"):
        raise CoarError(f"options {sorted(options)} do not apply to method {method!r}")
    m = int(m)
    if method in ("prior", "lowrank"):
        options["lambdas"] = lambdas
    if method != "ridge" and m >= 2 and memory_plan(m, n_components, n_examples)["chosen"] == "dual":
        # fewer masks than components: the M x M kernel instead of the C x C Gram (the same fit)
        keep, y = (np.concatenate(parts)[:m] for parts in zip(*chunks))
        if len(keep) < m:
            raise CoarError(f"asked to fit on {m} masks, the stores hold only {len(keep)}")
        if method == "ols":
            return fit_dual(keep, y, standardize=standardize, components=components, device=device)
        return fit((keep, y), method, standardize=standardize, components=components, device=device, **options)
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
        return fit_ols(accs[0], standardize=standardize, components=components, device=device, solver=solver)
    if method == "ridge":
        return fit_ridge(accs[0], list(lambdas), select="gcv", standardize=standardize, components=components,
                         device=device, solver=solver)
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
    ``""`` to say there is none). ``solver`` ("cholesky", the default, or "eigh") applies to "ols" and "ridge"
    (see :func:`fit_ols`); the estimators need the spectrum and always decompose.
    """
    _check_method(method)
    solver = kwargs.pop("solver", None)
    if solver is not None:
        _check_solver(solver)
        if method not in ("ols", "ridge"):
            raise CoarError(f"solver= applies to methods ols and ridge; {method!r} needs the eigendecomposition")
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
    if solver is not None:
        kwargs["solver"] = solver
    if method == "ols":
        return fit_ols(data, **kwargs)
    return fit_ridge(data, **kwargs)
