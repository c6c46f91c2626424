"""Rule fig25: accuracy and output correlation of the ablated model vs alpha (paper Fig. 25)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import pandas as pd  # noqa: E402

from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.appendix import fig_ablation_effect  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

setups = sm.params.setups
table = pd.concat([pd.read_csv(p).assign(setup=s) for s, p in zip(setups, sm.input.tables)], ignore_index=True)
fig = fig_ablation_effect(table, {s: v["alpha_train"] for s, v in setups.items()},
                          provenance(sm.params.preset, setups), {s: v["title"] for s, v in setups.items()})
save_figure(fig, sm.output.figure)
atomic_write_csv(table, sm.output.table)
print(table.groupby(["setup", "alpha"])[["accuracy", "correlation"]].mean().to_string())
