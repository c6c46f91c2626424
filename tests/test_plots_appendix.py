"""Appendix figures (paper Figs. 13, 15-18, 25-27): what is drawn equals what the tables say."""
import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from coar.errors import CoarError
from coar.paper.plots.appendix import (
    SETUP_PALETTE,
    fig_ablation_effect,
    fig_alpha_profile,
    fig_example_scatters,
    fig_neighbors,
    fig_top_examples,
    fig_zero_vs_scale,
)
from coar.paper.plots.style import METHOD_COLORS, method_label, save_figure

PROV = "preset: test | resnet_tiny on Fashion-MNIST | coar 0.1.0"
ALPHAS = (0.02, 0.05, 0.1, 0.2)


def footer_text(fig: Figure) -> str:
    return " ".join(t.get_text() for t in fig.texts if t.get_gid() == "provenance")


def suptitle_text(fig: Figure) -> str:
    return " ".join(fig.get_suptitle().split())


def texts_with_gid(ax, gid):
    return [" ".join(t.get_text().split()) for t in ax.texts if t.get_gid() == gid]


def lines_with_gid(ax, gid):
    return [ln for ln in ax.get_lines() if ln.get_gid() == gid]


def mean_with_nan_as_zero(t, keys):
    return t.assign(correlation=t["correlation"].fillna(0.0)).groupby(keys)["correlation"].mean()


# ----------------------------------------------------------------------------------------- Figs. 13 / 26

def profile_table(seed=0, methods=("coar", "loo"), n=12):
    rng = np.random.default_rng(seed)
    rows = []
    for setup in ("a05", "a10"):
        for m in methods:
            for a in ALPHAS:
                c = rng.uniform(-0.2, 0.9, n)
                c[:2] = np.nan  # undefined correlations must count as 0
                rows.append(pd.DataFrame({"setup": setup, "method": m, "alpha_test": a, "example": np.arange(n),
                                          "correlation": c}))
    return pd.concat(rows, ignore_index=True)


def test_alpha_profile_means_errors_markers_and_legend(tmp_path):
    t = profile_table()
    labels = {"a05": "alpha_train = 0.05", "a10": "alpha_train = 0.15"}
    before = dict(matplotlib.rcParams)
    fig = fig_alpha_profile(t, labels, {"a05": 0.05, "a10": 0.15}, PROV, "ResNet on CIFAR",
                            "Profiles (cf. paper Fig. 13)")
    assert dict(matplotlib.rcParams) == before  # style applied in a local context only
    assert isinstance(fig, Figure) and PROV in footer_text(fig)
    assert "cf. paper Fig. 13" in suptitle_text(fig)
    (ax,) = fig.get_axes()
    assert ax.get_title(loc="left") == "ResNet on CIFAR" and ax.get_xscale() == "log"
    assert [x.get_text() for x in ax.get_xticklabels()] == ["0.02", "0.05", "0.1", "0.2"]
    means = mean_with_nan_as_zero(t, ["setup", "method", "alpha_test"])
    filled = t.assign(correlation=t["correlation"].fillna(0.0))
    sem = filled.groupby(["setup", "method", "alpha_test"])["correlation"].sem()
    seen, colour, style = set(), {}, {}
    for c in ax.containers:
        setup = "a05" if c.get_label().startswith(labels["a05"]) else "a10"
        method = "coar" if c.get_label().endswith(method_label("coar")) else "loo"
        line = c.lines[0]
        np.testing.assert_allclose(line.get_xdata(), ALPHAS)  # the nudge is a display offset only
        np.testing.assert_allclose(line.get_ydata(), [means[(setup, method, a)] for a in ALPHAS])
        half = [abs(seg[1][1] - seg[0][1]) / 2 for seg in c.lines[2][0].get_segments()]
        np.testing.assert_allclose(half, [1.96 * sem[(setup, method, a)] for a in ALPHAS])
        colour.setdefault(setup, set()).add(to_hex(line.get_color()))
        style[(setup, method)] = line.get_linestyle()
        seen.add((setup, method))
    assert seen == {(s, m) for s in ("a05", "a10") for m in ("coar", "loo")}
    assert colour == {"a05": {SETUP_PALETTE[0].lower()}, "a10": {SETUP_PALETTE[1].lower()}}
    assert style[("a05", "coar")] == "-" and style[("a05", "loo")] != "-"
    # a05's alpha_train (0.05) was evaluated: a star on each of its lines at the mean there;
    # a10's (0.15) was not: one dotted vertical line in its colour
    stars = lines_with_gid(ax, "alpha_train_star")
    assert sorted(float(s.get_ydata()[0]) for s in stars) == sorted(means[("a05", m, 0.05)] for m in ("coar", "loo"))
    assert all(float(s.get_xdata()[0]) == 0.05 for s in stars)
    (vline,) = lines_with_gid(ax, "alpha_train_line")
    assert list(vline.get_xdata()) == [0.15, 0.15] and to_hex(vline.get_color()) == SETUP_PALETTE[1].lower()
    legend = [x.get_text() for x in ax.get_legend().get_texts()]
    assert f"{labels['a05']} · COAR" in legend and any("not evaluated" in x for x in legend)
    out = save_figure(fig, tmp_path / "fig13.pdf")
    assert out.read_bytes()[:4] == b"%PDF"


def test_alpha_profile_single_method_labels_and_errors():
    t = profile_table(methods=("coar",))
    fig = fig_alpha_profile(t, {"a05": "first"}, {"a05": 0.05, "a10": 0.1}, PROV, "t", "s (cf. paper Fig. 26)")
    legend = [x.get_text() for x in fig.get_axes()[0].get_legend().get_texts()]
    assert legend[:2] == ["first", "a10"]  # no method suffix with one method; setup name when unlabelled
    with pytest.raises(CoarError, match="correlation"):
        fig_alpha_profile(t.drop(columns="correlation"), {}, {"a05": 0.05, "a10": 0.1}, PROV, "t", "s")
    with pytest.raises(CoarError, match="a10"):
        fig_alpha_profile(t, {}, {"a05": 0.05}, PROV, "t", "s")
    with pytest.raises(CoarError, match="alpha_test"):
        fig_alpha_profile(t.assign(alpha_test=0.0), {}, {"a05": 0.05, "a10": 0.1}, PROV, "t", "s")


# ------------------------------------------------------------------------------------------------ Fig. 25

def ablation_table(seed=1):
    rng = np.random.default_rng(seed)
    rows = []
    for setup, acc0 in (("cifar", 0.9), ("vit", 0.8)):
        rows.append(pd.DataFrame({"setup": setup, "alpha": [0.0], "mask": [0], "accuracy": [acc0],
                                  "correlation": [1.0]}))
        for a in (0.01, 0.05, 0.1):
            c = rng.uniform(0.2, 1.0, 8)
            c[0] = np.nan
            rows.append(pd.DataFrame({"setup": setup, "alpha": a, "mask": np.arange(8),
                                      "accuracy": rng.uniform(0.3, acc0, 8), "correlation": c}))
    return pd.concat(rows, ignore_index=True)


def test_ablation_effect_means_reference_lines_and_layout():
    t = ablation_table()
    titles = {"vit": "ViT on ImageNet", "cifar": "ResNet on CIFAR"}  # also the row order
    fig = fig_ablation_effect(t, {"cifar": 0.05, "vit": 0.07}, PROV, titles)
    assert PROV in footer_text(fig) and "cf. paper Fig. 25" in suptitle_text(fig)
    axes = fig.get_axes()
    assert len(axes) == 4
    assert [sf.get_suptitle() for sf in fig.subfigs] == ["ViT on ImageNet", "ResNet on CIFAR"]
    for row, setup in enumerate(("vit", "cifar")):
        d = t[(t["setup"] == setup) & (t["alpha"] > 0)]
        acc = d.groupby("alpha")["accuracy"].mean()
        cor = mean_with_nan_as_zero(d, ["alpha"])
        ax_acc, ax_cor = axes[2 * row], axes[2 * row + 1]
        for ax, expect in ((ax_acc, acc), (ax_cor, cor)):
            (mean,) = lines_with_gid(ax, "mean")
            np.testing.assert_allclose(mean.get_ydata(), expect.to_numpy())
            assert [x.get_text() for x in ax.get_xticklabels()] == ["0.01", "0.05", "0.1"]
            strip = [c for c in ax.collections if c.get_gid() == "per_mask"]
            assert sum(len(c.get_offsets()) for c in strip) == len(d)  # every mask drawn
        (unablated,) = lines_with_gid(ax_acc, "unablated")
        assert unablated.get_ydata()[0] == pytest.approx(t.loc[(t["setup"] == setup) & (t["alpha"] == 0),
                                                               "accuracy"].iloc[0])
        (train,) = lines_with_gid(ax_cor, "alpha_train")
        x = train.get_xdata()[0]
        # cifar: 0.05 is the 2nd fraction (position 1); vit: 0.07 lies between positions 1 and 2
        assert x == pytest.approx(1.0) if setup == "cifar" else 1.0 < x < 2.0


def test_ablation_effect_errors():
    t = ablation_table()
    with pytest.raises(CoarError, match="accuracy"):
        fig_ablation_effect(t.drop(columns="accuracy"), {"cifar": 0.05, "vit": 0.05}, PROV)
    with pytest.raises(CoarError, match="vit"):
        fig_ablation_effect(t, {"cifar": 0.05}, PROV)
    with pytest.raises(CoarError, match="alpha > 0"):
        fig_ablation_effect(t[t["alpha"] == 0], {"cifar": 0.05, "vit": 0.05}, PROV)


# ------------------------------------------------------------------------------------------------ Fig. 27

def test_zero_vs_scale_histogram_median_and_curves():
    rng = np.random.default_rng(2)
    cos = rng.uniform(0.4, 0.9, 60)
    cos[3] = np.nan
    rows = []
    for lab in ("scale (gamma 0.5) attributions", "zero attributions"):
        for a in ALPHAS:
            c = rng.uniform(0, 0.8, 10)
            c[0] = np.nan
            rows.append(pd.DataFrame({"attributions": lab, "alpha_test": a, "example": np.arange(10),
                                      "correlation": c}))
    t = pd.concat(rows, ignore_index=True)
    fig = fig_zero_vs_scale(cos, t, 0.5, PROV, "CIFAR-10 ResNet-18")
    assert PROV in footer_text(fig) and "cf. paper Fig. 27" in suptitle_text(fig)
    ax_h, ax_c = fig.get_axes()
    assert sum(p.get_height() for p in ax_h.patches) == 59  # the NaN is dropped
    median = float(np.nanmedian(cos))
    (mline,) = lines_with_gid(ax_h, "median")
    assert mline.get_xdata()[0] == pytest.approx(median)
    (note,) = texts_with_gid(ax_h, "median_text")
    assert f"median = {median:.3f}" in note and "1 non-finite" in note
    means = mean_with_nan_as_zero(t, ["attributions", "alpha_test"])
    got = {c.get_label(): c.lines[0].get_ydata() for c in ax_c.containers}
    assert set(got) == set(t["attributions"])
    for lab, y in got.items():
        np.testing.assert_allclose(y, [means[(lab, a)] for a in ALPHAS])
    fig.canvas.draw()  # the legend sits in a band above every error bar
    legend_box = ax_c.get_legend().get_window_extent()
    top = max(float(np.max(seg[:, 1])) for c in ax_c.containers for seg in c.lines[2][0].get_segments())
    assert ax_c.transData.transform((ALPHAS[0], top))[1] < legend_box.y0
    with pytest.raises(CoarError, match="shape"):
        fig_zero_vs_scale(np.ones((3, 2)), t, 0.5, PROV, "x")
    with pytest.raises(CoarError, match="attributions"):
        fig_zero_vs_scale(cos, t.drop(columns="attributions"), 0.5, PROV, "x")


# ---------------------------------------------------------------------------------------- Figs. 15 / 16

def test_example_scatters_grid_r_and_constant_estimate(tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for setup in ("A", "B"):
        for ex in (7, 3):
            true = rng.normal(size=40)
            for m in ("gp", "coar", "loo"):  # not in display order
                pred = np.full(40, 2.0) if (setup, ex, m) == ("B", 3, "gp") else true + rng.normal(size=40)
                rows.append(pd.DataFrame({"setup": setup, "example": ex, "method": m, "mask": np.arange(40),
                                          "true": true, "predicted": pred}))
    t = pd.concat(rows, ignore_index=True)
    fig = fig_example_scatters(t, PROV, {"A": "Setup A"})
    assert PROV in footer_text(fig) and "cf. paper Fig" in suptitle_text(fig)
    axes = np.array(fig.get_axes()).reshape(4, 3)
    order = ["coar", "loo", "gp"]
    assert [ax.get_title() for ax in axes[0]] == [method_label(m) for m in order]
    assert [" ".join(ax.get_ylabel().split()) for ax in axes[:, 0]] == [
        "Setup A example 7", "Setup A example 3", "B example 7", "B example 3"]
    for r, (setup, ex) in enumerate((("A", 7), ("A", 3), ("B", 7), ("B", 3))):
        for c, m in enumerate(order):
            ax = axes[r, c]
            d = t[(t["setup"] == setup) & (t["example"] == ex) & (t["method"] == m)]
            (text,) = texts_with_gid(ax, "pearson_r")
            (pts,) = [col for col in ax.collections if col.get_gid() == "masks"]
            assert to_hex(pts.get_facecolor()[0]) == METHOD_COLORS[m].lower()
            xy = pts.get_offsets()
            np.testing.assert_allclose(xy[:, 0], (d["true"] - d["true"].mean()) / d["true"].std(ddof=0))
            if (setup, ex, m) == ("B", 3, "gp"):
                assert text == "r undefined (constant estimate)"
                assert np.allclose(xy[:, 1], 0.0)
            else:
                rho = np.corrcoef(d["true"], d["predicted"])[0, 1]
                assert text == f"r = {rho:.2f}"
            assert lines_with_gid(ax, "identity")
    save_figure(fig, tmp_path / "fig15.pdf")
    with pytest.raises(CoarError, match="predicted"):
        fig_example_scatters(t.drop(columns="predicted"), PROV)


# ------------------------------------------------------------------------------------------ Figs. 17 / 18

def images(n=12, h=6, w=5, channels_first=False):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    return x, (np.transpose(x, (0, 3, 1, 2)) if channels_first else x)


def test_top_examples_images_captions_and_row_labels():
    hwc, chw = images(channels_first=True)
    rows = [{"component": "layer2.0.conv1[17]", "examples": [3, 1, 0], "values": [0.04213, 0.0301, 0.00012],
             "labels": [2, 0, 1]},
            {"component": "fc[5]", "examples": [5, 6, 7], "values": [1.0, 0.5, -0.25], "labels": [1, 1, 0]}]
    fig = fig_top_examples(chw, rows, PROV, "Top examples", class_names=["cat", "dog", "ship"])
    assert PROV in footer_text(fig) and suptitle_text(fig) == "Top examples (cf. paper Fig. 17)"
    axes = np.array(fig.get_axes()).reshape(2, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["layer2.0.conv1[17]", "fc[5]"]
    assert [ax.get_xlabel() for ax in axes[0]] == ["0.0421\nship", "0.0301\ncat", "0.000120\ndog"]
    assert [ax.get_xlabel() for ax in axes[1]] == ["1.00\ndog", "0.500\ndog", "-0.250\ncat"]
    for r, row in enumerate(rows):
        for c, idx in enumerate(row["examples"]):
            (im,) = axes[r, c].get_images()
            np.testing.assert_array_equal(im.get_array(), hwc[idx])  # [n, 3, H, W] shown as H x W x 3
    gray = fig_top_examples(hwc[..., 0], [{k: v for k, v in rows[0].items() if k != "labels"}], PROV, "g")
    (ax0, *_) = gray.get_axes()
    assert len(gray.get_axes()) == 3 and ax0.get_xlabel() == "0.0421"  # no class name without labels
    np.testing.assert_array_equal(ax0.get_images()[0].get_array(), hwc[3, ..., 0])
    # a caller's title that already names the figure keeps its line break and is not tagged twice
    named = fig_top_examples(hwc, rows, PROV, "Top examples (cf. paper Fig. 17)\nResNet on CIFAR")
    assert named.get_suptitle() == "Top examples (cf. paper Fig. 17)\nResNet on CIFAR"


def test_top_examples_errors():
    _, x = images()
    ok = {"component": "c", "examples": [0, 1], "values": [0.1, 0.2]}
    with pytest.raises(CoarError, match="ragged"):
        fig_top_examples(x, [ok, {"component": "d", "examples": [0, 1, 2], "values": [1, 2, 3]}], PROV, "t")
    with pytest.raises(CoarError, match=r"shape"):
        fig_top_examples(np.zeros((4, 5), np.uint8), [ok], PROV, "t")
    with pytest.raises(CoarError, match="uint8"):
        fig_top_examples(x.astype(np.float32), [ok], PROV, "t")
    with pytest.raises(CoarError, match="values"):
        fig_top_examples(x, [{"component": "c", "examples": [0, 1]}], PROV, "t")
    with pytest.raises(CoarError, match="outside"):
        fig_top_examples(x, [{"component": "c", "examples": [0, 99], "values": [1, 2]}], PROV, "t")


def test_neighbors_headers_similarities_frame_and_errors(tmp_path):
    hwc, _ = images()
    rows = [{"query": 0, "neighbors": [4, 2], "similarity": [0.9, 0.85], "labels": [1, 1, 0]},
            {"query": 1, "neighbors": [3, 5], "similarity": [0.7, 0.61234]}]
    fig = fig_neighbors(hwc, rows, PROV, "Neighbours", class_names=["no", "yes"])
    assert PROV in footer_text(fig) and "cf. paper Fig. 18" in suptitle_text(fig)
    axes = np.array(fig.get_axes()).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["Query", "Neighbor #1", "Neighbor #2"]
    assert [ax.get_xlabel() for ax in axes[0]] == ["example 0\nyes", "cos 0.900\nyes", "cos 0.850\nno"]
    assert [ax.get_xlabel() for ax in axes[1]] == ["example 1", "cos 0.700", "cos 0.612"]
    np.testing.assert_array_equal(axes[1, 2].get_images()[0].get_array(), hwc[5])
    query_spine, other_spine = axes[0, 0].spines["left"], axes[0, 1].spines["left"]
    assert query_spine.get_visible() and not other_spine.get_visible()
    out = save_figure(fig, tmp_path / "fig18.pdf")
    assert out.read_bytes()[:4] == b"%PDF"
    with pytest.raises(CoarError, match="ragged"):
        fig_neighbors(hwc, [rows[0], {"query": 1, "neighbors": [3], "similarity": [0.5]}], PROV, "t")
    with pytest.raises(CoarError, match="labels"):
        fig_neighbors(hwc, [{**rows[0], "labels": [1, 1]}], PROV, "t")
    with pytest.raises(CoarError, match="similarity"):
        fig_neighbors(hwc, [{"query": 0, "neighbors": [1]}], PROV, "t")
