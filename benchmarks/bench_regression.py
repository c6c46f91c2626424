"""Benchmark: COAR's shared-design OLS (one Gram pass + one eigendecomposition for all
examples) versus scikit-learn LinearRegression fitted separately per example.

    PYTHONPATH=src python benchmarks/bench_regression.py --m 20000 --c 2304 --n 2000 --sk-examples 20
    PYTHONPATH=src python benchmarks/bench_regression.py --stream --device cuda --m 100000 --c 22720 --n 50000

    PYTHONPATH=src python benchmarks/bench_regression.py --device-path --device cpu --m 20000 --c 2000 --n 1000

--device-path times the accumulator with its statistics on --device (chunks as device tensors, and as host
store chunks, bool masks and float32 outputs, with their transfers counted) against the numpy accumulator,
and the Cholesky solve of least squares against the eigendecomposition, with their agreement.

--stream (ImageNet ResNet-50 size: the outputs of 100,000 masks on 50,000 examples are 20 GB in float32)
never holds all masks or outputs: each chunk of masks and its planted outputs is generated on --device
(torch), handed to the library's GramAccumulator as a store shard would be, and dropped. It prints the
time of each stage, the peak GPU memory, and the error against the planted weights on a subset of
examples; scikit-learn is not run.

Masks have exactly round(alpha * C) components ablated each (alpha = 0.1); outputs come
from a planted linear model plus Gaussian noise.  The scikit-learn time is measured on
--sk-examples examples and extrapolated linearly to all N (printed as such).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from _common import add_problem_args

from coar.regression import GramAccumulator, factorize, fit_ols, memory_plan, solve_cholesky


def exact_alpha_masks(rng, m: int, c: int, alpha: float, chunk: int = 4096) -> np.ndarray:
    """[m, c] bool keep-masks, each with exactly round(alpha * c) components ablated."""
    k = int(round(alpha * c))
    keep = np.ones((m, c), dtype=bool)
    for s in range(0, m, chunk):
        r = rng.random((min(chunk, m - s), c))
        drop = np.argpartition(r, k, axis=1)[:, :k] if k > 0 else np.empty((r.shape[0], 0), int)
        np.put_along_axis(keep[s : s + r.shape[0]], drop, False, axis=1)
    return keep


def planted_outputs(rng, X: np.ndarray, W: np.ndarray, b: np.ndarray, noise: float, chunk: int = 4096) -> np.ndarray:
    """Y = X W + b + noise * N(0, 1), stored in float32 as the pipeline stores outputs."""
    M, N = X.shape[0], W.shape[1]
    Y = np.empty((M, N), dtype=np.float32)
    for s in range(0, M, chunk):
        e = min(M, s + chunk)
        Y[s:e] = X[s:e].astype(np.float64) @ W + b + noise * rng.normal(size=(e - s, N))
    return Y


def planted_problem(rng, m: int, c: int, n: int, alpha: float, noise: float):
    """Exact-alpha masks X [m, c], planted W [c, n] ~ N(0, 1/c), b [n] ~ N(0, 1), Y [m, n] float32
    (also used by bench_saga.py)."""
    X = exact_alpha_masks(rng, m, c, alpha)
    W = rng.normal(size=(c, n)) / np.sqrt(c)
    b = rng.normal(size=n)
    return X, planted_outputs(rng, X, W, b, noise), W, b


def streamed(args) -> None:
    """--stream: planted chunks made on the device, accumulated, factorised and solved by the library."""
    import torch

    from _common import device_name

    dev = torch.device(args.device)
    lib_device = None if dev.type == "cpu" else args.device
    M, C, N, chunk = args.m, args.c, args.n, args.chunk
    solver = args.solver
    k = int(round(args.alpha * C))
    g = torch.Generator(device=dev).manual_seed(args.seed)
    W = torch.randn(C, N, device=dev, generator=g) / C ** 0.5  # float32 planted weights
    b = torch.randn(N, device=dev, generator=g)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def masks(rows):
        drop = torch.rand(rows, C, device=dev, generator=g).argsort(dim=1)[:, :k]
        keep = torch.ones(rows, C, dtype=torch.bool, device=dev)
        return keep.scatter_(1, drop, False)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    plan = memory_plan(M, C, N, solver=solver)
    print(f"device: {device_name(dev)} | torch {torch.__version__} | library on "
          f"{'numpy' if lib_device is None else lib_device} (float64), solver {plan['solver']}")
    print(f"problem (streamed): M={M} masks, C={C} components, N={N} examples, alpha={args.alpha}, "
          f"noise={args.noise}, chunks of {chunk} masks; outputs would be {M * N * 4 / 1e9:.1f} GB in float32")
    print(f"memory_plan: chosen={plan['chosen']}, primal total {plan['primal']['total'] / 1e9:.2f} GB, "
          f"dual total {plan['dual']['total'] / 1e9:.2f} GB")
    t_gen = t_add = 0.0
    acc = GramAccumulator(C, N, device=lib_device)
    for s in range(0, M, chunk):
        rows = min(chunk, M - s)
        sync()
        t = time.perf_counter()
        keep = masks(rows)
        y = keep.float() @ W + b + args.noise * torch.randn(rows, N, device=dev, generator=g)
        keep_h, y_h = keep.cpu().numpy(), y.cpu().numpy()  # a store shard arrives from host memory
        t_gen += time.perf_counter() - t
        t = time.perf_counter()
        acc.add(keep_h, y_h)
        sync()
        t_add += time.perf_counter() - t
        del keep, y, keep_h, y_h
        print(f"  accumulated {s + rows:,}/{M:,} masks ({t_add:.1f} s so far)", flush=True)
    t = time.perf_counter()
    fac = factorize(acc, standardize=True, device=lib_device) if solver == "eigh" else acc
    sync()
    t_eig = time.perf_counter() - t
    t = time.perf_counter()
    att = fit_ols(fac, device=lib_device, components="", solver=solver)
    sync()
    t_solve = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
    sub = np.linspace(0, N - 1, min(N, 200)).astype(int)
    wp = W[:, sub].T.double().cpu().numpy()
    wo = np.asarray(att.weights)[sub]
    werr = np.abs(_dm(wo) - _dm(wp)).max() / np.abs(_dm(wp)).max()
    print()
    print(f"{'step':<56}{'seconds':>12}")
    print("-" * 68)
    print(f"{'planted chunks generated on the device, copied to host':<56}{t_gen:>12.2f}")
    print(f"{'COAR accumulation pass (Gram, X^T Y)':<56}{t_add:>12.2f}")
    if solver == "eigh":
        print(f"{f'COAR factorisation (centre, standardise, eigh {C} x {C})':<56}{t_eig:>12.2f}")
    used = att.meta["solver"]
    print(f"{f'COAR OLS solve ({used}), all N examples':<56}{t_solve:>12.2f}")
    print(f"{'COAR total (accumulate + factorise + solve)':<56}{t_add + t_eig + t_solve:>12.2f}")
    print("-" * 68)
    print(f"peak GPU memory allocated by torch: {peak:.1f} GiB (planted W {C * N * 4 / 2 ** 30:.1f} GiB of it)")
    print(f"max |w_coar - w_planted| / max |w_planted| on {len(sub)} examples, mean removed: {werr:.2e}")


def device_path(args) -> None:
    """--device-path: the accumulator on --device (device tensors in; host store chunks in, transfers counted)
    against the numpy accumulator, and the Cholesky solve against the eigendecomposition."""
    import torch

    from _common import device_name

    dev = torch.device(args.device)
    M, C, N, chunk = args.m, args.c, args.n, args.chunk

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    X, Y, _, _ = planted_problem(rng, M, C, N, args.alpha, args.noise)  # bool masks, float32 outputs: a store
    t_data = time.perf_counter() - t
    print(f"device: {device_name(dev)} | torch {torch.__version__} | threads {torch.get_num_threads()}")
    print(f"problem: M={M} masks, C={C} components, N={N} examples, alpha={args.alpha}, chunks of {chunk} "
          f"masks (data generated in {t_data:.1f} s)")
    rows = []

    def timed(label, fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        rows.append((label, time.perf_counter() - t0))
        return out

    def accumulate(device, chunks):
        acc = GramAccumulator(C, N, device=device)
        for kb, yb in chunks:
            acc.add(kb, yb)
        return acc

    host_chunks = [(X[s : s + chunk], Y[s : s + chunk]) for s in range(0, M, chunk)]
    ref = timed("numpy accumulator, host chunks (float64 on the host)", lambda: accumulate(None, host_chunks))
    dev_host = timed(f"{dev.type} accumulator, host store chunks (transfers counted)",
                     lambda: accumulate(args.device, host_chunks))
    dev_chunks = [(torch.from_numpy(kb).to(dev), torch.from_numpy(yb).to(dev)) for kb, yb in host_chunks]
    sync()
    acc = timed(f"{dev.type} accumulator, chunks already device tensors", lambda: accumulate(args.device, dev_chunks))
    dev_chunks.clear()
    chol = timed(f"Cholesky solve on {dev.type} (OLS, all N examples)", lambda: solve_cholesky(acc))
    eigh = timed(f"eigh factorisation + solve on {dev.type} (OLS, all N examples)",
                 lambda: factorize(acc).coefficients(None))
    chol_host = timed("Cholesky solve, numpy / scipy on the host", lambda: solve_cholesky(ref))
    print()
    print(f"{'step':<68}{'seconds':>12}")
    print("-" * 80)
    for label, sec in rows:
        print(f"{label:<68}{sec:>12.2f}")
    print("-" * 80)
    exact = np.array_equal(acc.xtx, ref.xtx) and np.array_equal(dev_host.xtx, ref.xtx)
    xty_err = max(np.abs(a.xty - ref.xty).max() for a in (acc, dev_host)) / np.abs(ref.xty).max()
    w_c, w_e, w_h = chol[0], eigh[0], chol_host[0]
    print(f"solver {chol[2]['solver']} (rank {chol[2]['rank']}); X^T X equal to the numpy one: {exact}; "
          f"max |xty_device - xty_numpy| / max |xty|: {xty_err:.1e}")
    print(f"max |w_cholesky - w_eigh| / max |w_eigh|: {np.abs(w_c - w_e).max() / np.abs(w_e).max():.1e}; "
          f"device vs host Cholesky: {np.abs(w_c - w_h).max() / np.abs(w_h).max():.1e}")


def _dm(w: np.ndarray) -> np.ndarray:
    return w - w.mean(axis=-1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_problem_args(ap, m=20000, c=2304, n=2000)
    ap.add_argument("--sk-examples", type=int, default=20, help="examples fitted with scikit-learn")
    ap.add_argument("--chunk", type=int, default=4096, help="accumulation chunk size (masks)")
    ap.add_argument("--sk-multi", action="store_true", help="also time one multi-target sklearn fit on all N")
    ap.add_argument("--stream", action="store_true", help="planted chunks made on --device, no sklearn (above)")
    ap.add_argument("--device-path", action="store_true",
                    help="time the accumulator on --device and the Cholesky solve against eigh (above)")
    ap.add_argument("--device", default="cpu",
                    help="--stream, --device-path: torch device for the data and the library")
    ap.add_argument("--solver", default="cholesky", choices=("cholesky", "eigh"), help="--stream: the OLS solve")
    args = ap.parse_args()
    if args.stream:
        return streamed(args)
    if args.device_path:
        return device_path(args)
    M, C, N = args.m, args.c, args.n

    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    X, Y, W, b = planted_problem(rng, M, C, N, args.alpha, args.noise)
    t_data = time.perf_counter() - t
    plan = memory_plan(M, C, N)
    print(f"problem: M={M} masks, C={C} components, N={N} examples, alpha={args.alpha}, "
          f"noise={args.noise}  (data generated in {t_data:.1f}s)")
    print(f"memory_plan: chosen={plan['chosen']}, primal total {plan['primal']['total'] / 1e9:.2f} GB, "
          f"dual total {plan['dual']['total'] / 1e9:.2f} GB")

    # --- COAR regression: one streaming pass, one factorization, all N solves
    t = time.perf_counter()
    acc = GramAccumulator(C, N)
    for s in range(0, M, args.chunk):
        acc.add(X[s : s + args.chunk], Y[s : s + args.chunk])
    t_acc = time.perf_counter() - t
    t = time.perf_counter()
    fac = factorize(acc, standardize=True)
    t_eig = time.perf_counter() - t
    t = time.perf_counter()
    att = fit_ols(fac, components="")
    t_solve = time.perf_counter() - t
    t_coar = t_acc + t_eig + t_solve

    # --- scikit-learn, one example at a time
    from sklearn.linear_model import LinearRegression

    k = max(1, min(args.sk_examples, N))
    Xf = X.astype(np.float64)
    t = time.perf_counter()
    sk_coef = []
    for n in range(k):
        lr = LinearRegression().fit(Xf, Y[:, n].astype(np.float64))
        sk_coef.append(lr.coef_)
    t_sk_k = time.perf_counter() - t
    t_sk = t_sk_k / k * N
    sk_coef = np.array(sk_coef)
    t_multi = None
    if args.sk_multi:  # the fair competitor: one multi-target lstsq for all N examples
        t = time.perf_counter()
        LinearRegression().fit(Xf, Y.astype(np.float64))
        t_multi = time.perf_counter() - t
    # Exact-alpha masks keep exactly C - k components, so sum_j keep_j is constant: the
    # direction w -> w + c*1 (with b -> b - c*(C-k)) is unidentifiable.  Both solvers
    # return *a* least-squares solution (COAR: min-norm in standardized coordinates,
    # sklearn: min-norm in raw coordinates); compare the identifiable part w - mean(w).
    def dm(w):
        return w - w.mean(axis=-1, keepdims=True)

    agree = np.abs(dm(att.weights[:k]) - dm(sk_coef)).max() / np.abs(dm(sk_coef)).max()
    werr = np.abs(dm(att.weights) - dm(W.T)).max() / np.abs(dm(W.T)).max()

    print()
    print(f"{'step':<56}{'seconds':>12}")
    print("-" * 68)
    print(f"{'COAR accumulation pass (Gram, X^T Y)':<56}{t_acc:>12.2f}")
    print(f"{'COAR eigendecomposition (C x C)':<56}{t_eig:>12.2f}")
    print(f"{'COAR OLS solve, all N examples':<56}{t_solve:>12.2f}")
    print(f"{'COAR total':<56}{t_coar:>12.2f}")
    print(f"{f'sklearn LinearRegression, {k} examples (measured)':<56}{t_sk_k:>12.2f}")
    print(f"{f'sklearn LinearRegression, {N} examples (EXTRAPOLATED)':<56}{t_sk:>12.2f}")
    if t_multi is not None:
        print(f"{f'sklearn LinearRegression, all {N} targets in one fit':<56}{t_multi:>12.2f}")
    print("-" * 68)
    print(f"speedup (extrapolated sklearn / COAR total): {t_sk / t_coar:.1f}x")
    if t_multi is not None:
        print(f"speedup (sklearn multi-target / COAR total): {t_multi / t_coar:.1f}x")
    print("weights minus their mean (the identifiable part for exact-alpha masks):")
    print(f"  max |w_coar - w_sklearn| / max |w_sklearn| on the {k} examples: {agree:.2e}")
    print(f"  max |w_coar - w_planted| / max |w_planted| (noise {args.noise}): {werr:.2e}")


if __name__ == "__main__":
    main()
