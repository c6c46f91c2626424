"""The minibatch SAGA solver of benchmarks/bench_saga.py converges to COAR's closed-form OLS,
and the benchmark script runs end to end (--quick)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_saga import planted_problem, rel_identifiable, saga_ols  # noqa: E402

from coar.regression import GramAccumulator, fit_ols  # noqa: E402


def test_saga_converges_to_coar_ols():
    rng = np.random.default_rng(3)
    X, Y, W, b = planted_problem(rng, 1500, 48, 12, alpha=0.1, noise=0.3)
    att = fit_ols(GramAccumulator.from_arrays(X, Y), standardize=True, components="")
    ours = np.asarray(att.weights, np.float64)

    res = saga_ols(X, Y, batch_size=256, tol=1e-13, max_epochs=500, seed=1)
    assert res.converged, f"SAGA did not reach the criterion: {res.epochs} epochs, last delta {res.last_delta:.2e}"
    assert res.last_delta < 1e-13
    assert rel_identifiable(res.weights, ours) < 1e-4
    # predictions do not depend on the unidentifiable all-ones direction: compare them directly
    pred_ours = X @ ours.T + np.asarray(att.bias, np.float64)
    pred_saga = X @ res.weights.T + res.bias
    assert np.abs(pred_saga - pred_ours).max() < 1e-4 * np.abs(pred_ours - pred_ours.mean(axis=0)).max()
    # min-norm in standardized coordinates, like the OLS: the raw weights agree too (no drift along 1)
    assert np.abs(res.weights - ours).max() < 1e-4 * np.abs(ours).max()

    # the comparison has teeth: one epoch of SAGA is far from the solution and not converged
    early = saga_ols(X, Y, batch_size=256, tol=1e-13, max_epochs=1, seed=1)
    assert not early.converged and early.epochs == 1
    assert rel_identifiable(early.weights, ours) > 1e-2


def test_bench_saga_quick_runs():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_saga.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "converged" in out and "NOT converged" not in out
    # both COAR solvers are timed end to end against SAGA, and they agree with it and with each other
    assert out.count("speedup (SAGA total / COAR host store") == 2, out
    saga_vs_coar = float(re.search(r"SAGA vs COAR OLS:\s+(\S+)", out).group(1))
    eigh_vs_chol = float(re.search(r"eigendecomposition vs COAR .*Cholesky: (\S+)", out).group(1))
    assert saga_vs_coar < 1e-2 and eigh_vs_chol < 1e-6, out
    r_coar, r_saga = map(float, re.search(r"COAR OLS (\S+)\s+SAGA (\S+)", out).groups())
    assert abs(r_coar - r_saga) < 1e-4, out
