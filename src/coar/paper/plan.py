"""The workflow's plan, as plain Python: what a config asks for, checked before any job runs, and what each job
reads, writes and is parametrised by.

`rules/common.smk` resolves and validates the config (`resolve_parents`, `check_schema`, then Snakemake's
validation, which fills in the schema's defaults), builds one `Plan` from it, runs `Plan.check()` and binds the
plan's methods under the names the rules call. Nothing here imports Snakemake: a problem is a `ConfigError`
whose message names the dotted config key, which the workflow re-raises as its own error, unchanged.

    plan = Plan(config)      # config: a validated preset, defaults filled in
    plan.check()             # every cross-key check; raises ConfigError
    plan.model_file("B")     # results/A/model.pt when B is a variant of A with the same model keys
"""
from __future__ import annotations

import math
import re

from coar.paper.data.specs import SPECS
from coar.errors import ArgumentError, CoarError


class ConfigError(CoarError):
    """A workflow config that cannot be planned; the message names the config key (`setups.A.alpha_test`) or
    the target at fault."""


# --- resolution and schema -------------------------------------------------------------------------------------

def resolve_parents(config: dict) -> None:
    """Resolve `parent:` in place: a setup with `parent: X` is X with the keys it sets replaced (nested dicts
    merged one level). Its title, unless it sets one, is X's followed by the keys it changes. The variant shares
    every artifact its changes leave untouched (model, examples, masks, baselines): see `Plan.owner`. Run before
    schema validation, so that errors name the merged setup's keys."""
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
            raise ConfigError(f"config error at `setups.{name}.parent`: unknown setup {parent!r}; "
                              f"defined: {', '.join(raw)}")
        if parent in chain:
            raise ConfigError(f"config error at `setups.{name}.parent`: cycle {' -> '.join(chain + [parent])}")
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


def check_duplicate_keys(path) -> None:
    """Refuse a YAML config file that gives one key twice in a mapping, naming the key and both lines: YAML
    loaders (Snakemake's among them) keep the last value without a word."""
    import yaml

    class Strict(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                try:
                    key = self.construct_object(key_node, deep=True)
                except yaml.YAMLError:
                    continue
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise ConfigError(f"{path}: key {key!r} is given twice in one mapping, on lines {seen[key]} and "
                                      f"{key_node.start_mark.line + 1}; YAML would keep the second silently")
                seen.setdefault(key, key_node.start_mark.line + 1)
            return super().construct_mapping(node, deep)

    try:
        with open(path) as fh:
            yaml.load(fh, Loader=Strict)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return  # not ours to report: Snakemake's own loader says what is wrong with the file


def check_schema(config: dict, schema_path) -> None:
    """Every violation of the config schema at once, each named by its dotted key path (the schema's defaults
    are not filled in here)."""
    import jsonschema
    import yaml

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [
            f"  `{'.'.join(map(str, e.absolute_path)) or '(top level)'}`: {e.message}"
            + (f" ({e.schema['description']})" if isinstance(e.schema, dict) and "description" in e.schema else "")
            for e in errors
        ]
        raise ConfigError(
            f"invalid config (preset {config.get('preset', '?')!r}), {len(errors)} problem(s):\n" + "\n".join(lines)
        )


# --- rule params -------------------------------------------------------------------------------------------------

# The keys of a setup each rule depends on. Rules get only these as params, so Snakemake's params rerun trigger
# reruns exactly the jobs a config change affects (e.g. test_masks reruns the evaluation masks, not training).
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

# Top-level setup keys added after results existed: left out of the params at their null default, like the
# nested ones (`setup_spec`), so that finished jobs do not rerun.
LATE_KEYS = ("precision", "baseline_options", "estimator")

# Which setup's artifact a setup uses: a variant (`parent:`) reuses its parent's artifact of a kind when the keys
# that kind depends on, and the artifacts it is made from, are the same. So a variant that changes alpha_train
# shares the model, examples, baselines and evaluation masks and samples only new training masks.
# kind: (setup keys, kinds of artifact it is made from)
OWNED = {
    "examples": (RULE_KEYS["examples"] + ("image_size",), ()),
    "model": (RULE_KEYS["model"], ()),
    "baseline": (RULE_KEYS["baseline"], ("examples", "model")),
    "test_masks": (RULE_KEYS["sample_shard"] + ("test_masks", "seed"), ("examples", "model")),
    "train_masks": (RULE_KEYS["sample_shard"] + ("alpha_train", "masks", "shards", "scheme", "seed"),
                    ("examples", "model")),
    "fit": (RULE_KEYS["fit"], ("train_masks",)),
}


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


# --- figures -----------------------------------------------------------------------------------------------------

# Every figure of the paper, with what it shows. Each has a rule in rules/figures.smk; a preset builds those it
# configures under `figures:` (config/paper.yaml configures all of them).
FIGURES = {
    2: "attribution accuracy of COAR vs four baselines (setups A, B, C)",
    3: "editing one prediction",
    4: "forgetting a class",
    5: "subpopulation robustness on Waterbirds / CelebA",
    6: "backdoor localisation",
    7: "typographic attacks on CLIP",
    8: "COAR on GPT-2 (TinyStories)",
    9: "Phi-2 on BoolQ",
    10: "COAR on training examples and corrupted test examples (CIFAR-10-C)",
    11: "COAR on other architectures (CIFAR-10 ViT and MLP)",
    12: "COAR on other tasks: Waterbirds, CelebA, MIMIC-CXR (a class logit), CLIP",
    13: "alpha_train 0.05 vs 0.10",
    14: "correlation vs sample size m",
    15: "example-level scatters for every method (CIFAR-10, setup A)",
    16: "example-level scatters for every method (ImageNet, setups B and C)",
    17: "examples with the most positive attribution per component (setup B)",
    18: "nearest neighbours in attribution space (CelebA)",
    19: "fixing CIFAR misclassifications",
    20: "fixing ImageNet misclassifications",
    21: "inducing errors",
    22: "layers targeted by edits",
    23: "forgetting more classes",
    24: "saliency of backdoor components",
    25: "effect of alpha on accuracy and output correlation",
    26: "COAR with scale ablation (gamma 0.5)",
    27: "zero vs scale attributions",
}

# How the figures that share a rule differ: the drawing its script calls and the figure's title. Scripts
# never branch on a figure's number; they call the drawing named here.
DRAWINGS = {
    3: ("edit_prediction", "Editing one prediction with COAR-EDIT (cf. paper Fig. 3)"),
    4: ("forget_class", "Forgetting a class with COAR-EDIT (cf. paper Fig. 4)"),
    5: ("subpopulations", "Improving subpopulation robustness with COAR-EDIT (cf. paper Fig. 5)"),
    17: ("top_examples", "Examples with the most positive COAR attribution per component (cf. paper Fig. 17)"),
    18: ("neighbors", "Nearest neighbours in COAR attribution space (cf. paper Fig. 18)"),
    19: ("edit_examples", "Fixing misclassifications one at a time (cf. paper Fig. 19)"),
    20: ("edit_examples", "Fixing more misclassifications one at a time (cf. paper Fig. 20)"),
    21: ("edit_examples", "Inducing misclassifications (cf. paper Fig. 21)"),
    22: ("edit_layers", "Layers of the components COAR-EDIT ablates to fix errors (cf. paper Fig. 22)"),
    23: ("forget_classes", "Forgetting more classes (cf. paper Fig. 23)"),
}


def drawing(n) -> str:
    """The drawing function a figure's script calls (DRAWINGS)."""
    return DRAWINGS[int(n)][0]


def suptitle(n) -> str:
    return DRAWINGS[int(n)][1]


# Figures without an offline stand-in: what they need (config/paper.yaml configures them).
PAPER_ONLY = {
    "fig7": "zero-shot CLIP ViT-B/16 (Hugging Face hub) and the typographic-attack photos of Materzynska et al. "
            "(placed by hand; see coar.paper.data.typographic), as config/paper.yaml sets up",
    "fig9": "Phi-2 (Hugging Face hub) and BoolQ's validation set (downloaded), as config/paper.yaml sets up",
}

# Edit figures and the kinds of `edits` entry they draw from (any other: fix or induce)
_EDIT_FIGURES = ("fig3", "fig5", "fig19", "fig20", "fig21", "fig22", "fig4", "fig23", "fig6", "fig24", "fig7")
_EDIT_FIGURE_KINDS = {"fig4": ("forget",), "fig23": ("forget",), "fig5": ("subpop",), "fig6": ("backdoor",),
                      "fig24": ("backdoor",), "fig7": ("typographic",)}


def unknown_figure_pattern() -> str:
    """Wildcard regex of the figure numbers the paper does not have, so that the rule refusing them never
    competes with a figure's own rule."""
    numbers = "|".join(map(str, FIGURES))
    # a number that is not one of FIGURES: the inner lookahead makes "2" not exclude "20", nor "20" exclude "200"
    return rf"(?!(?:{numbers})(?!\d))\d+"


def unknown_figure(n) -> None:
    """Refuse figures/fig<n>.pdf, a figure the paper does not have."""
    raise ConfigError(f"figures/fig{n}.pdf: the paper has figures {min(FIGURES)} to {max(FIGURES)} only")


# --- masks -------------------------------------------------------------------------------------------------------

def test_split(alpha) -> str:
    """The name of the evaluation-mask split at alpha."""
    return f"test-{alpha:g}"


def scaled_alphas(alpha_train: float, factors) -> list[float]:
    """Ablation fractions ``factors`` x alpha_train, rounded (the efficiency study's evaluation alphas)."""
    return sorted({round(f * alpha_train, 6) for f in factors})


def split_alpha(split: str) -> float:
    """The alpha of an evaluation-mask split name (test-<alpha>)."""
    try:
        alpha = float(split[len("test-"):])
    except ValueError:
        alpha = -1.0
    if not 0 < alpha < 1:
        raise ConfigError(f"mask split {split!r}: expected test-<alpha> with 0 < alpha < 1")
    return alpha



class Plan:
    """The jobs a validated config (schema defaults filled in, parents resolved) asks for: its checks, the
    params of each rule, and the paths of the artifacts every setup, edit and figure uses."""

    def __init__(self, config: dict):
        self.config = config
        self.setups = config["setups"]

    # --- checks ------------------------------------------------------------------------------------------------

    def _error(self, key, problem):
        raise ConfigError(f"config error at `{key}` (preset {self.config['preset']!r}): {problem}")

    def _check_split(self, key, dataset, split):
        from coar.paper.data.registry import SPLITS

        if SPECS[dataset].splits is not None and split not in SPLITS:  # free-form: ImageNet*'s shifts
            self._error(key, f"{split!r} is not one of {', '.join(SPLITS)}")

    def _check_finite(self, value, key):
        """Every number of the config finite: YAML's .nan and .inf pass the schema's bounds (NaN compares
        false)."""
        if isinstance(value, float) and not math.isfinite(value):
            self._error(key, f"{value} is not a finite number")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, v in items:
            self._check_finite(v, f"{key}.{k}" if key else str(k))

    def _check_within_split(self, key, count, what, dataset, split):
        """`count` examples of a split at most its published size (coar.paper.data.specs.SPLIT_SIZES; a smaller
        copy is caught by the job that loads it)."""
        from coar.paper.data.specs import SPLIT_SIZES

        size = SPLIT_SIZES.get((dataset, split))
        if size is not None and count is not None and count > size:
            self._error(key, f"{count} {what}, but {dataset} {split} has {size:,}")

    def component_count(self, setup):
        """C, the size of a setup's component set (coar.paper.counts: the model built on the meta device, shapes only,
        nothing downloaded; counted once and cached). None for a Hugging Face model used with its published
        weights: its shape is the hub's configuration, known only once loaded, so the sampling job checks its
        alphas (coar.settings.SampleSettings)."""
        from coar.paper.counts import component_count as count
        from coar.paper.model_names import HF_ARCHITECTURES

        s = self.setups[setup]
        if s["pretrained"] and s["model"] in HF_ARCHITECTURES:
            return None
        try:
            return count(s["model"], s["components"], s["num_classes"], s["in_channels"], s["image_size"])
        except CoarError as exc:
            self._error(f"setups.{setup}.components", str(exc))

    def check(self) -> None:
        """Every check across keys that the schema cannot express, cheapest first; the first problem found
        raises ConfigError naming its key."""
        self._check_finite(self.config, "")
        for name in self.setups:
            self._check_setup(name)
        self._check_figure_setups()
        self._check_efficiency()
        for name in self.config["edits"]:
            self._check_edit(name)
        self._check_figures()
        self._check_alphas()  # last: they build models (on the meta device), after every cheaper check has passed
        self._check_edit_ks()

    def _check_setup(self, name):
        from coar.paper.model_names import MODELS

        s = self.setups[name]
        data = SPECS[s["dataset"]]  # the schema allows only known datasets
        if not name.isidentifier():
            self._error(f"setups.{name}", "setup names are used in paths: letters, digits and _ only")
        if s["model"] not in MODELS:
            self._error(f"setups.{name}.model", f"unknown model {s['model']!r}; known: {', '.join(MODELS)}")
        self._check_within_split(f"setups.{name}.examples.n", s["examples"].get("n"), "examples", s["dataset"],
                                 s["examples"]["split"])
        self._check_within_split(f"setups.{name}.train.n_train", s["train"].get("n_train"), "training images",
                                 s["dataset"], "train")
        if s["shards"] > s["masks"]:
            self._error(f"setups.{name}.shards", f"{s['shards']} shards for only {s['masks']} masks")
        if s["train"].get("from_pretrained") and (s["pretrained"] or s["model"] not in ("resnet50", "vit_b_16")):
            self._error(f"setups.{name}.train.from_pretrained", "fine-tuning starts from torchvision's resnet50 or "
                                                                "vit_b_16 weights, with pretrained: false")
        if (s["model"] == "clip_zeroshot") != data.zero_shot or (
                s["model"] == "clip_zeroshot" and not s["pretrained"]):
            self._error(f"setups.{name}.model", "the typographic dataset goes with the zero-shot CLIP classifier "
                                                "(model clip_zeroshot, pretrained: true), and only with it")
        if s["pretrained"] and s["model"] not in ("resnet50", "vit_b_16", "clip_vit_b_16", "clip_zeroshot", "gpt2",
                                                  "phi2"):
            self._error(f"setups.{name}.pretrained", f"model {s['model']!r} has no published weights")
        if not s["pretrained"] and data.pretrained_only:
            self._error(f"setups.{name}.pretrained", f"{s['dataset']} models are used with their published weights "
                                                     "(set pretrained: true)")
        if data.kind != "tokens" and s["in_channels"] != data.channels:
            self._error(f"setups.{name}.in_channels", f"{s['in_channels']}, but {s['dataset']} images have "
                                                      f"{data.channels} channel(s): the model would not take them")
        if data.kind != "tokens" and data.classes is not None and s["num_classes"] < data.classes:
            self._error(f"setups.{name}.num_classes", f"{s['num_classes']}, but {s['dataset']} has {data.classes} "
                                                      f"classes: labels {s['num_classes']}..{data.classes - 1} would "
                                                      "have no logit")
        needs = data.output if data.kind == "tokens" else None
        text = needs is not None
        if (s["output"] != needs) if text else s["output"] in ("token_margin", "answer_margin"):
            self._error(f"setups.{name}.output", f"dataset {s['dataset']} needs output "
                                                 f"{needs or 'margin or logit:<c>'}, not {s['output']!r}")
        if text and any(b in ("gp", "nc", "ii") for b in s["baselines"]):
            self._error(f"setups.{name}.baselines", "gradient baselines need image inputs: use [loo] or [] for text")
        self._check_split(f"setups.{name}.examples.split", s["dataset"], s["examples"]["split"])
        corruption = s["examples"].get("corruption")
        if corruption:
            from coar.paper.data.corruptions import CIFAR10C_NAMES, SYNTHETIC_NAMES

            names = CIFAR10C_NAMES if data.corruptions == "published" else SYNTHETIC_NAMES
            if corruption["name"] not in names:
                self._error(f"setups.{name}.examples.corruption.name",
                            f"{corruption['name']!r} is not a corruption for {s['dataset']} (one of {', '.join(names)})")
            if s["examples"]["split"] != "test":
                self._error(f"setups.{name}.examples.split", "corrupted examples are made from the test split")
        if len(set(s["alpha_test"])) != len(s["alpha_test"]):
            self._error(f"setups.{name}.alpha_test", f"repeated values in {s['alpha_test']}")
        self._check_settings(name)

    def _check_settings(self, name):
        """The settings the setup's sampling and fit jobs will take, checked by the validators those jobs call
        (coar.settings): the training masks, the evaluation masks at each alpha_test (seed + 1, shard
        round(alpha 1e6)), logit:<c> against num_classes, and the regression with its estimator options."""
        from coar.settings import MAX_SEED, FitSettings, SampleSettings

        s, key = self.setups[name], f"setups.{name}"
        names = {f: f"{key}.{f}" for f in ("seed", "scheme", "output", "ablation", "gamma", "dtype", "precision")}
        classes = None if SPECS[s["dataset"]].kind == "tokens" else s["num_classes"]
        common = dict(scheme=s["scheme"], output=s["output"], ablation=s["ablation"], gamma=s["gamma"],
                      dtype=s["dtype"], precision=s.get("precision") or "float32")
        try:
            SampleSettings(s["masks"], s["alpha_train"], seed=s["seed"], shard=s["shards"] - 1, **common).validate(
                num_classes=classes, min_masks=2, names={**names, "masks": f"{key}.masks",
                                                         "alpha": f"{key}.alpha_train"})
            if s["seed"] == MAX_SEED:
                self._error(f"{key}.seed", f"{MAX_SEED:,} leaves no seed + 1 for the evaluation masks; use at most "
                                           f"{MAX_SEED - 1:,}")
            for alpha in s["alpha_test"]:
                spec = self.mask_settings(name, test_split(alpha), 0)
                SampleSettings(spec["m"], alpha, seed=spec["seed"], shard=spec["shard"], **common).validate(
                    min_masks=3, names={**names, "masks": f"{key}.test_masks", "alpha": f"{key}.alpha_test"})
            fit = FitSettings.from_spec(s)
            fit.validate(names=FitSettings.spec_names(key, fit.method), masks=s["masks"])
        except ArgumentError as exc:
            self._error(exc.argument, exc.problem)

    def _check_figure_setups(self):
        for fig, spec in self.config["figures"].items():
            for key in ("setups", "setup", "zero", "scale"):
                for s in [spec[key]] if isinstance(spec.get(key), str) else spec.get(key, []):
                    if s not in self.setups:
                        self._error(f"figures.{fig}.{key}", f"unknown setup {s!r}; defined: {', '.join(self.setups)}")

    def _check_efficiency(self):
        study = self.config.get("efficiency") or {}
        for s in study.get("setups") or []:
            if s not in self.setups:
                self._error("efficiency.setups", f"unknown setup {s!r}; defined: {', '.join(self.setups)}")
        factors = study.get("alpha_test_factors")  # without it, alpha_train (and a preset need not have fig2)
        for s in self.efficiency_setups() if factors else []:
            for f in factors:
                if not 0 < f * self.setups[s]["alpha_train"] < 1:
                    self._error("efficiency.alpha_test_factors", f"{f:g} x setup {s}'s alpha_train "
                                f"{self.setups[s]['alpha_train']:g} is not an ablation fraction in (0, 1)")

    def _check_edit(self, name):
        from coar.paper.data.corruptions import SYNTHETIC_NAMES
        from coar.paper.data.registry import DATASETS, GROUPED

        setups, e = self.setups, self.config["edits"][name]
        if e["setup"] not in setups:
            self._error(f"edits.{name}.setup", f"unknown setup {e['setup']!r}; defined: {', '.join(setups)}")
        if 0 not in e["ks"]:
            self._error(f"edits.{name}.ks", f"the sweep must include k = 0 (the unedited model), got {e['ks']}")
        if setups[e["setup"]]["output"] != "margin":
            self._error(f"edits.{name}.setup", f"edits read accuracy off correct-class margins; setup "
                                               f"{e['setup']} has output {setups[e['setup']]['output']!r}")
        for shift, sh in e.get("shifts", {}).items():
            key = f"edits.{name}.shifts.{shift}"
            if e["kind"] != "forget":
                self._error(key, "distribution shifts are scored for forget edits only")
            dataset = sh.get("dataset", setups[e["setup"]]["dataset"])
            if dataset not in DATASETS:
                self._error(f"{key}.dataset", f"unknown image dataset {dataset!r}; known: {', '.join(DATASETS)}")
            self._check_split(f"{key}.split", dataset, sh["split"])
            if sh.get("corruption") and sh["corruption"]["name"] not in SYNTHETIC_NAMES:
                self._error(f"{key}.corruption.name", f"{sh['corruption']['name']!r} is not one of "
                                                      f"{', '.join(SYNTHETIC_NAMES)}")
        if e.get("heldout_setup"):
            if e["heldout_setup"] not in setups:
                self._error(f"edits.{name}.heldout_setup", f"unknown setup {e['heldout_setup']!r}")
            if self.owner(e["heldout_setup"], "model") != self.owner(e["setup"], "model"):
                self._error(f"edits.{name}.heldout_setup", f"{e['heldout_setup']} and {e['setup']} must share the model")
        held = setups[e.get("heldout_setup") or e["setup"]]
        if held["examples"].get("n") is not None:  # the held-out examples: the next `heldout` of the split
            self._check_within_split(f"edits.{name}.heldout", held["examples"]["n"] + e["heldout"],
                                     f"examples with the setup's {held['examples']['n']} (held-out after them)",
                                     held["dataset"], held["examples"]["split"])
        if e["kind"] == "subpop":
            for key in ("setup", "heldout_setup"):
                s = e.get(key) or e["setup"]
                if setups[s]["dataset"] not in GROUPED:
                    self._error(f"edits.{name}.{key}", f"subpop needs examples with groups; setup {s} uses "
                                                       f"{setups[s]['dataset']} (group-labelled: {', '.join(GROUPED)})")
        if e["kind"] in ("backdoor", "typographic"):
            s = setups[e["setup"]]
            ok = SPECS[s["dataset"]].attack == e["kind"]
            if not ok or s["examples"].get("trigger") != "paired":
                need = "a backdoored dataset (*-backdoor)" if e["kind"] == "backdoor" else "dataset typographic"
                self._error(f"edits.{name}.setup", f"{e['kind']} needs paired examples of {need} "
                                                   f"(examples.trigger: paired); setup "
                                                   f"{e['setup']} has {s['dataset']}, trigger {s['examples'].get('trigger')}")
            if held["examples"].get("trigger"):
                self._error(f"edits.{name}.heldout_setup", f"{e['kind']} pastes the trigger on held-out images itself: "
                                                           "name a setup whose examples are clean (no trigger)")
            if e["targets"] is None or (s["examples"].get("n") or 0) < e["targets"]:
                self._error(f"edits.{name}.targets", f"{e['kind']} draws {e['targets']} pairs from setup "
                                                     f"{e['setup']}'s {s['examples'].get('n')}")
        if e["kind"] == "forget":
            bad = [c for c in e.get("classes", []) if c >= setups[e["setup"]]["num_classes"]]
            if not e.get("classes") or bad:
                self._error(f"edits.{name}.classes", f"forget needs classes below num_classes "
                                                     f"{setups[e['setup']]['num_classes']} (got {e.get('classes')})")

    def _check_figures(self):
        figures, edits, setups = self.config["figures"], self.config["edits"], self.setups
        for fig in _EDIT_FIGURES:
            spec = figures.get(fig)
            if spec is None:
                continue
            kinds = _EDIT_FIGURE_KINDS.get(fig, ("fix", "induce"))
            for key, name in [("edit", spec["edit"])] + [("also", a) for a in spec.get("also", [])]:
                e = edits.get(name)
                if e is None or e["kind"] not in kinds:
                    self._error(f"figures.{fig}.{key}", f"needs an `edits` entry of kind {' or '.join(kinds)}, got "
                                                        f"{name!r}" + (f" of kind {e['kind']!r}" if e else " (undefined)"))
            e = edits[spec["edit"]]
            shown = [spec["class"]] if fig == "fig4" else (spec.get("classes") or []) if fig == "fig23" else []
            if any(c not in e.get("classes", []) for c in shown):
                self._error(f"figures.{fig}", f"class(es) {shown} not among edits.{spec['edit']}.classes {e.get('classes')}")
        if "fig27" in figures:
            f27 = figures["fig27"]
            self.same_model_and_examples(f27["zero"], f27["scale"], "figures.fig27")
            for key in ("zero", "scale"):
                if setups[f27[key]]["ablation"] != key:
                    self._error(f"figures.fig27.{key}", f"setup {f27[key]} has ablation "
                                                        f"{setups[f27[key]]['ablation']!r}, expected {key!r}")
        for s in figures.get("fig25", {}).get("setups", []):
            if setups[s]["output"] != "margin":
                self._error(f"setups.{s}.output", "Fig. 25 reads accuracy off correct-class margins: output must be margin")
        for s in figures.get("fig14", {}).get("setups", []):
            if setups[s]["alpha_train"] not in setups[s]["alpha_test"]:
                self._error(f"setups.{s}.alpha_test", "Fig. 14 evaluates at alpha_train, which must be one of alpha_test")
            if "loo" not in setups[s]["baselines"]:
                self._error(f"setups.{s}.baselines", "Fig. 14 compares with leave-one-out: include loo")

    def _check_alphas(self):
        """Every alpha masks are sampled at ablates between 1 and C - 1 of the setup's C components
        (coar.sampling.check_alpha, which the jobs apply too): alpha_train, alpha_test, the alpha grids of Figs.
        13, 25, 26 and 27, and the efficiency study's alpha_test_factors x alpha_train."""
        from coar.sampling import check_alpha

        uses = []
        for name, s in self.setups.items():
            uses.append((f"setups.{name}.alpha_train", name, [s["alpha_train"]]))
            uses.append((f"setups.{name}.alpha_test", name, s["alpha_test"]))
        figs = self.config["figures"]
        for fig, grid in (("fig13", "alpha_test"), ("fig25", "alphas"), ("fig26", "alpha_test")):
            for name in figs.get(fig, {}).get("setups", []):
                uses.append((f"figures.{fig}.{grid}", name, figs[fig][grid]))
        if "fig27" in figs:
            uses += [("figures.fig27.alpha_test", figs["fig27"][k], figs["fig27"]["alpha_test"]) for k in ("zero", "scale")]
        if (self.config.get("efficiency") or {}).get("alpha_test_factors"):
            uses += [("efficiency.alpha_test_factors", s, self.efficiency_alphas(s)) for s in self.efficiency_setups()]
        for key, name, alphas in uses:
            for alpha in alphas if not key.endswith(".alpha_train") else ():  # evaluation masks: named by alpha
                if split_alpha(test_split(alpha)) != alpha:
                    self._error(key, f"alpha {alpha!r} has more significant digits than an evaluation store's name "
                                     f"keeps (6): its masks would be stored, and sampled, as {test_split(alpha)}; "
                                     f"write {split_alpha(test_split(alpha))!r}")
            c = self.component_count(name)
            for alpha in alphas if c is not None else ():
                try:
                    check_alpha(alpha, c, f"setup {name}'s", f"({self.setups[name]['model']})")
                except CoarError as exc:
                    self._error(key, str(exc))

    def _check_edit_ks(self):
        """Every k an edit sweep ablates is in 0..C - 1 of its setup's C components (coar.editing.check_k, which
        the edit jobs apply too): k = C ablates every component, beyond it the sweep would report k = C again."""
        from coar.options import check_k

        for name, e in self.config["edits"].items():
            c = self.component_count(e["setup"])
            for k in e["ks"] if c is not None else ():
                try:
                    check_k(k, c, "k", unedited=True)
                except CoarError as exc:
                    self._error(f"edits.{name}.ks", f"{exc} (setup {e['setup']}, {self.setups[e['setup']]['model']})")

    # --- rule params -------------------------------------------------------------------------------------------

    def setup_spec(self, setup, rule):
        """The setup keys a rule uses (RULE_KEYS). Nested keys at a null default are left out, so adding an
        optional key to the schema does not change the params of finished jobs (and does not rerun them);
        scripts read those keys with .get()."""
        spec = {k: _without_nulls(self.setups[setup][k]) for k in RULE_KEYS[rule]}
        return {k: v for k, v in spec.items() if not (k in LATE_KEYS and v is None)}

    def fit_spec(self, setup, fit="coar"):
        """setup_spec of a fit: the setup's own regression ("coar"), or ridge regression with its lambda grid
        ("ridge", Fig. 14's comparison), without the estimator options, which belong to the setup's method."""
        spec = self.setup_spec(setup, "fit")
        if fit == "ridge":
            spec = {**{k: v for k, v in spec.items() if k != "estimator"}, "regression": "ridge"}
        return spec

    def examples_spec(self, setup):
        """setup_spec for the examples and held-out sets, with the setup's image_size where its image files are
        decoded at another size than the dataset's own (a ResNet-50 takes any); left out otherwise, so that the
        params of finished jobs stay the same."""
        from coar.paper.data.registry import decode_size

        spec = self.setup_spec(setup, "examples")
        size = decode_size(self.setups[setup]["dataset"], self.setups[setup]["image_size"])
        return spec if size is None else {**spec, "image_size": size}

    def mask_settings(self, setup, split, shard):
        """alpha, m, seed and shard id of one mask store: training shards share the setup's seed and differ by
        shard id; evaluation masks at alpha use the stream (seed + 1, round(alpha * 1e6)), so the masks at an
        alpha do not depend on which other alphas a preset or figure asks for."""
        s = self.setups[setup]
        shard = int(shard)
        if split == "train":
            return {"alpha": s["alpha_train"], "m": self.shard_sizes(setup)[shard], "seed": s["seed"], "shard": shard}
        alpha = split_alpha(split)
        return {"alpha": alpha, "m": s["test_masks"], "seed": s["seed"] + 1, "shard": round(alpha * 1e6)}

    def shard_sizes(self, setup):
        """The number of training masks of each shard: equal shards, the last one smaller if need be."""
        s = self.setups[setup]
        per = math.ceil(s["masks"] / s["shards"])
        return [min(per, s["masks"] - i * per) for i in range(s["shards"]) if s["masks"] - i * per > 0]

    def sample_sizes(self, setup):
        """Fig. 14: numbers of masks (the first ones, in shard order) COAR is refitted on."""
        m = self.setups[setup]["masks"]
        return sorted({max(2, round(f * m)) for f in self.config["figures"]["fig14"]["fractions"]})

    def shift_spec(self, edit, name):
        """The settings a shifted set is decoded with, completed from the edit's setup."""
        from coar.paper.data.registry import decode_size

        e = self.config["edits"][edit]
        if name not in e.get("shifts", {}):
            raise ConfigError(f"data/edits/{edit}/shift-{name}.npz: `edits.{edit}.shifts` has no entry {name!r}")
        setup = self.setups[e["setup"]]
        spec = {"dataset": setup["dataset"], "title": name, "corruption": None, **e["shifts"][name]}
        size = decode_size(spec["dataset"], setup["image_size"])
        return {**spec, "seed": e["seed"], "classes": list(e.get("classes", [])),
                **({"image_size": size} if size is not None else {})}

    # --- artifacts ---------------------------------------------------------------------------------------------

    def owner(self, setup, kind):
        """The setup whose artifact of this kind (OWNED) `setup` uses: its furthest ancestor reached through
        parents with the same keys of that kind and the same owners of the artifacts it is made from."""
        keys, deps = OWNED[kind]
        s = setup
        while (parent := self.setups[s].get("parent")) is not None:
            if any(self.setups[s].get(k) != self.setups[parent].get(k) for k in keys):
                break
            # a fit shrunk toward a baseline's attributions is made from them too
            extra = ("baseline",) if kind == "fit" and self._prior(s) else ()
            if any(self.owner(s, d) != self.owner(parent, d) for d in deps + extra):
                break
            s = parent
        return s

    def same_model_and_examples(self, a, b, key):
        """Refuse, naming `key`, two setups that do not share their model and examples."""
        if (self.owner(a, "model"), self.owner(a, "examples")) != (self.owner(b, "model"), self.owner(b, "examples")):
            self._error(key, f"setups {a} and {b} must share the model and the examples (make one a `parent:` "
                             f"variant of the other without changing model or example keys)")

    def examples_file(self, setup):
        return f"data/{self.owner(setup, 'examples')}/examples.npz"

    def model_file(self, setup):
        return f"results/{self.owner(setup, 'model')}/model.pt"

    def train_receipt(self, setup):
        return f"results/{self.owner(setup, 'train_masks')}/masks/train.json"

    def test_receipt(self, setup, alpha):
        return f"results/{self.owner(setup, 'test_masks')}/masks/{test_split(alpha)}.json"

    def test_receipts(self, setup, alphas=None):
        return [self.test_receipt(setup, a) for a in (self.setups[setup]["alpha_test"] if alphas is None else alphas)]

    def shard_receipts(self, setup, split):
        n = len(self.shard_sizes(setup)) if split == "train" else 1
        return [f"results/{setup}/masks/{split}/shard-{i:03d}.json" for i in range(n)]

    def _prior(self, setup):
        """The baseline a setup's fit is shrunk toward (`regression: prior`), else None."""
        s = self.setups[setup]
        return (s.get("estimator") or {}).get("prior") if s.get("regression") == "prior" else None

    def fit_inputs(self, setup):
        """The fit's inputs: the training masks' receipt, and with `regression: prior` the baseline attributions
        it shrinks toward."""
        inputs = {"receipt": self.train_receipt(setup)}
        if self._prior(setup):
            inputs["prior"] = self.attribution_file(setup, self._prior(setup))
        return inputs

    def efficiency_setups(self):
        """Setups of the efficiency study: `efficiency.setups`, by default those of Fig. 2."""
        return (self.config.get("efficiency") or {}).get("setups") or self.figure_setups("fig2")

    def efficiency_alphas(self, setup):
        """The study's evaluation alphas for a setup: `efficiency.alpha_test_factors` x its alpha_train."""
        factors = (self.config.get("efficiency") or {}).get("alpha_test_factors") or [1.0]
        return scaled_alphas(self.setups[setup]["alpha_train"], factors)

    def efficiency_test_receipts(self):
        return [self.test_receipt(s, a) for s in self.efficiency_setups() for a in self.efficiency_alphas(s)]

    def attribution_file(self, setup, method):
        who = self.owner(setup, "fit" if method == "coar" else "baseline")
        return f"results/{who}/attributions/{method}.npz"

    def attribution_files(self, setup, methods=None):
        """COAR's and the setup's baselines' attributions (or those of `methods`)."""
        methods = ["coar"] + list(self.setups[setup]["baselines"]) if methods is None else methods
        return [self.attribution_file(setup, m) for m in methods]

    def evaluation_files(self, setup, alphas=None, on=None):
        """Per-alpha correlation tables: the setup's methods on its own evaluation masks, or (on=other) its COAR
        attributions on another setup's evaluation masks (e.g. scale-ablation attributions predicting
        zero-ablation counterfactuals)."""
        where = f"on-{on}/" if on else ""
        alphas = self.setups[setup]["alpha_test"] if alphas is None else alphas
        return [f"results/{setup}/evaluation/{where}alpha-{a:g}.csv" for a in alphas]

    def heldout_file(self, edit):
        """Held-out examples of an edit: the next `heldout` examples of the setup's split; when the setup uses
        the whole split (the paper's scale), the setup's own examples (targets and references are a negligible
        part)."""
        self.edit_setup(edit)
        e = self.config["edits"][edit]
        setup = e.get("heldout_setup") or e["setup"]
        if self.setups[setup]["examples"].get("n") is None:
            return self.examples_file(setup)
        return f"data/{self.owner(setup, 'examples')}/heldout-{e['heldout']}.npz"

    def shift_files(self, edit):
        """The distribution-shifted example sets a forget edit is scored on (`edits.<edit>.shifts`)."""
        return [f"data/edits/{edit}/shift-{name}.npz" for name in self.config["edits"][edit].get("shifts", {})]

    def forget_outputs(self, edit, name, classes=None):
        """One file `name` per forgotten class of a forget edit (or per class of `classes`)."""
        classes = self.config["edits"][edit]["classes"] if classes is None else classes
        return [f"results/edits/{edit}/class-{c}/{name}" for c in classes]

    def source_manifest(self, dataset, corruption=None):
        """The manifest of the data source a job reads (written by the job that obtains the source)."""
        from coar.paper.data.sources import source_of

        return f"data/datasets/{source_of(dataset, corruption)}.json"

    def setup_source(self, setup):
        """The manifest of a setup's examples' source."""
        s = self.setups[setup]
        return self.source_manifest(s["dataset"], s["examples"].get("corruption"))

    def model_sources(self, setup):
        """Sources a model job reads: the training data of a trained model, the class names of zero-shot CLIP;
        nothing for published weights used as they are."""
        s = self.setups[setup]
        return [self.source_manifest(s["dataset"])] if not s["pretrained"] or s["model"] == "clip_zeroshot" else []

    def weights_manifests(self, setup, rule):
        """Manifests of the published weights and tokenizers a job of `rule` ("model", "examples") for a setup
        reads (coar.paper.hub; fetched by the local rule `weights`)."""
        from coar.paper import hub

        return [hub.manifest_path(name) for name in hub.setup_assets(self.setups[setup], rule)]

    def fetch_manifests(self):
        """Every data source and every published weights manifest the setups and edits read: what the local rules
        `dataset` and `weights` obtain (the `fetch` target, run on a login node before anything is submitted)."""
        from coar.paper import hub

        out = []
        for s in self.setups:
            out += [self.setup_source(s), *self.model_sources(s)]
        for name, e in self.config.get("edits", {}).items():
            for shift in e.get("shifts", {}):
                spec = self.shift_spec(name, shift)
                out.append(self.source_manifest(spec["dataset"], spec["corruption"]))
        return list(dict.fromkeys(out + [hub.manifest_path(n) for n in hub.needed(self)]))

    # --- edits -------------------------------------------------------------------------------------------------

    def edit_setup(self, edit, kinds=None):
        """The setup an `edits` entry works on; fails naming the key when the entry or its kind is wrong."""
        edits = self.config.get("edits", {})
        if edit not in edits:
            raise ConfigError(f"results/edits/{edit}: preset {self.config['preset']!r} has no `edits.{edit}` entry "
                              f"(defined: {', '.join(edits) or 'none'})")
        e = edits[edit]
        if kinds and e["kind"] not in kinds:
            raise ConfigError(f"`edits.{edit}` is of kind {e['kind']!r}; this rule needs one of {kinds}")
        return e["setup"]

    def edits_of_kind(self, *kinds):
        """Wildcard regex matching the names of the `edits` entries of these kinds (no name: matches nothing)."""
        names = [re.escape(n) for n, e in self.config["edits"].items() if e["kind"] in kinds]
        return "|".join(names) if names else r"(?!)"

    # --- figures -----------------------------------------------------------------------------------------------

    def figure_config(self, fig):
        """The preset's `figures.<fig>` entry; a figure the preset does not configure fails at once, naming the
        key."""
        if fig not in self.config["figures"]:
            need = f"; it needs {PAPER_ONLY[fig]}" if fig in PAPER_ONLY else ""
            raise ConfigError(
                f"figures/{fig}.pdf: preset {self.config['preset']!r} has no `figures.{fig}` entry{need} (add one to "
                f"the config; its keys are described under figures.{fig} in workflow/schemas/config.schema.yaml)")
        return self.config["figures"][fig]

    def buildable_figures(self):
        """The figures the preset configures, as targets (rule all builds these)."""
        return [f"figures/fig{n}.pdf" for n in FIGURES if f"fig{n}" in self.config["figures"]]

    def figure_setups(self, fig):
        return self.figure_config(fig)["setups"]

    def figure_specs(self, fig, setups=None):
        """The setups a figure shows, each with the keys its footer and labels use."""
        return {s: self.setup_spec(s, "figure") for s in (setups or self.figure_setups(fig))}

    def fig27_setting(self, key):
        return self.figure_config("fig27")[key]

    def attribution_setup(self, n):
        """The setup of a figure that shows one setup's attributions (`figures.fig<n>.setup`)."""
        return self.figure_config(f"fig{n}")["setup"]

    def edit_figure(self, fig):
        """The edits entry a figure draws from."""
        return self.figure_config(fig)["edit"]

    def figure_edits(self, fig):
        """Every edits entry a figure draws from (Fig. 5 can show several, one panel each)."""
        return [self.edit_figure(fig), *self.figure_config(fig).get("also", [])]

    def forget_classes_shown(self, n):
        """The forgotten classes a forget figure shows: Fig. 4 its one `class`, Fig. 23 its `classes` or all
        of the edit's."""
        spec = self.figure_config(f"fig{n}")
        if int(n) == 4:
            return [spec["class"]]
        return spec.get("classes") or self.config["edits"][spec["edit"]]["classes"]
