"""Rule fit: COAR attributions from all training shards (one pass, one factorisation)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm, torch=False)  # torch only to fit on a GPU

import json  # noqa: E402

from coar.pipeline import fit_stores  # noqa: E402

spec = sm.params.spec
stores = json.load(open(sm.input[0]))["stores"]
attr = fit_stores(stores, spec["regression"], spec["lambdas"], device=None if device == "cpu" else device,
                  max_masks=sm.params.max_masks)
attr.method = "coar"
attr.save(sm.output[0])
print(f"COAR ({spec['regression']}) for {attr.n_examples} examples x {attr.n_components} components")
