"""Rule efficiency: mean correlation against the total forward-pass budget for every estimator, per setup
(coar.paper.efficiency), and its figure."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.efficiency import goal, load_study, markdown, run_setup  # noqa: E402
from coar.paper.plots.efficiency import fig_efficiency  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

setups = sm.params.setups
t0 = time.perf_counter()
rows = []
tests = iter(sm.input.test)  # setup by setup, each setup's alphas in order (coar.paper.plan.efficiency_test_receipts)
for i, setup in enumerate(setups):
    receipts = [next(tests) for _ in sm.params.alphas[setup]]
    train, test, priors = load_study(sm.input.train[i], receipts, sm.input.priors[2 * i:2 * i + 2], Path("."))
    rows += run_setup(setup, train, test, priors)
    print(f"{setup}: {len(rows)} rows after {time.perf_counter() - t0:.0f} s", flush=True)
df = pd.DataFrame(rows)
reached = goal(df)
print(markdown(df))
print(reached.to_string(index=False))
atomic_write_csv(df, sm.output.table)
atomic_write_csv(reached, sm.output.goal)
fig = fig_efficiency(df, provenance(sm.params.preset, setups), {s: v["title"] for s, v in setups.items()})
save_figure(fig, sm.output.figure)
print(f"efficiency study: {time.perf_counter() - t0:.0f} s")
