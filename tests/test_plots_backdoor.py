"""Figs. 6 and 24: the drawn data are the tables' data, and bad tables fail naming the problem."""
import numpy as np
import pandas as pd
import pytest

from coar.errors import CoarError
from coar.paper.plots.backdoor import fig_backdoor, fig_backdoor_saliency


def _tables():
    ks = [0, 1, 2, 4]
    rows = [{"target": "bd", "method": m, "k": k, "set": f"{split}: {kind}",
             "accuracy": (0.9 - 0.01 * k) if kind == "clean" else (0.4 + 0.1 * k if m == "coar" else 0.4),
             "mean_margin": 0.0} for m in ("coar", "random") for k in ks
            for split in ("validation", "held-out") for kind in ("clean", "triggered")]
    summary = pd.DataFrame([{"method": m, "k": 2, "components": 200, "clean_before": 0.9, "clean_after": 0.88,
                             "triggered_before": 0.4, "triggered_after": 0.6 if m == "coar" else 0.4,
                             "correlation_before": 0.3, "correlation_after": 0.9 if m == "coar" else 0.3}
                            for m in ("coar", "random")])
    rng = np.random.default_rng(0)
    outputs = pd.DataFrame(rng.normal(size=(50, 4)), columns=["clean_before", "triggered_before", "clean_after",
                                                               "triggered_after"])
    img = rng.integers(0, 255, (3, 1, 8, 8), dtype=np.uint8)
    images = {"train": (img, ["a", "b", "c"]), "test": (img, ["\u2713 a", "\u2717 b", "\u2713 c"])}
    return pd.DataFrame(rows), summary, outputs, images


def _gid(fig, gid):
    return [a for ax in fig.axes for a in ax.get_children() if getattr(a, "get_gid", lambda: None)() == gid]


def test_fig6_draws_the_held_out_curves_the_chosen_k_and_the_paired_outputs():
    sweep, summary, outputs, images = _tables()
    fig = fig_backdoor(sweep, summary, outputs, images, "prov", "Fig 6", "title")
    line = _gid(fig, "accuracy_coar|held-out: triggered")[0]
    np.testing.assert_allclose(line.get_ydata(), [40, 50, 60, 80])
    assert _gid(fig, "chosen_k")[0].get_xdata()[0] == 2
    after = _gid(fig, "outputs_after")[0].get_offsets()
    np.testing.assert_allclose(after, outputs[["clean_after", "triggered_after"]].to_numpy())
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("\u03c1 = 0.90" in t for t in texts) and any("\u03c1 = 0.30" in t for t in texts)
    with pytest.raises(CoarError, match="no rows for set"):
        fig_backdoor(sweep[sweep.set != "held-out: clean"], summary, outputs, images, "p", "s", "t")
    with pytest.raises(CoarError, match="correlation_after"):
        fig_backdoor(sweep, summary.drop(columns="correlation_after"), outputs, images, "p", "s", "t")


def test_fig7_adds_the_real_attacks_to_the_sweep_panel_and_the_box():
    sweep, summary, outputs, images = _tables()
    real = sweep[sweep.set == "held-out: triggered"].assign(set="held-out: real attacks",
                                                             accuracy=lambda d: 0.5 + 0.05 * d.k)
    summary = summary.assign(real_attacks_before=0.5, real_attacks_after=0.6)
    fig = fig_backdoor(pd.concat([sweep, real]), summary, outputs, images, "prov", "Fig 7", "t",
                       trigger="synthetic attack", extra=["real attacks"])
    line = _gid(fig, "accuracy_coar|held-out: real attacks")[0]
    np.testing.assert_allclose(line.get_ydata(), [50, 55, 60, 70])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("real attacks 50.0% \u2192 60.0%" in t and "with synthetic attack 40.0%" in t for t in texts)
    with pytest.raises(CoarError, match="real attacks"):
        fig_backdoor(sweep, summary, outputs, images, "p", "s", "t", extra=["real attacks"])


def test_fig24_one_row_per_component_with_its_share():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (4, 1, 8, 8), dtype=np.uint8)
    maps = rng.normal(size=(2, 4, 8, 8))
    fig = fig_backdoor_saliency(images, maps, ["l1[3]", "l2[5]"], [0.5, 0.25], 0.02, "prov", "Fig 24", "t")
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert labels == ["input", "(1) l1[3]\n50% in trigger", "(2) l2[5]\n25% in trigger"]
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    np.testing.assert_allclose(shown[4 + 1], maps[0, 1])
    with pytest.raises(CoarError, match="do not match"):
        fig_backdoor_saliency(images[:3], maps, ["a", "b"], [0.1, 0.2], 0.02, "p", "s", "t")
