"""The steps of COAR as functions over artifacts on disk, shared by the CLI, `coar demo` and the
Snakemake workflow's scripts: sample a resumable shard, fit from complete shards, evaluate on test shards.
Nothing here reads a config file; callers pass plain values.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np

from . import provenance, regression
from .attributions import Attributions
from .errors import CoarError, ShapeError
from .correlation import correlations
from .store import ShardStore, load_shards, read_meta, run_shard

if TYPE_CHECKING:  # sampling needs torch; fitting and evaluating do not, and their jobs skip importing it
    import pandas as pd  # only where a table is made: sampling jobs never import it
    import torch
    from torch import nn

    from .components import ComponentSet
    from .examples import Examples


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


def check_examples_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, output: str, fn) -> None:
    """Unablated forward passes on the first example: refuse examples the model cannot take, class labels outside
    the model's classes, and a model whose outputs are random, before anything is created."""
    import torch

    from .ablation import check_deterministic, logits_of

    if len(x) == 0 or len(x) != len(y):
        raise ShapeError(f"examples: {len(x)} inputs and {len(y)} targets; give a non-empty example set")
    try:
        with torch.no_grad():
            logits = logits_of(model(x[:1]))
            if output.startswith("logit:"):
                from .settings import check_output

                check_output(output, "output", num_classes=logits.shape[-1])
            if output == "margin" and logits.dim() == 2 and y.dim() == 1:  # before indexing with the labels
                lo, hi = int(y.min()), int(y.max())
                if lo < 0 or hi >= logits.shape[-1]:
                    raise ShapeError(f"the examples' labels range over {lo}..{hi}, the model has "
                                     f"{logits.shape[-1]} classes (0..{logits.shape[-1] - 1}); give examples of "
                                     "the model's classes")
            fn(logits, y[:1])
    except CoarError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ShapeError(f"the examples (inputs {tuple(x.shape)} {x.dtype}, targets {tuple(y.shape)}) do not fit "
                         f"the model with output {output!r}: {str(exc).splitlines()[0]}") from None
    check_deterministic(model, x[:1], logits)


def sample_store(path: str | Path, model: nn.Module, cset: ComponentSet, examples: Examples, *, m: int,
                 alpha: float, seed: int, shard: int, output: str = "margin", scheme: str = "exact",
                 ablation: str = "zero", gamma: float = 0.5, dtype: str = "float16", precision: str = "float32",
                 batch_size: int | None = None, masks_per_pass: int | None = None, mechanism: str = "auto",
                 memory_format: str = "auto", batchnorm: str = "auto", device: str | torch.device = "cpu",
                 progress: bool = True,
                 log: Callable[[str], None] | None = None) -> ShardStore:
    """Create or resume the shard at `path` and evaluate every pending mask. Returns the complete store.

    precision: "float32", or "bfloat16" to run the forward passes on a bf16 copy of the model with bf16
    inputs (outputs are still computed from float32 logits). It is part of the store's metadata: a store is
    never resumed in another precision. batch_size, masks_per_pass, mechanism, memory_format, batchnorm: the engine's
    choices (coar.engine.plan) unless given; `log` gets the plan in words."""
    import torch

    from .engine import Engine
    from .outputs import get_output_fn
    from .settings import SampleSettings

    SampleSettings(m, alpha, seed, shard, scheme, output, ablation, gamma, dtype, precision, batch_size, masks_per_pass,
                   mechanism, memory_format, batchnorm).validate(n_components=cset.size)
    fn = get_output_fn(output)
    meta = store_meta(model, cset, examples, m, alpha, seed, shard, output, scheme, ablation, gamma, dtype, precision)
    x, y = examples.tensors(device)
    run_model = model
    if precision == "bfloat16":
        run_model = copy.deepcopy(model).to(torch.bfloat16)
        if x.is_floating_point():  # token ids stay integers
            x = x.to(torch.bfloat16)
    check_examples_fit(run_model, x, y, output, fn)
    store = ShardStore.create_or_open(path, meta)
    given = dict(batch_size=batch_size, masks_per_pass=masks_per_pass, mechanism=mechanism,
                 memory_format=memory_format, batchnorm=batchnorm)
    recorded = recorded_plan(store.path, x.device) if all(
        v in (None, "auto") for v in given.values()) else None
    engine = Engine(run_model, cset, x, y, fn, ablation, gamma, **(recorded or given))
    if recorded is None:
        record_plan(store.path, engine.plan, x.device)
    if log is not None:
        log(f"engine: {engine.plan.describe()}" + (f" (the plan {PLAN_FILE} recorded when the shard started)"
                                                   if recorded else ""))
    run_shard(store, engine, masks_per_call=engine.plan.masks_per_call, progress=progress)
    return store


#: The engine plan a shard was started with, in the shard's directory: a resumed shard runs every pass with the same
#: batch shape (on a GPU the rows per pass are measured from free memory, which differs from run to run), so its
#: rows come out bitwise as an uninterrupted run's would.
PLAN_FILE = "engine.json"


def record_plan(store_path: str | Path, plan, device) -> None:
    """Write the engine's `plan` for `device` into the shard directory (atomically), if none is there yet."""
    import json

    from .io import atomic_write_text

    target = Path(store_path) / PLAN_FILE
    if not target.exists():
        atomic_write_text(target, json.dumps({"device_type": _device_type(device), **plan.choices()}, indent=1))


def recorded_plan(store_path: str | Path, device) -> dict | None:
    """The engine choices recorded for a shard started on a device of the same type, or None (no record, another
    device type, or an unreadable record: then the engine plans again)."""
    import json

    target = Path(store_path) / PLAN_FILE
    try:
        record = json.loads(target.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.pop("device_type", None) != _device_type(device):
        return None
    keys = {"batch_size", "masks_per_pass", "mechanism", "memory_format", "batchnorm"}
    return record if set(record) == keys else None


def _device_type(device) -> str:
    import torch

    return torch.device(device).type


def fit_stores(paths: Sequence[str | Path], method: str = "ols", lambdas: Sequence[float] | None = None,
               standardize: bool = True, device: str | None = None, max_masks: int | None = None,
               prior: Attributions | None = None, **options) -> Attributions:
    """One streaming pass over complete, verified shards and one factorisation for all examples.

    max_masks: use only the first max_masks masks (shards in the given order), for sample-size studies.
    method, lambdas, standardize, prior and ``options`` (select, ranks, couplings, ratios, l1_ratio,
    holdout_fraction) are those of :class:`coar.settings.FitSettings`, checked by it: "ols", "ridge" (GCV over
    ``lambdas``, default 0.1 .. 1000) or an estimator of :mod:`coar.estimators` ("prior" with ``prior``
    attributions of the same model, examples and components; "lowrank"; "lasso"); an option the method does
    not take is refused.
    """
    from .settings import FitSettings

    if not paths:
        raise CoarError("no mask stores given to fit")
    unknown = sorted(set(options) - set(FitSettings.__dataclass_fields__))
    if unknown:
        raise CoarError(f"unknown fit option(s) {unknown}; the options are those of coar.settings.FitSettings")
    fit = FitSettings(method, lambdas, prior=prior, standardize=standardize, **options)
    fit.validate()  # before reading the stores; again below with their number of masks
    metas = [read_meta(p) for p in paths]
    provenance.check_fit_stores(paths, metas)
    meta = metas[0]
    fp = meta["components_fingerprint"]
    if prior is not None:
        provenance.check_prior(prior, meta)
    total = sum(int(mt["m"]) for mt in metas)
    if max_masks is not None and total < max_masks:
        raise CoarError(f"asked to fit on {max_masks} masks, the stores hold only {total}")
    m = total if max_masks is None else min(max_masks, total)
    if m < 2:
        raise CoarError(f"a fit needs at least 2 masks; the stores hold {m}")
    fit = fit.validate(masks=m)
    used = np.cumsum([0] + [int(mt["m"]) for mt in metas])[:-1] < m  # stores that contribute masks
    prov = provenance.from_stores([mt for mt, u in zip(metas, used) if u])
    attr = regression.fit_chunks(load_shards(paths), m, meta["n_components"], meta["n_examples"], components=fp,
                                 device=device, **fit.fit_kwargs())
    attr.meta.update(stores=[str(p) for p in paths], alpha=meta["alpha"], scheme=meta.get("scheme"), provenance=prov)
    return attr


def evaluate_stores(attributions: Mapping[str, Attributions], paths: Iterable[str | Path]) -> pd.DataFrame:
    """Tidy per-example correlations; test stores are grouped by their alpha (one alpha_test each)."""
    import pandas as pd

    metas = {str(p): read_meta(p) for p in paths}
    if not metas:
        raise CoarError("no test stores given to evaluate")
    if not attributions:
        raise CoarError("no attributions given to evaluate")
    provenance.check_evaluations(attributions, metas)
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
    import pandas as pd

    provenance.check_evaluations(attributions, {str(path): read_meta(path)})
    keep, out = (np.concatenate(parts) for parts in zip(*load_shards([path])))
    rows = []
    for name, at in attributions.items():
        pred = at.predict(keep)[:, example]
        rows.append(pd.DataFrame({"method": name, "example": example, "mask": np.arange(len(keep)),
                                  "true": out[:, example], "predicted": pred}))
    return pd.concat(rows, ignore_index=True)
