"""Rule example_scatters: true vs estimated counterfactuals at alpha_train for random examples and every
method (paper Figs. 15-16)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, torch=False)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.receipts import read_split  # noqa: E402
from coar.pipeline import scatter_table  # noqa: E402

attrs = {Path(p).stem: Attributions.load(p) for p in sm.input.attributions}
store = read_split(sm.input.test)["stores"][0]
n = attrs["coar"].n_examples
picks = np.random.default_rng(sm.params.seed).choice(n, size=min(sm.params.examples, n), replace=False)
table = pd.concat([scatter_table(attrs, store, int(i)) for i in picks], ignore_index=True)
atomic_write_csv(table.assign(setup=sm.wildcards.setup), sm.output[0])
print(f"examples {sorted(picks.tolist())}")
