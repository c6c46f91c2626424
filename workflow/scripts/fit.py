"""Rule fit: COAR attributions from all training shards (one pass, one factorisation)."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: F821
sm = snakemake  # noqa: F821

import os  # noqa: E402

os.environ.setdefault("TQDM_MININTERVAL", "15")  # progress lines in the log every 15 s, not every step
import torch  # noqa: E402

torch.set_num_threads(sm.threads)  # one job = its declared threads: no oversubscription of the cores

import json  # noqa: E402


from coar.pipeline import fit_stores  # noqa: E402

spec = sm.params.spec
stores = json.load(open(sm.input[0]))["stores"]
device = "cuda" if torch.cuda.is_available() and sm.resources.get("gpu", 0) else None
attr = fit_stores(stores, spec["regression"], spec["lambdas"], device=device)
attr.method = "coar"
attr.save(sm.output[0])
print(f"COAR ({spec['regression']}) for {attr.n_examples} examples x {attr.n_components} components")
