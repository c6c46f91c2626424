"""coar.paper.plan, the workflow's plan, tested directly on the real presets: parent inheritance, the checks across
config keys, which setup owns each artifact, the paths and params the rules get, and the figure registry. (The
workflow's dry runs, tests/test_workflow.py, check the same through Snakemake.)"""
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coar.errors import CoarError
from coar.paper import plan
from coar.paper.plan import (FIGURES, LATE_KEYS, RULE_KEYS, ConfigError, Plan, check_duplicate_keys, check_schema,
                             resolve_parents)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
PRESETS = {"default": ROOT / "config" / "config.yaml", "paper": ROOT / "config" / "paper.yaml"}


def raw(preset: str) -> dict:
    """A preset as the Snakefile reads it (a --configfile replaces the default one whole)."""
    return yaml.safe_load(PRESETS[preset].read_text())


def prepared(config: dict) -> dict:
    """A config as rules/common.smk prepares it for Plan: parents resolved, schema checked, defaults filled in
    (by Snakemake's validate, as the workflow fills them)."""
    validate = pytest.importorskip("snakemake.utils").validate
    resolve_parents(config)
    check_schema(config, SCHEMA)
    validate(config, str(SCHEMA))
    return config


_PREPARED = {}


def load(preset: str, edit=None) -> Plan:
    """The plan of a preset, its raw config changed first by `edit(config)` when given."""
    if edit is None:
        if preset not in _PREPARED:
            _PREPARED[preset] = prepared(raw(preset))
        return Plan(copy.deepcopy(_PREPARED[preset]))
    config = raw(preset)
    edit(config)
    return Plan(prepared(config))


def fails(p: Plan, key: str, *words: str):
    """p.check() refuses the config, naming `key` (and saying `words`)."""
    with pytest.raises(ConfigError) as info:
        p.check()
    message = str(info.value)
    assert message.startswith(f"config error at `{key}` (preset "), message
    assert all(w in message for w in words), message
    return message


def test_the_module_imports_without_snakemake_yaml_or_jsonschema():
    code = ("import sys, coar.paper.plan; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('snakemake', 'yaml', 'jsonschema')]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_config_errors_are_coar_errors():
    assert issubclass(ConfigError, CoarError)


# --- parents ------------------------------------------------------------------------------------------------------

def _setups(**setups):
    return {"preset": "x", "setups": setups}


def test_a_variant_is_its_parent_with_its_keys_replaced_and_dicts_merged_one_level():
    config = _setups(
        A={"title": "A", "model": "m", "alpha_train": 0.1, "train": {"lr": 0.1, "epochs": 2},
           "examples": {"split": "test", "n": 10, "corruption": {"name": "blur", "severity": 3}}},
        B={"parent": "A", "alpha_train": 0.05, "train": {"epochs": 5},
           "examples": {"corruption": {"name": "noise"}}},
        C={"parent": "B", "title": "C's own", "model": "k"},
    )
    resolve_parents(config)
    a, b, c = (config["setups"][k] for k in "ABC")
    assert a == {"title": "A", "model": "m", "alpha_train": 0.1, "train": {"lr": 0.1, "epochs": 2},
                 "examples": {"split": "test", "n": 10, "corruption": {"name": "blur", "severity": 3}}}
    assert b["parent"] == "A" and b["model"] == "m" and b["alpha_train"] == 0.05
    assert b["train"] == {"lr": 0.1, "epochs": 5}  # one level: the parent's other keys kept
    assert b["examples"] == {"split": "test", "n": 10, "corruption": {"name": "noise"}}  # not two levels
    # a grandchild inherits through its parent, and keeps the parent it names
    assert c["parent"] == "B" and c["model"] == "k" and c["alpha_train"] == 0.05 and c["train"]["epochs"] == 5
    assert c["title"] == "C's own"


def test_a_variant_without_a_title_is_titled_by_what_it_changes():
    config = _setups(A={"title": "A: a model"}, B={"parent": "A", "alpha_train": 0.05, "masks": 10},
                     N={"model": "m"}, V={"parent": "N", "masks": 3})
    resolve_parents(config)
    assert config["setups"]["B"]["title"] == "A: a model | variant alpha_train=0.05, masks=10"
    assert "title" not in config["setups"]["V"]  # nothing to extend: the schema asks for one


@pytest.mark.parametrize("setups, key, words", [
    ({"A": {"parent": "Z"}, "B": {}}, "setups.A.parent", ["unknown setup 'Z'", "defined: A, B"]),
    ({"A": {"parent": "A"}}, "setups.A.parent", ["cycle A -> A"]),
    ({"A": {"parent": "B"}, "B": {"parent": "C"}, "C": {"parent": "A"}}, "setups.C.parent", ["cycle A -> B -> C -> A"]),
])
def test_bad_parents_are_refused_naming_the_key(setups, key, words):
    with pytest.raises(ConfigError) as info:
        resolve_parents(_setups(**setups))
    assert str(info.value).startswith(f"config error at `{key}`") and all(w in str(info.value) for w in words)


def test_setups_that_are_not_mappings_are_left_to_the_schema():
    config = {"setups": {"A": 3, "B": {"parent": "A"}}}
    with pytest.raises(ConfigError, match="unknown setup 'A'"):  # A is not a setup a variant can extend
        resolve_parents(config)
    config = {"setups": [1, 2]}
    resolve_parents(config)
    assert config == {"setups": [1, 2]}


def test_the_schema_check_names_every_bad_key():
    config = raw("default")
    config["setups"]["A"]["alpha_train"] = 1.5
    config["setups"]["B"]["masks"] = "many"
    resolve_parents(config)
    with pytest.raises(ConfigError) as info:
        check_schema(config, SCHEMA)
    message = str(info.value)
    assert message.startswith("invalid config (preset 'default'), ")
    assert "`setups.A.alpha_train`: 1.5" in message and "`setups.B.masks`: 'many'" in message
    # the variants of A inherit its value, and are named too
    assert "`setups.A_scale.alpha_train`" not in message and "`setups.A_train.alpha_train`: 1.5" in message


# --- checks across keys -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["default", "paper"])
def test_the_presets_pass_every_check(preset):
    load(preset).check()


def _set(path: str, value):
    """An edit of a raw config setting the value at a dotted path."""
    def edit(config):
        *where, last = path.split(".")
        node = config
        for k in where:
            node = node[k]
        node[last] = value
    return edit


@pytest.mark.parametrize("path, value, key, words", [
    ("setups.A.shards", 5000, "setups.A.shards", ["5000 shards for only 1000 masks"]),
    ("setups.A.model", "resnet_huge", "setups.A.model", ["unknown model 'resnet_huge'"]),
    ("setups.A.gamma", float("nan"), "setups.A.gamma", ["nan is not a finite number"]),
    ("setups.A.alpha_test", [0.1, 0.1], "setups.A.alpha_test", ["repeated values"]),
    ("setups.A.examples.n", 20000, "setups.A.examples.n", ["20000 examples", "has 10,000"]),
    ("setups.A.pretrained", True, "setups.A.pretrained", ["has no published weights"]),
    ("setups.G.output", "margin", "setups.G.output", ["needs output token_margin"]),
    ("setups.A_noise.examples.corruption.name", "fog", "setups.A_noise.examples.corruption.name", ["'fog'"]),
    ("figures.fig2.setups", ["A", "Q"], "figures.fig2.setups", ["unknown setup 'Q'"]),
    ("edits.fix_B.ks", [1, 2], "edits.fix_B.ks", ["must include k = 0"]),
    ("edits.forget_B.classes", [8, 10], "edits.forget_B.classes", ["below num_classes 10"]),
    ("edits.subpop_W.heldout_setup", "A", "edits.subpop_W.heldout_setup", ["must share the model"]),
    ("figures.fig4.class", 3, "figures.fig4", ["[3] not among edits.forget_B.classes"]),
    ("figures.fig3.edit", "forget_B", "figures.fig3.edit", ["kind fix or induce", "'forget_B' of kind 'forget'"]),
    ("figures.fig27.scale", "B", "figures.fig27", ["setups A and B must share the model and the examples"]),
    ("figures.fig14.setups", ["A", "B_a10"], "setups.B_a10.baselines", ["include loo"]),
    ("setups.A.alpha_test", [0.001, 0.1], "setups.A.alpha_test", ["alpha 0.001 ablates", "= 0 of setup A's C = 104"]),
    ("figures.fig25.alphas", [0.001], "figures.fig25.alphas", ["alpha 0.001 ablates"]),
    ("edits.fix_B.ks", [0, 1, 200], "edits.fix_B.ks", ["k = 200 ablates every component", "C = 200", "resnet_mini"]),
    ("edits.fix_B.ks", [0, 1, 100000], "edits.fix_B.ks", ["k = 100000 is not an integer in 0..199"]),
    ("setups.A.alpha_test", [0.1, 0.1000001], "setups.A.alpha_test",
     ["alpha 0.1000001 has more significant digits", "as test-0.1; write 0.1"]),
    ("figures.fig25.alphas", [0.05, 0.0333333333], "figures.fig25.alphas", ["write 0.0333333"]),
    ("setups.W.alpha_train", 0.996, "setups.W.alpha_train", ["= 104 of setup W's C = 104", "every component"]),
    # 6.5 x B's alpha_train 0.05 ablates 0.325 x 200 = 65 filters, fine; 19.99 x 0.05 ablates all 200
    ("efficiency", {"setups": ["B"], "alpha_test_factors": [1.0, 19.99]}, "efficiency.alpha_test_factors",
     ["alpha 0.9995 ablates", "= 200 of setup B's C = 200", "(resnet_mini)"]),
])
def test_bad_configs_are_refused_naming_the_key(path, value, key, words):
    fails(load("default", _set(path, value)), key, *words)


def test_a_variant_is_checked_with_the_keys_it_inherits():
    # A on training examples is fine; A_noise, which changes only the corruption, inherits the train split
    fails(load("default", _set("setups.A.examples.split", "train")), "setups.A_noise.examples.split",
          "corrupted examples are made from the test split")


def test_a_setup_name_must_be_usable_in_paths():
    def edit(config):
        config["setups"]["A-1"] = config["setups"]["A"]
    fails(load("default", edit), "setups.A-1", "letters, digits and _ only")


# --- ownership ----------------------------------------------------------------------------------------------------

def _variant(name, **keys):
    def edit(config):
        config["setups"][name] = {"parent": "A", **keys}
    return edit


def test_a_variant_changing_only_alpha_test_shares_every_artifact_of_its_parent():
    p = load("default", _variant("A_t", alpha_test=[0.2]))
    for kind in plan.OWNED:
        assert p.owner("A_t", kind) == "A", kind
    assert p.model_file("A_t") == p.model_file("A") == "results/A/model.pt"
    assert p.examples_file("A_t") == "data/A/examples.npz"
    assert p.train_receipt("A_t") == "results/A/masks/train.json"
    # new evaluation masks at a new alpha, but in the parent's stream: the parent's directory
    assert p.test_receipts("A_t") == ["results/A/masks/test-0.2.json"]
    assert p.attribution_files("A_t") == p.attribution_files("A")


def test_a_variant_changing_alpha_train_samples_only_new_training_masks():
    p = load("default")  # B_a10: B at alpha_train 0.10
    assert [p.owner("B_a10", k) for k in ("examples", "model", "baseline", "test_masks")] == ["B"] * 4
    assert p.owner("B_a10", "train_masks") == p.owner("B_a10", "fit") == "B_a10"
    assert p.attribution_file("B_a10", "coar") == "results/B_a10/attributions/coar.npz"
    assert p.attribution_file("B_a10", "loo") == "results/B/attributions/loo.npz"


def test_a_variant_changing_the_model_owns_its_model_and_what_is_made_from_it():
    p = load("default", _variant("A_w", model="resnet_mini", title="A with resnet_mini"))
    assert p.owner("A_w", "examples") == "A"  # the examples do not depend on the model
    assert [p.owner("A_w", k) for k in ("model", "baseline", "test_masks", "train_masks", "fit")] == ["A_w"] * 5
    assert p.model_file("A_w") == "results/A_w/model.pt"
    assert p.examples_file("A_w") == "data/A/examples.npz"


def test_ownership_goes_through_a_chain_of_parents():
    def edit(config):
        config["setups"]["A_w"] = {"parent": "A", "model": "resnet_mini", "title": "w"}
        config["setups"]["A_w_t"] = {"parent": "A_w", "alpha_test": [0.2]}
    p = load("default", edit)
    assert p.model_file("A_w_t") == "results/A_w/model.pt" and p.examples_file("A_w_t") == "data/A/examples.npz"


def test_a_variant_with_other_examples_owns_them_and_what_is_made_from_them():
    p = load("default")  # A_noise: A's model on corrupted test examples
    assert p.owner("A_noise", "model") == "A" and p.owner("A_noise", "examples") == "A_noise"
    assert p.owner("A_noise", "test_masks") == p.owner("A_noise", "train_masks") == "A_noise"


def test_a_fit_shrunk_toward_a_baseline_is_made_from_it():
    def edit(config):
        config["setups"]["A_p"] = {"parent": "A", "regression": "prior", "estimator": {"prior": "loo"}}
        # the same prior fit on a variant whose baselines differ: its fit cannot be its parent's
        config["setups"]["A_p_b"] = {"parent": "A_p", "baseline_options": {"loo_components": 10}}
        config["setups"]["A_b"] = {"parent": "A", "baseline_options": {"loo_components": 10}}
    p = load("default", edit)
    assert p.fit_inputs("A_p") == {"receipt": "results/A/masks/train.json", "prior": "results/A/attributions/loo.npz"}
    assert p.owner("A_p", "fit") == "A_p" and p.owner("A_p", "train_masks") == "A"
    assert p.owner("A_p_b", "baseline") == "A_p_b" and p.owner("A_p_b", "fit") == "A_p_b"
    assert p.owner("A_b", "fit") == "A"  # least squares does not read the baselines: A's fit serves
    assert p.fit_inputs("A") == {"receipt": "results/A/masks/train.json"}
    q = load("default", _set("setups.A.regression", "prior"))
    fails(q, "setups.A.estimator.prior", "estimator.prior")


# --- paths and params ---------------------------------------------------------------------------------------------

def test_mask_shards_and_splits():
    p = load("default", _set("setups.A.shards", 3))
    assert p.shard_sizes("A") == [334, 334, 332] and sum(p.shard_sizes("A")) == 1000
    assert p.shard_receipts("A", "train") == [f"results/A/masks/train/shard-{i:03d}.json" for i in range(3)]
    assert p.shard_receipts("A", "test-0.1") == ["results/A/masks/test-0.1/shard-000.json"]
    assert p.mask_settings("A", "train", "2") == {"alpha": 0.1, "m": 332, "seed": 0, "shard": 2}
    assert p.mask_settings("A", "test-0.125", "0") == {"alpha": 0.125, "m": 200, "seed": 1, "shard": 125000}
    assert plan.test_split(0.10) == "test-0.1" and plan.split_alpha("test-0.05") == 0.05
    for bad in ("test-1.5", "test-x", "test-0"):
        with pytest.raises(ConfigError, match="expected test-<alpha>"):
            p.mask_settings("A", bad, "0")


def test_evaluation_and_edit_paths():
    p = load("default")
    assert p.evaluation_files("A") == [f"results/A/evaluation/alpha-{a}.csv" for a in ("0.1", "0.125", "0.15")]
    assert p.evaluation_files("A", [0.05], on="A_scale") == ["results/A/evaluation/on-A_scale/alpha-0.05.csv"]
    assert p.heldout_file("fix_B") == "data/B/heldout-1000.npz"
    assert p.heldout_file("subpop_W") == "data/W/heldout-1800.npz"  # its heldout_setup's
    assert p.shift_files("forget_B") == ["data/edits/forget_B/shift-noise.npz", "data/edits/forget_B/shift-blur.npz"]
    assert p.forget_outputs("forget_B", "x.csv", [8]) == ["results/edits/forget_B/class-8/x.csv"]
    assert p.edit_setup("backdoor_Bd", ("backdoor",)) == "Bd"
    with pytest.raises(ConfigError, match=r"has no `edits.fix_Q` entry \(defined: fix_R, "):
        p.edit_setup("fix_Q")
    with pytest.raises(ConfigError, match="`edits.fix_B` is of kind 'fix'"):
        p.edit_setup("fix_B", ("forget",))
    assert re.fullmatch(p.edits_of_kind("fix", "induce"), "induce_B")
    assert not re.fullmatch(p.edits_of_kind("fix", "induce"), "forget_B")
    assert not re.fullmatch(p.edits_of_kind("nothing"), "")


def test_a_setup_using_its_whole_split_is_its_own_heldout_set():
    p = load("paper")
    assert p.config["setups"]["B"]["examples"].get("n") is None
    assert p.heldout_file("fix_B") == p.examples_file("B")


def test_source_manifests():
    p = load("paper")
    assert p.setup_source("A_snow") == "data/datasets/cifar10-c.json"  # CIFAR-10's corrupted examples
    assert p.model_sources("A") == ["data/datasets/cifar10.json"]  # trained here
    assert p.model_sources("B") == []  # published weights


def test_setup_spec_gives_a_rule_its_keys_only_without_nulls():
    p = load("default")
    for rule, keys in RULE_KEYS.items():
        spec = p.setup_spec("A", rule)
        assert set(spec) == set(keys) - {k for k in LATE_KEYS if p.setups["A"][k] is None}, rule
    spec = p.setup_spec("A", "examples")
    assert spec["examples"] == {k: v for k, v in p.setups["A"]["examples"].items() if v is not None}
    assert "precision" not in p.setup_spec("A", "sample_shard")  # a late key at its null default
    q = load("default", _set("setups.A.precision", "bfloat16"))
    assert q.setup_spec("A", "sample_shard")["precision"] == "bfloat16"


def test_examples_spec_adds_the_decode_size_only_when_it_differs():
    p = load("paper")
    assert p.examples_spec("B") == p.setup_spec("B", "examples")  # 224: ImageNet's own size
    q = load("paper", _set("setups.B.image_size", 64))
    assert q.examples_spec("B") == {**q.setup_spec("B", "examples"), "image_size": 64}


def test_shift_spec_completes_a_shift_from_its_edit():
    p = load("paper")
    spec = p.shift_spec("forget_B", "at_dusk")
    assert spec["dataset"] == "imagenet-star" and spec["split"] == "at_dusk" and spec["corruption"] is None
    assert spec["classes"] == [489, 559, 652, 763] and spec["seed"] == p.config["edits"]["forget_B"]["seed"]
    assert "image_size" not in spec
    with pytest.raises(ConfigError, match=r"`edits.forget_B.shifts` has no entry 'dawn'"):
        p.shift_spec("forget_B", "dawn")


def test_sample_sizes_of_fig14():
    p = load("default")
    fractions = p.config["figures"]["fig14"]["fractions"]
    assert p.sample_sizes("A") == sorted({max(2, round(f * 1000)) for f in fractions})


# --- figures ------------------------------------------------------------------------------------------------------

def test_the_registry_lists_figures_2_to_27_and_the_paper_preset_configures_them_all():
    assert list(FIGURES) == list(range(2, 28))
    p = load("paper")
    assert p.buildable_figures() == [f"figures/fig{n}.pdf" for n in range(2, 28)]
    assert "figures/fig9.pdf" not in load("default").buildable_figures()


@pytest.mark.parametrize("n", list(range(2, 28)))
def test_every_figure_of_the_paper_preset_uses_setups_that_exist(n):
    p = load("paper")
    spec = p.figure_config(f"fig{n}")
    named = list(spec.get("setups", [])) + [spec[k] for k in ("setup", "zero", "scale") if k in spec]
    if "edit" in spec:
        named += [p.edit_setup(e) for e in p.figure_edits(f"fig{n}")]
    assert named and all(s in p.setups for s in named), spec


def test_figure_setups_and_specs():
    p = load("paper")
    assert p.figure_setups("fig2") == ["A", "B", "C"]
    assert list(p.figure_specs("fig2")) == ["A", "B", "C"]
    assert p.figure_specs("fig2")["B"] == p.setup_spec("B", "figure")
    assert list(p.figure_specs("fig2", ["C"])) == ["C"]
    assert p.fig27_setting("scale") == "A_scale" and p.attribution_setup(17) == "B"
    assert p.figure_edits("fig5") == ["subpop_WB", "subpop_CB"]
    assert p.forget_classes_shown(4) == [489]


def test_a_figure_the_preset_does_not_configure_names_its_key_and_what_it_needs():
    p = load("default")
    with pytest.raises(ConfigError) as info:
        p.figure_setups("fig9")
    assert "figures/fig9.pdf: preset 'default' has no `figures.fig9` entry; it needs Phi-2" in str(info.value)


@pytest.mark.parametrize("n, unknown", [("1", True), ("28", True), ("200", True), ("02", True), ("2", False),
                                        ("20", False), ("27", False), ("13", False)])
def test_only_numbers_the_paper_does_not_have_are_unknown_figures(n, unknown):
    assert bool(re.fullmatch(plan.unknown_figure_pattern(), n)) == unknown
    if unknown:
        with pytest.raises(ConfigError, match=rf"figures/fig{n}.pdf: the paper has figures 2 to 27 only"):
            plan.unknown_figure(n)


# --- the efficiency study -----------------------------------------------------------------------------------------

def test_efficiency_study_scores_at_alpha_train_and_one_and_a_half_times_it():
    p = load("default")
    assert p.efficiency_setups() == ["A", "B", "C", "R", "L"]
    assert p.efficiency_alphas("A") == [0.1, 0.15] and p.efficiency_alphas("L") == [0.05, 0.075]
    receipts = p.efficiency_test_receipts()
    assert receipts[:2] == ["results/A/masks/test-0.1.json", "results/A/masks/test-0.15.json"]
    assert len(receipts) == 10 and "results/R/masks/test-0.075.json" in receipts
    assert p.component_count("L") == 1952  # the study's model with thousands of components
    # without the key, alpha_train only
    assert load("default", lambda c: c["efficiency"].pop("alpha_test_factors")).efficiency_alphas("B") == [0.05]


def test_efficiency_study_refuses_unknown_setups_and_alphas_out_of_range():
    fails(load("default", lambda c: c["efficiency"].update(setups=["A", "Q"])), "efficiency.setups", "'Q'")
    fails(load("default", lambda c: c["efficiency"].update(alpha_test_factors=[1, 12])),
          "efficiency.alpha_test_factors", "12 x setup A")


def test_a_key_given_twice_in_a_config_file_is_refused_naming_both_lines(tmp_path):
    text = (ROOT / "config/config.yaml").read_text()
    check_duplicate_keys(ROOT / "config/config.yaml")  # the presets give every key once
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("masks: 1000"))
    lines.insert(at + 1, lines[at].replace("1000", "5000"))  # a nested key, the second value would win
    bad = tmp_path / "dup.yaml"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"key 'masks' is given twice in one mapping, on lines {at + 1} and {at + 2}"):
        check_duplicate_keys(bad)
    assert yaml.safe_load(bad.read_text())["setups"]["A"]["masks"] == 5000  # what YAML alone would have done
