"""Figures for the attribution evaluation (paper Figs. 2 and 14): tidy tables in, matplotlib Figure out.

This module only draws, in the shared style (coar.paper.plots.style, which also writes figures to disk).
Undefined correlations (NaN: an estimate constant over masks) count as 0 in means, as in
`coar.correlation.summarize`.
"""
from __future__ import annotations

import textwrap
from typing import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ...errors import CoarError
from .style import (ROW_HEIGHT_IN, SMALL, WIDTH_IN, Z95, method_order,
                    method_styles, numeric_columns, ordered_unique, pearson, provenance_footer, rc_params,
                    require_columns, zscore)

__all__ = ["fig_attribution_accuracy", "fig_sample_size", "fig_correlation_panels"]

SUPTITLE_FIG2 = "Attribution accuracy (cf. paper Fig. 2)"
CORRELATION_COLUMNS = ("setup", "method", "alpha_test", "example", "correlation")
SCATTER_COLUMNS = ("setup", "method", "example", "mask", "true", "predicted")


def _summarise(correlations: pd.DataFrame) -> pd.DataFrame:
    """Mean correlation and 1.96 * standard error over examples per (setup, method, alpha_test)."""
    t = correlations.assign(correlation=correlations["correlation"].fillna(0.0))
    out = t.groupby(["setup", "method", "alpha_test"], sort=False)["correlation"].agg(
        mean="mean", sd="std", n="size").reset_index()
    sem = out["sd"] / np.sqrt(out["n"])
    out["err"] = (Z95 * sem).fillna(0.0)  # a single example has no spread estimate: no bar
    return out.sort_values(["setup", "alpha_test"], kind="stable")


def _scatter_panel(ax, data: pd.DataFrame, methods: Sequence[str], styles: Mapping[str, dict], title: str) -> None:
    if data is None or data.empty:
        ax.text(0.5, 0.5, "no example selected", transform=ax.transAxes, ha="center", va="center", color="0.4")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}example-level scatter", loc="left")
        ax.set_xlabel("true counterfactual $f(z, C')$ (z-scored)")
        ax.set_ylabel("estimate $g(z)(C')$ (z-scored)")
        return
    example = data["example"].iloc[0]
    data = data[data["example"] == example]  # one chosen example per setup; the first if several
    present = [m for m in methods if m in set(data["method"])]
    lim = 0.0
    handles = {}
    for rank, m in enumerate(reversed(present)):  # COAR drawn last, i.e. on top
        d = data[data["method"] == m]
        x, y = d["true"].to_numpy(), d["predicted"].to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        r = pearson(x, y)
        zx, zy = zscore(x), zscore(y)
        if len(zx):
            lim = max(lim, float(np.abs(zx).max()), float(np.abs(zy).max()))
        s = styles[m]
        rtxt = "n/a" if np.isnan(r) else f"{r:.2f}"
        handles[m] = ax.scatter(zx, zy, s=7, color=s["color"], marker=s["marker"], alpha=0.55, linewidths=0,
                                zorder=2 + rank, rasterized=len(zx) > 2000, label=f"{s['label']} (r = {rtxt})")
    lim = 1.08 * (lim if lim > 0 else 1.0)
    ax.plot([-lim, lim], [-lim, lim], ls="--", lw=0.8, color="0.55", zorder=1)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal", adjustable="box")
    ax.set_title(f"{title}example z = {example}", loc="left")
    ax.set_xlabel("true counterfactual $f(z, C')$ (z-scored)")
    ax.set_ylabel("estimate $g(z)(C')$ (z-scored)")
    leg = ax.legend([handles[m] for m in present], [handles[m].get_label() for m in present],
                    loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0, markerscale=1.6,
                    handletextpad=0.2, title="method (Pearson r)")
    for h in leg.legend_handles:
        h.set_alpha(1.0)


def _alpha_ticks(ax, alphas: np.ndarray) -> None:
    if 0 < len(alphas) <= 8:
        ax.set_xticks(alphas)
        if np.all((alphas >= 0) & (alphas <= 1)):
            ax.set_xticklabels([f"{100 * a:g}%" for a in alphas])


def _correlation_panel(ax, summary: pd.DataFrame, methods: Sequence[str], styles: Mapping[str, dict],
                       alpha_train: float, n_examples: int, title: str, keyed: Iterable[str] = ()) -> None:
    """`keyed`: methods already named in this row's scatter legend; the others get an entry here."""
    alphas = np.sort(summary["alpha_test"].unique())
    span = float(max(alphas.max(), alpha_train) - min(alphas.min(), alpha_train))
    step = (0.012 * span) if span > 0 else 0.004
    present = [m for m in methods if m in set(summary["method"])]
    handles = []
    for i, m in enumerate(present):
        d = summary[summary["method"] == m].sort_values("alpha_test")
        s = styles[m]
        dodge = (i - (len(present) - 1) / 2) * step  # small horizontal offset so error bars do not overlap
        eb = ax.errorbar(d["alpha_test"] + dodge, d["mean"], yerr=d["err"], color=s["color"], marker=s["marker"],
                         markersize=3.5, capsize=2, elinewidth=0.9, markeredgewidth=0.6, label=s["label"],
                         zorder=3 + (len(present) - i))
        if m not in set(keyed):
            handles.append(eb)
    train_line = ax.axvline(alpha_train, ls=":", lw=1.3, color="0.25", zorder=1, gid="alpha_train",
                            label=rf"$\alpha_\mathrm{{train}}$ = {alpha_train:g}")
    _alpha_ticks(ax, alphas)
    lo = min(0.0, float((summary["mean"] - summary["err"]).min()))
    hi = max(0.0, float((summary["mean"] + summary["err"]).max()))
    pad = 0.06 * max(hi - lo, 0.1)
    ax.set_ylim(lo - pad, min(hi + pad, 1.05))
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    ax.set_title(f"{title}mean over {n_examples} examples (± 1.96 SE)", loc="left")
    ax.set_xlabel(r"ablation fraction $\alpha_\mathrm{test}$")
    ax.set_ylabel(r"mean correlation $\mathbb{E}_z[\rho(z)]$")
    # The method key (with each method's r) sits beside the scatter panel of the same row; this legend
    # names the dotted alpha_train line and any method that has no scatter in this row.
    ax.legend(handles=handles + [train_line], loc="best")


def fig_attribution_accuracy(correlations: pd.DataFrame, scatter: pd.DataFrame, alpha_train: Mapping[str, float],
                             provenance: str, setup_titles: Mapping[str, str] | None = None) -> Figure:
    """Paper Fig. 2 layout: one row per setup; left, one example's true counterfactuals vs each method's
    estimates (both z-scored, Pearson r in the legend); right, mean correlation vs alpha_test per method
    with 1.96-SE error bars and a dotted line at alpha_train. `provenance` is printed as a footer.

    correlations: columns setup, method, alpha_test, example, correlation (NaN counts as 0).
    scatter: columns setup, method, example, mask, true, predicted (one chosen example per setup).
    alpha_train: setup -> train-time ablation fraction. setup_titles: setup -> display title (also the
    row order; setups it does not name follow in order of first appearance).
    """
    require_columns(correlations, CORRELATION_COLUMNS, "correlations")
    require_columns(scatter, SCATTER_COLUMNS, "scatter")
    correlations = numeric_columns(correlations, ["alpha_test", "correlation"], "correlations")
    scatter = numeric_columns(scatter, ["true", "predicted"], "scatter")
    if correlations["alpha_test"].isna().any():
        raise CoarError("correlations column 'alpha_test' has missing values; every row needs its ablation fraction")
    corr_setups = ordered_unique(correlations["setup"])
    no_corr = [s for s in ordered_unique(scatter["setup"]) if s not in set(corr_setups)]
    if no_corr:
        raise CoarError(f"scatter has setup(s) {no_corr} with no rows in correlations (setups there: {corr_setups})")
    missing_alpha = [s for s in corr_setups if s not in alpha_train]
    if missing_alpha:
        raise CoarError(f"alpha_train has no entry for setup(s) {missing_alpha}")
    titles = dict(setup_titles or {})
    setups = [s for s in titles if s in set(corr_setups)] + [s for s in corr_setups if s not in titles]
    methods = method_order(list(correlations["method"]) + list(scatter["method"]))
    styles = method_styles(methods)
    summary = _summarise(correlations)

    with matplotlib.rc_context(rc_params()):
        height = ROW_HEIGHT_IN * len(setups) + 0.7
        fig = Figure(figsize=(WIDTH_IN, height), layout="constrained")
        footer = provenance_footer(fig, provenance, WIDTH_IN)
        fig.get_layout_engine().set(rect=(0.0, footer, 1.0, 1.0 - footer), h_pad=0.04, w_pad=0.04,
                                    hspace=0.06, wspace=0.04)
        rows = fig.subfigures(len(setups), 1, squeeze=False)[:, 0]
        for row, setup in enumerate(setups):
            # the setup's (long) title once per row, over both panels; panels get short titles
            rows[row].suptitle(titles.get(setup, str(setup)), x=0.01, ha="left", fontsize="medium",
                               fontweight="bold")
            axes = rows[row].subplots(1, 2, gridspec_kw={"width_ratios": [1.0, 1.05]})
            sc = scatter[scatter["setup"] == setup]
            _scatter_panel(axes[0], sc, methods, styles, "")
            su = summary[summary["setup"] == setup]
            n_ex = correlations.loc[correlations["setup"] == setup, "example"].nunique()
            keyed = set(sc.loc[sc["example"] == sc["example"].iloc[0], "method"]) if len(sc) else set()
            _correlation_panel(axes[1], su, methods, styles, float(alpha_train[setup]), n_ex, "", keyed=keyed)
        fig.suptitle(SUPTITLE_FIG2, fontweight="bold")
    return fig


SUPTITLE_FIG14 = "COAR with fewer masks (cf. paper Fig. 14)"
SAMPLE_SIZE_COLUMNS = ("setup", "method", "m", "example", "correlation", "cosine")


def fig_sample_size(table: pd.DataFrame, provenance: str, setup_titles: Mapping[str, str] | None = None) -> Figure:
    """Paper Fig. 14 layout: one row per setup. Left: per-example cosine similarity between attributions
    fitted on m masks and on all masks (weights centred per example: exact-alpha masks leave a constant
    offset unidentified). Right: mean correlation at alpha_train vs m, with the leave-one-out baseline.

    table: columns setup, method ("coar" rows carry m and cosine; optional "coar-ridge" rows the same for
    ridge refits, drawn as a second line on the right; "loo" rows the baseline), m, example, correlation (NaN
    counts as 0), cosine.
    """
    require_columns(table, SAMPLE_SIZE_COLUMNS, "sample-size table")
    table = numeric_columns(table, ["m", "correlation", "cosine"], "sample-size table")
    coar = table[table["method"] == "coar"]
    if coar.empty:
        raise CoarError("sample-size table has no 'coar' rows")
    titles = dict(setup_titles or {})
    present = ordered_unique(table["setup"])
    setups = [x for x in titles if x in set(present)] + [x for x in present if x not in titles]
    styles = method_styles(method_order(["coar", "coar-ridge", "loo"]))
    with matplotlib.rc_context(rc_params()):
        fig = Figure(figsize=(WIDTH_IN, ROW_HEIGHT_IN * len(setups) + 0.7), layout="constrained")
        footer = provenance_footer(fig, provenance, WIDTH_IN)
        fig.get_layout_engine().set(rect=(0.0, footer, 1.0, 1.0 - footer), h_pad=0.04, w_pad=0.04)
        rows = fig.subfigures(len(setups), 1, squeeze=False)[:, 0]
        for row, setup in enumerate(setups):
            rows[row].suptitle(titles.get(setup, str(setup)), x=0.01, ha="left", fontsize="medium",
                               fontweight="bold")
            ax_cos, ax_corr = rows[row].subplots(1, 2)
            d = coar[coar["setup"] == setup]
            ms = sorted(d["m"].dropna().unique())
            data = [d.loc[d["m"] == m, "cosine"].dropna().to_numpy() for m in ms]
            ax_cos.boxplot(data, orientation="horizontal", tick_labels=[f"{int(m):,}" for m in ms], widths=0.6,
                           flierprops={"markersize": 2}, medianprops={"color": styles["coar"]["color"]})
            ax_cos.set_xlabel(f"cosine similarity with attributions from {int(max(ms)):,} masks")
            ax_cos.set_ylabel("masks m")
            ax_cos.set_title("per example (weights centred)", loc="left")
            for method, label in (("coar", "COAR"), ("coar-ridge", "COAR, ridge (GCV)")):
                rows_m = table[(table["setup"] == setup) & (table["method"] == method)]
                if rows_m.empty:
                    continue
                g = rows_m.assign(correlation=rows_m["correlation"].fillna(0.0)).groupby("m")["correlation"]
                mean, err = g.mean(), Z95 * g.sem().fillna(0.0)
                ax_corr.errorbar(mean.index, mean.to_numpy(), yerr=err.to_numpy(), color=styles[method]["color"],
                                 marker=styles[method]["marker"], markersize=3.5, capsize=2, label=label,
                                 gid=f"sample_size_{method}")
            loo = table[(table["setup"] == setup) & (table["method"] == "loo")]
            if not loo.empty:
                v = float(loo["correlation"].fillna(0.0).mean())
                ax_corr.axhline(v, ls="--", color=styles["loo"]["color"], label=f"Leave-one-out: {v:.2f}")
            ax_corr.set_xscale("log")
            ax_corr.set_xticks(ms)
            ax_corr.set_xticklabels([f"{int(m):,}" for m in ms])
            ax_corr.minorticks_off()
            ax_corr.set_xlabel("masks m used to fit COAR")
            ax_corr.set_ylabel(r"mean correlation $\mathbb{E}_z[\rho(z)]$")
            ax_corr.set_title(r"fresh masks at $\alpha_\mathrm{train}$", loc="left")
            ax_corr.legend(loc="lower right")
        fig.suptitle(SUPTITLE_FIG14, fontweight="bold")
    return fig



def fig_correlation_panels(correlations: pd.DataFrame, alpha_train: Mapping[str, float], provenance: str,
                           setup_titles: Mapping[str, str] | None = None, suptitle: str = "",
                           columns: int = 3) -> Figure:
    """One panel per setup: mean correlation vs alpha_test for every method present, 1.96-SE bars, a
    dotted line at the setup's alpha_train (paper Figs. 8-12: COAR on other data, models and tasks).

    correlations: columns setup, method, alpha_test, example, correlation (NaN counts as 0).
    """
    require_columns(correlations, CORRELATION_COLUMNS, "correlations")
    correlations = numeric_columns(correlations, ["alpha_test", "correlation"], "correlations")
    titles = dict(setup_titles or {})
    present = ordered_unique(correlations["setup"])
    setups = [x for x in titles if x in set(present)] + [x for x in present if x not in titles]
    missing = [x for x in setups if x not in alpha_train]
    if missing:
        raise CoarError(f"alpha_train has no entry for setup(s) {missing}")
    methods = method_order(correlations["method"])
    styles = method_styles(methods)
    summary = _summarise(correlations)
    ncol = max(1, min(columns, len(setups)))
    nrow = -(-len(setups) // ncol)
    with matplotlib.rc_context(rc_params()):
        fig = Figure(figsize=(WIDTH_IN, ROW_HEIGHT_IN * nrow + 0.9), layout="constrained")
        footer = provenance_footer(fig, provenance, WIDTH_IN)
        fig.get_layout_engine().set(rect=(0.0, footer, 1.0, 1.0 - footer), h_pad=0.04, w_pad=0.04)
        axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
        for ax, setup in zip(axes, setups):
            n_ex = correlations.loc[correlations["setup"] == setup, "example"].nunique()
            _correlation_panel(ax, summary[summary["setup"] == setup], methods, styles, float(alpha_train[setup]),
                               n_ex, "")
            wrap = int(118 / ncol)  # characters per title line that fit above one panel
            ax.set_title("\n".join(textwrap.wrap(titles.get(setup, str(setup)), wrap)) + f"\n({n_ex} examples, ± 1.96 SE)",
                         loc="left", fontsize=SMALL)
        for ax in axes[len(setups):]:
            ax.set_visible(False)
        fig.suptitle(suptitle, fontweight="bold")
    return fig
