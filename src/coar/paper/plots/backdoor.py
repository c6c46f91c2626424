"""Figures of the backdoor experiment (paper Sec. 5.4, Figs. 6 and 24): tidy tables and image arrays in,
matplotlib Figure out. Same conventions as `coar.paper.plots.editing` (whose helpers this module reuses): bare
Figure in `rc_context(rc_params())`, provenance footer, bold suptitle, COAR-EDIT solid in its colour, the random
control dashed gray; accuracy drawn in percent.

Tables (as written by the workflow's edit_backdoor rule):
  sweep: target, method, k, set ("held-out: clean", "held-out: triggered", "validation: ..."), accuracy,
    mean_margin.
  summary: method, k, components, clean_before, clean_after, triggered_before, triggered_after, correlation_before,
    correlation_after.
  outputs: clean_before, triggered_before, clean_after, triggered_after (margins of each held-out image).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ...errors import CoarError
from .style import SMALL, WIDTH_IN, figure_with_title, legend_below, panel_title, rc_params, require_columns, signed
from .editing import (EDIT_METHOD_STYLE, check_chosen_k, check_sweep, chosen_handle, forget_panel, key_handles,
                      set_styles)

__all__ = ["fig_backdoor", "fig_backdoor_saliency"]

SETS = ("held-out: triggered", "held-out: clean")
OUTPUT_COLUMNS = ("clean_before", "triggered_before", "clean_after", "triggered_after")
SUMMARY_COLUMNS = ("method", "k", "components", "clean_before", "clean_after", "triggered_before", "triggered_after",
                   "correlation_before", "correlation_after")


def _show(ax, image: np.ndarray, caption: str = "", colour: str = "0.15") -> None:
    """One uint8 [C, H, W] image (gray when C == 1) without axes, caption underneath."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise CoarError(f"images must be [C, H, W] with C = 1 or 3, got shape {img.shape}")
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if caption:
        ax.set_xlabel(caption, fontsize=SMALL - 0.5, color=colour, labelpad=1.5)


def _scatter(ax, x: np.ndarray, y: np.ndarray, rho: float, lim: float, when: str, trigger: str) -> None:
    colour = EDIT_METHOD_STYLE["coar"]["color"] if when == "after" else "0.35"
    ax.scatter(x, y, s=4, alpha=0.45, color=colour, linewidths=0, rasterized=True, gid=f"outputs_{when}")
    ax.plot([-lim, lim], [-lim, lim], ls="--", lw=0.8, color="0.5", zorder=1)
    ax.axhline(0, lw=0.6, color="0.7", zorder=0)
    ax.axvline(0, lw=0.6, color="0.7", zorder=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.text(0.04, 0.95, f"{when} edit\n\u03c1 = {rho:.2f}", transform=ax.transAxes, va="top", fontsize=SMALL,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.8", "alpha": 0.9})
    ax.set_ylabel(f"margin with {trigger}", fontsize=SMALL)


def fig_backdoor(sweep: pd.DataFrame, summary: pd.DataFrame, outputs: pd.DataFrame,
                 images: Mapping[str, tuple[np.ndarray, Sequence[str]]], provenance: str, suptitle: str,
                 title: str, trigger: str = "trigger", extra: Sequence[str] = ()) -> Figure:
    """Paper Figs. 6 and 7. `trigger` names what was pasted ("trigger", "synthetic attack"); `extra` names
    further held-out sets of the sweep drawn in (b) and summarised in the box (e.g. "real attacks": the
    summary then has real_attacks_before / _after). (a) rows of example images (e.g. poisoned training images, test images without and with
    the trigger, captioned with the model's predictions); (b) held-out accuracy without / with the trigger vs
    k, COAR-EDIT and the random control, the k chosen on validation dotted; (c) the correct-class margin of
    every held-out image without (x) vs with (y) the trigger, before and after the edit, with their
    correlation. images: row title -> (uint8 images [n, C, H, W], one caption per image)."""
    t = check_sweep(sweep)
    require_columns(summary, SUMMARY_COLUMNS, "summary")
    require_columns(outputs, OUTPUT_COLUMNS, "outputs")
    sets = [SETS[0], *[f"held-out: {e}" for e in extra], SETS[1]]
    missing = [s for s in sets if not (t["set"] == s).any()]
    if missing:
        raise CoarError(f"sweep has no rows for set(s) {missing}")
    coar = summary[summary["method"].astype(str) == "coar"]
    if coar.empty:
        raise CoarError("summary has no 'coar' row")
    row = coar.iloc[0]
    k = check_chosen_k(row["k"], "summary column 'k'")
    if not images:
        raise CoarError("fig_backdoor needs at least one row of example images")
    width, height = WIDTH_IN * 1.25, 4.3
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(width, height, provenance, suptitle, title, wspace=0.05)
        left, mid, right = panel.subfigures(1, 3, width_ratios=[1.25, 1.2, 0.62], wspace=0.02)
        n_cols = max(len(v[0]) for v in images.values())
        grid = left.subplots(len(images), n_cols, squeeze=False)
        for r, (name, (imgs, captions)) in enumerate(images.items()):
            if len(captions) != len(imgs):
                raise CoarError(f"image row {name!r}: {len(imgs)} images, {len(captions)} captions")
            for c in range(n_cols):
                ax = grid[r, c]
                if c < len(imgs):
                    wrong = captions[c].startswith("\u2717")
                    _show(ax, imgs[c], captions[c], "#B2182B" if wrong else "0.15")
                else:
                    ax.set_visible(False)
            grid[r, 0].set_title(name, loc="left", fontsize=SMALL, pad=2)
        left.suptitle(f"(a) the {trigger} and its effect", fontsize=SMALL + 1, x=0.02, ha="left")

        ax = mid.subplots()
        d = t[t["target"] == t["target"].iloc[0]]
        styles = set_styles(sets)
        forget_panel(ax, d, sets, styles, k)
        ax.set_xlabel("components ablated (k)")
        panel_title(ax, f"(b) removing the {trigger}: accuracy vs. k (chosen: {k} of {int(row['components'])} "
                         "components)", 0.36 * width)
        lines = [("triggered", f"with {trigger}"), *[(e.replace(" ", "_"), e) for e in extra], ("clean", "without")]
        box = "\n".join(f"{label} {100 * row[f'{key}_before']:.1f}% \u2192 {100 * row[f'{key}_after']:.1f}%"
                        for key, label in lines)
        ax.text(0.97, 0.04, f"held-out, k = {k}:\n{box}", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=SMALL, color=EDIT_METHOD_STYLE["coar"]["color"],
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.8"}, zorder=6)
        shown = [f"with {trigger}", *extra, "without"]
        handles = key_handles(shown, set_styles(shown), ["coar", "random"], "held-out images, {}") + [
            chosen_handle()]
        legend_below(ax, handles, ncols=2, fontsize=SMALL, columnspacing=0.8)

        axes = right.subplots(2, 1, sharex=True)
        vals = outputs[list(OUTPUT_COLUMNS)].to_numpy(float)
        lim = float(np.nanpercentile(np.abs(vals), 99.5)) * 1.05 or 1.0
        for a, when in zip(axes, ("before", "after"), strict=True):
            _scatter(a, outputs[f"clean_{when}"].to_numpy(float), outputs[f"triggered_{when}"].to_numpy(float),
                     float(row[f"correlation_{when}"]), lim, when, trigger)
        axes[1].set_xlabel(f"margin without {trigger}", fontsize=SMALL)
        right.suptitle("(c) outputs on paired images", fontsize=SMALL + 1, x=0.02, ha="left")
    return fig


def fig_backdoor_saliency(images: np.ndarray, maps: np.ndarray, components: Sequence[str], shares: Sequence[float],
                          area_share: float, provenance: str, suptitle: str, title: str,
                          control_share: float | None = None, shifts: Sequence[float] | None = None,
                          control_shift: float | None = None) -> Figure:
    """Paper Fig. 24: the first row shows triggered images; each further row one component, with the
    input-x-gradient saliency of its output on each image (red: raises the component's output, blue: lowers
    it; one colour scale per row). The row label gives the component and the share of its absolute saliency
    that falls inside the trigger square (`shares`, against `area_share`, the square's share of the image, and
    `control_share`, the same share averaged over random components) and, when given, `shifts`: how far the
    trigger moves the component's output, in standard deviations over clean images (`control_shift`: the mean
    absolute shift of random components).
    images: uint8 [n, C, H, W]; maps: [components, n, H, W]."""
    maps = np.asarray(maps, float)
    if maps.ndim != 4 or maps.shape[1] != len(images) or not maps.shape[0] == len(components) == len(shares):
        raise CoarError(f"saliency maps of shape {maps.shape} do not match {len(images)} images, "
                        f"{len(components)} components and {len(shares)} shares")
    n_rows, n_cols = 1 + len(maps), len(images)
    width = min(WIDTH_IN, 1.0 + 0.95 * n_cols)
    with matplotlib.rc_context(rc_params()):
        fig, panel = figure_with_title(width, 0.62 + 0.9 * n_rows, provenance, suptitle, title, h_pad=0.02, w_pad=0.02)
        grid = panel.subplots(n_rows, n_cols, squeeze=False)
        for c in range(n_cols):
            _show(grid[0, c], images[c])
        grid[0, 0].set_ylabel("input", fontsize=SMALL, rotation=0, ha="right", va="center")
        for r in range(len(maps)):
            scale = float(np.abs(maps[r]).max()) or 1.0
            for c in range(n_cols):
                ax = grid[r + 1, c]
                ax.imshow(maps[r, c], cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
            shift = "" if shifts is None else f"\ntrigger shifts output {signed(float(shifts[r]), 1)} sd"
            grid[r + 1, 0].set_ylabel(f"({r + 1}) {components[r]}\n{100 * shares[r]:.0f}% in trigger{shift}",
                                      fontsize=SMALL - 0.5, rotation=0, ha="right", va="center")
        panel.legend(handles=[Line2D([], [], ls="none", marker="s", color="#B2182B", label="raises the output"),
                              Line2D([], [], ls="none", marker="s", color="#2166AC", label="lowers it")],
                     loc="outside lower center", ncols=2, fontsize=SMALL, frameon=False,
                     title=f"the trigger square is {100 * area_share:.1f}% of the image" + (
                         f"; random components have {100 * control_share:.1f}% of their saliency in it"
                         if control_share is not None else "") + (
                         f"\nand the trigger shifts their outputs by {control_shift:.1f} sd on average (absolute)"
                         if control_shift is not None else ""), title_fontsize=SMALL)
    return fig
