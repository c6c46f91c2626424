"""Figures for the attribution evaluation (paper Figs. 2 and 14): tidy tables in, matplotlib Figure out.

This module only draws. It reads no files and keeps no global matplotlib state: every figure is built
on a `matplotlib.figure.Figure` (no pyplot figure manager) inside a local style context, so importing
or calling it never changes the caller's rcParams. Writing a figure to disk is the caller's job;
`save_figure` is the one helper that does it, atomically.

Conventions shared by all panels:
  * every method has one fixed, colour-blind-safe colour (Okabe-Ito palette) and marker
    (`METHOD_COLORS`), and one display name (`METHOD_NAMES`, via `method_label`);
  * undefined correlations (NaN: an estimate constant over masks) count as 0 in means, as in
    `coar.correlation.summarize`;
  * every figure carries a provenance footer, so a small demo run can never pass for the paper's.
"""
from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .errors import CoarError

__all__ = ["METHOD_NAMES", "METHOD_COLORS", "method_label", "fig_attribution_accuracy", "fig_sample_size",
           "fig_correlation_panels",
           "save_figure"]

METHOD_NAMES: dict[str, str] = {
    "coar": "COAR",
    "coar-ols": "COAR",
    "coar-ridge": "COAR (ridge)",
    "loo": "Leave-one-out",
    "gp": "Grad x param",
    "nc": "Neuron cond.",
    "ii": "Internal infl.",
}

# Okabe & Ito (2008) colour-blind-safe palette; one fixed colour per method in every panel.
METHOD_COLORS: dict[str, str] = {
    "coar": "#D55E00",        # vermillion
    "coar-ols": "#D55E00",    # same method, same colour
    "coar-ridge": "#CC79A7",  # reddish purple
    "loo": "#0072B2",         # blue
    "gp": "#009E73",          # bluish green
    "nc": "#E69F00",          # orange
    "ii": "#56B4E9",          # sky blue
}

_METHOD_MARKERS: dict[str, str] = {
    "coar": "o", "coar-ols": "o", "coar-ridge": "P", "loo": "s", "gp": "^", "nc": "D", "ii": "v",
}
# Colours/markers for methods this module does not know, handed out in sorted-name order per figure.
_FALLBACK_COLORS = ("#000000", "#7F7F7F", "#8C564B", "#F0E442", "#17BECF", "#BCBD22")
_FALLBACK_MARKERS = ("X", "*", "h", "p", "<", ">")
_METHOD_ORDER = tuple(METHOD_NAMES)  # COAR first, then the baselines in the paper's order

SUPTITLE_FIG2 = "Attribution accuracy (cf. paper Fig. 2)"
CORRELATION_COLUMNS = ("setup", "method", "alpha_test", "example", "correlation")
SCATTER_COLUMNS = ("setup", "method", "example", "mask", "true", "predicted")
Z95 = 1.96

_FONT = 7.5
_SMALL = 6.5
_ROW_HEIGHT_IN = 2.75
_WIDTH_IN = 7.5


def method_label(name: str) -> str:
    """Display name of a method ("loo" -> "Leave-one-out"); unknown names are shown as given."""
    return METHOD_NAMES.get(name, str(name))


def _style() -> dict:
    """A seaborn-"whitegrid"-like, paper-sized style, applied locally via matplotlib.rc_context."""
    import seaborn as sns  # imported lazily: only the style dictionaries are used, never sns.set()

    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("paper"))
    rc.update({
        "font.size": _FONT, "axes.titlesize": _FONT + 0.5, "axes.labelsize": _FONT,
        "xtick.labelsize": _SMALL, "ytick.labelsize": _SMALL, "legend.fontsize": _SMALL,
        "legend.title_fontsize": _SMALL, "figure.titlesize": _FONT + 2.5,
        "axes.titleweight": "normal", "axes.edgecolor": "0.3", "grid.color": "0.9", "grid.linewidth": 0.6,
        "axes.linewidth": 0.7, "lines.linewidth": 1.3, "lines.markersize": 4.0,
        "legend.frameon": True, "legend.framealpha": 0.9, "legend.edgecolor": "0.85",
        "legend.borderpad": 0.35, "legend.handlelength": 1.6, "legend.labelspacing": 0.3,
        "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    })
    return rc


def _require(table: pd.DataFrame, columns: Sequence[str], what: str, allow_empty: bool = False) -> None:
    if not isinstance(table, pd.DataFrame):
        raise CoarError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CoarError(f"{what} table is missing required column(s) {missing}; it has {list(table.columns)}")
    if table.empty and not allow_empty:
        raise CoarError(f"{what} table is empty")


def _numeric(table: pd.DataFrame, columns: Iterable[str], what: str) -> pd.DataFrame:
    table = table.copy()
    for c in columns:
        try:
            table[c] = pd.to_numeric(table[c]).astype(np.float64)
        except (TypeError, ValueError) as e:
            raise CoarError(f"{what} column {c!r} must be numeric: {e}") from None
    return table


def _ordered_unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def _method_order(methods: Iterable[str]) -> list[str]:
    """Known methods in the canonical order (COAR first), then unknown ones in order of appearance."""
    methods = _ordered_unique(methods)
    known = [m for m in _METHOD_ORDER if m in methods]
    return known + [m for m in methods if m not in METHOD_NAMES]


def _styles_for(methods: Sequence[str]) -> dict[str, dict]:
    """Colour, marker and unique legend label per method, fixed for the whole figure."""
    unknown = sorted(m for m in methods if m not in METHOD_COLORS)
    styles = {}
    for m in methods:
        if m in METHOD_COLORS:
            colour, marker = METHOD_COLORS[m], _METHOD_MARKERS[m]
        else:
            i = unknown.index(m)
            colour, marker = _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)], _FALLBACK_MARKERS[i % len(_FALLBACK_MARKERS)]
        styles[m] = {"color": colour, "marker": marker, "label": method_label(m)}
    labels = [s["label"] for s in styles.values()]
    for m, s in styles.items():  # e.g. "coar" and "coar-ols" together: keep both legible
        if labels.count(s["label"]) > 1:
            s["label"] = f"{s['label']} [{m}]"
    return styles


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _summarise(correlations: pd.DataFrame) -> pd.DataFrame:
    """Mean correlation and 1.96 * standard error over examples per (setup, method, alpha_test)."""
    t = correlations.assign(correlation=correlations["correlation"].fillna(0.0))
    out = t.groupby(["setup", "method", "alpha_test"], sort=False)["correlation"].agg(
        mean="mean", sd="std", n="size").reset_index()
    sem = out["sd"] / np.sqrt(out["n"])
    out["err"] = (Z95 * sem).fillna(0.0)  # a single example has no spread estimate: no bar
    return out.sort_values(["setup", "alpha_test"], kind="stable")


def _footer(fig: Figure, provenance: str, width_in: float) -> float:
    """Provenance text at the bottom of the figure; returns the height (figure fraction) it takes."""
    chars_per_line = max(40, int(width_in * 72 / (_SMALL * 0.6)))
    lines = textwrap.wrap(" ".join(str(provenance).split()), chars_per_line) or [""]
    height_in = 0.08 + len(lines) * _SMALL * 1.3 / 72
    fig.text(0.01, 0.04 / fig.get_figheight(), "\n".join(lines), ha="left", va="bottom",
             fontsize=_SMALL, color="0.35", linespacing=1.2, gid="provenance")
    return height_in / fig.get_figheight()


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
        r = _pearson(x, y)
        zx, zy = _zscore(x), _zscore(y)
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
    _require(correlations, CORRELATION_COLUMNS, "correlations")
    _require(scatter, SCATTER_COLUMNS, "scatter")
    correlations = _numeric(correlations, ["alpha_test", "correlation"], "correlations")
    scatter = _numeric(scatter, ["true", "predicted"], "scatter")
    if correlations["alpha_test"].isna().any():
        raise CoarError("correlations column 'alpha_test' has missing values; every row needs its ablation fraction")
    corr_setups = _ordered_unique(correlations["setup"])
    no_corr = [s for s in _ordered_unique(scatter["setup"]) if s not in set(corr_setups)]
    if no_corr:
        raise CoarError(f"scatter has setup(s) {no_corr} with no rows in correlations (setups there: {corr_setups})")
    missing_alpha = [s for s in corr_setups if s not in alpha_train]
    if missing_alpha:
        raise CoarError(f"alpha_train has no entry for setup(s) {missing_alpha}")
    titles = dict(setup_titles or {})
    setups = [s for s in titles if s in set(corr_setups)] + [s for s in corr_setups if s not in titles]
    methods = _method_order(list(correlations["method"]) + list(scatter["method"]))
    styles = _styles_for(methods)
    summary = _summarise(correlations)

    with matplotlib.rc_context(_style()):
        height = _ROW_HEIGHT_IN * len(setups) + 0.7
        fig = Figure(figsize=(_WIDTH_IN, height), layout="constrained")
        footer = _footer(fig, provenance, _WIDTH_IN)
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
    _require(table, SAMPLE_SIZE_COLUMNS, "sample-size table")
    table = _numeric(table, ["m", "correlation", "cosine"], "sample-size table")
    coar = table[table["method"] == "coar"]
    if coar.empty:
        raise CoarError("sample-size table has no 'coar' rows")
    titles = dict(setup_titles or {})
    present = _ordered_unique(table["setup"])
    setups = [x for x in titles if x in set(present)] + [x for x in present if x not in titles]
    styles = _styles_for(_method_order(["coar", "coar-ridge", "loo"]))
    with matplotlib.rc_context(_style()):
        fig = Figure(figsize=(_WIDTH_IN, _ROW_HEIGHT_IN * len(setups) + 0.7), layout="constrained")
        footer = _footer(fig, provenance, _WIDTH_IN)
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
    _require(correlations, CORRELATION_COLUMNS, "correlations")
    correlations = _numeric(correlations, ["alpha_test", "correlation"], "correlations")
    titles = dict(setup_titles or {})
    present = _ordered_unique(correlations["setup"])
    setups = [x for x in titles if x in set(present)] + [x for x in present if x not in titles]
    missing = [x for x in setups if x not in alpha_train]
    if missing:
        raise CoarError(f"alpha_train has no entry for setup(s) {missing}")
    methods = _method_order(correlations["method"])
    styles = _styles_for(methods)
    summary = _summarise(correlations)
    ncol = max(1, min(columns, len(setups)))
    nrow = -(-len(setups) // ncol)
    with matplotlib.rc_context(_style()):
        fig = Figure(figsize=(_WIDTH_IN, _ROW_HEIGHT_IN * nrow + 0.9), layout="constrained")
        footer = _footer(fig, provenance, _WIDTH_IN)
        fig.get_layout_engine().set(rect=(0.0, footer, 1.0, 1.0 - footer), h_pad=0.04, w_pad=0.04)
        axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
        for ax, setup in zip(axes, setups):
            n_ex = correlations.loc[correlations["setup"] == setup, "example"].nunique()
            _correlation_panel(ax, summary[summary["setup"] == setup], methods, styles, float(alpha_train[setup]),
                               n_ex, "")
            wrap = int(118 / ncol)  # characters per title line that fit above one panel
            ax.set_title("\n".join(textwrap.wrap(titles.get(setup, str(setup)), wrap)) + f"\n({n_ex} examples, ± 1.96 SE)",
                         loc="left", fontsize=_SMALL)
        for ax in axes[len(setups):]:
            ax.set_visible(False)
        fig.suptitle(suptitle, fontweight="bold")
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 200) -> Path:
    """Write `fig` to `path` (format from the suffix, e.g. .pdf or .png) atomically: render to a temporary
    file with the same suffix in the same directory, then os.replace it into place. Creates parent dirs."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise CoarError(f"cannot save figure to {path}: unsupported suffix {path.suffix!r} "
                        f"(use one of {sorted('.' + k for k in supported)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    metadata = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}.get(fmt)  # byte-stable reruns
    try:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
