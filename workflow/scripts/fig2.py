"""Rule fig2: attribution accuracy (paper Fig. 2) from the setups' evaluation tables."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import pandas as pd  # noqa: E402

from coar.correlation import summarize  # noqa: E402
from coar.paper.plots.attribution import fig_attribution_accuracy  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

setups = sm.params.setups
names = list(setups)
corr = pd.concat([pd.read_csv(p).assign(setup=s) for s, p in zip(names, sm.input.correlations)], ignore_index=True)
scatter = pd.concat([pd.read_csv(p).assign(setup=s) for s, p in zip(names, sm.input.scatter)], ignore_index=True)
footer = provenance(sm.params.preset, setups)
fig = fig_attribution_accuracy(corr, scatter, {s: v["alpha_train"] for s, v in setups.items()}, footer,
                               {s: v["title"] for s, v in setups.items()})
save_figure(fig, sm.output.figure)
corr.to_csv(sm.output.table, index=False)
summary = pd.concat([summarize(corr[corr.setup == s]).assign(setup=s) for s in names], ignore_index=True)
summary.to_csv(sm.output.summary, index=False)
print(summary.to_string(index=False))
