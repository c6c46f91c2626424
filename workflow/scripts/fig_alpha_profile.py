"""Rule fig_alpha_profile: COAR's mean correlation over one alpha_test grid per setup (paper Figs. 13, 26)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.appendix import fig_alpha_profile  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

SUPTITLES = {13: "COAR fitted at different ablation fractions (cf. paper Fig. 13)",
             26: "COAR with scale ablation (cf. paper Fig. 26)"}
setups, n = sm.params.setups, int(sm.wildcards.n)
corr = pd.concat([pd.read_csv(p).assign(setup=Path(p).parents[1].name) for p in sm.input.tables], ignore_index=True)
corr = corr[corr.method == "coar"]


def label(v):
    scale = f", scale ablation (gamma {v['gamma']:g})" if v["ablation"] == "scale" else ", zero ablation"
    return rf"$\alpha_\mathrm{{train}}$ = {v['alpha_train']:g}{scale}, {v['masks']:,} masks"


fig = fig_alpha_profile(corr, {s: label(v) for s, v in setups.items()},
                        {s: v["alpha_train"] for s, v in setups.items()}, provenance(sm.params.preset, setups),
                        next(iter(setups.values()))["title"].split(" | variant")[0], SUPTITLES[n])
save_figure(fig, sm.output.figure)
atomic_write_csv(corr, sm.output.table)
print(corr.assign(correlation=corr.correlation.fillna(0)).groupby(["setup", "alpha_test"]).correlation.mean()
      .unstack().to_string())
