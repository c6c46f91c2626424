"""Rule fig_backdoor: Fig. 6 (the backdoor and its removal by COAR-EDIT) and Fig. 24 (input-x-gradient saliency
of the ablated components), from the edit_backdoor tables, the model and the held-out images."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, provenance, start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from coar.paper.data.backdoor import backdoor_of, trigger, trigger_region  # noqa: E402
from coar.examples import Examples  # noqa: E402
from coar.paper.data.registry import class_names, dataset_root, load_backdoored  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

n, opt, e, setups, dataset = int(sm.wildcards.n), sm.params.options, sm.params.edit, sm.params.setups, sm.params.dataset
spec = next(iter(setups.values()))
title = spec["title"]
prov = (provenance(sm.params.preset, setups) + f" | edit {opt['edit']}: {e['targets']} paired examples, k in "
        f"{e['ks']} chosen on validation (clean accuracy drop <= {e['max_drop']:g}), random control with the same k")
model, cset = model_and_components(sm.input.model, sm.params.spec, device)
held = Examples.load(sm.input.heldout)
root = dataset_root(dataset, sm.params.data_root, sm.params.download_root)
names = class_names(dataset, root) or [str(c) for c in range(int(held.targets.max()) + 1)]
rng = np.random.default_rng(opt["seed"])
if n != 7:
    target = backdoor_of(dataset).target
    others = np.nonzero(held.targets != target)[0]  # the trigger changes the right answer only for these
    triggered = trigger(dataset, held.inputs)


def predict(images):
    x, _ = Examples(images, np.zeros(len(images), np.int64), "image", held.meta).tensors(device)
    with torch.no_grad():
        return model(x).argmax(1).cpu().numpy()


def captions(images, labels):
    return [("\u2713 " if p == y else "\u2717 ") + names[p] for p, y in zip(predict(images), labels, strict=True)]


if n == 7:  # typographic attacks on zero-shot CLIP (paper Fig. 7)
    from coar.paper.data.typographic import load_typographic, random_attacks
    from coar.paper.plots.backdoor import fig_backdoor

    attacked = random_attacks(torch.from_numpy(held.inputs), seed=e["seed"] + 1)[0].numpy()  # as the edit's
    real_x, real_y = load_typographic(root, size=held.inputs.shape[-1]).all_attacked()
    te = rng.choice(len(held.targets), min(4, len(held.targets)), replace=False)
    re = rng.choice(len(real_y), min(4, len(real_y)), replace=False)
    images = {"held-out photos": (held.inputs[te], captions(held.inputs[te], held.targets[te])),
              "with a synthetic attack": (attacked[te], captions(attacked[te], held.targets[te])),
              "real attacks": (real_x.numpy()[re], captions(real_x.numpy()[re], real_y.numpy()[re]))}
    summary = pd.read_csv(sm.input.summary)
    fig = fig_backdoor(pd.read_csv(sm.input.sweep), summary, pd.read_csv(sm.input.outputs), images, prov,
                       "Typographic attacks on zero-shot CLIP, edited with COAR-EDIT (cf. paper Fig. 7)", title,
                       trigger="synthetic attack", extra=["real attacks"])
    table = summary
elif n == 6:
    from coar.paper.plots.backdoor import fig_backdoor

    train_x, train_y, poisoned = load_backdoored(dataset, "train", root)
    tr = rng.choice(np.nonzero(poisoned)[0], 4, replace=False)
    te = rng.choice(others, 4, replace=False)
    images = {f"training images of \u201c{names[target]}\u201d with the trigger": (train_x[tr], [names[target]] * 4),
              "test images": (held.inputs[te], captions(held.inputs[te], held.targets[te])),
              "the same with the trigger": (triggered[te], captions(triggered[te], held.targets[te]))}
    summary = pd.read_csv(sm.input.summary)
    fig = fig_backdoor(pd.read_csv(sm.input.sweep), summary, pd.read_csv(sm.input.outputs), images, prov,
                       "Localizing a backdoor with COAR-EDIT (cf. paper Fig. 6)", title)
    table = summary
else:
    from coar.paper.plots.backdoor import fig_backdoor_saliency
    from coar.saliency import component_outputs, component_saliency, region_share

    # COAR-EDIT's top-ranked components: the edit ablates the first k of them (marked), the rest show what the
    # ranking puts next
    comps = pd.read_csv(sm.input.components).sort_values("rank").head(opt["components"])
    ablated = comps.ablated.astype(str).isin(["True", "1"]).to_numpy()
    labels = cset.labels()
    flat = [labels.index(c) for c in comps.component]
    show = rng.choice(others, min(opt["examples"], len(others)), replace=False)
    scored = rng.choice(others, min(256, len(others)), replace=False)
    xs, _ = Examples(triggered[show], held.targets[show], "image", held.meta).tensors(device)
    xa, _ = Examples(triggered[scored], held.targets[scored], "image", held.meta).tensors(device)
    rows, cols = trigger_region()
    maps = np.stack([component_saliency(model, cset, c, xs) for c in flat])

    def share(c):  # mean share of the component's absolute saliency inside the trigger square
        return float(region_share(component_saliency(model, cset, c, xa), rows, cols).mean())

    shares = [share(c) for c in flat]
    control = rng.choice(np.setdiff1d(np.arange(cset.size), flat), min(16, cset.size - len(flat)), replace=False)
    control_shares = [share(c) for c in control]  # the same measure for random components: the baseline
    # how far the trigger moves each component's output, in standard deviations over the clean images
    xc, _ = Examples(held.inputs[scored], held.targets[scored], "image", held.meta).tensors(device)
    both = np.concatenate([flat, control])
    clean_out, trig_out = (component_outputs(model, cset, both, x) for x in (xc, xa))
    shift = (trig_out - clean_out).mean(0) / np.maximum(clean_out.std(0), 1e-12)
    area = (rows.stop - rows.start) * (cols.stop - cols.start) / float(np.prod(held.inputs.shape[2:]))
    names = [f"{c} ({'ablated' if a else 'not ablated'})" for c, a in zip(comps.component, ablated, strict=True)]
    fig = fig_backdoor_saliency(triggered[show], maps, names, shares, area, prov,
                                "Components COAR-EDIT ranks first to remove the backdoor: input-x-gradient saliency "
                                f"(cf. paper Fig. 24); the edit ablates the first {int(ablated.sum())}", title,
                                control_share=float(np.mean(control_shares)),
                                shifts=shift[: len(flat)], control_shift=float(np.mean(np.abs(shift[len(flat):]))))
    table = pd.concat([comps.assign(kind=np.where(ablated, "ablated by COAR-EDIT", "ranked, not ablated"),
                                    trigger_share=shares),
                       pd.DataFrame({"kind": "random control", "component": [labels[c] for c in control],
                                     "trigger_share": control_shares})], ignore_index=True)
    table["trigger_shift_sd"] = shift
    table = table.assign(trigger_area_share=area, images=len(scored))
save_figure(fig, sm.output.figure)
atomic_write_csv(table, sm.output.table)
print(table.to_string())
