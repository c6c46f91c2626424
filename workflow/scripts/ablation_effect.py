"""Rule ablation_effect: per evaluation mask, the ablated model's accuracy and the Pearson correlation of
its margins with the unablated margins across examples (paper Fig. 25); alpha 0 is the unablated model."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from coar.engine import counterfactual_outputs  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.correlation import pearson_columns  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.outputs import get_output_fn  # noqa: E402
from coar.paper.receipts import read_split  # noqa: E402
from coar.store import load_shards  # noqa: E402

spec = sm.params.spec
model, cset = model_and_components(sm.input.model, spec, device)
x, y = Examples.load(sm.input.examples).tensors(device)
base = counterfactual_outputs(model, cset, x, y, np.ones((1, cset.size), bool), get_output_fn("margin"))[0]
rows = [pd.DataFrame({"alpha": [0.0], "mask": [0], "accuracy": [(base > 0).mean()], "correlation": [1.0]})]
for path in sm.input.tests:
    split = read_split(path)
    _, out = (np.concatenate(p) for p in zip(*load_shards(split["stores"])))
    out = out.astype(np.float64)
    corr = pearson_columns(out.T, np.repeat(base[:, None].astype(np.float64), len(out), 1))
    rows.append(pd.DataFrame({"alpha": split["alpha"], "mask": np.arange(len(out)),
                              "accuracy": (out > 0).mean(1), "correlation": corr}))
table = pd.concat(rows, ignore_index=True)
atomic_write_csv(table, sm.output[0])
print(table.groupby("alpha")[["accuracy", "correlation"]].mean().to_string())
