"""Rule fig_correlation_panels: mean correlation vs alpha_test, one panel per setup (paper Fig. 11)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import pandas as pd  # noqa: E402

from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.attribution import fig_correlation_panels  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

SUPTITLES = {8: "COAR on a GPT-2 language model (cf. paper Fig. 8)",
             9: "COAR on Phi-2, zero-shot BoolQ (cf. paper Fig. 9)",
             10: "COAR on training and corrupted examples (cf. paper Fig. 10)",
             11: "COAR on other architectures (cf. paper Fig. 11)",
             12: "COAR on other tasks and output functions (cf. paper Fig. 12)"}
setups, n = sm.params.setups, int(sm.wildcards.n)
table = pd.concat([pd.read_csv(p).assign(setup=s) for s, p in zip(setups, sm.input.tables)], ignore_index=True)
fig = fig_correlation_panels(table, {s: v["alpha_train"] for s, v in setups.items()},
                             provenance(sm.params.preset, setups), {s: v["title"] for s, v in setups.items()},
                             SUPTITLES[n])
save_figure(fig, sm.output.figure)
atomic_write_csv(table, sm.output.table)
print(table.assign(correlation=table.correlation.fillna(0)).groupby(["setup", "method", "alpha_test"])
      .correlation.mean().unstack().to_string())
