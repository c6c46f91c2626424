"""Rule sample_size_table: correlation at alpha_train and cosine similarity to the full fit, per m."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, torch=False)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.paper.receipts import read_split  # noqa: E402
from coar.pipeline import evaluate_stores  # noqa: E402


def centred(w):  # exact-alpha masks leave w + c*1 unidentified per example: compare w - mean(w)
    return w - w.mean(1, keepdims=True)


full = centred(Attributions.load(sm.input.full).weights)
stores = read_split(sm.input.test)["stores"]
parts = []
for path in sm.input.fits:
    attr = Attributions.load(path)
    m = int(attr.meta["n_masks"])
    method = "coar-ridge" if "/ridge-m" in path else "coar"
    w = centred(attr.weights)
    cos = (w * full).sum(1) / np.maximum(np.linalg.norm(w, axis=1) * np.linalg.norm(full, axis=1), 1e-300)
    t = evaluate_stores({method: attr}, stores)
    parts.append(t.assign(m=m, cosine=cos[t["example"].to_numpy()]))
loo = evaluate_stores({"loo": Attributions.load(sm.input.loo)}, stores).assign(m=np.nan, cosine=np.nan)
table = pd.concat(parts + [loo], ignore_index=True)
table.to_csv(sm.output[0], index=False)
print(table.groupby(["method", "m"], dropna=False)[["correlation", "cosine"]].mean().to_string())
