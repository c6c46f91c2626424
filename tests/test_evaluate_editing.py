"""Evaluation metric (eq. 6) and COAR-EDIT primitives (eq. 8-9)."""
import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from coar.ablation import ablation_hooks
from coar.attributions import Attributions
from coar.components import Rule, component_set
from coar.editing import (apply_edit, choose_k, edit_scores, keep_mask, random_components, ranking,
                          select_components, sweep_outputs, sweep_table, t_statistic)
from coar.errors import CoarError, ShapeError
from coar.correlation import correlations, pearson_columns, summarize
from coar.paper.models import build_model
from coar.outputs import class_logit, get_output_fn, margin, token_margin


def test_pearson_columns_matches_numpy_and_flags_constant():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    b[:, 1] = 3 * a[:, 1] + 1
    b[:, 3] = 2.0
    r = pearson_columns(a, b)
    for j in range(3):
        assert r[j] == pytest.approx(np.corrcoef(a[:, j], b[:, j])[0, 1], abs=1e-12)
    assert r[1] == pytest.approx(1.0) and np.isnan(r[3])
    with pytest.raises(ShapeError):
        pearson_columns(a, b[:, :2])


def test_correlations_table_and_summary_count_undefined_as_zero():
    rng = np.random.default_rng(1)
    keep = rng.random((200, 6)) > 0.2
    w = rng.normal(size=(3, 6))
    y = keep @ w.T + 0.5
    good = Attributions(w, np.zeros(3), "coar", "fp")
    zero = Attributions(np.zeros((3, 6)), np.zeros(3), "nc", "fp")
    table = correlations({"coar": good, "nc": zero}, keep, y, alpha_test=0.2)
    assert set(table.columns) >= {"method", "alpha_test", "example", "correlation"} and len(table) == 6
    s = summarize(table).set_index("method")
    assert s.loc["coar", "mean_correlation"] == pytest.approx(1.0, abs=1e-6)
    assert s.loc["nc", "mean_correlation"] == 0.0 and s.loc["nc", "undefined"] == 3


def test_t_statistic_matches_scipy_welch_with_population_variance():
    rng = np.random.default_rng(2)
    T, R = rng.normal(1, 2, size=(12, 30)), rng.normal(0, 1, size=(40, 30))
    ours = t_statistic(T, R)
    ref = scipy.stats.ttest_ind_from_stats(T.mean(0), T.std(0), len(T), R.mean(0), R.std(0), len(R),
                                           equal_var=False).statistic
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    sample = scipy.stats.ttest_ind(T, R, equal_var=False).statistic  # ddof=1 option equals scipy's default
    np.testing.assert_allclose(t_statistic(T, R, ddof=1), sample, rtol=1e-12)


def test_single_target_and_degenerate_scores():
    tgt = np.array([[1.0, -1.0, 0.0]])
    ref = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    tau = t_statistic(tgt, ref)
    assert tau[0] == np.inf and tau[1] == -np.inf and tau[2] == 0.0
    ref2 = np.array([[0.0, 1.0, 0.0], [2.0, -1.0, 0.0]])
    assert t_statistic(tgt, ref2)[0] == pytest.approx((1 - 1) / 1.0)
    with pytest.raises(CoarError):
        t_statistic(tgt, ref, ddof=1)


def test_ranking_directions():
    s = np.array([0.5, -3.0, 2.0, -1.0, 0.0])
    assert list(select_components(s, 2, "increase")) == [1, 3]  # bottom-k
    assert list(select_components(s, 2, "decrease")) == [2, 0]  # top-k
    assert list(ranking(s, "increase")) == [1, 3, 4, 0, 2]
    with pytest.raises(CoarError):
        select_components(s, 9, "increase")
    with pytest.raises(CoarError):
        ranking(s, "sideways")
    r = random_components(100, 10, seed=3)
    assert len(set(r)) == 10 and r.max() < 100


def test_edit_raises_target_output_on_linear_model():
    """Exact attributions of a linear model: ablating bottom-k raises the target's output by the sum of
    the ablated weights, while references move less."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 1)).eval()
    cset = component_set(model, [Rule("0", ("Linear",))])
    x = torch.randn(20, 8)
    with torch.no_grad():
        h = model[0](x) - model[0].bias  # contribution of each hidden unit's weight row
        w = (h * model[1].weight[0]).numpy()  # exact coefficient on "kept" for each example / component
    attr = Attributions(w, np.zeros(20), "exact", cset.fingerprint())
    scores = edit_scores(attr, [0], list(range(1, 20)))
    chosen = select_components(scores, 3, "increase")
    edited = apply_edit(model, cset, chosen)
    with torch.no_grad():
        delta = (edited(x) - model(x))[:, 0].numpy()
    np.testing.assert_allclose(delta, -w[:, chosen].sum(1), rtol=1e-4, atol=1e-5)
    assert delta[0] > 0 and delta[0] > np.median(delta[1:])


def test_permanent_edit_equals_hook_ablation_and_sweep():
    torch.manual_seed(5)
    model = build_model("resnet_tiny", in_channels=1, image_size=28)
    cset = component_set(model, "resnet_tiny")
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    ablate = [3, 17, 60]
    edited = apply_edit(model, cset, ablate)
    with torch.no_grad(), ablation_hooks(model, cset, keep_mask(cset.size, ablate)[None]):
        hooked = model(x)
    with torch.no_grad():
        torch.testing.assert_close(edited(x), hooked, rtol=1e-5, atol=1e-5)
        order = np.array(ablate + [i for i in range(cset.size) if i not in ablate])
        sweep = sweep_outputs(model, cset, order, [0, 3], x, y, margin)
        np.testing.assert_allclose(sweep[0], margin(model(x), y).numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sweep[1], margin(edited(x), y).numpy(), rtol=1e-5, atol=1e-5)


def test_choose_k_respects_reference_drop():
    table = pd.DataFrame([
        {"split": "t", "k": 0, "accuracy": 0.0}, {"split": "r", "k": 0, "accuracy": 0.90},
        {"split": "t", "k": 5, "accuracy": 0.6}, {"split": "r", "k": 5, "accuracy": 0.89},
        {"split": "t", "k": 10, "accuracy": 0.9}, {"split": "r", "k": 10, "accuracy": 0.80},
    ])
    assert choose_k(table, "t", "r", max_drop=0.02) == 5
    assert choose_k(table, "t", "r", max_drop=0.2) == 10
    # a drop of exactly max_drop is within it, though 0.9145 - 0.9045 > 0.01 in floating point
    exact = pd.DataFrame([{"split": "t", "k": 0, "accuracy": 0.61}, {"split": "r", "k": 0, "accuracy": 1829 / 2000},
                          {"split": "t", "k": 1, "accuracy": 0.75}, {"split": "r", "k": 1, "accuracy": 1809 / 2000}])
    assert 1829 / 2000 - 1809 / 2000 > 0.01
    assert choose_k(exact, "t", "r", max_drop=0.01) == 1
    assert choose_k(exact, "t", "r", max_drop=0.0095) == 0
    tab = sweep_table({"a": np.array([[1.0, -1.0], [1.0, 1.0]])}, [0, 4])
    assert list(tab.accuracy) == [0.5, 1.0]


def test_output_functions():
    logits = torch.tensor([[2.0, 5.0, 1.0], [0.0, -1.0, 3.0]])
    y = torch.tensor([1, 0])
    assert margin(logits, y).tolist() == [3.0, -3.0]
    assert class_logit(2)(logits, y).tolist() == [1.0, 3.0]
    assert get_output_fn("logit:1")(logits, y).tolist() == [5.0, -1.0]
    with pytest.raises(CoarError):
        get_output_fn("margins")
    # token margin: position t scored on label t+1; ignored labels (<0) excluded from the mean
    lg = torch.zeros(1, 3, 4)
    lg[0, 0, 2], lg[0, 1, 3] = 2.0, 1.0
    lab = torch.tensor([[0, 2, 3]])
    assert token_margin(lg, lab).item() == pytest.approx((2.0 + 1.0) / 2)
    assert token_margin(lg, torch.tensor([[0, 2, -100]])).item() == pytest.approx(2.0)
