"""The rehearsal preset: config/paper.yaml with only its sizes shrunk, its data roots pointed at miniature
fixtures, and its name saying it is a rehearsal.

Derived, never hand-written: every setup, variant, edit and figure of the paper preset is kept with its keys,
so a setup added to config/paper.yaml is rehearsed as it is. `CHANGES` below is the one list of what differs
from the paper preset, each with its reason; `derive` applies exactly that list and nothing else.

    python workflow/rehearsal/preset.py config/paper.yaml FIXTURES > rehearsal.yaml
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

PRESET = "paper-rehearsal"
DESCRIPTION = ("REHEARSAL of the paper preset on miniature fake data with random weights: it checks that every "
               "job runs, its numbers mean nothing")

MASKS, SHARDS, TEST_MASKS, EXAMPLES, LENGTH = 8, 2, 4, 4, 16
EPOCHS, N_TRAIN, BATCH, LM_STEPS = 1, 32, 16, 6
LOO_COMPONENTS, IG_STEPS, IG_GROUPS = 8, 2, 2  # IG_GROUPS: the first and the last layer
TARGETS, REFERENCES, KS, HELDOUT, SHIFT_N, SHOWN, SUBPOP_EXAMPLES = 2, 4, 3, 8, 2, 2, 16
# image size of the models that take any (convolutions and a global average pool); the fixtures' ImageNet labels
# are the fixture ResNet-50's predictions at this size. ViT-B/16 and CLIP keep 224: their position embeddings
# fix it.
IMAGE_SIZES = {"resnet50": 64}

# Every difference from config/paper.yaml, applied by `derive`: (where, change, reason).
CHANGES = [
    ("preset, description", f"{PRESET!r}, a line saying the numbers mean nothing",
     "every figure's footer and every table name the preset, so a rehearsal cannot be mistaken for results"),
    ("download_root, imagenet_root", "the fixtures' data/raw and data/raw/imagenet",
     "the miniature fixtures in each source's real format (workflow/rehearsal/fixtures_*.py)"),
    ("setups.*.masks", f"at most {MASKS}", "size: training masks (fewer masks than components: the dual fit)"),
    ("setups.*.shards", "2 for the setups of Fig. 2 (figures.fig2.setups), 1 for every other setup",
     "size: every shard is a job that loads the model; the Fig. 2 setups still gather more than one shard"),
    ("setups.*.test_masks", f"at most {TEST_MASKS}", "size: evaluation masks per alpha_test"),
    ("setups.*.alpha_test", "at most 2 values: alpha_train when it is listed, and the largest other",
     "size: every alpha is one more evaluation-mask store, gather and evaluation job per setup; alpha_train "
     "stays where a figure evaluates at it (Fig. 14)"),
    ("figures.*.alpha_test, figures.fig25.alphas", "the smallest and the largest value",
     "size: a figure's own alpha grid adds evaluation-mask stores (Fig. 25: 8 alphas on 4 setups)"),
    ("setups.*.image_size", "64 for ResNet-50 (224 in the paper), decoding included",
     "size: a ResNet-50 forward pass costs in proportion to the pixels, (224 / 64)^2 = 12 times fewer at 64; the "
     "model, its weights and the decoding code are the same (global average pooling takes any size)"),
    ("setups.*.examples.n", "at most 4 (also where the paper takes the whole split)", "size: examples"),
    ("setups.*.examples.length", "at most 16 tokens", "size: sequence length"),
    ("setups.*.train", f"1 epoch, at most {N_TRAIN} images, batches of at most 16, at most 6 language-model steps",
     "size: training (a run of a few optimizer steps, as a small fine-tuning would have)"),
    ("setups.*.train.lr", "scaled with the batch size (times 16/512 where the batch shrinks from 512 to 16)",
     "the linear scaling rule: a 512-image batch's learning rate on 16 images diverges (the CIFAR ResNet's "
     "logits reached 1e6 in 4 steps, which overflow the float16 mask stores)"),
    ("setups.*.baseline_options", "leave-one-out on 8 components; NC and II on the first and the last layer with 2 "
     "integration steps",
     "size: leave-one-out costs one forward pass per component and example (22,720 for ResNet-50, 82,944 for "
     "ViT-B/16), NC and II a forward and backward pass per layer and integration step (49 layers of ResNet-50: "
     "50 minutes on 2 CPU cores)"),
    ("setups.<a forget edit's setup>.examples.whole_classes", "the edit's classes",
     "the paper's forget setup takes the whole split, which holds every example of the class; a shrunk draw "
     "of a 1,000-class split would hold none (held-out examples too)"),
    ("setups.<a subpop edit's setup>.examples.n", f"{SUBPOP_EXAMPLES}", "size: enough examples that the worst group has its "
     "targets and the other groups their references"),
    ("edits.*.targets, references", "at most 2 targets, at most 4 references", "size: examples edited"),
    ("edits.*.ks", "the first 3 values of the sweep (0 among them)", "size: the k sweep"),
    ("edits.*.heldout", "at most 8", "size: held-out images (half validation, half test)"),
    ("edits.*.shifts.*.n", "at most 2", "size: random images of each shifted set (plus every image of the classes)"),
    ("figures.*: examples, components, top, queries, neighbors, show", "at most 2",
     "size: rows and columns shown, which cannot exceed the shrunk examples and targets"),
]

def _at_most(d: dict, key: str, cap: int, null_means_all: bool = False) -> None:
    if key in d and d[key] is not None:
        d[key] = min(d[key], cap)
    elif null_means_all:
        d[key] = cap


def _inherited(setups: dict, name: str, key: str):
    """A setup's value of `key`, looked up through its `parent:` chain (None when no setup sets it)."""
    while name is not None:
        if key in setups[name]:
            return setups[name][key]
        name = setups[name].get("parent")
    return None


def _alphas(values: list, keep: float | None = None) -> list:
    """At most two values of an alpha grid, in its order: `keep` when it is one of them, and the largest
    other; without `keep`, the smallest and the largest."""
    if len(values) <= 2:
        return values
    if keep in values:
        other = max(v for v in values if v != keep)
        return [v for v in values if v in (keep, other)]
    return [v for v in values if v in (min(values), max(values))]


def derive(paper: dict, fixtures: str | Path) -> dict:
    """The rehearsal of a paper-scale config dict (as loaded from config/paper.yaml)."""
    cfg = copy.deepcopy(paper)
    raw = Path(fixtures).resolve() / "data" / "raw"
    cfg.update(preset=PRESET, description=DESCRIPTION, download_root=str(raw), imagenet_root=str(raw / "imagenet"))
    sharded = set(cfg.get("figures", {}).get("fig2", {}).get("setups", []))
    for name, s in cfg["setups"].items():
        model = _inherited(paper["setups"], name, "model")
        if model in IMAGE_SIZES and ("model" in s or "image_size" in s):  # variants inherit it
            s["image_size"] = IMAGE_SIZES[model]
        for key, cap in (("masks", MASKS), ("shards", SHARDS if name in sharded else 1), ("test_masks", TEST_MASKS)):
            _at_most(s, key, cap, null_means_all=key == "shards" and name not in sharded)
        if "alpha_test" in s:
            s["alpha_test"] = _alphas(s["alpha_test"], _inherited(paper["setups"], name, "alpha_train"))
        if "examples" in s:
            ex = s["examples"]
            # a variant that does not set n inherits its parent's; one that sets it (even to null: the whole
            # split) gets the cap
            _at_most(ex, "n", EXAMPLES, null_means_all="n" in ex or s.get("parent") is None)
            _at_most(ex, "length", LENGTH)
        if "train" in s:
            t = s["train"]
            t["epochs"] = EPOCHS
            batch = t.get("batch_size")
            _at_most(t, "batch_size", BATCH, null_means_all=True)
            if batch and t.get("lr") and t["batch_size"] < batch:  # the linear scaling rule
                t["lr"] = t["lr"] * t["batch_size"] / batch
            _at_most(t, "steps", LM_STEPS)
            if "steps" not in t:  # language models: the trainer's default number of steps is 1,000
                t["n_train"] = N_TRAIN if t.get("n_train") is None else min(t["n_train"], N_TRAIN)
        if s.get("parent") is None:
            s["baseline_options"] = {"loo_components": LOO_COMPONENTS, "n_steps": IG_STEPS, "groups": IG_GROUPS}
    for e in cfg.get("edits", {}).values():
        _at_most(e, "targets", TARGETS, null_means_all="targets" in e)
        _at_most(e, "references", REFERENCES, null_means_all=True)
        _at_most(e, "heldout", HELDOUT, null_means_all=True)
        e["ks"] = sorted(e["ks"])[:KS]
        for sh in e.get("shifts", {}).values():
            _at_most(sh, "n", SHIFT_N)
        setup = cfg["setups"][e["setup"]]
        if e["kind"] == "forget":
            setup["examples"]["whole_classes"] = sorted(e["classes"])
        if e["kind"] == "subpop":
            setup["examples"]["n"] = SUBPOP_EXAMPLES
    for f in cfg.get("figures", {}).values():
        for key in ("alpha_test", "alphas"):
            if key in f:
                f[key] = _alphas(f[key])
        for key in ("examples", "components", "top", "queries", "neighbors", "show"):
            _at_most(f, key, SHOWN)
    return cfg


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: preset.py PAPER_CONFIG FIXTURES_DIR  (writes the rehearsal config to stdout)", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        paper = yaml.safe_load(fh)
    header = "".join(f"#   {where}: {change} ({why})\n" for where, change, why in CHANGES)
    sys.stdout.write(f"# Derived from {argv[0]} by workflow/rehearsal/preset.py; differences:\n{header}")
    yaml.safe_dump(derive(paper, argv[1]), sys.stdout, sort_keys=False, width=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
