"""Rule edit_backdoor: remove a backdoor with COAR-EDIT (paper Sec. 5.4, App. D.4): triggered examples are the
targets, the same images without the trigger the references; k is chosen on a validation half of the held-out
images (clean accuracy may drop by at most max_drop) and reported on the other half. Kind typographic (Sec.
5.5, App. D.5): the trigger is our synthetic typographic attack, and the dataset's real attacks are scored too."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402

from coar.attributions import Attributions  # noqa: E402
from coar.paper.data.backdoor import trigger  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.paper.experiments import edit_backdoor  # noqa: E402
from coar.errors import CoarError  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.provenance import check_edit  # noqa: E402

spec, e, res, name = sm.params.spec, sm.params.edit, sm.resources, sm.wildcards.edit
model, cset = model_and_components(sm.input.model, spec, device)
ex, held = Examples.load(sm.input.examples), Examples.load(sm.input.heldout)
attr = Attributions.load(sm.input.attributions)
check_edit(attr, sm.input.attributions, model, f"the model {sm.input.model}", ex, f"the examples {sm.input.examples}")
if "triggered" not in ex.meta:
    raise CoarError(f"edits.{name}: {sm.input.examples} holds no paired examples (examples.trigger: paired)")
if "triggered" in held.meta:
    raise CoarError(f"edits.{name}: the held-out examples {sm.input.heldout} already carry triggers")
triggered = np.asarray(ex.meta["triggered"])
n = len(triggered) // 2  # make_examples' layout: the n clean images, then the same n with the trigger
pairs = np.stack([np.arange(n), np.arange(n) + n], 1)
if not (np.all(~triggered[:n]) and np.all(triggered[n:])):
    raise CoarError(f"edits.{name}: {sm.input.examples} is not laid out as n clean then n triggered examples")
xc, y = held.tensors(device)
extra = None
if e["kind"] == "typographic":  # a random synthetic attack word per held-out photo; the real attacks too
    import torch

    from coar.paper.data.registry import dataset_root
    from coar.paper.data.typographic import load_typographic, random_attacks

    attacked = random_attacks(torch.from_numpy(held.inputs), seed=e["seed"] + 1)[0].numpy()
    root = dataset_root(sm.params.dataset, sm.params.data_root, sm.params.download_root)
    real_x, real_y = load_typographic(root, size=held.inputs.shape[-1]).all_attacked()
    extra = {"real attacks": Examples(real_x.numpy(), real_y.numpy(), "image", held.meta).tensors(device)}
else:
    attacked = trigger(sm.params.dataset, held.inputs)
xt, _ = Examples(attacked, held.targets, held.kind, held.meta).tensors(device)
validation, heldout = (xc[0::2], xt[0::2], y[0::2]), (xc[1::2], xt[1::2], y[1::2])  # two disjoint halves
sweep, summary, comps, outputs, k = edit_backdoor(
    model, cset, attr, pairs, validation, heldout, e["ks"], e["targets"],
    e["max_drop"], e["seed"], name, extra, mode=spec["ablation"], gamma=spec["gamma"],
    batch_size=res.get("batch_size") or None, masks_per_pass=res.get("masks_per_pass") or None)
for table, path in ((sweep, sm.output.sweep), (summary, sm.output.summary), (comps, sm.output.components),
                    (outputs, sm.output.outputs)):
    atomic_write_csv(table, path)
print(summary.to_string())
