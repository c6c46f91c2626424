"""The API, the CLI and the workflow's plan agree on every drawn setting of a COAR run (coar.settings), and
the API and the CLI on every drawn edit.

Hypothesis draws the settings of one attribution run, valid and invalid alike: the mask design (masks, alpha,
seed, scheme), what is recorded (output, ablation, gamma) and the regression (method and its estimator
options, a prior or none). Each drawn run goes through the three entry points:

- the API: ``coar.attribute(model, x, y, ..., method=FitSettings(...))``;
- the CLI: ``coar sample`` then ``coar fit`` (in process, on a checkpoint of the same model);
- the plan: a workflow config whose setup carries the same values, planned and checked.

The invariant: an oracle written here from the rules (not from the code) says whether the run is valid. If it
is, every entry point accepts it and the attributions are finite, [N, C]; if not, every entry point refuses
it with a CoarError (exit status 2 on the command line) naming one of the settings the oracle finds invalid,
in the entry point's own vocabulary (argument, --flag, config key), and nothing is left behind.

Where an entry point cannot express a setting it is not compared on it: `coar sample` takes --gamma only with
--ablation scale (elsewhere the flag does nothing and is refused as such), and the plan draws evaluation masks
with seed + 1, so its setup seed stops one short of the largest seed.
"""
import copy
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import coar
from coar.attributions import Attributions
from coar.cli import main
from coar.errors import ArgumentError
from coar.examples import Examples
from coar.paper.models import build_model
from coar.paper.plan import ConfigError, Plan, check_schema, resolve_parents
from coar.paper.training import save_checkpoint
from coar.settings import MAX_SEED

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
KW = {"num_classes": 10, "in_channels": 1, "image_size": 28}
C, N, CLASSES = 104, 4, 10  # resnet_tiny's component count (setup A of the default preset)
CASES = 1000

# --- draws ------------------------------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
EDGE_ALPHAS = [0.0, 1.0, -0.1, NAN, INF, 0.5 / C, 0.51 / C, 0.49 / C, 1.5 / C, 103.4 / C, 103.5 / C, 103.6 / C, 0.995,
               0.996, 1e-9]
FIT_METHODS = ["ols", "ridge", "prior", "lowrank", "lasso", "lars"]


def mostly(valid, invalid, weight=10):
    """`valid` about `weight` times as often as `invalid`, so that about a third of the runs are valid."""
    return st.sampled_from(range(weight + 1)).flatmap(lambda i: invalid if i == 0 else valid)


OPTION_VALUES = {"lambdas": (st.lists(st.sampled_from([0.0, 1.0, 10.0]), min_size=1, max_size=3),
                             st.lists(st.sampled_from([1.0, -1.0, NAN]), max_size=3)),
                 "select": (st.sampled_from(["gcv", "holdout"]), st.just("cv")),
                 "ranks": (st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=3),
                           st.lists(st.sampled_from([1, -1]), max_size=2)),
                 "ratios": (st.lists(st.sampled_from([1.0, 0.1]), min_size=1, max_size=3),
                            st.lists(st.sampled_from([1.0, -0.1]), max_size=2)),
                 "l1_ratio": (st.sampled_from([0.5, 1.0]), st.sampled_from([0.0, 1.5])),
                 "holdout_fraction": (st.sampled_from([0.2, 0.5]), st.sampled_from([0.0, 1.0, 0.9]))}
TAKES = {"ols": (), "ridge": ("lambdas",), "prior": ("lambdas", "select", "holdout_fraction"),
         "lowrank": ("lambdas", "select", "ranks", "holdout_fraction"), "lasso": ("ratios", "l1_ratio",
                                                                                   "holdout_fraction")}


@st.composite
def runs(draw):
    run = {
        "masks": draw(mostly(st.integers(2, 40), st.sampled_from([-1, 0, 1, 2.5, True]))),
        "alpha": draw(mostly(st.floats(0.02, 0.5), st.one_of(st.floats(0.0, 0.03), st.sampled_from(EDGE_ALPHAS)))),
        "seed": draw(mostly(st.integers(0, 9), st.sampled_from([-1, MAX_SEED - 1, MAX_SEED, MAX_SEED + 1, 2 ** 64]))),
        "scheme": draw(mostly(st.sampled_from(["exact", "bernoulli", "balanced"]), st.just("uniform"))),
        "output": draw(mostly(st.sampled_from(["margin", "logit:0", "logit:9"]),
                              st.sampled_from(["logit:10", "logit:-1", "logit:x", "loss"]))),
        "ablation": draw(mostly(st.sampled_from(["zero", "scale"]), st.just("shrink"))),
        "gamma": draw(mostly(st.floats(0, 1), st.sampled_from([-0.1, 1.5, NAN]))),
        "method": draw(mostly(st.sampled_from(FIT_METHODS[:-1]), st.just("lars"), weight=10)),
    }
    run["prior"] = draw(mostly(st.just(run["method"] == "prior"), st.just(run["method"] != "prior")))
    own = TAKES.get(run["method"], ())
    keys = draw(mostly(st.lists(st.sampled_from(own), max_size=2, unique=True) if own else st.just([]),
                       st.lists(st.sampled_from(sorted(OPTION_VALUES)), min_size=1, max_size=2, unique=True), 3))
    for key in keys:
        run[key] = draw(mostly(*OPTION_VALUES[key], weight=4))
    return run


# --- the oracle: the rules, restated -------------------------------------------------------------------------------
def _integer(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def invalid(run, entry):
    """The settings of `run` that break a rule, for entry point `entry` ("api", "cli" or "plan")."""
    bad = set()
    m, a = run["masks"], run["alpha"]
    if not (_integer(m) and m >= 2):
        bad.add("masks")
    if not (_number(a) and 0 < a < 1 and 1 <= round(a * C) <= C - 1):
        bad.add("alpha")
    top = MAX_SEED - 1 if entry == "plan" else MAX_SEED  # the plan's evaluation masks use seed + 1
    if not (_integer(run["seed"]) and 0 <= run["seed"] <= top):
        bad.add("seed")
    if run["scheme"] not in ("exact", "bernoulli", "balanced"):
        bad.add("scheme")
    out = run["output"]
    if not (out == "margin" or (out.startswith("logit:") and out[6:].isdigit() and int(out[6:]) < CLASSES)):
        bad.add("output")
    if run["ablation"] not in ("zero", "scale"):
        bad.add("ablation")
    if not (_number(run["gamma"]) and 0 <= run["gamma"] <= 1) and not (entry == "cli" and run["ablation"] != "scale"):
        bad.add("gamma")
    method = run["method"]
    takes = {"lambdas": ("ridge", "prior", "lowrank"), "select": ("prior", "lowrank"), "ranks": ("lowrank",),
             "ratios": ("lasso",), "l1_ratio": ("lasso",), "holdout_fraction": ("prior", "lowrank", "lasso")}
    known = method in ("ols", "ridge", "prior", "lowrank", "lasso")
    if not known:  # which options apply is unknown: only their values are judged
        bad.add("method")
    elif run["prior"] != (method == "prior"):
        bad.add("prior")
    for key, methods in takes.items():
        if known and key in run and method not in methods:
            bad.add(key)
    checks = {"lambdas": lambda v: v and all(_number(x) and x >= 0 for x in v),
              "select": lambda v: v in ("gcv", "holdout"),
              "ranks": lambda v: v and all(x >= 0 for x in v),
              "ratios": lambda v: v and all(x >= 0 for x in v),
              "l1_ratio": lambda v: 0 < v <= 1, "holdout_fraction": lambda v: 0 < v < 1}
    for key, ok in checks.items():
        if key in run and key not in bad and not ok(run[key]):
            bad.add(key)
    holdout = method == "lasso" or (method in ("prior", "lowrank") and run.get("select") == "holdout")
    if known and "holdout_fraction" in run and not holdout:
        bad.add("holdout_fraction")
    if holdout and "masks" not in bad and "holdout_fraction" not in bad and "select" not in bad:
        held = round(run.get("holdout_fraction", 0.2) * m)
        if held < 1 or m - held < 2:
            bad.add("holdout_fraction")
    return bad


# --- the three entry points ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """resnet_tiny on N random Fashion-MNIST-shaped images: its checkpoint, the examples, a leave-one-out prior
    (computed by `coar baseline`, so it carries the provenance of this model and these examples), and the
    default preset's setup A as the plan's template."""
    w = tmp_path_factory.mktemp("agree")
    torch.manual_seed(0)
    model = build_model("resnet_tiny", **KW).eval()
    save_checkpoint(w / "m.pt", model, "resnet_tiny", KW, {})
    rng = np.random.default_rng(0)
    ex = Examples(rng.integers(0, 256, (N, 1, 28, 28), dtype=np.uint8), np.arange(N, dtype=np.int64), "image",
                  {"mean": 0.5, "std": 0.5})
    ex.save(w / "ex.npz")
    assert main(["baseline", "--method", "loo", "--checkpoint", str(w / "m.pt"), "--examples", str(w / "ex.npz"),
                 "--device", "cpu", "--out", str(w / "loo.npz")]) == 0
    from coar.paper.training import load_checkpoint

    model, _ = load_checkpoint(w / "m.pt")
    setup = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["setups"]["A"]
    setup.update(shards=1, alpha_test=[0.1], test_masks=20, baselines=["loo"])
    # The API's prior: the same leave-one-out attributions, computed in memory as an API user would (the
    # CLI's file records the fingerprint of the example file, which tensors do not have).
    x, y = ex.tensors("cpu")
    from coar.baselines import compute_baseline
    from coar.components import component_set
    from coar.outputs import margin

    prior = compute_baseline("loo", model, component_set(model, "resnet_tiny"), x, y, margin)
    return {"dir": w, "model": model, "x": (x, y), "prior": prior, "setup": setup}


def fit_settings(run, prior):
    keys = ("lambdas", "select", "ranks", "ratios", "l1_ratio", "holdout_fraction")
    return coar.FitSettings(run["method"], prior=prior if run["prior"] else None,
                            **{k: tuple(run[k]) if isinstance(run[k], list) else run[k] for k in keys if k in run})


def via_api(world, run):
    """(None, attributions) or (the named argument, None)."""
    x, y = world["x"]
    method = fit_settings(run, world["prior"])
    try:
        attr = coar.attribute(world["model"], x, y, components="resnet_tiny", masks=run["masks"], alpha=run["alpha"],
                              seed=run["seed"], scheme=run["scheme"], output=run["output"], ablation=run["ablation"],
                              gamma=run["gamma"], method=method, progress=False)
    except ArgumentError as e:
        return e.argument.replace("method.", ""), None
    return None, attr


CLI_FIELDS = {"--masks": "masks", "the stores hold": "masks", "--alpha": "alpha", "--seed": "seed", "--scheme": "scheme", "--output": "output",
              "--ablation": "ablation", "--gamma": "gamma", "--method": "method", "--prior": "prior",
              "--lambdas": "lambdas", "--select": "select", "--ranks": "ranks", "--ratios": "ratios",
              "--l1-ratio": "l1_ratio", "--holdout-fraction": "holdout_fraction"}


def _named(message, vocabulary):
    """The setting a refusal message names first: the earliest of the vocabulary's names in its error line
    (argparse prints its usage line before)."""
    message = next((line for line in message.splitlines() if "error" in line), message)
    hits = [(message.find(name), field) for name, field in vocabulary.items() if name in message]
    return min(hits)[1] if hits else f"<none named: {message}>"


def via_cli(world, run, out, capsys):
    """`coar sample` then `coar fit`: (None, attributions) or (the named setting, None)."""
    w = world["dir"]
    sample = ["sample", "--checkpoint", str(w / "m.pt"), "--examples", str(w / "ex.npz"), "--masks", str(run["masks"]),
              "--alpha", repr(run["alpha"]), "--seed", str(run["seed"]), "--scheme", run["scheme"],
              "--output", run["output"], "--ablation", run["ablation"], "--device", "cpu", "--quiet",
              "--out", str(out / "store")]
    if run["ablation"] == "scale":
        sample += ["--gamma", repr(run["gamma"])]
    fit = ["fit", "--stores", str(out / "store"), "--method", run["method"], "--out", str(out / "a.npz")]
    if run["prior"]:
        fit += ["--prior", str(w / "loo.npz")]
    for key in ("lambdas", "select", "ranks", "ratios", "l1_ratio", "holdout_fraction"):
        if key in run:
            value = run[key]
            fit += [f"--{key.replace('_', '-')}", ",".join(map(repr, value)) if isinstance(value, list) else str(value)]
    for argv, made in ((sample, out / "store"), (fit, out / "a.npz")):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: a value of the wrong type
            code = e.code
        err = capsys.readouterr().err
        if code != 0:
            assert code == 2, err
            assert not made.exists(), f"a refused `coar {argv[0]}` left {made} behind"
            return _named(err, CLI_FIELDS), None
    return None, Attributions.load(out / "a.npz")


PLAN_FIELDS = {"masks": "masks", "alpha_train": "alpha", "seed": "seed", "scheme": "scheme", "output": "output",
               "ablation": "ablation", "gamma": "gamma", "regression": "method", "estimator.prior": "prior",
               "lambdas": "lambdas", "estimator.lambdas": "lambdas", "estimator.select": "select",
               "estimator.ranks": "ranks", "estimator.ratios": "ratios", "estimator.l1_ratio": "l1_ratio",
               "estimator.holdout_fraction": "holdout_fraction"}


def via_plan(world, run):
    """Plan a one-setup config carrying the run's values: None, or the setting its ConfigError names."""
    from snakemake.utils import validate

    s = copy.deepcopy(world["setup"])
    s.update(masks=run["masks"], alpha_train=run["alpha"], seed=run["seed"], scheme=run["scheme"],
             output=run["output"], ablation=run["ablation"], gamma=run["gamma"], regression=run["method"])
    est = {k: run[k] for k in ("select", "ranks", "ratios", "l1_ratio", "holdout_fraction") if k in run}
    if run["prior"]:
        est["prior"] = "loo"
    if "lambdas" in run:
        if run["method"] == "ridge":
            s["lambdas"] = run["lambdas"]
        else:
            est["lambdas"] = run["lambdas"]
    if est:
        s["estimator"] = est
    config = {"preset": "agreement", "setups": {"A": s}, "figures": {}, "edits": {}}
    try:
        resolve_parents(config)
        check_schema(config, SCHEMA)
        validate(config, str(SCHEMA))
        Plan(config).check()
    except ConfigError as e:
        keys = {f"setups.A.{k}": f for k, f in PLAN_FIELDS.items()}
        return _named(str(e), keys)
    return None


@settings(max_examples=CASES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(run=runs())
def test_api_cli_and_plan_agree_on_every_drawn_setting(world, capsys, run):
    event("valid" if not invalid(run, "api") else "refused")
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "o"
        verdicts = {"api": via_api(world, run), "cli": via_cli(world, run, out, capsys),
                    "plan": (via_plan(world, run), None)}
        for entry, (named, attr) in verdicts.items():
            bad = invalid(run, entry)
            if not bad:
                assert named is None, (entry, run, named)
                if attr is not None:
                    assert attr.weights.shape == (N, C) and np.isfinite(attr.weights).all(), (entry, run)
            else:
                assert named in bad, (entry, run, named, bad, {e: v[0] for e, v in verdicts.items()})


# --- edits: the API and the CLI ------------------------------------------------------------------------------------
EDIT_CASES = 300
INDICES = st.lists(st.integers(-1, N), max_size=3)


@st.composite
def edits(draw):
    """targets, references (some overlapping, repeated, out of range or empty), k and the direction."""
    return {"targets": draw(mostly(st.lists(st.integers(0, 1), min_size=1, max_size=2, unique=True), INDICES, 4)),
            "references": draw(mostly(st.lists(st.integers(2, N - 1), min_size=1, max_size=2, unique=True),
                                      INDICES, 4)),
            "k": draw(mostly(st.integers(1, C - 1), st.sampled_from([-1, 0, C, C + 1]))),
            "direction": draw(mostly(st.sampled_from(["increase", "decrease"]), st.just("sideways")))}


def invalid_edit(e):
    bad = set()
    for key in ("targets", "references"):
        v = e[key]
        if not v or len(set(v)) != len(v) or not all(0 <= i < N for i in v):
            bad.add(key)
    if "targets" not in bad and "references" not in bad and set(e["targets"]) & set(e["references"]):
        bad.add("references")
    if not 1 <= e["k"] <= C - 1:
        bad.add("k")
    if e["direction"] not in ("increase", "decrease"):
        bad.add("direction")
    return bad


@settings(max_examples=EDIT_CASES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(e=edits())
def test_api_and_cli_agree_on_every_drawn_edit(world, capsys, e):
    """coar.edit and `coar edit` on the same attributions (the leave-one-out file, which records this model and
    these examples): both accept and ablate the same components, or both refuse naming an invalid setting."""
    w, bad = world["dir"], invalid_edit(e)
    event("valid" if not bad else "refused")
    attr = Attributions.load(w / "loo.npz")
    mode = {"increase": "fix", "decrease": "induce"}.get(e["direction"], e["direction"])
    try:
        _, ablated = coar.edit(world["model"], attr, "resnet_tiny", targets=e["targets"], references=e["references"],
                               k=e["k"], mode=mode)
        api = None
    except ArgumentError as err:
        api = {"mode": "direction"}.get(err.argument, err.argument)
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "edited.pt"
        argv = ["edit", "--attributions", str(w / "loo.npz"), "--checkpoint", str(w / "m.pt"),
                "--targets", ",".join(map(str, e["targets"])), "--references", ",".join(map(str, e["references"])),
                "--k", str(e["k"]), "--direction", e["direction"], "--out", str(out)]
        try:
            code = main(argv)
        except SystemExit as err:
            code = err.code
        err = capsys.readouterr()
        cli = None if code == 0 else _named(err.err, {f"--{k}": k for k in ("targets", "references", "k",
                                                                              "direction")})
        if code == 0:
            from coar.paper.training import load_checkpoint

            assert load_checkpoint(out)[1]["meta"]["edit"]["ablated"] == ablated.tolist(), e
        else:
            assert code == 2 and not out.exists(), err.err
    if bad:
        assert api in bad and cli in bad, (e, api, cli, bad)
    else:
        assert api is None and cli is None, (e, api, cli)
