"""Rule edit_single: fix misclassified examples (kind fix) or induce errors (kind induce) one at a time
(paper Sec. 5.1, App. D.1; k chosen on a validation half of the held-out examples, reported on the other), or raise the worst group's accuracy (kind subpop, Sec. 5.3, App. D.3); each with
the random-components control."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
from coar.engine import counterfactual_outputs  # noqa: E402
from coar.attributions import Attributions  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.paper.experiments import edit_single_examples, pick_targets  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.outputs import margin  # noqa: E402
from coar.provenance import check_edit  # noqa: E402

spec, e, res = sm.params.spec, sm.params.edit, sm.resources
model, cset = model_and_components(sm.input.model, spec, device)
examples = Examples.load(sm.input.examples)
x, y = examples.tensors(device)
heldout = Examples.load(sm.input.heldout).tensors(device)
attr = Attributions.load(sm.input.attributions)
check_edit(attr, sm.input.attributions, model, f"the model {sm.input.model}", examples,
           f"the examples {sm.input.examples}")
kw = dict(mode=spec["ablation"], gamma=spec["gamma"], batch_size=res.get("batch_size") or None,
          masks_per_pass=res.get("masks_per_pass") or None)
if e["kind"] == "subpop":  # Sec. 5.3: the worst group against the others; k chosen on a validation half
    from coar.paper.data.registry import group_names
    from coar.paper.experiments import edit_subpopulation

    held = Examples.load(sm.input.heldout)
    g = np.asarray(held.meta["groups"])
    hx, hy = heldout
    sweep, summary, comps, k = edit_subpopulation(
        model, cset, attr, np.asarray(Examples.load(sm.input.examples).meta["groups"]), (hx[0::2], hy[0::2], g[0::2]),
        (hx[1::2], hy[1::2], g[1::2]), e["ks"], e.get("group"), e["targets"], e["references"], e["seed"],
        group_names(held.meta["dataset"]), sm.wildcards.edit, **kw)
    atomic_write_csv(sweep, sm.output.sweep)
    atomic_write_csv(summary, sm.output.summary)
    atomic_write_csv(comps, sm.output.components)
    print(summary.to_string())
    sys.exit(0)
base = counterfactual_outputs(model, cset, x, y, np.ones((1, cset.size), bool), margin, **kw)[0]
fix = e["kind"] == "fix"
candidates = pick_targets(base, e["kind"], e.get("targets"), e["seed"], f"edits.{sm.wildcards.edit}")
print(f"{len(candidates)} targets of {int((base < 0).sum())} errors among {len(base)} examples")
hx, hy = heldout
validation, heldout = (hx[0::2], hy[0::2]), (hx[1::2], hy[1::2])  # alternate examples: two disjoint halves
sweep, summary, comps = edit_single_examples(model, cset, attr, x, y, candidates, validation, heldout, e["ks"],
                                             "increase" if fix else "decrease", e["references"], e["max_drop"],
                                             e["seed"], experiment=e["kind"], **kw)
atomic_write_csv(sweep, sm.output.sweep)
atomic_write_csv(summary, sm.output.summary)
atomic_write_csv(comps, sm.output.components)
print(summary.groupby("method")[["flipped", "k", "accuracy_change", "first_k", "first_accuracy_change"]]
      .agg(["mean", "median"]).to_string())
