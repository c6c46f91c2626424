"""Fig. 2 plotting: structure, provenance footer, fixed method colours, files, clear errors."""
import numpy as np
import pandas as pd
import pytest

from coar.errors import CoarError
from coar.plotting import METHOD_COLORS, fig_attribution_accuracy, method_label, save_figure

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
