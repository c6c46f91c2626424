"""The efficiency study's figure: attribution accuracy against the forward-pass budget, one panel per setup,
one line per estimator (coar.paper.efficiency's table)."""
from __future__ import annotations

import re
from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import (METHOD_COLORS, ROW_HEIGHT_IN, SMALL, WIDTH_IN, numeric_columns, panel_title,
                    rc_params, require_columns, start_figure)

__all__ = ["EFFICIENCY_COLUMNS", "fig_efficiency"]

EFFICIENCY_COLUMNS = ("setup", "alpha_test", "estimator", "label", "masks", "ratio", "mean_correlation", "sem")
# least squares in COAR's colour; the priors in their baseline's colour; the rest from the Okabe-Ito palette
_COLORS = {"ols": METHOD_COLORS["coar"], "ridge": METHOD_COLORS["coar-ridge"], "prior-loo": METHOD_COLORS["loo"],
           "loo alone": METHOD_COLORS["loo"], "prior-gp": METHOD_COLORS["gp"], "gp alone": METHOD_COLORS["gp"],
           "lowrank": "#000000", "lasso": "#7F7F7F"}
_NAMES = {"ols": "least squares (COAR)", "ridge": "ridge (GCV)", "prior-loo": "shrunk to leave-one-out",
          "prior-gp": "shrunk to grad x param", "lowrank": "low-rank prior (all examples)", "lasso": "lasso",
          "loo alone": "leave-one-out alone, at its cost", "gp alone": "grad x param alone, at its cost"}


def fig_efficiency(table: pd.DataFrame, provenance: str, titles: Mapping[str, str] | None = None) -> Figure:
    """Mean correlation (± SEM) on the evaluation masks against the total budget / m (masks plus the prior's
    own passes), one column per setup and one row per evaluation alpha: least squares at m dashed, a third of
    its budget dotted; a prior alone is a cross at its cost (at the left edge, as a left-pointing triangle,
    when its cost is below the axis)."""
    require_columns(table, EFFICIENCY_COLUMNS, "efficiency")
    table = numeric_columns(table, ("alpha_test", "masks", "ratio", "mean_correlation", "sem"), "efficiency")
    setups = list(dict.fromkeys(table.setup))
    # rows: the first, second, ... evaluation alpha of each setup (setups have different alpha_train)
    rank = table.groupby("setup").alpha_test.rank(method="dense").astype(int)
    table = table.assign(row=rank)
    n_rows = int(table.row.max())
    width = WIDTH_IN if len(setups) > 1 else WIDTH_IN / 2
    panel_w = width / len(setups)
    with matplotlib.rc_context(rc_params()):
        fig = start_figure(width, ROW_HEIGHT_IN * (0.8 if len(setups) > 3 else 1.0) * n_rows + 0.9, provenance,
                           "Attribution accuracy against the forward-pass budget, priors counted")
        grid = fig.add_gridspec(n_rows + 1, len(setups), height_ratios=[1.0] * n_rows + [0.22])
        axes = np.array([[fig.add_subplot(grid[r, c]) for c in range(len(setups))] for r in range(n_rows)])
        key = fig.add_subplot(grid[n_rows, :])  # the legend's own row, clear of the panels and the footer
        key.set_axis_off()
        handles = {}
        for r in range(n_rows):
            for ax, setup in zip(axes[r], setups):
                d = table[(table.setup == setup) & (table.row == r + 1)]
                if d.empty:
                    ax.set_axis_off()
                    continue
                _panel(ax, d, handles)
                title = _short_title(setup, (titles or {}).get(setup)) if r == 0 else setup
                panel_title(ax, f"{title}\nalpha_test {d.alpha_test.iloc[0]:g}", panel_w)
                if r == n_rows - 1:
                    ax.set_xlabel("forward passes / m\n(masks + prior)")
            axes[r][0].set_ylabel("mean correlation\non evaluation masks")
        guides = [Line2D([], [], ls="--", c="0.5", lw=0.8, label="least squares at m (the target)"),
                  Line2D([], [], ls=":", c="0.5", lw=0.8, label="a third of the budget")]
        key.legend(handles=list(handles.values()) + guides, loc="center", ncol=min(4, len(handles) + 2),
                   fontsize=SMALL - 0.5)
    return fig


def _short_title(setup: str, title: str | None) -> str:
    """The setup and what its title says after the first colon (the model), for a narrow panel."""
    if not title:
        return setup
    rest = title.split(":", 1)[1].strip() if ":" in title else title
    return rest if re.match(rf"{re.escape(setup)}[:\s(]", rest) else f"{setup}: {rest}"


def _panel(ax, d: pd.DataFrame, handles: dict) -> None:
    left = d[d.masks > 0].ratio.min() / 1.5
    for name, e in d.groupby("estimator", sort=False):
        e = e.sort_values("ratio")
        colour = _COLORS.get(name, "#56B4E9")
        if name.endswith("alone"):
            below = bool((e.ratio < left).any())
            h = ax.errorbar(e.ratio.clip(lower=left), e.mean_correlation, yerr=e["sem"], fmt="<" if below else "x",
                            ms=6, color=colour, label=_NAMES.get(name, name))
        else:
            h = ax.errorbar(e.ratio, e.mean_correlation, yerr=e["sem"], marker="o", ms=3, capsize=2, color=colour,
                            label=_NAMES.get(name, name))
        handles.setdefault(name, h)
    full = d[(d.estimator == "ols") & (d.label == "m")].mean_correlation
    if len(full):
        ax.axhline(float(full.iloc[0]), ls="--", c="0.5", lw=0.8)
    ax.axvline(1 / 3, ls=":", c="0.5", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlim(left / 1.2, 1.6)
    lo, hi = d.mean_correlation.min(), d.mean_correlation.max()
    ax.set_ylim(max(0.0, lo - 0.05), min(1.0, hi + 0.03))
