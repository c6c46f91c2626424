"""Figures for the paper's appendix (Figs. 13, 15-18, 25-27): tidy tables / arrays in, matplotlib Figure out.

Same rules as `coar.paper.plots.attribution` (whose private helpers this module reuses): nothing here reads files or
touches global matplotlib state; every figure is built on a bare `matplotlib.figure.Figure` inside
`matplotlib.rc_context(rc_params())`, carries a provenance footer and a bold suptitle naming the paper
figure it corresponds to, and undefined correlations (NaN) count as 0 in every mean. Bad input raises
`CoarError` naming the missing column, the bad shape or the inconsistent entry.

Colours: methods keep their fixed `METHOD_COLORS`; curves that stand for *setups* or attribution
variants (Figs. 13, 25, 26, 27) take `SETUP_PALETTE` in order of first appearance.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import ScaledTranslation

from ...errors import CoarError
from .style import (ROW_HEIGHT_IN, SMALL, WIDTH_IN, Z95, method_label, method_order, method_styles, numeric_columns,
                    ordered_unique, pearson, rc_params, require_columns, start_figure, wrap_title, zscore)

__all__ = [
    "ABLATION_COLUMNS",
    "ALPHA_PROFILE_COLUMNS",
    "EXAMPLE_SCATTER_COLUMNS",
    "SETUP_PALETTE",
    "ZERO_VS_SCALE_COLUMNS",
    "fig_ablation_effect",
    "fig_alpha_profile",
    "fig_example_scatters",
    "fig_neighbors",
    "fig_top_examples",
    "fig_zero_vs_scale",
]

ALPHA_PROFILE_COLUMNS = ("setup", "method", "alpha_test", "example", "correlation")
ABLATION_COLUMNS = ("setup", "alpha", "mask", "accuracy", "correlation")
ZERO_VS_SCALE_COLUMNS = ("attributions", "alpha_test", "example", "correlation")
EXAMPLE_SCATTER_COLUMNS = ("setup", "example", "method", "mask", "true", "predicted")

# Okabe-Ito colours (yellow left out: unreadable on white), one per setup / attribution variant.
SETUP_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
# Line style per method in the alpha-profile figure: the first method (COAR when present) solid.
_METHOD_DASHES = ("-", "--", "-.", (0, (4, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 1.2)), (0, (6, 2)))
_QUERY_COLOR = "#D55E00"
_SUPTITLE_FIG25 = "Effect of ablation fraction on model outputs (cf. paper Fig. 25)"
_SUPTITLE_FIG1516 = "Example-level counterfactuals vs. attribution estimates (cf. paper Figs. 15 and 16)"


# ----------------------------------------------------------------------------------------------- helpers

def _setup_colors(keys: Sequence) -> dict:
    return {k: SETUP_PALETTE[i % len(SETUP_PALETTE)] for i, k in enumerate(keys)}


def _with_ref(title: str, fig_ref: str) -> str:
    """`title` plus " (cf. paper Fig. N)", unless the caller's title already names a paper figure."""
    return str(title) if "cf. paper fig" in str(title).lower() else f"{title} (cf. paper Fig. {fig_ref})"


def _positive_alphas(values: pd.Series, what: str, column: str) -> None:
    bad = values[~np.isfinite(values) | (values <= 0)]
    if len(bad):
        raise CoarError(f"{what} column {column!r} must hold finite ablation fractions > 0 (log axis); "
                        f"found {sorted(set(bad.tolist()), key=str)[:5]}")


def _mean_err(table: pd.DataFrame, keys: Sequence[str], value: str = "correlation") -> pd.DataFrame:
    """Mean and 1.96 * standard error over rows per `keys`, NaN counted as 0; in order of appearance."""
    t = table.assign(**{value: table[value].fillna(0.0)})
    out = t.groupby(list(keys), sort=False)[value].agg(mean="mean", sd="std", n="size").reset_index()
    out["err"] = (Z95 * out["sd"] / np.sqrt(out["n"])).fillna(0.0)  # one row: no spread estimate, no bar
    return out


def _log_alpha_axis(ax, alphas: np.ndarray, extra: Iterable[float], axes_width_in: float, label: str) -> None:
    """Log x axis with ticks (labelled like 0.05) at exactly the ablation fractions present; labels are
    slanted when they would otherwise collide."""
    alphas = np.unique(np.asarray(alphas, dtype=float))
    ax.set_xscale("log")
    ax.set_xticks(alphas)
    texts = [f"{a:g}" for a in alphas]
    span = np.log(np.concatenate([alphas, np.asarray(list(extra), dtype=float)]))
    lo, hi = float(span.min()), float(span.max())
    pad = 0.07 * (hi - lo) if hi > lo else 0.3
    ax.set_xlim(np.exp(lo - pad), np.exp(hi + pad))
    crowded = False
    if len(alphas) > 1:
        gaps_in = np.diff(np.log(alphas)) / (hi - lo + 2 * pad) * axes_width_in
        need_in = (max(len(t) for t in texts) * 0.62 * SMALL + 3) / 72
        crowded = bool(gaps_in.min() < need_in)
    if crowded:
        ax.set_xticklabels(texts, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticklabels(texts)
    ax.minorticks_off()
    ax.set_xlabel(label)


def _examples_phrase(counts: Iterable[int]) -> str:
    counts = sorted({int(c) for c in counts})
    if not counts:
        return "no examples"
    return f"{counts[0]} examples" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} examples"


# ------------------------------------------------------------------------------------------- Figs. 13, 26

def fig_alpha_profile(correlations: pd.DataFrame, labels: Mapping[str, str], alpha_train: Mapping[str, float],
                      provenance: str, title: str, suptitle: str) -> Figure:
    """Paper Figs. 13 and 26: how predictive attributions are over test-time ablation fractions.

    One panel: x = alpha_test (log scale, ticks at the fractions present), y = mean correlation over
    examples with 1.96-SE error bars; one line per (setup, method). Colour = setup (`SETUP_PALETTE` in
    order of appearance), line style = method (the first in plotting's order, i.e. COAR, solid). A star
    marks each setup's alpha_train on its lines when that fraction was evaluated, else a dotted vertical
    line in the setup colour (keyed with its value). The lines are nudged a few points apart sideways
    (a display offset only: the plotted data stay at the true alpha) so error bars do not hide each other.

    correlations: columns setup, method, alpha_test (> 0), example, correlation (NaN counts as 0).
    labels: setup -> legend label, e.g. "alpha_train = 0.05" (setup name when missing); the method name
    is appended when more than one method is present. alpha_train: setup -> train-time fraction.
    title: the panel title (model / data); suptitle: the bold figure title, e.g. "... (cf. paper Fig. 13)".
    """
    require_columns(correlations, ALPHA_PROFILE_COLUMNS, "correlations")
    t = numeric_columns(correlations, ["alpha_test", "correlation"], "correlations")
    _positive_alphas(t["alpha_test"], "correlations", "alpha_test")
    setups = ordered_unique(t["setup"])
    missing = [s for s in setups if s not in alpha_train]
    if missing:
        raise CoarError(f"alpha_train has no entry for setup(s) {missing} (it has {list(alpha_train)})")
    labels = dict(labels or {})
    methods = method_order(t["method"])
    marker = {m: s["marker"] for m, s in method_styles(methods).items()}
    dashes = {m: _METHOD_DASHES[i % len(_METHOD_DASHES)] for i, m in enumerate(methods)}
    colors = _setup_colors(setups)
    summary = _mean_err(t, ["setup", "method", "alpha_test"])
    lines = [(s, m) for s in setups for m in methods
             if ((summary["setup"] == s) & (summary["method"] == m)).any()]
    n_examples = t.groupby(["setup", "method", "alpha_test"], sort=False)["example"].nunique()
    alphas = np.sort(t["alpha_test"].unique())
    a_train = {s: float(alpha_train[s]) for s in setups}

    width, height = WIDTH_IN, ROW_HEIGHT_IN + 0.9
    with matplotlib.rc_context(rc_params()):
        fig = start_figure(width, height, provenance, suptitle)
        ax = fig.subplots()
        handles = []
        starred = False
        for i, (s, m) in enumerate(lines):
            d = summary[(summary["setup"] == s) & (summary["method"] == m)].sort_values("alpha_test")
            nudge = ScaledTranslation((i - (len(lines) - 1) / 2) * 2.5 / 72, 0, fig.dpi_scale_trans)
            trans = ax.transData + nudge
            label = str(labels.get(s, s)) + (f" · {method_label(m)}" if len(methods) > 1 else "")
            eb = ax.errorbar(d["alpha_test"].to_numpy(), d["mean"].to_numpy(), yerr=d["err"].to_numpy(),
                             color=colors[s], ls=dashes[m], marker=marker[m], markersize=3.2, capsize=2,
                             elinewidth=0.8, markeredgewidth=0.5, label=label, transform=trans, zorder=3)
            handles.append(eb)
            hit = np.isclose(d["alpha_test"].to_numpy(), a_train[s], rtol=1e-6, atol=0.0)
            if hit.any():
                ax.plot([a_train[s]], [float(d["mean"].to_numpy()[hit][0])], ls="none", marker="*", ms=11,
                        color=colors[s], mec="white", mew=0.6, transform=trans, zorder=5, gid="alpha_train_star")
                starred = True
        if starred:
            handles.append(Line2D([], [], ls="none", marker="*", ms=9, color="0.3", mec="white",
                                  label=r"$\alpha_\mathrm{test} = \alpha_\mathrm{train}$"))
        for s in setups:  # alpha_train not among the evaluated fractions: dotted line, keyed with its value
            if not np.isclose(alphas, a_train[s], rtol=1e-6, atol=0.0).any():
                handles.append(ax.axvline(a_train[s], ls=":", lw=1.3, color=colors[s], zorder=1,
                                          gid="alpha_train_line",
                                          label=rf"$\alpha_\mathrm{{train}}$ = {a_train[s]:g} (not evaluated)"))
        _log_alpha_axis(ax, alphas, [a_train[s] for s in setups], 0.68 * width,
                        r"test-time ablation fraction $\alpha_\mathrm{test}$ (log scale)")
        lo = min(0.0, float((summary["mean"] - summary["err"]).min()))
        hi = max(0.0, float((summary["mean"] + summary["err"]).max()))
        pad = 0.06 * max(hi - lo, 0.1)
        ax.set_ylim(lo - pad, min(hi + pad, 1.05))
        ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
        ax.set_ylabel("mean correlation with true counterfactuals\n"
                      f"(± 1.96 SE over {_examples_phrase(n_examples)})")
        ax.set_title(str(title), loc="left")
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  title="attributions")
    return fig


# ------------------------------------------------------------------------------------------------ Fig. 25

def fig_ablation_effect(table: pd.DataFrame, alpha_train: Mapping[str, float], provenance: str,
                        setup_titles: Mapping[str, str] | None = None) -> Figure:
    """Paper Fig. 25: effect of ablating random alpha-fractions of components on the model's outputs.

    One row per setup (order: setup_titles, then first appearance), two panels: accuracy of the ablated
    model vs alpha, and the correlation (across examples) between unablated and ablated margins vs alpha.
    The ablation fractions sit at evenly spaced positions (ticks labelled with their value); each mask is
    a jittered dot, a box shows the per-alpha quartiles, a line the per-alpha mean (NaN correlation counts
    as 0). Dashed: the unablated model's accuracy; dotted: alpha_train[setup] (placed between its
    neighbours on a log scale when that fraction was not ablated).

    table: columns setup, alpha, mask, accuracy, correlation. Rows with alpha > 0 are ablation masks;
    rows with alpha == 0 give the unablated model (its accuracy; correlation 1), optional.
    alpha_train: setup -> train-time fraction. setup_titles: setup -> row title.
    """
    require_columns(table, ABLATION_COLUMNS, "ablation")
    t = numeric_columns(table, ["alpha", "accuracy", "correlation"], "ablation")
    bad = t["alpha"][~np.isfinite(t["alpha"]) | (t["alpha"] < 0)]
    if len(bad):
        raise CoarError(f"ablation column 'alpha' must hold finite fractions >= 0; found {sorted(set(bad))[:5]}")
    present = ordered_unique(t["setup"])
    titles = dict(setup_titles or {})
    setups = [s for s in titles if s in set(present)] + [s for s in present if s not in titles]
    missing = [s for s in setups if s not in alpha_train]
    if missing:
        raise CoarError(f"alpha_train has no entry for setup(s) {missing} (it has {list(alpha_train)})")
    no_masks = [s for s in setups if not ((t["setup"] == s) & (t["alpha"] > 0)).any()]
    if no_masks:
        raise CoarError(f"ablation table has no ablated rows (alpha > 0) for setup(s) {no_masks}")
    colors = _setup_colors(setups)
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns give identical files

    with matplotlib.rc_context(rc_params()):
        fig = start_figure(WIDTH_IN, 2.3 * len(setups) + 0.8, provenance, _SUPTITLE_FIG25)
        rows = fig.subfigures(len(setups), 1, squeeze=False)[:, 0]
        for row, setup in enumerate(setups):
            rows[row].suptitle(titles.get(setup, str(setup)), x=0.01, ha="left", fontsize="medium",
                               fontweight="bold")
            axes = rows[row].subplots(1, 2)
            d = t[t["setup"] == setup]
            base = d.loc[d["alpha"] == 0, "accuracy"].dropna()
            abl = d[d["alpha"] > 0]
            alphas = np.sort(abl["alpha"].unique())
            pos = np.arange(len(alphas), dtype=float)
            colour = colors[setup]
            a_tr = float(alpha_train[setup])
            logs = np.log(alphas)
            if len(alphas) == 1:
                x_train = 0.0 if np.isclose(a_tr, alphas[0]) else (-0.5 if a_tr < alphas[0] else 0.5)
            elif a_tr <= 0:
                x_train = -0.5
            else:
                la = np.log(a_tr)
                if la < logs[0]:
                    x_train = max(-0.5, (la - logs[0]) / (logs[1] - logs[0]))
                elif la > logs[-1]:
                    x_train = min(len(alphas) - 0.5, len(alphas) - 1 + (la - logs[-1]) / (logs[-1] - logs[-2]))
                else:
                    x_train = float(np.interp(la, logs, pos))
            n_masks = abl.groupby("alpha")["mask"].size()
            for ax, column, ylabel in ((axes[0], "accuracy", "accuracy of ablated model"),
                                       (axes[1], "correlation", "margin correlation\n(ablated vs. unablated)")):
                vals = [abl.loc[abl["alpha"] == a, column] for a in alphas]
                vals = [v.fillna(0.0).to_numpy() if column == "correlation" else v.dropna().to_numpy()
                        for v in vals]
                ax.boxplot(vals, positions=pos, widths=0.5, showfliers=False, patch_artist=True,
                           manage_ticks=False,
                           boxprops={"facecolor": colour, "alpha": 0.18, "edgecolor": colour, "linewidth": 0.8},
                           whiskerprops={"color": colour, "linewidth": 0.8, "alpha": 0.7},
                           capprops={"color": colour, "linewidth": 0.8, "alpha": 0.7},
                           medianprops={"color": colour, "linewidth": 1.0}, zorder=2)
                for p, v in zip(pos, vals, strict=True):
                    ax.scatter(p + rng.uniform(-0.17, 0.17, len(v)), v, s=5, color=colour, alpha=0.35,
                               linewidths=0, zorder=3, rasterized=len(v) > 500, gid="per_mask")
                means = np.array([v.mean() if len(v) else np.nan for v in vals])
                ax.plot(pos, means, color=colour, marker="o", markersize=3.5, mec="white", mew=0.5, lw=1.4,
                        zorder=4, gid="mean", label="mean over masks")
                ax.axvline(x_train, ls=":", lw=1.3, color="0.2", zorder=1, gid="alpha_train")
                ax.set_xticks(pos)
                ax.set_xticklabels([f"{a:g}" for a in alphas])
                ax.set_xlim(min(-0.6, x_train - 0.3), max(len(alphas) - 0.4, x_train + 0.3))
                ax.set_xlabel(r"ablation fraction $\alpha$")
                ax.set_ylabel(ylabel)
                finite = np.concatenate([v for v in vals if len(v)] or [np.zeros(1)])
                if column == "accuracy" and len(base):
                    finite = np.concatenate([finite, base.to_numpy()])
                lo, hi = float(np.nanmin(finite)), float(np.nanmax(finite))
                if lo >= 0 and hi <= 1:
                    ax.set_ylim(min(0.0, lo), 1.04)
                ax.grid(axis="x", visible=False)
            if len(base):
                acc0 = float(base.mean())
                axes[0].axhline(acc0, ls="--", lw=1.0, color="0.25", zorder=1, gid="unablated")
            counts = sorted(set(n_masks.tolist()))
            per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
            handles = [
                Line2D([], [], ls="none", marker="o", ms=3, color=colour, alpha=0.5,
                       label=f"one mask ({per} per $\\alpha$)"),
                Patch(facecolor=colour, alpha=0.3, edgecolor=colour, label="quartiles (box), median"),
                Line2D([], [], color=colour, marker="o", ms=3.5, mec="white", lw=1.4, label="mean over masks"),
            ]
            if len(base):
                handles.append(Line2D([], [], ls="--", lw=1.0, color="0.25",
                                      label=f"unablated accuracy ({acc0:.3g})"))
            handles.append(Line2D([], [], ls=":", lw=1.3, color="0.2", label=rf"$\alpha_\mathrm{{train}}$ = {a_tr:g}"))
            axes[1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0)
    return fig


# ------------------------------------------------------------------------------------------------ Fig. 27

def fig_zero_vs_scale(cosine, correlations: pd.DataFrame, gamma: float, provenance: str, title: str) -> Figure:
    """Paper Fig. 27: COAR attributions fitted with zero-ablation vs. scale-ablation (activations x gamma).

    Left: histogram of the per-example cosine similarity between the two sets of attributions, median
    marked and stated. Right: mean correlation (1.96-SE bars, NaN counts as 0) with ZERO-ablation
    counterfactuals vs alpha_test (log scale), one line per attributions label.

    cosine: 1-d array-like of per-example cosine similarities (non-finite entries are dropped and counted).
    correlations: columns attributions (display label, e.g. "scale (gamma 0.5) attributions"),
    alpha_test (> 0), example, correlation. gamma: the scale factor. title: model / data, shown in the
    bold suptitle "Effect of ablation method | <title> (cf. paper Fig. 27)" (the figure reference is not
    repeated when the title already names one).
    """
    try:
        cos = np.asarray(cosine, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise CoarError(f"cosine must be a 1-d array of numbers: {e}") from None
    if cos.ndim != 1:
        raise CoarError(f"cosine must be a 1-d array (one value per example), got shape {cos.shape}")
    finite = cos[np.isfinite(cos)]
    if finite.size == 0:
        raise CoarError(f"cosine has no finite values (shape {cos.shape})")
    require_columns(correlations, ZERO_VS_SCALE_COLUMNS, "correlations")
    t = numeric_columns(correlations, ["alpha_test", "correlation"], "correlations")
    _positive_alphas(t["alpha_test"], "correlations", "alpha_test")
    kinds = ordered_unique(t["attributions"])
    colors = _setup_colors(kinds)
    summary = _mean_err(t, ["attributions", "alpha_test"])
    alphas = np.sort(t["alpha_test"].unique())
    n_ex = t.groupby(["attributions", "alpha_test"])["example"].nunique()

    with matplotlib.rc_context(rc_params()):
        fig = start_figure(WIDTH_IN, ROW_HEIGHT_IN + 1.2, provenance,
                            _with_ref(f"Effect of ablation method | {title}", "27"))
        ax_h, ax_c = fig.subplots(1, 2)
        med = float(np.median(finite))
        ax_h.hist(finite, bins="auto" if finite.size < 5000 else 60, color=SETUP_PALETTE[0], alpha=0.75,
                  edgecolor="white", linewidth=0.4)
        ax_h.axvline(med, color=SETUP_PALETTE[1], ls="--", lw=1.3, gid="median")
        top = ax_h.get_ylim()[1]
        ax_h.set_ylim(0, top * 1.22)  # headroom for the median label
        x0, x1 = ax_h.get_xlim()
        right_side = med < (x0 + x1) / 2
        dropped = cos.size - finite.size
        note = f"median = {med:.3f}\nn = {finite.size} examples" + (f" ({dropped} non-finite dropped)"
                                                                        if dropped else "")
        ax_h.text(0.97 if right_side else 0.03, 0.97, note, transform=ax_h.transAxes, va="top",
                  ha="right" if right_side else "left", color=SETUP_PALETTE[1], fontsize=SMALL,
                  bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.85", "alpha": 0.9}, gid="median_text")
        ax_h.set_xlabel(f"cosine similarity, zero vs. scale ($\\gamma$ = {gamma:g}) attributions")
        ax_h.set_ylabel("examples")
        ax_h.set_title("(a) per-example attribution similarity", loc="left")

        handles = []
        for i, k in enumerate(kinds):
            d = summary[summary["attributions"] == k].sort_values("alpha_test")
            nudge = ScaledTranslation((i - (len(kinds) - 1) / 2) * 2.5 / 72, 0, fig.dpi_scale_trans)
            handles.append(ax_c.errorbar(d["alpha_test"].to_numpy(), d["mean"].to_numpy(), yerr=d["err"].to_numpy(),
                                         color=colors[k], ls=_METHOD_DASHES[i % len(_METHOD_DASHES)], marker="o",
                                         markersize=3.2, capsize=2, elinewidth=0.8, label=str(k),
                                         transform=ax_c.transData + nudge, zorder=3))
        _log_alpha_axis(ax_c, alphas, [], 0.4 * WIDTH_IN, r"ablation fraction $\alpha_\mathrm{test}$ (log scale)")
        lo = min(0.0, float((summary["mean"] - summary["err"]).min()))
        hi = max(0.0, float((summary["mean"] + summary["err"]).max()))
        # the legend sits in a band reserved above the highest error bar, so it never hides data
        band = min(0.45, 0.07 * (len(handles) + 1) + 0.05)
        span = (hi - lo + 0.06) / (1.0 - band)
        ax_c.set_ylim(lo - 0.03, lo - 0.03 + span)
        ax_c.set_yticks([v for v in ax_c.get_yticks() if lo - 0.03 <= v <= max(hi, 0.0) + 0.05])
        ax_c.axhline(0.0, color="0.6", lw=0.6, zorder=0)
        ax_c.set_ylabel(f"mean correlation with true counterfactuals\n(± 1.96 SE over {_examples_phrase(n_ex)})")
        ax_c.set_title("(b) predicting zero-ablation counterfactuals", loc="left")
        ax_c.legend(handles=handles, loc="upper right", title="attributions used for the estimate")
    return fig


# ---------------------------------------------------------------------------------------- Figs. 15 and 16

def fig_example_scatters(scatter: pd.DataFrame, provenance: str, setup_titles: Mapping[str, str] | None = None,
                         suptitle: str = _SUPTITLE_FIG1516) -> Figure:
    """Paper Figs. 15-16: per-example true counterfactuals vs. each method's estimates.

    Grid: one row per (setup, example) in order of first appearance, one column per method (COAR first,
    then the baselines in `coar.paper.plots.attribution`'s order). Each panel scatters the z-scored true outputs (x)
    against the z-scored estimates (y) over masks, in the method's colour, with the y = x line and the
    Pearson r in a box (rounded to 2 decimals; "r undefined (constant estimate)" when an estimate or the
    truth is constant). All panels share the same symmetric limits so their spread is comparable.

    scatter: columns setup, example, method, mask, true, predicted (non-finite pairs are dropped).
    setup_titles: setup -> row label (setup name when missing).
    """
    require_columns(scatter, EXAMPLE_SCATTER_COLUMNS, "scatter")
    t = numeric_columns(scatter, ["true", "predicted"], "scatter")
    pairs = ordered_unique(zip(t["setup"], t["example"], strict=True))
    methods = method_order(t["method"])
    styles = method_styles(methods)
    titles = dict(setup_titles or {})
    groups = {k: g for k, g in t.groupby(["setup", "example", "method"], sort=False)}
    panels = {}
    lim = 0.0
    for s, e in pairs:
        for m in methods:
            g = groups.get((s, e, m))
            if g is None:
                continue
            x, y = g["true"].to_numpy(), g["predicted"].to_numpy()
            ok = np.isfinite(x) & np.isfinite(y)
            x, y = x[ok], y[ok]
            zx, zy = zscore(x), zscore(y)
            panels[(s, e, m)] = (zx, zy, pearson(x, y), x, y)
            if len(zx):
                lim = max(lim, float(np.abs(zx).max()), float(np.abs(zy).max()))
    lim = 1.08 * max(lim, 2.5)
    ncol, nrow = len(methods), len(pairs)
    label_w = 1.05
    cell = min(1.55, (WIDTH_IN - label_w - 0.35) / ncol)
    width = min(WIDTH_IN, label_w + ncol * cell + 0.45)

    with matplotlib.rc_context(rc_params()):
        fig = start_figure(max(width, 4.5), nrow * (cell + 0.12) + 1.0, provenance, suptitle, hspace=0.02,
                            wspace=0.02)
        panel = fig.subfigures(1, 1)  # inside the layout rect: its axis labels stay clear of the footer
        axes = panel.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
        ticks = [v for v in (-4, -2, 0, 2, 4) if abs(v) < lim]
        for r, (s, e) in enumerate(pairs):
            for c, m in enumerate(methods):
                ax = axes[r, c]
                ax.set_xlim(-lim, lim)
                ax.set_ylim(-lim, lim)
                ax.set_aspect("equal", adjustable="box")
                ax.set_xticks(ticks)
                ax.set_yticks(ticks)
                if r == 0:
                    ax.set_title(styles[m]["label"], color=styles[m]["color"], fontweight="bold")
                if c == 0:
                    name = wrap_title(titles.get(s, str(s)), 20)
                    ax.set_ylabel(f"{name}\nexample {e}", fontweight="bold", labelpad=3)
                ax.plot([-lim, lim], [-lim, lim], ls="--", lw=0.7, color="0.6", zorder=1, gid="identity")
                p = panels.get((s, e, m))
                if p is None:
                    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
                    continue
                zx, zy, rho, x, y = p
                ax.scatter(zx, zy, s=5, color=styles[m]["color"], marker=styles[m]["marker"], alpha=0.5,
                           linewidths=0, zorder=2, rasterized=len(zx) > 2000, gid="masks")
                if np.isnan(rho):
                    what = "estimate" if len(y) < 2 or y.std() == 0 else "counterfactual"
                    txt = f"r undefined\n(constant {what})"
                else:
                    txt = f"r = {rho:.2f}"
                ax.text(0.05, 0.95, txt, transform=ax.transAxes, ha="left", va="top", fontsize=SMALL,
                        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": styles[m]["color"], "lw": 0.6,
                              "alpha": 0.9}, zorder=5, gid="pearson_r")
        panel.supxlabel("true counterfactual output (z-scored over masks)", fontsize=SMALL + 1)
        panel.supylabel("attribution-based estimate\n(z-scored over masks)", fontsize=SMALL + 1)
    return fig


# ------------------------------------------------------------------------------------------ Figs. 17, 18

def _as_images(images) -> np.ndarray:
    """uint8 images as [n, H, W] (grayscale) or [n, H, W, 3]; accepts [n, 3, H, W] and single channels."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise CoarError(f"images must be a uint8 array (0-255), got dtype {arr.dtype}; convert e.g. with "
                        "(x * 255).round().astype(np.uint8)")
    shape = arr.shape
    if arr.ndim == 4 and shape[-1] in (1, 3):
        arr = arr[..., 0] if shape[-1] == 1 else arr
    elif arr.ndim == 4 and shape[1] in (1, 3):
        arr = arr[:, 0] if shape[1] == 1 else np.transpose(arr, (0, 2, 3, 1))
    elif arr.ndim != 3:
        raise CoarError(f"images must have shape [n, H, W], [n, H, W, 3] or [n, 3, H, W]; got {shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise CoarError(f"images is empty (shape {shape})")
    return arr


def _index_list(row: Mapping, key: str, i: int, n_images: int) -> list[int]:
    try:
        idx = [int(v) for v in row[key]]
    except (TypeError, ValueError) as e:
        raise CoarError(f"rows[{i}][{key!r}] must be a list of integer image indices: {e}") from None
    bad = [v for v in idx if not 0 <= v < n_images]
    if bad:
        raise CoarError(f"rows[{i}][{key!r}] has index(es) {bad[:5]} outside the {n_images} images")
    return idx


def _check_rows(rows, keys: Sequence[str], what: str) -> list[Mapping]:
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence) or len(rows) == 0:
        raise CoarError(f"{what} rows must be a non-empty list of dicts with keys {list(keys)}")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise CoarError(f"{what} rows[{i}] must be a dict with keys {list(keys)}, got {type(row).__name__}")
        missing = [k for k in keys if k not in row]
        if missing:
            raise CoarError(f"{what} rows[{i}] is missing key(s) {missing}; it has {list(row)}")
    return list(rows)


def _class_caption(labels, j: int, class_names) -> str | None:
    if labels is None or class_names is None:
        return None
    lab = int(labels[j])
    name = class_names[lab] if 0 <= lab < len(class_names) else f"class {lab}"
    return wrap_title(str(name), 16)


def _image_grid(images: np.ndarray, cells: list[list[tuple[int, str]]], row_labels: list[str] | None,
                col_titles: list[str], provenance: str, suptitle: str, frame_first: str | None = None) -> Figure:
    """Rows of images without axes; each cell (image index, caption) with its caption underneath."""
    nrow, ncol = len(cells), len(cells[0])
    h, w = images.shape[1], images.shape[2]
    caption_lines = max(c[1].count("\n") + 1 for row in cells for c in row)
    label_w = 1.35 if row_labels else 0.15
    img_w = min(1.25, (WIDTH_IN - label_w - 0.2) / ncol - 0.06)
    img_h = img_w * h / w
    width = max(4.5, min(WIDTH_IN, label_w + ncol * (img_w + 0.06) + 0.2))
    row_h = img_h + 0.05 + caption_lines * SMALL * 1.25 / 72
    gray = images.ndim == 3
    with matplotlib.rc_context(rc_params()):
        fig = start_figure(width, nrow * row_h + 0.85, provenance, suptitle, hspace=0.01, wspace=0.01,
                            h_pad=0.03, w_pad=0.05)
        axes = fig.subplots(nrow, ncol, squeeze=False)
        for r, row in enumerate(cells):
            for c, (idx, caption) in enumerate(row):
                ax = axes[r, c]
                ax.imshow(images[idx], cmap="gray" if gray else None, vmin=0, vmax=255,
                          interpolation="nearest" if max(h, w) < 96 else "antialiased")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                framed = frame_first is not None and c == 0
                for sp in ax.spines.values():
                    sp.set_visible(framed)
                    if framed:
                        sp.set_color(frame_first)
                        sp.set_linewidth(2.2)
                ax.set_xlabel(caption, fontsize=SMALL, labelpad=2, linespacing=1.1)
                if r == 0:
                    ax.set_title(col_titles[c], fontsize=SMALL + 1,
                                 color=frame_first if framed else "0.15", fontweight="bold" if framed else None)
                if c == 0 and row_labels:
                    ax.set_ylabel(wrap_title(row_labels[r], 22), rotation=0, ha="right", va="center", labelpad=5,
                                  fontsize=SMALL + 0.5, family="monospace")
    return fig


def fig_top_examples(images, rows: Sequence[Mapping], provenance: str, title: str,
                     class_names: Sequence[str] | None = None) -> Figure:
    """Paper Fig. 17: for each component, the examples with the most positive attributions to it.

    images: uint8 array [n, H, W] (grayscale), [n, H, W, 3] or [n, 3, H, W].
    rows: one dict per component: {"component": str, e.g. "layer2.0.conv1[17]"; "examples": list of
    indices into images (top-k, same k in every row); "values": the k attribution values; optional
    "labels": the k class labels}. One row per component (its name at the left), one column per rank;
    under each image its attribution value (3 significant digits) and, when both labels and
    class_names are given, its class name. title: bold suptitle (line breaks kept), with
    " (cf. paper Fig. 17)" appended unless it already names a paper figure.
    """
    imgs = _as_images(images)
    rows = _check_rows(rows, ("component", "examples", "values"), "top-examples")
    ks = [len(row["examples"]) for row in rows]
    if len(set(ks)) != 1 or ks[0] == 0:
        raise CoarError(f"top-examples rows must all have the same top-k > 0 (ragged top-k: examples per row {ks})")
    cells, names = [], []
    for i, row in enumerate(rows):
        idx = _index_list(row, "examples", i, len(imgs))
        values = list(row["values"])
        if len(values) != len(idx):
            raise CoarError(f"top-examples rows[{i}] has {len(idx)} examples but {len(values)} values")
        labels = row.get("labels")
        if labels is not None and len(labels) != len(idx):
            raise CoarError(f"top-examples rows[{i}] has {len(idx)} examples but {len(labels)} labels")
        line = []
        for j, (k, v) in enumerate(zip(idx, values, strict=True)):
            caption = f"{float(v):#.3g}".rstrip(".")
            cls = _class_caption(labels, j, class_names)
            line.append((k, caption if cls is None else f"{caption}\n{cls}"))
        cells.append(line)
        names.append(str(row["component"]))
    cols = [f"top {j + 1}" for j in range(ks[0])]
    return _image_grid(imgs, cells, names, cols, provenance, _with_ref(title, "17"))


def fig_neighbors(images, rows: Sequence[Mapping], provenance: str, title: str,
                  class_names: Sequence[str] | None = None) -> Figure:
    """Paper Fig. 18: examples and their nearest neighbours in attribution space.

    images: uint8 array [n, H, W] (grayscale), [n, H, W, 3] or [n, 3, H, W].
    rows: one dict per query: {"query": image index; "neighbors": list of k image indices (same k in
    every row); "similarity": the k cosine similarities; optional "labels": k + 1 class labels, query
    first}. First column the query (framed), then the neighbours with their cosine similarity (and class
    names when labels and class_names are given) underneath; headers "Query", "Neighbor #1", ...
    title: bold suptitle (line breaks kept), with " (cf. paper Fig. 18)" appended unless it already names a
    paper figure.
    """
    imgs = _as_images(images)
    rows = _check_rows(rows, ("query", "neighbors", "similarity"), "neighbors")
    ks = [len(row["neighbors"]) for row in rows]
    if len(set(ks)) != 1 or ks[0] == 0:
        raise CoarError(f"neighbors rows must all have the same number k > 0 of neighbors (ragged: {ks})")
    cells = []
    for i, row in enumerate(rows):
        query = _index_list({"query": [row["query"]]}, "query", i, len(imgs))[0]
        idx = _index_list(row, "neighbors", i, len(imgs))
        sims = list(row["similarity"])
        if len(sims) != len(idx):
            raise CoarError(f"neighbors rows[{i}] has {len(idx)} neighbors but {len(sims)} similarity values")
        labels = row.get("labels")
        if labels is not None and len(labels) != len(idx) + 1:
            raise CoarError(f"neighbors rows[{i}] needs {len(idx) + 1} labels (query first), got {len(labels)}")
        cls = _class_caption(labels, 0, class_names)
        line = [(query, f"example {query}" + ("" if cls is None else f"\n{cls}"))]
        for j, (k, sim) in enumerate(zip(idx, sims, strict=True)):
            cls = _class_caption(labels, j + 1, class_names)
            caption = f"cos {float(sim):.3f}"
            line.append((k, caption if cls is None else f"{caption}\n{cls}"))
        cells.append(line)
    cols = ["Query"] + [f"Neighbor #{j + 1}" for j in range(ks[0])]
    return _image_grid(imgs, cells, None, cols, provenance, _with_ref(title, "18"), frame_first=_QUERY_COLOR)

