"""Integration on real data: Fashion-MNIST (Debian's package, or COAR_FASHION_MNIST), a ResNet trained on
the CPU, COAR fitted from resumable shards, compared with the four baselines on fresh masks (paper Fig. 2
protocol at small scale)."""
import numpy as np
import pytest

from coar.paper.data.fashion_mnist import find_fashion_mnist

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_fashion_mnist() is None,
                       reason="Fashion-MNIST not available (apt-get install dataset-fashion-mnist)"),
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from coar.paper.demo import DemoConfig, run_demo

    cfg = DemoConfig(n_train=5000, epochs=2, n_examples=100, masks=600, shards=2, alpha_test=[0.10],
                     test_masks=150)
    out = tmp_path_factory.mktemp("demo")
    return out, cfg, run_demo(out, cfg, quiet=True)


def test_coar_is_predictive_and_beats_every_baseline(demo_run):
    out, cfg, table = demo_run
    mean = table.fillna({"correlation": 0.0}).groupby("method")["correlation"].mean()
    print(mean.to_string())
    assert set(mean.index) == {"coar", "loo", "gp", "nc", "ii"}
    assert mean["coar"] >= 0.7, f"mean COAR correlation at alpha_test = alpha_train is {mean['coar']:.3f}"
    for name in ("loo", "gp", "nc", "ii"):
        assert mean["coar"] > mean[name], f"COAR {mean['coar']:.3f} <= {name} {mean[name]:.3f}"


def test_trained_model_is_a_real_classifier(demo_run):
    from coar.paper.training import load_checkpoint

    out, cfg, _ = demo_run
    _, ck = load_checkpoint(out / "model.pt")
    assert ck["meta"]["test_accuracy"] >= 0.70  # 5,000 images, 2 epochs on the CPU


def test_rerun_resumes_from_artifacts(demo_run):
    import time

    from coar.paper.demo import run_demo

    out, cfg, table = demo_run
    t = time.time()
    again = run_demo(out, cfg, quiet=True)
    assert time.time() - t < 30  # nothing is trained or sampled again
    np.testing.assert_allclose(again["correlation"].to_numpy(), table["correlation"].to_numpy(), rtol=1e-6)
