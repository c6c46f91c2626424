"""Rule fig27: zero- vs scale-ablation COAR attributions of one model (paper Fig. 27): per-example cosine
similarity, and how well each predicts zero-ablation counterfactuals."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.appendix import fig_zero_vs_scale  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402


def centred(w):  # exact-alpha masks leave w + c*1 unidentified per example: compare w - mean(w)
    return w - w.mean(1, keepdims=True)


setups = sm.params.setups
zero_name, scale_name = setups
gamma = setups[scale_name]["gamma"]
wz = centred(Attributions.load(sm.input.zero).weights)
ws = centred(Attributions.load(sm.input.scale).weights)
cos = (wz * ws).sum(1) / np.maximum(np.linalg.norm(wz, axis=1) * np.linalg.norm(ws, axis=1), 1e-300)
labels = {"scale": f"scale (gamma {gamma:g}) attributions ({scale_name})", "zero": f"zero attributions ({zero_name})"}
parts = [pd.read_csv(p).assign(attributions=labels["scale"]) for p in sm.input.scale_on_zero]
parts += [pd.read_csv(p).query("method == 'coar'").assign(attributions=labels["zero"]) for p in sm.input.zero_on_zero]
corr = pd.concat(parts, ignore_index=True)
title = setups[zero_name]["title"]
fig = fig_zero_vs_scale(cos, corr, gamma, provenance(sm.params.preset, setups), title)
save_figure(fig, sm.output.figure)
atomic_write_csv(pd.DataFrame({"example": np.arange(len(cos)), "cosine": cos}), sm.output.cosine)
atomic_write_csv(corr, sm.output.table)
print(f"cosine median {np.median(cos):.3f}")
print(corr.assign(correlation=corr.correlation.fillna(0)).groupby(["attributions", "alpha_test"]).correlation.mean()
      .unstack().to_string())
