"""Rule fit: COAR attributions from all training shards (one pass, one factorisation)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm, torch=False)  # torch only to fit on a GPU

from dataclasses import replace  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.paper.receipts import read_split  # noqa: E402
from coar.pipeline import fit_stores  # noqa: E402
from coar.settings import FitSettings  # noqa: E402

spec = sm.params.spec
stores = read_split(sm.input[0])["stores"]
fit = FitSettings.from_spec(spec)  # the plan validated these settings with the same rules
if fit.method == "prior":
    fit = replace(fit, prior=Attributions.load(sm.input.prior))
fit = fit.validate(names=FitSettings.spec_names(f"setups.{sm.wildcards.setup}", fit.method))
attr = fit_stores(stores, device=None if device == "cpu" else device, max_masks=sm.params.max_masks,
                  **fit.fit_kwargs())
attr.method = "coar"
attr.save(sm.output[0])
print(f"COAR ({fit.method}) for {attr.n_examples} examples x {attr.n_components} components")
