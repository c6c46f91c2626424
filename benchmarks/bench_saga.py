"""Benchmark: COAR's closed-form shared-design OLS versus minibatch SAGA, the kind of solver
the authors use (MadryLab's fast_l1: SAGA on the GPU, standardized masks, float32).

    PYTHONPATH=src python benchmarks/bench_saga.py                        # M=5000, C=256, N=200
    PYTHONPATH=src python benchmarks/bench_saga.py --m 20000 --c 1024 --n 500
    PYTHONPATH=src python benchmarks/bench_saga.py --device cuda
    PYTHONPATH=src python benchmarks/bench_saga.py --quick                # tiny, for CI

Problem: exact-alpha keep-masks X [M, C] (every mask ablates round(alpha * C) components),
outputs Y [M, N] (float32) of a planted linear model plus Gaussian noise, generated as in
bench_regression.py.  Both solvers fit, for every example n, y[:, n] ~ b_n + X w_n.

SAGA (:func:`saga_ols`, written for this benchmark) works on standardized columns
z = (x - mean) / std with centred targets, so its intercept in standardized coordinates
is the target mean and only w is iterated; lambda = 0, i.e. plain least squares:

    f(w) = 1/(2M) sum_i || z_i^T w - yc_i ||^2      (w [C, N], all N targets at once)

The gradient of row i is z_i r_i^T with residual r_i = z_i^T w - yc_i, so the SAGA memory
is the residual table R [M, N]; g = Z^T R / M is its average gradient.  Each minibatch B
(rows of a fresh random permutation every epoch) computes new residuals r_B, steps

    w <- w - lr * ( Z_B^T (r_B - R_B) / |B| + g ),    then  g += Z_B^T (r_B - R_B) / M,  R_B = r_B,

and the table is initialized at w = 0 (R = -Yc, g = -Z^T Yc / M), so every step is an
unbiased gradient estimate.  The default step is the b-nice minibatch SAGA step
lr = 1 / (4 L(b)) with the expected smoothness (Gazagnadou, Gower & Salmon 2019)

    L(b) = M (b - 1) / (b (M - 1)) * L  +  (M - b) / (b (M - 1)) * L_max,

L_max = max_i ||z_i||^2 (the per-row constant; for b = 1 this is the classic 1/(4 L_max))
and L = lambda_max(Z^T Z / M) (power iteration).  ``--lr`` overrides it (fast_l1's README
uses 0.01).  Stopping rule, as the authors': after each epoch,
max_{j,n} sigma_j^2 (dw_raw_jn)^2 = max (dw_std_jn)^2 < tol (1e-10).  Iterates start at 0
and move only along rows of Z, so SAGA converges to the minimum-norm solution in
standardized coordinates, the same one COAR's OLS returns.

Exact-alpha masks leave the all-ones direction of the raw weights unidentifiable (it trades
off against the intercept, see bench_regression.py), so weights are compared after
subtracting each example's mean weight.  Predictions do not depend on that direction;
they are scored by the mean per-example Pearson correlation with the outputs of fresh
held-out masks (same alpha, same planted model and noise).
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_problem_args, device_name  # noqa: E402
from bench_regression import exact_alpha_masks, planted_outputs, planted_problem  # noqa: E402

from coar.regression import GramAccumulator, fit_ols  # noqa: E402


# ------------------------------------------------------------------------------ SAGA
@dataclass
class SagaResult:
    weights: np.ndarray  # [N, C] float64, raw mask scale
    bias: np.ndarray  # [N] float64
    epochs: int
    converged: bool
    last_delta: float  # max (dw_std)^2 over the last epoch
    lr: float
    l_max: float  # max squared row norm of the standardized design
    l_full: float  # lambda_max(Z^T Z / M) (power iteration; nan when lr was given)
    seconds: float  # wall time of the whole call, numpy in to numpy out
    setup_seconds: float  # of which: transfer, column statistics, step size, SAGA memory at w = 0


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def saga_ols(
    keep,
    y,
    *,
    batch_size: int = 1024,
    lr: float | None = None,
    tol: float = 1e-10,
    max_epochs: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    power_iters: int = 20,
    log=None,
) -> SagaResult:
    """Minibatch SAGA (float32) for multi-target least squares with intercept on standardized masks.

    ``keep`` [M, C] binary, ``y`` [M, N].  Runs until max (dw_std)^2 over an epoch < ``tol``
    or ``max_epochs``.  ``log`` (e.g. print) receives sparse progress lines.  Returns raw-scale
    weights [N, C] and bias [N] (b = ybar - xbar^T w, as coar.regression's OLS).
    """
    dev = torch.device(device)
    _sync(dev)
    t0 = time.perf_counter()
    X = torch.as_tensor(np.ascontiguousarray(keep), device=dev).to(torch.bool)
    Y = torch.as_tensor(np.ascontiguousarray(y), device=dev, dtype=torch.float32)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"keep must be [M, C] and y [M, N], got {tuple(X.shape)} and {tuple(Y.shape)}")
    M, C = X.shape
    N = Y.shape[1]
    B = max(1, min(int(batch_size), M))

    # column statistics, once (float64, then float32 for the iterations)
    mu64 = X.sum(dim=0, dtype=torch.float64) / M
    var64 = mu64 * (1.0 - mu64)  # binary columns: population variance, as the OLS standardization
    dinv64 = torch.where(var64 > 0, 1.0 / torch.sqrt(torch.clamp(var64, min=1e-300)), torch.zeros_like(var64))
    ybar64 = Y.sum(dim=0, dtype=torch.float64) / M
    mu, dinv = mu64.float(), dinv64.float()
    Yc = (Y.double() - ybar64).float()
    del Y

    def z(rows: torch.Tensor) -> torch.Tensor:
        return (rows.float() - mu) * dinv

    # Setup passes use Z = (X - 1 mu^T) D^-1 implicitly: Z v = X (D^-1 v) - mu.(D^-1 v) and
    # Z^T u = D^-1 (X^T u - mu sum(u)); X is converted to float32 once if that fits 1 GiB.
    chunk = 8192
    cache = [X[s : s + chunk].float() for s in range(0, M, chunk)] if M * C * 4 <= (1 << 30) else None

    def xchunks():
        for i, s in enumerate(range(0, M, chunk)):
            yield s, (cache[i] if cache is not None else X[s : s + chunk].float())

    # L_max: ||z_i||^2 = x_i . ((1 - 2 mu) dinv^2) + sum(mu^2 dinv^2) for binary x_i
    a = ((1.0 - 2.0 * mu64) * dinv64**2).float()
    c0 = float((mu64**2 * dinv64**2).sum())
    l_max = max(float((xb @ a).max()) + c0 for _, xb in xchunks())
    gen = torch.Generator().manual_seed(seed)
    l_full = float("nan")
    if lr is None:
        # L = lambda_max(Z^T Z / M) by power iteration
        v = torch.randn(C, generator=gen).to(dev)
        v /= v.norm()
        for _ in range(power_iters):
            dv = dinv * v
            shift = mu @ dv
            xtu = torch.zeros(C, device=dev)
            usum = torch.zeros((), device=dev)
            for _, xb in xchunks():
                zv = xb @ dv - shift
                xtu += xb.T @ zv
                usum += zv.sum()
            u = dinv * (xtu - mu * usum) / M
            l_full = float(u.norm())
            if l_full == 0.0:
                break
            v = u / l_full
        lb = (M * (B - 1) / (B * (M - 1)) * l_full + (M - B) / (B * (M - 1)) * l_max) if M > 1 else l_max
        lr = 1.0 / (4.0 * lb) if lb > 0 else 1.0
    lr = float(lr)

    # SAGA memory at w = 0: residuals r_i = 0 - yc_i, average gradient g = Z^T R / M
    # (R sums to 0 over rows since Yc is centred, so the mu term of Z^T R vanishes up to rounding;
    # keep it anyway)
    w = torch.zeros(C, N, device=dev)
    R = -Yc
    xtr = torch.zeros(C, N, device=dev)
    for s, xb in xchunks():
        xtr.addmm_(xb.T, R[s : s + chunk])
    g = dinv[:, None] * (xtr - mu[:, None] * R.sum(dim=0)[None, :]) / M
    cache = xtr = None  # free the float copy
    _sync(dev)
    setup_seconds = time.perf_counter() - t0

    epochs, converged, delta = 0, False, float("inf")
    next_log = 1
    for epoch in range(1, max_epochs + 1):
        perm = torch.randperm(M, generator=gen).to(dev)
        w_start = w.clone()
        for s in range(0, M, B):
            idx = perm[s : s + B]
            zb = z(X[idx])  # [b, C]
            r_new = zb @ w
            r_new -= Yc[idx]  # [b, N]
            d = r_new - R[idx]
            R[idx] = r_new
            gd = zb.T @ d  # [C, N]
            w.add_(gd, alpha=-lr / idx.numel()).add_(g, alpha=-lr)
            g.add_(gd, alpha=1.0 / M)
        delta = float(((w - w_start) ** 2).max())
        epochs = epoch
        if not np.isfinite(delta):
            if log:
                log(f"  SAGA epoch {epoch}: diverged (non-finite weights); lower --lr")
            break
        converged = delta < tol
        if log and (epoch == next_log or converged or epoch == max_epochs):
            log(f"  SAGA epoch {epoch:>5}: max (dw_std)^2 = {delta:.3e}  ({time.perf_counter() - t0:.2f}s)")
        if epoch == next_log:  # 1, 2, 5, 10, 20, 50, ...
            next_log = next_log * 5 // 2 if str(next_log)[0] == "2" else next_log * 2
        if converged:
            break

    w_raw = (w.double() * dinv64[:, None]).cpu().numpy()  # [C, N]
    bias = ybar64.cpu().numpy() - mu64.cpu().numpy() @ w_raw
    _sync(dev)
    seconds = time.perf_counter() - t0
    return SagaResult(w_raw.T.copy(), bias, epochs, converged, delta, lr, l_max, l_full, seconds, setup_seconds)


# ------------------------------------------------------------------------ COAR's OLS
def coar_ols(X: np.ndarray, Y: np.ndarray, device=None, chunk: int = 4096, solver: str = "cholesky",
             resident: bool = False):
    """One streaming pass + the solve, end to end; returns (Attributions, (accumulation s, solve s)).

    The masks X (bool) and outputs Y (float32) come as a store hands them over: host arrays, each chunk copied to
    ``device`` once in its stored dtype inside the timed pass (``resident=False``), or already on the device
    (``resident=True``: uploaded before the clock starts). ``solver``: "cholesky" (one C x C Cholesky
    factorisation, the default of coar.regression.fit_ols) or "eigh" (the eigendecomposition)."""
    dev = torch.device(device) if device is not None else None
    if resident:
        X, Y = torch.as_tensor(X, device=dev), torch.as_tensor(Y, device=dev)
    if dev is not None:
        _sync(dev)
    t = time.perf_counter()
    acc = GramAccumulator(X.shape[1], Y.shape[1], device=device)
    for s in range(0, X.shape[0], chunk):
        acc.add(X[s : s + chunk], Y[s : s + chunk])
    if dev is not None:
        _sync(dev)
    t_acc = time.perf_counter() - t
    t = time.perf_counter()
    att = fit_ols(acc, components="", solver=solver)
    if dev is not None:
        _sync(dev)
    return att, (t_acc, time.perf_counter() - t)


# -------------------------------------------------------------------------- metrics
def _dm(w: np.ndarray) -> np.ndarray:
    return w - w.mean(axis=-1, keepdims=True)


def rel_identifiable(a: np.ndarray, ref: np.ndarray) -> float:
    """max |dm(a) - dm(ref)| / max |dm(ref)| with dm = minus each example's mean weight; [N, C] inputs."""
    a, ref = _dm(np.asarray(a, np.float64)), _dm(np.asarray(ref, np.float64))
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def mean_pearson(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over examples (columns) of the Pearson correlation of pred and y, both [H, N]."""
    p = pred - pred.mean(axis=0)
    q = y - y.mean(axis=0)
    r = (p * q).sum(axis=0) / np.sqrt((p * p).sum(axis=0) * (q * q).sum(axis=0))
    return float(r.mean())


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_problem_args(ap, m=5000, c=256, n=200)
    ap.add_argument("--holdout", type=int, default=2000, help="fresh held-out masks for the correlation")
    ap.add_argument("--device", default="cpu", help="torch device for both solvers (cpu: COAR uses numpy)")
    ap.add_argument("--tol", type=float, default=1e-10, help="SAGA stops when max (dw_std)^2 per epoch < tol")
    ap.add_argument("--max-epochs", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=1024, help="SAGA minibatch rows")
    ap.add_argument("--lr", type=float, default=None, help="SAGA step (default 1/(4 L(b)), see above)")
    ap.add_argument("--quick", action="store_true", help="tiny problem (M=1200, C=64, N=20, 500 held-out) for CI")
    args = ap.parse_args(argv)
    if args.quick:
        args.m, args.c, args.n, args.holdout = 1200, 64, 20, 500
    M, C, N = args.m, args.c, args.n
    dev = torch.device(args.device)
    coar_device = None if dev.type == "cpu" else args.device

    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    X, Y, W, b = planted_problem(rng, M, C, N, args.alpha, args.noise)
    Xh = exact_alpha_masks(rng, args.holdout, C, args.alpha)
    Yh = planted_outputs(rng, Xh, W, b, args.noise)
    t_data = time.perf_counter() - t

    print(f"device: {device_name(dev)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; COAR OLS on "
          f"{'numpy (float64)' if coar_device is None else f'torch float64 on {args.device}'}, "
          f"SAGA in torch float32 on {args.device}")
    print(f"problem: M={M} masks, C={C} components, N={N} examples, alpha={args.alpha}, noise={args.noise}, "
          f"{args.holdout} held-out masks, seed {args.seed}  (data generated in {t_data:.1f}s)")

    # warm-up on a slice (CUDA context, cuBLAS handles, first-call allocations) before timing
    wm = min(M, 256)
    coar_ols(X[:wm], Y[:wm], device=coar_device)
    saga_ols(X[:wm], Y[:wm], batch_size=min(args.batch_size, 64), max_epochs=2, device=dev, power_iters=2)

    runs = {}  # (label, solver, resident) -> (Attributions, (accumulation s, solve s), peak GiB)
    src = "host store (numpy)" if coar_device is None else "host store -> device"
    variants = [(f"{src}, Cholesky", "cholesky", False), (f"{src}, eigendecomposition", "eigh", False)]
    if coar_device is not None:
        variants.insert(1, ("device tensors, Cholesky", "cholesky", True))
    for label, solver, resident in variants:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        att, times = coar_ols(X, Y, device=coar_device, solver=solver, resident=resident)
        peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else None
        runs[label] = (att, times, peak)
    att, _, peak_coar = runs[variants[0][0]]
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)

    print(f"SAGA: batch {min(args.batch_size, M)}, tol {args.tol:g}, max {args.max_epochs} epochs")
    res = saga_ols(X, Y, batch_size=args.batch_size, lr=args.lr, tol=args.tol, max_epochs=args.max_epochs,
                   seed=args.seed, device=dev, log=print)
    if args.lr is None:
        print(f"SAGA step: lr = {res.lr:.4g} = 1/(4 L(b)); L_max = {res.l_max:.1f}, "
              f"L = lambda_max(Z^T Z/M) = {res.l_full:.3f}")
    else:
        print(f"SAGA step: lr = {res.lr:.4g} (--lr); L_max = {res.l_max:.1f}")

    Wt = W.T
    w_ours = np.asarray(att.weights, np.float64)
    b_ours = np.asarray(att.bias, np.float64)
    corr_ours = mean_pearson(Xh @ w_ours.T + b_ours, Yh)
    corr_saga = mean_pearson(Xh @ res.weights.T + res.bias, Yh)
    corr_true = mean_pearson(Xh @ W + b, Yh)

    print()
    print(f"{'step':<56}{'seconds':>12}")
    print("-" * 68)
    for label, (a_, (ta, ts), _) in runs.items():
        print(f"{f'COAR {label}: accumulation':<56}{ta:>12.3f}")
        print(f"{f'COAR {label}: solve':<56}{ts:>12.3f}")
        print(f"{f'COAR {label}: total':<56}{ta + ts:>12.3f}")
    status = "converged" if res.converged else "NOT converged"
    print(f"{'SAGA setup (statistics, step size, memory at w = 0)':<56}{res.setup_seconds:>12.3f}")
    print(f"{f'SAGA epochs: {res.epochs}, {status}':<56}{res.seconds - res.setup_seconds:>12.3f}")
    print(f"{f'SAGA total, to max (dw_std)^2 < {args.tol:g}':<56}{res.seconds:>12.3f}")
    print("-" * 68)
    for label, (_, (ta, ts), _) in runs.items():
        print(f"speedup (SAGA total / COAR {label} total): {res.seconds / (ta + ts):.1f}x")
    if not res.converged:
        print(f"  (SAGA stopped at max-epochs with max (dw_std)^2 = {res.last_delta:.3e} >= tol: the speedup "
              f"is a lower bound)")
    print("weights minus their mean (the identifiable part for exact-alpha masks), max |diff| / max |ref|:")
    print(f"  SAGA vs COAR OLS:       {rel_identifiable(res.weights, w_ours):.2e}")
    for label, (a_, _, _) in list(runs.items())[1:]:
        print(f"  COAR {label} vs COAR {variants[0][0]}: "
              f"{rel_identifiable(np.asarray(a_.weights, np.float64), w_ours):.2e}")
    print(f"  COAR OLS vs planted:    {rel_identifiable(w_ours, Wt):.2e}")
    print(f"  SAGA vs planted:        {rel_identifiable(res.weights, Wt):.2e}")
    if peak_coar is not None:
        print(f"peak GPU memory allocated by torch: COAR OLS ({variants[0][0]}) {peak_coar:.2f} GiB, SAGA "
              f"{torch.cuda.max_memory_allocated(dev) / 2 ** 30:.2f} GiB")
    print(f"held-out mean per-example Pearson r ({args.holdout} fresh masks, noisy outputs):")
    print(f"  COAR OLS {corr_ours:.6f}   SAGA {corr_saga:.6f}   planted model (ceiling) {corr_true:.6f}")


if __name__ == "__main__":
    main()
