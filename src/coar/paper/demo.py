"""The offline end-to-end run (paper Sec. 4, Fig. 2 protocol at CPU scale) on Fashion-MNIST:

train a small ResNet -> sample resumable mask shards at alpha_train -> fit COAR (one pass, one
factorisation) -> LOO, GP, NC, II baselines -> fresh masks at each alpha_test -> per-example correlation.

Every step writes its artifact under `out` and is skipped when the artifact exists with the same settings,
so an interrupted run resumes. This is the chain the Snakemake workflow runs rule by rule.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from ..attributions import Attributions
from ..baselines import compute_baseline
from ..components import component_set
from .data.fashion_mnist import fashion_mnist_examples
from ..correlation import summarize
from ..errors import CoarError
from ..io import atomic_write_csv, atomic_write_text
from .models import build_model
from ..outputs import get_output_fn
from ..pipeline import evaluate_stores, fit_stores, sample_store
from ..provenance import for_baseline
from .training import accuracy, load_checkpoint, save_checkpoint, train_classifier


@dataclass
class DemoConfig:
    model: str = "resnet_tiny"
    n_train: int = 8000
    epochs: int = 2
    lr: float = 0.2
    n_examples: int = 200
    alpha_train: float = 0.10
    masks: int = 1000
    shards: int = 2
    alpha_test: list = field(default_factory=lambda: [0.05, 0.10, 0.20])
    test_masks: int = 200
    baselines: list = field(default_factory=lambda: ["loo", "gp", "nc", "ii"])
    output: str = "margin"
    seed: int = 0
    batch_size: int | None = None  # None: the sampling engine's choice (coar.engine.plan)
    masks_per_pass: int | None = None
    root: str | None = None  # Fashion-MNIST directory (default: Debian's package)


#: Settings that may differ between a run and its resumption: where the data is read from (a run on other data
#: is refused anyway, by the stores' example fingerprints).
RESUMABLE_KEYS = ("root",)


def check_resumable(out: Path, cfg: DemoConfig) -> None:
    """Refuse to run into `out` when it holds a run with other settings, before anything there is replaced: a
    rerun with other settings would otherwise retrain (overwrite) the model and then fail on the stores."""
    saved = out / "config.json"
    if not saved.exists():
        if (out / "model.pt").exists():
            raise CoarError(f"{out} holds a model.pt but no config.json (not a demo run, or an unfinished one of an "
                            "older version); use another output directory, or remove this one")
        return
    try:
        old = json.loads(saved.read_text())
    except (OSError, ValueError) as exc:  # a directory, not UTF-8, not JSON
        raise CoarError(f"{saved} is unreadable ({exc}); use another output directory, or remove this one") from None
    if not isinstance(old, dict):
        raise CoarError(f"{saved} holds a {type(old).__name__}, not a demo run's settings; use another output "
                        "directory, or remove this one")
    new = asdict(cfg)
    diffs = [f"{k}: {old.get(k, '<absent>')!r} there, {v!r} now" for k, v in new.items()
             if k not in RESUMABLE_KEYS and old.get(k, "<absent>") != json.loads(json.dumps(v))]
    if diffs:
        raise CoarError(f"{out} holds a demo run with other settings ({'; '.join(diffs)}; recorded in {saved}); "
                        "rerun with its settings to resume it, or give another output directory")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _shard(out: Path, model, cset, ex, m: int, alpha: float, seed: int, shard: int, cfg: DemoConfig,
           progress: bool) -> Path:
    sample_store(out, model, cset, ex, m=m, alpha=alpha, seed=seed, shard=shard, output=cfg.output,
                 dtype="float32", batch_size=cfg.batch_size, masks_per_pass=cfg.masks_per_pass, progress=progress)
    return out


def run_demo(out: str | Path = "runs/demo", cfg: DemoConfig | None = None, quiet: bool = False) -> pd.DataFrame:
    """Run (or resume) the chain; returns the tidy correlation table and writes results under `out`."""
    cfg = cfg or DemoConfig()
    out = Path(out)
    check_resumable(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=2))
    progress = not quiet
    torch.manual_seed(cfg.seed)
    t0 = time.time()

    # 1. model
    ckpt = out / "model.pt"
    train_key = {k: getattr(cfg, k) for k in ("model", "n_train", "epochs", "lr", "seed")}
    if ckpt.exists() and load_checkpoint(ckpt)[1]["meta"].get("settings") == train_key:
        model, _ = load_checkpoint(ckpt)
    else:
        train = fashion_mnist_examples("train", cfg.n_train, cfg.seed, cfg.root)
        kwargs = {"num_classes": 10, "in_channels": 1, "image_size": 28}
        model = build_model(cfg.model, **kwargs)
        x, y = train.tensors()
        info = train_classifier(model, x, y, epochs=cfg.epochs, lr=cfg.lr, seed=cfg.seed, progress=progress)
        test = fashion_mnist_examples("test", None, 0, cfg.root)
        info["test_accuracy"] = accuracy(model, *test.tensors())
        info["settings"] = train_key
        save_checkpoint(ckpt, model, cfg.model, kwargs, info)
        _log(f"[demo] trained {cfg.model}: test accuracy {info['test_accuracy']:.3f} ({info['seconds']:.0f} s)", quiet)
        model, _ = load_checkpoint(ckpt)
    cset = component_set(model, cfg.model)

    # 2. fixed evaluation examples (test split), kept as uint8 and normalised once
    ex = fashion_mnist_examples("test", cfg.n_examples, cfg.seed + 1, cfg.root)
    x, y = ex.tensors()

    # 3. training masks, sharded
    per = -(-cfg.masks // cfg.shards)
    train_stores = [_shard(out / "stores" / "train" / f"shard-{s:03d}", model, cset, ex,
                           min(per, cfg.masks - s * per), cfg.alpha_train, cfg.seed, s, cfg, progress)
                    for s in range(cfg.shards) if cfg.masks - s * per > 0]

    # 4. COAR fit: one streaming pass, one factorisation
    attrs = {"coar": fit_stores(train_stores)}
    attrs["coar"].save(out / "attributions" / "coar.npz")

    # 5. baselines
    fn = get_output_fn(cfg.output)
    for name in cfg.baselines:
        path = out / "attributions" / f"{name}.npz"
        if path.exists():
            attrs[name] = Attributions.load(path)
            continue
        t = time.time()
        kw = {"batch_size": cfg.batch_size} if cfg.batch_size else {}
        attrs[name] = compute_baseline(name, model, cset, x, y, fn, progress=progress, **kw)
        attrs[name].meta["provenance"] = for_baseline(model, cset, ex, cfg.output, "zero" if name in ("loo", "gp")
                                                      else None)
        attrs[name].save(path)
        _log(f"[demo] baseline {name}: {time.time() - t:.0f} s", quiet)

    # 6. evaluation on fresh masks (different seed range from the training shards)
    test_stores = [_shard(out / "stores" / "test" / f"alpha-{a:g}", model, cset, ex, cfg.test_masks, a,
                          cfg.seed + 1000 + i, 0, cfg, progress) for i, a in enumerate(cfg.alpha_test)]
    table = evaluate_stores(attrs, test_stores)
    atomic_write_csv(table, out / "results" / "correlations.csv")
    summary = summarize(table)
    atomic_write_csv(summary, out / "results" / "summary.csv")
    _log(summary.to_string(index=False), quiet)
    _log(f"[demo] done in {time.time() - t0:.0f} s; results in {out / 'results'}", quiet)
    return table
