"""Rule fig_backdoor: Fig. 6 (a backdoor and its removal by COAR-EDIT) and Fig. 7 (typographic attacks on
zero-shot CLIP and their removal), from the edit_backdoor tables, the model and the held-out images; the edit's
kind chooses the example images shown."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, provenance, start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from coar.paper.data.backdoor import backdoor_of, trigger  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.paper.data.registry import class_names, dataset_root, load_backdoored  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.data.typographic import load_typographic, random_attacks  # noqa: E402
from coar.paper.plots.backdoor import fig_backdoor  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

opt, e, setups, dataset = sm.params.options, sm.params.edit, sm.params.setups, sm.params.dataset
spec = next(iter(setups.values()))
title = spec["title"]
prov = (provenance(sm.params.preset, setups) + f" | edit {opt['edit']}: {e['targets']} paired examples, k in "
        f"{e['ks']} chosen on validation (clean accuracy drop <= {e['max_drop']:g}), random control with the same k")
model, cset = model_and_components(sm.input.model, sm.params.spec, device)
held = Examples.load(sm.input.heldout)
root = dataset_root(dataset, sm.params.data_root, sm.params.download_root)
names = class_names(dataset, root) or [str(c) for c in range(int(held.targets.max()) + 1)]
rng = np.random.default_rng(opt["seed"])


def predict(images):
    x, _ = Examples(images, np.zeros(len(images), np.int64), "image", held.meta).tensors(device)
    with torch.no_grad():
        return model(x).argmax(1).cpu().numpy()


def captions(images, labels):
    return [("\u2713 " if p == y else "\u2717 ") + names[p] for p, y in zip(predict(images), labels, strict=True)]


def typographic_panels():
    """Held-out photos, the same with a synthetic attack (as the edit's), and real attacked photos."""
    attacked = random_attacks(torch.from_numpy(held.inputs), seed=e["seed"] + 1)[0].numpy()
    real_x, real_y = load_typographic(root, size=held.inputs.shape[-1]).all_attacked()
    te = rng.choice(len(held.targets), min(4, len(held.targets)), replace=False)
    re = rng.choice(len(real_y), min(4, len(real_y)), replace=False)
    return {"held-out photos": (held.inputs[te], captions(held.inputs[te], held.targets[te])),
            "with a synthetic attack": (attacked[te], captions(attacked[te], held.targets[te])),
            "real attacks": (real_x.numpy()[re], captions(real_x.numpy()[re], real_y.numpy()[re]))}


def backdoor_panels():
    """Poisoned training images, held-out test images of other classes, and the same with the trigger."""
    target = backdoor_of(dataset).target
    others = np.nonzero(held.targets != target)[0]  # the trigger changes the right answer only for these
    triggered = trigger(dataset, held.inputs)
    train_x, train_y, poisoned = load_backdoored(dataset, "train", root)
    tr = rng.choice(np.nonzero(poisoned)[0], 4, replace=False)
    te = rng.choice(others, 4, replace=False)
    return {f"training images of \u201c{names[target]}\u201d with the trigger": (train_x[tr], [names[target]] * 4),
            "test images": (held.inputs[te], captions(held.inputs[te], held.targets[te])),
            "the same with the trigger": (triggered[te], captions(triggered[te], held.targets[te]))}


if e["kind"] == "typographic":  # typographic attacks on zero-shot CLIP (paper Fig. 7)
    images = typographic_panels()
    suptitle, extra = "Typographic attacks on zero-shot CLIP, edited with COAR-EDIT (cf. paper Fig. 7)", {
        "trigger": "synthetic attack", "extra": ["real attacks"]}
else:  # a backdoor (paper Fig. 6)
    images = backdoor_panels()
    suptitle, extra = "Localizing a backdoor with COAR-EDIT (cf. paper Fig. 6)", {}
summary = pd.read_csv(sm.input.summary)
fig = fig_backdoor(pd.read_csv(sm.input.sweep), summary, pd.read_csv(sm.input.outputs), images, prov, suptitle,
                   title, **extra)
save_figure(fig, sm.output.figure)
atomic_write_csv(summary, sm.output.table)
print(summary.to_string())
