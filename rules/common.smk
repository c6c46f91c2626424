# Config validation (schema + cross-key checks, before any job runs) and helpers shared by the rules.
import math
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from coar.data.registry import decode_size
from coar.data.sources import source_of, source_root, sources


def _resolve_parents():
    """A setup with `parent: X` is X with the keys it sets replaced (nested dicts merged one level). The
    variant shares every artifact its changes leave untouched (model, examples, masks, baselines): see
    `owner`. Resolved in place, before validation, so errors name the merged setup's keys."""
    setups = config.get("setups")
    if not isinstance(setups, dict):
        return
    raw = {k: dict(v) for k, v in setups.items() if isinstance(v, dict)}

    def merged(name, chain):
        s = raw[name]
        parent = s.get("parent")
        if parent is None:
            return dict(s)
        if parent not in raw:
            raise WorkflowError(f"config error at `setups.{name}.parent`: unknown setup {parent!r}; "
                                f"defined: {', '.join(raw)}")
        if parent in chain:
            raise WorkflowError(f"config error at `setups.{name}.parent`: cycle {' -> '.join(chain + [parent])}")
        base = {k: v for k, v in merged(parent, chain + [parent]).items() if k != "parent"}
        changed = {k: v for k, v in s.items() if k not in ("parent", "title")}
        for k, v in changed.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        if "title" in s:
            base["title"] = s["title"]
        elif "title" in base:
            base["title"] += " | variant " + ", ".join(f"{k}={v}" for k, v in changed.items())
        base["parent"] = parent
        return base

    for name in raw:
        setups[name] = merged(name, [name])


def _validate_config():
    """Every schema violation, each named by its dotted key path, before any job runs."""
    import jsonschema
    import yaml

    _resolve_parents()

    schema_path = workflow.source_path("../workflow/schemas/config.schema.yaml")
    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [
            f"  `{'.'.join(map(str, e.absolute_path)) or '(top level)'}`: {e.message}"
            + (f" ({e.schema['description']})" if isinstance(e.schema, dict) and "description" in e.schema else "")
            for e in errors
        ]
        raise WorkflowError(
            f"invalid config (preset {config.get('preset', '?')!r}), {len(errors)} problem(s):\n" + "\n".join(lines)
        )
    validate(config, "../workflow/schemas/config.schema.yaml")  # fills in the schema's defaults


_validate_config()

SETUPS = config["setups"]
ENV = "../environment.yml"


def _config_error(key, problem):
    raise WorkflowError(f"config error at `{key}` (preset {config['preset']!r}): {problem}")


def _check_split(key, dataset, split):
    from coar.data.registry import SPLITS

    if dataset != "imagenet-star" and split not in SPLITS:  # imagenet-star's splits are its shifts
        _config_error(key, f"{split!r} is not one of {', '.join(SPLITS)}")


def _check_finite(value, key):
    """Every number of the config finite: YAML's .nan and .inf pass the schema's bounds (NaN compares false)."""
    if isinstance(value, float) and not math.isfinite(value):
        _config_error(key, f"{value} is not a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        _check_finite(v, f"{key}.{k}" if key else str(k))


def _check_within_split(key, count, what, dataset, split):
    """`count` examples of a split at most its published size (coar.data.registry.SPLIT_SIZES; a smaller copy
    is caught by the job that loads it)."""
    from coar.data.registry import SPLIT_SIZES

    size = SPLIT_SIZES.get((dataset, split))
    if size is not None and count is not None and count > size:
        _config_error(key, f"{count} {what}, but {dataset} {split} has {size:,}")


def component_count(setup):
    """C, the size of a setup's component set (coar.counts: the model built on the meta device, shapes only,
    nothing downloaded; counted once and cached). None for a Hugging Face model used with its published
    weights: its shape is the hub's configuration, known only once loaded, so the sampling job checks its
    alphas (coar.pipeline.check_alpha)."""
    from coar.counts import component_count as count
    from coar.errors import CoarError
    from coar.models import HF_ARCHITECTURES

    s = SETUPS[setup]
    if s["pretrained"] and s["model"] in HF_ARCHITECTURES:
        return None
    try:
        return count(s["model"], s["components"], s["num_classes"], s["in_channels"], s["image_size"])
    except CoarError as exc:
        _config_error(f"setups.{setup}.components", str(exc))


def _check_alphas():
    """Every alpha masks are sampled at ablates round(alpha * C) >= 1 of the setup's C components (a job would
    refuse it): alpha_train, alpha_test, and the alpha grids of Figs. 13, 25, 26 and 27."""
    from coar.sampling import n_ablated

    uses = []
    for name, s in SETUPS.items():
        uses.append((f"setups.{name}.alpha_train", name, [s["alpha_train"]]))
        uses.append((f"setups.{name}.alpha_test", name, s["alpha_test"]))
    figs = config["figures"]
    for fig, grid in (("fig13", "alpha_test"), ("fig25", "alphas"), ("fig26", "alpha_test")):
        for name in figs.get(fig, {}).get("setups", []):
            uses.append((f"figures.{fig}.{grid}", name, figs[fig][grid]))
    if "fig27" in figs:
        uses += [("figures.fig27.alpha_test", figs["fig27"][k], figs["fig27"]["alpha_test"]) for k in ("zero", "scale")]
    for key, name, alphas in uses:
        c = component_count(name)
        for alpha in alphas if c is not None else ():
            if n_ablated(c, alpha) < 1:
                _config_error(key, f"alpha {alpha:g} ablates round(alpha * C) = round({alpha:g} * {c}) = 0 of setup "
                                   f"{name}'s C = {c} components ({SETUPS[name]['model']}), so masks would ablate "
                                   f"nothing; use alpha > {0.5 / c:.3g}")


def _check_config():
    from coar.models import MODELS

    _check_finite(config, "")
    for name, s in SETUPS.items():
        if not name.isidentifier():
            _config_error(f"setups.{name}", "setup names are used in paths: letters, digits and _ only")
        if s["model"] not in MODELS:
            _config_error(f"setups.{name}.model", f"unknown model {s['model']!r}; known: {', '.join(MODELS)}")
        _check_within_split(f"setups.{name}.examples.n", s["examples"].get("n"), "examples", s["dataset"],
                            s["examples"]["split"])
        _check_within_split(f"setups.{name}.train.n_train", s["train"].get("n_train"), "training images",
                            s["dataset"], "train")
        if s["shards"] > s["masks"]:
            _config_error(f"setups.{name}.shards", f"{s['shards']} shards for only {s['masks']} masks")
        if s["train"].get("from_pretrained") and (s["pretrained"] or s["model"] not in ("resnet50", "vit_b_16")):
            _config_error(f"setups.{name}.train.from_pretrained", "fine-tuning starts from torchvision's resnet50 or "
                                                                  "vit_b_16 weights, with pretrained: false")
        if (s["model"] == "clip_zeroshot") != (s["dataset"] == "typographic") or (
                s["model"] == "clip_zeroshot" and not s["pretrained"]):
            _config_error(f"setups.{name}.model", "the typographic dataset goes with the zero-shot CLIP classifier "
                                                  "(model clip_zeroshot, pretrained: true), and only with it")
        if s["pretrained"] and s["model"] not in ("resnet50", "vit_b_16", "clip_vit_b_16", "clip_zeroshot", "gpt2", "phi2"):
            _config_error(f"setups.{name}.pretrained", f"model {s['model']!r} has no published weights")
        if not s["pretrained"] and s["dataset"] == "imagenet":
            _config_error(f"setups.{name}.pretrained", "ImageNet models are used pretrained (set pretrained: true)")
        from coar.data.registry import TEXT_DATASETS

        needs = {"os-text": "token_margin", **TEXT_DATASETS}.get(s["dataset"])
        text = needs is not None
        if (s["output"] != needs) if text else s["output"] in ("token_margin", "answer_margin"):
            _config_error(f"setups.{name}.output", f"dataset {s['dataset']} needs output "
                                                   f"{needs or 'margin or logit:<c>'}, not {s['output']!r}")
        if text and any(b in ("gp", "nc", "ii") for b in s["baselines"]):
            _config_error(f"setups.{name}.baselines", "gradient baselines need image inputs: use [loo] or [] for text")
        _check_split(f"setups.{name}.examples.split", s["dataset"], s["examples"]["split"])
        corruption = s["examples"].get("corruption")
        if corruption:
            from coar.data.corruptions import CIFAR10C_NAMES, SYNTHETIC_NAMES

            names = CIFAR10C_NAMES if s["dataset"] == "cifar10" else SYNTHETIC_NAMES
            if corruption["name"] not in names:
                _config_error(f"setups.{name}.examples.corruption.name",
                              f"{corruption['name']!r} is not a corruption for {s['dataset']} (one of {', '.join(names)})")
            if s["examples"]["split"] != "test":
                _config_error(f"setups.{name}.examples.split", "corrupted examples are made from the test split")
        if len(set(s["alpha_test"])) != len(s["alpha_test"]):
            _config_error(f"setups.{name}.alpha_test", f"repeated values in {s['alpha_test']}")
    for fig, spec in config["figures"].items():
        for key in ("setups", "setup", "zero", "scale"):
            for s in [spec[key]] if isinstance(spec.get(key), str) else spec.get(key, []):
                if s not in SETUPS:
                    _config_error(f"figures.{fig}.{key}", f"unknown setup {s!r}; defined: {', '.join(SETUPS)}")
    for name, e in config["edits"].items():
        if e["setup"] not in SETUPS:
            _config_error(f"edits.{name}.setup", f"unknown setup {e['setup']!r}; defined: {', '.join(SETUPS)}")
        if 0 not in e["ks"]:
            _config_error(f"edits.{name}.ks", f"the sweep must include k = 0 (the unedited model), got {e['ks']}")
        if SETUPS[e["setup"]]["output"] != "margin":
            _config_error(f"edits.{name}.setup", f"edits read accuracy off correct-class margins; setup "
                                                 f"{e['setup']} has output {SETUPS[e['setup']]['output']!r}")
        for shift, sh in e.get("shifts", {}).items():
            key = f"edits.{name}.shifts.{shift}"
            if e["kind"] != "forget":
                _config_error(key, "distribution shifts are scored for forget edits only")
            dataset = sh.get("dataset", SETUPS[e["setup"]]["dataset"])
            from coar.data.registry import DATASETS

            if dataset not in DATASETS:
                _config_error(f"{key}.dataset", f"unknown image dataset {dataset!r}; known: {', '.join(DATASETS)}")
            _check_split(f"{key}.split", dataset, sh["split"])
            if sh.get("corruption"):
                from coar.data.corruptions import SYNTHETIC_NAMES

                if sh["corruption"]["name"] not in SYNTHETIC_NAMES:
                    _config_error(f"{key}.corruption.name", f"{sh['corruption']['name']!r} is not one of "
                                                            f"{', '.join(SYNTHETIC_NAMES)}")
        if e.get("heldout_setup"):
            if e["heldout_setup"] not in SETUPS:
                _config_error(f"edits.{name}.heldout_setup", f"unknown setup {e['heldout_setup']!r}")
            if owner(e["heldout_setup"], "model") != owner(e["setup"], "model"):
                _config_error(f"edits.{name}.heldout_setup", f"{e['heldout_setup']} and {e['setup']} must share the model")
        held = SETUPS[e.get("heldout_setup") or e["setup"]]
        if held["examples"].get("n") is not None:  # the held-out examples: the next `heldout` of the split
            _check_within_split(f"edits.{name}.heldout", held["examples"]["n"] + e["heldout"],
                                f"examples with the setup's {held['examples']['n']} (held-out after them)",
                                held["dataset"], held["examples"]["split"])
        if e["kind"] == "subpop":
            from coar.data.registry import GROUPED

            for key in ("setup", "heldout_setup"):
                s = e.get(key) or e["setup"]
                if SETUPS[s]["dataset"] not in GROUPED:
                    _config_error(f"edits.{name}.{key}", f"subpop needs examples with groups; setup {s} uses "
                                                         f"{SETUPS[s]['dataset']} (group-labelled: {', '.join(GROUPED)})")
        if e["kind"] in ("backdoor", "typographic"):
            s = SETUPS[e["setup"]]
            ok = s["dataset"].endswith("-backdoor") if e["kind"] == "backdoor" else s["dataset"] == "typographic"
            if not ok or s["examples"].get("trigger") != "paired":
                need = "a backdoored dataset (*-backdoor)" if e["kind"] == "backdoor" else "dataset typographic"
                _config_error(f"edits.{name}.setup", f"{e['kind']} needs paired examples of {need} "
                                                     f"(examples.trigger: paired); setup "
                                                     f"{e['setup']} has {s['dataset']}, trigger {s['examples'].get('trigger')}")
            held = SETUPS[e.get("heldout_setup") or e["setup"]]
            if held["examples"].get("trigger"):
                _config_error(f"edits.{name}.heldout_setup", f"{e['kind']} pastes the trigger on held-out images itself: "
                                                             "name a setup whose examples are clean (no trigger)")
            if e["targets"] is None or (s["examples"].get("n") or 0) < e["targets"]:
                _config_error(f"edits.{name}.targets", f"{e['kind']} draws {e['targets']} pairs from setup "
                                                       f"{e['setup']}'s {s['examples'].get('n')}")
        if e["kind"] == "forget":
            bad = [c for c in e.get("classes", []) if c >= SETUPS[e["setup"]]["num_classes"]]
            if not e.get("classes") or bad:
                _config_error(f"edits.{name}.classes", f"forget needs classes below num_classes "
                                                       f"{SETUPS[e['setup']]['num_classes']} (got {e.get('classes')})")
    for fig in ("fig3", "fig5", "fig19", "fig20", "fig21", "fig22", "fig4", "fig23", "fig6", "fig24", "fig7"):
        spec = config["figures"].get(fig)
        if spec is None:
            continue
        kinds = {"fig4": ("forget",), "fig23": ("forget",), "fig5": ("subpop",), "fig6": ("backdoor",),
                 "fig24": ("backdoor",), "fig7": ("typographic",)}.get(fig, ("fix", "induce"))
        for key, name in [("edit", spec["edit"])] + [("also", a) for a in spec.get("also", [])]:
            e = config["edits"].get(name)
            if e is None or e["kind"] not in kinds:
                _config_error(f"figures.{fig}.{key}", f"needs an `edits` entry of kind {' or '.join(kinds)}, got "
                                                      f"{name!r}" + (f" of kind {e['kind']!r}" if e else " (undefined)"))
        e = config["edits"][spec["edit"]]
        shown = [spec["class"]] if fig == "fig4" else (spec.get("classes") or []) if fig == "fig23" else []
        if any(c not in e.get("classes", []) for c in shown):
            _config_error(f"figures.{fig}", f"class(es) {shown} not among edits.{spec['edit']}.classes {e.get('classes')}")
    if "fig27" in config["figures"]:
        f27 = config["figures"]["fig27"]
        same_model_and_examples(f27["zero"], f27["scale"], "figures.fig27")
        for key, mode in (("zero", "zero"), ("scale", "scale")):
            if SETUPS[f27[key]]["ablation"] != mode:
                _config_error(f"figures.fig27.{key}", f"setup {f27[key]} has ablation {SETUPS[f27[key]]['ablation']!r}, "
                                                      f"expected {mode!r}")
    for s in config["figures"].get("fig25", {}).get("setups", []):
        if SETUPS[s]["output"] != "margin":
            _config_error(f"setups.{s}.output", "Fig. 25 reads accuracy off correct-class margins: output must be margin")
    for s in config["figures"].get("fig14", {}).get("setups", []):
        if SETUPS[s]["alpha_train"] not in SETUPS[s]["alpha_test"]:
            _config_error(f"setups.{s}.alpha_test", "Fig. 14 evaluates at alpha_train, which must be one of alpha_test")
        if "loo" not in SETUPS[s]["baselines"]:
            _config_error(f"setups.{s}.baselines", "Fig. 14 compares with leave-one-out: include loo")
    _check_alphas()  # last: it builds models (on the meta device), after every cheaper check has passed



# The keys of a setup each rule depends on. Rules get only these as params, so Snakemake's params rerun
# trigger reruns exactly the jobs a config change affects (e.g. test_masks reruns the evaluation masks,
# not training).
RULE_KEYS = {
    "examples": ("dataset", "examples", "seed"),
    "model": ("dataset", "model", "pretrained", "num_classes", "in_channels", "image_size", "train", "seed"),
    "sample_shard": ("model", "components", "output", "scheme", "ablation", "gamma", "dtype", "precision"),
    "fit": ("regression", "lambdas", "estimator"),
    "baseline": ("model", "components", "output", "ablation", "gamma", "baseline_options"),
    "evaluate": ("alpha_train",),
    "fig2": ("title", "model", "dataset", "masks", "alpha_train", "examples"),
    "fig14": ("title", "model", "dataset", "masks", "alpha_train", "examples"),
    "figure": ("title", "model", "components", "dataset", "masks", "alpha_train", "examples", "ablation", "gamma"),
}


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def setup_spec(setup, rule):
    """The setup keys a rule uses. Nested keys at a null default are left out, so adding an optional key to
    the schema does not change the params of finished jobs (and does not rerun them); scripts read those
    keys with .get()."""
    spec = {k: _without_nulls(SETUPS[setup][k]) for k in RULE_KEYS[rule]}
    return {k: v for k, v in spec.items() if not (k in LATE_KEYS and v is None)}


def examples_spec(setup):
    """setup_spec for the examples and held-out sets, with the setup's image_size where its image files are
    decoded at another size than the dataset's own (a ResNet-50 takes any); left out otherwise, so that the
    params of finished jobs stay the same."""
    spec = setup_spec(setup, "examples")
    size = decode_size(SETUPS[setup]["dataset"], SETUPS[setup]["image_size"])
    return spec if size is None else {**spec, "image_size": size}


# Top-level setup keys added after results existed: left out of the params at their null default, like the
# nested ones above, so that finished jobs do not rerun.
LATE_KEYS = ("precision", "baseline_options", "estimator")


# Which setup's artifact a setup uses: a variant (`parent:`) reuses its parent's artifact of a kind when the
# keys that kind depends on, and the artifacts it is made from, are the same. So a variant that changes
# alpha_train shares the model, examples, baselines and evaluation masks and samples only new training masks.
OWNED = {
    "examples": (RULE_KEYS["examples"] + ("image_size",), ()),
    "model": (RULE_KEYS["model"], ()),
    "baseline": (RULE_KEYS["baseline"], ("examples", "model")),
    "test_masks": (RULE_KEYS["sample_shard"] + ("test_masks", "seed"), ("examples", "model")),
    "train_masks": (RULE_KEYS["sample_shard"] + ("alpha_train", "masks", "shards", "scheme", "seed"),
                    ("examples", "model")),
    "fit": (RULE_KEYS["fit"], ("train_masks",)),
}


def owner(setup, kind):
    keys, deps = OWNED[kind]
    s = setup
    while (parent := SETUPS[s].get("parent")) is not None:
        if any(SETUPS[s][k] != SETUPS[parent][k] for k in keys):
            break
        if any(owner(s, d) != owner(parent, d) for d in deps):
            break
        s = parent
    return s


def examples_file(setup):
    return f"data/{owner(setup, 'examples')}/examples.npz"


def model_file(setup):
    return f"results/{owner(setup, 'model')}/model.pt"


def train_receipt(setup):
    return f"results/{owner(setup, 'train_masks')}/masks/train.json"


def fit_inputs(w):
    """The training receipt, and with `regression: prior` the baseline attributions it shrinks toward."""
    inputs = {"receipt": train_receipt(w.setup)}
    if SETUPS[w.setup]["regression"] == "prior":
        prior = (SETUPS[w.setup].get("estimator") or {}).get("prior")
        if prior is None:
            raise WorkflowError(f"setup {w.setup}: regression prior needs estimator.prior (loo, gp, nc or ii)")
        inputs["prior"] = attribution_file(w.setup, prior)
    return inputs


def efficiency_setups():
    """Setups of the efficiency study: efficiency.setups, by default those of Fig. 2."""
    return (config.get("efficiency") or {}).get("setups") or figure_setups("fig2")


def test_receipt(setup, alpha):
    return f"results/{owner(setup, 'test_masks')}/masks/{test_split(alpha)}.json"


def attribution_file(setup, method):
    who = owner(setup, "fit" if method == "coar" else "baseline")
    return f"results/{who}/attributions/{method}.npz"


def same_model_and_examples(a, b, key):
    if (owner(a, "model"), owner(a, "examples")) != (owner(b, "model"), owner(b, "examples")):
        _config_error(key, f"setups {a} and {b} must share the model and the examples (make one a `parent:` "
                           f"variant of the other without changing model or example keys)")


def shard_sizes(setup):
    s = SETUPS[setup]
    per = math.ceil(s["masks"] / s["shards"])
    return [min(per, s["masks"] - i * per) for i in range(s["shards"]) if s["masks"] - i * per > 0]


def test_split(alpha):
    return f"test-{alpha:g}"


def split_alpha(split):
    try:
        alpha = float(split[len("test-"):])
    except ValueError:
        alpha = -1.0
    if not 0 < alpha < 1:
        raise WorkflowError(f"mask split {split!r}: expected test-<alpha> with 0 < alpha < 1")
    return alpha


def mask_settings(setup, split, shard):
    """alpha, m, seed and shard id of one mask store: training shards share the setup's seed and differ
    by shard id; evaluation masks at alpha use the stream (seed + 1, round(alpha * 1e6)), so the masks at
    an alpha do not depend on which other alphas a preset or figure asks for."""
    s = SETUPS[setup]
    shard = int(shard)
    if split == "train":
        return {"alpha": s["alpha_train"], "m": shard_sizes(setup)[shard], "seed": s["seed"], "shard": shard}
    alpha = split_alpha(split)
    return {"alpha": alpha, "m": s["test_masks"], "seed": s["seed"] + 1, "shard": round(alpha * 1e6)}


def shard_receipts(setup, split):
    n = len(shard_sizes(setup)) if split == "train" else 1
    return [f"results/{setup}/masks/{split}/shard-{i:03d}.json" for i in range(n)]


def test_receipts(setup, alphas=None):
    return [test_receipt(setup, a) for a in (SETUPS[setup]["alpha_test"] if alphas is None else alphas)]


def evaluation_files(setup, alphas=None, on=None):
    """Per-alpha correlation tables: the setup's methods on its own evaluation masks, or (on=other) its
    COAR attributions on another setup's evaluation masks (e.g. scale-ablation attributions predicting
    zero-ablation counterfactuals)."""
    where = f"on-{on}/" if on else ""
    alphas = SETUPS[setup]["alpha_test"] if alphas is None else alphas
    return [f"results/{setup}/evaluation/{where}alpha-{a:g}.csv" for a in alphas]


def figure_config(fig):
    """The preset's `figures.<fig>` entry; a figure the preset does not configure fails at once, naming the
    key."""
    if fig not in config["figures"]:
        need = f"; it needs {PAPER_ONLY[fig]}" if fig in PAPER_ONLY else ""
        raise WorkflowError(
            f"figures/{fig}.pdf: preset {config['preset']!r} has no `figures.{fig}` entry{need} (add one to the "
            f"config; its keys are described under figures.{fig} in workflow/schemas/config.schema.yaml)")
    return config["figures"][fig]


# Figures without an offline stand-in: what they need (config/paper.yaml configures them)
PAPER_ONLY = {
    "fig7": "zero-shot CLIP ViT-B/16 (Hugging Face hub) and the typographic-attack photos of Materzynska et al. "
            "(placed by hand; see coar.data.typographic), as config/paper.yaml sets up",
    "fig9": "Phi-2 (Hugging Face hub) and BoolQ's validation set (downloaded), as config/paper.yaml sets up",
}


def figure_setups(fig):
    return figure_config(fig)["setups"]


def sample_sizes(setup):
    """Fig. 14: numbers of masks (the first ones, in shard order) COAR is refitted on."""
    m = SETUPS[setup]["masks"]
    return sorted({max(2, round(f * m)) for f in config["figures"]["fig14"]["fractions"]})


def attribution_files(setup, methods=None):
    methods = ["coar"] + list(SETUPS[setup]["baselines"]) if methods is None else methods
    return [attribution_file(setup, m) for m in methods]


# Figures with a rule whose paper-scale setup is not in config/paper.yaml yet, and what it needs.
# Every figure of the paper: built by a rule of rules/figures.smk, or failing at once with the reason.
FIGURES = {
    2: ("attribution accuracy of COAR vs four baselines (setups A, B, C)", "built"),
    3: ("editing one prediction", "built"),
    4: ("forgetting a class", "built"),
    5: ("subpopulation robustness on Waterbirds / CelebA", "built"),
    6: ("backdoor localisation", "built"),
    7: ("typographic attacks on CLIP", "built"),
    8: ("COAR on GPT-2 (TinyStories)", "built"),
    9: ("Phi-2 on BoolQ", "built"),
    10: ("COAR on training examples and corrupted test examples (CIFAR-10-C)", "built"),
    11: ("COAR on other architectures (CIFAR-10 ViT and MLP)", "built"),
    12: ("COAR on other tasks: Waterbirds, CelebA, MIMIC-CXR (a class logit), CLIP", "built"),
    13: ("alpha_train 0.05 vs 0.10", "built"),
    14: ("correlation vs sample size m", "built"),
    15: ("example-level scatters for every method (CIFAR-10, setup A)", "built"),
    16: ("example-level scatters for every method (ImageNet, setups B and C)", "built"),
    17: ("examples with the most positive attribution per component (setup B)", "built"),
    18: ("nearest neighbours in attribution space (CelebA)", "built"),
    19: ("fixing CIFAR misclassifications", "built"),
    20: ("fixing ImageNet misclassifications", "built"),
    21: ("inducing errors", "built"),
    22: ("layers targeted by edits", "built"),
    23: ("forgetting more classes", "built"),
    24: ("saliency of backdoor components", "built"),
    25: ("effect of alpha on accuracy and output correlation", "built"),
    26: ("COAR with scale ablation (gamma 0.5)", "built"),
    27: ("zero vs scale attributions", "built"),
}


def figure_specs(fig, setups=None):
    return {s: setup_spec(s, "figure") for s in (setups or figure_setups(fig))}


def fig27_setting(key):
    return figure_config("fig27")[key]


def attribution_setup(n):
    return figure_config(f"fig{n}")["setup"]


def edit_setup(edit, kinds=None):
    """The setup an `edits` entry works on; fails naming the key when the entry or its kind is wrong."""
    if edit not in config.get("edits", {}):
        raise WorkflowError(f"results/edits/{edit}: preset {config['preset']!r} has no `edits.{edit}` entry "
                            f"(defined: {', '.join(config.get('edits', {})) or 'none'})")
    e = config["edits"][edit]
    if kinds and e["kind"] not in kinds:
        raise WorkflowError(f"`edits.{edit}` is of kind {e['kind']!r}; this rule needs one of {kinds}")
    return e["setup"]


def edits_of_kind(*kinds):
    """Wildcard regex matching the names of the `edits` entries of these kinds (no name: matches nothing)."""
    names = [re.escape(n) for n, e in config["edits"].items() if e["kind"] in kinds]
    return "|".join(names) if names else r"(?!)"


def heldout_file(edit):
    """Held-out examples of an edit: the next `heldout` examples of the setup's split; when the setup uses the
    whole split (the paper's scale), the setup's own examples (targets and references are a negligible part)."""
    edit_setup(edit)
    setup = config["edits"][edit].get("heldout_setup") or config["edits"][edit]["setup"]
    if SETUPS[setup]["examples"].get("n") is None:
        return examples_file(setup)
    return f"data/{owner(setup, 'examples')}/heldout-{config['edits'][edit]['heldout']}.npz"


def source_manifest(dataset, corruption=None):
    """The manifest of the data source a job reads (made by the dataset job). `ancient`: it orders the jobs (the
    source is obtained once, before any reader starts) without making readers stale when it is rewritten."""
    return ancient(f"data/datasets/{source_of(dataset, corruption)}.json")


def setup_source(setup):
    """The manifest of a setup's examples' source."""
    s = SETUPS[setup]
    return source_manifest(s["dataset"], s["examples"].get("corruption"))


def model_sources(setup):
    """Sources a model job reads: the training data of a trained model, the class names of zero-shot CLIP;
    nothing for published weights used as they are."""
    s = SETUPS[setup]
    return [source_manifest(s["dataset"])] if not s["pretrained"] or s["model"] == "clip_zeroshot" else []


def shift_files(edit):
    """The distribution-shifted example sets a forget edit is scored on (`edits.<edit>.shifts`)."""
    return [f"data/edits/{edit}/shift-{name}.npz" for name in config["edits"][edit].get("shifts", {})]


def shift_spec(edit, name):
    """The settings a shifted set is decoded with, completed from the edit's setup."""
    e = config["edits"][edit]
    if name not in e.get("shifts", {}):
        raise WorkflowError(f"data/edits/{edit}/shift-{name}.npz: `edits.{edit}.shifts` has no entry {name!r}")
    setup = SETUPS[e["setup"]]
    spec = {"dataset": setup["dataset"], "title": name, "corruption": None, **e["shifts"][name]}
    size = decode_size(spec["dataset"], setup["image_size"])
    return {**spec, "seed": e["seed"], "classes": list(e.get("classes", [])),
            **({"image_size": size} if size is not None else {})}


def edit_figure(fig):
    """The edits entry a figure draws from."""
    return figure_config(fig)["edit"]


def figure_edits(fig):
    """Every edits entry a figure draws from (Fig. 5 can show several, one panel each)."""
    return [edit_figure(fig), *figure_config(fig).get("also", [])]


def forget_outputs(edit, name, classes=None):
    classes = config["edits"][edit]["classes"] if classes is None else classes
    return [f"results/edits/{edit}/class-{c}/{name}" for c in classes]


def forget_classes_shown(n):
    spec = figure_config(f"fig{n}")
    if int(n) == 4:
        return [spec["class"]]
    return spec.get("classes") or config["edits"][spec["edit"]]["classes"]


def buildable_figures():
    """Figures with a rule that the active preset configures (rule all builds these)."""
    return [f"figures/fig{n}.pdf" for n, (_, status) in FIGURES.items()
            if status == "built" and f"fig{n}" in config["figures"]]


def unbuilt_figure_pattern():
    """Figure numbers without a rule of their own (so the fallback never competes with a real rule)."""
    built = [str(n) for n, (_, status) in FIGURES.items() if status == "built"]
    return rf"(?!(?:{'|'.join(built)})(?!\d))\d+"  # not a built number (20 is allowed when 2 is built)


def _unavailable(wildcards):
    n = int(wildcards.n)
    if n not in FIGURES:
        raise WorkflowError(f"figures/fig{n}.pdf: the paper has figures 2 to 27 only")
    title, status = FIGURES[n]
    raise WorkflowError(f"figures/fig{n}.pdf ({title}) cannot be built at preset {config['preset']!r}: {status}")


_check_config()  # after the helpers it uses (owner, same_model_and_examples)
