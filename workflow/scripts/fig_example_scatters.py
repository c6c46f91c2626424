"""Rule fig_example_scatters: true vs estimated counterfactuals of random examples for every method
(paper Figs. 15, 16)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import pandas as pd  # noqa: E402

from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.appendix import fig_example_scatters  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

setups, n = sm.params.setups, int(sm.wildcards.n)
table = pd.concat([pd.read_csv(p) for p in sm.input.tables], ignore_index=True)
# rows are labelled "<setup> (<model>)"; the footer names each setup's data and masks in full
fig = fig_example_scatters(table, provenance(sm.params.preset, setups), {s: f"{s} ({v['model']})" for s, v in setups.items()},
                           suptitle=f"Example-level evaluation of every method (cf. paper Fig. {n})")
save_figure(fig, sm.output.figure)
atomic_write_csv(table, sm.output.table)
