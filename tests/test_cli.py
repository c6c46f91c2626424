"""The `coar` command line: component counts of the paper's models, clear errors, and a full chain
(prepare -> train -> sample -> fit -> baseline -> evaluate -> edit) on self-made Fashion-MNIST files."""
import pytest

from coar.cli import main


@pytest.mark.parametrize("model,total", [("resnet50", "22,720"), ("vit_b_16", "82,944"), ("gpt2", "64,512"),
                                         ("cifar_resnet", "2,304"), ("clip_vit_b_16", "82,944"),
                                         ("resnet18_cifar", "3,904"), ("resnet18_w8", "488"),
                                         ("resnet18_w32", "1,952")])
def test_components_counts(model, total, capsys):
    assert main(["components", model]) == 0
    out = capsys.readouterr().out
    assert f"total components: {total}" in out
    assert "module" in out and "site" in out and "units" in out


def test_bad_arguments_give_clear_errors(capsys):
    assert main(["components", "resnet51"]) == 2
    assert "unknown model 'resnet51'" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", "x", "--examples", "y", "--masks", "10", "--alpha", "1.5", "--out", "z"]) == 2
    assert "--alpha: must be a finite number in (0, 1)" in capsys.readouterr().err
    assert main(["fit", "--stores", "/nonexistent/store", "--out", "/tmp/x.npz"]) == 2
    assert "nonexistent" in capsys.readouterr().err


def test_cli_chain(tmp_path, capsys):
    from tests.test_data import make_fake_root  # real IDX format, small

    (tmp_path / "fm").mkdir()
    make_fake_root(tmp_path / "fm", n_train=300, n_test=60)
    d = str(tmp_path)
    assert main(["dataset", "fashion-mnist", "--root", f"{d}/fm", "--out", f"{d}/fm.json"]) == 0
    assert '"train": 300' in capsys.readouterr().out and '"test": 60' in (tmp_path / "fm.json").read_text()
    assert main(["dataset", "imagenet", "--root", f"{d}/none"]) == 2
    assert "ILSVRC2012" in capsys.readouterr().err  # a manual source: what to place, and where
    assert main(["prepare", "fashion-mnist", "--split", "test", "--n", "40", "--root", f"{d}/fm",
                 "--out", f"{d}/ex.npz"]) == 0
    assert main(["train", "--model", "resnet_tiny", "--root", f"{d}/fm", "--epochs", "1", "--out", f"{d}/m.pt",
                 "--device", "cpu"]) == 0
    for shard in (0, 1):
        assert main(["sample", "--checkpoint", f"{d}/m.pt", "--examples", f"{d}/ex.npz", "--masks", "120",
                     "--alpha", "0.1", "--shard", str(shard), "--out", f"{d}/train/{shard}", "--quiet",
                     "--device", "cpu"]) == 0
    assert main(["sample", "--checkpoint", f"{d}/m.pt", "--examples", f"{d}/ex.npz", "--masks", "50",
                 "--alpha", "0.1", "--seed", "7", "--out", f"{d}/test/0", "--quiet", "--device", "cpu"]) == 0
    assert main(["sample", "--checkpoint", f"{d}/m.pt", "--examples", f"{d}/ex.npz", "--masks", "50",
                 "--alpha", "0.2", "--seed", "8", "--out", f"{d}/test/1", "--quiet", "--device", "cpu"]) == 0
    # reopening a shard with other settings is refused with the key named
    assert main(["sample", "--checkpoint", f"{d}/m.pt", "--examples", f"{d}/ex.npz", "--masks", "120",
                 "--alpha", "0.2", "--out", f"{d}/train/0", "--quiet", "--device", "cpu"]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main(["fit", "--stores", f"{d}/train/0", f"{d}/train/1", "--out", f"{d}/coar.npz"]) == 0
    assert main(["baseline", "--method", "loo", "--checkpoint", f"{d}/m.pt", "--examples", f"{d}/ex.npz",
                 "--out", f"{d}/loo.npz", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--attributions", f"{d}/coar.npz", f"{d}/loo.npz", "--stores", f"{d}/test/0",
                 f"{d}/test/1", "--out", f"{d}/corr.csv"]) == 0
    printed = capsys.readouterr().out
    assert "coar-ols" in printed and "loo" in printed
    import pandas as pd

    corr = pd.read_csv(f"{d}/corr.csv")
    assert len(corr) == 160 and sorted(corr.alpha_test.unique()) == [0.1, 0.2]
    assert corr.query("method == 'coar-ols' and alpha_test == 0.1").correlation.mean() > 0.3
    assert main(["edit", "--attributions", f"{d}/coar.npz", "--checkpoint", f"{d}/m.pt", "--targets", "0",
                 "--references-random", "20", "--k", "3", "--examples", f"{d}/ex.npz",
                 "--out", f"{d}/edited.pt"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("tau=") == 3 and "wrote edited checkpoint" in printed
    from coar.paper.training import load_checkpoint

    _, ck = load_checkpoint(f"{d}/edited.pt")
    assert len(ck["meta"]["edit"]["ablated"]) == 3


def test_two_runs_with_the_same_seed_are_bitwise_identical(tmp_path):
    """The chain run twice, each time in a fresh process on the CPU (prepare, train, two shards, fit): the
    model, the masks, the model's outputs and the attributions agree to the last bit."""
    import os
    import subprocess
    import sys

    import numpy as np

    from coar.store import ShardStore
    from tests.test_data import make_fake_root

    (tmp_path / "fm").mkdir()
    make_fake_root(tmp_path / "fm", n_train=300, n_test=60)
    env = dict(os.environ, PYTHONHASHSEED="random")

    def chain(run):
        d = tmp_path / run
        steps = [["prepare", "fashion-mnist", "--split", "test", "--n", "40", "--root", f"{tmp_path}/fm",
                  "--out", f"{d}/ex.npz"],
                 ["train", "--model", "resnet_tiny", "--root", f"{tmp_path}/fm", "--epochs", "1", "--seed", "3",
                  "--out", f"{d}/m.pt", "--device", "cpu"],
                 *(["sample", "--checkpoint", f"{d}/m.pt", "--examples", f"{d}/ex.npz", "--masks", "100",
                    "--alpha", "0.1", "--seed", "5", "--shard", str(shard), "--out", f"{d}/train/{shard}",
                    "--quiet", "--device", "cpu"] for shard in (0, 1)),
                 ["fit", "--stores", f"{d}/train/0", f"{d}/train/1", "--out", f"{d}/coar.npz"]]
        for step in steps:
            r = subprocess.run([sys.executable, "-m", "coar.cli", *step], env=env, capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, f"{run}: coar {step[0]} failed:\n{r.stderr[-3000:]}"
        return d

    a, b = chain("first"), chain("second")
    import torch

    ma, mb = (torch.load(d / "m.pt", map_location="cpu", weights_only=False)["state_dict"] for d in (a, b))
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    for shard in ("0", "1"):
        with ShardStore.open(a / "train" / shard, readonly=True) as sa, ShardStore.open(b / "train" / shard,
                                                                                         readonly=True) as sb:
            assert sa.is_complete and sb.is_complete
            assert np.array_equal(sa.masks, sb.masks)
            assert sa.outputs.tobytes() == sb.outputs.tobytes()
    with ShardStore.open(a / "train/0", readonly=True) as s0, ShardStore.open(a / "train/1", readonly=True) as s1:
        assert not np.array_equal(s0.masks, s1.masks)  # the shards draw different masks
    from coar.attributions import Attributions

    fa, fb = Attributions.load(a / "coar.npz"), Attributions.load(b / "coar.npz")
    assert fa.weights.shape == (40, 104) and np.isfinite(fa.weights).all() and fa.weights.any()
    assert fa.weights.tobytes() == fb.weights.tobytes() and fa.bias.tobytes() == fb.bias.tobytes()
