"""Rule fit: COAR attributions from all training shards (one pass, one factorisation)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm, torch=False)  # torch only to fit on a GPU

import json  # noqa: E402

from coar.pipeline import fit_stores  # noqa: E402

from coar.attributions import Attributions  # noqa: E402

spec = sm.params.spec
stores = json.load(open(sm.input[0]))["stores"]
method = spec["regression"]
options = dict(spec.get("estimator") or {}) if method in ("prior", "lowrank", "lasso") else {}
options.pop("prior", None)
lambdas = spec["lambdas"] if method in ("ols", "ridge") else options.pop("lambdas", None)
prior = Attributions.load(sm.input.prior) if method == "prior" else None
attr = fit_stores(stores, method, lambdas, device=None if device == "cpu" else device,
                  max_masks=sm.params.max_masks, prior=prior, **options)
attr.method = "coar"
attr.save(sm.output[0])
print(f"COAR ({spec['regression']}) for {attr.n_examples} examples x {attr.n_components} components")
