"""Editing figures (paper Figs. 3, 4, 19-23): what is drawn equals what the tables say."""
import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from coar.errors import CoarError
from coar.paper.plots.editing import (
    RANDOM_COLOR,
    fig_edit_examples,
    fig_edit_layers,
    fig_edit_prediction,
    fig_forget_class,
    fig_forget_classes,
)
from coar.paper.plots.style import METHOD_COLORS, save_figure

PROV = "preset: test | resnet_tiny on Fashion-MNIST | coar 0.1.0"
KS = (0, 1, 2, 4, 8)
TARGETS = ("17", "256", "3001", "42")
SUMMARY_TARGETS = ("17",) + tuple(str(1000 + i) for i in range(1, 20))


def footer_text(fig: Figure) -> str:
    return " ".join(t.get_text() for t in fig.texts if t.get_gid() == "provenance")


def visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.get_axes() if ax.get_visible()]


def line(ax, gid):
    (ln,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return ln


def axis_texts(ax) -> str:
    return " ".join(" ".join(t.get_text().split()) for t in ax.texts)


def edit_sweep(seed=0, targets=TARGETS + SUMMARY_TARGETS[1:], sets=("reference", "held-out")):
    rng = np.random.default_rng(seed)
    rows = []
    for t in targets:
        m0 = -rng.uniform(0.5, 2.0)
        for method in ("coar", "random"):
            for k in KS:
                margin = m0 + (0.6 * k if method == "coar" else rng.normal(0, 0.1))
                rows.append({"experiment": "fix", "target": t, "method": method, "k": k, "set": "target",
                             "accuracy": float(margin > 0), "mean_margin": margin})
                for s in sets:
                    rows.append({"experiment": "fix", "target": t, "method": method, "k": k, "set": s,
                                 "accuracy": rng.uniform(0.8, 0.9), "mean_margin": rng.uniform(1, 2)})
    return pd.DataFrame(rows)


def edit_summary(seed=0, targets=SUMMARY_TARGETS):
    rng = np.random.default_rng(seed)
    flipped = rng.uniform(size=len(targets)) < 0.8
    flipped[0] = True  # target "17" flips at k = 2
    rows = [{"target": t, "method": "coar", "k": 2.0 if f else np.nan, "flipped": bool(f),
             "accuracy_change": rng.normal(-0.003, 0.004) if f else np.nan} for t, f in zip(targets, flipped)]
    rows += [{"target": t, "method": "random", "k": np.nan, "flipped": i < 2,
              "accuracy_change": np.nan} for i, t in enumerate(targets)]
    return pd.DataFrame(rows)


def curve(t, target, method, set_name, column):
    d = t[(t.target == target) & (t.method == method) & (t.set == set_name)].sort_values("k")
    return d["k"].to_numpy(float), d[column].to_numpy(float)


# ------------------------------------------------------------------------------------------------ Fig. 3

def test_edit_prediction_draws_the_tables():
    sweep, summary = edit_sweep(), edit_summary()
    before = dict(matplotlib.rcParams)
    fig = fig_edit_prediction(sweep, summary, "17", PROV, "Editing predictions (cf. paper Fig. 3)", "ResNet")
    assert dict(matplotlib.rcParams) == before  # style only in a local context
    assert isinstance(fig, Figure) and PROV in footer_text(fig)
    assert "cf. paper Fig. 3" in fig.get_suptitle()
    ax_m, ax_a, ax_h = visible_axes(fig)

    for method, colour in (("coar", METHOD_COLORS["coar"]), ("random", RANDOM_COLOR)):
        k, m = curve(sweep, "17", method, "target", "mean_margin")
        ln = line(ax_m, f"margin_{method}")
        np.testing.assert_allclose(ln.get_xdata(), k)
        np.testing.assert_allclose(ln.get_ydata(), m)
        assert to_hex(ln.get_color()) == to_hex(colour)
        assert (ln.get_linestyle() == "-") == (method == "coar")  # control dashed
        for s in ("reference", "held-out"):
            k, acc = curve(sweep, "17", method, s, "accuracy")
            np.testing.assert_allclose(line(ax_a, f"accuracy_{method}|{s}").get_ydata(), 100 * acc)  # percent
    assert line(ax_m, "decision_boundary").get_ydata()[0] == 0
    assert [t.get_text() for t in ax_m.texts if t.get_gid() == "decision_boundary_label"] == ["decision boundary"]
    star = line(ax_m, "flip")  # summary: target 17 flips at k = 2
    k, m = curve(sweep, "17", "coar", "target", "mean_margin")
    assert star.get_xdata()[0] == 2 and star.get_ydata()[0] == pytest.approx(m[k == 2][0])

    coar = summary[(summary.method == "coar") & summary.flipped]
    changes = 100 * coar["accuracy_change"].to_numpy()
    bars = [p for p in ax_h.patches if p.get_gid() == "edits"]
    edges = np.array([p.get_x() for p in bars] + [bars[-1].get_x() + bars[-1].get_width()])
    assert edges[-1] == pytest.approx(changes.max(), abs=1e-9) or edges[-1] > changes.max()
    edges[-1] = max(edges[-1], changes.max())  # x + width may round 1 ulp below the last edge
    counts, _ = np.histogram(changes, bins=edges)
    np.testing.assert_array_equal([p.get_height() for p in bars], counts)
    assert sum(counts) == len(changes)
    assert line(ax_h, "median").get_xdata()[0] == pytest.approx(np.median(changes))
    note = axis_texts(ax_h)
    n_coar = int((summary.method == "coar").sum())
    # every target's margin is negative before the edit: the flips are fixed errors
    assert f"{len(coar)} of {n_coar} errors fixed" in note
    assert f"median change {np.median(changes):+.2f} pp".replace("-", "\u2212") in note
    assert f"random components: 2 of {n_coar} flipped" in note


def test_edit_prediction_with_k_chosen_on_validation():
    """A summary with first_k (the first flip at any cost) beside the validated k: the star marks the first flip,
    a dotted line the chosen k, and panel (c) outlines the first flips' costs (far outliers counted, not drawn)."""
    sweep, summary = edit_sweep(), edit_summary()
    summary["first_k"] = np.where(summary.method == "coar", 1.0, np.nan)
    first = np.where(summary.flipped, summary.accuracy_change - 0.01, -0.03)
    first[summary.target == "1005"] = -0.60  # one first flip far off the axis
    summary["first_accuracy_change"] = np.where(summary.method == "coar", first, np.nan)
    summary.loc[summary.method == "random", "k"] = summary.loc[summary.method == "coar", "k"].to_numpy()
    fig = fig_edit_prediction(sweep, summary, "17", PROV, "Editing predictions (cf. paper Fig. 3)", "ResNet")
    ax_m, _, ax_h = visible_axes(fig)
    assert line(ax_m, "flip").get_xdata()[0] == 1  # first flip
    assert line(ax_m, "chosen_k").get_xdata()[0] == 2  # chosen on validation
    outline = [p for p in ax_h.patches if p.get_gid() == "first_flips"]
    assert len(outline) == 1 and outline[0].get_xy()[:, 0].min() > -13  # the -60 pp flip is not drawn
    note = axis_texts(ax_h)
    n_coar = int((summary.method == "coar").sum())
    assert "errors fixed within the validation limit" in note
    assert f"at any cost: {n_coar} flipped" in note and "(1 of them below" in note
    assert f"random components, same k: 2 of {n_coar} flipped" in note


def test_edit_prediction_rejects_bad_input():
    sweep, summary = edit_sweep(), edit_summary()
    args = (PROV, "Fig (cf. paper Fig. 3)", "t")
    with pytest.raises(CoarError, match="unknown target '999'"):
        fig_edit_prediction(sweep, summary, "999", *args)
    with pytest.raises(CoarError, match="mean_margin"):
        fig_edit_prediction(sweep.drop(columns="mean_margin"), summary, "17", *args)
    with pytest.raises(CoarError, match="flipped"):
        fig_edit_prediction(sweep, summary.drop(columns="flipped"), "17", *args)
    with pytest.raises(CoarError, match="'accuracy'.*not percent"):
        fig_edit_prediction(sweep.assign(accuracy=sweep.accuracy * 100), summary, "17", *args)
    with pytest.raises(CoarError, match="'method'.*'loo'"):
        fig_edit_prediction(sweep.assign(method="loo"), summary, "17", *args)
    with pytest.raises(CoarError, match="one experiment"):
        fig_edit_prediction(pd.concat([sweep, sweep]), summary, "17", *args)
    with pytest.raises(CoarError, match="'held-out' or 'reference'"):
        fig_edit_prediction(sweep[sweep.set == "target"], summary, "17", *args)


def test_edit_prediction_accepts_int_target_and_text_flags():
    summary = edit_summary()
    summary["flipped"] = summary["flipped"].map({True: "True", False: "False"})  # as read back from CSV
    fig = fig_edit_prediction(edit_sweep(), summary, 17, PROV, "F (cf. paper Fig. 3)", "t")
    assert "example 17" in visible_axes(fig)[0].get_title(loc="left")


# ------------------------------------------------------------------------------------------ Figs. 19-21

def test_edit_examples_one_row_per_target():
    sweep = edit_sweep()
    targets = ["3001", "17", "42"]
    fig = fig_edit_examples(sweep, targets, PROV, "Fixing errors (cf. paper Fig. 19)", "ResNet on CIFAR-10")
    assert PROV in footer_text(fig)
    axes = visible_axes(fig)
    assert len(axes) == 2 * len(targets)
    for r, t in enumerate(targets):
        ax_m, ax_a = axes[2 * r], axes[2 * r + 1]
        assert ax_m.get_title(loc="left") == f"example {t}"
        for method in ("coar", "random"):
            _, m = curve(sweep, t, method, "target", "mean_margin")
            np.testing.assert_allclose(line(ax_m, f"margin_{method}").get_ydata(), m)
            _, acc = curve(sweep, t, method, "held-out", "accuracy")
            np.testing.assert_allclose(line(ax_a, f"accuracy_{method}|held-out").get_ydata(), 100 * acc)
        assert line(ax_m, "flip").get_xdata()[0] == min(k for k in KS if k > 0 and curve(
            sweep, t, "coar", "target", "mean_margin")[1][KS.index(k)] > 0)


def test_edit_examples_mark_the_k_chosen_on_validation():
    sweep = edit_sweep()
    fig = fig_edit_examples(sweep, ["17", "42"], PROV, "Inducing errors (cf. paper Fig. 21)", "ResNet",
                            chosen={"17": 4.0, "42": np.nan})
    ax_m, ax_a, ax_m2, _ = visible_axes(fig)
    assert line(ax_m, "chosen_k").get_xdata()[0] == 4
    assert ax_a.get_title(loc="left").startswith("k chosen on validation: ")
    k, acc = curve(sweep, "17", "coar", "held-out", "accuracy")
    change = 100 * (acc[k == 4][0] - acc[0])
    assert "held-out " + f"{change:+.2f} pp at k = 4".replace("-", "\u2212") in ax_a.get_title(loc="left")
    assert visible_axes(fig)[3].get_title(loc="left").startswith("no k passes validation; ")
    assert not [ln for ln in ax_m2.get_lines() if ln.get_gid() == "chosen_k"]


def test_edit_examples_rejects_bad_input():
    sweep = edit_sweep()
    args = (PROV, "F (cf. paper Fig. 20)", "t")
    with pytest.raises(CoarError, match="at most 8"):
        fig_edit_examples(sweep, [str(i) for i in range(9)], *args)
    with pytest.raises(CoarError, match="unknown target 'nope'"):
        fig_edit_examples(sweep, ["17", "nope"], *args)
    with pytest.raises(CoarError, match="held-out"):
        fig_edit_examples(edit_sweep(sets=("reference",)), ["17"], *args)
    with pytest.raises(CoarError, match="'set'"):
        fig_edit_examples(sweep.drop(columns="set"), ["17"], *args)


# ------------------------------------------------------------------------------------------------ Fig. 22

def components_table(seed=0):
    rng = np.random.default_rng(seed)
    modules = {"layer4.1.conv2": 9, "conv1": 0, "layer1.0.conv1": 1, "layer3.0.conv2": 6, "layer4.0.conv1": 7}
    names = list(modules)
    rows = []
    for t in TARGETS:
        for rank in range(int(rng.integers(3, 9))):
            m = names[int(rng.integers(len(names)))]
            rows.append({"target": t, "rank": rank, "component": f"{m}[{rank}]", "module": m,
                         "module_index": modules[m]})
    return pd.DataFrame(rows)


def test_edit_layers_shares_and_order(tmp_path):
    comp = components_table()
    fig = fig_edit_layers(comp, PROV, "Which layers? (cf. paper Fig. 22)", "ResNet")
    assert PROV in footer_text(fig)
    (ax,) = visible_axes(fig)
    order = comp.drop_duplicates("module").sort_values("module_index")["module"].tolist()
    assert [t.get_text() for t in ax.get_yticklabels()] == order  # input side first ...
    bottom, top = ax.get_ylim()
    assert top < bottom  # ... and drawn at the top
    shares = comp["module"].value_counts(normalize=True).mul(100).reindex(order)
    widths = [p.get_width() for p in ax.patches if p.get_gid() == "share"]
    np.testing.assert_allclose(widths, shares.to_numpy())
    counts = comp["module"].value_counts().reindex(order)
    assert [t.get_text() for t in ax.texts if t.get_gid() == "count"] == [str(c) for c in counts]
    out = save_figure(fig, tmp_path / "fig22.pdf")
    assert out.read_bytes()[:5] == b"%PDF-"


def test_edit_layers_without_edits_says_so(tmp_path):
    """No target edited (empty components table, header only): a page with the reason, no bars, no error."""
    empty = components_table().iloc[:0]
    fig = fig_edit_layers(empty, PROV, "Which layers? (cf. paper Fig. 22)", "ResNet")
    assert PROV in footer_text(fig)
    texts = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "no_edit"]
    assert len(texts) == 1 and "no validated edit" in texts[0].get_text()
    assert not [p for ax in fig.axes for p in ax.patches if p.get_gid() == "share"]
    header_only = tmp_path / "components.csv"
    empty.to_csv(header_only, index=False)
    fig = fig_edit_layers(pd.read_csv(header_only, dtype={"target": str}), PROV, "F", "t")
    assert save_figure(fig, tmp_path / "fig22.pdf").read_bytes()[:5] == b"%PDF-"


def test_edit_layers_rejects_bad_input():
    comp = components_table()
    with pytest.raises(CoarError, match="module_index"):
        fig_edit_layers(comp.drop(columns="module_index"), PROV, "F", "t")
    bad = comp.copy()
    bad.loc[bad.index[0], "module_index"] = 99
    with pytest.raises(CoarError, match="differs within module"):
        fig_edit_layers(bad, PROV, "F", "t")


# ---------------------------------------------------------------------------------------------- Figs. 4, 23

FORGET_SETS = ("held-out: other classes", "held-out: forgotten class")


def forget_sweep(classes=("cat", "ship", "dog", "frog", "bird"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for c in classes:
        for method in ("coar", "random"):
            for k in KS:
                for s in FORGET_SETS:
                    acc = 0.8 - (0.07 * k if method == "coar" and "forgotten" in s else 0.002 * k)
                    rows.append({"experiment": "forget", "target": c, "method": method, "k": k, "set": s,
                                 "accuracy": acc + rng.normal(0, 0.005), "mean_margin": 1.0})
    return pd.DataFrame(rows)


def classwise_table(n=10, forgotten=3, seed=0):
    rng = np.random.default_rng(seed)
    before = rng.uniform(0.7, 0.95, n)
    after = before - rng.uniform(0, 0.02, n)
    after[forgotten] = 0.2
    return pd.DataFrame({"class": np.arange(n), "class_name": [f"class {i}" for i in range(n)], "before": before,
                         "after": after, "forgotten": np.arange(n) == forgotten})


def test_forget_class_lines_and_dumbbells(tmp_path):
    sweep, cw = forget_sweep(), classwise_table()
    fig = fig_forget_class(sweep, cw, "cat", 4, PROV, "Forgetting (cf. paper Fig. 4)", "ResNet")
    assert PROV in footer_text(fig)
    ax_k, ax_c = visible_axes(fig)
    for method in ("coar", "random"):
        for s in FORGET_SETS:
            k, acc = curve(sweep, "cat", method, s, "accuracy")
            ln = line(ax_k, f"accuracy_{method}|{s}")
            np.testing.assert_allclose(ln.get_xdata(), k)
            np.testing.assert_allclose(ln.get_ydata(), 100 * acc)
            assert (ln.get_linestyle() == "-") == (method == "coar")
    assert list(line(ax_k, "chosen_k").get_xdata()) == [4, 4]
    legend = [t.get_text() for t in ax_k.get_legend().get_texts()]
    assert "k chosen on validation" in legend
    f = cw["forgotten"].to_numpy()
    np.testing.assert_allclose(line(ax_c, "before_forgotten").get_xdata(), 100 * cw["before"][f])
    np.testing.assert_allclose(line(ax_c, "after_forgotten").get_xdata(), 100 * cw["after"][f])
    np.testing.assert_allclose(line(ax_c, "after_other").get_xdata(), 100 * cw["after"][~f])
    labels = ax_c.get_yticklabels()
    assert [t.get_text() for t in labels] == cw["class_name"].tolist()
    assert labels[3].get_fontweight() == "bold" and to_hex(labels[3].get_color()) == to_hex(METHOD_COLORS["coar"])
    assert save_figure(fig, tmp_path / "fig4.pdf").stat().st_size > 1000


def shifted_table():
    rows = []
    for shift, base in (("ImageNet-Sketch", 0.6), ("in the water", 0.5)):
        for part, after in (("forgotten class", 0.1), ("other classes", base - 0.01)):
            for method, acc in (("unedited", base), ("coar", after), ("random", base - 0.02)):
                rows.append({"shift": shift, "method": method, "part": part, "k": 0 if method == "unedited" else 4,
                             "n": 50, "accuracy": acc})
    return pd.DataFrame(rows)


def test_forget_class_shift_panel_shows_before_and_after_per_set(tmp_path):
    shifted = shifted_table()
    fig = fig_forget_class(forget_sweep(), classwise_table(), "cat", 4, PROV, "F (cf. paper Fig. 4)", "t",
                           shifted=shifted)
    axes = visible_axes(fig)
    assert len(axes) == 3
    ax_s = next(ax for ax in axes if "shifted" in ax.get_title(loc="left"))
    labels = [t.get_text() for t in ax_s.get_yticklabels()]
    assert labels == ["ImageNet-Sketch: forgotten", "ImageNet-Sketch: others", "in the water: forgotten",
                      "in the water: others"]
    before = [ln.get_xdata()[0] for ln in ax_s.get_lines() if ln.get_gid() == "before"]
    coar = [ln.get_xdata()[0] for ln in ax_s.get_lines() if ln.get_gid() == "after_coar"]
    assert before == pytest.approx([60, 60, 50, 50]) and coar == pytest.approx([10, 59, 10, 49])
    assert save_figure(fig, tmp_path / "fig4.pdf").stat().st_size > 1000
    with pytest.raises(CoarError, match="lacks the method"):
        fig_forget_class(forget_sweep(), classwise_table(), "cat", 4, PROV, "F", "t",
                         shifted=shifted[shifted.method != "unedited"])
    # an empty table (no shifts configured) keeps the two-panel figure
    fig = fig_forget_class(forget_sweep(), classwise_table(), "cat", 4, PROV, "F", "t", shifted=shifted.iloc[:0])
    assert len(visible_axes(fig)) == 2


def test_forget_class_many_classes_scatter():
    cw = classwise_table(n=100, forgotten=17)
    fig = fig_forget_class(forget_sweep(), cw, "cat", 2, PROV, "F (cf. paper Fig. 4)", "t")
    ax_c = visible_axes(fig)[1]
    ln = line(ax_c, "after_forgotten")
    assert ln.get_xdata()[0] == pytest.approx(100 * cw["before"][17])
    assert ln.get_ydata()[0] == pytest.approx(100 * cw["after"][17])


def test_forget_class_rejects_bad_input():
    sweep, cw = forget_sweep(), classwise_table()
    args = (PROV, "F", "t")
    with pytest.raises(CoarError, match="class_name"):
        fig_forget_class(sweep, cw.drop(columns="class_name"), "cat", 4, *args)
    with pytest.raises(CoarError, match="unknown target 'horse'"):
        fig_forget_class(sweep, cw, "horse", 4, *args)
    with pytest.raises(CoarError, match="chosen_k"):
        fig_forget_class(sweep, cw, "cat", -1, *args)
    with pytest.raises(CoarError, match="'after'"):
        fig_forget_class(sweep, cw.assign(after=cw.after * 100), "cat", 4, *args)
    with pytest.raises(CoarError, match="'forgotten'"):
        fig_forget_class(sweep, cw.assign(forgotten="maybe"), "cat", 4, *args)


def test_forget_classes_one_panel_per_target():
    sweep = forget_sweep()
    chosen = {"cat": 4, "ship": 2, "dog": 8, "frog": 1, "bird": 4}
    fig = fig_forget_classes(sweep, chosen, PROV, "Forgetting classes (cf. paper Fig. 23)", "ResNet")
    assert PROV in footer_text(fig)
    axes = visible_axes(fig)
    targets = list(dict.fromkeys(sweep["target"]))
    assert len(axes) == len(targets)
    ncols = {ax.get_subplotspec().get_gridspec().ncols for ax in axes}
    assert max(ncols) <= 4
    for ax, t in zip(axes, targets):
        assert ax.get_title(loc="left").startswith(t)
        assert list(line(ax, "chosen_k").get_xdata()) == [chosen[t]] * 2
        _, acc = curve(sweep, t, "coar", "held-out: forgotten class", "accuracy")
        np.testing.assert_allclose(line(ax, "accuracy_coar|held-out: forgotten class").get_ydata(), 100 * acc)
    with pytest.raises(CoarError, match=r"no entry for target\(s\) \['frog'\]"):
        fig_forget_classes(sweep, {k: v for k, v in chosen.items() if k != "frog"}, PROV, "F", "t")
