"""Rule edit_forget: forget one class (paper Sec. 5.2, App. D.2); k is chosen on the validation half of the
held-out examples and reported on the other half."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, start  # noqa: E402

device = start(sm)

import json  # noqa: E402

import torch  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.paper.data.registry import class_names  # noqa: E402
from coar.paper.experiments import forget_class  # noqa: E402
from coar.io import atomic_write_csv, atomic_write_text  # noqa: E402
from coar.provenance import check_edit  # noqa: E402

spec, e, res, cls = sm.params.spec, sm.params.edit, sm.resources, int(sm.wildcards.cls)
model, cset = model_and_components(sm.input.model, spec, device)
ex = Examples.load(sm.input.examples)
attr = Attributions.load(sm.input.attributions)
check_edit(attr, sm.input.attributions, model, f"the model {sm.input.model}", ex, f"the examples {sm.input.examples}")
hx, hy = Examples.load(sm.input.heldout).tensors(device)
validation, heldout = (hx[0::2], hy[0::2]), (hx[1::2], hy[1::2])  # alternate examples: two disjoint halves
shifted = {}
for path in sm.input.shifted:  # this class's every example, the other classes' from the random draw only
    shift = Examples.load(path)
    sx, sy = shift.tensors(device)
    keep = torch.as_tensor(shift.meta.get("drawn", [True] * len(shift)), device=sy.device) | (sy == cls)
    shifted[shift.meta.get("title", path)] = (sx[keep], sy[keep])
names = class_names(sm.params.dataset)
sweep, classwise, k, shift_table = forget_class(
    model, cset, attr, ex.targets, cls, validation, heldout, e["ks"], e["targets"],
    e["references"], e["max_drop"], e["seed"], names, mode=spec["ablation"], gamma=spec["gamma"],
    batch_size=res.get("batch_size") or None, masks_per_pass=res.get("masks_per_pass") or None, shifted=shifted)
atomic_write_csv(sweep, sm.output.sweep)
atomic_write_csv(classwise, sm.output.classwise)
atomic_write_csv(shift_table, sm.output.shifted)
acc = sweep.set_index(["method", "set", "k"]).accuracy
report = {"class": cls, "class_name": names[cls] if names else str(cls), "k": k, "components": cset.size,
          **{f"{m}_{part}_{when}": float(acc[(m, f"held-out: {part} class" if part == "forgotten" else
                                                  f"held-out: {part} classes", kk)])
             for m in ("coar", "random") for part in ("forgotten", "other") for when, kk in (("before", 0), ("after", k))}}
for row in shift_table.itertuples():  # the forgotten class and the others on each shifted set
    report[f"{row.shift}: {row.part}, {row.method}"] = row.accuracy
atomic_write_text(sm.output.chosen, json.dumps(report, indent=1))
print(json.dumps(report, indent=1))
