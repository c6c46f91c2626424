"""The device-resident Gram accumulator and the Cholesky solve of least squares and ridge.

The device path runs here on torch's CPU device through the same code as on a GPU; the ``cuda`` variants
repeat the properties on a GPU and are skipped without one."""
import numpy as np
import pytest

import coar.gram as gram
from coar.errors import CoarError, ShapeError
from coar.gram import GramAccumulator, SingularGram, factorize, solve_cholesky
from coar.regression import fit, fit_chunks, fit_ols, fit_ridge, memory_plan

torch = pytest.importorskip("torch")
EPS = np.finfo(np.float64).eps


def exact_alpha(rng, m, c, k):
    keep = np.ones((m, c), bool)
    np.put_along_axis(keep, np.argsort(rng.random((m, c)), axis=1)[:, :k], False, axis=1)
    return keep


def outputs(rng, keep, n, noise=0.3):
    c = keep.shape[1]
    return (keep @ rng.normal(size=(c, n)) + rng.normal(size=n) + noise * rng.normal(size=(keep.shape[0], n))
            ).astype(np.float32)


def case(name, rng, m=3000, c=200, n=50):
    """Realistic designs: exact-alpha masks; exact-alpha with a component always kept and one always ablated
    (constant columns, the masks still keep the same number each); Bernoulli masks (no null direction)."""
    if name == "exact":
        keep = exact_alpha(rng, m, c, c // 10)
    elif name == "constant":
        keep = np.ones((m, c), bool)
        keep[:, 2:] = exact_alpha(rng, m, c - 2, c // 10)
        keep[:, 1] = False
        assert len(set(keep.sum(1))) == 1
    else:
        keep = rng.random((m, c)) < 0.9
    return keep, outputs(rng, keep, n)


def lstsq_reference(keep, y, standardize, lam=0.0):
    """float64 reference: minimum-norm least squares (pinv via lstsq) or ridge, of the centred (standardized)
    masks, intercept unpenalized, constant columns weight 0."""
    X = keep.astype(np.float64)
    Y = y.astype(np.float64)
    xbar, ybar = X.mean(0), Y.mean(0)
    sd = X.std(0)
    scale = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0) if standardize else (sd > 0).astype(float)
    Z = (X - xbar) * scale
    if lam == 0.0:
        u = np.linalg.lstsq(Z, Y - ybar, rcond=1e-10)[0]
    else:
        u = np.linalg.solve(Z.T @ Z + lam * np.eye(Z.shape[1]), Z.T @ (Y - ybar))
    w = u * scale[:, None]
    return w, ybar - xbar @ w


def rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


# ------------------------------------------------------------------------------------------ accumulator
def xty_bound(keep, y):
    """A float64 sum of M terms errs by at most M * eps * sum |terms| (0/1 x float32 products are exact)."""
    return keep.shape[0] * EPS * (keep.astype(np.float64).T @ np.abs(y.astype(np.float64)))


@pytest.mark.parametrize("kind", ["bool+float32", "uint8+float16", "device tensors"])
def test_device_accumulator_equals_numpy_path(kind):
    rng = np.random.default_rng(1)
    keep, y = case("bernoulli", rng, m=1500, c=60, n=7)
    if kind == "uint8+float16":
        keep, y = keep.astype(np.uint8), y.astype(np.float16)
    ref = GramAccumulator.from_arrays(keep, y, chunk_size=400)
    acc = GramAccumulator(60, 7, device="cpu")
    for s in range(0, 1500, 400):
        kb, yb = keep[s : s + 400], y[s : s + 400]
        if kind == "device tensors":
            kb, yb = torch.from_numpy(kb), torch.from_numpy(yb)
        acc.add(kb, yb)
    assert acc.m == ref.m == 1500
    t = acc.tensors()
    assert t["xtx"].dtype == torch.int64 and t["xty"].dtype == torch.float64 and t["xtx"].device.type == "cpu"
    np.testing.assert_array_equal(acc.xtx, keep.T.astype(np.int64) @ keep.astype(np.int64))  # exact counts
    np.testing.assert_array_equal(acc.xtx, ref.xtx)
    np.testing.assert_array_equal(acc.sum_x, ref.sum_x)
    y64 = y.astype(np.float64)
    exact_xty = keep.astype(np.float64).T @ y64  # float64 reference
    assert np.all(np.abs(acc.xty - exact_xty) <= xty_bound(keep, y))
    np.testing.assert_allclose(acc.sum_y, y64.sum(0), rtol=1e-12)
    np.testing.assert_allclose(acc.sum_yy, (y64 * y64).sum(0), rtol=1e-12)
    with pytest.raises(ValueError):  # host copies are read-only: writing to them would not reach the device
        acc.xtx[0, 0] = 1


def test_numpy_path_is_unchanged():
    """device=None: the statistics are the float64 numpy sums chunk by chunk, bitwise."""
    rng = np.random.default_rng(2)
    keep, y = case("exact", rng, m=900, c=40, n=5)
    acc = GramAccumulator.from_arrays(keep, y, chunk_size=256)
    xtx, xty = np.zeros((40, 40), np.int64), np.zeros((40, 5))
    sum_y, sum_yy = np.zeros(5), np.zeros(5)
    for s in range(0, 900, 256):
        kb, yb = keep[s : s + 256], y[s : s + 256].astype(np.float64)
        kf = kb.astype(np.float32)
        xtx += np.rint(kf.T @ kf).astype(np.int64)
        xty += kb.astype(np.float64).T @ yb
        sum_y += yb.sum(0)
        sum_yy += np.einsum("ij,ij->j", yb, yb)
    for name, want in (("xtx", xtx), ("xty", xty), ("sum_y", sum_y), ("sum_yy", sum_yy)):
        np.testing.assert_array_equal(getattr(acc, name), want)
    assert isinstance(acc.xty, np.ndarray) and acc.xty.flags.writeable


def test_host_inputs_are_copied_in_their_stored_dtype(monkeypatch):
    seen = []
    real = gram._host_to_device

    def spy(array, dev):
        seen.append(array.dtype)
        return real(array, dev)

    monkeypatch.setattr(gram, "_host_to_device", spy)
    rng = np.random.default_rng(3)
    keep, y = case("bernoulli", rng, m=50, c=8, n=3)
    acc = GramAccumulator(8, 3, device="cpu").add(keep, y)
    acc.add(keep.astype(np.uint8), y.astype(np.float16))
    assert seen == [np.dtype(bool), np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.float16)]
    seen.clear()
    acc.add(torch.from_numpy(keep), torch.from_numpy(y))  # tensors: no host array at all
    assert seen == []
    assert acc.m == 150


def test_device_path_refuses_bad_input_naming_it():
    acc = GramAccumulator(4, 3, device="cpu")
    keep = np.ones((5, 4), bool)
    y = np.zeros((5, 3), np.float32)
    y[2, 1] = np.nan
    with pytest.raises(CoarError, match=r"outputs y contain NaN or inf \(1 of 15 values; the first at mask 2, "
                                        r"example 1, is nan\)"):
        acc.add(keep, y)
    with pytest.raises(CoarError, match="outputs y contain NaN or inf"):
        acc.add(torch.from_numpy(keep), torch.full((5, 3), float("inf")))
    with pytest.raises(CoarError, match="binary"):
        acc.add(np.full((5, 4), 2, np.uint8), np.zeros((5, 3), np.float32))
    with pytest.raises(ShapeError, match=r"keep masks must have shape \[b, C=4\]"):
        acc.add(np.ones((5, 3), bool), np.zeros((5, 3)))
    with pytest.raises(ShapeError, match=r"outputs y must have shape \[b=5, N=3\]"):
        acc.add(keep, np.zeros((4, 3)))
    with pytest.raises(CoarError, match="must hold numbers"):
        acc.add(keep, np.full((5, 3), "a"))
    assert acc.m == 0 and not acc.xtx.any() and not acc.xty.any()  # nothing was added


def test_device_accumulator_save_load_merge(tmp_path):
    rng = np.random.default_rng(4)
    keep, y = case("exact", rng, m=600, c=30, n=4)
    ref = GramAccumulator.from_arrays(keep, y)
    a = GramAccumulator.from_arrays(keep[:250], y[:250], device="cpu")
    a.merge(GramAccumulator.from_arrays(keep[250:400], y[250:400]))  # a host one into a device one
    a.merge(GramAccumulator.from_arrays(keep[400:], y[400:], device="cpu"))
    np.testing.assert_array_equal(a.xtx, ref.xtx)
    np.testing.assert_allclose(a.xty, ref.xty, rtol=1e-13, atol=1e-11)
    assert a.problem() is None
    a.save(tmp_path / "g.npz")
    b = GramAccumulator.load(tmp_path / "g.npz", device="cpu")
    assert b._dev is not None and b.m == 600
    for name in ("sum_x", "xtx", "sum_y", "xty", "sum_yy"):
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
    host = GramAccumulator(30, 4).merge(b)  # a device one into a host one
    np.testing.assert_array_equal(host.xtx, ref.xtx)
    for x, r in zip(b.centered(), ref.centered()):
        np.testing.assert_allclose(x, r, rtol=1e-12, atol=1e-10)


def test_factorize_on_device_accumulator_equals_host():
    rng = np.random.default_rng(5)
    keep, y = case("exact", rng, m=1200, c=50, n=6)
    fh = factorize(GramAccumulator.from_arrays(keep, y))
    acc = GramAccumulator.from_arrays(keep, y, device="cpu")
    fd = factorize(acc)
    assert fd.device == "cpu" and fd.rank == fh.rank == 49
    np.testing.assert_allclose(fd.evals, fh.evals, rtol=1e-11)
    for lam in (None, 100.0):
        np.testing.assert_allclose(fd.coefficients(lam)[0], fh.coefficients(lam)[0], rtol=1e-9, atol=1e-12)
    hold = GramAccumulator.from_arrays(keep[:300], y[:300], device="cpu")  # held-out statistics from a device
    np.testing.assert_allclose(fd.holdout_mse([1.0, 10.0], hold), fh.holdout_mse([1.0, 10.0], hold), rtol=1e-9)


# ----------------------------------------------------------------------------------------- Cholesky
@pytest.mark.parametrize("design", ["exact", "constant", "bernoulli"])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_cholesky_ols_equals_eigh_and_minimum_norm_lstsq(design, standardize, device):
    rng = np.random.default_rng(6)
    keep, y = case(design, rng)
    acc = GramAccumulator.from_arrays(keep, y, device=device)
    w, b, meta = solve_cholesky(acc, None, standardize)  # float64 (attributions are stored in float32)
    w_e, b_e = factorize(acc, standardize).coefficients(None)
    assert rel(w, w_e) < 1e-8 and rel(b, b_e) < 1e-8
    w_ref, b_ref = lstsq_reference(keep, y, standardize)
    assert rel(w, w_ref) < 1e-8 and rel(b, b_ref) < 1e-8
    var = keep.var(0)
    if design == "constant":
        assert not w[:2].any()  # columns that never vary: weight 0
    if design != "bernoulli":  # minimum norm: orthogonal to the exact-alpha direction in the solved coordinates
        dot = (w * (var if standardize else (var > 0))[:, None]).sum(0)
        assert np.abs(dot).max() < 1e-10 * (np.abs(w) * var[:, None]).sum(0).max()
    rank = {"exact": 199, "constant": 197, "bernoulli": 200}[design]
    chol = fit_ols(acc, standardize, components="")
    eigh = fit_ols(acc, standardize, components="", solver="eigh")
    assert meta["solver"] == chol.meta["solver"] == "primal-cholesky" and eigh.meta["solver"] == "primal-eigh"
    assert meta["rank"] == chol.meta["rank"] == eigh.meta["rank"] == rank
    np.testing.assert_allclose(chol.weights, w.T.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_allclose(chol.weights, eigh.weights, rtol=1e-6, atol=1e-6 * np.abs(w).max())


@pytest.mark.parametrize("device", [None, "cpu"])
def test_cholesky_falls_back_to_eigh_when_rank_deficient(device):
    rng = np.random.default_rng(7)
    keep, y = case("bernoulli", rng, m=800, c=40, n=5)
    keep[:, 7] = keep[:, 8]  # two components always ablated together: singular beyond any exact-alpha direction
    y = outputs(rng, keep, 5)
    acc = GramAccumulator.from_arrays(keep, y, device=device)
    with pytest.raises(SingularGram, match="near-singular|not positive definite"):
        solve_cholesky(acc)
    att = fit_ols(acc, components="")
    assert att.meta["solver"] == "primal-eigh (Cholesky fallback)" and att.meta["cholesky_fallback"]
    assert att.meta["rank"] == 39
    forced = fit_ols(acc, components="", solver="eigh")
    np.testing.assert_array_equal(att.weights, forced.weights)
    w_ref, _ = lstsq_reference(keep, y, True)
    assert rel(factorize(acc).coefficients(None)[0], w_ref) < 1e-8
    few = GramAccumulator.from_arrays(keep[:30], y[:30], device=device)  # fewer masks than components
    assert fit_ols(few, components="").meta["solver"] == "primal-eigh (Cholesky fallback)"
    # a ridge penalty makes the matrix positive definite: no fallback
    assert fit_ridge(few, 5.0, components="").meta["solver"] == "primal-cholesky"


@pytest.mark.parametrize("design", ["exact", "bernoulli"])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_cholesky_ridge_at_fixed_lambda_equals_eigh(design, device):
    rng = np.random.default_rng(8)
    keep, y = case(design, rng, m=1500, c=120, n=20)
    acc = GramAccumulator.from_arrays(keep, y, device=device)
    for standardize in (True, False):
        w, b, _ = solve_cholesky(acc, 40.0, standardize)
        w_e, b_e = factorize(acc, standardize).coefficients(40.0)
        assert rel(w, w_e) < 1e-10 and rel(b, b_e) < 1e-10
        w_ref, b_ref = lstsq_reference(keep, y, standardize, lam=40.0)
        assert rel(w, w_ref) < 1e-10 and rel(b, b_ref) < 1e-10
        chol = fit_ridge(acc, 40.0, standardize=standardize, components="")
        eigh = fit_ridge(acc, 40.0, standardize=standardize, components="", solver="eigh")
        assert chol.meta["solver"] == "primal-cholesky" and chol.meta["select"] == "fixed"
        assert eigh.meta["solver"] == "primal-eigh" and chol.meta["lambda"] == eigh.meta["lambda"] == [40.0] * 20
        np.testing.assert_array_equal(chol.weights, w.T.astype(np.float32))
    lam = rng.choice([0.0, 3.0, 300.0], size=20)  # per-example penalties: one factorisation each
    w, b, _ = solve_cholesky(acc, lam)
    w_e, b_e = factorize(acc).coefficients(lam)
    assert rel(w, w_e) < 1e-8 and rel(b, b_e) < 1e-8
    with pytest.raises(CoarError, match="finite and >= 0"):
        fit_ridge(acc, -1.0, components="")


def test_fit_chunks_and_fit_use_cholesky_on_the_device():
    rng = np.random.default_rng(9)
    keep, y = case("exact", rng, m=2000, c=100, n=10)
    chunks = [(keep[s : s + 300], y[s : s + 300]) for s in range(0, 2000, 300)]
    host = fit_chunks(iter(chunks), 2000, 100, 10, components="")
    dev = fit_chunks(iter(chunks), 2000, 100, 10, components="", device="cpu")
    eigh = fit_chunks(iter(chunks), 2000, 100, 10, components="", solver="eigh")
    assert host.meta["solver"] == dev.meta["solver"] == "primal-cholesky" and eigh.meta["solver"] == "primal-eigh"
    np.testing.assert_allclose(dev.weights, host.weights, rtol=1e-6, atol=1e-6)  # float32 attributions
    np.testing.assert_allclose(eigh.weights, host.weights, rtol=1e-6, atol=1e-6)
    ridge = fit_chunks(iter(chunks), 2000, 100, 10, components="", method="ridge", lambdas=[10.0])
    assert ridge.meta["solver"] == "primal-cholesky"
    assert fit((keep, y), "ols", components="").meta["solver"] == "primal-cholesky"
    assert fit((keep, y), "ols", components="", solver="eigh").meta["solver"] == "primal-eigh"
    with pytest.raises(CoarError, match="solver must be one of"):
        fit((keep, y), "ols", components="", solver="qr")
    with pytest.raises(CoarError, match="applies to methods ols and ridge"):
        fit((keep, y), "lowrank", components="", solver="eigh")


def test_memory_plan_reports_the_solver():
    p = memory_plan(100_000, 22_720, 50_000)
    assert p["solver"] == "primal-cholesky" and p["chosen"] == "primal"
    assert p["cholesky"] == {"gram": 22_720**2 * 8, "xty": 22_720 * 50_000 * 8, "factor": 22_720**2 * 8,
                             "total": 2 * 22_720**2 * 8 + 22_720 * 50_000 * 8}
    assert p["accumulator"]["xtx"] == 22_720**2 * 8 and p["accumulator"]["chunk_gram"] == 22_720**2 * 4
    assert memory_plan(100_000, 22_720, 50_000, solver="eigh")["solver"] == "primal-eigh"
    assert memory_plan(100, 1000, 7)["solver"] == "dual-eigh"
    with pytest.raises(CoarError, match="solver must be one of"):
        memory_plan(10, 10, 10, solver="lu")


# ------------------------------------------------------------------------------------------------- GPU
@pytest.mark.cuda
@pytest.mark.parametrize("tf32", [False, True])
def test_cuda_accumulator_equals_numpy_and_cholesky_equals_eigh(tf32):
    rng = np.random.default_rng(10)
    keep, y = case("exact", rng)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32  # the 0/1 Gram is exact either way; X^T Y is float64
    try:
        acc = GramAccumulator(200, 50, device="cuda")
        for s in range(0, 3000, 700):
            acc.add(torch.from_numpy(keep[s : s + 700]).cuda(), y[s : s + 700])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert acc.tensors()["xtx"].device.type == "cuda"
    np.testing.assert_array_equal(acc.xtx, keep.T.astype(np.int64) @ keep.astype(np.int64))
    assert np.all(np.abs(acc.xty - keep.astype(np.float64).T @ y.astype(np.float64)) <= xty_bound(keep, y))
    w, b, meta = solve_cholesky(acc)
    w_e, b_e = factorize(GramAccumulator.from_arrays(keep, y)).coefficients(None)
    assert meta["solver"] == fit_ols(acc, components="").meta["solver"] == "primal-cholesky"
    assert rel(w, w_e) < 1e-8 and rel(b, b_e) < 1e-8


@pytest.mark.cuda
def test_cuda_cholesky_fallback_and_nonfinite():
    rng = np.random.default_rng(11)
    keep, y = case("bernoulli", rng, m=800, c=40, n=5)
    keep[:, 7] = keep[:, 8]
    acc = GramAccumulator.from_arrays(keep, outputs(rng, keep, 5), device="cuda")
    assert fit_ols(acc, components="").meta["solver"] == "primal-eigh (Cholesky fallback)"
    bad = torch.zeros((3, 5), device="cuda")
    bad[1, 4] = float("nan")
    with pytest.raises(CoarError, match="first at mask 1, example 4"):
        acc.add(torch.ones((3, 40), dtype=torch.bool, device="cuda"), bad)


def test_the_host_cholesky_solve_needs_no_scipy(monkeypatch):
    """scipy comes with the workflow extra, not with the engine: without it the host solve runs in torch (float64,
    on the CPU) and gives the same fit."""
    import sys

    from coar.sampling import sample_masks

    rng = np.random.default_rng(0)
    X = sample_masks(50, 600, 0.1, seed=1)
    Y = (X @ rng.normal(size=(50, 7)) + 0.1 * rng.normal(size=(600, 7))).astype(np.float32)
    acc = GramAccumulator.from_arrays(X, Y)
    with_scipy = fit_ols(acc, components="")
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy.linalg` now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.linalg", None)
    without = fit_ols(acc, components="")
    assert without.meta["solver"] == with_scipy.meta["solver"] == "primal-cholesky"
    np.testing.assert_allclose(without.weights, with_scipy.weights, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(without.bias, with_scipy.bias, rtol=1e-6, atol=1e-7)
