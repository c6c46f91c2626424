"""The Snakemake workflow: lint, the CI preset end to end in a scratch directory, plans of the paper
preset, and failures that happen before any job runs with a message naming the problem."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coar.paper.data.fashion_mnist import find_fashion_mnist

from tests.helpers import (KILL_MASKS, KILL_RECEIPT, SLOW_SHARD, descendants, job_counts, processes, rows_done,
                           wait_for_rows, write_kill_config)

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")

pytestmark = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")


def snakemake(*args, cwd=ROOT, timeout=600):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean():
    r = snakemake("--lint")
    assert r.returncode == 0, r.stdout + r.stderr


def test_paper_preset_plans_fig2(tmp_path):
    r = snakemake("-n", "figures/fig2.pdf", f"--configfile={ROOT / 'config/paper.yaml'}", "--directory",
                  str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    counts = job_counts(out)
    # 50 + 100 + 200 training shards and one test shard per alpha_test (3 setups x 3)
    assert counts["sample_shard"] == 359 and counts["model"] == 3 and counts["baseline"] == 12


def test_paper_preset_plans_every_figure_with_a_rule(tmp_path):
    built = list(range(2, 28))
    r = snakemake("-n", *[f"figures/fig{n}.pdf" for n in built], f"--configfile={ROOT / 'config/paper.yaml'}",
                  "--directory", str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    counts = job_counts(out)
    # pretrained ResNet-50 / ViT-B/16 / GPT-2 / Phi-2; the trained CIFAR ResNet, ViT, MLP and backdoored ResNet;
    # ResNet-50 fine-tuned on Waterbirds, CelebA and MIMIC-CXR; zero-shot CLIP: variants reuse their parent's
    assert counts["model"] == 12
    # A, B, C, V, M, G, P, the Fig. 10 variants on their own example sets (train split + 6 CIFAR-10-C sets),
    # the backdoor's paired training images and clean test set, and Waterbirds' and CelebA's test and
    # training examples, MIMIC-CXR's test examples, and CLIP's paired photos
    assert counts["examples"] == 22
    # forgetting under shift (Fig. 4c): ImageNet-Sketch and five ImageNet* shifts
    assert counts["shifted_examples"] == 6
    # fix_A, fix_B, induce_B, subpop_WB, subpop_CB (Fig. 5a, b); one forget job per class (489, 559, 652,
    # 763); the backdoor and typographic edits (one rule)
    assert counts["edit_single"] == 5 and counts["edit_forget"] == 4 and counts["edit_backdoor"] == 2
    # Figs. 6 and 7 from the edits' tables; Fig. 24 from the saliency measurements, a job of their own
    assert counts["fig_backdoor"] == 2 and counts["backdoor_saliency"] == 1 and counts["fig_backdoor_saliency"] == 1
    # at full scale the held-out sets are the setups' own whole splits, except CelebA's (the 4,000 test
    # images after CB's 5,000) and the typographic photos after TY's 10
    assert counts["heldout_examples"] == 2
    # every source is obtained by one job of its own, which every job reading it waits for
    jobs = _dry_run_jobs(out)
    made = sorted(j["output"] for j in jobs if j["rule"] == "dataset")
    assert made == sorted(f"data/datasets/{s}.json" for s in (
        "cifar10", "cifar10-c", "imagenet", "imagenet-sketch", "imagenet-star", "waterbirds", "celeba-blond",
        "mimic-cxr", "typographic", "tinystories", "boolq"))
    readers = [j for j in jobs if j["rule"] in ("examples", "heldout_examples", "shifted_examples")]
    assert readers and all("data/datasets/" in j.get("input", "") for j in readers), readers
    trained = [j for j in jobs if j["rule"] == "model" and "data/datasets/" in j.get("input", "")]
    # the CIFAR ResNet, ViT, MLP and backdoored ResNet-18, the 3 fine-tuned ResNet-50s, and CLIP (class names);
    # the 4 published models used as they are read no data
    assert len(trained) == 8


def _dry_run_jobs(out: str) -> list[dict]:
    """The jobs of a dry run's output as {rule, input, output, ...} (one field per "key: value" line)."""
    jobs = []
    for line in out.splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            jobs.append({"rule": line[5:-1]})
        elif jobs and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            jobs[-1].setdefault(key, value)
    return jobs


def test_edit_granularity_study_plans_on_the_default_preset(tmp_path):
    """config/edit-granularity.yaml adds edits to the default preset: the same fixes and induced errors on A
    (104 filters), B (200) and R (488), each model trained once and each edit one job."""
    edits = [f"{kind}_{s}" for kind in ("fix", "induce") for s in "ABR"]
    r = snakemake("-n", *[f"results/edits/{e}/summary.csv" for e in edits], "--configfile",
                  str(ROOT / "config/config.yaml"), str(ROOT / "config/edit-granularity.yaml"), "--directory",
                  str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["model"] == 3 and counts["edit_single"] == 6 and counts["fit"] == 3 and counts["sample_shard"] == 6
    # Fig. 19 of the default preset fixes R's errors, not A's
    r = snakemake("-n", "figures/fig19.pdf", f"--configfile={ROOT / 'config/config.yaml'}", "--directory", str(tmp_path))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    jobs = _dry_run_jobs(r.stdout + r.stderr)
    assert [j["output"] for j in jobs if j["rule"] == "model"] == ["results/R/model.pt"]


def test_efficiency_edit_study_plans_on_the_default_preset(tmp_path):
    """config/efficiency-edit.yaml repeats fix_B with attributions shrunk toward leave-one-out on fewer masks:
    the variants share B's model, examples and LOO attributions, sample only their own training masks, and
    each fit shrinks toward B's LOO file."""
    r = snakemake("-n", *[f"results/edits/{e}/summary.csv" for e in ("fix_B", "fix_B_q", "fix_B_t")],
                  "--configfile", str(ROOT / "config/config.yaml"), str(ROOT / "config/efficiency-edit.yaml"),
                  "--directory", str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["model"] == 1 and counts["edit_single"] == 3 and counts["fit"] == 3
    assert counts["baseline"] == 1  # B's leave-one-out, computed once for both variants
    jobs = _dry_run_jobs(out)
    shards = sorted(j["output"] for j in jobs if j["rule"] == "sample_shard")
    assert shards == [f"results/{s}/masks/train/shard-{i:03d}.json" for s in ("B", "B_q", "B_t") for i in (0, 1)]
    fits = {j["output"]: j["input"] for j in jobs if j["rule"] == "fit"}
    assert fits == {"results/B/attributions/coar.npz": "results/B/masks/train.json",
                    "results/B_q/attributions/coar.npz": "results/B_q/masks/train.json, results/B/attributions/loo.npz",
                    "results/B_t/attributions/coar.npz": "results/B_t/masks/train.json, results/B/attributions/loo.npz"}
    edits = {j["output"].split(",")[0]: j["input"] for j in jobs if j["rule"] == "edit_single"}
    for edit, setup in (("fix_B", "B"), ("fix_B_q", "B_q"), ("fix_B_t", "B_t")):
        assert edits[f"results/edits/{edit}/sweep.csv"] == (f"results/B/model.pt, data/B/examples.npz, "
                                                            f"results/{setup}/attributions/coar.npz, "
                                                            f"data/B/heldout-1000.npz")


@pytest.mark.parametrize("setup,alphas", [("A", ("0.1", "0.15")), ("C", ("0.05", "0.075"))])
def test_mask_design_study_plans_on_the_default_preset(tmp_path, setup, alphas):
    """config/mask-designs.yaml: the setup's model and examples trained and drawn once, every design's training
    masks sampled apart (the scheme is part of the store), and every fit scored on the setup's own evaluation
    masks."""
    variants = (setup,) + tuple(f"{setup}_{d}" for d in ("exact_q", "bern", "bern_q", "bal", "bal_q"))
    targets = [f"results/{v}/evaluation/on-{setup}/alpha-{a}.csv" for v in variants for a in alphas]
    r = snakemake("-n", *targets, "--configfile", str(ROOT / "config/config.yaml"),
                  str(ROOT / "config/mask-designs.yaml"), "--directory", str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    counts = job_counts(out)
    assert counts["model"] == 1 and counts["fit"] == 6 and counts["evaluate_on"] == 12
    jobs = _dry_run_jobs(out)
    shards = {j["output"] for j in jobs if j["rule"] == "sample_shard"}
    assert shards == ({f"results/{v}/masks/train/shard-{i:03d}.json" for v in variants for i in (0, 1)}
                      | {f"results/{setup}/masks/test-{a}/shard-000.json" for a in alphas})
    tests = {j["input"].split(", ")[1] for j in jobs if j["rule"] == "evaluate_on"}
    assert tests == {f"results/{setup}/masks/test-{a}.json" for a in alphas}


def test_variant_shares_what_it_does_not_change(tmp_path):
    r = snakemake("-n", "figures/fig13.pdf", f"--configfile={ROOT / 'config/paper.yaml'}", "--directory", str(tmp_path))
    counts = job_counts(r.stdout + r.stderr)
    # B at alpha_train 0.10 shares B's model, examples and the evaluation masks: 100 + 100 training shards
    # and one store per alpha of the figure's grid
    assert counts["model"] == 1 and counts["examples"] == 1 and counts["sample_shard"] == 206
    assert counts["fit"] == 2


def test_bfloat16_variant_shares_the_model_and_samples_its_own_shards(tmp_path):
    cfg = tmp_path / "bf16.yaml"
    text = (ROOT / "config/test.yaml").read_text()
    cfg.write_text(text.replace("  T_scale:\n", "  T_bf16:\n    parent: T\n    precision: bfloat16\n  T_scale:\n", 1))
    r = snakemake("-n", "results/T/attributions/coar.npz", "results/T_bf16/attributions/coar.npz", f"--configfile={cfg}",
                  "--directory", str(tmp_path), "-p")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    counts = job_counts(r.stdout + r.stderr)
    assert counts["model"] == 1 and counts["examples"] == 1 and counts["sample_shard"] == 4 and counts["fit"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("precision: bfloat16", "precision: float16"))
    r = snakemake("-n", f"--configfile={bad}", "--directory", str(tmp_path))
    assert r.returncode != 0 and "setups.T_bf16.precision" in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


@pytest.mark.parametrize("parent, message", [("Q", "unknown setup 'Q'"), ("T2", "cycle T2 -> T -> T2")])
def test_bad_parent_is_named(tmp_path, parent, message):
    cfg = tmp_path / "variant.yaml"
    text = (ROOT / "config/test.yaml").read_text()
    text = text.replace("  T:\n", f"  T2:\n    parent: T\n  T:\n    parent: {parent}\n" if parent == "T2"
                        else f"  T:\n    parent: {parent}\n", 1)
    cfg.write_text(text)
    r = snakemake("-n", f"--configfile={cfg}", "--directory", str(tmp_path))
    assert r.returncode != 0 and "setups.T.parent" in r.stdout + r.stderr and message in r.stdout + r.stderr


def test_figure_not_configured_by_the_preset_names_the_key(tmp_path):
    cfg = tmp_path / "nofig14.yaml"
    text = (ROOT / "config/test.yaml").read_text()
    cfg.write_text(text[: text.index("  fig14:")])
    r = snakemake("-n", "figures/fig14.pdf", f"--configfile={cfg}", "--directory", str(tmp_path))
    assert r.returncode != 0 and "has no `figures.fig14` entry" in r.stdout + r.stderr


@pytest.mark.parametrize("n, need", [(7, "zero-shot CLIP ViT-B/16"), (9, "Phi-2"), (28, "figures 2 to 27 only")])
def test_paper_only_and_unknown_figures_fail_before_any_job_naming_what_they_need(n, need):
    r = snakemake("-n", f"figures/fig{n}.pdf")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and need in out, out[-2000:]
    if n < 28:
        assert f"preset 'default' has no `figures.fig{n}` entry" in out


def test_bad_config_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config/test.yaml").read_text().replace("alpha_train: 0.10", "alpha_train: 1.5"))
    r = snakemake("-n", f"--configfile={bad}", "--directory", str(tmp_path))
    assert r.returncode != 0 and "`setups.T.alpha_train`: 1.5" in r.stdout + r.stderr
    bad.write_text((ROOT / "config/test.yaml").read_text().replace("setups: [T]", "setups: [T, Q]"))
    r = snakemake("-n", f"--configfile={bad}", "--directory", str(tmp_path))
    assert r.returncode != 0 and "`figures.fig2.setups`" in r.stdout + r.stderr and "'Q'" in r.stdout + r.stderr


@pytest.mark.parametrize("old, new, key, message", [
    ("examples: {split: train, n: 6, trigger: paired}", "examples: {split: train, n: 6}", "edits.backdoor_D.setup",
     "backdoor needs paired examples"),
    ("examples: {split: test, n: 10, trigger: null}", "examples: {split: test, n: 10}",
     "edits.backdoor_D.heldout_setup", "pastes the trigger on held-out images itself"),
    ("    targets: 4\n    ks: [0, 1, 2, 4]", "    targets: 7\n    ks: [0, 1, 2, 4]", "edits.backdoor_D.targets",
     "draws 7 pairs from setup D's 6"),
    ("  fig6:\n    edit: backdoor_D", "  fig6:\n    edit: fix_T", "figures.fig6.edit", "of kind backdoor"),
])
def test_bad_backdoor_config_names_the_key(tmp_path, old, new, key, message):
    text = (ROOT / "config/test.yaml").read_text()
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new))
    r = snakemake("-n", f"--configfile={bad}", "--directory", str(tmp_path))
    assert r.returncode != 0 and key in r.stdout + r.stderr and message in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


@pytest.mark.parametrize("old, new, key, message", [
    ("    examples: {split: train, n: 300}", "    examples: {split: fold1, n: 300}", "setups.S.examples.split",
     "'fold1' is not one of train, test, val"),
    ('blur: {title: "Gaussian blur", split: test,', 'blur: {title: "Gaussian blur", split: bar,',
     "edits.forget_T.shifts.blur.split", "'bar' is not one of train, test, val"),
    ("corruption: {name: gaussian_blur, severity: 2}}", "corruption: {name: fog, severity: 2}}",
     "edits.forget_T.shifts.blur.corruption.name", "'fog' is not one of"),
    ('blur: {title: "Gaussian blur", split: test,', 'blur: {dataset: mnist, split: test,',
     "edits.forget_T.shifts.blur.dataset", "unknown image dataset 'mnist'"),
])
def test_bad_split_or_shift_config_names_the_key(tmp_path, old, new, key, message):
    text = (ROOT / "config/test.yaml").read_text()
    assert text.count(old) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new))
    r = snakemake("-n", f"--configfile={bad}", "--directory", str(tmp_path))
    assert r.returncode != 0 and key in r.stdout + r.stderr and message in r.stdout + r.stderr, (r.stdout + r.stderr)[-2000:]


@pytest.mark.parametrize("old, new, key, message", [
    ("    model: resnet_tiny\n    in_channels", "    model: resnet_tyni\n    in_channels", "setups.T.model",
     "unknown model 'resnet_tyni'"),
    ("alpha_train: 0.10", "alpha_train: .nan", "setups.T.alpha_train", "nan is not a finite number"),
    ("    examples: {split: test, n: 40}\n    alpha_train: 0.10", "    examples: {split: test, n: 40000}\n"
     "    alpha_train: 0.10", "setups.T.examples.n", "40000 examples, but fashion-mnist test has 10,000"),
    ("train: {n_train: 2000, epochs: 2", "train: {n_train: 90000, epochs: 2", "setups.T.train.n_train",
     "90000 training images, but fashion-mnist train has 60,000"),
    ("    ks: [0, 2, 8]\n    heldout: 60", "    ks: [0, 2, 8]\n    heldout: 9990", "edits.fix_T.heldout",
     "10030 examples with the setup's 40 (held-out after them), but fashion-mnist test has 10,000"),
    ("    ablation: scale\n    alpha_train: 0.20", "    ablation: scale\n    alpha_train: 0.004",
     "setups.T_scale.alpha_train",
     "alpha 0.004 ablates round(alpha * C) = round(0.004 * 104) = round(0.416) = 0 of setup T_scale's C = 104 "
     "components (resnet_tiny), so every mask would ablate nothing"),
    ("alpha_test: [0.10, 0.15]", "alpha_test: [0.10, 0.0045]", "setups.T.alpha_test",
     "round(0.0045 * 104) = round(0.468) = 0"),
    ("alpha_test: [0.10, 0.15]", "alpha_test: [0.10, 0.996]", "setups.T.alpha_test",
     "round(0.996 * 104) = round(103.584) = 104 of setup T's C = 104 components (resnet_tiny), so every mask "
     "would ablate every component"),
    ("    setups: [T]\n    alpha_test: [0.05, 0.10]", "    setups: [T]\n    alpha_test: [0.001, 0.10]",
     "figures.fig13.alpha_test", "round(0.001 * 104) = round(0.104) = 0"),
    ("    alpha_train: 0.025", "    alpha_train: 0.0001", "setups.T_text.alpha_train", "(gpt2_bytes)"),
    ("    masks: 240\n    shards: 2", "    masks: 240\n    shards: 300", "setups.T.shards",
     "300 shards for only 240 masks"),
    ("    masks: 240\n    shards: 2", "    masks: 240\n    shards: 2\n    masks: 480", "bad.yaml: key 'masks'",
     "is given twice in one mapping"),
])
def test_what_a_job_would_refuse_is_refused_at_plan_time(tmp_path, old, new, key, message):
    """Model names, finite numbers, counts within the split, alphas that ablate at least one component and
    shard counts are checked before any job runs."""
    text = (ROOT / "config/test.yaml").read_text()
    assert text.count(old) >= 1, old
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new, 1))
    r = snakemake("-n", f"--configfile={bad}", "--directory", str(tmp_path))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and key in out and message in out and "Traceback" not in out, out[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_ci_preset_end_to_end(tmp_path):
    args = ["--cores", "2", f"--configfile={ROOT / 'config/test.yaml'}", "--directory", str(tmp_path)]
    r = snakemake(*args, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    fig = tmp_path / "figures/fig2.pdf"
    assert fig.read_bytes()[:4] == b"%PDF"
    summary = pd.read_csv(tmp_path / "results/fig2/summary.csv")
    assert set(summary.method) == {"coar", "loo", "gp", "nc", "ii"}
    assert summary.query("method == 'coar'").mean_correlation.min() > 0.3  # tiny preset: the chain, not quality
    # rule all also builds Fig. 14: COAR refitted on the first half and on all masks
    assert (tmp_path / "figures/fig14.pdf").read_bytes()[:4] == b"%PDF"
    sizes = pd.read_csv(tmp_path / "results/fig14/sample_size.csv")
    assert sorted(sizes.query("method == 'coar'").m.unique()) == [120, 240]
    full = sizes.query("method == 'coar' and m == 240")
    assert full.cosine.min() > 0.999999  # the full-size refit is the same fit
    # the appendix figures of the preset, and the variant T_scale sharing T's model and examples
    for n in (3, 4, 5, 6, 8, 13, 15, 17, 18, 22, 24, 25, 26, 27):
        assert (tmp_path / f"figures/fig{n}.pdf").read_bytes()[:4] == b"%PDF", n
    assert not (tmp_path / "results/T_scale/model.pt").exists() and not (tmp_path / "data/T_scale").exists()
    effect = pd.read_csv(tmp_path / "results/fig25/ablation_effect.csv")
    clean = effect.query("alpha == 0")
    assert len(clean) == 2 and (clean.correlation == 1).all()
    # scale ablation (gamma 0.5) changes outputs less than zeroing the same fraction
    by = effect.query("alpha == 0.2").groupby("setup").correlation.mean()
    assert by["T_scale"] > by["T"]
    cos = pd.read_csv(tmp_path / "results/fig27/cosine.csv").cosine
    assert len(cos) == 40 and cos.between(-1, 1).all()
    # the edits: both methods swept from the same unedited model, k chosen among the swept values
    sweep = pd.read_csv(tmp_path / "results/edits/fix_T/sweep.csv")
    assert set(sweep.method) == {"coar", "random"} and sweep.query("k == 0").groupby(["target", "set"]).accuracy.nunique().max() == 1
    fix = pd.read_csv(tmp_path / "results/edits/fix_T/summary.csv").set_index(["target", "method"])
    # k chosen on the validation half within edits.fix_T.max_drop (1.0 here); the control at COAR-EDIT's k
    assert (fix.xs("random", level="method").k.fillna(-1) == fix.xs("coar", level="method").k.fillna(-1)).all()
    assert (fix.validation_accuracy_change.dropna() >= -1.0 - 1e-9).all() and fix.first_k.isin([2, 8, np.nan]).all()
    subpop = pd.read_csv(tmp_path / "results/edits/subpop_S/summary.csv")
    assert subpop.chosen.sum() == 4 and set(subpop.split) == {"validation", "held-out"}  # 2 methods x 2 splits
    backdoor = pd.read_csv(tmp_path / "results/edits/backdoor_D/summary.csv").set_index("method")
    assert backdoor.k.nunique() == 1 and backdoor.loc["coar", "k"] in (0, 1, 2, 4)  # the control uses COAR's k
    assert backdoor.loc["coar", "clean_before"] == backdoor.loc["random", "clean_before"]
    chosen = json.loads((tmp_path / "results/edits/forget_T/class-1/chosen.json").read_text())
    assert chosen["k"] in (0, 2, 8) and chosen["class_name"] == "Trouser"
    # Fashion-MNIST and the licence texts (T_text) were each obtained and verified once, by a job of their own
    manifest = json.loads((tmp_path / "data/datasets/fashion-mnist.json").read_text())
    assert manifest["counts"] == {"train": 60000, "test": 10000} and not manifest["manual"]
    assert sorted(p.name for p in (tmp_path / "data/datasets").iterdir()) == ["fashion-mnist.json", "os-text.json"]
    # the checkpoint says what it was trained on and with, and its weights are the ones fingerprinted
    from coar.components import model_fingerprint
    from coar.paper.data.registry import make_examples
    from coar.paper.training import load_checkpoint

    model, ck = load_checkpoint(tmp_path / "results/T/model.pt")
    meta = ck["meta"]
    assert meta["weights_fingerprint"] == model_fingerprint(model) and meta["precision"] == "float32"
    assert meta["config"]["train"]["n_train"] == 2000 and meta["config"]["model"] == "resnet_tiny"
    assert meta["data"]["train_fingerprint"] == make_examples("fashion-mnist", "train", 2000, 0).fingerprint()
    import hashlib

    from coar.paper.data.text import load_corpus

    text_meta = load_checkpoint(tmp_path / "results/T_text/model.pt")[1]["meta"]
    corpus = load_corpus()[0]  # the language model's training bytes
    assert text_meta["data"] == {"dataset": "os-text", "train_bytes": len(corpus),
                                 "train_fingerprint": hashlib.sha256(corpus.tobytes()).hexdigest()[:16]}
    # every shard has a receipt and a complete store beside it
    receipts = sorted((tmp_path / "results/T/masks/train").glob("shard-*.json"))
    assert len(receipts) == 2 and all((r.with_suffix("") / "COMPLETE").exists() for r in receipts)
    # the report collects every figure with its caption (captions of multi-figure rules pick text by number)
    report = tmp_path / "report.html"
    rep = snakemake("--report", str(report), *args)
    assert rep.returncode == 0, (rep.stdout + rep.stderr)[-3000:]
    html = report.read_text(errors="ignore")
    assert all(f"fig{n}.pdf" in html for n in (2, 3, 4, 5, 6, 8, 13, 14, 24, 25, 26, 27))
    again = snakemake("-n", *args)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # the efficiency study (not part of `all`): as a workflow target, then from its command line on the same
    # stores; both give the same table
    eff = snakemake("figures/efficiency.pdf", *args, timeout=900)
    assert eff.returncode == 0, (eff.stdout + eff.stderr)[-4000:]
    curves = pd.read_csv(tmp_path / "results/efficiency/curves.csv")
    assert {"ols", "ridge", "prior-loo", "prior-gp", "lowrank", "lasso", "loo alone"} <= set(curves.estimator)
    assert curves.query("estimator == 'ols' and label == 'm'").mean_correlation.iloc[0] > 0.3
    assert (tmp_path / "figures/efficiency.pdf").read_bytes()[:4] == b"%PDF"
    cli = subprocess.run([sys.executable, str(ROOT / "benchmarks/efficiency.py"), "--results", str(tmp_path / "results"),
                          "--setups", "T", "--csv", str(tmp_path / "cli.csv")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)
    assert cli.returncode == 0, (cli.stdout + cli.stderr)[-3000:]
    again_cli = pd.read_csv(tmp_path / "cli.csv")
    key = ["estimator", "label"]
    pd.testing.assert_frame_equal(curves.sort_values(key)[key + ["masks", "mean_correlation"]].reset_index(drop=True),
                                  again_cli.sort_values(key)[key + ["masks", "mean_correlation"]].reset_index(drop=True))


@pytest.mark.slow
@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_shard_job_killed_mid_shard_resumes_to_the_uninterrupted_result(tmp_path):
    """A sample_shard job's process killed with SIGKILL in the middle of its shard: the run fails, the rerun
    resumes from the rows that were done and ends with a store bitwise identical to an uninterrupted run's. A
    store corrupted afterwards is refused before the regression."""
    config = write_kill_config(ROOT, tmp_path / "kill.yaml")
    receipt = tmp_path / KILL_RECEIPT
    store = receipt.with_suffix("")
    args = [KILL_RECEIPT, "--cores", "2", f"--configfile={config}", "--directory", str(tmp_path), "--set-resources",
            *(f"sample_shard:{k}={v}" for k, v in SLOW_SHARD.items())]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(tmp_path / "killed.out", "w") as out:
        run = subprocess.Popen([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), *args], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_rows(store, lambda: run.poll() is None, KILL_MASKS // 10)
            job = [p for p in descendants(run.pid) if b"sample.py" in processes().get(p, ("", 0, b"", b""))[2]]
            assert len(job) == 1, f"expected one sampling process under snakemake, found {job}"
            os.kill(job[0], signal.SIGKILL)
            assert run.wait(timeout=120) != 0
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    killed_at = rows_done(store)
    assert 0 < killed_at < KILL_MASKS and not receipt.exists()

    resumed = snakemake(*args)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    log = (tmp_path / "logs/K/masks/train/shard-000.log").read_text(errors="replace")
    assert f"{killed_at} of {KILL_MASKS} rows already done" in log
    after_kill = json.loads(receipt.read_text())

    store.rename(tmp_path / "killed-store")  # the same shard again, uninterrupted
    receipt.unlink()
    fresh = snakemake(*args)
    assert fresh.returncode == 0, (fresh.stdout + fresh.stderr)[-4000:]
    uninterrupted = json.loads(receipt.read_text())
    assert after_kill["checksums"]["files"] == uninterrupted["checksums"]["files"]  # masks, outputs, done flags

    # one flipped byte in the finished store: the step before the regression refuses it, naming the file
    outputs = store / "outputs.npy"
    data = bytearray(outputs.read_bytes())
    data[-3] ^= 0x10
    outputs.write_bytes(bytes(data))
    gathered = snakemake("results/K/masks/train.json", *args[1:])
    assert gathered.returncode != 0 and not (tmp_path / "results/K/masks/train.json").exists()
    assert "outputs.npy" in (tmp_path / "logs/K/masks/train.gather.log").read_text(errors="replace")


def test_table_and_figure_jobs_do_not_import_torch():
    """Scripts that call start(sm, torch=False) skip torch's import (about 1.6 s per job, 199 jobs in the
    default run): their module-level imports, run as written, must leave torch out of sys.modules."""
    import ast

    light = [p for p in sorted((ROOT / "workflow/scripts").glob("*.py")) if "start(sm, torch=False)" in p.read_text()]
    assert {"gather.py", "evaluate_alpha.py", "fig2.py", "fig_edit.py", "fit.py"} <= {p.name for p in light}
    for path in light:
        tree = ast.parse(path.read_text())
        imports = [ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                   and not (isinstance(n, ast.ImportFrom) and n.module == "_job")]
        code = "import sys\n" + "\n".join(imports) + "\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "workflow/scripts")
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == "[]", f"{path.name} imports torch via {r.stdout.strip()}"


@pytest.mark.parametrize("gpu, possible, imported", [(0, True, False), (1, False, False), (1, True, True)])
def test_start_imports_torch_only_where_a_gpu_job_may_find_one(tmp_path, gpu, possible, imported):
    """start(sm, torch=False) leaves torch out unless the rule asks for a GPU and the machine has GPU device
    files; then it imports torch to ask CUDA (the fit rule's GPU regression)."""
    code = f"""
import sys, types
import _job
_job.cuda_possible = lambda: {possible}
sm = types.SimpleNamespace(log=[{str(tmp_path / 'job.log')!r}], threads=1, resources={{"gpu": {gpu}}})
device = _job.start(sm, torch=False)
sys.stdout = sys.__stdout__
print(device, "torch" in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "workflow/scripts")
    assert r.returncode == 0, r.stderr[-2000:]
    device, torch_loaded = r.stdout.split()
    assert torch_loaded == str(imported)
    assert device == "cpu" or (imported and device.startswith("cuda:"))  # the GPU the job claimed


def test_building_the_default_dag_imports_no_torch(tmp_path):
    """Snakemake builds the default preset's DAG, every plan check included, without importing torch (2 s of
    every snakemake call, dry runs included, on a 2-core VM). The component counts are the exception: counted
    once on the meta device and cached (coar.paper.counts), so the first plan of a fresh cache may import it."""
    code = """
import builtins, sys, traceback
seen = []
real = builtins.__import__
def watch(name, *args, **kwargs):
    if not seen and name.split(".")[0] == "torch" and "torch" not in sys.modules:
        seen.append("".join(traceback.format_stack(limit=12)))
    return real(name, *args, **kwargs)
builtins.__import__ = watch
from snakemake.cli import main
sys.argv = ["snakemake", "-n", "--snakefile", sys.argv[1], "--directory", sys.argv[2], "--configfile=" + sys.argv[3],
            "all"]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.__stdout__.write(f"EXIT:{code}\\nTORCH:" + (seen[0] if seen else "none") + "\\n")
"""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, "-c", code, str(ROOT / "Snakefile"), str(tmp_path / "w"),
                            str(ROOT / "config/config.yaml")], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300) for _ in range(2)]
    out = runs[1].stdout
    assert "EXIT:0" in out and "sample_shard" in out, (out + runs[1].stderr)[-3000:]  # the whole DAG was planned
    assert out.split("TORCH:", 1)[1].strip() == "none", out.split("TORCH:", 1)[1]
