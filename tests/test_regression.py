"""Tests of coar.regression against numpy lstsq, scikit-learn Ridge/RidgeCV and brute force."""
from __future__ import annotations

import numpy as np
import pytest

from coar.attributions import Attributions
from coar.errors import CoarError, ShapeError, StoreError
from coar.regression import (
    GramAccumulator,
    factorize,
    fit,
    fit_dual,
    fit_ols,
    fit_ridge,
    memory_plan,
)


def masks(rng, m, c, keep_prob=0.9):
    return rng.random((m, c)) < keep_prob


def planted(rng, m, c, n, noise=0.5, keep_prob=0.9):
    X = masks(rng, m, c, keep_prob)
    W = rng.normal(size=(c, n))
    b = rng.normal(size=n)
    Y = X @ W + b + noise * rng.normal(size=(m, n))
    return X, Y, W, b


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def assert_rel(a, b, tol):
    r = rel(a, b)
    assert r < tol, f"relative error {r:.3e} >= {tol:.1e}"


def lstsq_with_intercept(X, Y):
    A = np.hstack([X.astype(np.float64), np.ones((X.shape[0], 1))])
    sol = np.linalg.lstsq(A, Y, rcond=None)[0]
    return sol[:-1].T, sol[-1]  # [N, C], [N]


# Float32 storage in Attributions limits agreement to ~1e-7 relative; compare the float64
# coefficients of the factorization where 1e-6 is not enough margin.
def coefs(acc, standardize, lam=None):
    w, b = factorize(acc, standardize=standardize).coefficients(lam)
    return w.T, b


# ------------------------------------------------------------------------------- OLS
@pytest.mark.parametrize("standardize", [False, True])
def test_ols_matches_lstsq_overdetermined(standardize):
    rng = np.random.default_rng(1)
    X, Y, _, _ = planted(rng, 400, 25, 6)
    acc = GramAccumulator.from_arrays(X, Y, chunk_size=97)
    w_ref, b_ref = lstsq_with_intercept(X, Y)
    w, b = coefs(acc, standardize)
    assert_rel(w, w_ref, 1e-6)
    assert_rel(b, b_ref, 1e-6)
    att = fit_ols(acc, standardize=standardize, components="fp")
    assert isinstance(att, Attributions)
    assert att.method == "coar-ols" and att.components == "fp"
    assert att.weights.shape == (6, 25) and att.bias.shape == (6,)
    assert_rel(att.weights, w_ref, 1e-6)
    assert_rel(att.bias, b_ref, 1e-6)
    # A perturbed reference must fail the same check (the tolerance is meaningful).
    assert rel(w, w_ref + 1e-4 * rng.normal(size=w_ref.shape)) > 1e-6


def test_ols_min_norm_underdetermined_raw():
    rng = np.random.default_rng(2)
    M, C, N = 30, 60, 5
    X, Y, _, _ = planted(rng, M, C, N, keep_prob=0.7)
    Xc = X - X.mean(0)
    Yc = Y - Y.mean(0)
    w_ref = np.linalg.lstsq(Xc, Yc, rcond=None)[0]  # [C, N], min norm
    b_ref = Y.mean(0) - X.mean(0) @ w_ref
    acc = GramAccumulator.from_arrays(X, Y)
    w, b = coefs(acc, standardize=False)
    assert_rel(w, w_ref.T, 1e-6)
    assert_rel(b, b_ref, 1e-6)
    # min-norm: the fit interpolates the training data
    assert np.abs(X @ w.T + b - Y).max() < 1e-8


def test_ols_min_norm_underdetermined_standardized_and_dual():
    rng = np.random.default_rng(3)
    M, C, N = 30, 60, 5
    X, Y, _, _ = planted(rng, M, C, N, keep_prob=0.7)
    X[:, 7] = True  # a constant column: zero variance -> weight 0
    mu, sd = X.mean(0), X.std(0)
    nz = sd > 0
    Z = np.zeros((M, C))
    Z[:, nz] = (X[:, nz] - mu[nz]) / sd[nz]
    beta = np.linalg.lstsq(Z, Y - Y.mean(0), rcond=None)[0]
    w_ref = np.where(nz[:, None], beta / np.where(nz, sd, 1)[:, None], 0.0)
    b_ref = Y.mean(0) - mu @ w_ref
    acc = GramAccumulator.from_arrays(X, Y)
    w, b = coefs(acc, standardize=True)
    assert_rel(w, w_ref.T, 1e-6)
    assert_rel(b, b_ref, 1e-6)
    assert np.all(w[:, 7] == 0)
    # standardized and raw min-norm solutions differ when M < C
    w_raw, _ = coefs(acc, standardize=False)
    assert rel(w_raw, w) > 1e-3
    # dual form == primal form, both standardizations
    for std in (True, False):
        d = fit_dual(X, Y, standardize=std, components="")
        p = fit_ols(acc, standardize=std, components="")
        assert d.method == "coar-ols"
        assert_rel(d.weights, p.weights, 1e-6)
        assert_rel(d.bias, p.bias, 1e-6)
    # dispatcher picks the dual form for M < C
    f = fit((X, Y), method="ols", standardize=True, components="")
    assert f.meta["solver"] == "dual-eigh"
    assert_rel(f.weights, w_ref.T, 1e-6)


def test_dual_ridge_equals_primal_ridge():
    rng = np.random.default_rng(4)
    X, Y, _, _ = planted(rng, 40, 70, 3)
    acc = GramAccumulator.from_arrays(X, Y)
    for std in (False, True):
        d = fit_dual(X, Y, lam=3.0, standardize=std, block=16, components="")
        p = fit_ridge(acc, 3.0, standardize=std, components="")
        assert d.method == "coar-ridge"
        assert_rel(d.weights, p.weights, 1e-6)
        assert_rel(d.bias, p.bias, 1e-6)


# ----------------------------------------------------------------------------- ridge
def test_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(5)
    for M, C in ((300, 20), (25, 50)):  # over- and under-determined
        X, Y, _, _ = planted(rng, M, C, 4)
        fac = factorize(GramAccumulator.from_arrays(X, Y), standardize=False)
        for lam in (0.1, 2.0, 50.0):
            sk = Ridge(alpha=lam, fit_intercept=True, solver="svd").fit(X.astype(float), Y)
            w, b = fac.coefficients(lam)
            assert_rel(w.T, sk.coef_, 1e-6)
            assert_rel(b, sk.intercept_, 1e-6)
            att = fit_ridge(fac, lam, standardize=False, components="")
            assert att.meta["lambda"] == [lam] * 4
            assert_rel(att.weights, sk.coef_, 1e-6)


def test_ridge_standardized_matches_sklearn_on_scaled_masks():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(6)
    X, Y, _, _ = planted(rng, 200, 15, 3, keep_prob=0.7)
    mu, sd = X.mean(0), X.std(0)
    sk = Ridge(alpha=5.0, solver="svd").fit((X - mu) / sd, Y)
    w, b = factorize(GramAccumulator.from_arrays(X, Y), standardize=True).coefficients(5.0)
    assert_rel(w.T, sk.coef_ / sd, 1e-6)
    assert_rel(b, sk.intercept_ - (sk.coef_ / sd) @ mu, 1e-6)


def test_gcv_scores_match_brute_force():
    rng = np.random.default_rng(7)
    M, C, N = 120, 20, 3
    X, Y, _, _ = planted(rng, M, C, N, noise=2.0)
    fac = factorize(GramAccumulator.from_arrays(X, Y), standardize=False)
    lams = np.array([0.0, 0.5, 5.0, 50.0])
    got = fac.gcv(lams)
    Xc = X - X.mean(0)
    Yc = Y - Y.mean(0)
    for li, lam in enumerate(lams):
        H = Xc @ np.linalg.solve(Xc.T @ Xc + lam * np.eye(C), Xc.T)  # slope hat matrix
        rss = ((Yc - H @ Yc) ** 2).sum(0)
        df = np.trace(H) + 1.0
        ref = rss / M / (1 - df / M) ** 2
        assert_rel(got[li], ref, 1e-8)


def test_gcv_selection_matches_sklearn_ridgecv():
    from sklearn.linear_model import RidgeCV

    rng = np.random.default_rng(0)
    M, C, N = 240, 30, 8
    X = rng.random((M, C)) < 0.8
    # very different signal-to-noise per example -> different best alphas
    W = rng.normal(size=(C, N)) * np.array([0.01, 0.03, 0.1, 0.3, 1, 3, 0.05, 0.5])
    Y = X @ W + rng.normal(size=(M, N)) + 2.0
    grid = np.logspace(-2, 4, 13)
    att = fit_ridge(GramAccumulator.from_arrays(X, Y, chunk_size=50), grid, select="gcv", standardize=False,
                    components="")
    assert att.method == "coar-ridge"
    chosen = np.array(att.meta["lambda"])
    # sklearn's efficient "gcv" mode is leave-one-out, which GCV approximates closely
    # for random masks (near-uniform leverage); on this planted problem they agree.
    sk = np.array([RidgeCV(alphas=grid, fit_intercept=True).fit(X.astype(float), Y[:, n]).alpha_ for n in range(N)])
    np.testing.assert_allclose(chosen, sk, rtol=1e-12)
    assert len(set(chosen.tolist())) >= 5  # a non-trivial, per-example choice
    # the returned weights are the ridge solutions at the chosen penalties
    fac = factorize(GramAccumulator.from_arrays(X, Y), standardize=False)
    for n in range(N):
        w, b = fac.coefficients(chosen[n])
        np.testing.assert_allclose(att.weights[n], w[:, n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("as_acc", [False, True])
def test_holdout_selection_is_brute_force_argmin(as_acc):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(8)
    C, N = 25, 6
    Xall, Yall, _, _ = planted(rng, 260, C, N, noise=3.0)
    X, Y, Xh, Yh = Xall[:160], Yall[:160], Xall[160:], Yall[160:]
    grid = np.array([0.01, 0.3, 3.0, 30.0, 300.0, 3000.0])
    acc = GramAccumulator.from_arrays(X, Y)
    hold = GramAccumulator.from_arrays(Xh, Yh) if as_acc else (Xh, Yh)
    for std in (False, True):
        fac = factorize(acc, standardize=std)
        mse = fac.holdout_mse(grid, hold)
        Xs = X.astype(float)
        Xhs = Xh.astype(float)
        if std:
            mu, sd = X.mean(0), X.std(0)
            Xs, Xhs = (X - mu) / sd, (Xh - mu) / sd
        brute = np.stack(
            [((Ridge(alpha=a, solver="svd").fit(Xs, Y).predict(Xhs) - Yh) ** 2).mean(0) for a in grid]
        )
        assert_rel(mse, brute, 1e-8)
        att = fit_ridge(acc, grid, select="holdout", holdout=hold, standardize=std, components="")
        np.testing.assert_array_equal(att.meta["lambda"], grid[np.argmin(brute, axis=0)])


# ------------------------------------------------------------------------- streaming
def test_streaming_chunks_and_merge_equal_one_shot():
    rng = np.random.default_rng(9)
    X, Y, _, _ = planted(rng, 500, 18, 4)
    Y = Y.astype(np.float32)  # the stores keep float16/float32 outputs
    one = GramAccumulator(18, 4).add(X, Y)
    a, b = GramAccumulator(18, 4), GramAccumulator(18, 4)
    cuts = [0, 1, 8, 50, 51, 200, 333, 500]
    for s, e in zip(cuts[:-1], cuts[1:]):
        (a if s < 200 else b).add(X[s:e].astype(np.uint8), Y[s:e])
    a.merge(b)
    assert a.m == one.m == 500
    np.testing.assert_array_equal(a.xtx, one.xtx)
    np.testing.assert_array_equal(a.sum_x, one.sum_x)
    np.testing.assert_array_equal(a.xtx, X.T.astype(np.int64) @ X.astype(np.int64))
    for k in ("sum_y", "xty", "sum_yy"):
        np.testing.assert_allclose(getattr(a, k), getattr(one, k), rtol=1e-12, atol=0)
    w1, b1 = factorize(one).coefficients()
    w2, b2 = factorize(a).coefficients()
    np.testing.assert_allclose(w2, w1, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b2, b1, rtol=1e-10, atol=1e-12)


def test_torch_inputs_and_cpu_device_agree():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    X, Y, _, _ = planted(rng, 120, 10, 3)
    ref = GramAccumulator.from_arrays(X, Y)
    acc = GramAccumulator(10, 3, device="cpu").add(torch.from_numpy(X), torch.from_numpy(Y).half())
    np.testing.assert_array_equal(acc.xtx, ref.xtx)
    w_ref, _ = factorize(ref).coefficients()
    w_dev, _ = factorize(GramAccumulator.from_arrays(X, Y), device="cpu").coefficients()
    np.testing.assert_allclose(w_dev, w_ref, rtol=1e-9, atol=1e-12)


# -------------------------------------------------------------------------- planted
def test_planted_noiseless_recovery():
    rng = np.random.default_rng(11)
    M, C, N = 600, 40, 5
    X, Y, W, b = planted(rng, M, C, N, noise=0.0)
    acc = GramAccumulator(C, N)
    for s in range(0, M, 128):
        acc.add(X[s : s + 128], Y[s : s + 128])
    w, bb = factorize(acc, standardize=True).coefficients()
    assert np.abs(w - W).max() < 1e-8
    assert np.abs(bb - b).max() < 1e-8
    att = fit_ols(acc, components="")
    fresh = masks(rng, 2000, C)
    pred, true = att.predict(fresh), fresh @ W + b
    for n in range(N):
        assert np.corrcoef(pred[:, n], true[:, n])[0, 1] > 0.999999


# ---------------------------------------------------------------------- validation
def test_bad_shapes_raise_shape_error():
    acc = GramAccumulator(5, 3)
    with pytest.raises(ShapeError, match=r"C=5.*\(4, 6\)"):
        acc.add(np.ones((4, 6), bool), np.zeros((4, 3)))
    with pytest.raises(ShapeError, match=r"N=3.*\(4, 2\)"):
        acc.add(np.ones((4, 5), bool), np.zeros((4, 2)))
    with pytest.raises(ShapeError, match=r"b=4.*\(3, 3\)"):
        acc.add(np.ones((4, 5), bool), np.zeros((3, 3)))
    with pytest.raises(ShapeError, match=r"\(4,\)"):
        acc.add(np.ones(4, bool), np.zeros((4, 3)))
    with pytest.raises(ShapeError, match=r"\(6, 3\).*\(5, 3\)"):
        acc.merge(GramAccumulator(6, 3))
    with pytest.raises(ShapeError, match=r"\(3, 4\)"):
        fit_dual(np.ones((3, 4), bool), np.zeros((5, 2)), components="")
    with pytest.raises(CoarError, match="binary"):
        acc.add(np.full((2, 5), 2), np.zeros((2, 3)))
    with pytest.raises(CoarError, match="at least 2"):
        fit_ols(GramAccumulator(5, 3), components="")
    assert acc.m == 0  # rejected batches leave no trace


def test_accumulator_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(12)
    X, Y, _, _ = planted(rng, 90, 7, 2)
    acc = GramAccumulator.from_arrays(X, Y)
    p = tmp_path / "sub" / "gram.npz"
    acc.save(p)
    assert p.exists() and not (tmp_path / "sub" / "gram.npz.tmp").exists()
    back = GramAccumulator.load(p)
    assert (back.m, back.n_components, back.n_examples) == (90, 7, 2)
    for k in ("sum_x", "xtx", "sum_y", "xty", "sum_yy"):
        np.testing.assert_array_equal(getattr(back, k), getattr(acc, k))
    # a loaded accumulator keeps streaming
    back.add(X[:10], Y[:10])
    assert back.m == 100
    with pytest.raises(StoreError):
        GramAccumulator.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(p.read_bytes()[:100])
    with pytest.raises(StoreError):
        GramAccumulator.load(bad)


def test_attributions_with_chosen_lambdas_roundtrip(tmp_path):
    rng = np.random.default_rng(13)
    X, Y, _, _ = planted(rng, 150, 10, 4, noise=2.0)
    att = fit_ridge(GramAccumulator.from_arrays(X, Y), [0.1, 10.0, 1000.0], components="")
    att.save(tmp_path / "a.npz")
    back = Attributions.load(tmp_path / "a.npz")
    assert back.method == "coar-ridge"
    assert back.meta["lambda"] == att.meta["lambda"]
    assert all(isinstance(v, float) for v in back.meta["lambda"])
    np.testing.assert_array_equal(back.weights, att.weights)


def test_memory_plan():
    p = memory_plan(100, 1000, 7)
    assert p["chosen"] == "dual"
    assert p["primal"] == {"gram": 1000**2 * 8, "xty": 1000 * 7 * 8, "eigvecs": 1000**2 * 8,
                           "total": 2 * 1000**2 * 8 + 1000 * 7 * 8}
    assert p["dual"] == {"kernel": 100**2 * 8, "masks": 100 * 1000, "eigvecs": 100**2 * 8,
                         "total": 2 * 100**2 * 8 + 100 * 1000}
    assert memory_plan(1000, 1000, 7)["chosen"] == "primal"
    assert memory_plan(5000, 1000, 7, dtype_bytes=4)["primal"]["gram"] == 1000**2 * 4
    vit = memory_plan(200_000, 82_944, 5_000)
    assert vit["chosen"] == "primal"
    assert vit["primal"]["gram"] == 55_037_657_088
    assert vit["dual"]["kernel"] == 320_000_000_000
    with pytest.raises(ShapeError):
        memory_plan(0, 10, 10)


def test_exact_alpha_masks_rank_deficient_direction():
    """Masks ablating exactly k components make sum_j keep_j constant, so w + c*1 fits as
    well as w: the cut-off must drop that null direction (min-norm), not amplify noise."""
    rng = np.random.default_rng(14)
    M, C, N, k = 300, 20, 3, 2
    X = np.ones((M, C), bool)
    np.put_along_axis(X, np.argsort(rng.random((M, C)), axis=1)[:, :k], False, axis=1)
    assert np.all(X.sum(1) == C - k)
    Y = X @ rng.normal(size=(C, N)) + 0.3 * rng.normal(size=(M, N))
    acc = GramAccumulator.from_arrays(X, Y)
    fac = factorize(acc, standardize=False)
    assert fac.rank == C - 1
    w_ref = np.linalg.lstsq(X - X.mean(0), Y - Y.mean(0), rcond=None)[0].T  # raw min-norm
    w, b = fac.coefficients()
    w = w.T  # [N, C]
    assert_rel(w, w_ref, 1e-6)
    assert np.abs(w.sum(1)).max() < 1e-8  # min-norm => orthogonal to the null vector 1
    # standardized min-norm is another least-squares solution: same fit, same w - mean(w)
    ws, bs = coefs(acc, standardize=True)
    assert_rel(ws - ws.mean(1, keepdims=True), w_ref - w_ref.mean(1, keepdims=True), 1e-6)
    fresh = np.ones((50, C), bool)
    np.put_along_axis(fresh, np.argsort(rng.random((50, C)), axis=1)[:, :k], False, axis=1)
    assert_rel(fresh @ ws.T + bs, fresh @ w.T + b, 1e-8)
