"""End to end through the real pipeline (hooked counterfactuals -> shard store -> streaming regression ->
evaluation) on a network whose counterfactuals are exactly linear in the keep-mask: COAR must be exact."""
import numpy as np
import torch
from torch import nn

from coar import regression
from coar.engine import counterfactual_outputs
from coar.components import Rule, component_set, model_fingerprint
from coar.correlation import pearson_columns
from coar.outputs import class_logit
from coar.sampling import sample_masks
from coar.store import ShardStore, load_shards, run_shard


def test_linear_network_gives_correlation_one(tmp_path):
    torch.manual_seed(0)
    # purely linear: the logit is b + sum_j keep_j * (contribution of row j), affine in the keep-mask
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 30), nn.Linear(30, 20), nn.Linear(20, 3)).eval()
    cset = component_set(model, [Rule("1", ("Linear",))])  # components: the 30 rows of the first layer
    x, y = torch.randn(25, 12), torch.zeros(25, dtype=torch.long)
    fn = class_logit(2)
    stores = []
    for shard in range(2):
        meta = {"model_fingerprint": model_fingerprint(model), "components_fingerprint": cset.fingerprint(),
                "examples_fingerprint": "x", "n_components": cset.size, "n_examples": 25, "m": 60, "alpha": 0.2,
                "seed": 0, "shard": shard, "output_fn": "logit:2", "dtype": "float32"}
        store = ShardStore.create_or_open(tmp_path / f"s{shard}", meta)
        run_shard(store, lambda k: counterfactual_outputs(model, cset, x, y, k, fn, masks_per_pass=7),
                  masks_per_call=14, progress=False)
        stores.append(tmp_path / f"s{shard}")
    acc = regression.GramAccumulator(cset.size, 25)
    for keep, out in load_shards(stores):
        acc.add(keep, out)
    attr = regression.fit_ols(acc, components=cset.fingerprint())
    # fresh masks at alpha_train: exact values
    keep_t = sample_masks(cset.size, 80, 0.2, seed=9)
    truth = counterfactual_outputs(model, cset, x, y, keep_t, fn)
    np.testing.assert_allclose(attr.predict(keep_t), truth, rtol=1e-4, atol=1e-4)
    # another alpha: exact-alpha training masks cannot identify the split between bias and a constant
    # added to every weight, so values may be shifted per example; the correlation (eq. 6) is still 1
    keep_o = sample_masks(cset.size, 80, 0.35, seed=10)
    truth_o = counterfactual_outputs(model, cset, x, y, keep_o, fn)
    r = pearson_columns(truth_o, attr.predict(keep_o))
    assert r.min() > 1 - 1e-6, r.min()
    shift = attr.predict(keep_o) - truth_o
    np.testing.assert_allclose(shift, np.broadcast_to(shift.mean(0), shift.shape), atol=1e-4)
    # and the weights are the true per-component contributions, up to the unidentifiable constant
    with torch.no_grad():
        h = model[1](model[0](x)) - model[1].bias
        head = model[3].weight[2] @ model[2].weight  # [30]
        exact = (h * head).numpy()  # [25, 30]
    w = attr.weights
    np.testing.assert_allclose(w - w.mean(1, keepdims=True), exact - exact.mean(1, keepdims=True), atol=1e-4)


def test_fit_on_a_prefix_of_the_masks_equals_fitting_those_masks(tmp_path):
    """max_masks uses the first masks in shard order (the sample-size study of Fig. 14)."""
    import pytest

    from coar.errors import CoarError
    from coar.pipeline import fit_stores

    rng = np.random.default_rng(3)
    C, N, W = 12, 4, np.random.default_rng(4).normal(size=(12, 4))
    stores = []
    for shard in range(2):
        meta = {"model_fingerprint": "m", "components_fingerprint": "c", "examples_fingerprint": "e",
                "n_components": C, "n_examples": N, "m": 50, "alpha": 0.25, "seed": 1, "shard": shard,
                "output_fn": "margin", "dtype": "float32"}
        store = ShardStore.create_or_open(tmp_path / f"s{shard}", meta)
        run_shard(store, lambda k: k.astype(np.float32) @ W + rng.normal(size=(len(k), N)).astype(np.float32),
                  progress=False)
        stores.append(tmp_path / f"s{shard}")
    keep, out = (np.concatenate(p) for p in zip(*load_shards(stores)))
    part = fit_stores(stores, max_masks=70)
    acc = regression.GramAccumulator(C, N)
    acc.add(keep[:70], out[:70])
    ref = regression.fit_ols(acc, components="c")
    np.testing.assert_allclose(part.weights, ref.weights, rtol=1e-6, atol=1e-8)
    assert part.meta["n_masks"] == 70
    with pytest.raises(CoarError, match="only 100"):
        fit_stores(stores, max_masks=150)


def test_fit_with_fewer_masks_than_components_uses_the_dual_form_and_equals_the_float64_min_norm_solution(tmp_path):
    """M < C: the workflow's fit takes the M x M kernel (no C x C Gram) and gives the minimum-norm least-squares
    solution in standardised coordinates, as numpy's float64 lstsq does."""
    from coar.pipeline import fit_stores

    rng = np.random.default_rng(5)
    C, N, M = 60, 3, 20
    W = rng.normal(size=(C, N))
    stores = []
    for shard in range(2):
        meta = {"model_fingerprint": "m", "components_fingerprint": "c", "examples_fingerprint": "e",
                "n_components": C, "n_examples": N, "m": M // 2, "alpha": 0.2, "seed": 1, "shard": shard,
                "output_fn": "margin", "dtype": "float32"}
        store = ShardStore.create_or_open(tmp_path / f"s{shard}", meta)
        run_shard(store, lambda k: (k.astype(np.float32) @ W).astype(np.float32), progress=False)
        stores.append(tmp_path / f"s{shard}")
    keep, out = (np.concatenate(p) for p in zip(*load_shards(stores)))
    attr = fit_stores(stores)
    assert attr.meta["solver"] == "dual-eigh" and attr.meta["n_masks"] == M
    x = keep.astype(np.float64)
    xbar, sd = x.mean(0), x.std(0)
    z = np.where(sd > 0, (x - xbar) / np.where(sd > 0, sd, 1), 0)
    coef = np.linalg.lstsq(z, out - out.mean(0), rcond=None)[0]
    ref = np.where(sd[:, None] > 0, coef / np.where(sd > 0, sd, 1)[:, None], 0)
    np.testing.assert_allclose(attr.weights, ref.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(attr.predict(keep), out, rtol=1e-5, atol=1e-5)  # M < C: interpolates
