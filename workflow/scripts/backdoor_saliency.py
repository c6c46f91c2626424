"""Rule backdoor_saliency: Fig. 24's measurements. For the components COAR-EDIT ranks first to remove the
backdoor (and random control components): input-x-gradient saliency maps on triggered held-out images, each
component's share of saliency inside the trigger square, and how far the trigger moves its output."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from coar.examples import Examples  # noqa: E402
from coar.io import atomic_savez, atomic_write_csv  # noqa: E402
from coar.paper.data.backdoor import backdoor_of, trigger, trigger_region  # noqa: E402
from coar.saliency import component_outputs, component_saliency, region_share  # noqa: E402

opt, dataset = sm.params.options, sm.params.dataset
model, cset = model_and_components(sm.input.model, sm.params.spec, device)
held = Examples.load(sm.input.heldout)
rng = np.random.default_rng(opt["seed"])
others = np.nonzero(held.targets != backdoor_of(dataset).target)[0]  # the trigger changes the answer for these
triggered = trigger(dataset, held.inputs)


def tensors(images, idx):
    return Examples(images[idx], held.targets[idx], "image", held.meta).tensors(device)[0]


# COAR-EDIT's top-ranked components: the edit ablates the first k of them, the rest show what the ranking puts
# next
comps = pd.read_csv(sm.input.components).sort_values("rank").head(opt["components"])
ablated = comps.ablated.astype(str).isin(["True", "1"]).to_numpy()
labels = cset.labels()
flat = [labels.index(c) for c in comps.component]
show = rng.choice(others, min(opt["examples"], len(others)), replace=False)
scored = rng.choice(others, min(256, len(others)), replace=False)
xs, xa = tensors(triggered, show), tensors(triggered, scored)
rows, cols = trigger_region()
maps = np.stack([component_saliency(model, cset, c, xs) for c in flat])


def share(c):  # mean share of the component's absolute saliency inside the trigger square
    return float(region_share(component_saliency(model, cset, c, xa), rows, cols).mean())


shares = [share(c) for c in flat]
control = rng.choice(np.setdiff1d(np.arange(cset.size), flat), min(16, cset.size - len(flat)), replace=False)
control_shares = [share(c) for c in control]  # the same measure for random components: the baseline
# how far the trigger moves each component's output, in standard deviations over the clean images
both = np.concatenate([flat, control])
clean_out, trig_out = (component_outputs(model, cset, both, x) for x in (tensors(held.inputs, scored), xa))
shift = (trig_out - clean_out).mean(0) / np.maximum(clean_out.std(0), 1e-12)
area = (rows.stop - rows.start) * (cols.stop - cols.start) / float(np.prod(held.inputs.shape[2:]))
table = pd.concat([comps.assign(kind=np.where(ablated, "ablated by COAR-EDIT", "ranked, not ablated"),
                                trigger_share=shares),
                   pd.DataFrame({"kind": "random control", "component": [labels[c] for c in control],
                                 "trigger_share": control_shares})], ignore_index=True)
table["trigger_shift_sd"] = shift
table = table.assign(trigger_area_share=area, images=len(scored))
atomic_savez(sm.output.maps, header={"components": list(comps.component), "examples": show.tolist()},
             images=triggered[show], maps=maps)
atomic_write_csv(table, sm.output.table)
print(table.to_string())
