"""Rules fig_edit_single / fig_edit_forget: the editing figures (paper Figs. 3, 4, 19-23) from the edit tables."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import json  # noqa: E402

import pandas as pd  # noqa: E402

from coar import plots_editing as pe  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

SUPTITLES = {3: "Editing one prediction with COAR-EDIT (cf. paper Fig. 3)",
             19: "Fixing misclassifications one at a time (cf. paper Fig. 19)",
             20: "Fixing more misclassifications one at a time (cf. paper Fig. 20)",
             21: "Inducing misclassifications (cf. paper Fig. 21)",
             5: "Improving subpopulation robustness with COAR-EDIT (cf. paper Fig. 5)",
             22: "Layers of the components COAR-EDIT ablates to fix errors (cf. paper Fig. 22)",
             4: "Forgetting a class with COAR-EDIT (cf. paper Fig. 4)",
             23: "Forgetting more classes (cf. paper Fig. 23)"}
n, opt, e, setups = int(sm.wildcards.n), sm.params.options, sm.params.edit, sm.params.setups
title = next(iter(setups.values()))["title"]
prov = (provenance(sm.params.preset, setups) + f" | edit {opt['edit']}: {e['kind']}, {e['references']} random "
        f"references, k in {e['ks']}, random-components control with the same k")
if e["kind"] in ("fix", "induce"):
    prov += f"; k: smallest that flips the target, validation accuracy drop \u2264 {100 * e['max_drop']:g} pp"
if n in (4, 23):
    sweep = pd.concat([pd.read_csv(p) for p in sm.input.sweep], ignore_index=True)
    chosen = [json.load(open(p)) for p in sm.input.chosen]
    ks = {c["class_name"]: c["k"] for c in chosen}
    if n == 4:
        fig = pe.fig_forget_class(sweep, pd.read_csv(sm.input.classwise[0]), chosen[0]["class_name"], chosen[0]["k"],
                                  prov, SUPTITLES[n], title, shifted=pd.read_csv(sm.input.shifted[0]))
    else:
        fig = pe.fig_forget_classes(sweep, ks, prov, SUPTITLES[n], title)
    table = pd.DataFrame(chosen)
elif n == 5:  # worst-group, average-group and overall accuracy on the held-out half vs k, a panel per edit
    sweep = pd.concat([pd.read_csv(p, dtype={"target": str}) for p in sm.input.sweep], ignore_index=True)
    summaries = [pd.read_csv(p).assign(edit=pd.read_csv(s, dtype={"target": str}).target.iloc[0])
                 for p, s in zip(sm.input.summary, sm.input.sweep)]
    table = pd.concat(summaries, ignore_index=True)
    chosen = table[(table.method == "coar") & table.chosen.astype(str).isin(["True", "1"])].drop_duplicates("edit")
    keep = sweep.set.isin([f"held-out: {m}" for m in ("worst group", "average group", "overall")])
    groups = "; ".join(f"{r.edit}: {r.target_group}" for r in chosen.itertuples())
    fig = pe.fig_forget_classes(sweep[keep], dict(zip(chosen.edit, chosen.k.astype(int))), prov, SUPTITLES[n],
                                " | ".join(dict.fromkeys(v["title"] for v in setups.values())) + f" | target groups: {groups}")
else:
    sweep, summary = pd.read_csv(sm.input.sweep[0], dtype={"target": str}), pd.read_csv(sm.input.summary[0], dtype={"target": str})
    targets = sorted(summary.target.unique(), key=int) if "target" in summary else []
    if n == 3:
        fixed = summary[(summary.method == "coar") & summary.flipped].target.tolist()
        show = str(opt["show"]) if opt.get("show") is not None else (sorted(fixed, key=int) or targets)[0]
        fig = pe.fig_edit_prediction(sweep, summary, show, prov, SUPTITLES[n], title)
    elif n == 22:
        fig = pe.fig_edit_layers(pd.read_csv(sm.input.components, dtype={"target": str}), prov, SUPTITLES[n], title)
    else:
        coar = summary[summary.method == "coar"]
        chosen = dict(zip(coar.target, coar.k)) if "first_k" in summary else None
        fig = pe.fig_edit_examples(sweep, targets[: opt.get("show") or 4], prov, SUPTITLES[n], title, chosen)
    table = summary
save_figure(fig, sm.output.figure)
atomic_write_csv(table, sm.output.table)
print(table.to_string())
