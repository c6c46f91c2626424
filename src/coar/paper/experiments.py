"""COAR-EDIT experiments (paper Sec. 5.1-5.2, App. D.1-D.2) as functions from a model, its attributions and
example sets to tidy tables. The workflow's edit rules are thin adapters over these.

Every edit is compared with the random-components control: the same k, components drawn uniformly (a fresh
seeded permutation per target). Ablation is weight zeroing (or scaling, `mode`), evaluated in batched
hook passes that are tested equal to weight surgery.

Tables:
  sweep       experiment, target, method (coar | random), k, set, accuracy, mean_margin
  summary     target, method, k (chosen on the validation set: the smallest swept k that flips the target
              while validation accuracy drops by at most max_drop; NaN if none; the random control takes
              COAR-EDIT's k), flipped (the target flipped at k), accuracy_change (held-out accuracy at k minus
              at k = 0; NaN without a k), the same change split into class_accuracy_change (held-out examples
              of the target's class) and others_accuracy_change (the other classes),
              validation_accuracy_change, first_k (the method's smallest swept k that flips the target at any
              cost; NaN if none) and first_accuracy_change (held-out accuracy change there)
  components  target, rank, component, module, module_index (COAR-EDIT's ablated components at the chosen k)
  classwise   class, class_name, before, after, forgotten (held-out accuracy per class)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from ..engine import counterfactual_outputs
from ..attributions import Attributions
from ..components import ComponentSet
from ..editing import DROP_TOLERANCE, check_k, choose_k, edit_scores, keep_mask, ranking, sweep_outputs
from ..errors import CoarError
from ..outputs import margin

EvalSets = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


def _check_ks(ks: Sequence[int], n_components: int) -> list[int]:
    ks = sorted({check_k(k, n_components, "ks", unedited=True) for k in ks})
    if not ks or ks[0] != 0:
        raise CoarError(f"the k sweep must start at 0 (the unedited model), got {ks}")
    return ks


def sweep_margins(model: nn.Module, cset: ComponentSet, order: np.ndarray, ks: Sequence[int], sets: EvalSets,
                  mode: str = "zero", gamma: float = 0.5, batch_size: int | None = None, masks_per_pass: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Correct-class margins [len(ks), N] of every set after ablating the first k components of `order`."""
    return {name: sweep_outputs(model, cset, order, ks, x, y, margin, mode, gamma, batch_size, masks_per_pass)
            for name, (x, y) in sets.items()}


def _rows(experiment: str, target: str, method: str, ks: Sequence[int], margins: Mapping[str, np.ndarray]) -> list[dict]:
    return [{"experiment": experiment, "target": target, "method": method, "k": int(k), "set": name,
             "accuracy": float((m[i] > 0).mean()), "mean_margin": float(m[i].mean())}
            for name, m in margins.items() for i, k in enumerate(ks)]


def _components(target: str, ablated: np.ndarray, cset: ComponentSet) -> list[dict]:
    groups = cset.group_of()
    return [{"target": target, "rank": r + 1, "component": cset.label(int(c)), "module": cset.groups[groups[c]].module,
             "module_index": int(groups[c])} for r, c in enumerate(ablated)]


def _flip_index(target_margin: np.ndarray, direction: str, allowed: np.ndarray) -> int | None:
    """Index of the smallest swept k > 0 whose target margin is on the intended side of 0, among `allowed`."""
    hit = (target_margin > 0 if direction == "increase" else target_margin < 0) & allowed
    hit[0] = False  # k = 0 is the unedited model
    idx = np.nonzero(hit)[0]
    return int(idx[0]) if len(idx) else None


def pick_targets(margins: np.ndarray, kind: str, n: int | None = None, seed: int = 0, what: str = "edit"
                 ) -> np.ndarray:
    """Sec. 5.1's targets among the attribution examples, from the unedited model's correct-class margins: the
    errors (kind "fix": margin < 0) or the correctly classified examples ("induce": margin > 0); when there
    are more than `n`, `n` of them drawn without replacement (seeded). Sorted indices."""
    margins = np.asarray(margins)
    if kind not in ("fix", "induce"):
        raise CoarError(f"{what}: kind must be fix or induce to pick single-example targets, got {kind!r}")
    found = np.nonzero(margins < 0 if kind == "fix" else margins > 0)[0]
    if not len(found):
        raise CoarError(f"{what}: the model has no {'misclassified' if kind == 'fix' else 'correctly classified'}"
                        f" example among the setup's {len(margins)} examples")
    if n is not None and len(found) > n:
        found = np.sort(np.random.default_rng(seed).choice(found, n, replace=False))
    return found


def draw_references(rng: np.random.Generator, n_examples: int, target: int, n_references: int) -> np.ndarray:
    """Sec. 5.1's references for one target: `n_references` of the other attribution examples (all of them if
    fewer), drawn without replacement."""
    others = np.setdiff1d(np.arange(n_examples), [target])
    return rng.choice(others, size=min(n_references, len(others)), replace=False)


def draw_targets(rng: np.random.Generator, members: np.ndarray, n_targets: int, n_references: int, what: str,
                 all_references: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Secs. 5.2-5.3: `n_targets` targets among the attribution examples where `members` holds (the class to
    forget, the group to raise) and `n_references` references among the others, both drawn without
    replacement, targets first. With fewer others than `n_references`, all of them are references, or, with
    `all_references`, it is an error (subpopulations: the paper's few labelled examples per group)."""
    members = np.asarray(members, bool)
    mine, others = np.nonzero(members)[0], np.nonzero(~members)[0]
    if len(mine) < n_targets:
        raise CoarError(f"{what}: {len(mine)} attribution examples, {n_targets} targets asked for")
    if all_references and len(others) < n_references:
        raise CoarError(f"{what}: {len(others)} attribution examples outside it, {n_references} references asked for")
    return rng.choice(mine, n_targets, replace=False), rng.choice(others, min(n_references, len(others)), replace=False)


def edit_single_examples(model: nn.Module, cset: ComponentSet, attributions: Attributions, x: torch.Tensor,
                         y: torch.Tensor, targets: Sequence[int], validation: tuple[torch.Tensor, torch.Tensor],
                         heldout: tuple[torch.Tensor, torch.Tensor], ks: Sequence[int], direction: str = "increase",
                         n_references: int = 50, max_drop: float = 0.02, seed: int = 0, experiment: str = "fix",
                         mode: str = "zero", gamma: float = 0.5, batch_size: int | None = None, masks_per_pass: int | None = None,
                         progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Sec. 5.1 / App. D.1: edit each target example on its own. x, y: the examples the attributions were
    computed for; each target gets `n_references` random other examples of that set as references (seeded
    per target). direction "increase" raises the target's margin (fix an error, bottom-k), "decrease"
    lowers it (induce an error, top-k).

    k is chosen on `validation`: the smallest swept k that flips the target while validation accuracy drops by
    at most `max_drop` (none: the edit fails). The random-components control ablates that same k. Everything
    is reported on `heldout`, disjoint from `validation`. Besides, `first_k` is each method's smallest swept k
    that flips the target whatever it costs (the paper's figures mark it), with `first_accuracy_change`.

    Returns (sweep, summary, components); the sweep's sets are target, reference, validation and held-out."""
    ks = _check_ks(ks, cset.size)
    n = attributions.n_examples
    if len(x) != n:
        raise CoarError(f"{len(x)} examples given for attributions of {n} examples")
    if not 0 <= max_drop <= 1:
        raise CoarError(f"max_drop must be a fraction in [0, 1], got {max_drop}")
    sweep, summary, comps = [], [], []
    held_y = heldout[1].cpu().numpy()
    for t in tqdm(list(targets), desc=experiment, disable=not progress):
        rng = np.random.default_rng([seed, int(t)])
        refs = draw_references(rng, n, int(t), n_references)
        orders = {"coar": ranking(edit_scores(attributions, [t], refs), direction),
                  "random": rng.permutation(cset.size)}
        sets = {"target": (x[[t]], y[[t]]), "reference": (x[refs], y[refs]), "validation": validation,
                "held-out": heldout}
        margins = {}
        for method, order in orders.items():
            margins[method] = sweep_margins(model, cset, order, ks, sets, mode, gamma, batch_size, masks_per_pass)
            sweep += _rows(experiment, str(t), method, ks, margins[method])
        val = (margins["coar"]["validation"] > 0).mean(1)
        chosen = _flip_index(margins["coar"]["target"][:, 0], direction, val[0] - val <= max_drop + DROP_TOLERANCE)
        same = held_y == int(y[t])
        for method, m in margins.items():
            correct = m["held-out"] > 0
            tm = m["target"][:, 0]
            first = _flip_index(tm, direction, np.ones(len(ks), bool))
            row = {"target": str(t), "method": method, "k": np.nan if chosen is None else ks[chosen],
                   "flipped": chosen is not None and bool(tm[chosen] > 0 if direction == "increase" else tm[chosen] < 0)}
            for name, part in (("accuracy_change", slice(None)), ("class_accuracy_change", same),
                               ("others_accuracy_change", ~same)):
                acc = correct[:, part].mean(1) if correct[:, part].size else None
                row[name] = np.nan if acc is None or chosen is None else float(acc[chosen] - acc[0])
            vacc = (m["validation"] > 0).mean(1)
            row["validation_accuracy_change"] = np.nan if chosen is None else float(vacc[chosen] - vacc[0])
            row["first_k"] = np.nan if first is None else ks[first]
            row["first_accuracy_change"] = np.nan if first is None else float(correct[first].mean() - correct[0].mean())
            summary.append(row)
        if chosen is not None:
            comps += _components(str(t), orders["coar"][: ks[chosen]], cset)
    return (pd.DataFrame(sweep), pd.DataFrame(summary),
            pd.DataFrame(comps, columns=["target", "rank", "component", "module", "module_index"]))


def forget_class(model: nn.Module, cset: ComponentSet, attributions: Attributions, y_attr: np.ndarray, cls: int,
                 validation: tuple[torch.Tensor, torch.Tensor], heldout: tuple[torch.Tensor, torch.Tensor],
                 ks: Sequence[int], n_targets: int = 10, n_references: int = 50, max_drop: float = 0.02,
                 seed: int = 0, class_names: Sequence[str] | None = None, mode: str = "zero", gamma: float = 0.5,
                 batch_size: int | None = None, masks_per_pass: int | None = None,
                 shifted: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, int, pd.DataFrame]:
    """Sec. 5.2 / App. D.2: lower the margins of `n_targets` examples of class `cls` (top-k of eq. 8) against
    `n_references` random examples of other classes, all from the attribution examples (labels `y_attr`).
    k is chosen on `validation` (lowest forgotten-class accuracy whose other-class accuracy drops by at most
    `max_drop`) and reported on `heldout`.

    shifted: name -> (x, y) of distribution-shifted sets (the paper: ImageNet-Sketch and ImageNet*), scored
    with the unedited model and with the chosen k of both methods, the forgotten class apart from the others.
    Returns (sweep, classwise, chosen k, shifted table: shift, method, part, k, n, accuracy)."""
    ks = _check_ks(ks, cset.size)
    y_attr = np.asarray(y_attr)
    rng = np.random.default_rng([seed, cls])
    targets, refs = draw_targets(rng, y_attr == cls, n_targets, n_references, f"class {cls}")
    orders = {"coar": ranking(edit_scores(attributions, targets, refs), "decrease"),
              "random": rng.permutation(cset.size)}
    name = class_names[cls] if class_names else str(cls)

    def split(prefix, xy):
        x, y = xy
        inside = (y == cls).cpu().numpy()
        if not inside.any() or inside.all():
            raise CoarError(f"{prefix} set needs examples of class {cls} and of other classes")
        return {f"{prefix}: forgotten class": (x[inside], y[inside]), f"{prefix}: other classes": (x[~inside], y[~inside])}

    sets = {**split("validation", validation), **split("held-out", heldout)}
    rows, margins = [], {}
    for method, order in orders.items():
        margins[method] = sweep_margins(model, cset, order, ks, sets, mode, gamma, batch_size, masks_per_pass)
        rows += _rows("forget", name, method, ks, margins[method])
    sweep = pd.DataFrame(rows)
    val = sweep[sweep.method == "coar"].rename(columns={"set": "split"})
    k = choose_k(val, "validation: forgotten class", "validation: other classes", max_drop, maximize=False)
    # class-wise held-out accuracy before and after the chosen edit
    x, y = heldout
    edited = counterfactual_outputs(model, cset, x, y, np.stack([keep_mask(cset.size, []),
                                                                  keep_mask(cset.size, orders["coar"][:k])]),
                                    margin, mode, gamma, batch_size, masks_per_pass)
    yc = y.cpu().numpy()
    classwise = pd.DataFrame([{"class": int(c), "class_name": class_names[c] if class_names else str(c),
                               "before": float((edited[0][yc == c] > 0).mean()),
                               "after": float((edited[1][yc == c] > 0).mean()), "forgotten": int(c) == cls}
                              for c in np.unique(yc)])
    # the same edits on shifted data: does forgetting transfer (Fig. 4, bottom)?
    shift_rows = []
    methods = {"unedited": keep_mask(cset.size, []), **{m: keep_mask(cset.size, orders[m][:k]) for m in orders}}
    for shift, (xs, ys) in (shifted or {}).items():
        split(shift, (xs, ys))  # fails naming the set when it lacks the class or the others
        out = counterfactual_outputs(model, cset, xs, ys, np.stack(list(methods.values())), margin, mode, gamma,
                                     batch_size, masks_per_pass)
        inside = (ys == cls).cpu().numpy()
        for part, rows in (("forgotten class", inside), ("other classes", ~inside)):
            for i, method in enumerate(methods):
                shift_rows.append({"shift": shift, "method": method, "part": part,
                                   "k": 0 if method == "unedited" else k, "n": int(rows.sum()),
                                   "accuracy": float((out[i][rows] > 0).mean())})
    shifted_table = pd.DataFrame(shift_rows, columns=["shift", "method", "part", "k", "n", "accuracy"])
    return sweep, classwise, k, shifted_table


def edit_subpopulation(model: nn.Module, cset: ComponentSet, attributions: Attributions, groups: np.ndarray,
                       validation: tuple[torch.Tensor, torch.Tensor, np.ndarray],
                       heldout: tuple[torch.Tensor, torch.Tensor, np.ndarray], ks: Sequence[int],
                       target_group: int | None = None, n_targets: int = 10, n_references: int = 10, seed: int = 0,
                       group_names: Sequence[str] | None = None, label: str = "subpopulations", mode: str = "zero",
                       gamma: float = 0.5, batch_size: int | None = None, masks_per_pass: int | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Sec. 5.3 / App. D.3: raise the margins of `n_targets` attribution examples of the worst group (the
    lowest validation accuracy of the unedited model, unless `target_group` is given) against `n_references`
    examples of the other groups (bottom-k of eq. 8). k maximises worst-group accuracy on `validation`
    (smallest k on ties); everything is reported on `heldout` too. validation / heldout: (x, y, groups).

    Returns (sweep, summary, components, chosen k). sweep has, per method, k and split ("validation",
    "held-out"), the sets "<split>: worst group", "<split>: average group" (mean over groups),
    "<split>: overall" and "<split>: group <name>"; summary one row per (method, split) at k = 0 and at the
    chosen k."""
    ks = _check_ks(ks, cset.size)
    groups = np.asarray(groups)
    ids = sorted(set(np.asarray(validation[2]).tolist()) | set(np.asarray(heldout[2]).tolist()))
    names = {g: (group_names[g] if group_names else f"group {g}") for g in ids}

    def by_group(split, data):
        x, y, g = data
        g = np.asarray(g)
        return {f"{split}: group {names[k]}": (x[g == k], y[g == k]) for k in ids if (g == k).any()}

    base = sweep_margins(model, cset, np.arange(cset.size), [0], by_group("validation", validation),
                         mode, gamma, batch_size, masks_per_pass)
    if target_group is None:
        accs = {k: float((base[f"validation: group {names[k]}"][0] > 0).mean()) for k in ids
                if f"validation: group {names[k]}" in base}
        target_group = min(accs, key=accs.get)
    rng = np.random.default_rng([seed, 5])
    targets, refs = draw_targets(rng, groups == target_group, n_targets, n_references,
                                 f"group {names.get(target_group, target_group)}", all_references=True)
    orders = {"coar": ranking(edit_scores(attributions, targets, refs), "increase"),
              "random": rng.permutation(cset.size)}
    sets = {**by_group("validation", validation), **by_group("held-out", heldout)}
    rows = []
    for method, order in orders.items():
        m = sweep_margins(model, cset, order, ks, sets, mode, gamma, batch_size, masks_per_pass)
        for split in ("validation", "held-out"):
            parts = {name: acc for name, acc in m.items() if name.startswith(split + ":")}
            for i, k in enumerate(ks):
                acc = {name: float((v[i] > 0).mean()) for name, v in parts.items()}
                n_all = sum(v.shape[1] for v in parts.values())
                overall = sum((v[i] > 0).sum() for v in parts.values()) / n_all
                summary_sets = {"worst group": min(acc.values()), "average group": float(np.mean(list(acc.values()))),
                                "overall": float(overall), **{name.split(": ", 1)[1]: a for name, a in acc.items()}}
                rows += [{"experiment": "subpopulation", "target": label, "method": method, "k": int(k),
                          "set": f"{split}: {s}", "accuracy": a, "mean_margin": np.nan} for s, a in summary_sets.items()]
    sweep = pd.DataFrame(rows)
    val = sweep[(sweep.method == "coar") & (sweep.set == "validation: worst group")].sort_values("k")
    k = int(val.k.iloc[int(np.argmax(val.accuracy.to_numpy()))])
    pick = sweep[sweep.k.isin([0, k]) & sweep.set.str.split(": ").str[1].isin(["worst group", "average group", "overall"])]
    summary = (pick.assign(split=pick.set.str.split(": ").str[0], metric=pick.set.str.split(": ").str[1])
               .pivot_table(index=["method", "split", "k"], columns="metric", values="accuracy").reset_index())
    summary.columns.name = None
    summary = summary.rename(columns={"worst group": "worst_group", "average group": "average_group"})
    summary["chosen"] = summary.k == k
    summary["target_group"] = names.get(target_group, str(target_group))
    comps = pd.DataFrame(_components(label, orders["coar"][:k], cset),
                         columns=["target", "rank", "component", "module", "module_index"])
    return sweep, summary, comps, k


def edit_backdoor(model: nn.Module, cset: ComponentSet, attributions: Attributions, pairs: np.ndarray,
                  validation: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                  heldout: tuple[torch.Tensor, torch.Tensor, torch.Tensor], ks: Sequence[int], n_pairs: int = 10,
                  max_drop: float = 0.02, seed: int = 0, label: str = "backdoor",
                  extra: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None, mode: str = "zero",
                  gamma: float = 0.5, batch_size: int | None = None, masks_per_pass: int | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Sec. 5.4 / App. D.4: remove a backdoor. `pairs` [P, 2] holds (clean, triggered) indices of the same image
    among the attribution examples; `n_pairs` of them are drawn (seeded): the triggered ones are the targets, the
    clean ones the references, and the bottom-k of eq. 8 raises the targets' correct-class margins. k is the
    one with the best triggered accuracy on `validation` whose clean accuracy drops by at most `max_drop`; the
    random-components control uses the same k. validation / heldout: (clean x, triggered x, y). The same
    function removes typographic attacks (Sec. 5.5): the "trigger" is then our synthetic attack, and `extra`
    held-out sets (e.g. {"real attacks": (x, y)}) are scored at every k and summarised before / after.

    Returns (sweep, summary, components, outputs, k). components: COAR-EDIT's ranking up to the largest k
    swept, `ablated` marking the first k. summary, one row per method: held-out clean and
    triggered accuracy before / after, the share of the accuracy lost to the trigger that the edit recovers,
    and the correlation of clean and triggered margins over the held-out images before / after. outputs: per
    held-out image its label and clean / triggered margins before and after (COAR-EDIT at k)."""
    ks = _check_ks(ks, cset.size)
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or len(pairs) < n_pairs:
        raise CoarError(f"backdoor edit: {n_pairs} pairs asked for, got a pairs array of shape {pairs.shape}")
    rng = np.random.default_rng([seed, 6])
    chosen = pairs[rng.choice(len(pairs), n_pairs, replace=False)]
    orders = {"coar": ranking(edit_scores(attributions, chosen[:, 1], chosen[:, 0]), "increase"),
              "random": rng.permutation(cset.size)}
    sets = {f"{split}: {kind}": (xy[i], xy[2]) for split, xy in (("validation", validation), ("held-out", heldout))
            for i, kind in ((0, "clean"), (1, "triggered"))}
    sets.update({f"held-out: {name}": xy for name, xy in (extra or {}).items()})
    margins = {method: sweep_margins(model, cset, order, ks, sets, mode, gamma, batch_size, masks_per_pass)
               for method, order in orders.items()}
    sweep = pd.DataFrame([r for method, m in margins.items() for r in _rows("backdoor", label, method, ks, m)])
    val = sweep[sweep.method == "coar"].rename(columns={"set": "split"})
    k = choose_k(val, "validation: triggered", "validation: clean", max_drop, maximize=True)
    i = ks.index(k)
    summary = []
    for method, m in margins.items():
        clean, trig = m["held-out: clean"], m["held-out: triggered"]
        acc = {name: (v > 0).mean(1) for name, v in (("clean", clean), ("triggered", trig))}
        lost = acc["clean"][0] - acc["triggered"][0]
        summary.append({"method": method, "k": k, "components": cset.size,
                        "clean_before": acc["clean"][0], "clean_after": acc["clean"][i],
                        "triggered_before": acc["triggered"][0], "triggered_after": acc["triggered"][i],
                        "recovered": (acc["triggered"][i] - acc["triggered"][0]) / lost if lost > 0 else np.nan,
                        "correlation_before": float(np.corrcoef(clean[0], trig[0])[0, 1]),
                        "correlation_after": float(np.corrcoef(clean[i], trig[i])[0, 1]),
                        **{f"{name.replace(' ', '_')}_{when}": float((m[f"held-out: {name}"][j] > 0).mean())
                           for name in (extra or {}) for when, j in (("before", 0), ("after", i))}})
    m = margins["coar"]
    outputs = pd.DataFrame({"label": heldout[2].cpu().numpy(), "clean_before": m["held-out: clean"][0],
                            "triggered_before": m["held-out: triggered"][0], "clean_after": m["held-out: clean"][i],
                            "triggered_after": m["held-out: triggered"][i]})
    comps = pd.DataFrame(_components(label, orders["coar"][: max(ks)], cset),
                         columns=["target", "rank", "component", "module", "module_index"])
    comps["ablated"] = comps["rank"] <= k  # the ranking up to the largest k swept; the edit ablates the first k
    return sweep, pd.DataFrame(summary), comps, outputs, k
