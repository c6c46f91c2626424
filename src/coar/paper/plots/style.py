"""The one style of every figure, and the helpers all figure modules share.

Conventions:
  * every method has one fixed, colour-blind-safe colour (Okabe-Ito palette) and marker (`METHOD_COLORS`,
    `METHOD_MARKERS`), and one display name (`METHOD_NAMES`, via `method_label`);
  * figures are built on `matplotlib.figure.Figure` (no pyplot figure manager) inside
    `matplotlib.rc_context(rc_params())`, so drawing never changes the caller's rcParams;
  * every figure carries a provenance footer (`start_figure`), so a small run can never pass for the paper's;
  * `save_figure` writes atomically and byte-stably (no creation date).
"""
from __future__ import annotations

import os
import textwrap
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation

from ...errors import CoarError

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

METHOD_MARKERS: dict[str, str] = {
    "coar": "o", "coar-ols": "o", "coar-ridge": "P", "loo": "s", "gp": "^", "nc": "D", "ii": "v",
}
# Colours/markers for methods this module does not know, handed out in sorted-name order per figure.
_FALLBACK_COLORS = ("#000000", "#7F7F7F", "#8C564B", "#F0E442", "#17BECF", "#BCBD22")
_FALLBACK_MARKERS = ("X", "*", "h", "p", "<", ">")
METHOD_ORDER = tuple(METHOD_NAMES)  # COAR first, then the baselines in the paper's order

Z95 = 1.96

FONT = 7.5
SMALL = 6.5
ROW_HEIGHT_IN = 2.75
WIDTH_IN = 7.5


def method_label(name: str) -> str:
    """Display name of a method ("loo" -> "Leave-one-out"); unknown names are shown as given."""
    return METHOD_NAMES.get(name, str(name))


def rc_params() -> dict:
    """A seaborn-"whitegrid"-like, paper-sized style, applied locally via matplotlib.rc_context."""
    import seaborn as sns  # imported lazily: only the style dictionaries are used, never sns.set()

    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("paper"))
    rc.update({
        "font.size": FONT, "axes.titlesize": FONT + 0.5, "axes.labelsize": FONT,
        "xtick.labelsize": SMALL, "ytick.labelsize": SMALL, "legend.fontsize": SMALL,
        "legend.title_fontsize": SMALL, "figure.titlesize": FONT + 2.5,
        "axes.titleweight": "normal", "axes.edgecolor": "0.3", "grid.color": "0.9", "grid.linewidth": 0.6,
        "axes.linewidth": 0.7, "lines.linewidth": 1.3, "lines.markersize": 4.0,
        "legend.frameon": True, "legend.framealpha": 0.9, "legend.edgecolor": "0.85",
        "legend.borderpad": 0.35, "legend.handlelength": 1.6, "legend.labelspacing": 0.3,
        "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    })
    return rc


def require_columns(table: pd.DataFrame, columns: Sequence[str], what: str, allow_empty: bool = False) -> None:
    if not isinstance(table, pd.DataFrame):
        raise CoarError(f"{what} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise CoarError(f"{what} table is missing required column(s) {missing}; it has {list(table.columns)}")
    if table.empty and not allow_empty:
        raise CoarError(f"{what} table is empty")


def numeric_columns(table: pd.DataFrame, columns: Iterable[str], what: str) -> pd.DataFrame:
    table = table.copy()
    for c in columns:
        try:
            table[c] = pd.to_numeric(table[c]).astype(np.float64)
        except (TypeError, ValueError) as e:
            raise CoarError(f"{what} column {c!r} must be numeric: {e}") from None
    return table


def ordered_unique(values: Iterable) -> list:
    return list(dict.fromkeys(values))


def method_order(methods: Iterable[str]) -> list[str]:
    """Known methods in the canonical order (COAR first), then unknown ones in order of appearance."""
    methods = ordered_unique(methods)
    known = [m for m in METHOD_ORDER if m in methods]
    return known + [m for m in methods if m not in METHOD_NAMES]


def method_styles(methods: Sequence[str]) -> dict[str, dict]:
    """Colour, marker and unique legend label per method, fixed for the whole figure."""
    unknown = sorted(m for m in methods if m not in METHOD_COLORS)
    styles = {}
    for m in methods:
        if m in METHOD_COLORS:
            colour, marker = METHOD_COLORS[m], METHOD_MARKERS[m]
        else:
            i = unknown.index(m)
            colour, marker = _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)], _FALLBACK_MARKERS[i % len(_FALLBACK_MARKERS)]
        styles[m] = {"color": colour, "marker": marker, "label": method_label(m)}
    labels = [s["label"] for s in styles.values()]
    for m, s in styles.items():  # e.g. "coar" and "coar-ols" together: keep both legible
        if labels.count(s["label"]) > 1:
            s["label"] = f"{s['label']} [{m}]"
    return styles


def zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def provenance_footer(fig: Figure, provenance: str, width_in: float) -> float:
    """Provenance text at the bottom of the figure; returns the height (figure fraction) it takes."""
    chars_per_line = max(40, int(width_in * 72 / (SMALL * 0.6)))
    lines = textwrap.wrap(" ".join(str(provenance).split()), chars_per_line) or [""]
    height_in = 0.08 + len(lines) * SMALL * 1.3 / 72
    fig.text(0.01, 0.04 / fig.get_figheight(), "\n".join(lines), ha="left", va="bottom",
             fontsize=SMALL, color="0.35", linespacing=1.2, gid="provenance")
    return height_in / fig.get_figheight()


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


def wrap_title(text: str, width: int) -> str:
    """Wrap each line of `text` at spaces; a trailing "(cf. paper Fig. N)" is kept on one line."""
    out = []
    for line in str(text).splitlines() or [""]:
        line = " ".join(line.split())
        head, sep, tail = line.rpartition("(cf. ")
        if sep:
            line = head + (sep + tail).replace(" ", "\u00a0")
        out.append("\n".join(textwrap.wrap(line, width)).replace("\u00a0", " "))
    return "\n".join(x for x in out if x)


def start_figure(width_in: float, height_in: float, provenance: str, suptitle: str, **layout) -> Figure:
    """Constrained-layout figure with the provenance footer reserved at the bottom and a bold suptitle.
    Must be called inside `matplotlib.rc_context(rc_params())`."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    footer = provenance_footer(fig, provenance, width_in)
    settings = {"h_pad": 0.04, "w_pad": 0.04, **layout}
    fig.get_layout_engine().set(rect=(0.0, footer, 1.0, 1.0 - footer), **settings)
    fig.suptitle(wrap_title(suptitle, max(30, int(width_in * 72 / (10.0 * 0.64)))), fontweight="bold")
    return fig


def panel_title(ax, text: str, width_in: float) -> None:
    ax.set_title(wrap_title(text, max(20, int(width_in * 72 / ((SMALL + 1) * 0.55)))), loc="left", fontsize=SMALL + 1)


def figure_with_title(width: float, height: float, provenance: str, suptitle: str, title: str, **layout):
    """start_figure plus one subfigure carrying `title` (normal weight) under the bold suptitle."""
    fig = start_figure(width, height, provenance, suptitle, **layout)
    panel = fig.subfigures(1, 1)
    if str(title).strip():
        panel.suptitle(wrap_title(title, int(width * 72 / (8.5 * 0.55))), fontsize=SMALL + 1.5, color="0.2")
    return fig, panel


def legend_below(ax, handles: list, drop_in: float = 0.40, **kw):
    """Legend centred under the axes, `drop_in` inches below its bottom edge (clear of tick labels and the
    x label whatever the axes height), so it never covers data."""
    trans = ax.transAxes + ScaledTranslation(0, -drop_in, ax.get_figure().dpi_scale_trans)
    return ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), bbox_transform=trans,
                     borderaxespad=0.0, **kw)


def signed(x: float, digits: int = 2) -> str:
    """+0.12 / \u22120.12 (a true minus sign)."""
    return f"{x:+.{digits}f}".replace("-", "\u2212")
