"""Rule baseline: LOO, GP, NC or II attributions for the setup's examples."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, start  # noqa: E402

device = start(sm)

from coar.baselines import compute_baseline  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.outputs import get_output_fn  # noqa: E402
from coar.provenance import for_baseline  # noqa: E402

spec, method, res = sm.params.spec, sm.wildcards.method, sm.resources
model, cset = model_and_components(sm.input.model, spec, device)
examples = Examples.load(sm.input.examples)
x, y = examples.tensors(device)
kw = {"batch_size": res["batch_size"]} if res.get("batch_size") else {}  # 0 or unset: each method's own choice
if method in ("loo", "gp"):
    kw.update(mode=spec["ablation"], gamma=spec["gamma"])
options = spec.get("baseline_options") or {}  # cost bounds (null: the paper's full baselines)
if method == "loo":
    kw["masks_per_pass"] = res.get("masks_per_pass") or None  # None: the engine's choice
    kw["n_components"] = options.get("loo_components")
if method in ("nc", "ii") and options.get("n_steps"):
    kw["n_steps"] = options["n_steps"]
if method in ("nc", "ii"):
    kw["n_groups"] = options.get("groups")
prov = for_baseline(model, cset, examples, spec["output"], spec["ablation"] if "mode" in kw else None, spec["gamma"])
attr = compute_baseline(method, model, cset, x, y, get_output_fn(spec["output"]), **kw)
attr.meta["provenance"] = prov
attr.save(sm.output[0])
