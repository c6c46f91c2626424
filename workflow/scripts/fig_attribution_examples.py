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

opt, setups = sm.params.options, sm.params.setups
(name, spec), = setups.items()
_, cset = model_and_components(sm.input.model, spec, device)
w = Attributions.load(sm.input.attributions).weights
w = w - w.mean(1, keepdims=True)
ex = Examples.load(sm.input.examples)
images = ex.inputs[:, 0] if ex.inputs.shape[1] == 1 else ex.inputs
labels = ex.targets
rng = np.random.default_rng(opt["seed"])


def top_examples():
    """The examples with the most positive attribution for random components."""
    rows, records = [], []
    for c in sorted(rng.choice(w.shape[1], size=min(opt["components"], w.shape[1]), replace=False)):
        top = np.argsort(-w[:, c], kind="stable")[: opt["top"]]
        rows.append({"component": cset.label(int(c)), "examples": top.tolist(), "values": w[top, c].tolist(),
                     "labels": labels[top].tolist()})
        records += [{"component": cset.label(int(c)), "rank": r + 1, "example": int(i), "value": float(w[i, c]),
                     "label": int(labels[i])} for r, i in enumerate(top)]
    return fig_top_examples, rows, records


def neighbors():
    """The nearest neighbours of random query examples by cosine similarity of their attributions."""
    rows, records = [], []
    unit = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-300)
    for q in sorted(rng.choice(len(w), size=min(opt["queries"], len(w)), replace=False)):
        sim = unit @ unit[q]
        sim[q] = -np.inf
        nb = np.argsort(-sim, kind="stable")[: opt["neighbors"]]
        rows.append({"query": int(q), "neighbors": nb.tolist(), "similarity": sim[nb].tolist(),
                     "labels": labels[np.r_[q, nb]].tolist()})
        records += [{"query": int(q), "rank": r + 1, "neighbor": int(i), "similarity": float(sim[i]),
                     "label": int(labels[i])} for r, i in enumerate(nb)]
    return fig_neighbors, rows, records


draw, rows, records = {"top_examples": top_examples, "neighbors": neighbors}[sm.params.drawing]()
fig = draw(images, rows, provenance(sm.params.preset, setups), f"{sm.params.suptitle}\n{spec['title']}",
           class_names=class_names(spec["dataset"]))
save_figure(fig, sm.output.figure)
atomic_write_csv(pd.DataFrame(records), sm.output.table)
