"""The estimators of coar.estimators: exact where they should be (prior = truth, lambda -> 0 = least squares
against numpy lstsq), better than least squares at few masks where their model holds (scaled prior, low-rank
attribution matrix, sparse attributions), hyperparameters chosen on training masks only, bad input refused."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from coar import estimators
from coar.attributions import Attributions
from coar.errors import CoarError, ShapeError
from coar.regression import GramAccumulator, factorize, fit, fit_chunks



def exact_masks(rng, m, c, k):
    """Every mask ablates exactly k of c components (the paper's design): the all-ones direction is null."""
    keep = np.ones((m, c), dtype=bool)
    for i in range(m):
        keep[i, rng.choice(c, k, replace=False)] = False
    return keep


def lstsq_with_intercept(X, Y):
    A = np.hstack([X.astype(np.float64), np.ones((X.shape[0], 1))])
    sol = np.linalg.lstsq(A, Y, rcond=None)[0]
    return sol[:-1].T, sol[-1]


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def centred(w):
    """Attributions up to the all-ones direction (confounded with the intercept under exact-alpha masks)."""
    w = np.asarray(w, np.float64)
    return w - w.mean(axis=-1, keepdims=True)


def attr(w, b=None, name="prior", components=""):
    w = np.asarray(w)
    return Attributions(w, np.zeros(w.shape[0]) if b is None else b, name, components)


# ------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("select", ["gcv", "holdout"])
@pytest.mark.parametrize("design", ["bernoulli", "exact"])
def test_prior_equal_to_truth_returns_truth(select, design):
    rng = np.random.default_rng(0)
    m, c, n = 30, 40, 8  # fewer masks than components: least squares alone cannot find the truth
    X = rng.random((m, c)) < 0.9 if design == "bernoulli" else exact_masks(rng, m, c, 4)
    W, b = rng.normal(size=(n, c)), rng.normal(size=n)
    Y = X @ W.T + b
    for lambdas in (None, [1e-6], [1e3]):
        a = fit((X, Y), "prior", prior=attr(3.0 * W), select=select, lambdas=lambdas, components="")
        assert np.abs(a.weights - W).max() < 1e-5 * np.abs(W).max()
        assert np.abs(a.bias - b).max() < 1e-4
        np.testing.assert_allclose(a.meta["scale"], 1 / 3, rtol=1e-6)  # s fitted: the prior was 3x the truth
    ols = fit((X, Y), "ols", components="")
    assert rel(centred(ols.weights), centred(W)) > 0.1  # the comparison has teeth


def test_lambda_to_zero_is_least_squares():
    rng = np.random.default_rng(1)
    m, c, n = 300, 30, 6
    X = rng.random((m, c)) < 0.85
    Y = X @ rng.normal(size=(c, n)) + rng.normal(size=n) + 0.5 * rng.normal(size=(m, n))
    W_ls, b_ls = lstsq_with_intercept(X, Y)
    junk = attr(rng.normal(size=(n, c)))
    tol = 2e-6 * np.abs(W_ls).max()
    for a in (fit((X, Y), "prior", prior=junk, lambdas=[0.0], components=""),
              fit((X, Y), "prior", prior=junk, lambdas=[0.0], select="holdout", components=""),
              fit((X, Y), "lowrank", lambdas=[0.0], components=""),
              fit((X, Y), "lasso", ratios=[0.0], tol=1e-12, max_iter=5000, components="")):
        assert np.abs(a.weights - W_ls).max() < tol, a.method
        assert np.abs(a.bias - b_ls).max() < 1e-5 * max(1.0, np.abs(b_ls).max()), a.method
    # small penalties approach least squares continuously
    errs = [rel(fit((X, Y), "prior", prior=junk, lambdas=[lam * m], components="").weights, W_ls)
            for lam in (1e-1, 1e-3, 1e-5)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4


@pytest.mark.parametrize("l1_ratio,design", [(1.0, "bernoulli"), (0.5, "bernoulli"), (1.0, "exact")])
def test_lasso_meets_its_optimality_conditions(l1_ratio, design):
    """The lasso / elastic-net solution satisfies the KKT conditions of its objective in the standardized
    coordinates, checked in float64 from the masks themselves: for u_j != 0, (Z^T (y_c - Z u))_j - l2 u_j =
    l1 sign(u_j); for u_j = 0, |(Z^T (y_c - Z u))_j| <= l1. Also for exact-alpha masks, whose Gram is singular
    (the kept count is constant)."""
    rng = np.random.default_rng(11)
    m, c, n = 400, 40, 8
    if design == "exact":
        X = np.ones((m, c), dtype=bool)
        for row in X:
            row[rng.choice(c, 6, replace=False)] = False
    else:
        X = rng.random((m, c)) < 0.85
    W = rng.normal(size=(n, c)) * (rng.random((n, c)) < 0.3)
    Y = X @ W.T + 0.3 * rng.normal(size=(m, n))
    a = fit((X, Y), "lasso", l1_ratio=l1_ratio, ratios=np.logspace(0, -3, 7), tol=1e-10, max_iter=20000,
            components="")
    Z = (X - X.mean(0)) / X.std(0)
    yc = Y - Y.mean(0)
    u = a.weights.T * X.std(0)[:, None]
    lam = np.asarray(a.meta["lambda"])
    l1, l2 = lam * l1_ratio, lam * (1 - l1_ratio)
    g = Z.T @ (yc - Z @ u) - l2 * u
    scale = np.sqrt((yc ** 2).sum(0)) * np.sqrt(m)  # |Z^T y_c| is at most this
    on = u != 0
    assert on.any() and (~on).any()  # sparse but not empty: both conditions are tested
    np.testing.assert_array_less(np.abs(g - l1 * np.sign(u))[on] / np.broadcast_to(scale, u.shape)[on], 1e-6)
    np.testing.assert_array_less((np.abs(g) - l1)[~on] / np.broadcast_to(scale, u.shape)[~on], 1e-6)
    # the intercept is the unpenalized one
    np.testing.assert_allclose(a.bias, Y.mean(0) - X.mean(0) @ a.weights.T, atol=1e-5)  # stored in float32


def test_prior_gcv_degrees_of_freedom_are_the_smoother_trace():
    """GCV's df of the scaled-prior fit is the trace of its hat matrix, built column by column (y = e_i)."""
    rng = np.random.default_rng(2)
    m, c = 50, 20
    X = rng.random((m, c)) < 0.8
    u0 = rng.normal(size=c)
    prior = attr(np.tile(u0, (m, 1)))
    lam = 7.0
    hat = fit((X, np.eye(m)), "prior", prior=prior, lambdas=[lam], components="").predict(X)  # [m, m]
    fac = factorize(GramAccumulator.from_arrays(X, np.eye(m)))
    p, nul = estimators._prior_coords(fac, np.asarray(prior.weights, np.float64))
    _, _, _, df = estimators._prior_solve(fac, p, nul, lam)
    np.testing.assert_allclose(df + 1.0, np.trace(hat), rtol=1e-6)


# --------------------------------------------------------- better than OLS at few masks
def planted_lowrank(rng, m, c, n, rank, noise):
    W = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, c)) + 0.3
    X = rng.random((m, c)) < 0.9
    Y = X @ W.T + 0.5 + noise * rng.normal(size=(m, n))
    return X, Y, W


def test_lowrank_recovers_planted_low_rank_attributions_better_than_ols():
    rng = np.random.default_rng(3)
    X, Y, W = planted_lowrank(rng, m=70, c=50, n=120, rank=3, noise=1.0)
    ols = fit((X, Y), "ols", components="")
    low = fit((X, Y), "lowrank", components="")
    e_ols, e_low = rel(ols.weights, W), rel(low.weights, W)
    assert e_low < 0.6 * e_ols, (e_low, e_ols)
    assert 2 <= low.meta["rank"] <= 8
    held = fit((X, Y), "lowrank", select="holdout", components="")
    assert rel(held.weights, W) < 0.6 * e_ols
    # and it does not cost accuracy where there are plenty of masks
    X, Y, W = planted_lowrank(rng, m=800, c=50, n=120, rank=3, noise=1.0)
    e_ols = rel(fit((X, Y), "ols", components="").weights, W)
    assert rel(fit((X, Y), "lowrank", components="").weights, W) <= 1.05 * e_ols


def test_noisy_prior_helps_and_lasso_finds_sparse_attributions():
    rng = np.random.default_rng(4)
    m, c, n = 60, 50, 20
    X = rng.random((m, c)) < 0.9
    W = np.where(rng.random((n, c)) < 0.1, rng.normal(size=(n, c)) * 3, 0.0)
    Y = X @ W.T + rng.normal(size=(m, n))
    e_ols = rel(fit((X, Y), "ols", components="").weights, W)
    noisy = attr(0.5 * (W + 0.3 * rng.normal(size=W.shape)))
    assert rel(fit((X, Y), "prior", prior=noisy, components="").weights, W) < 0.5 * e_ols
    lasso = fit((X, Y), "lasso", components="")
    assert rel(lasso.weights, W) < 0.6 * e_ols
    assert np.median(lasso.meta["nonzero"]) < 0.5 * c
    enet = fit((X, Y), "lasso", l1_ratio=0.5, ratios=np.logspace(0, -2, 5), components="")
    assert rel(enet.weights, W) < e_ols


# ----------------------------------------------------------------- selection data
def test_holdout_selection_is_the_argmin_on_the_held_out_training_masks():
    """Instrumented: the chosen penalty is the one a brute-force refit on the first 80% of the training masks
    scores best on the last 20% (solved directly with numpy, no shared factorisation)."""
    rng = np.random.default_rng(5)
    m, c, n = 100, 30, 10
    X = rng.random((m, c)) < 0.9
    W = rng.normal(size=(n, c))
    Y = X @ W.T + 2.0 * rng.normal(size=(m, n))
    prior = attr(W + rng.normal(size=W.shape))
    lams = [0.5, 5.0, 50.0, 500.0]
    a = fit((X, Y), "prior", prior=prior, lambdas=lams, select="holdout", holdout_fraction=0.2, components="")
    Xf, Yf, Xh, Yh = X[:80].astype(float), Y[:80], X[80:].astype(float), Y[80:]
    mu, sd = Xf.mean(0), Xf.std(0)
    Zf, Zh = (Xf - mu) / sd, (Xh - mu) / sd
    expected = []
    for z in range(n):
        yc = Yf[:, z] - Yf[:, z].mean()
        u0 = prior.weights[z].astype(float) * sd
        scores = []
        for lam in lams:
            # joint least squares in (u, s): [Z 0; sqrt(lam) I, -sqrt(lam) u0] [u; s] ~ [yc; 0]
            A = np.block([[Zf, np.zeros((80, 1))], [np.sqrt(lam) * np.eye(c), -np.sqrt(lam) * u0[:, None]]])
            u = np.linalg.lstsq(A, np.concatenate([yc, np.zeros(c)]), rcond=None)[0][:c]
            scores.append(np.mean((Yh[:, z] - Yf[:, z].mean() - Zh @ u) ** 2))
        expected.append(lams[int(np.argmin(scores))] * m / 80)
    np.testing.assert_allclose(a.meta["lambda"], expected)
    assert len(set(expected)) > 1  # the selection is per example and not trivial


def test_benchmark_never_chooses_on_evaluation_masks():
    """The efficiency benchmark's fits are the same whatever the evaluation masks hold: with adversarial
    evaluation outputs (reversed), the correlations change sign and every fit stays bitwise the same."""
    from coar.paper.efficiency import run_setup

    rng = np.random.default_rng(6)
    m, c, n = 160, 24, 12
    X, Y, W = planted_lowrank(rng, m, c, n, rank=2, noise=0.5)
    Xt = rng.random((80, c)) < 0.9
    Yt = Xt @ W.T + 0.5 + 0.5 * rng.normal(size=(80, n))
    priors = {"gp": attr(W + rng.normal(size=W.shape), name="gp")}
    fits_a, fits_b = {}, {}
    rows_a = run_setup("T", (X, Y), {0.1: (Xt, Yt)}, priors, attributions=fits_a)
    rows_b = run_setup("T", (X, Y), {0.1: (Xt, -Yt)}, priors, attributions=fits_b)
    assert fits_a.keys() == fits_b.keys() and len(fits_a) >= 6 * 5
    for key in fits_a:
        np.testing.assert_array_equal(fits_a[key].weights, fits_b[key].weights)
        assert fits_a[key].meta.get("lambda") == fits_b[key].meta.get("lambda")
    for ra, rb in zip(rows_a, rows_b):
        assert ra["mean_correlation"] == pytest.approx(-rb["mean_correlation"])
    assert {r["estimator"] for r in rows_a} >= {"ols", "ridge", "prior-gp", "lowrank", "lasso", "gp alone"}


def test_streaming_split_equals_the_array_split():
    rng = np.random.default_rng(7)
    X, Y, _ = planted_lowrank(rng, m=90, c=20, n=15, rank=2, noise=0.3)
    chunks = [(X[i:i + 25], Y[i:i + 25]) for i in range(0, 90, 25)]
    for method, kw in (("lowrank", {}), ("lowrank", {"select": "holdout"}), ("lasso", {}),
                       ("prior", {"prior": attr(np.ones((15, 20))), "select": "holdout"})):
        a = fit((X, Y), method, components="", **kw)
        b = fit_chunks(iter(chunks), 90, 20, 15, components="", method=method, lambdas=None, **kw)
        np.testing.assert_allclose(b.weights, a.weights, rtol=1e-4, atol=1e-5 * np.abs(a.weights).max())
        assert a.meta["lambda"] == pytest.approx(b.meta["lambda"])


# ------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_by_name():
    rng = np.random.default_rng(8)
    X = rng.random((40, 10)) < 0.9
    Y = rng.normal(size=(40, 5))
    with pytest.raises(CoarError, match="regression method must be one of .*'bayes'"):
        fit((X, Y), "bayes", components="")
    with pytest.raises(CoarError, match="needs prior="):
        fit((X, Y), "prior", components="")
    with pytest.raises(ShapeError, match="prior .* has 11 components, the masks have 10"):
        fit((X, Y), "prior", prior=attr(np.zeros((5, 11))), components="")
    with pytest.raises(ShapeError, match="prior .* covers 4 examples, the outputs cover 5"):
        fit((X, Y), "prior", prior=attr(np.zeros((4, 10))), components="")
    with pytest.raises(CoarError, match="component set abc.*masks on def"):
        fit((X, Y), "prior", prior=attr(np.zeros((5, 10)), components="abc"), components="def")
    with pytest.raises(CoarError, match="non-finite"):
        fit((X, Y), "prior", prior=attr(np.full((5, 10), np.nan)), components="")
    with pytest.raises(CoarError, match="select must be"):
        fit((X, Y), "prior", prior=attr(np.zeros((5, 10))), select="cv", components="")
    with pytest.raises(CoarError, match="a single accumulator cannot be split"):
        fit(GramAccumulator.from_arrays(X, Y), "lowrank", select="holdout", components="")
    with pytest.raises(CoarError, match="couplings must be"):
        fit((X, Y), "lowrank", couplings=[1.5], components="")
    with pytest.raises(CoarError, match="ranks must be"):
        fit((X, Y), "lowrank", ranks=[-1], components="")
    with pytest.raises(CoarError, match="holdout_fraction"):
        fit((X, Y), "lasso", holdout_fraction=1.5, components="")
    with pytest.raises(CoarError, match="l1_ratio"):
        fit((X, Y), "lasso", l1_ratio=0.0, components="")
    with pytest.raises(CoarError, match="not lambdas"):
        fit((X, Y), "lasso", lambdas=[1.0], components="")
    with pytest.raises(CoarError, match="penalties"):
        fit((X, Y), "lowrank", lambdas=[-1.0], components="")
    with pytest.raises(CoarError, match="do not apply to method 'ols'"):
        fit_chunks(iter([(X, Y)]), 40, 10, 5, components="", method="ols", ranks=[1])


# ------------------------------------------------------------------ command line
def planted_stores(tmp_path, W, b, m=150, alpha=0.2):
    from coar.store import ShardStore, run_shard

    n, c = W.shape
    paths = []
    for shard in range(2):
        meta = {"model_fingerprint": "model-x", "components_fingerprint": "comps-x", "examples_fingerprint": "ex-x",
                "n_components": c, "n_examples": n, "m": m, "alpha": alpha, "seed": 0, "shard": shard,
                "output_fn": "margin", "dtype": "float32"}
        store = ShardStore.create_or_open(tmp_path / f"s{shard}", meta)
        run_shard(store, lambda k: k.astype(np.float64) @ W.T + b, masks_per_call=50, progress=False)
        paths.append(str(tmp_path / f"s{shard}"))
    return paths


def test_cli_fits_every_method_and_refuses_bad_priors(tmp_path, capsys):
    from coar.cli import main

    rng = np.random.default_rng(9)
    n, c = 12, 30
    W, b = rng.normal(size=(n, c)), rng.normal(size=n)
    stores = planted_stores(tmp_path, W, b)
    Attributions(2.0 * W, np.zeros(n), "loo", "comps-x").save(tmp_path / "prior.npz")
    out = str(tmp_path / "fit.npz")
    assert main(["fit", "--stores", *stores, "--method", "prior", "--prior", str(tmp_path / "prior.npz"),
                 "--out", out]) == 0
    a = Attributions.load(out)
    np.testing.assert_allclose(a.weights, W, atol=1e-4 * np.abs(W).max())  # noise-free, prior = 2 x truth
    assert a.meta["prior"] == "loo" and a.meta["provenance"]["examples_fingerprint"] == "ex-x"
    for extra in (["--method", "lowrank", "--ranks", "0,2", "--couplings", "0.9,1"],
                  ["--method", "lowrank", "--select", "holdout"],
                  ["--method", "lasso", "--ratios", "1,0.01", "--l1-ratio", "0.5", "--holdout-fraction", "0.3"],
                  ["--method", "prior", "--prior", str(tmp_path / "prior.npz"), "--select", "holdout",
                   "--lambdas", "1,10"]):
        assert main(["fit", "--stores", *stores, *extra, "--out", out]) == 0, extra
        assert Attributions.load(out).method == "coar-" + extra[1]
    capsys.readouterr()
    bad = {"short": Attributions(W[:, :-1], np.zeros(n), "loo", "comps-x"),
           "few": Attributions(W[:-1], np.zeros(n - 1), "loo", "comps-x"),
           "other": Attributions(W, np.zeros(n), "loo", "comps-y"),
           "examples": Attributions(W, np.zeros(n), "loo", "comps-x", {"provenance": {"examples_fingerprint": "ex-y"}})}
    expect = {"short": "has 29 components, the masks have 30", "few": "covers 11 examples, the outputs cover 12",
              "other": "component set comps-y", "examples": "examples ex-y"}
    for name, prior in bad.items():
        prior.save(tmp_path / f"{name}.npz")
        assert main(["fit", "--stores", *stores, "--method", "prior", "--prior", str(tmp_path / f"{name}.npz"),
                     "--out", out]) == 2
        assert expect[name] in capsys.readouterr().err, name
    for args, msg in ((["--method", "prior"], "--prior: is needed with --method prior"),
                      (["--method", "ols", "--prior", str(tmp_path / "prior.npz")], "--prior"),
                      (["--method", "ridge", "--ranks", "1"], "--ranks"),
                      (["--method", "lasso", "--lambdas", "1"], "--lambdas")):
        assert main(["fit", "--stores", *stores, *args, "--out", out]) == 2
        assert msg in capsys.readouterr().err, args
    with pytest.raises(SystemExit):
        main(["fit", "--stores", *stores, "--method", "bayes", "--out", out])
    assert "invalid choice: 'bayes'" in capsys.readouterr().err


# ----------------------------------------------------------------------- workflow
def test_workflow_fit_takes_the_estimator_from_the_setup(tmp_path):
    """A setup with `regression: prior` fits on its parent's masks with the named baseline as an input; one
    without estimator.prior fails at plan time naming the key."""
    from tests.test_workflow import ROOT, SNAKEMAKE, _dry_run_jobs, snakemake

    if SNAKEMAKE is None:
        pytest.skip("snakemake is not installed")
    text = (ROOT / "config/test.yaml").read_text()
    variants = ("  T_prior:\n    parent: T\n    regression: prior\n    estimator: {prior: loo, select: holdout}\n"
                "  T_low:\n    parent: T\n    regression: lowrank\n    estimator: {ranks: [0, 2]}\n")
    cfg = tmp_path / "est.yaml"
    cfg.write_text(text.replace("  T_scale:\n", variants + "  T_scale:\n", 1))
    r = snakemake("-n", "results/T/attributions/coar.npz", "results/T_prior/attributions/coar.npz",
                  "results/T_low/attributions/coar.npz", f"--configfile={cfg}", "--directory", str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    jobs = _dry_run_jobs(out)
    fits = {j["output"]: j["input"] for j in jobs if j["rule"] == "fit"}
    assert fits["results/T_prior/attributions/coar.npz"].split(", ") == ["results/T/masks/train.json",
                                                                          "results/T/attributions/loo.npz"]
    assert fits["results/T_low/attributions/coar.npz"] == fits["results/T/attributions/coar.npz"]
    assert sum(j["rule"] == "sample_shard" for j in jobs) == 2  # the variants share T's training masks
    cfg.write_text(text.replace("  T_scale:\n", "  T_bad:\n    parent: T\n    regression: prior\n  T_scale:\n", 1))
    r = snakemake("-n", "results/T_bad/attributions/coar.npz", f"--configfile={cfg}", "--directory", str(tmp_path))
    assert r.returncode != 0 and "config error at `setups.T_bad.estimator.prior`" in r.stdout + r.stderr


def test_the_efficiency_figure_has_a_panel_per_setup_and_alpha_and_a_line_per_estimator(tmp_path):
    from coar.paper.efficiency import run_setup
    from coar.paper.plots.efficiency import fig_efficiency
    from coar.paper.plots.style import save_figure

    rng = np.random.default_rng(8)
    rows = []
    for setup in ("S1", "S2"):
        X, Y, W = planted_lowrank(rng, 160, 24, 12, rank=2, noise=0.5)
        tests = {}
        for alpha in (0.1, 0.15):
            Xt = rng.random((60, 24)) < 1 - alpha
            tests[alpha] = (Xt, Xt @ W.T + 0.5 * rng.normal(size=(60, 12)))
        rows += run_setup(setup, (X, Y), tests, {"gp": attr(W + rng.normal(size=W.shape), name="gp")},
                          names=["ols", "ridge", "prior-gp"])
    df = pd.DataFrame(rows)
    assert sorted(set(df.alpha_test)) == [0.1, 0.15] and len(df) == 2 * 2 * (3 * 6 + 1)
    # the same fits scored twice: the masks and budgets of each curve are the same at both alphas
    a, b = (df[df.alpha_test == x].drop(columns=["alpha_test", "mean_correlation", "sem"]).reset_index(drop=True)
            for x in (0.1, 0.15))
    pd.testing.assert_frame_equal(a.drop(columns="fit_s"), b.drop(columns="fit_s"))
    fig = fig_efficiency(df, "provenance text", {"S1": "first", "S2": "second"})
    panels = [ax for ax in fig.axes if ax.has_data()]
    assert len(panels) == 4 and sum(bool(ax.get_xlabel()) for ax in panels) == 2
    assert any("alpha_test 0.15" in ax.get_title(loc="left") for ax in panels)
    from coar.paper.plots.efficiency import _short_title
    assert _short_title("R", "R (stand-in for A's ResNet): ResNet-18 layout, 488 filters") == \
        "R: ResNet-18 layout, 488 filters"
    assert _short_title("B", "B (deeper): B-spline net") == "B: B-spline net"
    assert _short_title("A", "A: ResNet") == "A: ResNet" and _short_title("A", None) == "A"
    labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert labels == ["least squares (COAR)", "ridge (GCV)", "shrunk to grad x param",
                      "grad x param alone, at its cost", "least squares at m (the target)", "a third of the budget"]
    assert any("provenance text" in t.get_text() for t in fig.texts)
    assert save_figure(fig, tmp_path / "efficiency.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("standardize", [True, False])
def test_dual_factorization_equals_the_primal_one_with_fewer_masks_than_components(standardize):
    """With M < C, factorize_rows builds the Factorization from the M x M kernel: the same eigenvalues and
    eigenspace as the C x C Gram's, and every estimator's fit from it equals the primal fit."""
    from coar.gram import GramAccumulator, factorize, factorize_rows

    rng = np.random.default_rng(12)
    X, Y, W = planted_lowrank(rng, m=60, c=90, n=7, rank=2, noise=0.3)
    dual = factorize_rows(X, Y, standardize=standardize)
    primal = factorize(GramAccumulator.from_arrays(X, Y), standardize=standardize)
    assert dual.solver == "dual-eigh" and primal.solver == "primal-eigh" and dual.evecs.shape == (90, dual.rank)
    assert dual.rank == primal.rank == 59  # centring removes one dimension of the 60 masks
    np.testing.assert_allclose(dual.evals, primal.evals, rtol=1e-9)
    np.testing.assert_allclose(dual.evecs @ dual.evecs.T, primal.evecs @ primal.evecs.T, atol=1e-9)
    np.testing.assert_allclose(dual.evecs @ dual.q, primal.evecs @ primal.q, rtol=1e-9, atol=1e-9)
    for name in ("xbar", "ybar", "syy", "cutoff"):
        np.testing.assert_allclose(getattr(dual, name), getattr(primal, name), rtol=1e-12)
    prior = attr(W + rng.normal(size=W.shape))
    for method, kw in (("prior", {"prior": prior}), ("prior", {"prior": prior, "select": "holdout"}),
                       ("lowrank", {}), ("lasso", {"tol": 1e-8, "max_iter": 5000})):
        kw = {**kw, "standardize": standardize, "components": ""}
        a = fit((X, Y), method, **kw)  # (keep, y) with M < C: the dual form
        assert a.meta["solver"] == "dual-eigh"
        if kw.get("select") == "holdout" or method == "lasso":  # held-out selection factorises the fit part too
            b = fit((GramAccumulator.from_arrays(X[:48], Y[:48]), GramAccumulator.from_arrays(X[48:], Y[48:])),
                    method, **kw)
        else:
            b = fit(GramAccumulator.from_arrays(X, Y), method, **kw)
        assert b.meta["solver"] == "primal-eigh"
        assert a.meta.get("lambda") == pytest.approx(b.meta.get("lambda")), method
        np.testing.assert_allclose(a.weights, b.weights, rtol=1e-4, atol=1e-5 * np.abs(b.weights).max())
        # the streaming fit (CLI, workflow, API) takes the dual form too, and gives the same fit
        c = fit_chunks(iter([(X[:25], Y[:25]), (X[25:], Y[25:])]), 60, 90, 7, method=method, lambdas=None, **kw)
        assert c.meta["solver"] == "dual-eigh"
        np.testing.assert_array_equal(c.weights, a.weights)
