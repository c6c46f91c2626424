"""Rule evaluate: per-example correlations of every method at every alpha_test, and one example's scatter."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, torch=False)

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.receipts import read_split  # noqa: E402
from coar.pipeline import scatter_table  # noqa: E402

spec = sm.params.spec
attrs = {Path(p).stem: Attributions.load(p) for p in sm.input.attributions}
splits = [read_split(p) for p in sm.input.tests]
table = pd.concat([pd.read_csv(p) for p in sm.input.tables], ignore_index=True)
atomic_write_csv(table, sm.output.correlations)
# the scatter shows the example whose COAR correlation is the median one at the scatter alpha: typical,
# not the best
alpha = sm.params.scatter_alpha or spec["alpha_train"]
alphas = [s["alpha"] for s in splits]
pick = min(range(len(alphas)), key=lambda i: abs(alphas[i] - alpha))
coar = table[(table.method == "coar") & (table.alpha_test == alphas[pick])].sort_values("correlation")
example = int(coar.iloc[len(coar) // 2]["example"])
scatter = scatter_table(attrs, splits[pick]["stores"][0], example).assign(alpha_test=alphas[pick])
atomic_write_csv(scatter, sm.output.scatter)
print(table.groupby(["method", "alpha_test"]).correlation.mean().to_string())
