# Config validation (schema + cross-key checks, before any job runs) and helpers shared by the rules.
import math

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def _validate_config():
    """Every schema violation, each named by its dotted key path, before any job runs."""
    import jsonschema
    import yaml

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


def _check_config():
    for name, s in SETUPS.items():
        if not name.isidentifier():
            _config_error(f"setups.{name}", "setup names are used in paths: letters, digits and _ only")
        if s["shards"] > s["masks"]:
            _config_error(f"setups.{name}.shards", f"{s['shards']} shards for only {s['masks']} masks")
        if s["pretrained"] and s["model"] not in ("resnet50", "vit_b_16", "clip_vit_b_16", "gpt2", "phi2"):
            _config_error(f"setups.{name}.pretrained", f"model {s['model']!r} has no published weights")
        if not s["pretrained"] and s["dataset"] == "imagenet":
            _config_error(f"setups.{name}.pretrained", "ImageNet models are used pretrained (set pretrained: true)")
        if len(set(s["alpha_test"])) != len(s["alpha_test"]):
            _config_error(f"setups.{name}.alpha_test", f"repeated values in {s['alpha_test']}")
    for fig, spec in config["figures"].items():
        for s in spec.get("setups", []):
            if s not in SETUPS:
                _config_error(f"figures.{fig}.setups", f"unknown setup {s!r}; defined: {', '.join(SETUPS)}")
    for s in config["figures"].get("fig14", {}).get("setups", []):
        if SETUPS[s]["alpha_train"] not in SETUPS[s]["alpha_test"]:
            _config_error(f"setups.{s}.alpha_test", "Fig. 14 evaluates at alpha_train, which must be one of alpha_test")
        if "loo" not in SETUPS[s]["baselines"]:
            _config_error(f"setups.{s}.baselines", "Fig. 14 compares with leave-one-out: include loo")


_check_config()


# The keys of a setup each rule depends on. Rules get only these as params, so Snakemake's params rerun
# trigger reruns exactly the jobs a config change affects (e.g. test_masks reruns the evaluation masks,
# not training).
RULE_KEYS = {
    "examples": ("dataset", "examples", "seed"),
    "model": ("dataset", "model", "pretrained", "num_classes", "in_channels", "image_size", "train", "seed"),
    "sample_shard": ("model", "components", "output", "scheme", "ablation", "gamma", "dtype"),
    "fit": ("regression", "lambdas"),
    "baseline": ("model", "components", "output", "ablation", "gamma"),
    "evaluate": ("alpha_train",),
    "fig2": ("title", "model", "dataset", "masks", "alpha_train", "examples"),
    "fig14": ("title", "model", "dataset", "masks", "alpha_train", "examples"),
}


def setup_spec(setup, rule):
    return {k: SETUPS[setup][k] for k in RULE_KEYS[rule]}


def shard_sizes(setup):
    s = SETUPS[setup]
    per = math.ceil(s["masks"] / s["shards"])
    return [min(per, s["masks"] - i * per) for i in range(s["shards"]) if s["masks"] - i * per > 0]


def test_split(alpha):
    return f"test-{alpha:g}"


def mask_settings(setup, split, shard):
    """alpha, m, seed and shard id of one mask store: training shards share the setup's seed and differ
    by shard id; each alpha_test gets its own seed stream (seed + 1, shard = index of alpha)."""
    s = SETUPS[setup]
    shard = int(shard)
    if split == "train":
        return {"alpha": s["alpha_train"], "m": shard_sizes(setup)[shard], "seed": s["seed"], "shard": shard}
    alphas = [test_split(a) for a in s["alpha_test"]]
    if split not in alphas:
        raise WorkflowError(f"setup {setup}: no alpha_test gives mask split {split!r} (have {alphas})")
    i = alphas.index(split)
    return {"alpha": s["alpha_test"][i], "m": s["test_masks"], "seed": s["seed"] + 1, "shard": i}


def shard_receipts(setup, split):
    n = len(shard_sizes(setup)) if split == "train" else 1
    return [f"results/{setup}/masks/{split}/shard-{i:03d}.json" for i in range(n)]


def test_receipts(setup):
    return [f"results/{setup}/masks/{test_split(a)}.json" for a in SETUPS[setup]["alpha_test"]]


def figure_setups(fig):
    """Setups a figure uses; a figure the preset does not configure fails at once, naming the key."""
    if fig not in config["figures"]:
        raise WorkflowError(
            f"figures/{fig}.pdf: preset {config['preset']!r} has no `figures.{fig}` entry "
            f"(add e.g. `figures: {{{fig}: {{setups: [{next(iter(SETUPS))}]}}}}` to the config)"
        )
    return config["figures"][fig]["setups"]


def sample_sizes(setup):
    """Fig. 14: numbers of masks (the first ones, in shard order) COAR is refitted on."""
    m = SETUPS[setup]["masks"]
    return sorted({max(2, round(f * m)) for f in config["figures"]["fig14"]["fractions"]})


def attribution_files(setup):
    methods = ["coar"] + list(SETUPS[setup]["baselines"])
    return [f"results/{setup}/attributions/{m}.npz" for m in methods]


# Every figure of the paper: built by a rule of rules/figures.smk, or failing at once with the reason.
FIGURES = {
    2: ("attribution accuracy of COAR vs four baselines (setups A, B, C)", "built"),
    3: ("editing one prediction", "needs the editing rules (issue 5)"),
    4: ("forgetting a class", "needs the editing rules (issue 5)"),
    5: ("subpopulation robustness on Waterbirds / CelebA", "needs the editing rules (issue 5)"),
    6: ("backdoor localisation", "needs the editing rules and the backdoored model (issues 4, 5)"),
    7: ("typographic attacks on CLIP", "needs CLIP and the typographic-attack images (issues 4, 5)"),
    8: ("GPT-2 on TinyStories", "needs TinyStories and GPT-2 (issue 4)"),
    9: ("Phi-2 on BoolQ", "needs BoolQ and Phi-2 (issue 4)"),
    10: ("CIFAR-10 train set and CIFAR-10-C", "needs CIFAR-10-C (issue 4)"),
    11: ("CIFAR ViT and MLP", "not built yet"),
    12: ("Waterbirds, CelebA, MIMIC-CXR, CLIP", "needs those datasets (issue 4)"),
    13: ("alpha_train 0.05 vs 0.10", "not built yet"),
    14: ("correlation vs sample size m", "built"),
    15: ("example-level scatters for every method (A, B)", "not built yet"),
    16: ("example-level scatters for every method (C)", "not built yet"),
    17: ("top-attribution examples per component (A)", "not built yet"),
    18: ("top-attribution examples per component (B)", "not built yet"),
    19: ("fixing CIFAR misclassifications", "needs the editing rules (issue 5)"),
    20: ("fixing ImageNet misclassifications", "needs the editing rules (issue 5)"),
    21: ("inducing errors", "needs the editing rules (issue 5)"),
    22: ("layers targeted by edits", "needs the editing rules (issue 5)"),
    23: ("forgetting more classes", "needs the editing rules (issue 5)"),
    24: ("saliency of backdoor components", "needs the editing rules (issue 5)"),
    25: ("effect of alpha on accuracy and output correlation", "not built yet"),
    26: ("COAR with scale ablation (gamma 0.5)", "not built yet"),
    27: ("zero vs scale attributions", "not built yet"),
}


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
