"""Rule efficiency: mean correlation against the total forward-pass budget for every estimator, per setup."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import importlib.util  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from coar.paper.plots.style import save_figure  # noqa: E402

# the study itself is benchmarks/efficiency.py (also a command of its own), loaded from the rule's input
spec = importlib.util.spec_from_file_location("efficiency_study", sm.input.study)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)

setups = sm.params.setups
t0 = time.perf_counter()
rows = []
for i, setup in enumerate(setups):
    train, test, priors = study.load_study(sm.input.train[i], sm.input.test[i], sm.input.priors[2 * i:2 * i + 2],
                                           Path("."))
    rows += study.run_setup(setup, train, test, priors)
    print(f"{setup}: {len(rows)} rows after {time.perf_counter() - t0:.0f} s", flush=True)
df = pd.DataFrame(rows)
goal = study.goal(df)
print(study.markdown(df))
print(goal.to_string(index=False))
Path(sm.output.table).parent.mkdir(parents=True, exist_ok=True)
df.to_csv(sm.output.table, index=False)
goal.to_csv(sm.output.goal, index=False)
fig = study.plot(df, provenance(sm.params.preset, setups), {s: v["title"] for s, v in setups.items()})
save_figure(fig, sm.output.figure)
print(f"efficiency study: {time.perf_counter() - t0:.0f} s")
