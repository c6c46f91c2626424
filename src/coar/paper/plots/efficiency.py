"""The efficiency study's figure: attribution accuracy against the forward-pass budget, one panel per setup,
one line per estimator (coar.paper.efficiency's table)."""
from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .style import (METHOD_COLORS, ROW_HEIGHT_IN, SMALL, WIDTH_IN, numeric_columns, panel_title, rc_params,
                    require_columns, start_figure)

__all__ = ["EFFICIENCY_COLUMNS", "fig_efficiency"]

EFFICIENCY_COLUMNS = ("setup", "estimator", "label", "masks", "ratio", "mean_correlation", "sem")
# least squares in COAR's colour; the priors in their baseline's colour; the rest from the Okabe-Ito palette
_COLORS = {"ols": METHOD_COLORS["coar"], "ridge": METHOD_COLORS["coar-ridge"], "prior-loo": METHOD_COLORS["loo"],
           "loo alone": METHOD_COLORS["loo"], "prior-gp": METHOD_COLORS["gp"], "gp alone": METHOD_COLORS["gp"],
           "lowrank": "#000000", "lasso": "#7F7F7F"}
_NAMES = {"ols": "least squares (COAR)", "ridge": "ridge (GCV)", "prior-loo": "shrunk to leave-one-out",
          "prior-gp": "shrunk to grad x param", "lowrank": "low-rank prior (all examples)", "lasso": "lasso"}


def fig_efficiency(table: pd.DataFrame, provenance: str, titles: Mapping[str, str] | None = None) -> Figure:
    """Mean correlation (± SEM) on the evaluation masks against the total budget / m (masks plus the prior's
    own passes): least squares at m dashed, a third of its budget dotted; a prior alone is a cross at its cost
    (at the left edge, as a left-pointing triangle, when its cost is below the axis)."""
    require_columns(table, EFFICIENCY_COLUMNS, "efficiency")
    table = numeric_columns(table, ("masks", "ratio", "mean_correlation", "sem"), "efficiency")
    setups = list(dict.fromkeys(table.setup))
    width = WIDTH_IN if len(setups) > 1 else WIDTH_IN / 2
    with matplotlib.rc_context(rc_params()):
        fig = start_figure(width, ROW_HEIGHT_IN + 0.9, provenance,
                           "Attribution accuracy against the forward-pass budget, priors counted")
        axes = np.atleast_1d(fig.subplots(1, len(setups), squeeze=False)[0])
        for ax, setup in zip(axes, setups):
            d = table[table.setup == setup]
            left = d[d.masks > 0].ratio.min() / 1.5
            for name, e in d.groupby("estimator", sort=False):
                e = e.sort_values("ratio")
                colour = _COLORS.get(name, "#56B4E9")
                if name.endswith("alone"):
                    below = bool((e.ratio < left).any())
                    ax.errorbar(e.ratio.clip(lower=left), e.mean_correlation, yerr=e["sem"], fmt="<" if below else "x",
                                ms=6, color=colour, label=f"{name} ({e.ratio.iloc[0]:.2g} m)")
                else:
                    ax.errorbar(e.ratio, e.mean_correlation, yerr=e["sem"], marker="o", ms=3, capsize=2,
                                color=colour, label=_NAMES.get(name, name))
            full = d[(d.estimator == "ols") & (d.label == "m")].mean_correlation
            if len(full):
                ax.axhline(float(full.iloc[0]), ls="--", c="0.5", lw=0.8)
            ax.axvline(1 / 3, ls=":", c="0.5", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_xlim(left / 1.2, 1.6)
            ax.set_xlabel("forward passes / m (masks + prior)")
            lo, hi = d.mean_correlation.min(), d.mean_correlation.max()
            ax.set_ylim(max(0.0, lo - 0.05), min(1.0, hi + 0.03))
            panel_title(ax, (titles or {}).get(setup, setup), width / len(setups))
        axes[0].set_ylabel("mean correlation on evaluation masks")
        axes[-1].legend(fontsize=SMALL - 0.5, loc="lower right")
    return fig
