"""Rule baseline: LOO, GP, NC or II attributions for the setup's examples."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: F821
sm = snakemake  # noqa: F821

import os  # noqa: E402

os.environ.setdefault("TQDM_MININTERVAL", "15")  # progress lines in the log every 15 s, not every step
import torch  # noqa: E402

torch.set_num_threads(sm.threads)  # one job = its declared threads: no oversubscription of the cores


from coar.baselines import compute_baseline  # noqa: E402
from coar.components import component_set  # noqa: E402
from coar.data.examples import Examples  # noqa: E402
from coar.outputs import get_output_fn  # noqa: E402
from coar.training import load_checkpoint  # noqa: E402

spec, method, res = sm.params.spec, sm.wildcards.method, sm.resources
device = "cuda" if torch.cuda.is_available() and res.get("gpu", 0) else "cpu"
model, _ = load_checkpoint(sm.input.model, device)
cset = component_set(model, spec["components"] or spec["model"])
x, y = Examples.load(sm.input.examples).tensors(device)
kw = {"batch_size": res.get("batch_size", 256)}
if method in ("loo", "gp"):
    kw.update(mode=spec["ablation"], gamma=spec["gamma"])
if method == "loo":
    kw["masks_per_pass"] = res.get("masks_per_pass", 8)
attr = compute_baseline(method, model, cset, x, y, get_output_fn(spec["output"]), **kw)
attr.save(sm.output[0])
