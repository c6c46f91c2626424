"""Rules fig_edit_single / fig_edit_forget: the editing figures (paper Figs. 3, 4, 5, 19-23) from the edit tables;
the rule names the drawing (one function below per kind of figure) and its title."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import provenance, start  # noqa: E402

start(sm, torch=False)

import json  # noqa: E402

import pandas as pd  # noqa: E402

from coar.paper.plots import editing as pe  # noqa: E402
from coar.io import atomic_write_csv  # noqa: E402
from coar.paper.plots.style import save_figure  # noqa: E402

opt, e, setups, suptitle = sm.params.options, sm.params.edit, sm.params.setups, sm.params.suptitle
title = next(iter(setups.values()))["title"]
prov = (provenance(sm.params.preset, setups) + f" | edit {opt['edit']}: {e['kind']}, {e['references']} random "
        f"references, k in {e['ks']}, random-components control with the same k")
if e["kind"] in ("fix", "induce"):
    prov += f"; k: smallest that flips the target, validation accuracy drop \u2264 {100 * e['max_drop']:g} pp"


def forget_sweep():
    sweep = pd.concat([pd.read_csv(p) for p in sm.input.sweep], ignore_index=True)
    chosen = [json.load(open(p)) for p in sm.input.chosen]
    return sweep, chosen


def forget_class():  # one forgotten class: its sweep, the class-wise accuracies and the shifted sets
    sweep, chosen = forget_sweep()
    fig = pe.fig_forget_class(sweep, pd.read_csv(sm.input.classwise[0]), chosen[0]["class_name"], chosen[0]["k"],
                              prov, suptitle, title, shifted=pd.read_csv(sm.input.shifted[0]))
    return fig, pd.DataFrame(chosen)


def forget_classes():  # several forgotten classes, a panel each
    sweep, chosen = forget_sweep()
    fig = pe.fig_forget_classes(sweep, {c["class_name"]: c["k"] for c in chosen}, prov, suptitle, title)
    return fig, pd.DataFrame(chosen)


def subpopulations():  # worst-group, average-group and overall accuracy on the held-out half vs k, a panel per edit
    sweep = pd.concat([pd.read_csv(p, dtype={"target": str}) for p in sm.input.sweep], ignore_index=True)
    summaries = [pd.read_csv(p).assign(edit=pd.read_csv(s, dtype={"target": str}).target.iloc[0])
                 for p, s in zip(sm.input.summary, sm.input.sweep)]
    table = pd.concat(summaries, ignore_index=True)
    chosen = table[(table.method == "coar") & table.chosen.astype(str).isin(["True", "1"])].drop_duplicates("edit")
    keep = sweep.set.isin([f"held-out: {m}" for m in ("worst group", "average group", "overall")])
    groups = "; ".join(f"{r.edit}: {r.target_group}" for r in chosen.itertuples())
    fig = pe.fig_forget_classes(sweep[keep], dict(zip(chosen.edit, chosen.k.astype(int))), prov, suptitle,
                                " | ".join(dict.fromkeys(v["title"] for v in setups.values())) + f" | target groups: {groups}")
    return fig, table


def single_edit():
    sweep = pd.read_csv(sm.input.sweep[0], dtype={"target": str})
    summary = pd.read_csv(sm.input.summary[0], dtype={"target": str})
    targets = sorted(summary.target.unique(), key=int) if "target" in summary else []
    return sweep, summary, targets


def edit_prediction():  # one edited prediction in detail (the first fixed target unless `show` names one)
    sweep, summary, targets = single_edit()
    fixed = summary[(summary.method == "coar") & summary.flipped].target.tolist()
    show = str(opt["show"]) if opt.get("show") is not None else (sorted(fixed, key=int) or targets)[0]
    return pe.fig_edit_prediction(sweep, summary, show, prov, suptitle, title), summary


def edit_layers():  # where the ablated components sit
    _, summary, _ = single_edit()
    return pe.fig_edit_layers(pd.read_csv(sm.input.components, dtype={"target": str}), prov, suptitle, title), summary


def edit_examples():  # several targets, a panel each
    sweep, summary, targets = single_edit()
    coar = summary[summary.method == "coar"]
    chosen = dict(zip(coar.target, coar.k)) if "first_k" in summary else None
    return pe.fig_edit_examples(sweep, targets[: opt.get("show") or 4], prov, suptitle, title, chosen), summary


DRAWINGS = {f.__name__: f for f in (forget_class, forget_classes, subpopulations, edit_prediction, edit_layers,
                                    edit_examples)}
fig, table = DRAWINGS[sm.params.drawing]()
save_figure(fig, sm.output.figure)
atomic_write_csv(table, sm.output.table)
print(table.to_string())
