"""The steps of COAR as functions over artifacts on disk, shared by the CLI, `coar demo` and the
Snakemake workflow's scripts: sample a resumable shard, fit from complete shards, evaluate on test shards.
Nothing here reads a config file; callers pass plain values.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import regression
from .attributions import Attributions
from .errors import CoarError
from .evaluate import correlations
from .store import PRECISIONS, ShardStore, load_shards, read_meta, run_shard

if TYPE_CHECKING:  # sampling needs torch; fitting and evaluating do not, and their jobs skip importing it
    import torch
    from torch import nn

    from .components import ComponentSet
    from .data.examples import Examples


def store_meta(model: nn.Module, cset: ComponentSet, examples: Examples, m: int, alpha: float, seed: int,
               shard: int, output: str = "margin", scheme: str = "exact", ablation: str = "zero",
               gamma: float = 0.5, dtype: str = "float16", precision: str = "float32") -> dict:
    """Everything that determines a shard's contents; a store reopened with other values is refused."""
    from .components import model_fingerprint

    return {"model_fingerprint": model_fingerprint(model), "components_fingerprint": cset.fingerprint(),
            "examples_fingerprint": examples.fingerprint(), "n_components": cset.size, "n_examples": len(examples),
            "m": int(m), "alpha": float(alpha), "seed": int(seed), "shard": int(shard), "output_fn": output,
            "scheme": scheme, "ablation": ablation, "gamma": float(gamma) if ablation == "scale" else None,
            "dtype": dtype, "precision": precision}


def sample_store(path: str | Path, model: nn.Module, cset: ComponentSet, examples: Examples, *, m: int,
                 alpha: float, seed: int, shard: int, output: str = "margin", scheme: str = "exact",
                 ablation: str = "zero", gamma: float = 0.5, dtype: str = "float16", precision: str = "float32",
                 batch_size: int = 32, masks_per_pass: int = 8, device: str | torch.device = "cpu",
                 progress: bool = True) -> ShardStore:
    """Create or resume the shard at `path` and evaluate every pending mask. Returns the complete store.

    precision: "float32", or "bfloat16" to run the forward passes on a bf16 copy of the model with bf16
    inputs (outputs are still computed from float32 logits). It is part of the store's metadata: a store is
    never resumed in another precision."""
    import torch

    from .ablation import counterfactual_outputs
    from .outputs import get_output_fn

    if precision not in PRECISIONS:
        raise CoarError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    meta = store_meta(model, cset, examples, m, alpha, seed, shard, output, scheme, ablation, gamma, dtype, precision)
    store = ShardStore.create_or_open(path, meta)
    x, y = examples.tensors(device)
    fn = get_output_fn(output)
    run_model = model
    if precision == "bfloat16":
        run_model = copy.deepcopy(model).to(torch.bfloat16)
        if x.is_floating_point():  # token ids stay integers
            x = x.to(torch.bfloat16)

    def evaluate(keep: np.ndarray) -> np.ndarray:
        return counterfactual_outputs(run_model, cset, x, y, torch.from_numpy(keep), fn, ablation, gamma, batch_size,
                                      masks_per_pass)

    # a few passes per call keep the done-flag granularity fine without per-mask I/O
    run_shard(store, evaluate, masks_per_call=masks_per_pass * 4, progress=progress)
    return store


def fit_stores(paths: Sequence[str | Path], method: str = "ols", lambdas: Sequence[float] = (0.1, 1, 10, 100, 1000),
               standardize: bool = True, device: str | None = None, max_masks: int | None = None) -> Attributions:
    """One streaming pass over complete, verified shards and one factorisation for all examples.

    max_masks: use only the first max_masks masks (shards in the given order), for sample-size studies.
    """
    if not paths:
        raise CoarError("no mask stores given to fit")
    meta = read_meta(paths[0])
    fp = meta["components_fingerprint"]
    total = sum(int(read_meta(p)["m"]) for p in paths)
    m = total if max_masks is None else min(max_masks, total)
    if method == "ols" and m >= 2 and regression.memory_plan(m, meta["n_components"], meta["n_examples"])["chosen"] == "dual":
        # fewer masks than components: the M x M kernel instead of the C x C Gram (the same minimum-norm fit)
        if max_masks is not None and total < max_masks:
            raise CoarError(f"asked to fit on {max_masks} masks, the stores hold only {total}")
        keep, y = (np.concatenate(parts)[:m] for parts in zip(*load_shards(paths)))
        attr = regression.fit_dual(keep, y, standardize=standardize, components=fp, device=device)
        attr.meta.update(stores=[str(p) for p in paths], alpha=meta["alpha"], scheme=meta.get("scheme"))
        return attr
    acc = regression.GramAccumulator(meta["n_components"], meta["n_examples"], device=device)
    for keep, y in load_shards(paths):
        if max_masks is not None:
            keep, y = keep[: max_masks - acc.m], y[: max_masks - acc.m]
            if len(keep) == 0:
                break
        acc.add(keep, y)
    if max_masks is not None and acc.m < max_masks:
        raise CoarError(f"asked to fit on {max_masks} masks, the stores hold only {acc.m}")
    if method == "ols":
        attr = regression.fit_ols(acc, standardize=standardize, components=fp, device=device)
    elif method == "ridge":
        attr = regression.fit_ridge(acc, list(lambdas), select="gcv", standardize=standardize, components=fp,
                                    device=device)
    else:
        raise CoarError(f"regression method must be 'ols' or 'ridge', got {method!r}")
    attr.meta.update(stores=[str(p) for p in paths], alpha=meta["alpha"], scheme=meta.get("scheme"))
    return attr


def evaluate_stores(attributions: Mapping[str, Attributions], paths: Iterable[str | Path]) -> pd.DataFrame:
    """Tidy per-example correlations; test stores are grouped by their alpha (one alpha_test each)."""
    metas = {str(p): read_meta(p) for p in paths}
    if not metas:
        raise CoarError("no test stores given to evaluate")
    fps = {m["components_fingerprint"] for m in metas.values()}
    if len(fps) != 1:
        raise CoarError(f"the test stores were made for different component sets: {sorted(fps)}")
    fp = fps.pop()
    for name, at in attributions.items():
        if at.components != fp:
            raise CoarError(f"attributions {name!r} were computed for component set {at.components}, "
                            f"the test stores use {fp}")
    by_alpha: dict[float, list[str]] = {}
    for p, m in metas.items():
        by_alpha.setdefault(float(m["alpha"]), []).append(p)
    tables = []
    for alpha, group in sorted(by_alpha.items()):
        keep, out = (np.concatenate(parts) for parts in zip(*load_shards(group)))
        tables.append(correlations(attributions, keep, out, alpha_test=alpha))
    return pd.concat(tables, ignore_index=True)


def scatter_table(attributions: Mapping[str, Attributions], path: str | Path, example: int) -> pd.DataFrame:
    """True vs estimated counterfactuals of one example on one test store (the left panels of Fig. 2)."""
    keep, out = (np.concatenate(parts) for parts in zip(*load_shards([path])))
    rows = []
    for name, at in attributions.items():
        pred = at.predict(keep)[:, example]
        rows.append(pd.DataFrame({"method": name, "example": example, "mask": np.arange(len(keep)),
                                  "true": out[:, example], "predicted": pred}))
    return pd.concat(rows, ignore_index=True)
