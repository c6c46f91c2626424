"""Fig. 2 plotting: structure, provenance footer, fixed method colours, files, clear errors."""
import numpy as np
import pandas as pd
import pytest

from coar.errors import CoarError
from coar.paper.plots.attribution import fig_attribution_accuracy
from coar.paper.plots.style import METHOD_COLORS, method_label, save_figure

METHODS = ["coar", "loo", "gp", "nc", "ii"]


def tables(setups=("A", "B", "C"), seed=0):
    rng = np.random.default_rng(seed)
    corr, scat = [], []
    for s in setups:
        for i, m in enumerate(METHODS):
            for a in (0.05, 0.1, 0.2):
                corr.append(pd.DataFrame({"setup": s, "method": m, "alpha_test": a, "example": np.arange(20),
                                          "correlation": rng.uniform(0.0, 1.0 - 0.15 * i, 20)}))
            t = rng.normal(size=50)
            scat.append(pd.DataFrame({"setup": s, "method": m, "example": 3, "mask": np.arange(50), "true": t,
                                      "predicted": t * (1 - 0.2 * i) + rng.normal(size=50) * 0.3}))
    return pd.concat(corr, ignore_index=True), pd.concat(scat, ignore_index=True)


def test_layout_footer_legends_and_colours(tmp_path):
    corr, scat = tables()
    prov = "preset: test | models: resnet_tiny on Fashion-MNIST | coar 0.1.0"
    fig = fig_attribution_accuracy(corr, scat, {"A": 0.1, "B": 0.05, "C": 0.05}, prov,
                                   {"A": "A: first", "B": "B: second", "C": "C: third"})
    axes = fig.get_axes()
    assert len(axes) == 6
    assert any(prov in t.get_text() for t in fig.texts)
    scatter_axes, curve_axes = axes[0::2], axes[1::2]
    for ax in scatter_axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert len(labels) == 5 and all("r = " in lab for lab in labels)
        assert labels[0].startswith(method_label("coar"))
    coar_colours = set()
    for ax in curve_axes:
        for container in ax.containers:  # errorbar: the label sits on the container
            if container.get_label() == method_label("coar"):
                coar_colours.add(container.lines[0].get_color())
    assert {c.lower() for c in coar_colours} == {METHOD_COLORS["coar"].lower()}
    for suffix, magic in ((".pdf", b"%PDF"), (".png", b"\x89PNG")):
        out = save_figure(fig, tmp_path / "sub" / f"fig2{suffix}")
        assert out.read_bytes()[:4] == magic and out.stat().st_size > 10_000


def test_missing_column_and_setup_errors():
    corr, scat = tables(("A",))
    with pytest.raises(CoarError, match="correlation"):
        fig_attribution_accuracy(corr.drop(columns="correlation"), scat, {"A": 0.1}, "p")
    with pytest.raises(CoarError, match="predicted"):
        fig_attribution_accuracy(corr, scat.drop(columns="predicted"), {"A": 0.1}, "p")
    with pytest.raises(CoarError, match="alpha_train"):
        fig_attribution_accuracy(corr, scat, {}, "p")
    with pytest.raises(CoarError, match="Z"):
        fig_attribution_accuracy(corr, scat.assign(setup="Z"), {"A": 0.1}, "p")


def test_sample_size_figure():
    from coar.paper.plots.attribution import fig_sample_size

    rng = np.random.default_rng(2)
    rows = []
    for s in ("A", "B"):
        for m in (100, 200, 500, 1000):
            rows.append(pd.DataFrame({"setup": s, "method": "coar", "m": m, "example": np.arange(30),
                                      "correlation": rng.uniform(0.3, 0.9, 30), "cosine": rng.uniform(0.5, 1, 30)}))
            if s == "A":  # ridge refits on one setup only
                rows.append(pd.DataFrame({"setup": s, "method": "coar-ridge", "m": m, "example": np.arange(30),
                                          "correlation": np.full(30, m / 2000), "cosine": rng.uniform(0.5, 1, 30)}))
        rows.append(pd.DataFrame({"setup": s, "method": "loo", "m": np.nan, "example": np.arange(30),
                                  "correlation": rng.uniform(0.2, 0.7, 30), "cosine": np.nan}))
    table = pd.concat(rows, ignore_index=True)
    fig = fig_sample_size(table, "preset: test", {"A": "A: one", "B": "B: two"})
    axes = fig.get_axes()
    assert len(axes) == 4 and any("preset: test" in t.get_text() for t in fig.texts)
    assert [t.get_text() for t in axes[1].get_xticklabels()] == ["100", "200", "500", "1,000"]
    assert any(lab.startswith("Leave-one-out") for lab in axes[1].get_legend_handles_labels()[1])
    # the ridge line is the per-m mean of its rows, drawn on A's panel only
    ridge = [ln for ax in axes for ln in ax.get_lines()
             if ln.get_gid() == "sample_size_coar-ridge" and ln.get_linestyle() != "None"]  # not the caps
    assert len(ridge) == 1 and np.allclose(ridge[0].get_ydata(), [0.05, 0.1, 0.25, 0.5])
    assert "COAR, ridge (GCV)" in axes[1].get_legend_handles_labels()[1]
    assert "COAR, ridge (GCV)" not in axes[3].get_legend_handles_labels()[1]
    with pytest.raises(CoarError, match="cosine"):
        fig_sample_size(table.drop(columns="cosine"), "p")


def test_nan_counts_as_zero_style_is_local_and_unscattered_methods_keyed():
    import matplotlib

    corr, scat = tables(("A", "B"))
    corr.loc[corr["method"] == "ii", "correlation"] = np.nan
    before = dict(matplotlib.rcParams)
    fig = fig_attribution_accuracy(corr, scat[scat["setup"] == "A"], {"A": 0.1, "B": 0.1}, "p")
    assert dict(matplotlib.rcParams) == before  # style applied in a local context only
    curve_a, curve_b = fig.get_axes()[1], fig.get_axes()[3]
    ii = [c for c in curve_a.containers if c.get_label() == method_label("ii")][0]
    assert np.allclose(ii.lines[0].get_ydata(), 0.0)  # undefined correlations count as 0
    # row B has no scatter (so no method key beside it): its curve legend names every method
    labels_b = [t.get_text() for t in curve_b.get_legend().get_texts()]
    assert [method_label(m) for m in METHODS] == labels_b[:5] and "alpha" in labels_b[5]
