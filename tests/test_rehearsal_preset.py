"""The rehearsal preset is derived from config/paper.yaml: same setups, edits and figures, only the listed
keys changed, and a setup added to the paper preset is rehearsed without touching the rehearsal."""
import copy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "rehearsal"))

import preset  # noqa: E402

PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
# the keys `preset.derive` may change, as CHANGES lists them
SETUP_KEYS = {"masks", "shards", "test_masks", "alpha_test", "examples", "train", "baseline_options", "image_size"}
EDIT_KEYS = {"targets", "references", "ks", "heldout", "shifts"}
FIGURE_KEYS = {"examples", "components", "top", "queries", "neighbors", "show", "alpha_test", "alphas"}


def _changed(a: dict, b: dict) -> set:
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def test_same_setups_edits_and_figures_with_only_listed_keys_changed(tmp_path):
    r = preset.derive(PAPER, tmp_path)
    assert r["preset"] == preset.PRESET and "rehearsal" in r["preset"]
    assert _changed(PAPER, r) <= {"preset", "description", "download_root", "imagenet_root", "setups", "edits",
                                  "figures"}
    assert r["download_root"] == str(tmp_path.resolve() / "data" / "raw")
    assert list(r["setups"]) == list(PAPER["setups"]) and list(r["edits"]) == list(PAPER["edits"])
    assert list(r["figures"]) == list(PAPER["figures"])
    for name, s in PAPER["setups"].items():
        assert _changed(s, r["setups"][name]) <= SETUP_KEYS, name
        ex, rex = s.get("examples", {}), r["setups"][name].get("examples", {})
        assert _changed(ex, rex) <= {"n", "length", "whole_classes"}, name
    for name, e in PAPER["edits"].items():
        assert _changed(e, r["edits"][name]) <= EDIT_KEYS, name
        assert 0 in r["edits"][name]["ks"] and set(r["edits"][name]["ks"]) <= set(e["ks"])
    for name, f in PAPER["figures"].items():
        assert _changed(f, r["figures"][name]) <= FIGURE_KEYS, name
    assert PAPER == yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()), "derive changed its input"


def test_sizes_shrink_and_never_grow(tmp_path):
    r = preset.derive(PAPER, tmp_path)
    for name, s in PAPER["setups"].items():
        rs = r["setups"][name]
        for key in ("masks", "shards", "test_masks"):
            if key in s:
                assert rs[key] <= min(s[key], {"masks": preset.MASKS, "shards": 2, "test_masks": preset.TEST_MASKS}[key])
        if rs.get("examples", {}).get("n") is not None and s.get("examples", {}).get("n") is not None:
            assert rs["examples"]["n"] <= s["examples"]["n"]
        if "train" in s:
            assert rs["train"]["epochs"] == 1
    # more than one shard (so gathering is exercised) on the Fig. 2 setups; one everywhere else, variants included
    assert {n: rs["shards"] for n, rs in r["setups"].items() if rs.get("shards", 1) > 1} == {
        n: 2 for n in PAPER["figures"]["fig2"]["setups"]}
    assert all(rs.get("shards") == 1 for n, rs in r["setups"].items() if rs.get("parent"))
    # ResNet-50 setups decode smaller images (variants inherit them); ViT-B/16 and CLIP keep 224
    for name, s in PAPER["setups"].items():
        model = preset._inherited(PAPER["setups"], name, "model")
        size = preset._inherited(r["setups"], name, "image_size")
        assert size == (64 if model == "resnet50" else preset._inherited(PAPER["setups"], name, "image_size")), name
    # the whole split (n absent or null) becomes a few examples, also on variants that reset n to null
    assert r["setups"]["B"]["examples"]["n"] == preset.EXAMPLES
    assert r["setups"]["Bd_test"]["examples"]["n"] == preset.EXAMPLES
    # a variant that leaves n alone inherits its parent's (capped) n
    assert "n" not in r["setups"]["A_brightness"]["examples"]
    # a forget edit's setup keeps every example of the forgotten classes; subpop setups have enough examples
    assert r["setups"]["B"]["examples"]["whole_classes"] == sorted(PAPER["edits"]["forget_B"]["classes"])
    assert r["setups"]["WB_train"]["examples"]["n"] == preset.SUBPOP_EXAMPLES
    assert r["edits"]["fix_B"]["targets"] == 2 and r["edits"]["fix_B"]["ks"] == [0, 1, 2]


def test_alpha_grids_keep_two_values_and_alpha_train_where_listed(tmp_path):
    r = preset.derive(PAPER, tmp_path)
    for name, s in PAPER["setups"].items():
        if "alpha_test" not in s:
            continue
        got = r["setups"][name]["alpha_test"]
        assert set(got) <= set(s["alpha_test"]) and len(got) == min(2, len(s["alpha_test"])), name
        alpha_train = preset._inherited(PAPER["setups"], name, "alpha_train")
        if alpha_train in s["alpha_test"]:
            assert alpha_train in got, name  # Fig. 14 evaluates at alpha_train
    assert r["setups"]["A_a05"]["alpha_test"] == [0.05, 0.2]  # alpha_train 0.05 and the largest
    for name, f in PAPER["figures"].items():
        for key in ("alpha_test", "alphas"):
            if key in f:
                assert r["figures"][name][key] == [min(f[key]), max(f[key])], (name, key)


def test_a_setup_added_to_the_paper_preset_is_rehearsed(tmp_path):
    paper = copy.deepcopy(PAPER)
    paper["setups"]["NEW"] = {"title": "new", "dataset": "cifar10", "model": "cifar_resnet", "alpha_train": 0.1,
                              "masks": 30000, "shards": 30, "examples": {"split": "test"}, "test_masks": 800,
                              "train": {"epochs": 30, "batch_size": 256}}
    r = preset.derive(paper, tmp_path)["setups"]["NEW"]
    # one shard: only the Fig. 2 setups are sampled in more than one
    assert (r["masks"], r["shards"], r["test_masks"], r["examples"]["n"]) == (preset.MASKS, 1, preset.TEST_MASKS, preset.EXAMPLES)
    assert r["train"] == {"epochs": 1, "batch_size": 16, "n_train": preset.N_TRAIN}
    assert r["baseline_options"] == {"loo_components": preset.LOO_COMPONENTS, "n_steps": preset.IG_STEPS,
                                   "groups": preset.IG_GROUPS}


def test_the_written_preset_lists_its_differences(tmp_path, capsys):
    assert preset.main([str(ROOT / "config" / "paper.yaml"), str(tmp_path)]) == 0
    text = capsys.readouterr().out
    for where, _, _ in preset.CHANGES:
        assert f"#   {where}:" in text
    assert yaml.safe_load(text) == preset.derive(PAPER, tmp_path)
