"""Attribution accuracy against the forward-pass budget: every estimator of coar.regression on the first m_b
training masks of a setup's stores, scored on the same evaluation masks.

The budget counts forward passes over all examples in mask-equivalents: the training masks used, plus the
prior's own passes (leave-one-out: one pass per component plus the unablated model, C + 1; gradient x
parameter: a forward and a backward pass, counted as 3). Budgets are m/16, m/8, m/4, m/2 and m, where m is
the setup's number of training masks, plus the mask count that makes the total exactly m/3 for each
estimator (the goal: OLS-at-m's mean correlation within a third of its budget). Penalties, scales and ranks
are chosen on training masks only (GCV or a held-out part of them); the evaluation masks are used only to
score. Every fit is scored on the evaluation masks of each alpha studied (alpha_train and, by default in the
workflow, 1.5 x alpha_train): the table has one curve per (setup, alpha_test, estimator).

`benchmarks/efficiency.py` runs it from the command line and the workflow's `efficiency` rule on its
stores; both read results/<setup>/masks/train.json, the evaluation stores
(results/<setup>/masks/test-<alpha>.json) and, when present, results/<setup>/attributions/{loo,gp}.npz.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..attributions import Attributions
from ..correlation import pearson_columns
from ..errors import CoarError, StoreError
from ..provenance import check_prior
from ..regression import fit
from ..settings import FitSettings
from ..store import load_shards, read_meta
from .plan import scaled_alphas
from .receipts import read_split

PRIOR_COST = {"loo": lambda c: c + 1, "gp": lambda c: 3}
LASSO_RATIOS = list(np.logspace(0, -3, 7))  # a shorter path than the library's default: the lasso is slow at C = 448
FRACTIONS = (("m/16", 1 / 16), ("m/8", 1 / 8), ("m/4", 1 / 4), ("m/2", 1 / 2), ("m", 1.0))


def estimators(priors: dict) -> dict:
    """name -> (coar.settings.FitSettings, prior name or None); every fit's settings validated as `coar fit`'s."""
    out = {"ols": FitSettings("ols"), "ridge": FitSettings("ridge", lambdas=(0.1, 1, 10, 100, 1000))}
    for name in priors:
        out[f"prior-{name}"] = FitSettings("prior", prior=priors[name])
    out["lowrank"] = FitSettings("lowrank")
    out["lasso"] = FitSettings("lasso", ratios=LASSO_RATIOS)
    return {k: (v.validate(), k.split("-", 1)[1] if k.startswith("prior-") else None) for k, v in out.items()}


def fit_estimator(settings: FitSettings, keep: np.ndarray, y: np.ndarray) -> Attributions:
    """Fit on training masks only: nothing about evaluation masks is an argument."""
    kw = settings.fit_kwargs()
    if settings.method == "ridge":
        kw["select"] = "gcv"
    if kw.get("lambdas") is None:
        kw.pop("lambdas", None)
    return fit((keep, y), components="", **kw)


def chosen(attr: Attributions) -> str:
    """The hyperparameters an estimator chose, in brief."""
    parts = []
    if "ranks" in attr.meta:
        parts.append(f"rank {attr.meta['rank']}, coupling {attr.meta['coupling']:g}")
    if attr.meta.get("lambda") and np.any(attr.meta["lambda"]):
        parts.append(f"median lambda/m {np.median(attr.meta['lambda']) / attr.meta['n_masks']:.3g}")
    if "scale" in attr.meta:
        parts.append(f"median scale {np.median(attr.meta['scale']):.3g}")
    if "nonzero" in attr.meta:
        parts.append(f"median nonzero {np.median(attr.meta['nonzero']):.0f}")
    return "; ".join(parts)


def mask_counts(m: int, c: int, prior: str | None) -> list[tuple[str, int]]:
    cost = PRIOR_COST[prior](c) if prior else 0
    counts = [(label, max(2, int(round(f * m)))) for label, f in FRACTIONS]
    third = m // 3 - cost
    if third >= 8:
        counts.append(("m/3 total", third))
    return counts


def _score(setup, alpha, attr, test):
    r = np.nan_to_num(pearson_columns(test[1], attr.predict(test[0])), nan=0.0)
    return {"setup": setup, "alpha_test": alpha, "mean_correlation": float(r.mean()),
            "sem": float(r.std(ddof=1) / np.sqrt(len(r)))}


def run_setup(setup: str, train: tuple, tests: dict, priors: dict, names=None, attributions: dict | None = None):
    """Rows (setup, alpha_test, estimator, label, masks, budget, ratio, mean, sem, chosen) for one setup.

    ``train`` is a (keep, y) pair and ``tests`` maps each evaluation alpha to one; every fit sees the first
    masks of ``train`` only and is scored on every evaluation set. ``attributions`` (a dict) receives every
    fit, keyed by (estimator, masks).
    """
    keep, y = train
    m, c = keep.shape
    if not isinstance(tests, dict) or not tests:
        raise CoarError("tests must map each evaluation alpha to its (keep, y) pair")
    rows = []
    known = estimators(priors)
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise CoarError(f"unknown estimator(s) {', '.join(unknown)}; known here: {', '.join(known)} (prior-<name> "
                        f"needs results/<setup>/attributions/<name>.npz)")
    for name, (settings, prior) in known.items():
        if names and name not in names:
            continue
        cost = PRIOR_COST[prior](c) if prior else 0
        for label, mb in mask_counts(m, c, prior):
            t0 = time.perf_counter()
            attr = fit_estimator(settings, keep[:mb], y[:mb])
            secs = time.perf_counter() - t0
            if attributions is not None:
                attributions[(name, mb)] = attr
            for alpha, test in tests.items():
                rows.append({**_score(setup, alpha, attr, test), "estimator": name, "label": label, "masks": mb,
                             "budget": mb + cost, "ratio": (mb + cost) / m, "chosen": chosen(attr), "fit_s": secs})
    for name, attr in priors.items():  # the prior alone, at its own cost
        if names and f"prior-{name}" not in names:
            continue
        cost = PRIOR_COST[name](c)
        for alpha, test in tests.items():
            rows.append({**_score(setup, alpha, attr, test), "estimator": f"{name} alone", "label": "-",
                         "masks": 0, "budget": cost, "ratio": cost / m, "chosen": "", "fit_s": 0.0})
    return rows


def load_receipt(path: Path, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All masks and outputs of a gathered split (its receipt lists the stores, relative to ``root``), checked
    against the receipt: the stores' alpha is the receipt's, and they hold the masks it counts."""
    receipt = read_split(path)
    paths = [root / s for s in receipt["stores"]]
    try:
        metas = [read_meta(p) for p in paths]
        keep, y = (np.concatenate(parts) for parts in zip(*load_shards(paths, dtype=np.float64)))
    except StoreError as exc:
        raise type(exc)(f"receipt {path}: {exc}") from None
    alphas = {float(m["alpha"]) for m in metas}
    if alphas != {float(receipt["alpha"])}:
        raise CoarError(f"receipt {path} says alpha {receipt['alpha']}, its stores were sampled at "
                        f"{', '.join(map(str, sorted(alphas)))}; gather the split again (snakemake {path})")
    if receipt["masks"] != len(keep):
        raise CoarError(f"receipt {path} counts {receipt['masks']} masks, its stores hold {len(keep)}; gather the split "
                        f"again (snakemake {path})")
    return keep, y


def load_study(train_receipt: Path, test_receipts, prior_files, root: Path):
    """(train, tests, priors): tests maps each evaluation receipt's alpha to its (keep, y); the priors (name ->
    Attributions) are checked against the stores' component set."""
    train = load_receipt(train_receipt, root)
    tests = {float(read_split(t)["alpha"]): load_receipt(t, root) for t in test_receipts}
    first = Path(train_receipt)
    meta = read_meta(root / read_split(first)["stores"][0])
    priors = {}
    for f in map(Path, prior_files):
        attr = Attributions.load(f)
        if attr.components != meta["components_fingerprint"]:
            raise CoarError(f"{f} was computed on another component set than the masks of {first}")
        check_prior(attr, meta, f"the masks of {first}")  # as `coar fit --method prior` does
        priors[f.stem] = Attributions(attr.weights, attr.bias, f.stem, "", attr.meta)
    return train, tests, priors


def load_setup(results: Path, setup: str, factors=(1.0,)):
    """A setup's stores and priors as the workflow leaves them under ``results``; evaluation masks at
    ``factors`` x alpha_train."""
    masks = results / setup / "masks"
    alpha = float(read_split(masks / "train.json")["alpha"])
    for f in factors:
        if not 0 < f * alpha < 1:
            raise CoarError(f"alpha-test factor {f:g} x {setup}'s alpha_train {alpha:g} is not an ablation fraction "
                            "in (0, 1)")
    paths = [masks / f"test-{a:g}.json" for a in scaled_alphas(alpha, factors)]
    for p in paths:
        if not p.exists():
            raise CoarError(f"{p} is missing: sample {setup}'s evaluation masks at that alpha first "
                            f"(snakemake {p})")
    files = [results / setup / "attributions" / f"{name}.npz" for name in PRIOR_COST]
    train, tests, priors = load_study(masks / "train.json", paths, [f for f in files if f.exists()], results.parent)
    return train, tests, priors, alpha


def goal(df: pd.DataFrame) -> pd.DataFrame:
    """Per setup and evaluation alpha: OLS at m, and for each estimator the smallest budget (linear
    interpolation along its curve of budgets) at which it reaches that mean correlation, as a fraction of m."""
    out = []
    for (setup, alpha), d in df.groupby(["setup", "alpha_test"]):
        full = d[(d.estimator == "ols") & (d.label == "m")]
        target = float(full.mean_correlation.iloc[0])
        m = int(full.masks.iloc[0])
        for name, e in d[d.masks > 0].groupby("estimator"):
            e = e.sort_values("budget")
            b, r = e.budget.to_numpy(float), e.mean_correlation.to_numpy()
            hit = np.nonzero(r >= target)[0]
            if len(hit) == 0:
                reach = np.nan
            elif hit[0] == 0:
                reach = b[0]
            else:
                i = hit[0]
                reach = b[i - 1] + (target - r[i - 1]) * (b[i] - b[i - 1]) / (r[i] - r[i - 1])
            third = e[e.label == "m/3 total"]
            out.append({"setup": setup, "alpha_test": alpha, "estimator": name, "ols_at_m": target,
                        "at_third": float(third.mean_correlation.iloc[0]) if len(third) else np.nan,
                        "budget_ratio_to_reach": reach / m})
    return pd.DataFrame(out)


def markdown(df: pd.DataFrame) -> str:
    lines = []
    for (setup, alpha), d in df.groupby(["setup", "alpha_test"]):
        m = int(d[(d.estimator == "ols") & (d.label == "m")].masks.iloc[0])
        labels = [lab for lab, _ in FRACTIONS] + ["m/3 total"]
        lines += [f"\n**{setup}**, alpha_test {alpha:g} (m = {m:,}; cell: mean correlation ± SEM, total budget / m)\n",
                  "| estimator | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for name, e in d.groupby("estimator", sort=False):
            if name.endswith("alone"):
                row = e.iloc[0]
                cells = [f"{row['mean_correlation']:.3f} ± {row['sem']:.3f} ({row['ratio']:.2f})"]
                cells += [""] * (len(labels) - 1)
            else:
                by = {r.label: r for r in e.itertuples()}
                cells = [f"{by[lab].mean_correlation:.3f} ± {by[lab].sem:.3f} ({by[lab].ratio:.2f})" if lab in by
                         else "-" for lab in labels]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
