"""coar.settings: the one check of a sampling run's and a fit's settings, and the entry points that had their
own (the workflow's plan and fit job, the efficiency study). The API, the CLI and the plan are compared on drawn
settings in tests/test_settings_agreement.py."""
import json
import math

import numpy as np
import pytest

from coar.attributions import Attributions
from coar.errors import ArgumentError, CoarError
from coar.settings import MAX_SEED, FitSettings, SampleSettings
from tests.test_estimators import planted_stores
from tests.test_plan import fails, load


# --------------------------------------------------------------------------------------------- the objects
@pytest.mark.parametrize("settings,name,words", [
    (FitSettings("ols", ranks=(1,)), "ranks", ["with method ols", "lowrank only"]),
    (FitSettings("ridge", lambdas=()), "lambdas", ["non-empty list"]),
    (FitSettings("ridge", lambdas=(1.0, math.nan)), "lambdas", ["nan"]),
    (FitSettings("lowrank", couplings=(1.5,)), "couplings", ["[0, 1]"]),
    (FitSettings("lasso", l1_ratio=0.0), "l1_ratio", ["(0, 1]"]),
    (FitSettings("prior"), "prior", ["is needed with method prior"]),
    (FitSettings("ols", prior="loo"), "prior", ["does nothing with method ols"]),
    (FitSettings("prior", prior="loo", holdout_fraction=0.3), "holdout_fraction", ["unless select is holdout"]),
    (FitSettings("lars"), "method", ["ols, ridge, prior, lowrank, lasso"]),
])
def test_fit_settings_refuse_naming_the_field(settings, name, words):
    with pytest.raises(ArgumentError) as info:
        settings.validate()
    assert info.value.argument == name and all(w in info.value.problem for w in words), str(info.value)


def test_fit_settings_name_fields_in_the_callers_vocabulary_and_check_the_held_out_part():
    with pytest.raises(ArgumentError, match=r"^--l1-ratio: does nothing with --method ridge"):
        FitSettings("ridge", l1_ratio=0.5).validate({"l1_ratio": "--l1-ratio", "method": "--method"})
    FitSettings("lasso").validate(masks=10)  # 2 held out, 8 to fit
    with pytest.raises(ArgumentError, match="leaves 1 held out and 1 to fit"):
        FitSettings("lasso", holdout_fraction=0.5).validate(masks=2)
    fit = FitSettings("ridge").validate()
    assert fit.fit_lambdas == (0.1, 1.0, 10.0, 100.0, 1000.0) and fit.fit_kwargs()["method"] == "ridge"


def test_sample_settings_check_both_ends_and_the_model():
    SampleSettings(10, 0.1, seed=MAX_SEED).validate(n_components=20, num_classes=10)
    assert SampleSettings(10, 0.1, mechanism="shared").validate().mechanism == "shared"
    for kw, name in ((dict(seed=MAX_SEED + 1), "seed"), (dict(seed=True), "seed"), (dict(alpha=0.99), "alpha"),
                     (dict(output="logit:10"), "output"), (dict(gamma=math.nan), "gamma"), (dict(masks=1), "masks"),
                     (dict(scheme="uniform"), "scheme"), (dict(mechanism="fast"), "mechanism")):
        with pytest.raises(ArgumentError) as info:
            SampleSettings(**{"masks": 10, "alpha": 0.1, **kw}).validate(n_components=20, num_classes=10,
                                                                       min_masks=2)
        assert info.value.argument == name, info.value


# --------------------------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("change,key,words", [
    (dict(estimator={"ranks": [1]}), "setups.A.estimator.ranks", ["does nothing with setups.A.regression ols"]),
    (dict(regression="lasso", masks=4, estimator={"holdout_fraction": 0.1}), "setups.A.estimator.holdout_fraction",
     ["leaves 0 held out"]),
    (dict(output="logit:10"), "setups.A.output", ["0..9"]),
    (dict(in_channels=3), "setups.A.in_channels", ["fashion-mnist images have 1 channel(s)"]),
    (dict(num_classes=5), "setups.A.num_classes", ["fashion-mnist has 10 classes", "labels 5..9"]),
    (dict(seed=MAX_SEED), "setups.A.seed", ["leaves no seed + 1", "9,223,372,036,854,775,806"]),
    (dict(seed=MAX_SEED + 1), "setups.A.seed", ["got 9,223,372,036,854,775,808"]),
])
def test_the_plan_refuses_what_the_jobs_would(change, key, words):
    def edit(config):
        config["setups"]["A"].update(change)

    fails(load("default", edit), key, *words)


def test_the_schema_refuses_an_empty_ridge_grid():
    from coar.paper.plan import ConfigError

    with pytest.raises(ConfigError, match=r"`setups.A.lambdas`: \[\] should be non-empty"):
        load("default", lambda c: c["setups"]["A"].update(regression="ridge", lambdas=[]))


def test_the_fit_job_and_fig14_ridge_take_the_setup_settings_the_plan_checked():
    p = load("default", lambda c: c["setups"]["A"].update(regression="lowrank", estimator={"ranks": [0, 2]}))
    p.check()
    fit = FitSettings.from_spec(p.fit_spec("A")).validate()
    assert fit.method == "lowrank" and fit.ranks == (0, 2) and fit.lambdas is None
    ridge = FitSettings.from_spec(p.fit_spec("A", "ridge")).validate()  # estimator options belong to lowrank
    assert ridge.method == "ridge" and ridge.ranks is None and ridge.fit_lambdas == (0.1, 1.0, 10.0, 100.0, 1000.0)


# --------------------------------------------------------------------------------------------- the efficiency study
def _study(tmp_path, prior_model="model-x"):
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(6, 30)), rng.normal(size=6)
    stores = planted_stores(tmp_path, W, b, m=60)
    for name, paths in (("train", stores[:1]), ("test", stores[1:])):
        (tmp_path / f"{name}.json").write_text(json.dumps({"stores": paths, "masks": 60, "alpha": 0.2}))
    prior = Attributions(W, b, "loo", "comps-x", {"provenance": {"model_fingerprint": prior_model}})
    prior.save(tmp_path / "loo.npz")
    return tmp_path / "train.json", [tmp_path / "test.json"], [tmp_path / "loo.npz"]


def test_the_efficiency_study_refuses_a_prior_of_another_model_as_coar_fit_does(tmp_path):
    from coar.paper.efficiency import load_study

    train, tests, priors = _study(tmp_path)
    assert set(load_study(train, tests, priors, tmp_path.parent)[2]) == {"loo"}
    train, tests, priors = _study(tmp_path, prior_model="another")
    with pytest.raises(CoarError, match=r"the prior \(loo\) was computed for model another"):
        load_study(train, tests, priors, tmp_path.parent)


def test_the_efficiency_study_refuses_unknown_estimators_and_unreadable_receipts(tmp_path):
    from coar.paper.efficiency import load_study, run_setup

    train, tests, priors = _study(tmp_path)
    data = load_study(train, tests, priors, tmp_path.parent)
    with pytest.raises(CoarError, match="unknown estimator.*prior-gp"):
        run_setup("A", *data, names=["ols", "prior-gp"])
    train.write_text("{not json")
    with pytest.raises(CoarError, match=f"{train} is not a readable split receipt"):
        load_study(train, tests, priors, tmp_path.parent)


def test_the_efficiency_script_checks_its_outputs_before_the_study(tmp_path, monkeypatch):
    """A --csv that cannot be written fails at once (not after the study); here the results do not even exist."""
    import runpy
    import sys
    from pathlib import Path

    (tmp_path / "f").write_text("a file")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "efficiency.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--results", str(tmp_path / "none"),
                                      "--csv", str(tmp_path / "f" / "out.csv")])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(script), run_name="__main__")
    assert "--csv" in str(info.value.code) and "is a file, not a directory" in str(info.value.code)


def test_prepare_refuses_images_that_cannot_fit_in_memory_before_reading_the_data(tmp_path, capsys):
    from coar.cli import main

    argv = ["prepare", "fashion-mnist", "--root", str(tmp_path / "none"), "--channels", "100000", "--pad-to",
            "100000", "--out", str(tmp_path / "ex.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--channels/--pad-to:" in err and "PiB of memory" in err and not (tmp_path / "ex.npz").exists(), err


def test_receipts_are_read_back_with_the_rules_they_are_written_by(tmp_path):
    from coar.paper.receipts import read_shard, read_split, write_shard, write_split

    write_split(tmp_path / "split.json", ["results/A/masks/train/shard-000"], 500, 0.1)
    assert read_split(tmp_path / "split.json")["masks"] == 500
    with pytest.raises(CoarError, match="refusing to write the receipt .*'stores' must be a non-empty list"):
        write_split(tmp_path / "bad.json", [], 500, 0.1)
    assert not (tmp_path / "bad.json").exists()
    write_shard(tmp_path / "shard.json", "s", {"m": 10, "alpha": 0.1}, {"files": {"masks.npy": "ab"}})
    with pytest.raises(CoarError, match="shard.json is not a split receipt: 'stores'"):
        read_split(tmp_path / "shard.json")  # a shard receipt where a split's is expected
    with pytest.raises(CoarError, match="none.json is missing: it is written by the rule sample_shard"):
        read_shard(tmp_path / "none.json")
    (tmp_path / "split.json").write_text(json.dumps({"stores": ["s"], "masks": 10, "alpha": 1.5}))
    with pytest.raises(CoarError, match="'alpha' an ablation fraction in \\(0, 1\\)"):
        read_split(tmp_path / "split.json")
