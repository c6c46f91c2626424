"""Figures for model editing with COAR-EDIT (paper Figs. 3, 4, 19-23): tidy tables in, matplotlib Figure out.

Same rules as `coar.paper.plots.attribution` and `coar.paper.plots.appendix` (whose private helpers this module reuses): nothing
here reads files or touches global matplotlib state; every figure is built on a bare
`matplotlib.figure.Figure` inside `matplotlib.rc_context(rc_params())`, carries a provenance footer and the
caller's bold suptitle (which names the paper figure, "... (cf. paper Fig. N)"). Bad input raises
`CoarError` naming the missing column, the bad value or the unknown target.

Encoding shared by all figures:
  * method = colour + line style: COAR-EDIT in `METHOD_COLORS["coar"]`, solid; the random-components
    control in neutral gray, dashed;
  * evaluation set (target / reference / held-out / ...) = marker + lightness of the method's colour,
    darkest for the first set;
  * accuracy is drawn in percent (the tables hold fractions 0..1), accuracy changes in percentage points.

Tables (as written by the editing workflow):
  sweep: target, method ("coar" | "random"), k (components ablated; 0 = unedited), set, accuracy (0..1),
    mean_margin; one row per (target, method, k, set). An `experiment` column may be present; it is not
    read, so pass the rows of one experiment.
  summary: target, method, k (the k chosen on validation, NaN if none; the control ablates COAR-EDIT's k),
    flipped (bool: the target flipped at k), accuracy_change (held-out accuracy at k minus at k = 0, fraction;
    NaN without a k); optionally first_k and first_accuracy_change (the method's first flip at any cost).
  components: target, rank, component, module, module_index.
  classwise: class, class_name, before, after (accuracy 0..1), forgotten (bool).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ...errors import CoarError
from .style import (METHOD_COLORS, ROW_HEIGHT_IN, SMALL, WIDTH_IN, figure_with_title, legend_below, numeric_columns,
                    ordered_unique, panel_title, rc_params, require_columns, signed, wrap_title)

__all__ = [
    "CLASSWISE_COLUMNS",
    "COMPONENT_COLUMNS",
    "EDIT_METHOD_NAMES",
    "RANDOM_COLOR",
    "SUMMARY_COLUMNS",
    "SWEEP_COLUMNS",
    "fig_edit_examples",
    "fig_edit_layers",
    "fig_edit_prediction",
    "fig_forget_class",
    "fig_forget_classes",
]

SWEEP_COLUMNS = ("target", "method", "k", "set", "accuracy", "mean_margin")
SUMMARY_COLUMNS = ("target", "method", "k", "flipped", "accuracy_change")
COMPONENT_COLUMNS = ("target", "component", "module", "module_index")
CLASSWISE_COLUMNS = ("class", "class_name", "before", "after", "forgotten")

EDIT_METHODS = ("coar", "random")
EDIT_METHOD_NAMES = {"coar": "COAR-EDIT", "random": "random components (control)"}
RANDOM_COLOR = "#6E6E6E"  # neutral gray for the control
EDIT_METHOD_STYLE = {
    "coar": {"color": METHOD_COLORS["coar"], "ls": "-", "zorder": 4},
    "random": {"color": RANDOM_COLOR, "ls": (0, (4.0, 2.2)), "zorder": 3},
}
_SET_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_FIRST_FLIP_FLOOR = 12.0  # pp: Fig. 3c draws first flips down to this cost (or the worst validated edit)
_BOUNDARY_COLOR = "0.2"
_MAX_EXAMPLE_ROWS = 8
_MAX_DUMBBELL_CLASSES = 30


# ----------------------------------------------------------------------------------------------- helpers

def _shade(color: str, i: int, n: int) -> str:
    """The i-th of n lightness steps of `color`: i = 0 is the colour itself, later ones blend towards white."""
    if n <= 1 or i == 0:
        return to_hex(color)
    f = 0.55 * i / (n - 1)
    r, g, b = to_rgb(color)
    return to_hex((r + (1 - r) * f, g + (1 - g) * f, b + (1 - b) * f))


def _bool_column(table: pd.DataFrame, column: str, what: str) -> pd.Series:
    """A True/False column, also from 0/1 or "true"/"false" text (e.g. read back from CSV)."""
    values = table[column]
    if values.dtype == bool:
        return values
    words = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)):
            out.append(bool(v))
        elif isinstance(v, (int, float, np.integer, np.floating)) and v in (0, 1):
            out.append(bool(v))
        elif isinstance(v, str) and v.strip().lower() in words:
            out.append(words[v.strip().lower()])
        else:
            raise CoarError(f"{what} column {column!r} must hold True/False values; found {v!r}")
    return pd.Series(out, index=table.index, dtype=bool)


def _fraction_column(table: pd.DataFrame, column: str, what: str, low: float = 0.0) -> None:
    v = table[column]
    bad = v[v.notna() & ((v < low) | (v > 1.0))]
    if len(bad):
        raise CoarError(f"{what} column {column!r} must hold fractions in [{low:g}, 1] (not percent); "
                        f"found {sorted(set(bad.tolist()))[:5]}")


def check_sweep(sweep: pd.DataFrame) -> pd.DataFrame:
    require_columns(sweep, SWEEP_COLUMNS, "sweep")
    t = numeric_columns(sweep, ["k", "accuracy", "mean_margin"], "sweep")
    for c in ("target", "method", "set"):
        t[c] = t[c].astype(str)
    unknown = [m for m in ordered_unique(t["method"]) if m not in EDIT_METHODS]
    if unknown:
        raise CoarError(f"sweep column 'method' has unknown value(s) {unknown}; expected 'coar' or 'random'")
    k = t["k"]
    bad = k[~np.isfinite(k) | (k < 0) | (k != np.round(k))]
    if len(bad):
        raise CoarError(f"sweep column 'k' must hold whole numbers >= 0 (components ablated); "
                        f"found {sorted(set(bad.tolist()), key=str)[:5]}")
    _fraction_column(t, "accuracy", "sweep")
    dup = t.duplicated(["target", "method", "k", "set"], keep=False)
    if dup.any():
        first = t.loc[dup, ["target", "method", "k", "set"]].iloc[0].tolist()
        raise CoarError(f"sweep has {int(dup.sum())} rows that repeat a (target, method, k, set), e.g. {first}; "
                        "pass the rows of one experiment only")
    return t


def _target_rows(t: pd.DataFrame, target, what: str = "sweep") -> pd.DataFrame:
    name = str(target)
    d = t[t["target"] == name]
    if d.empty:
        known = ordered_unique(t["target"])
        more = f" (and {len(known) - 10} more)" if len(known) > 10 else ""
        raise CoarError(f"unknown target {name!r}: {what} has no rows for it; targets there: {known[:10]}{more}")
    if not (d["method"] == "coar").any():
        raise CoarError(f"{what} has no 'coar' rows for target {name!r} (methods there: "
                        f"{ordered_unique(d['method'])})")
    return d


def _curve(d: pd.DataFrame, method: str, set_name: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    c = d[(d["method"] == method) & (d["set"] == set_name)].sort_values("k")
    return c["k"].to_numpy(), c[column].to_numpy()


def _need_set(d: pd.DataFrame, set_name: str, target: str) -> None:
    if not ((d["set"] == set_name) & (d["method"] == "coar")).any():
        raise CoarError(f"sweep has no 'coar' rows with set == {set_name!r} for target {target!r} "
                        f"(sets there: {ordered_unique(d['set'])})")


def _k_axis(ax, ks: np.ndarray) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, integer=True))
    lo, hi = float(np.min(ks)), float(np.max(ks))
    pad = 0.04 * max(hi - lo, 1.0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_xlabel("components ablated $k$")
    ax.grid(axis="x", visible=False)


def _percent_ylim(ax, values: np.ndarray, min_span: float = 10.0) -> None:
    """y range around the data (in %) but never tighter than `min_span` points, so noise stays small."""
    v = values[np.isfinite(values)]
    if not len(v):
        return
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
        if lo < 0:
            lo, hi = 0.0, min_span
        if hi > 100:
            lo, hi = 100 - min_span, 100.0
    pad = 0.06 * (hi - lo)
    ax.set_ylim(max(lo - pad, -1.0), min(hi + pad, 101.0))


def _flip_k(k: np.ndarray, margin: np.ndarray) -> float:
    """Smallest k > k0 at which the target margin has the other sign than at the first k (NaN: never)."""
    ok = np.isfinite(margin)
    k, margin = k[ok], margin[ok]
    if len(k) < 2:
        return float("nan")
    s0 = margin[0] > 0
    hits = np.nonzero((margin[1:] > 0) != s0)[0]
    return float(k[1 + hits[0]]) if len(hits) else float("nan")


def _margin_panel(ax, d: pd.DataFrame, flip_k: float | None = None, chosen_k: float | None = None) -> None:
    """Target margin vs k (COAR-EDIT vs control) with the labelled decision boundary at 0, a star where
    COAR-EDIT first flips the target and a dotted line at the k chosen on validation."""
    values, ks = [], []
    for m in EDIT_METHODS:
        k, y = _curve(d, m, "target", "mean_margin")
        if not len(k):
            continue
        st = EDIT_METHOD_STYLE[m]
        ax.plot(k, y, color=st["color"], ls=st["ls"], marker="o" if m == "coar" else "s", markersize=3.2,
                mec="white", mew=0.4, zorder=st["zorder"], gid=f"margin_{m}", label=EDIT_METHOD_NAMES[m])
        values.append(y)
        ks.append(k)
    k_all, y_all = np.concatenate(ks), np.concatenate(values)
    if flip_k is not None and np.isfinite(flip_k):
        k, y = _curve(d, "coar", "target", "mean_margin")
        hit = np.isclose(k, flip_k)
        if hit.any():
            ax.plot([flip_k], [float(y[hit][0])], ls="none", marker="*", ms=10, color=EDIT_METHOD_STYLE["coar"]["color"],
                    mec="white", mew=0.6, zorder=6, gid="flip", label=f"prediction flips (k = {flip_k:g})")
    if chosen_k is not None and np.isfinite(chosen_k):
        ax.axvline(chosen_k, color="0.25", ls=":", lw=1.1, zorder=2, gid="chosen_k",
                   label=f"k chosen on validation ({chosen_k:g})")
    finite = y_all[np.isfinite(y_all)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (-1.0, 1.0)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = max(hi - lo, 1e-6)
    # the boundary's label goes on the side of the line with less data near the right end
    right = k_all >= np.min(k_all) + 0.6 * (np.max(k_all) - np.min(k_all))
    tail = y_all[right & np.isfinite(y_all)]
    above = bool(np.mean(tail > 0) <= 0.5) if len(tail) else True
    if above:
        hi = max(hi, 0.2 * span)
    else:
        lo = min(lo, -0.2 * span)
    pad = 0.07 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)
    ax.axhline(0.0, color=_BOUNDARY_COLOR, lw=0.9, zorder=2, gid="decision_boundary")
    ax.annotate("decision boundary", xy=(0.98, 0.0), xycoords=("axes fraction", "data"),
                xytext=(0, 2.5 if above else -2.5), textcoords="offset points", ha="right",
                va="bottom" if above else "top", fontsize=SMALL, color=_BOUNDARY_COLOR, gid="decision_boundary_label")
    _k_axis(ax, k_all)
    ax.set_ylabel("correct-class margin of the target")


def set_styles(sets: Sequence[str]) -> dict[str, dict]:
    """Marker and lightness step per evaluation set (first set: darkest)."""
    n = len(sets)
    return {s: {"marker": _SET_MARKERS[i % len(_SET_MARKERS)], "i": i, "n": n} for i, s in enumerate(sets)}


def _accuracy_lines(ax, d: pd.DataFrame, sets: Sequence[str], styles: Mapping[str, dict]) -> np.ndarray:
    """Accuracy (%) vs k per (method, set); returns every plotted value."""
    values = [np.zeros(0)]
    for m in reversed(EDIT_METHODS):  # COAR-EDIT drawn last, i.e. on top
        st = EDIT_METHOD_STYLE[m]
        for s in sets:
            k, acc = _curve(d, m, s, "accuracy")
            if not len(k):
                continue
            ss = styles[s]
            colour = _shade(st["color"], ss["i"], ss["n"])
            ax.plot(k, 100.0 * acc, color=colour, ls=st["ls"], marker=ss["marker"], markersize=3.2, mec="white",
                    mew=0.4, zorder=st["zorder"], gid=f"accuracy_{m}|{s}", label=f"{EDIT_METHOD_NAMES[m]}, {s}")
            values.append(100.0 * acc)
    return np.concatenate(values)


def key_handles(sets: Sequence[str], styles: Mapping[str, dict], methods: Sequence[str],
                 set_label: str = "{}") -> list:
    """Legend: one entry per method (colour + line style), then one per set (marker + lightness)."""
    handles = []
    for m in EDIT_METHODS:
        if m in methods:
            st = EDIT_METHOD_STYLE[m]
            handles.append(Line2D([], [], color=st["color"], ls=st["ls"], lw=1.4, label=EDIT_METHOD_NAMES[m]))
    coar = EDIT_METHOD_STYLE["coar"]["color"]
    for s in sets:
        ss = styles[s]
        handles.append(Line2D([], [], ls="none", marker=ss["marker"], ms=4.5, mec="white", mew=0.4,
                              color=_shade(coar, ss["i"], ss["n"]), label=set_label.format(s)))
    return handles


def _order_sets(sets: Sequence[str]) -> list[str]:
    """Sets that hold the edit's target first ("target", "...forgotten..."), then the rest; within each group
    held-out sets first (they carry the result; validation sets only chose k), else in the order given."""
    def rank(s: str) -> tuple[int, int]:
        return (0 if s == "target" or "forgotten" in s.lower() else 1, 0 if s.lower().startswith("held-out") else 1)
    return sorted(sets, key=rank)  # stable: ties keep their order


def _short(text: str, width: int) -> str:
    """One line of at most `width` characters (long class names are cut with an ellipsis)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rstrip() + "\u2026"


def check_chosen_k(value, what: str) -> int:
    try:
        k = float(value)
    except (TypeError, ValueError):
        raise CoarError(f"{what} must be a whole number of components >= 0, got {value!r}") from None
    if not np.isfinite(k) or k < 0 or k != round(k):
        raise CoarError(f"{what} must be a whole number of components >= 0, got {value!r}")
    return int(k)


# ------------------------------------------------------------------------------------------------ Fig. 3

def _flip_phrase(summary_targets: Sequence[str], sweep: pd.DataFrame) -> str:
    """"errors fixed" when every edited target was misclassified before the edit (margin <= 0 at k = 0),
    "correct predictions flipped" when every one was correct, else "predictions flipped"."""
    base = sweep[(sweep["method"] == "coar") & (sweep["set"] == "target") & (sweep["k"] == 0)]
    margin = base.set_index("target")["mean_margin"]
    m = [margin.get(t, np.nan) for t in summary_targets]
    if m and all(np.isfinite(v) and v <= 0 for v in m):
        return "errors fixed"
    if m and all(np.isfinite(v) and v > 0 for v in m):
        return "correct predictions flipped"
    return "predictions flipped"


def fig_edit_prediction(sweep: pd.DataFrame, summary: pd.DataFrame, target, provenance: str, suptitle: str,
                        title: str) -> Figure:
    """Paper Fig. 3: editing individual predictions with COAR-EDIT. Three panels in a row:

    (a) the chosen target's correct-class margin (sweep rows with set == "target", column mean_margin) vs k
        for COAR-EDIT and the random-components control, a line at margin 0 labelled "decision boundary",
        and a star where COAR-EDIT flips the prediction (the target's `k` in `summary`, when flipped);
    (b) accuracy (%) vs k on the "reference" and "held-out" sets (either may be missing, not both), COAR-EDIT
        solid / control dashed, the sets told apart by marker and lightness;
    (c) over every target in `summary`: histogram of accuracy_change (in percentage points) of the COAR-EDIT
        edits that flipped their target, median marked and stated, with "F of N errors fixed" (or
        "... predictions flipped" when not every target was misclassified before the edit) and, when
        summary has "random" rows, how many random edits flipped their targets.

    sweep: columns target, method, k, set, accuracy, mean_margin. summary: columns target, method, k, flipped,
    accuracy_change. target: the example id to show in (a) and (b). title: model / data line under the bold
    `suptitle` (which should end "(cf. paper Fig. 3)").
    """
    t = check_sweep(sweep)
    name = str(target)
    d = _target_rows(t, name)
    _need_set(d, "target", name)
    acc_sets = [s for s in ("held-out", "reference") if (d["set"] == s).any()]
    if not acc_sets:
        raise CoarError(f"sweep has no 'held-out' or 'reference' rows for target {name!r} "
                        f"(sets there: {ordered_unique(d['set'])})")

    require_columns(summary, SUMMARY_COLUMNS, "summary")
    s = numeric_columns(summary, ["k", "accuracy_change"], "summary")
    s["target"] = s["target"].astype(str)
    s["method"] = s["method"].astype(str)
    s["flipped"] = _bool_column(s, "flipped", "summary")
    _fraction_column(s, "accuracy_change", "summary", low=-1.0)
    unknown = [m for m in ordered_unique(s["method"]) if m not in EDIT_METHODS]
    if unknown:
        raise CoarError(f"summary column 'method' has unknown value(s) {unknown}; expected 'coar' or 'random'")
    coar = s[s["method"] == "coar"]
    if coar.empty:
        raise CoarError("summary has no 'coar' rows (one per edited target)")
    dup = coar["target"].duplicated()
    if dup.any():
        raise CoarError(f"summary has more than one 'coar' row for target(s) {ordered_unique(coar.loc[dup, 'target'])[:5]}")
    flipped = coar[coar["flipped"]]
    changes = 100.0 * flipped["accuracy_change"].to_numpy(dtype=float)
    no_change = int((~np.isfinite(changes)).sum())
    changes = changes[np.isfinite(changes)]
    rnd = s[s["method"] == "random"]
    row = coar[coar["target"] == name]
    validated = "first_k" in s.columns  # k chosen on validation; first_k is the first flip at any cost
    if validated:
        s = numeric_columns(s, ["first_k", "first_accuracy_change"], "summary")
        coar = s[s["method"] == "coar"]
        row = coar[coar["target"] == name]
        first = 100.0 * coar["first_accuracy_change"].to_numpy(dtype=float)
        first = first[np.isfinite(first)]
        flip_k = float(row["first_k"].iloc[0]) if len(row) else None
        chosen_k = float(row["k"].iloc[0]) if len(row) and bool(row["flipped"].iloc[0]) else None
    else:
        first = np.array([])
        flip_k = float(row["k"].iloc[0]) if len(row) and bool(row["flipped"].iloc[0]) else None
        chosen_k = None
    phrase = _flip_phrase(ordered_unique(coar["target"]), t)

    width, height = WIDTH_IN, ROW_HEIGHT_IN + 1.35
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(width, height, provenance, suptitle, title, wspace=0.06)
        ax_m, ax_a, ax_h = panel.subplots(1, 3)
        pw = width / 3 - 0.3

        _margin_panel(ax_m, d, flip_k, chosen_k)
        panel_title(ax_m, f"(a) example {name}: target margin", pw)
        legend_below(ax_m, ax_m.get_legend_handles_labels()[0])

        styles = set_styles(acc_sets)
        plotted = _accuracy_lines(ax_a, d, acc_sets, styles)
        _percent_ylim(ax_a, plotted)
        _k_axis(ax_a, d["k"].to_numpy())
        ax_a.set_ylabel("accuracy (%)")
        panel_title(ax_a, f"(b) example {name}: overall accuracy", pw)
        methods = ordered_unique(d.loc[d["set"].isin(acc_sets), "method"])
        legend_below(ax_a, key_handles(acc_sets, styles, methods, "{} set"))

        colour = EDIT_METHOD_STYLE["coar"]["color"]
        lines = [f"COAR-EDIT: {len(flipped)} of {len(coar)} {phrase}"
                 + (" within the\nvalidation limit" if validated else "")]
        med = None
        off_axis = 0
        if len(changes):
            if len(first):  # 1-pp bins; first flips that cost far more than any validated edit are counted, not drawn
                floor = min(float(np.floor(changes.min())) - 1.0, -_FIRST_FLIP_FLOOR)
                off_axis = int((first < floor).sum())
                shown = first[first >= floor]
                both = np.concatenate([changes, shown])
                edges = np.arange(np.floor(both.min()), np.ceil(both.max()) + 1.0 + 1e-9, 1.0)
            else:
                edges = np.histogram_bin_edges(changes, bins="auto")
                if len(edges) > 31:
                    edges = np.histogram_bin_edges(changes, bins=30)
            heights, _, _ = ax_h.hist(changes, bins=edges, color=colour, alpha=0.8, edgecolor="white", linewidth=0.5,
                                      gid="edits")
            top = float(np.max(heights))
            if len(first) and len(shown):
                h2, _, _ = ax_h.hist(shown, bins=edges, histtype="step", color="0.35", lw=1.1, ls="-",
                                     gid="first_flips", zorder=5)
                top = max(top, float(np.max(h2)))
            med = float(np.median(changes))
            ax_h.plot([med, med], [0.0, 1.06 * top], color="0.15", ls="--", lw=1.2, gid="median", zorder=4)
            lines.append(f"median change {signed(med)} pp")
            ax_h.set_ylim(0, top * 1.6)  # headroom for the note
            ax_h.yaxis.set_major_locator(MaxNLocator(integer=True))
        else:
            ax_h.set_yticks([])
            ax_h.set_xticks([])
            ax_h.text(0.5, 0.45, "no COAR-EDIT edit flipped its target:\nnothing to show", transform=ax_h.transAxes,
                      ha="center", va="center", fontsize=SMALL, color="0.4", gid="empty")
        if no_change:
            lines.append(f"({no_change} flipped without an accuracy change: left out)")
        if len(first):
            lines.append(f"at any cost: {len(first)} flipped, median {signed(float(np.median(first)))} pp")
            if off_axis:
                lines.append(f"({off_axis} of them below {signed(floor)} pp: off the axis)")
        if len(rnd):
            lines.append(f"random components{', same k' if validated else ''}: "
                         f"{int(rnd['flipped'].sum())} of {len(rnd)} flipped")
        right = False
        if med is not None:
            x0, x1 = ax_h.get_xlim()
            right = med < (x0 + x1) / 2
        ax_h.text(0.97 if right else 0.03, 0.97, "\n".join(lines), transform=ax_h.transAxes, va="top",
                  ha="right" if right else "left", multialignment="left", fontsize=SMALL, gid="edit_counts",
                  linespacing=1.25, zorder=6,
                  bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.85", "alpha": 0.95})
        ax_h.set_xlabel("held-out accuracy change (pp)")
        ax_h.set_ylabel("edits (one per target)")
        panel_title(ax_h, f"(c) all {len(coar)} targets, one edit each", pw)
        if med is not None:
            handles = [Patch(color=colour, alpha=0.8, label="COAR-EDIT edits that flip their target"
                             + (" (k chosen on validation)" if validated else "")),
                       Line2D([], [], color="0.15", ls="--", lw=1.2, label="median")]
            if len(first):
                handles.insert(1, Patch(fc="none", ec="0.35", lw=1.1, label="first flip at any cost"))
            legend_below(ax_h, handles)
    return fig


# ------------------------------------------------------------------------------------------ Figs. 19-21

def fig_edit_examples(sweep: pd.DataFrame, targets: Sequence, provenance: str, suptitle: str, title: str,
                      chosen: Mapping[str, float] | None = None) -> Figure:
    """Paper Figs. 19, 20, 21: one row per target (at most 8, in the given order), labelled "example <target>".

    Left: the target's correct-class margin (set == "target", mean_margin) vs k, COAR-EDIT vs the random
    control, with the decision boundary at 0 and a star where COAR-EDIT flips the prediction. Right:
    held-out accuracy (%) (set == "held-out") vs k, with the change at the flipping k (vs. k = 0) in the title.
    chosen: target -> the k chosen on validation (NaN: none within the limit); drawn as a dotted line, and the
    held-out change is then given at that k.

    sweep: columns target, method, k, set, accuracy, mean_margin. targets: example ids (str; ints are
    accepted and compared as text). title: model / data line under the bold `suptitle`.
    """
    t = check_sweep(sweep)
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise CoarError(f"targets must be a list of example ids, got {type(targets).__name__}")
    names = [str(x) for x in targets]
    if not names:
        raise CoarError("targets is empty: name at least one example to show")
    if len(names) > _MAX_EXAMPLE_ROWS:
        raise CoarError(f"targets has {len(names)} examples; at most {_MAX_EXAMPLE_ROWS} rows fit on a page")
    if len(set(names)) != len(names):
        raise CoarError(f"targets repeats example(s) {sorted({n for n in names if names.count(n) > 1})}")
    rows = []
    for n in names:
        d = _target_rows(t, n)
        _need_set(d, "target", n)
        _need_set(d, "held-out", n)
        rows.append(d)
    methods = ordered_unique(t.loc[t["target"].isin(names), "method"])

    row_h = 1.6
    width, height = WIDTH_IN, row_h * len(names) + 1.4
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(width, height, provenance, suptitle, title, hspace=0.04, wspace=0.05)
        axes = panel.subplots(len(names), 2, squeeze=False)  # one grid: panels line up across rows
        for r, (n, d) in enumerate(zip(names, rows, strict=True)):
            ax_m, ax_a = axes[r]
            km, mm = _curve(d, "coar", "target", "mean_margin")
            fk = _flip_k(km, mm)
            ck = float(chosen[n]) if chosen is not None and n in chosen else None
            _margin_panel(ax_m, d, fk, ck)
            ax_m.set_ylabel("target margin")
            ax_m.set_title(f"example {n}", loc="left", fontweight="bold", fontsize=SMALL + 1.5)
            ax_m.set_title(f"COAR-EDIT flips it at k = {fk:g}" if np.isfinite(fk)
                           else f"not flipped for k \u2264 {km.max():g}", loc="right", fontsize=SMALL, color="0.25")
            prefix = ""
            if ck is not None and np.isfinite(ck):
                fk, prefix = ck, "k chosen on validation: "  # the held-out change is reported at the chosen k
            elif ck is not None and np.isfinite(fk):
                prefix = "no k passes validation; "

            plotted = _accuracy_lines(ax_a, d, ["held-out"], set_styles(["held-out"]))
            _percent_ylim(ax_a, plotted)
            _k_axis(ax_a, d["k"].to_numpy())
            ax_a.set_ylabel("held-out acc. (%)")
            ka, acc = _curve(d, "coar", "held-out", "accuracy")
            hit = np.isclose(ka, fk) if np.isfinite(fk) else np.zeros(len(ka), bool)
            if hit.any():
                change = 100.0 * (float(acc[hit][0]) - float(acc[0]))
                text = (f"{prefix}held-out {signed(change)} pp at k = {fk:g}" if prefix
                        else f"held-out accuracy {signed(change)} pp at k = {fk:g} (vs. k = {ka[0]:g})")
            else:
                text = f"{prefix}held-out accuracy"
            ax_a.set_title(text, loc="left", fontsize=SMALL + 0.5, color="0.25")
            if r < len(names) - 1:
                ax_m.set_xlabel("")
                ax_a.set_xlabel("")
        handles = key_handles([], {}, methods)
        handles.append(Line2D([], [], ls="none", marker="*", ms=8, color=EDIT_METHOD_STYLE["coar"]["color"], mec="white",
                              label="prediction flips"))
        handles.append(Line2D([], [], color=_BOUNDARY_COLOR, lw=0.9, label="margin 0 (decision boundary)"))
        if chosen is not None:
            handles.append(Line2D([], [], color="0.25", ls=":", lw=1.1, label="k chosen on validation"))
        panel.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), borderaxespad=0.2)
    return fig


# ------------------------------------------------------------------------------------------------ Fig. 22

def _no_edit_figure(provenance: str, suptitle: str, title: str) -> Figure:
    """A Fig. 22 page for an experiment in which COAR-EDIT ablated nothing: says so instead of drawing bars."""
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(min(WIDTH_IN, 5.6), 2.4, provenance, suptitle, title)
        ax = panel.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no validated edit: COAR-EDIT ablated no components\n"
                "(no target flipped within the edit's max_drop on the validation half)",
                transform=ax.transAxes, ha="center", va="center", color="0.3", fontsize=SMALL + 1, gid="no_edit")
    return fig


def fig_edit_layers(components: pd.DataFrame, provenance: str, suptitle: str, title: str) -> Figure:
    """Paper Fig. 22: which modules COAR-EDIT ablates components from.

    Horizontal bars, one per module that occurs: its share (%) of all ablated-component rows in
    `components` (a component ablated for several targets counts once per target), the count written at
    the bar's end. Modules are ordered by module_index: the input side at the top, the output at the bottom.

    components: columns target, component, module, module_index (one index per module; `rank` is not read).
    title: model / data line under the bold `suptitle`.
    An empty `components` (no target was edited) gives a page that says so.
    """
    require_columns(components, COMPONENT_COLUMNS, "components", allow_empty=True)
    if components.empty:
        return _no_edit_figure(provenance, suptitle, title)
    c = numeric_columns(components, ["module_index"], "components")
    if c["module_index"].isna().any():
        raise CoarError("components column 'module_index' has missing values; every row needs its module's position")
    c["module"] = c["module"].astype(str)
    per_module = c.groupby("module")["module_index"].nunique()
    clash = per_module[per_module > 1]
    if len(clash):
        raise CoarError(f"components column 'module_index' differs within module(s) {list(clash.index)[:5]}; "
                        "each module needs one position")
    counts = c.groupby("module").agg(index=("module_index", "first"), count=("module", "size")).reset_index()
    counts = counts.sort_values(["index", "module"], kind="stable").reset_index(drop=True)
    total = int(counts["count"].sum())
    counts["share"] = 100.0 * counts["count"] / total
    n_targets = c["target"].nunique()
    n = len(counts)

    bar_h = 0.17
    width = min(WIDTH_IN, 5.6)
    height = max(2.4, n * bar_h + 1.6)
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(width, height, provenance, suptitle, title)
        ax = panel.subplots()
        y = np.arange(n)
        colour = EDIT_METHOD_STYLE["coar"]["color"]
        ax.barh(y, counts["share"].to_numpy(), height=0.72, color=colour, alpha=0.85, gid="share")
        ax.set_yticks(y)
        ax.set_yticklabels(counts["module"].tolist(), family="monospace", fontsize=SMALL)
        ax.set_ylim(n - 0.4, -0.6)  # first module (input side) at the top
        top = float(counts["share"].max())
        ax.set_xlim(0, top * 1.18 + 0.5)
        for yi, (cnt, sh) in enumerate(zip(counts["count"], counts["share"], strict=True)):
            ax.annotate(f"{cnt}", xy=(sh, yi), xytext=(2.5, 0), textcoords="offset points", va="center",
                        ha="left", fontsize=SMALL - 0.5, color="0.25", gid="count")
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"share of all {total:,} ablated components (%)")
        ax.set_ylabel("module (input at top, output at bottom)")
        ax.set_title(f"components ablated by COAR-EDIT across {n_targets} edit{'s' if n_targets != 1 else ''}; "
                     "count at each bar",
                     loc="left", fontsize=SMALL + 1)
    return fig


# ---------------------------------------------------------------------------------------------- Figs. 4, 23

def forget_panel(ax, d: pd.DataFrame, sets: Sequence[str], styles: Mapping[str, dict], chosen_k: int) -> None:
    plotted = _accuracy_lines(ax, d, [s for s in sets if (d["set"] == s).any()], styles)
    ax.axvline(chosen_k, ls=":", lw=1.4, color="0.15", zorder=5, gid="chosen_k",
               label=f"k = {chosen_k} chosen on validation")
    _percent_ylim(ax, plotted)
    _k_axis(ax, np.append(d["k"].to_numpy(), chosen_k))
    ax.set_ylabel("accuracy (%)")


def chosen_handle() -> Line2D:
    return Line2D([], [], ls=":", lw=1.4, color="0.15", label="k chosen on validation")


SHIFTED_COLUMNS = ("shift", "method", "part", "accuracy")


def _shift_panel(ax, shifted: pd.DataFrame, chosen_k: int) -> list:
    """Accuracy on each shifted set, the forgotten class and the other classes on separate rows: hollow dot
    unedited, filled dots after COAR-EDIT and after the random control (same k). Returns legend handles."""
    require_columns(shifted, SHIFTED_COLUMNS, "shifted")
    t = numeric_columns(shifted, ["accuracy"], "shifted")
    _fraction_column(t, "accuracy", "shifted")
    missing = {"unedited", "coar"} - set(t["method"])
    if missing:
        raise CoarError(f"shifted table lacks the method(s) {sorted(missing)}")
    rows = [(sh, part) for sh in ordered_unique(t["shift"]) for part in ("forgotten class", "other classes")
            if ((t["shift"] == sh) & (t["part"] == part)).any()]
    acc = t.set_index(["shift", "part", "method"])["accuracy"] * 100.0
    colour = EDIT_METHOD_STYLE["coar"]["color"]
    y = np.arange(len(rows))
    for i, (sh, part) in enumerate(rows):
        col = colour if part == "forgotten class" else "0.35"
        before = acc[(sh, part, "unedited")]
        for method, marker in (("random", "x"), ("coar", "o")):
            if (sh, part, method) not in acc.index:
                continue
            after = acc[(sh, part, method)]
            if method == "coar":
                ax.plot([before, after], [i, i], color=col, lw=1.4, alpha=0.85, zorder=2, gid="change")
            ax.plot([after], [i], ls="none", marker=marker, ms=5, zorder=4,
                    color=col if method == "coar" else EDIT_METHOD_STYLE["random"]["color"], gid=f"after_{method}")
        ax.plot([before], [i], ls="none", marker="o", ms=5, mfc="white", mec=col, mew=1.1, zorder=3, gid="before")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{_short(sh, 34)}: {'forgotten' if part == 'forgotten class' else 'others'}"
                        for sh, part in rows], fontsize=SMALL)
    for lab, (_, part) in zip(ax.get_yticklabels(), rows, strict=True):
        if part == "forgotten class":
            lab.set_color(colour)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlim(-2.0, 102.0)
    ax.set_xlabel("accuracy on the shifted set (%)")
    return [Line2D([], [], ls="none", marker="o", ms=5, mfc="white", mec="0.3", mew=1.1, label="unedited"),
            Line2D([], [], ls="none", marker="o", ms=5, color=colour, label=f"COAR-EDIT (k = {chosen_k})"),
            Line2D([], [], ls="none", marker="x", ms=5, color=EDIT_METHOD_STYLE["random"]["color"],
                   label="random components, same k")]


def fig_forget_class(sweep: pd.DataFrame, classwise: pd.DataFrame, target, chosen_k: int, provenance: str,
                     suptitle: str, title: str, shifted: pd.DataFrame | None = None) -> Figure:
    """Paper Fig. 4: "forgetting" a class with COAR-EDIT.

    Left: accuracy (%) vs k on every set of `target` in the sweep (e.g. "held-out: forgotten class",
    "held-out: other classes"; sets naming the forgotten class first), COAR-EDIT solid, random control
    dashed, sets told apart by marker and lightness, a dotted vertical line at chosen_k labelled
    "k chosen on validation". Right: class-wise held-out accuracy (%) before and after the edit, one row per
    class (class_name on the axis, in class order): hollow dot before, filled dot after, joined by a line;
    the forgotten class(es) highlighted in the COAR colour and bold. With more than 30 classes the right
    panel becomes a scatter of after vs. before (y = x dashed), the forgotten class(es) highlighted.

    sweep: columns target, method, k, set, accuracy, mean_margin. classwise: columns class, class_name,
    before, after, forgotten. target: the forgotten class's target name in the sweep. chosen_k: the k used
    for the edit. title: model / data line under the bold `suptitle`.

    shifted (optional, non-empty): columns shift, method (unedited, coar, random), part (forgotten class,
    other classes), accuracy. A third panel, under the first, shows the edit on these distribution-shifted
    sets (the paper's ImageNet-Sketch and ImageNet* panels).
    """
    t = check_sweep(sweep)
    name = str(target)
    d = _target_rows(t, name)
    k_sel = check_chosen_k(chosen_k, "chosen_k")
    require_columns(classwise, CLASSWISE_COLUMNS, "classwise")
    cw = numeric_columns(classwise, ["class", "before", "after"], "classwise")
    for col in ("before", "after"):
        if cw[col].isna().any():
            raise CoarError(f"classwise column {col!r} has missing values")
        _fraction_column(cw, col, "classwise")
    if cw["class"].isna().any():
        raise CoarError("classwise column 'class' has missing values")
    if cw["class"].duplicated().any():
        raise CoarError(f"classwise column 'class' repeats class(es) "
                        f"{sorted(set(cw.loc[cw['class'].duplicated(), 'class'].astype(int)))[:5]}")
    cw["forgotten"] = _bool_column(cw, "forgotten", "classwise")
    cw = cw.sort_values("class").reset_index(drop=True)
    sets = _order_sets(ordered_unique(d["set"]))
    styles = set_styles(sets)
    methods = ordered_unique(d["method"])
    n_cls = len(cw)
    dumbbell = n_cls <= _MAX_DUMBBELL_CLASSES

    with_shifts = shifted is not None and len(shifted) > 0
    width = WIDTH_IN
    height = max(ROW_HEIGHT_IN + 1.5, (0.16 * n_cls + 1.6) if dumbbell else 0)
    if with_shifts:  # a third panel under both, one row per shifted set and part
        shift_h = 0.2 * 2 * shifted["shift"].nunique() + 0.3
        top_h = height
        height = top_h + shift_h + 1.3
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(width, height, provenance, suptitle, title, wspace=0.08)
        if with_shifts:
            top, bottom = panel.subfigures(2, 1, height_ratios=[top_h, shift_h + 1.3])
            ax_k, ax_c = top.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1.0]})
            ax_s = bottom.subplots(1, 1)
            shift_key = _shift_panel(ax_s, shifted, k_sel)
            panel_title(ax_s, "(c) the same edit on distribution-shifted data", 0.6 * width)
            legend_below(ax_s, shift_key, ncols=3, columnspacing=0.8)
        else:
            ax_k, ax_c = panel.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1.0]})
        forget_panel(ax_k, d, sets, styles, k_sel)
        panel_title(ax_k, f"(a) forgetting \u201c{name}\u201d: accuracy vs. components ablated", 0.52 * width)
        handles = key_handles(sets, styles, methods) + [chosen_handle()]
        legend_below(ax_k, handles, ncols=2, columnspacing=0.8)

        colour = EDIT_METHOD_STYLE["coar"]["color"]
        before, after = 100.0 * cw["before"].to_numpy(), 100.0 * cw["after"].to_numpy()
        forgot = cw["forgotten"].to_numpy()
        names = cw["class_name"].astype(str).tolist()
        other = "0.35"
        if dumbbell:
            y = np.arange(n_cls)
            for i in range(n_cls):
                col = colour if forgot[i] else other
                ax_c.plot([before[i], after[i]], [y[i], y[i]], color=col, lw=1.6 if forgot[i] else 1.0,
                          alpha=0.9 if forgot[i] else 0.6, zorder=2, solid_capstyle="round", gid="change")
            for mask, col in ((~forgot, other), (forgot, colour)):
                if mask.any():
                    ax_c.plot(before[mask], y[mask], ls="none", marker="o", ms=5, mfc="white", mec=col, mew=1.1,
                              zorder=3, gid="before_forgotten" if col == colour else "before_other")
                    ax_c.plot(after[mask], y[mask], ls="none", marker="o", ms=5, color=col, mec=col, zorder=4,
                              gid="after_forgotten" if col == colour else "after_other")
            ax_c.set_yticks(y)
            ax_c.set_yticklabels([_short(x, 28) for x in names], fontsize=SMALL)
            for lab, f in zip(ax_c.get_yticklabels(), forgot, strict=True):
                if f:
                    lab.set_color(colour)
                    lab.set_fontweight("bold")
            ax_c.set_ylim(n_cls - 0.5, -0.5)
            ax_c.grid(axis="y", visible=False)
            ax_c.set_xlabel("held-out accuracy of the class (%)")
            lo = min(before.min(), after.min())
            ax_c.set_xlim(max(-2.0, lo - 6.0), 102.0)
            key = [Line2D([], [], ls="none", marker="o", ms=5, mfc="white", mec="0.3", mew=1.1, label="before edit"),
                   Line2D([], [], ls="none", marker="o", ms=5, color="0.3", label=f"after edit (k = {k_sel})"),
                   Line2D([], [], ls="none", marker="s", ms=5, color=colour, label="forgotten class")]
        else:
            ax_c.plot([-2, 102], [-2, 102], ls="--", lw=0.8, color="0.6", zorder=1, gid="identity")
            ax_c.plot(before[~forgot], after[~forgot], ls="none", marker="o", ms=2.5, color=other, alpha=0.5,
                      mew=0, zorder=2, gid="after_other")
            ax_c.plot(before[forgot], after[forgot], ls="none", marker="o", ms=6, color=colour, mec="white",
                      zorder=4, gid="after_forgotten")
            for b, a, lab in zip(before[forgot], after[forgot], np.asarray(names)[forgot], strict=True):
                ax_c.annotate(wrap_title(lab, 18), xy=(b, a), xytext=(4, -2), textcoords="offset points", fontsize=SMALL,
                              color=colour, fontweight="bold", va="top")
            ax_c.set_xlim(-2, 102)
            ax_c.set_ylim(-2, 102)
            ax_c.set_aspect("equal", adjustable="box")
            ax_c.set_xlabel("class accuracy before the edit (%)")
            ax_c.set_ylabel(f"class accuracy after the edit, k = {k_sel} (%)")
            key = [Line2D([], [], ls="none", marker="o", ms=4, color=other, label="other class"),
                   Line2D([], [], ls="none", marker="o", ms=5, color=colour, label="forgotten class")]
        panel_title(ax_c, f"(b) held-out accuracy per class ({n_cls} classes)", 0.36 * width)
        legend_below(ax_c, key, ncols=2, columnspacing=0.8)
    return fig


def fig_forget_classes(sweep: pd.DataFrame, chosen_k: Mapping[str, int], provenance: str, suptitle: str,
                       title: str) -> Figure:
    """Paper Fig. 23: forgetting several classes, one panel per target (in order of first appearance in the
    sweep, at most 4 per row), each drawn like the left panel of `fig_forget_class`: accuracy (%) vs k on the
    target's sets, COAR-EDIT solid, random control dashed, dotted line at chosen_k[target]. The sets'
    markers and shades are the same in every panel; one legend for the figure.

    sweep: columns target, method, k, set, accuracy, mean_margin. chosen_k: target -> k used for its edit.
    title: model / data line under the bold `suptitle`.
    """
    t = check_sweep(sweep)
    if not isinstance(chosen_k, Mapping):
        raise CoarError(f"chosen_k must map each target to its k, got {type(chosen_k).__name__}")
    ks = {str(key): v for key, v in chosen_k.items()}
    targets = ordered_unique(t["target"])
    missing = [x for x in targets if x not in ks]
    if missing:
        raise CoarError(f"chosen_k has no entry for target(s) {missing} (it has {list(ks)})")
    chosen = {x: check_chosen_k(ks[x], f"chosen_k[{x!r}]") for x in targets}
    data = {x: _target_rows(t, x) for x in targets}
    sets = _order_sets(ordered_unique(t["set"]))
    styles = set_styles(sets)
    methods = ordered_unique(t["method"])
    nrow = math.ceil(len(targets) / 4)
    ncol = math.ceil(len(targets) / nrow)  # at most 4 per row, rows balanced (5 panels: 3 + 2)
    width = WIDTH_IN if ncol > 1 else 4.2
    cell_w = width / ncol
    height = nrow * (ROW_HEIGHT_IN - 0.35) + 1.5
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(width, height, provenance, suptitle, title, hspace=0.06, wspace=0.04)
        axes = panel.subplots(nrow, ncol, squeeze=False).ravel()
        for ax, x in zip(axes, targets):
            forget_panel(ax, data[x], sets, styles, chosen[x])
            panel_title(ax, f"{x}  (k = {chosen[x]})", cell_w - 0.3)
            if ax.get_subplotspec().colspan.start != 0:
                ax.set_ylabel("")
        for ax in axes[len(targets):]:
            ax.set_visible(False)
        handles = key_handles(sets, styles, methods) + [chosen_handle()]
        panel.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4 if ncol > 1 else 2),
                     borderaxespad=0.2, columnspacing=1.0)
    return fig
