"""Bad inputs are refused at the door: every case exits with status 2 on the command line (or raises the typed
CoarError in the library), names the argument, key or path at fault, and leaves no output behind.

One module-wide world of tiny artifacts (resnet_tiny on random 1x28x28 images, a few masks per store) serves
every case; each case writes only under its own `{o}` directory, which must not exist afterwards."""
import errno
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from coar.attributions import Attributions
from coar.cli import main
from coar.examples import Examples
from coar.paper.demo import DemoConfig
from coar.errors import CoarError, StoreMismatchError
from coar.paper.models import build_model
from coar.store import ShardStore, read_meta
from coar.paper.training import save_checkpoint

N = 12  # attributed examples
KW = {"num_classes": 10, "in_channels": 1, "image_size": 28}


def _cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses an argument's value
        code = exc.code
    return code, capsys.readouterr().err


def _examples(path, n, seed, channels=1, size=28, labels=None):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, channels, size, size), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64) if labels is None else np.asarray(labels, np.int64)
    Examples(x, y, "image", {"mean": 0.5, "std": 0.5}).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    for seed, name in ((0, "m.pt"), (1, "m2.pt")):
        torch.manual_seed(seed)
        save_checkpoint(w / name, build_model("resnet_tiny", **KW).eval(), "resnet_tiny", KW, {})
    _examples(w / "ex.npz", N, 0)
    _examples(w / "ex2.npz", N, 1)
    _examples(w / "ex5.npz", 5, 2)
    _examples(w / "ex_rgb.npz", 4, 3, channels=3, size=32)
    _examples(w / "ex_label.npz", 4, 4, labels=[0, 1, 12, 3])
    _examples(w / "ex5_rgb.npz", 5, 5, channels=3, size=32)
    _examples(w / "ex5_label.npz", 5, 6, labels=[0, 1, 12, 3, 4])
    from tests.test_data import make_fake_root

    (w / "fm").mkdir()
    make_fake_root(w / "fm", n_train=30, n_test=20)
    (w / "adir").mkdir()
    (w / "demo_old").mkdir()
    (w / "demo_old/config.json").write_text(json.dumps(asdict(DemoConfig(masks=100))))

    def sample(out, masks=10, alpha="0.1", seed=0, shard=0, model="m.pt", ex="ex.npz", *extra):
        argv = ["sample", "--checkpoint", str(w / model), "--examples", str(w / ex), "--masks", str(masks),
                "--alpha", alpha, "--seed", str(seed), "--shard", str(shard), "--out", str(w / out), "--quiet",
                "--device", "cpu", *extra]
        assert main(argv) == 0, argv

    sample("train/0", 40)
    sample("train/1", 40, "0.1", 0, 1)
    sample("test/0", 20, "0.1", 7)
    sample("test/m2", 20, "0.1", 7, 0, "m2.pt")
    sample("test/ex2", 20, "0.1", 7, 0, "m.pt", "ex2.npz")
    sample("mix/a2", 10, "0.2", 0, 5)
    sample("mix/bern", 10, "0.1", 0, 6, "m.pt", "ex.npz", "--scheme", "bernoulli")
    sample("mix/scale5", 10, "0.1", 0, 7, "m.pt", "ex.npz", "--ablation", "scale", "--gamma", "0.5")
    sample("mix/scale25", 10, "0.1", 0, 8, "m.pt", "ex.npz", "--ablation", "scale", "--gamma", "0.25")
    sample("mix/m2", 10, "0.1", 0, 9, "m2.pt")
    sample("mix/ex2", 10, "0.1", 0, 10, "m.pt", "ex2.npz")
    sample("mix/logit", 10, "0.1", 0, 11, "m.pt", "ex.npz", "--output", "logit:3")
    meta = dict(read_meta(w / "train/0"), shard=12)
    ShardStore.create_or_open(w / "incomplete", meta).close()  # created, never run
    shutil.copytree(w / "train/1", w / "corrupt")
    with open(w / "corrupt/outputs.npy", "r+b") as fh:
        fh.seek(-1, 2)
        last = fh.read(1)
        fh.seek(-1, 2)
        fh.write(bytes([last[0] ^ 0xFF]))

    assert main(["fit", "--stores", str(w / "train/0"), str(w / "train/1"), "--out", str(w / "coar.npz")]) == 0
    assert main(["baseline", "--method", "loo", "--checkpoint", str(w / "m.pt"), "--examples", str(w / "ex.npz"),
                 "--out", str(w / "loo.npz"), "--device", "cpu"]) == 0
    coar = Attributions.load(w / "coar.npz")
    legacy = Attributions(coar.weights, coar.bias, coar.method, coar.components,
                          {k: v for k, v in coar.meta.items() if k != "provenance"})
    legacy.save(w / "legacy.npz")
    rng = np.random.default_rng(0)
    Attributions(rng.normal(size=(5, coar.n_components)), np.zeros(5), "five", coar.components).save(w / "five.npz")
    Attributions(coar.weights, coar.bias, "other", "deadbeef").save(w / "othercomp.npz")
    (w / "truncated.npz").write_bytes((w / "coar.npz").read_bytes()[:100])
    from coar.io import atomic_savez  # files save() refuses to write, written around it: load refuses them too

    nan_w = coar.weights.copy()
    nan_w[3, 7] = np.nan
    atomic_savez(w / "nan.npz", header={"method": "coar", "components": coar.components, "meta": coar.meta},
                 weights=nan_w, bias=coar.bias)
    good = Examples.load(w / "ex.npz")
    for name, x, y in (("ex_float.npz", good.inputs.astype(np.float32) / 255, good.targets),
                       ("ex_fraclabel.npz", good.inputs, good.targets + 0.5)):
        bad_ex = Examples(x, y, "image", good.meta)  # written around save(), which refuses them
        atomic_savez(w / name, header={"kind": "image", "meta": good.meta, "fingerprint": bad_ex.fingerprint()},
                     inputs=x, targets=y)
    state = torch.load(w / "m.pt", weights_only=True)
    bad = dict(state, state_dict=dict(state["state_dict"]))
    bad["state_dict"]["conv1.weight"] = bad["state_dict"]["conv1.weight"].clone()
    bad["state_dict"]["conv1.weight"][0, 0, 0, 0] = float("inf")
    torch.save(bad, w / "inf.pt")
    torch.save(dict(state, kwargs=dict(KW, num_classes=7)), w / "wrongarch.pt")  # weights of a 10-class model
    torch.save(dict(state, arch="resnet_huge"), w / "unknownarch.pt")
    atomic_savez(w / "nomethod.npz", header={"components": coar.components, "meta": coar.meta},
                 weights=coar.weights, bias=coar.bias)
    for d in ("dup/a", "dup/b"):
        (w / d).mkdir(parents=True)
        shutil.copy(w / "coar.npz", w / d / "coar.npz")
    return w


SAMPLE = ["sample", "--checkpoint", "{w}/m.pt", "--examples", "{w}/ex.npz", "--masks", "10", "--quiet",
          "--device", "cpu"]
TRAIN = ["train", "--model", "resnet_tiny", "--root", "{w}/fm", "--epochs", "1", "--device", "cpu"]
FIT = ["fit", "--stores", "{w}/train/0"]
EVAL = ["evaluate", "--attributions", "{w}/coar.npz", "--out", "{o}/corr.csv", "--stores"]
EDIT = ["edit", "--attributions", "{w}/coar.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--out", "{o}/e.pt"]
BASE = ["baseline", "--method", "loo", "--checkpoint", "{w}/m.pt", "--examples", "{w}/ex.npz", "--device", "cpu"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")

CLI_CASES = [
    # sample: degenerate alpha, bad arguments, examples that do not fit the model
    pytest.param(SAMPLE + ["--alpha", "0.004", "--out", "{o}/s"], ["alpha 0.004", "104", "0.416", "nothing"],
                 id="sample-alpha-ablates-nothing"),
    pytest.param(SAMPLE + ["--alpha", "0.0048", "--out", "{o}/s"], ["alpha 0.0048", "0.4992"],
                 id="sample-alpha-rounds-to-zero"),
    pytest.param(SAMPLE + ["--alpha", "0.996", "--out", "{o}/s"], ["alpha 0.996", "= 104 of the C = 104",
                                                                   "every component", "0.995"],
                 id="sample-alpha-ablates-everything"),
    pytest.param(SAMPLE + ["--alpha", "1.5", "--out", "{o}/s"], ["--alpha", "must be a finite number in (0, 1)"],
                 id="sample-alpha-above-one"),
    pytest.param(SAMPLE + ["--alpha", "0", "--out", "{o}/s"], ["--alpha", "must be a finite number in (0, 1)"],
                 id="sample-alpha-zero"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--masks", "0", "--out", "{o}/s"], ["--masks", "must be an integer >= 1"],
                 id="sample-no-masks"),
    pytest.param(["sample", "--checkpoint", "{w}/none.pt", "--examples", "{w}/ex.npz", "--masks", "10", "--alpha",
                  "0.1", "--out", "{o}/s", "--device", "cpu"], ["checkpoint not found", "none.pt"],
                 id="sample-missing-checkpoint"),
    pytest.param(["sample", "--checkpoint", "{w}/m.pt", "--examples", "{w}/none.npz", "--masks", "10", "--alpha",
                  "0.1", "--out", "{o}/s", "--device", "cpu"], ["examples file not found", "none.npz"],
                 id="sample-missing-examples"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--output", "bogus", "--out", "{o}/s"], ["output function 'bogus'"],
                 id="sample-unknown-output"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--ablation", "scale", "--gamma", "1.5", "--out", "{o}/s"],
                 ["gamma", "1.5"], id="sample-gamma-above-one"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--ablation", "scale", "--gamma", "nan", "--out", "{o}/s"],
                 ["gamma", "nan"], id="sample-gamma-nan"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--seed", "-1", "--out", "{o}/s"], ["--seed", "-1"],
                 id="sample-negative-seed"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--shard", "-2", "--out", "{o}/s"], ["--shard", "-2"],
                 id="sample-negative-shard"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--components", "bogus", "--out", "{o}/s"],
                 ["component table 'bogus'"], id="sample-unknown-components"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--precision", "float8", "--out", "{o}/s"], ["--precision", "float8"],
                 id="sample-unknown-precision"),
    pytest.param(["sample", "--checkpoint", "{w}/m.pt", "--examples", "{w}/ex_rgb.npz", "--masks", "10", "--alpha",
                  "0.1", "--out", "{o}/s", "--device", "cpu", "--quiet"], ["do not fit the model", "(4, 3, 32, 32)"],
                 id="sample-examples-do-not-fit-model"),
    pytest.param(["sample", "--checkpoint", "{w}/m.pt", "--examples", "{w}/ex_label.npz", "--masks", "10",
                  "--alpha", "0.1", "--out", "{o}/s", "--device", "cpu", "--quiet"], ["labels range over 0..12",
                                                                                       "10 classes"],
                 id="sample-labels-outside-classes"),
    pytest.param(SAMPLE + ["--alpha", "0.2", "--masks", "40", "--out", "{w}/train/0"],
                 ["train/0", "other settings", "alpha"], id="sample-resume-with-other-settings"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--out", "{w}/ex5.npz"], ["ex5.npz", "not a shard"],
                 id="sample-out-is-a-file"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--device", "cuda", "--out", "{o}/s"], ["--device cuda", "CUDA"],
                 id="sample-cuda-unavailable", marks=no_cuda),
    # train: learning rate and other arguments
    pytest.param(TRAIN + ["--lr", "nan", "--out", "{o}/m.pt"], ["--lr", "finite number > 0", "nan"], id="train-lr-nan"),
    pytest.param(TRAIN + ["--lr", "inf", "--out", "{o}/m.pt"], ["--lr", "finite number > 0", "inf"], id="train-lr-inf"),
    pytest.param(TRAIN + ["--lr", "0", "--out", "{o}/m.pt"], ["--lr", "finite number > 0"], id="train-lr-zero"),
    pytest.param(TRAIN + ["--lr", "-0.1", "--out", "{o}/m.pt"], ["--lr", "-0.1"], id="train-lr-negative"),
    pytest.param(TRAIN + ["--lr", "fast", "--out", "{o}/m.pt"], ["--lr", "'fast'"], id="train-lr-not-a-number"),
    pytest.param(TRAIN + ["--epochs", "0", "--out", "{o}/m.pt"], ["--epochs", "positive integer"],
                 id="train-no-epochs"),
    pytest.param(TRAIN + ["--n-train", "1000", "--out", "{o}/m.pt"], ["1000 train examples", "30"],
                 id="train-more-examples-than-data"),
    pytest.param(TRAIN + ["--out", "{w}/adir"], ["--out", "adir", "is a directory"], id="train-out-is-a-directory"),
    # prepare, components
    pytest.param(["prepare", "fashion-mnist", "--root", "{w}/fm", "--n", "50", "--out", "{o}/ex.npz"],
                 ["asked for 50 test examples", "20"], id="prepare-more-examples-than-data"),
    pytest.param(["prepare", "fashion-mnist", "--root", "{w}/fm", "--n", "5", "--seed", "-1", "--out", "{o}/ex.npz"],
                 ["--seed", "-1"], id="prepare-negative-seed"),
    pytest.param(["components", "resnet51"], ["unknown model 'resnet51'"], id="components-unknown-model"),
    # fit: stores that cannot be fitted together, broken stores, bad settings
    pytest.param(FIT + ["{w}/mix/a2", "--out", "{o}/a.npz"], ["train/0", "mix/a2", "alpha", "0.1", "0.2"],
                 id="fit-mixed-alpha"),
    pytest.param(FIT + ["{w}/mix/bern", "--out", "{o}/a.npz"], ["train/0", "mix/bern", "scheme", "bernoulli"],
                 id="fit-mixed-scheme"),
    pytest.param(FIT + ["{w}/mix/scale5", "--out", "{o}/a.npz"], ["mix/scale5", "ablation", "scale"],
                 id="fit-mixed-ablation"),
    pytest.param(["fit", "--stores", "{w}/mix/scale5", "{w}/mix/scale25", "--out", "{o}/a.npz"],
                 ["mix/scale5", "mix/scale25", "gamma", "0.25"], id="fit-mixed-gamma"),
    pytest.param(FIT + ["{w}/mix/m2", "--out", "{o}/a.npz"], ["mix/m2", "model_fingerprint"], id="fit-mixed-model"),
    pytest.param(FIT + ["{w}/mix/ex2", "--out", "{o}/a.npz"], ["mix/ex2", "examples_fingerprint"],
                 id="fit-mixed-examples"),
    pytest.param(FIT + ["{w}/mix/logit", "--out", "{o}/a.npz"], ["mix/logit", "output_fn", "logit:3"],
                 id="fit-mixed-output"),
    pytest.param(FIT + ["{w}/train/0", "--out", "{o}/a.npz"], ["train/0", "same (seed, shard)"],
                 id="fit-same-store-twice"),
    pytest.param(["fit", "--stores", "{w}/train/1", "{w}/corrupt", "--out", "{o}/a.npz"],
                 ["train/1", "corrupt", "same (seed, shard) = (0, 1)"], id="fit-same-masks-twice"),
    pytest.param(["fit", "--stores", "{w}/corrupt", "--out", "{o}/a.npz"], ["corrupt", "checksum mismatch"],
                 id="fit-corrupted-store"),
    pytest.param(FIT + ["{w}/incomplete", "--out", "{o}/a.npz"], ["incomplete", "rows pending"],
                 id="fit-incomplete-store"),
    pytest.param(FIT + ["{w}/nowhere", "--out", "{o}/a.npz"], ["nowhere", "not a shard"], id="fit-missing-store"),
    pytest.param(FIT + ["--method", "ridge", "--lambdas", "1,-1", "--out", "{o}/a.npz"],
                 ["lambdas", "-1.0"], id="fit-negative-lambda"),
    pytest.param(FIT + ["--lambdas", "one", "--out", "{o}/a.npz"], ["--lambdas", "'one'"],
                 id="fit-lambda-not-a-number"),
    pytest.param(FIT + ["--out", "{w}/adir"], ["--out", "adir", "is a directory"], id="fit-out-is-a-directory"),
    # evaluate: attributions of another model, examples or component set, or on their training masks
    pytest.param(EVAL + ["{w}/test/m2"], ["'coar-ols'", "test/m2", "model"], id="evaluate-other-model"),
    pytest.param(EVAL + ["{w}/test/ex2"], ["'coar-ols'", "test/ex2", "examples"], id="evaluate-other-examples"),
    pytest.param(EVAL + ["{w}/train/1"], ["train/1", "training masks", "seed 0, shard 1"],
                 id="evaluate-on-training-masks"),
    pytest.param(["evaluate", "--attributions", "{w}/loo.npz", "--out", "{o}/corr.csv", "--stores", "{w}/test/m2"],
                 ["'loo'", "test/m2", "model"], id="evaluate-baseline-other-model"),
    pytest.param(["evaluate", "--attributions", "{w}/othercomp.npz", "--out", "{o}/c.csv", "--stores", "{w}/test/0"],
                 ["'other'", "deadbeef", "test/0", "component set"], id="evaluate-other-component-set"),
    pytest.param(["evaluate", "--attributions", "{w}/five.npz", "--out", "{o}/c.csv", "--stores", "{w}/test/0"],
                 ["'five'", "5 examples", "test/0", "12"], id="evaluate-other-example-count"),
    pytest.param(["evaluate", "--attributions", "{w}/legacy.npz", "--out", "{o}/c.csv", "--stores", "{w}/test/0",
                  "{w}/test/m2"], ["test/0", "test/m2", "model_fingerprint"], id="evaluate-stores-of-two-models"),
    pytest.param(["evaluate", "--attributions", "{w}/none.npz", "--out", "{o}/c.csv", "--stores", "{w}/test/0"],
                 ["attribution file not found", "none.npz"], id="evaluate-missing-attributions"),
    pytest.param(["evaluate", "--attributions", "{w}/truncated.npz", "--out", "{o}/c.csv", "--stores", "{w}/test/0"],
                 ["truncated.npz", "unreadable or truncated"], id="evaluate-truncated-attributions"),
    pytest.param(["evaluate", "--attributions", "{w}/nan.npz", "--out", "{o}/c.csv", "--stores", "{w}/test/0"],
                 ["nan.npz", "cannot be used", "1 non-finite value(s), the first at example 3, component 7"],
                 id="evaluate-nan-attributions"),
    pytest.param(["evaluate", "--attributions", "{w}/coar.npz", "--out", "{w}/coar.npz", "--stores", "{w}/test/0"],
                 ["--out", "is also the input --attributions", "would overwrite it"], id="evaluate-out-is-an-input"),
    pytest.param(EDIT[:4] + ["{w}/m.pt"] + EDIT[5:8] + ["{w}/m.pt", "--targets", "0", "--references-random", "5"],
                 ["--out", "is also the input --checkpoint"], id="edit-out-is-the-checkpoint"),
    pytest.param(SAMPLE[:4] + ["{w}/ex_float.npz"] + SAMPLE[5:] + ["--alpha", "0.1", "--out", "{o}/s"],
                 ["ex_float.npz", "must be uint8 pixel values 0..255", "float32 in [0, 1]", "already scaled"],
                 id="sample-examples-already-scaled"),
    pytest.param(SAMPLE[:4] + ["{w}/ex_fraclabel.npz"] + SAMPLE[5:] + ["--alpha", "0.1", "--out", "{o}/s"],
                 ["ex_fraclabel.npz", "integer labels", "fractional values"], id="sample-examples-fractional-labels"),
    pytest.param(SAMPLE[:2] + ["{w}/inf.pt"] + SAMPLE[3:] + ["--alpha", "0.1", "--out", "{o}/s"],
                 ["inf.pt", "cannot be used", "conv1.weight", "1 non-finite value(s)"], id="sample-inf-checkpoint"),
    pytest.param(SAMPLE[:2] + ["{w}/wrongarch.pt"] + SAMPLE[3:] + ["--alpha", "0.1", "--out", "{o}/s"],
                 ["wrongarch.pt", "do not fit the architecture it records", "resnet_tiny", "size mismatch"],
                 id="sample-checkpoint-weights-of-another-architecture"),
    pytest.param(EDIT[:4] + ["{w}/unknownarch.pt"] + EDIT[5:] + ["--targets", "0", "--references-random", "5"],
                 ["unknownarch.pt", "cannot be built", "resnet_huge"], id="edit-checkpoint-unknown-architecture"),
    pytest.param(EDIT[:6] + ["0"] + EDIT[7:] + ["--targets", "0", "--references-random", "5"],
                 ["--k: k = 0 edits nothing", "1..103"], id="edit-k-zero"),
    pytest.param(EDIT[:6] + ["104"] + EDIT[7:] + ["--targets", "0", "--references-random", "5"],
                 ["--k: k = 104 ablates every component", "C = 104"], id="edit-k-every-component"),
    pytest.param(EDIT + ["--targets", "0", "--references-random", "5", "--examples", "{w}/ex.npz", "--sweep",
                         "0,300"], ["--sweep = 300 is not an integer in 0..103"], id="edit-sweep-past-the-components"),
    pytest.param(EDIT[:2] + ["{w}/nan.npz"] + EDIT[3:] + ["--targets", "0", "--references-random", "5"],
                 ["nan.npz", "non-finite"], id="edit-nan-attributions"),
    pytest.param(EDIT[:2] + ["{w}/nomethod.npz"] + EDIT[3:] + ["--targets", "0", "--references-random", "5"],
                 ["nomethod.npz", "header lacks 'method'"], id="edit-attributions-without-method"),
    pytest.param(["evaluate", "--attributions", "{w}/coar.npz", "{w}/dup/a/coar.npz", "{w}/dup/b/coar.npz", "--out",
                  "{o}/c.csv", "--stores", "{w}/test/0"], ["dup/a/coar.npz", "dup/b/coar.npz", "'coar'"],
                 id="evaluate-two-files-one-name"),
    pytest.param(EVAL + ["{w}/incomplete"], ["incomplete", "rows pending"], id="evaluate-incomplete-store"),
    pytest.param(["evaluate", "--attributions", "{w}/coar.npz", "--out", "{w}/adir", "--stores", "{w}/test/0"],
                 ["--out", "adir", "is a directory"], id="evaluate-out-is-a-directory"),
    # edit: attributions of another model or examples, bad targets and references
    pytest.param(["edit", "--attributions", "{w}/coar.npz", "--checkpoint", "{w}/m2.pt", "--k", "2", "--targets",
                  "0", "--references-random", "5", "--out", "{o}/e.pt"], ["coar.npz", "m2.pt", "model"],
                 id="edit-other-model"),
    pytest.param(EDIT + ["--targets", "0", "--references-random", "5", "--examples", "{w}/ex2.npz"],
                 ["coar.npz", "ex2.npz", "examples"], id="edit-other-examples"),
    pytest.param(["edit", "--attributions", "{w}/legacy.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--targets",
                  "0", "--references-random", "3", "--examples", "{w}/ex5.npz", "--out", "{o}/e.pt"],
                 ["legacy.npz", "12 examples", "ex5.npz", "holds 5"], id="edit-other-example-count"),
    pytest.param(EDIT + ["--targets", "0,3,0", "--references-random", "5"], ["targets", "repeat", "[0]"],
                 id="edit-duplicate-targets"),
    pytest.param(EDIT + ["--targets", "0", "--references", "2,0"], ["[0]", "both targets and references"],
                 id="edit-reference-is-a-target"),
    pytest.param(EDIT + ["--targets", "0", "--references", "2,2"], ["references", "repeat", "[2]"],
                 id="edit-duplicate-references"),
    pytest.param(EDIT + ["--targets", "0,1", "--references-random", "11"], ["11 random references", "10 examples",
                                                                           "2 target(s)", "12"],
                 id="edit-more-random-references-than-examples"),
    pytest.param(EDIT + ["--targets", "40", "--references-random", "5"], ["targets [40]", "12 attributed"],
                 id="edit-target-out-of-range"),
    pytest.param(EDIT + ["--targets", "0", "--references", "1,-3"], ["references [-3]", "12 attributed"],
                 id="edit-negative-reference"),
    pytest.param(EDIT + ["--targets", "", "--references-random", "5"], ["no targets"], id="edit-no-targets"),
    pytest.param(["edit", "--attributions", "{w}/coar.npz", "--checkpoint", "{w}/m.pt", "--k", "500", "--targets",
                  "0", "--references-random", "5", "--out", "{o}/e.pt"], ["--k: k = 500", "1..103"],
                 id="edit-k-too-large"),
    pytest.param(EDIT + ["--targets", "0", "--references-random", "5", "--examples", "{w}/ex.npz", "--sweep", "1,999"], ["--sweep", "999"],
                 id="edit-sweep-too-large"),
    pytest.param(EDIT + ["--targets", "0", "--references-random", "3", "--seed", "-4"], ["--seed", "-4"],
                 id="edit-negative-seed"),
    pytest.param(EDIT + ["--targets", "0", "--references-random", "0"], ["--references-random", "positive integer"],
                 id="edit-zero-random-references"),
    pytest.param(["edit", "--attributions", "{w}/othercomp.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--targets",
                  "0", "--references-random", "5", "--out", "{o}/e.pt"], ["othercomp.npz", "deadbeef", "m.pt"],
                 id="edit-other-component-set"),
    pytest.param(["edit", "--attributions", "{w}/coar.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--targets", "0",
                  "--references-random", "5", "--out", "{w}/adir"], ["--out", "adir", "is a directory"],
                 id="edit-out-is-a-directory"),
    # baseline
    pytest.param(BASE + ["--ablation", "scale", "--gamma", "2", "--out", "{o}/b.npz"], ["gamma", "2"],
                 id="baseline-gamma-above-one"),
    pytest.param(BASE + ["--output", "bogus", "--out", "{o}/b.npz"], ["output function 'bogus'"],
                 id="baseline-unknown-output"),
    pytest.param(["baseline", "--method", "gp", "--checkpoint", "{w}/m.pt", "--examples", "{w}/ex_rgb.npz",
                  "--device", "cpu", "--out", "{o}/b.npz"], ["do not fit the model"],
                 id="baseline-examples-do-not-fit"),
    pytest.param(BASE + ["--out", "{w}/adir"], ["--out", "adir", "is a directory"], id="baseline-out-is-a-directory"),
    # options that would do nothing where they are given
    pytest.param(SAMPLE + ["--alpha", "0.1", "--gamma", "0.3", "--out", "{o}/s"],
                 ["--gamma 0.3 does nothing with --ablation zero"], id="sample-gamma-with-zero-ablation"),
    pytest.param(BASE + ["--gamma", "0.3", "--out", "{o}/b.npz"], ["--gamma 0.3 does nothing with --ablation zero"],
                 id="baseline-gamma-with-zero-ablation"),
    pytest.param(["baseline", "--method", "nc", "--checkpoint", "{w}/m.pt", "--examples", "{w}/ex.npz", "--device",
                  "cpu", "--ablation", "scale", "--out", "{o}/b.npz"],
                 ["--ablation scale does nothing with --method nc"], id="baseline-ablation-with-nc"),
    pytest.param(["baseline", "--method", "ii", "--checkpoint", "{w}/m.pt", "--examples", "{w}/ex.npz", "--device",
                  "cpu", "--gamma", "0.5", "--out", "{o}/b.npz"], ["--gamma 0.5 does nothing with --method ii"],
                 id="baseline-gamma-with-ii"),
    pytest.param(["prepare", "fashion-mnist", "--root", "{w}/fm", "--n", "5", "--pad-to", "20", "--out",
                  "{o}/ex.npz"], ["--pad-to 20", "28 x 28"], id="prepare-pad-to-smaller-than-the-images"),
    pytest.param(["prepare", "fashion-mnist", "--root", "{w}/fm", "--seed", "3", "--out", "{o}/ex.npz"],
                 ["--seed 3 does nothing without --n"], id="prepare-seed-without-n"),
    pytest.param(FIT + ["--lambdas", "1,10", "--out", "{o}/a.npz"], ["--lambdas", "does nothing with --method ols"],
                 id="fit-lambdas-with-ols"),
    pytest.param(EDIT + ["--targets", "0", "--references", "1,2", "--seed", "3"],
                 ["--seed 3 does nothing with --references"], id="edit-seed-with-references"),
    pytest.param(EDIT + ["--targets", "0", "--references-random", "5", "--sweep", "1,3"],
                 ["--sweep does nothing without --examples"], id="edit-sweep-without-examples"),
    pytest.param(["components", "gpt2_tiny", "--image-size", "32"],
                 ["--image-size 32 does nothing for the language model gpt2_tiny"],
                 id="components-image-size-for-a-language-model"),
    # devices
    pytest.param(SAMPLE + ["--alpha", "0.1", "--device", "tpu", "--out", "{o}/s"],
                 ["--device 'tpu'", "auto, cpu, cuda or cuda:<index>"], id="sample-unknown-device"),
    pytest.param(TRAIN + ["--device", "mps", "--out", "{o}/m.pt"], ["--device 'mps'"], id="train-unsupported-device"),
    pytest.param(BASE + ["--device", "gpu", "--out", "{o}/b.npz"], ["--device 'gpu'"], id="baseline-unknown-device"),
    pytest.param(FIT + ["--device", "cuda:x", "--out", "{o}/a.npz"], ["--device 'cuda:x'"], id="fit-malformed-device"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--device", "cuda:3", "--out", "{o}/s"], ["--device cuda:3", "CUDA"],
                 id="sample-cuda-index-unavailable", marks=no_cuda),
    # models coar train cannot train on Fashion-MNIST
    pytest.param(["train", "--model", "gpt2_tiny", "--root", "{w}/fm", "--device", "cpu", "--out", "{o}/m.pt"],
                 ["--model gpt2_tiny is a language model"], id="train-language-model"),
    pytest.param(["train", "--model", "resnet50", "--root", "{w}/fm", "--device", "cpu", "--out", "{o}/m.pt"],
                 ["ResNet cannot take the training inputs (1, 28, 28)"], id="train-model-for-other-images"),
    pytest.param(["train", "--model", "resnet_51", "--root", "{w}/fm", "--device", "cpu", "--out", "{o}/m.pt"],
                 ["unknown model 'resnet_51'"], id="train-unknown-model"),
    # data roots: the one given, never another copy
    pytest.param(["prepare", "fashion-mnist", "--root", "{w}/nowhere", "--n", "5", "--out", "{o}/ex.npz"],
                 ["Fashion-MNIST not found in", "nowhere", "no such directory"], id="prepare-missing-root"),
    pytest.param(TRAIN + ["--root", "{w}/adir", "--out", "{o}/m.pt"],
                 ["Fashion-MNIST not found in", "adir", "missing train-images-idx3-ubyte"], id="train-empty-root"),
    # edit: examples the model cannot take
    pytest.param(["edit", "--attributions", "{w}/five.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--targets", "0",
                  "--references-random", "3", "--examples", "{w}/ex5_rgb.npz", "--out", "{o}/e.pt"],
                 ["--examples", "ex5_rgb.npz", "do not fit the model"], id="edit-examples-do-not-fit"),
    pytest.param(["edit", "--attributions", "{w}/five.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--targets", "0",
                  "--references-random", "3", "--examples", "{w}/ex5_label.npz", "--out", "{o}/e.pt"],
                 ["--examples", "ex5_label.npz", "labels range over 0..12"], id="edit-examples-labels-outside-classes"),
    # demo: a rerun into a run of other settings
    pytest.param(["demo", "--out", "{w}/demo_old", "--masks", "50"], ["demo_old", "other settings",
                                                                      "masks: 100 there, 50 now"],
                 id="demo-rerun-with-other-settings"),
    # output paths that cannot be written, refused before any work
    pytest.param(TRAIN + ["--out", "{w}/ex.npz/m.pt"], ["--out", "ex.npz is a file, not a directory"],
                 id="train-out-under-a-file"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--out", "{w}/ex.npz/s/0"], ["--out", "ex.npz is a file"],
                 id="sample-out-under-a-file"),
    pytest.param(FIT + ["--out", "{w}/ex.npz/a.npz"], ["--out", "ex.npz is a file"], id="fit-out-under-a-file"),
    pytest.param(BASE + ["--out", "{w}/ex.npz/b.npz"], ["--out", "ex.npz is a file"], id="baseline-out-under-a-file"),
    pytest.param(["evaluate", "--attributions", "{w}/coar.npz", "--out", "{w}/ex.npz/c.csv", "--stores", "{w}/test/0"],
                 ["--out", "ex.npz is a file"], id="evaluate-out-under-a-file"),
    pytest.param(["edit", "--attributions", "{w}/coar.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--targets", "0",
                  "--references-random", "5", "--out", "{w}/ex.npz/e.pt"], ["--out", "ex.npz is a file"],
                 id="edit-out-under-a-file"),
    pytest.param(["prepare", "fashion-mnist", "--root", "{w}/fm", "--n", "5", "--out", "{w}/ex.npz/x/ex.npz"],
                 ["--out", "ex.npz is a file"], id="prepare-out-under-a-file"),
    pytest.param(["dataset", "fashion-mnist", "--root", "{w}/fm", "--out", "{w}/ex.npz/fm.json"],
                 ["--out", "ex.npz is a file"], id="dataset-out-under-a-file"),
    pytest.param(["components", "resnet_tiny", "--csv", "{w}/ex.npz/c.csv"], ["--csv", "ex.npz is a file"],
                 id="components-csv-under-a-file"),
    pytest.param(["demo", "--out", "{w}/ex.npz/demo"], ["--out", "ex.npz is a file"], id="demo-out-under-a-file"),
]


@pytest.mark.parametrize("argv,expected", CLI_CASES)
def test_cli_refuses(world, tmp_path, capsys, argv, expected):
    """Exit status 2, a message naming what is wrong, no output file, nothing else written."""
    o = tmp_path / "o"
    before = {p: p.stat().st_mtime_ns for p in world.rglob("*")}
    code, err = _cli([a.format(w=world, o=o) for a in argv], capsys)
    assert code == 2, err
    for text in expected:
        assert text.format(w=world) in err, f"{text!r} not in: {err}"
    assert "Traceback" not in err, err
    assert not o.exists(), sorted(o.rglob("*"))
    assert {p: p.stat().st_mtime_ns for p in world.rglob("*")} == before


# ----------------------------------------------------------------------------- the library


def _model(w, name="m.pt"):
    from coar.components import component_set
    from coar.paper.training import load_checkpoint

    model, _ = load_checkpoint(w / name)
    return model, component_set(model, "resnet_tiny")


def _sample(w, o, alpha=0.1, **kw):
    from coar.pipeline import sample_store

    model, cset = _model(w)
    sample_store(o / "s", model, cset, Examples.load(w / "ex.npz"), m=10, alpha=alpha, seed=0, shard=0,
                 progress=False, **kw)


def _save_nonfinite(w, o, where):
    a = Attributions.load(w / "coar.npz")
    if where == "weights":
        a.weights[2, 5] = np.nan
        a.weights[7, 1] = np.inf
    else:
        a.bias[3] = -np.inf
    a.save(o / "a.npz")


def _fit(w, o, *stores, **kw):
    from coar.pipeline import fit_stores

    fit_stores([w / s for s in stores], **kw).save(o / "a.npz")


def _evaluate(w, o, attr, *stores):
    from coar.pipeline import evaluate_stores

    evaluate_stores({"x": Attributions.load(w / attr)}, [w / s for s in stores]).to_csv(o / "c.csv")


def _scatter(w, o, attr, store):
    from coar.pipeline import scatter_table

    scatter_table({"x": Attributions.load(w / attr)}, w / store, 0).to_csv(o / "c.csv")


def _references(w, o, targets, refs=None, n_random=None):
    from coar.editing import edit_references

    edit_references(N, targets, refs, n_random)


def _scores(w, o, targets, refs):
    from coar.editing import edit_scores

    edit_scores(Attributions.load(w / "coar.npz"), targets, refs)


def _check_edit(w, o, model="m.pt", examples=None):
    from coar.provenance import check_edit

    model, _ = _model(w, model)
    check_edit(Attributions.load(w / "coar.npz"), "coar.npz", model, model, examples and Examples.load(w / examples),
               examples)


def _train(w, o, lr):
    from coar.paper.training import train_classifier

    torch.manual_seed(0)
    model = build_model("resnet_tiny", **KW)
    train_classifier(model, torch.randn(8, 1, 28, 28), torch.zeros(8, dtype=torch.long), epochs=1, lr=lr,
                     progress=False)
    save_checkpoint(o / "m.pt", model, "resnet_tiny", KW)


def _train_lm(w, o, lr):
    from coar.paper.training import train_language_model

    train_language_model(torch.nn.Identity(), torch.arange(100), steps=1, length=8, lr=lr, progress=False)


def _save_nonfinite_weights(w, o):
    model, _ = _model(w)
    state = model.state_dict()
    state["layers.1.0.conv2.weight"].view(-1)[5] = float("nan")
    state["linear.weight"][1, 2] = float("inf")
    save_checkpoint(o / "m.pt", model, "resnet_tiny", KW)


def _train_classifier_on(w, o, model, labels):
    from coar.paper.training import train_classifier

    x = torch.randn(len(labels), 1, 28, 28)
    train_classifier(build_model(model, **KW), x, torch.tensor(labels), epochs=1, progress=False)


def _write_nonfinite(w, o):
    store = ShardStore.create_or_open(o.parent / "store", read_meta(w / "train/0"))
    out = np.zeros((2, N))
    out[1, 3] = np.nan
    store.write(np.array([4, 5]), out)


def _fashion_mnist(w, o, **kw):
    from coar.paper.data.fashion_mnist import fashion_mnist_examples

    fashion_mnist_examples("test", 5, 0, **kw).save(o / "ex.npz")


def _demo(w, o):
    from coar.paper.demo import run_demo

    run_demo(w / "demo_old", DemoConfig(masks=50), quiet=True)


LIB_CASES = [
    pytest.param(_sample, {"alpha": 0.004}, CoarError, ["alpha 0.004", "104", "0.416"], id="sample-store-alpha"),
    pytest.param(_sample, {"alpha": 0.1, "ablation": "scale", "gamma": -0.5}, CoarError, ["gamma", "-0.5"],
                 id="sample-store-gamma"),
    pytest.param(_sample, {"alpha": 0.1, "ablation": "shrink"}, CoarError, ["ablation", "'shrink'"],
                 id="sample-store-ablation"),
    pytest.param(_sample, {"alpha": 0.1, "output": "logit:x"}, CoarError, ["'logit:x'"], id="sample-store-output"),
    pytest.param(_sample, {"alpha": 0.1, "precision": "float64"}, CoarError, ["precision", "'float64'"],
                 id="sample-store-precision"),
    pytest.param(_save_nonfinite, {"where": "weights"}, CoarError,
                 ["weights", "2 non-finite", "example 2, component 5", "a.npz"], id="save-nonfinite-weights"),
    pytest.param(_save_nonfinite, {"where": "bias"}, CoarError, ["bias", "example 3", "-inf"],
                 id="save-nonfinite-bias"),
    pytest.param(lambda w, o: _fit(w, o, "train/0", "mix/a2"), {}, StoreMismatchError, ["train/0", "mix/a2", "alpha"],
                 id="fit-stores-mixed-alpha"),
    pytest.param(lambda w, o: _fit(w, o, "mix/scale5", "mix/scale25"), {}, StoreMismatchError, ["gamma"],
                 id="fit-stores-mixed-gamma"),
    pytest.param(lambda w, o: _fit(w, o, "train/0", method="bayes"), {}, CoarError, ["'bayes'", "lowrank"],
                 id="fit-stores-unknown-method"),
    pytest.param(lambda w, o: _fit(w, o, "train/0", "train/1", max_masks=500), {}, CoarError, ["500", "only 80"],
                 id="fit-stores-too-few-masks"),
    pytest.param(lambda w, o: _fit(w, o, "train/0", method="ridge", lambdas=[float("nan")]), {}, CoarError,
                 ["lambdas", "nan"], id="fit-stores-nan-lambda"),
    pytest.param(lambda w, o: _fit(w, o), {}, CoarError, ["no mask stores"], id="fit-stores-none"),
    pytest.param(lambda w, o: _evaluate(w, o, "coar.npz", "test/0", "train/0"), {}, CoarError,
                 ["train/0", "training masks", "'x'"], id="evaluate-stores-training-masks"),
    pytest.param(lambda w, o: _evaluate(w, o, "coar.npz", "test/ex2"), {}, CoarError, ["test/ex2", "examples"],
                 id="evaluate-stores-other-examples"),
    pytest.param(lambda w, o: _evaluate(w, o, "loo.npz", "test/ex2"), {}, CoarError, ["test/ex2", "examples"],
                 id="evaluate-stores-baseline-other-examples"),
    pytest.param(lambda w, o: _evaluate(w, o, "coar.npz"), {}, CoarError, ["no test stores"],
                 id="evaluate-stores-none"),
    pytest.param(lambda w, o: _scatter(w, o, "coar.npz", "test/m2"), {}, CoarError, ["test/m2", "model"],
                 id="scatter-table-other-model"),
    pytest.param(lambda w, o: _scatter(w, o, "coar.npz", "train/0"), {}, CoarError, ["training masks"],
                 id="scatter-table-training-masks"),
    pytest.param(_references, {"targets": [0], "n_random": 12}, CoarError, ["12 random references", "11 examples"],
                 id="edit-references-too-many"),
    pytest.param(_references, {"targets": [1, 1], "n_random": 3}, CoarError, ["repeat", "[1]"],
                 id="edit-references-duplicate-targets"),
    pytest.param(_references, {"targets": [1], "refs": [1, 2]}, CoarError, ["[1]", "both"],
                 id="edit-references-overlap"),
    pytest.param(_references, {"targets": [1]}, CoarError, ["either"], id="edit-references-neither"),
    pytest.param(_scores, {"targets": [4, 4], "refs": [1]}, CoarError, ["targets repeat", "[4]"],
                 id="edit-scores-duplicate-targets"),
    pytest.param(_scores, {"targets": [4], "refs": [4, 5]}, CoarError, ["[4]", "both"], id="edit-scores-overlap"),
    pytest.param(_check_edit, {"model": "m2.pt"}, CoarError, ["coar.npz", "model"], id="check-edit-other-model"),
    pytest.param(_check_edit, {"examples": "ex2.npz"}, CoarError, ["ex2.npz", "examples"],
                 id="check-edit-other-examples"),
    pytest.param(_train, {"lr": float("nan")}, CoarError, ["learning rate", "nan"], id="train-classifier-lr-nan"),
    pytest.param(_train, {"lr": 0.0}, CoarError, ["learning rate", "0.0"], id="train-classifier-lr-zero"),
    pytest.param(_train_lm, {"lr": -1e-3}, CoarError, ["learning rate", "-0.001"], id="train-lm-lr-negative"),
    pytest.param(_save_nonfinite_weights, {}, CoarError,
                 ["m.pt not written", "layers.1.0.conv2.weight holds 1 non-finite value(s)", "nan"],
                 id="save-checkpoint-nonfinite-weights"),
    pytest.param(_train_classifier_on, {"model": "gpt2_tiny", "labels": [0, 1]}, CoarError,
                 ["GPT2LMHeadModel cannot take the training inputs (1, 28, 28)"], id="train-classifier-language-model"),
    pytest.param(_train_classifier_on, {"model": "resnet_tiny", "labels": [0, 12]}, CoarError,
                 ["training labels range over 0..12", "10 classes"], id="train-classifier-labels-outside-classes"),
    pytest.param(_write_nonfinite, {}, CoarError, ["non-finite", "rows [5]", "row (mask) 5, example 3 (value nan)",
                                                   "nothing written"], id="store-write-nonfinite"),
    pytest.param(_fashion_mnist, {"pad_to": 20}, CoarError, ["pad_to 20", "28 x 28"],
                 id="fashion-mnist-pad-to-smaller"),
    pytest.param(_fashion_mnist, {"root": "/nonexistent/fashion-mnist"}, CoarError,
                 ["Fashion-MNIST not found in /nonexistent/fashion-mnist"], id="fashion-mnist-missing-root"),
    pytest.param(_demo, {}, CoarError, ["demo_old", "other settings", "masks: 100 there, 50 now"],
                 id="demo-rerun-with-other-settings"),
]


@pytest.mark.parametrize("call,kwargs,error,expected", LIB_CASES)
def test_library_refuses(world, tmp_path, call, kwargs, error, expected):
    """The typed error, a message naming what is wrong, and nothing written under the output directory."""
    o = tmp_path / "o"
    o.mkdir()
    before = {p: p.stat().st_mtime_ns for p in world.rglob("*")}
    with pytest.raises(error) as info:
        call(world, o, **kwargs)
    for text in expected:
        assert text in str(info.value), f"{text!r} not in: {info.value}"
    assert not any(o.iterdir()), sorted(o.rglob("*"))
    assert {p: p.stat().st_mtime_ns for p in world.rglob("*")} == before


READ_ONLY = [
    pytest.param(TRAIN + ["--out", "{ro}/m.pt"], id="train"),
    pytest.param(SAMPLE + ["--alpha", "0.1", "--out", "{ro}/s"], id="sample"),
    pytest.param(FIT + ["--out", "{ro}/sub/a.npz"], id="fit"),
    pytest.param(BASE + ["--out", "{ro}/b.npz"], id="baseline"),
    pytest.param(["evaluate", "--attributions", "{w}/coar.npz", "--out", "{ro}/c.csv", "--stores", "{w}/test/0"],
                 id="evaluate"),
    pytest.param(["edit", "--attributions", "{w}/coar.npz", "--checkpoint", "{w}/m.pt", "--k", "2", "--targets", "0",
                  "--references-random", "5", "--out", "{ro}/e.pt"], id="edit"),
    pytest.param(["prepare", "fashion-mnist", "--root", "{w}/fm", "--n", "5", "--out", "{ro}/ex.npz"], id="prepare"),
    pytest.param(["dataset", "fashion-mnist", "--root", "{w}/fm", "--out", "{ro}/fm.json"], id="dataset"),
    pytest.param(["components", "resnet_tiny", "--csv", "{ro}/c.csv"], id="components"),
    pytest.param(["demo", "--out", "{ro}/demo"], id="demo"),
]


@pytest.mark.parametrize("argv", READ_ONLY)
def test_cli_refuses_an_unwritable_directory_before_any_work(world, tmp_path, capsys, monkeypatch, argv):
    """An output in a read-only directory: exit 2 naming the directory, before any work. Root may write to a
    directory without write permission, so for root the permission check is told the directory is
    read-only."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:
        access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: (Path(p) != ro or not mode & os.W_OK)
                            and access(p, mode, **k))
    try:
        code, err = _cli([a.format(w=world, ro=ro) for a in argv], capsys)
        flag = "--csv" if "--csv" in argv else "--out"
        assert code == 2 and f"{flag} {ro}/" in err and f"the directory {ro} is not writable" in err, err
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_cli_full_disk_names_the_path_and_leaves_nothing(world, tmp_path, capsys, monkeypatch):
    """A full disk: while a shard's files are reserved (not later, as a SIGBUS in a mapped write), while an
    attribution file is flushed, while a checkpoint is saved: exit 2 naming the path, no file left."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if hasattr(os, "posix_fallocate"):
        monkeypatch.setattr(os, "posix_fallocate", full)
        out = tmp_path / "s"
        code, err = _cli([a.format(w=world) for a in SAMPLE] + ["--alpha", "0.1", "--out", str(out)], capsys)
        assert code == 2 and f"cannot create shard {out}" in err and "No space left on device (masks.npy)" in err, err
        assert f"({10 * 104 + 10 * N * 2 + 10:,} bytes, 0.0 MiB)" in err and "Traceback" not in err, err
        assert not any(tmp_path.iterdir()), sorted(tmp_path.iterdir())
        monkeypatch.undo()

    monkeypatch.setattr(os, "fsync", full)
    code, err = _cli(["fit", "--stores", str(world / "train/0"), "--out", str(tmp_path / "a.npz")], capsys)
    assert code == 2 and f"{tmp_path / 'a.npz'}: No space left on device" in err, err
    assert not any(tmp_path.iterdir()), sorted(tmp_path.iterdir())
    monkeypatch.undo()

    def save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half")
        full()

    monkeypatch.setattr(torch, "save", save)
    code, err = _cli([a.format(w=world) for a in TRAIN] + ["--out", str(tmp_path / "m.pt")], capsys)
    assert code == 2 and f"{tmp_path / 'm.pt'}: No space left on device" in err, err
    assert not any(tmp_path.iterdir()), sorted(tmp_path.iterdir())


# ----------------------------------------------------------------------------- what is recorded, what still passes


def test_fit_records_the_provenance_of_its_stores(world):
    prov = Attributions.load(world / "coar.npz").meta["provenance"]
    meta = read_meta(world / "train/0")
    for key in ("model_fingerprint", "examples_fingerprint", "components_fingerprint", "alpha", "scheme", "ablation",
                "gamma", "output_fn", "n_components", "n_examples"):
        assert prov[key] == meta[key], key
    assert prov["shards"] == [[0, 0], [0, 1]]


def test_fit_on_a_prefix_records_only_the_stores_it_used(world):
    from coar.pipeline import fit_stores

    attr = fit_stores([world / "train/0", world / "train/1"], max_masks=30)
    assert attr.meta["provenance"]["shards"] == [[0, 0]] and attr.meta["n_masks"] == 30


def test_baseline_records_the_fingerprints_of_its_inputs(world):
    prov = Attributions.load(world / "loo.npz").meta["provenance"]
    meta = read_meta(world / "test/0")
    for key in ("model_fingerprint", "examples_fingerprint", "components_fingerprint", "n_examples", "output_fn"):
        assert prov[key] == meta[key], key
    assert "shards" not in prov


def test_matching_inputs_pass_and_files_without_provenance_are_not_checked(world, tmp_path, capsys):
    from coar.pipeline import evaluate_stores

    attrs = {n: Attributions.load(world / f"{n}.npz") for n in ("coar", "loo")}
    assert len(evaluate_stores(attrs, [world / "test/0"])) == 2 * N
    # written before provenance existed: accepted on stores of another model (nothing to check against)
    assert len(evaluate_stores({"legacy": Attributions.load(world / "legacy.npz")}, [world / "test/m2"])) == N
    # every other example as a reference is allowed: exactly as many as there are
    code, err = _cli(["edit", "--attributions", str(world / "coar.npz"), "--checkpoint", str(world / "m.pt"),
                      "--targets", "0", "--references-random", str(N - 1), "--k", "2", "--examples",
                      str(world / "ex.npz"), "--out", str(tmp_path / "e.pt")], capsys)
    assert code == 0 and (tmp_path / "e.pt").is_file(), err


@pytest.mark.parametrize("method", ["nc", "ii"])
def test_cli_baselines_without_ablation_run(world, tmp_path, method):
    """NC and II take no ablation mode: the CLI passes it to LOO and GP only."""
    assert main(["baseline", "--method", method, "--checkpoint", str(world / "m.pt"), "--examples",
                 str(world / "ex5.npz"), "--out", str(tmp_path / "b.npz"), "--device", "cpu"]) == 0
    a = Attributions.load(tmp_path / "b.npz")
    assert a.n_examples == 5 and np.isfinite(a.weights).all()
    assert a.meta["provenance"]["ablation"] is None


# ------------------------------------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_in_sample_says_what_was_kept_and_the_same_command_resumes_bitwise(world, tmp_path, capsys,
                                                                                   monkeypatch):
    from coar import engine

    argv = [a.format(w=world) for a in SAMPLE] + ["--masks", "64", "--alpha", "0.1", "--seed", "5",
                                                  "--masks-per-pass", "2"]
    assert main(argv + ["--out", str(tmp_path / "ref")]) == 0
    calls, real = [], engine.Engine.__call__

    def interrupted(self, keep, progress=False):
        calls.append(len(keep))
        if len(calls) == 3:  # two blocks of masks are in the store
            raise KeyboardInterrupt
        return real(self, keep, progress)

    monkeypatch.setattr(engine.Engine, "__call__", interrupted)
    code, err = _cli(argv + ["--out", str(tmp_path / "s")], capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines() == [f"coar sample: interrupted; the masks finished so far are kept in "
                                        f"{tmp_path / 's'}; the same command resumes from them"]
    with ShardStore.open(tmp_path / "s", readonly=True) as part:
        assert 0 < part.done.sum() < 64
    monkeypatch.setattr(engine.Engine, "__call__", real)
    assert main(argv + ["--out", str(tmp_path / "s")]) == 0
    with ShardStore.open(tmp_path / "s", readonly=True) as got, ShardStore.open(tmp_path / "ref", readonly=True) as ref:
        assert got.is_complete and np.array_equal(np.asarray(got.outputs), np.asarray(ref.outputs))


def test_ctrl_c_in_train_writes_no_checkpoint(world, tmp_path, capsys, monkeypatch):
    import coar.paper.training as training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_classifier", interrupted)
    code, err = _cli([a.format(w=world) for a in TRAIN] + ["--out", str(tmp_path / "m.pt")], capsys)
    assert code == 130 and "Traceback" not in err and "coar train: interrupted; no checkpoint was written" in err
    assert not any(tmp_path.iterdir())
