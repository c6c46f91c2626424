"""Rule fig_attribution_examples. Fig. 17: for random components, the examples with the most positive
attribution; Fig. 18: for random query examples, the nearest neighbours in attribution space. Both use
per-example centred weights (exact-alpha masks leave a constant offset per example unidentified)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, provenance, start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.paper.data.registry import class_names  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.appendix import fig_neighbors, fig_top_examples  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

n, opt, setups = int(sm.wildcards.n), sm.params.options, sm.params.setups
(name, spec), = setups.items()
_, cset = model_and_components(sm.input.model, spec, device)
w = Attributions.load(sm.input.attributions).weights
w = w - w.mean(1, keepdims=True)
ex = Examples.load(sm.input.examples)
images = ex.inputs[:, 0] if ex.inputs.shape[1] == 1 else ex.inputs
labels = ex.targets
rng = np.random.default_rng(opt["seed"])
rows, records = [], []
if n == 17:
    for c in sorted(rng.choice(w.shape[1], size=min(opt["components"], w.shape[1]), replace=False)):
        top = np.argsort(-w[:, c], kind="stable")[: opt["top"]]
        rows.append({"component": cset.label(int(c)), "examples": top.tolist(), "values": w[top, c].tolist(),
                     "labels": labels[top].tolist()})
        records += [{"component": cset.label(int(c)), "rank": r + 1, "example": int(i), "value": float(w[i, c]),
                     "label": int(labels[i])} for r, i in enumerate(top)]
    draw, title = fig_top_examples, "Examples with the most positive COAR attribution per component (cf. paper Fig. 17)"
else:
    unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-300)
    for q in sorted(rng.choice(len(w), size=min(opt["queries"], len(w)), replace=False)):
        sim = unit @ unit[q]
        sim[q] = -np.inf
        nb = np.argsort(-sim, kind="stable")[: opt["neighbors"]]
        rows.append({"query": int(q), "neighbors": nb.tolist(), "similarity": sim[nb].tolist(),
                     "labels": labels[np.r_[q, nb]].tolist()})
        records += [{"query": int(q), "rank": r + 1, "neighbor": int(i), "similarity": float(sim[i]),
                     "label": int(labels[i])} for r, i in enumerate(nb)]
    draw, title = fig_neighbors, "Nearest neighbours in COAR attribution space (cf. paper Fig. 18)"
fig = draw(images, rows, provenance(sm.params.preset, setups), f"{title}\n{spec['title']}",
           class_names=class_names(spec["dataset"]))
save_figure(fig, sm.output.figure)
atomic_write_csv(pd.DataFrame(records), sm.output.table)
