"""Attribution accuracy against the forward-pass budget (the study of coar.paper.efficiency) on the stores a
workflow run left under results/:

    python benchmarks/efficiency.py --results results --setups A B C [--alpha-test-factors 1 1.5]
                                    [--csv out.csv] [--figure out.pdf]

Each setup needs its training masks, its evaluation masks at each factor x alpha_train (default: alpha_train)
and, for the priors, its leave-one-out and gradient x parameter attributions
(results/<setup>/attributions/{loo,gp}.npz).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from coar.errors import CoarError
from coar.paths import check_output_file
from coar.paper.efficiency import goal, load_setup, markdown, run_setup
from coar.paper.plots.efficiency import fig_efficiency
from coar.paper.plots.style import save_figure


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--setups", nargs="+", default=["A", "B", "C"])
    ap.add_argument("--estimators", nargs="+", help="only these (ols, ridge, prior-loo, prior-gp, lowrank, lasso)")
    ap.add_argument("--alpha-test-factors", nargs="+", type=float, default=[1.0],
                    help="evaluation alphas as multiples of alpha_train (default: 1)")
    ap.add_argument("--csv", type=Path, help="write every row here")
    ap.add_argument("--figure", type=Path, help="plot the curves here (e.g. efficiency.pdf)")
    a = ap.parse_args(argv)
    for path, flag in ((a.csv, "--csv"), (a.figure, "--figure")):
        check_output_file(path, flag)  # before the study, not after it
    t0 = time.perf_counter()
    rows = []
    for setup in a.setups:
        train, tests, priors, alpha = load_setup(a.results, setup, a.alpha_test_factors)
        print(f"{setup}: {train[0].shape[0]} training masks x {train[0].shape[1]} components at alpha {alpha:g}, "
              f"evaluation masks at alpha {', '.join(f'{t:g} ({len(k)})' for t, (k, _) in tests.items())}, "
              f"{train[1].shape[1]} examples; priors: {', '.join(priors) or 'none'}", flush=True)
        rows += run_setup(setup, train, tests, priors, a.estimators)
    df = pd.DataFrame(rows)
    if a.csv:
        df.to_csv(a.csv, index=False)
    if a.figure:
        save_figure(fig_efficiency(df, f"setups {', '.join(a.setups)} under {a.results}"), a.figure)
    print(markdown(df))
    g = goal(df)
    print("\nSmallest total budget (fraction of m, interpolated) at which each estimator reaches OLS-at-m:")
    print(g.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nran in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CoarError as exc:
        sys.exit(f"error: {exc}")
