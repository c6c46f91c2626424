"""The `coar` command line: chain the steps of COAR / COAR-EDIT without Snakemake.

  coar demo                                  the whole offline chain on Fashion-MNIST, resumable
  coar components MODEL                      the component table and total count
  coar prepare fashion-mnist --split test --n 500 --out data/test.npz
  coar train --model resnet_tiny --data fashion-mnist --out models/m.pt
  coar sample --checkpoint m.pt --examples test.npz --masks 1000 --alpha 0.1 --shard 0 --out stores/train/0
  coar fit --stores stores/train/* --out attributions/coar.npz
  coar baseline --method loo --checkpoint m.pt --examples test.npz --out attributions/loo.npz
  coar evaluate --attributions attributions/*.npz --stores stores/test/* --out results/corr.csv
  coar edit --attributions coar.npz --checkpoint m.pt --targets 3 --references-random 50 --k 3 --out edited.pt
  coar preflight --configfile config/paper.yaml     a site checked before a run, and what the run will cost
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from .errors import ArgumentError, CoarError
from .paths import check_output_file as _out_file, check_output_path as _out_path
from .sampling import SCHEMES


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _alpha(text: str) -> float:
    a = float(text)
    if not 0.0 < a < 1.0:
        raise argparse.ArgumentTypeError(f"alpha must be in (0, 1), got {text}")
    return a


def _lr(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"learning rate must be a finite number > 0, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"learning rate must be a finite number > 0, got {text}")
    return v


def _nonnegative(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return v


def _positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def _device(name: str | None, flag: str = "--device"):
    """auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:<index>; anything else is refused
    naming the option."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise CoarError(f"{flag} {name!r} is not a device coar runs on; give auto, cpu, cuda or cuda:<index>")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CoarError(f"{flag} {name}: torch sees no CUDA GPU here (torch.cuda.is_available() is False)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CoarError(f"{flag} {name}: torch sees {torch.cuda.device_count()} CUDA GPU(s) "
                        f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device


def _given(value, default, flag: str, why: str):
    """`default` when the option was not given (None); an option given where it does nothing is refused."""
    if value is None:
        return default
    if why:
        raise CoarError(f"{flag} {value} does nothing {why}; leave it out")
    return value


def cmd_components(a):
    from .components import component_set
    from .io import atomic_write_csv
    from .paper.models import TEXT_MODELS, build_model

    _out_file(a.csv, "--csv")
    why = f"for the language model {a.model} (its shape is its configuration's)" if a.model in TEXT_MODELS else ""
    kwargs = {"num_classes": _given(a.num_classes, 1000, "--num-classes", why),
              "in_channels": _given(a.in_channels, 3, "--in-channels", why),
              "image_size": _given(a.image_size, 224, "--image-size", why)}
    model = build_model(a.model, device="meta", **kwargs)
    cset = component_set(model, a.table or a.model)
    table = cset.table()
    if a.csv:
        atomic_write_csv(table, a.csv)
    with __import__("pandas").option_context("display.max_rows", None, "display.width", 200):
        print(table[["group", "module", "site", "units"]].to_string(index=False))
    print(f"total components: {cset.size:,}  (fingerprint {cset.fingerprint()})")


def cmd_prepare(a):
    from .paper.data.fashion_mnist import fashion_mnist_examples
    from .resources import check_memory

    _out_file(a.out)
    seed = _given(a.seed, 0, "--seed", "without --n (the whole split is taken in order)" if a.n is None else "")
    if a.pad_to is not None and a.pad_to < 28:
        raise CoarError(f"--pad-to {a.pad_to} is smaller than Fashion-MNIST's 28 x 28 images; padding never crops "
                        "(leave it out, or give a size >= 28)")
    side = max(28, a.pad_to or 28)
    check_memory((a.n or 60_000) * a.channels * side * side, "--channels/--pad-to",
                 f"{a.n or 'up to 60,000'} images of {a.channels} x {side} x {side} uint8 values", "use fewer channels, a "
                 "smaller --pad-to or fewer --n examples")
    ex = fashion_mnist_examples(a.split, a.n, seed, a.root, pad_to=a.pad_to, channels=a.channels)
    ex.save(a.out)
    print(f"wrote {len(ex)} {a.dataset} {a.split} examples to {a.out} (fingerprint {ex.fingerprint()})")


def cmd_dataset(a):
    import json

    from .paper.data.sources import prepare, source_root
    from .io import atomic_write_text

    _out_file(a.out)
    root = a.root if a.root is not None else source_root(a.source)
    manifest = prepare(a.source, root)
    text = json.dumps(manifest, indent=1)
    if a.out:
        atomic_write_text(a.out, text + "\n")
    print(text)


def cmd_train(a):
    import torch

    from .paper.data.fashion_mnist import fashion_mnist_examples
    from .paper.models import MODELS, TEXT_MODELS, build_model
    from .paper.training import accuracy, save_checkpoint, train_classifier

    _out_file(a.out)
    if a.model not in MODELS:
        build_model(a.model)  # refuses naming the known models
    if a.model in TEXT_MODELS:
        raise CoarError(f"--model {a.model} is a language model; coar train trains image classifiers on "
                        "Fashion-MNIST (the workflow trains language models: a setup with dataset os-text)")
    device = _device(a.device)
    torch.manual_seed(a.seed)
    train = fashion_mnist_examples("train", a.n_train, a.seed, a.root)
    test = fashion_mnist_examples("test", None, 0, a.root)
    kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 28}
    model = build_model(a.model, **kwargs).to(device)
    x, y = train.tensors(device)
    info = train_classifier(model, x, y, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                            precision=None if a.precision == "auto" else a.precision, memory_format=a.memory_format)
    xt, yt = test.tensors(device)
    info["test_accuracy"] = accuracy(model, xt, yt)
    info.update(data=train.fingerprint(), n_train=len(train), seed=a.seed, lr=a.lr, batch_size=a.batch_size)
    save_checkpoint(a.out, model.cpu(), a.model, kwargs, info)
    print(f"test accuracy {info['test_accuracy']:.4f} after {a.epochs} epochs ({info['seconds']:.0f} s); wrote {a.out}")


#: Flags of `coar sample` by SampleSettings field.
SAMPLE_FLAGS = {f: "--" + f.replace("_", "-") for f in ("masks", "alpha", "seed", "shard", "scheme", "output", "ablation",
                                                        "gamma", "dtype", "precision", "batch_size", "masks_per_pass",
                                                        "mechanism", "memory_format", "batchnorm")}


def cmd_sample(a):
    from .components import component_set
    from .examples import Examples
    from .pipeline import sample_store
    from .settings import SampleSettings
    from .paper.training import load_checkpoint

    _out_path(a.out)
    gamma = _given(a.gamma, 0.5, "--gamma", "with --ablation zero" if a.ablation == "zero" else "")
    st = SampleSettings(a.masks, a.alpha, a.seed, a.shard, a.scheme, a.output, a.ablation, gamma, a.dtype, a.precision,
                        a.batch_size, a.masks_per_pass, a.mechanism, a.memory_format, a.batchnorm)
    st = st.validate(names=SAMPLE_FLAGS)  # before reading a file
    device = _device(a.device)
    model, ck = load_checkpoint(a.checkpoint, device)
    cset = component_set(model, a.components or ck["arch"])
    st = st.validate(n_components=cset.size, names=SAMPLE_FLAGS)
    try:
        store = sample_store(a.out, model, cset, Examples.load(a.examples), m=st.masks, alpha=st.alpha, seed=st.seed,
                             shard=st.shard, output=st.output, scheme=st.scheme, ablation=st.ablation, gamma=st.gamma,
                             dtype=st.dtype, precision=st.precision, batch_size=st.batch_size,
                             masks_per_pass=st.masks_per_pass, mechanism=st.mechanism, memory_format=st.memory_format,
                             batchnorm=st.batchnorm, device=device, progress=not a.quiet,
                             log=None if a.quiet else print)
    except ArgumentError as e:  # a setting judged against the model (logit:<c> and its classes): name its flag
        raise ArgumentError(SAMPLE_FLAGS.get(e.argument, e.argument), e.problem) from None
    print(f"shard {a.out}: complete={store.is_complete} ({store.n_rows} masks x {store.n_examples} examples)")


#: Flags of `coar fit` by FitSettings field.
FIT_FLAGS = {"method": "--method", "lambdas": "--lambdas", "select": "--select", "ranks": "--ranks",
             "couplings": "--couplings", "ratios": "--ratios", "l1_ratio": "--l1-ratio",
             "holdout_fraction": "--holdout-fraction", "prior": "--prior", "standardize": "--no-standardize"}


def cmd_fit(a):
    from dataclasses import replace

    from .attributions import Attributions
    from .pipeline import fit_stores
    from .settings import FitSettings

    _out_file(a.out)
    fit = FitSettings(a.method, a.lambdas, a.select, a.ranks, a.couplings, a.ratios, a.l1_ratio, a.holdout_fraction,
                      prior=a.prior, standardize=not a.no_standardize).validate(FIT_FLAGS)  # before reading a file
    if fit.prior is not None:
        fit = replace(fit, prior=Attributions.load(fit.prior))
    device = None if a.device == "cpu" else str(_device(a.device))
    try:
        attr = fit_stores(a.stores, device=device, **fit.fit_kwargs())
    except ArgumentError as e:  # a setting judged with the stores' number of masks: name its flag
        raise ArgumentError(FIT_FLAGS.get(e.argument, e.argument), e.problem) from None
    attr.save(a.out)
    print(f"fitted {attr.method} attributions for {attr.n_examples} examples x {attr.n_components} components "
          f"from {attr.meta['n_masks']} masks; wrote {a.out}")


def cmd_baseline(a):
    from .ablation import unit_factors
    from .baselines import compute_baseline
    from .components import component_set
    from .examples import Examples
    from .outputs import get_output_fn
    from .pipeline import check_examples_fit
    from .provenance import for_baseline
    from .paper.training import load_checkpoint

    _out_file(a.out)
    fn = get_output_fn(a.output)
    ablates = a.method in ("loo", "gp")  # NC and II ablate nothing
    ablation = _given(a.ablation, "zero", "--ablation", "" if ablates else f"with --method {a.method} (it ablates nothing)")
    gamma = _given(a.gamma, 0.5, "--gamma", "" if ablates and ablation == "scale" else
                   f"with --method {a.method} (it ablates nothing)" if not ablates else "with --ablation zero")
    if ablates:
        unit_factors(np.zeros(1, dtype=bool), ablation, gamma)  # an ablation or gamma it cannot apply
    device = _device(a.device)
    model, ck = load_checkpoint(a.checkpoint, device)
    cset = component_set(model, a.components or ck["arch"])
    ex = Examples.load(a.examples)
    x, y = ex.tensors(device)
    check_examples_fit(model, x, y, a.output, fn)
    kw = {"mode": ablation, "gamma": gamma} if ablates else {}  # NC, II: no ablation
    prov = for_baseline(model, cset, ex, a.output, ablation if kw else None, gamma)
    if a.batch_size:
        kw["batch_size"] = a.batch_size
    attr = compute_baseline(a.method, model, cset, x, y, fn, **kw)
    attr.meta["provenance"] = prov
    attr.save(a.out)
    print(f"{a.method} attributions [{attr.n_examples} x {attr.n_components}] written to {a.out}")


def cmd_evaluate(a):
    import pandas as pd

    from .attributions import Attributions
    from .correlation import summarize
    from .io import atomic_write_csv
    from .pipeline import evaluate_stores

    _out_file(a.out)
    attrs, where = {}, {}
    for p in a.attributions:
        at = Attributions.load(p)
        name = at.method if at.method not in attrs else Path(p).stem
        if name in attrs:
            raise CoarError(f"attributions {where[name]} and {p} would both be reported as {name!r}; give files of "
                            "other methods or other file names")
        attrs[name], where[name] = at, p
    table = evaluate_stores(attrs, a.stores)
    if a.out:
        atomic_write_csv(table, a.out)
    with pd.option_context("display.width", 200):
        print(summarize(table).to_string(index=False))


#: Flags of `coar edit` by EditSettings field.
EDIT_FLAGS = {f: "--" + f.replace("_", "-") for f in ("targets", "references", "k", "direction", "references_random",
                                                        "seed")}


def cmd_edit(a):
    from .attributions import Attributions
    from .components import component_set
    from .examples import Examples
    from .editing import apply_edit, check_k, edit_scores, ranking, select_components, sweep_outputs, sweep_table
    from .settings import EditSettings
    from .outputs import margin
    from .pipeline import check_examples_fit
    from .provenance import check_edit
    from .paper.training import load_checkpoint, save_checkpoint

    _out_file(a.out)
    seed = _given(a.seed, 0, "--seed", "with --references (it seeds --references-random)"
                  if a.references is not None else "")
    if a.sweep is not None and a.examples is None:
        raise CoarError("--sweep does nothing without --examples (the sweep is reported on them); give --examples "
                        "or leave --sweep out")
    attr = Attributions.load(a.attributions)
    model, ck = load_checkpoint(a.checkpoint, "cpu")
    cset = component_set(model, a.components or ck["arch"])
    if attr.components != cset.fingerprint():
        raise CoarError(f"attributions {a.attributions} were computed for component set {attr.components}, the "
                        f"checkpoint {a.checkpoint} has component set {cset.fingerprint()} ({cset.name}); give the "
                        "checkpoint and --components the attributions were computed for")
    ex = Examples.load(a.examples) if a.examples else None
    check_edit(attr, a.attributions, model, f"the checkpoint {a.checkpoint}", ex, f"the examples file {a.examples}")
    if ex is not None:
        x, y = ex.tensors("cpu")
        try:
            check_examples_fit(model, x, y, "margin", margin)
        except CoarError as exc:
            raise CoarError(f"--examples {a.examples}: {exc}") from None
    e = EditSettings(a.targets, a.references, a.k, a.direction, a.references_random, seed).validate(
        attr.n_examples, cset.size, EDIT_FLAGS)
    for k in a.sweep or []:
        check_k(k, cset.size, "--sweep", unedited=True)
    targets, refs = e.targets, e.references
    scores = edit_scores(attr, targets, refs)
    chosen = select_components(scores, e.k, e.direction)
    labels = cset.labels()
    print(f"ablating {a.k} components ({'bottom' if a.direction == 'increase' else 'top'}-k of eq. 8):")
    for j in chosen:
        print(f"  {labels[j]:50s} tau={scores[j]:+.3f}")
    if ex is not None:
        ks = sorted(set([0, a.k] + list(a.sweep or [])))
        order = ranking(scores, a.direction)
        m = sweep_outputs(model, cset, order, ks, x, y, margin)
        tab = sweep_table({"targets": m[:, targets], "references": m[:, refs], "all": m}, ks)
        print(tab.pivot(index="k", columns="split", values="accuracy").to_string())
    if a.out:
        edited = apply_edit(model, cset, chosen)
        meta = dict(ck.get("meta", {}), edit={"ablated": [int(j) for j in chosen], "targets": list(map(int, targets)),
                                             "references": [int(r) for r in refs], "direction": a.direction})
        save_checkpoint(a.out, edited, ck["arch"], ck["kwargs"], meta)
        print(f"wrote edited checkpoint {a.out}")


def cmd_demo(a):
    from .paper.demo import DemoConfig, run_demo

    _out_path(a.out)
    cfg = DemoConfig(masks=a.masks, n_examples=a.examples, n_train=a.n_train, epochs=a.epochs, root=a.root)
    run_demo(a.out, cfg)


def cmd_preflight(a):
    from .paper.preflight import main as preflight

    if a.json:
        _out_file(a.json, "--json")
    status = preflight(a.configfile, a.profile, a.target, a.calibrate, a.login_node, a.jobs, a.json)
    if status:
        raise SystemExit(status)  # 1: a check failed (the table names it); 0 falls through to main's


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coar", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("demo", help="the whole offline chain on Fashion-MNIST (resumable); prints correlations")
    s.add_argument("--out", default="runs/demo")
    s.add_argument("--masks", type=_positive, default=1000)
    s.add_argument("--examples", type=_positive, default=200)
    s.add_argument("--n-train", type=_positive, default=8000)
    s.add_argument("--epochs", type=_positive, default=2)
    s.add_argument("--root", help="Fashion-MNIST IDX directory (default: Debian's package)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("components", help="print a model's component table and count")
    s.add_argument("model")
    s.add_argument("--table", help="component table name (default: the model name)")
    s.add_argument("--num-classes", type=_positive, help="default 1000 (image models only)")
    s.add_argument("--in-channels", type=_positive, help="default 3 (image models only)")
    s.add_argument("--image-size", type=_positive, help="default 224 (image models only)")
    s.add_argument("--csv", help="also write the table to this CSV file")
    s.set_defaults(func=cmd_components)

    s = sub.add_parser("prepare", help="write a fixed example set (uint8 + labels + checksum)")
    s.add_argument("dataset", choices=["fashion-mnist"])
    s.add_argument("--split", choices=["train", "test"], default="test")
    s.add_argument("--n", type=_positive, help="examples drawn (a seeded permutation); default: the whole split")
    s.add_argument("--seed", type=_nonnegative, help="seed of the draw (with --n; default 0)")
    s.add_argument("--root", help="directory with the IDX files (default: Debian's package)")
    s.add_argument("--pad-to", type=_positive)
    s.add_argument("--channels", type=_positive, default=1)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_prepare)

    from .paper.data.sources import sources

    s = sub.add_parser("dataset", help="obtain and verify a data source (download, or check what was placed by "
                                       "hand); prints its manifest")
    s.add_argument("source", choices=sources())
    s.add_argument("--root", help="where its files live (default: the workflow's, e.g. data/raw/<source>; "
                                  "Fashion-MNIST: Debian's package)")
    s.add_argument("--out", help="also write the manifest (JSON) here")
    s.set_defaults(func=cmd_dataset)

    s = sub.add_parser("train", help="train a classifier on Fashion-MNIST")
    s.add_argument("--model", default="resnet_tiny")
    s.add_argument("--data", choices=["fashion-mnist"], default="fashion-mnist")
    s.add_argument("--root")
    s.add_argument("--n-train", type=_positive)
    s.add_argument("--epochs", type=_positive, default=2)
    s.add_argument("--batch-size", type=_positive, default=128)
    s.add_argument("--lr", type=_lr, default=0.2)
    s.add_argument("--seed", type=_nonnegative, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="auto: bfloat16 autocast on GPUs that support it, float32 elsewhere")
    s.add_argument("--memory-format", choices=["contiguous", "channels_last", "auto"], default="contiguous",
                   help="channels_last (auto: for convnets) trains 1.2-1.8x faster on a CPU, into other weights")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="evaluate the model under random ablations into a resumable shard")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--examples", required=True)
    s.add_argument("--components", help="component table (default: the checkpoint's architecture)")
    s.add_argument("--masks", type=int, required=True)
    s.add_argument("--alpha", type=float, required=True, help="fraction of the components ablated per mask")
    s.add_argument("--seed", type=_nonnegative, default=0)
    s.add_argument("--shard", type=_nonnegative, default=0)
    s.add_argument("--scheme", choices=list(SCHEMES), default="exact")
    s.add_argument("--output", default="margin", help="margin | token_margin | logit:<class>")
    s.add_argument("--ablation", choices=["zero", "scale"], default="zero")
    s.add_argument("--gamma", type=float, help="kept fraction under --ablation scale (default 0.5)")
    s.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    s.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="compute precision of the forward passes (bfloat16: for GPUs; stored in the shard)")
    s.add_argument("--batch-size", type=_positive, help="examples per forward pass (default: the engine's choice)")
    s.add_argument("--masks-per-pass", type=_positive,
                   help="masks per forward pass (default: the engine's choice; 1 masks weights in place, > 1 hooks)")
    s.add_argument("--mechanism", choices=["auto", "weights", "hooks", "shared"], default="auto",
                   help="weights: one mask a pass, weight slices zeroed in place; hooks: several masks a pass; "
                        "shared: the first component layer computed once for every mask (when it is eligible)")
    s.add_argument("--memory-format", choices=["auto", "channels_last", "contiguous"], default="auto",
                   help="auto: channels_last when convolutions carry most of the model's FLOPs")
    s.add_argument("--batchnorm", choices=["auto", "fold", "keep"], default="auto",
                   help="auto/fold: eval BatchNorm folded into the convolution before it (exact to float rounding); "
                        "keep: run the model as given (bitwise the reference weight zeroing)")
    s.add_argument("--device", default="auto")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("fit", help="fit COAR attributions from complete shards (one pass, one factorisation)")
    s.add_argument("--stores", nargs="+", required=True)
    s.add_argument("--method", choices=["ols", "ridge", "prior", "lowrank", "lasso"], default="ols",
                   help="ols: least squares (the paper's); ridge: GCV per example; prior: ridge shrunk toward a "
                        "scaled prior (--prior); lowrank: shrunk toward a subspace learned from all examples; "
                        "lasso: lasso / elastic net")
    s.add_argument("--lambdas", type=_floats, help="penalties (ridge: default 0.1,1,10,100,1000; prior, lowrank: "
                                                   "default the number of masks times 10^-3 .. 10^3)")
    s.add_argument("--prior", help="attribution file to shrink toward (--method prior), e.g. leave-one-out")
    s.add_argument("--select", choices=["gcv", "holdout"],
                   help="how --method prior and lowrank choose their penalties from the training masks: GCV on all "
                        "of them (default) or a held-out part")
    s.add_argument("--ranks", type=_ints, help="subspace ranks tried by --method lowrank (default 0,1,2,4,8,16)")
    s.add_argument("--couplings", type=_floats, help="--method lowrank: how much less the learned subspace is "
                                                     "penalized, in [0, 1] (default 0.5,0.9,0.99,1)")
    s.add_argument("--ratios", type=_floats, help="lasso penalties as fractions of the smallest penalty that "
                                                  "zeroes every attribution (default 13 values, 1 .. 1e-4)")
    s.add_argument("--l1-ratio", type=float, help="lasso: 1 (default) lasso, in (0, 1) elastic net")
    s.add_argument("--holdout-fraction", type=float,
                   help="share of the training masks held out to choose penalties (default 0.2)")
    s.add_argument("--no-standardize", action="store_true")
    s.add_argument("--device", default="cpu", help="cpu (numpy) or cuda: the statistics accumulated and the solve run on the GPU")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("baseline", help="LOO, gradient x parameter, neuron conductance or internal influence")
    s.add_argument("--method", choices=["loo", "gp", "nc", "ii"], required=True)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--examples", required=True)
    s.add_argument("--components")
    s.add_argument("--output", default="margin")
    s.add_argument("--ablation", choices=["zero", "scale"], help="loo and gp only (default zero)")
    s.add_argument("--gamma", type=float, help="kept fraction under --ablation scale (default 0.5)")
    s.add_argument("--batch-size", type=_positive,
                   help="examples per pass (default: loo the sampling engine's choice, gp 256, nc and ii 64)")
    s.add_argument("--device", default="auto")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_baseline)

    s = sub.add_parser("evaluate", help="per-example correlation on held-out masks (eq. 6)")
    s.add_argument("--attributions", nargs="+", required=True)
    s.add_argument("--stores", nargs="+", required=True)
    s.add_argument("--out")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("edit", help="COAR-EDIT: score components (eq. 8), ablate k, optionally save the model")
    s.add_argument("--attributions", required=True)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--components")
    s.add_argument("--targets", type=_ints, required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--references", type=_ints)
    g.add_argument("--references-random", type=_positive)
    s.add_argument("--seed", type=_nonnegative, help="seed of --references-random (default 0)")
    s.add_argument("--k", type=int, required=True)
    s.add_argument("--direction", choices=["increase", "decrease"], default="increase")
    s.add_argument("--examples", help="report accuracy on these examples (the attributed set) for k = 0 and k")
    s.add_argument("--sweep", type=_ints, help="more k values to report (with --examples)")
    s.add_argument("--out", help="write the edited checkpoint here")
    s.set_defaults(func=cmd_edit)

    s = sub.add_parser("preflight", help="check this site before a workflow run (data, weights, GPUs, disk, SLURM "
                                         "profile) and print the run's cost plan; exit status 1 if a check fails")
    s.add_argument("--configfile", nargs="+", required=True, metavar="FILE",
                   help="the workflow's config file(s), as snakemake --configfile takes them (config/paper.yaml)")
    s.add_argument("--profile", help="the SLURM profile the run will use (workflow/profiles/slurm): its partitions "
                                     "and time limits are checked")
    s.add_argument("--target", action="append", metavar="FILE",
                   help="a file the run makes (repeatable; default: every figure the preset configures)")
    s.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="time the sampling engine and training here (cached in ~/.cache/coar/); --no-calibrate "
                        "takes the rates docs/benchmarks.md records")
    s.add_argument("--login-node", action="store_true",
                   help="preflight runs on a login node without a GPU that submits to GPU nodes: with --profile, the GPU check is "
                        "deferred to the GPU partition")
    s.add_argument("--jobs", type=_positive, help="jobs at a time for the wall-time estimate (default: the GPUs "
                                                  "here, else the CPU cores)")
    s.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    s.set_defaults(func=cmd_preflight)
    return p


#: What an interrupted command leaves behind, said on Ctrl-C instead of a traceback.
INTERRUPTED = {
    "sample": "the masks finished so far are kept in {out}; the same command resumes from them",
    "demo": "finished steps and masks are kept in {out}; the same command resumes from them",
    "train": "no checkpoint was written ({out} is written whole at the end); the same command trains again",
}


def _out_not_an_input(args) -> None:
    """Refuse an --out that is also one of the command's inputs: writing the output would destroy it."""
    out = getattr(args, "out", None)
    if not out:
        return
    target = Path(out).resolve()
    for name, value in vars(args).items():
        if name in ("out", "func", "command"):
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and Path(v).resolve() == target:
                raise CoarError(f"--out {out} is also the input --{name.replace('_', '-')} {v}: writing the output "
                                "would overwrite it; give another --out")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _out_not_an_input(args)
        args.func(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, exit status 128 + SIGINT like a shell
        said = INTERRUPTED.get(args.command, "run the same command again")
        print(f"\ncoar {args.command}: interrupted; {said.format(out=getattr(args, 'out', None))}", file=sys.stderr)
        return 130
    except CoarError as exc:
        print(f"coar {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # a full disk, a read-only filesystem, a path that vanished: name the path
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        print(f"coar {args.command}: error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
