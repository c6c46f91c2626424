"""Rule fig_backdoor_saliency: Fig. 24 (input-x-gradient saliency of the components COAR-EDIT ranks first to
remove the backdoor), drawn from the backdoor_saliency rule's maps and table."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from coar.io import load_npz  # noqa: E402
from coar.paper.plots.backdoor import fig_backdoor_saliency  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

opt, e, setups = sm.params.options, sm.params.edit, sm.params.setups
title = next(iter(setups.values()))["title"]
prov = (provenance(sm.params.preset, setups) + f" | edit {opt['edit']}: {e['targets']} paired examples, k in "
        f"{e['ks']} chosen on validation (clean accuracy drop <= {e['max_drop']:g}), random control with the same k")
arrays, _ = load_npz(sm.input.maps, "saliency maps", ("images", "maps"))
table = pd.read_csv(sm.input.table)
ranked = table[table.kind != "random control"]
control = table[table.kind == "random control"]
ablated = (ranked.kind == "ablated by COAR-EDIT").to_numpy()
names = [f"{c} ({'ablated' if a else 'not ablated'})" for c, a in zip(ranked.component, ablated, strict=True)]
fig = fig_backdoor_saliency(arrays["images"], arrays["maps"], names, ranked.trigger_share.tolist(),
                            float(table.trigger_area_share.iloc[0]), prov,
                            "Components COAR-EDIT ranks first to remove the backdoor: input-x-gradient saliency "
                            f"(cf. paper Fig. 24); the edit ablates the first {int(ablated.sum())}", title,
                            control_share=float(control.trigger_share.mean()),
                            shifts=ranked.trigger_shift_sd.to_numpy(),
                            control_shift=float(np.mean(np.abs(control.trigger_shift_sd.to_numpy()))))
save_figure(fig, sm.output.figure)
