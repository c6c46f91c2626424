"""COAR-EDIT experiments (Sec. 5.1-5.4) on a model whose attributions are known exactly: a one-hidden-layer
MLP with two classes, whose correct-class margin is exactly linear in the hidden-neuron keep mask (weight
zeroing leaves relu(bias) in place of an ablated neuron)."""
import numpy as np
import pytest
import torch

from coar.attributions import Attributions
from coar.components import component_set
from coar.paper.experiments import (draw_references, draw_targets, edit_backdoor, edit_single_examples,
                                   edit_subpopulation, forget_class, pick_targets, sweep_margins)
from coar.editing import edit_scores, ranking
from coar.errors import CoarError
from coar.paper.models.cifar import MLP


@pytest.fixture(scope="module")
def exact():
    torch.manual_seed(0)
    model = MLP(in_features=12, hidden=48, num_classes=2).eval()
    with torch.no_grad():
        model.fc1.bias.uniform_(-0.3, 0.3)
    cset = component_set(model, "mlp")
    x = torch.randn(600, 12)
    with torch.no_grad():
        pred = model(x).argmax(1)
    flip = torch.from_numpy(np.random.default_rng(1).random(600) < 0.2)
    y = torch.where(flip, 1 - pred, pred)  # 20% label noise: the model "errs" on those
    w, b = _exact_attributions(model, x, y)
    attr = Attributions(w[:200], b[:200], "exact", cset.fingerprint())
    return model, cset, attr, x, y, w, b


def _exact_attributions(model, x, y):
    """Weights [N, H] and biases [N] with margin(keep) = w @ keep + b exactly, for the two-class MLP."""
    with torch.no_grad():
        hz = torch.relu(model.fc1(x))
        hb = torch.relu(model.fc1.bias)[None]
        d = model.fc2.weight[y] - model.fc2.weight[1 - y]  # [N, H]
        w = (d * (hz - hb)).numpy()
        b = ((d * hb).sum(1) + model.fc2.bias[y] - model.fc2.bias[1 - y]).numpy()
    return w, b


def test_single_example_edits_fix_errors_exactly_as_predicted(exact):
    model, cset, attr, x, y, w, b = exact
    margins = w[:200].sum(1) + b[:200]
    errors = np.nonzero(margins < 0)[0][:12]
    assert len(errors) >= 8
    ks = [0, 1, 2, 4, 8, 16]
    validation, heldout = (x[200:400], y[200:400]), (x[400:], y[400:])
    sweep, summary, comps = edit_single_examples(model, cset, attr, x[:200], y[:200], errors, validation, heldout,
                                                 ks, "increase", n_references=50, max_drop=1.0, seed=3,
                                                 progress=False)
    coar = summary[summary.method == "coar"].set_index("target")
    rand = summary[summary.method == "random"].set_index("target")
    assert coar.flipped.mean() >= 0.9 and coar.flipped.sum() > rand.flipped.sum()
    # without a limit on the validation drop, the chosen k is the first that flips the target
    assert (coar.k.dropna() == coar.first_k.dropna()).all()
    # the random control ablates COAR-EDIT's k; its own first flip is reported beside it
    assert (rand.k.fillna(-1) == coar.k.fillna(-1)).all()
    assert (rand.first_k.dropna() >= 1).all()
    # the swept target margin is the linear prediction of the ablated set, and rises with k
    for t in errors[:3]:
        s = sweep[(sweep.target == str(t)) & (sweep.method == "coar") & (sweep.set == "target")].sort_values("k")
        first = comps[comps.target == str(t)].sort_values("rank")
        k = int(coar.loc[str(t), "k"])
        assert len(first) == k and list(first["rank"]) == list(range(1, k + 1))
        ablated = [int(c.split("[")[1][:-1]) for c in first.component]
        keep = np.ones(cset.size, bool)
        keep[ablated] = False
        got = float(s[s.k == k].mean_margin.iloc[0])
        assert got == pytest.approx(float(w[t] @ keep + b[t]), rel=1e-4, abs=1e-4)
        assert got > 0 and (np.diff(s.mean_margin.to_numpy()) > -1e-6).all()
        # the summary's changes are those of the sweep's validation and held-out rows at k
        acc = sweep[(sweep.target == str(t)) & (sweep.method == "coar")].set_index(["set", "k"]).accuracy
        assert coar.loc[str(t), "accuracy_change"] == pytest.approx(acc["held-out", k] - acc["held-out", 0])
        assert coar.loc[str(t), "validation_accuracy_change"] == pytest.approx(acc["validation", k] - acc["validation", 0])
    # k = 0 is the unedited model: the same for both methods; accuracy change is measured from it
    k0 = sweep[sweep.k == 0].groupby(["target", "set"]).accuracy.nunique()
    assert (k0 == 1).all()
    assert set(sweep.set) == {"target", "reference", "validation", "held-out"}
    # the held-out change splits into the target's class and the others, weighted by their sizes
    held_y = heldout[1].numpy()
    rows = summary[summary.k.notna()]
    assert len(rows) and set(rows.method) == {"coar", "random"}
    for row in rows.itertuples():
        n_same = int((held_y == int(y[int(row.target)])).sum())
        total = n_same * row.class_accuracy_change + (len(held_y) - n_same) * row.others_accuracy_change
        assert total == pytest.approx(len(held_y) * row.accuracy_change, abs=1e-9)
    # the random control at COAR-EDIT's k misses some targets: still scored (same k), but not flipped
    missed = summary[(summary.method == "random") & summary.k.notna() & ~summary.flipped]
    assert len(missed) and missed.accuracy_change.notna().all()


def test_single_example_edits_choose_k_within_the_validation_drop(exact):
    """max_drop bounds the validation accuracy drop at the chosen k; a target that flips only at a larger cost
    is reported as not edited (k NaN), and its first flip is still reported."""
    model, cset, attr, x, y, w, b = exact
    errors = np.nonzero(w[:200].sum(1) + b[:200] < 0)[0][:12]
    validation, heldout = (x[200:400], y[200:400]), (x[400:], y[400:])
    ks = [0, 1, 2, 4, 8, 16, 32]
    sweep, free, _ = edit_single_examples(model, cset, attr, x[:200], y[:200], errors, validation, heldout, ks,
                                          max_drop=1.0, seed=3, progress=False)
    drops = -free[free.method == "coar"].validation_accuracy_change
    limit = float(np.sort(drops.dropna().unique())[len(drops.dropna().unique()) // 2])  # between the edits' costs
    _, tight, comps = edit_single_examples(model, cset, attr, x[:200], y[:200], errors, validation, heldout, ks,
                                           max_drop=limit, seed=3, progress=False)
    c = tight[tight.method == "coar"].set_index("target")
    assert (-c.validation_accuracy_change.dropna() <= limit + 1e-12).all()
    assert c.k.isna().any() and c.k.notna().any()
    # each chosen k is the smallest swept k that flips the target within the limit, from the sweep itself
    for t, row in c.iterrows():
        d = sweep[(sweep.target == t) & (sweep.method == "coar")].set_index(["set", "k"])
        ok = [k for k in ks[1:] if d.mean_margin["target", k] > 0
              and d.accuracy["validation", 0] - d.accuracy["validation", k] <= limit + 1e-12]
        assert (row.k == ok[0]) if ok else np.isnan(row.k)
        assert row.first_k == free.set_index(["target", "method"]).first_k[t, "coar"]
    assert set(comps.target) == set(c.index[c.k.notna()])
    with pytest.raises(CoarError, match="max_drop"):
        edit_single_examples(model, cset, attr, x[:200], y[:200], errors, validation, heldout, ks, max_drop=2.0,
                             progress=False)


def test_inducing_errors_uses_top_k(exact):
    model, cset, attr, x, y, w, b = exact
    right = np.nonzero(w[:200].sum(1) + b[:200] > 0)[0][:6]
    _, summary, _ = edit_single_examples(model, cset, attr, x[:200], y[:200], right, (x[200:400], y[200:400]),
                                         (x[400:], y[400:]), [0, 2, 4, 8, 16, 32], "decrease", max_drop=1.0, seed=1,
                                         experiment="induce", progress=False)
    assert summary[summary.method == "coar"].flipped.mean() >= 0.8


def test_forget_class_picks_k_on_validation_within_the_drop(exact):
    model, cset, attr, x, y, w, b = exact
    val, held = (x[200:400], y[200:400]), (x[400:], y[400:])
    noisy = (x[400:] + 0.5 * torch.randn(x[400:].shape, generator=torch.Generator().manual_seed(0)), y[400:])
    sweep, classwise, k, shifted = forget_class(model, cset, attr, y[:200].numpy(), 0, val, held,
                                                [0, 1, 2, 4, 8, 16], n_targets=10, n_references=50, max_drop=0.05,
                                                seed=0, class_names=["zero", "one"],
                                                shifted={"same": held, "noisy": noisy})
    # a "shift" identical to the held-out set scores exactly as the sweep's held-out sets do, at k = 0 and k
    sh = shifted.set_index(["shift", "method", "part"])
    acc = sweep.set_index(["method", "set", "k"]).accuracy
    for part, name in (("forgotten class", "held-out: forgotten class"), ("other classes", "held-out: other classes")):
        assert sh.loc[("same", "unedited", part), "accuracy"] == pytest.approx(acc[("coar", name, 0)])
        for method in ("coar", "random"):
            assert sh.loc[("same", method, part), "k"] == k
            assert sh.loc[("same", method, part), "accuracy"] == pytest.approx(acc[(method, name, k)])
    assert sh.loc[("noisy", "unedited", "forgotten class"), "n"] == int((y[400:] == 0).sum())
    assert sh.loc[("noisy", "coar", "forgotten class"), "accuracy"] < sh.loc[("noisy", "unedited", "forgotten class"),
                                                                              "accuracy"]
    coar = sweep[sweep.method == "coar"].set_index(["set", "k"]).accuracy
    drop = coar[("validation: other classes", 0)] - coar[("validation: other classes", k)]
    assert drop <= 0.05 + 1e-12
    assert k > 0 and coar[("validation: forgotten class", k)] < coar[("validation: forgotten class", 0)]
    row = classwise.set_index("class_name")
    assert row.loc["zero", "forgotten"] and row.loc["zero", "after"] < row.loc["zero", "before"]
    yb = y[400:].numpy()
    with torch.no_grad():
        acc0 = (model(x[400:]).argmax(1).numpy() == yb)[yb == 1].mean()
    assert row.loc["one", "before"] == pytest.approx(acc0)
    with pytest.raises(CoarError, match="must start at 0"):
        forget_class(model, cset, attr, y[:200].numpy(), 0, val, held, [1, 2])
    only_one = y[400:] == 1
    with pytest.raises(CoarError, match="only1 set needs examples of class 0"):
        forget_class(model, cset, attr, y[:200].numpy(), 0, val, held, [0, 1], shifted={
            "only1": (x[400:][only_one], y[400:][only_one])})


def test_subpopulation_edit_chooses_k_by_validation_worst_group(exact):
    model, cset, attr, x, y, w, b = exact
    rng = np.random.default_rng(7)
    g_all = 2 * y.numpy() + (rng.random(600) < 0.5)  # label x an arbitrary cue: four groups
    val = (x[200:400], y[200:400], g_all[200:400])
    held = (x[400:], y[400:], g_all[400:])
    ks = [0, 1, 2, 4, 8, 16]
    sweep, summary, comps, k = edit_subpopulation(model, cset, attr, g_all[:200], val, held, ks, n_targets=8,
                                                  n_references=8, seed=0, group_names=["a", "b", "c", "d"])
    coar = sweep[sweep.method == "coar"].set_index(["set", "k"]).accuracy
    best = max(coar[("validation: worst group", kk)] for kk in ks)
    assert coar[("validation: worst group", k)] == best
    assert k == min(kk for kk in ks if coar[("validation: worst group", kk)] == best)
    # k = 0: the unedited model's per-group accuracy, the same for both methods
    yv = held[1].numpy()
    with torch.no_grad():
        right = model(held[0]).argmax(1).numpy() == yv
    per_group = [right[held[2] == gg].mean() for gg in range(4)]
    assert coar[("held-out: worst group", 0)] == pytest.approx(min(per_group))
    assert coar[("held-out: average group", 0)] == pytest.approx(np.mean(per_group))
    assert coar[("held-out: overall", 0)] == pytest.approx(right.mean())
    row = summary[(summary.method == "coar") & (summary.split == "held-out") & summary.chosen]
    assert len(row) == 1 and int(row.k.iloc[0]) == k and len(comps) == k


def test_backdoor_edit_finds_the_trigger_neurons_and_picks_k_on_validation():
    """A planted backdoor: hidden neurons 0-2 fire only when feature 0 carries the trigger value and push
    towards class 0; every other neuron ignores feature 0. COAR-EDIT on exact attributions of 10 pairs must
    ablate exactly those neurons first, restore triggered accuracy, and keep clean accuracy."""
    torch.manual_seed(0)
    model = MLP(in_features=12, hidden=40, num_classes=2).eval()
    with torch.no_grad():
        model.fc1.weight[:, 0] = 0.0
        model.fc1.weight[:3] = 0.0
        model.fc1.weight[:3, 0] = 3.0
        model.fc1.bias[:3] = -6.0  # silent on clean inputs (|x0| < 2), 6 on the trigger x0 = 4
        model.fc2.weight[:, :3] = torch.tensor([[2.0], [-2.0]])
    cset = component_set(model, "mlp")

    def data(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 12, generator=g).clamp(-1.9, 1.9)
        with torch.no_grad():
            y = model(x).argmax(1)  # clean labels: the model is right on every clean input
        xt = x.clone()
        xt[:, 0] = 4.0
        return x, xt, y

    xc, xt, y = data(400, 1)
    other = (y == 1).nonzero()[:, 0][:40]  # pairs from the class the trigger does not stand for
    ex_x, ex_y = torch.cat([xc[other], xt[other]]), torch.cat([y[other], y[other]])
    w, b = _exact_attributions(model, ex_x, ex_y)
    attr = Attributions(w, b, "exact", cset.fingerprint())
    pairs = np.stack([np.arange(40), np.arange(40) + 40], 1)
    val, held = data(300, 2), data(300, 3)
    with torch.no_grad():
        before = (model(held[1]).argmax(1) == held[2]).float().mean().item()
    assert before < 0.75  # the trigger does flip class-1 inputs
    ks = [0, 1, 2, 3, 4, 6, 10]
    real = data(50, 4)  # an extra held-out set (the typographic edit's real attacks), scored at every k
    sweep, summary, comps, outputs, k = edit_backdoor(model, cset, attr, pairs, val, held, ks, n_pairs=10,
                                                      max_drop=0.02, seed=0, extra={"real attacks": real[1:]})
    ablated = comps[comps.ablated]
    assert k == 3 and set(ablated.component) == set(cset.labels()[:3])  # exactly the three detectors
    assert len(comps) == max(ks) and list(comps["rank"]) == list(range(1, max(ks) + 1))
    coar = sweep[sweep.method == "coar"].set_index(["set", "k"]).accuracy
    ok = [kk for kk in ks if coar[("validation: clean", 0)] - coar[("validation: clean", kk)] <= 0.02]
    best = max(coar[("validation: triggered", kk)] for kk in ok)
    assert k in ok and coar[("validation: triggered", k)] == best
    assert k == min(kk for kk in ok if coar[("validation: triggered", kk)] == best)
    row = summary.set_index("method")
    assert row.loc["coar", "triggered_before"] == pytest.approx(before)
    assert row.loc["coar", "triggered_after"] == 1.0 and row.loc["coar", "recovered"] == 1.0
    assert row.loc["coar", "clean_after"] == 1.0 and row.loc["random", "k"] == k
    extra = coar.loc["held-out: real attacks"]
    assert row.loc["coar", "real_attacks_before"] == extra[0] < 1.0 and row.loc["coar", "real_attacks_after"] == extra[k] == 1.0
    assert row.loc["coar", "correlation_before"] == pytest.approx(
        np.corrcoef(outputs.clean_before, outputs.triggered_before)[0, 1])
    # once the three detectors are ablated, the trigger changes nothing: outputs with and without it agree
    assert row.loc["coar", "correlation_after"] == pytest.approx(1.0)
    assert np.allclose(outputs.clean_after, outputs.triggered_after, atol=1e-5)
    with pytest.raises(CoarError, match="10 pairs asked for"):
        edit_backdoor(model, cset, attr, pairs[:5], val, held, ks)


def test_pick_targets_takes_the_errors_or_the_correct_examples():
    margins = np.array([0.5, -1.0, 2.0, -0.1, 0.0, -3.0, 1.0, -2.0])
    assert list(pick_targets(margins, "fix")) == [1, 3, 5, 7]  # a margin of exactly 0 is neither
    assert list(pick_targets(margins, "induce")) == [0, 2, 6]
    some = pick_targets(margins, "fix", n=2, seed=4)
    assert len(some) == 2 and set(some) <= {1, 3, 5, 7} and list(some) == sorted(some)
    assert list(pick_targets(margins, "fix", n=2, seed=4)) == list(some)  # seeded
    draws = {tuple(pick_targets(margins, "fix", n=2, seed=s)) for s in range(20)}
    assert len(draws) > 1  # the seed matters
    assert list(pick_targets(margins, "induce", n=3)) == [0, 2, 6]  # n >= the count: all of them
    with pytest.raises(CoarError, match="edits.fix_X: the model has no misclassified example among the setup's 2"):
        pick_targets(np.array([1.0, 2.0]), "fix", what="edits.fix_X")
    with pytest.raises(CoarError, match="kind must be fix or induce"):
        pick_targets(margins, "forget")


def test_single_example_references_exclude_the_target_and_are_what_the_edit_uses(exact):
    model, cset, attr, x, y, w, b = exact
    for t in (0, 57, 199):
        refs = draw_references(np.random.default_rng([3, t]), 200, t, 50)
        assert len(refs) == 50 == len(set(refs)) and t not in refs and refs.min() >= 0 and refs.max() < 200
    assert sorted(draw_references(np.random.default_rng(0), 5, 2, 50)) == [0, 1, 3, 4]  # fewer others: all
    # the sweep's reference set is exactly those examples: its unedited accuracy and mean margin match them
    t = int(np.nonzero(w[:200].sum(1) + b[:200] < 0)[0][0])
    sweep, _, _ = edit_single_examples(model, cset, attr, x[:200], y[:200], [t], (x[200:400], y[200:400]),
                                       (x[400:], y[400:]), [0, 1], seed=3, progress=False)
    refs = draw_references(np.random.default_rng([3, t]), 200, t, 50)
    m = w[refs].sum(1) + b[refs]
    row = sweep[(sweep.method == "coar") & (sweep.set == "reference") & (sweep.k == 0)].iloc[0]
    assert row.accuracy == pytest.approx((m > 0).mean()) and row.mean_margin == pytest.approx(m.mean(), rel=1e-5)


def _record_draws(monkeypatch):
    import coar.paper.experiments as ee
    calls = []

    def recording(*args, **kwargs):
        out = draw_targets(*args, **kwargs)
        calls.append((np.asarray(args[1], bool), *out))
        return out
    monkeypatch.setattr(ee, "draw_targets", recording)
    return calls


def test_forget_targets_are_the_class_and_references_the_others(exact, monkeypatch):
    model, cset, attr, x, y, w, b = exact
    calls = _record_draws(monkeypatch)
    ks = [0, 1, 2, 4]
    val, held = (x[200:400], y[200:400]), (x[400:], y[400:])
    sweep, _, _, _ = forget_class(model, cset, attr, y[:200].numpy(), 1, val, held, ks, n_targets=10,
                                  n_references=50, seed=2)
    (members, targets, refs), = calls
    ya = y[:200].numpy()
    assert (members == (ya == 1)).all()
    assert len(set(targets)) == 10 and (ya[targets] == 1).all()
    assert len(set(refs)) == 50 and (ya[refs] != 1).all()
    # the edit is eq. 8's top-k for exactly these targets and references: re-sweeping that ranking gives the sweep
    order = ranking(edit_scores(attr, targets, refs), "decrease")
    inside = (held[1] == 1).numpy()
    again = sweep_margins(model, cset, order, ks, {"held-out: forgotten class": (held[0][inside], held[1][inside])})
    got = sweep[(sweep.method == "coar") & (sweep.set == "held-out: forgotten class")].sort_values("k").accuracy
    assert np.allclose(got.to_numpy(), (again["held-out: forgotten class"] > 0).mean(1))
    with pytest.raises(CoarError, match="class 1: .* attribution examples, 500 targets asked for"):
        forget_class(model, cset, attr, ya, 1, val, held, ks, n_targets=500)


def test_subpopulation_targets_are_the_worst_validation_group(exact, monkeypatch):
    model, cset, attr, x, y, w, b = exact
    g_all = 2 * y.numpy() + (np.random.default_rng(7).random(600) < 0.5)
    calls = _record_draws(monkeypatch)
    val = (x[200:400], y[200:400], g_all[200:400])
    _, summary, _, _ = edit_subpopulation(model, cset, attr, g_all[:200], val, (x[400:], y[400:], g_all[400:]),
                                          [0, 1, 2], n_targets=8, n_references=8, seed=0)
    with torch.no_grad():
        right = model(val[0]).argmax(1).numpy() == val[1].numpy()
    worst = int(np.argmin([right[val[2] == gg].mean() for gg in range(4)]))
    (members, targets, refs), = calls
    assert (members == (g_all[:200] == worst)).all()
    assert len(set(targets)) == 8 and (g_all[targets] == worst).all()
    assert len(set(refs)) == 8 and (g_all[refs] != worst).all()
    assert set(summary.target_group) == {f"group {worst}"}
    # the paper's few labelled examples per group: asking for more references than there are is an error, not a
    # quietly smaller reference set (forget_class, without the flag, takes all of them instead)
    outside = int((g_all[:200] != worst).sum())
    with pytest.raises(CoarError, match=f"group {worst}: {outside} attribution examples outside it, 500 references"):
        edit_subpopulation(model, cset, attr, g_all[:200], val, (x[400:], y[400:], g_all[400:]), [0, 1],
                           n_targets=8, n_references=500, seed=0)
    assert draw_targets(np.random.default_rng(0), g_all[:200] == worst, 8, 500, "g")[1].size == outside
