"""Rule fig14: COAR with fewer masks (paper Fig. 14) from the setups' sample-size tables."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import pandas as pd  # noqa: E402

from coar.paper.plots.attribution import fig_sample_size  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

setups = sm.params.setups
table = pd.concat([pd.read_csv(p).assign(setup=s) for s, p in zip(setups, sm.input.tables)], ignore_index=True)
footer = provenance(sm.params.preset, setups)
fig = fig_sample_size(table, footer, {s: v["title"] for s, v in setups.items()})
save_figure(fig, sm.output.figure)
table.to_csv(sm.output.table, index=False)
