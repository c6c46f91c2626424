"""Rules evaluate_alpha / evaluate_on: per-example correlations of the given attributions on one split
of evaluation masks."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, torch=False)

from pathlib import Path  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.receipts import read_split  # noqa: E402
from coar.pipeline import evaluate_stores  # noqa: E402

attrs = {Path(p).stem: Attributions.load(p) for p in sm.input.attributions}
table = evaluate_stores(attrs, read_split(sm.input.test)["stores"])
atomic_write_csv(table, sm.output[0])
print(table.groupby(["method", "alpha_test"]).correlation.mean().to_string())
