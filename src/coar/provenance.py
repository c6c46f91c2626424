"""Where attributions come from, and the checks that what they are used with matches it.

`Attributions.meta["provenance"]` holds the fingerprints of the model, the examples and the component set the
attributions were computed for, with the store meta's key names; COAR fits add the masks' settings (alpha,
scheme, ablation, gamma, output) and the (seed, shard) of every training store they used. Evaluation and
editing compare these with their own inputs and refuse a mismatch. Attribution files without provenance
(older files, or made by hand) pass unchecked, except for the component-set fingerprint every file carries.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from .errors import CoarError, StoreMismatchError

if TYPE_CHECKING:
    from torch import nn

    from .attributions import Attributions
    from .components import ComponentSet
    from .examples import Examples

#: Fingerprints that tie attributions to a model, an example set and a component set, with their names.
FINGERPRINTS = (("model_fingerprint", "model"), ("examples_fingerprint", "examples"),
                ("components_fingerprint", "component set"))

#: Store settings that every store fitted together must share (besides the fingerprints).
FIT_KEYS = ("n_components", "n_examples", "output_fn", "alpha", "scheme", "ablation", "gamma")

#: Settings a COAR fit records about its training masks.
MASK_KEYS = ("n_components", "n_examples", "alpha", "scheme", "ablation", "gamma", "output_fn")


def of(attr: Attributions) -> dict:
    """The provenance recorded in `attr` ({} when there is none)."""
    prov = attr.meta.get("provenance")
    return prov if isinstance(prov, dict) else {}


def check_fit_stores(paths: Sequence[str | Path], metas: Sequence[dict]) -> None:
    """Refuse stores that cannot be fitted together: other fingerprints or settings, or the same masks twice."""
    first, base = paths[0], metas[0]
    seen: dict[tuple, str | Path] = {}
    for path, meta in zip(paths, metas):
        for key in [k for k, _ in FINGERPRINTS] + list(FIT_KEYS):
            if meta.get(key) != base.get(key):
                raise StoreMismatchError(
                    f"stores {first} and {path} cannot be fitted together: {key} is {base.get(key)!r} in the first, "
                    f"{meta.get(key)!r} in the second; fit stores sampled with the same settings")
        ident = (meta["seed"], meta["shard"])
        if ident in seen:
            raise StoreMismatchError(
                f"stores {seen[ident]} and {path} have the same (seed, shard) = {ident}, hence the same masks; "
                "drop one, or sample the other with another --shard")
        seen[ident] = path


def from_stores(metas: Sequence[dict]) -> dict:
    """Provenance of a fit on stores with these metas (all of them used, in this order)."""
    base = metas[0]
    prov = {key: base.get(key) for key, _ in FINGERPRINTS}
    prov.update({key: base.get(key) for key in MASK_KEYS})
    prov["shards"] = [[int(m["seed"]), int(m["shard"])] for m in metas]
    return prov


def for_baseline(model: nn.Module, cset: ComponentSet, examples: Examples, output: str,
                 ablation: str | None = "zero", gamma: float | None = None) -> dict:
    """Provenance of attributions computed directly from a model (LOO, GP, NC, II; ablation None for NC and II,
    which ablate nothing)."""
    from .components import model_fingerprint

    return {"model_fingerprint": model_fingerprint(model), "examples_fingerprint": examples.fingerprint(),
            "components_fingerprint": cset.fingerprint(), "n_components": cset.size, "n_examples": len(examples),
            "output_fn": output, "ablation": ablation, "gamma": float(gamma) if ablation == "scale" else None}


def check_evaluation(name: str, attr: Attributions, path: str | Path, meta: dict) -> None:
    """Refuse evaluating `attr` on the store at `path`: other model, examples, components or sizes, or the
    very masks it was fitted on."""
    if attr.components != meta["components_fingerprint"]:
        raise CoarError(f"attributions {name!r} were computed for component set {attr.components}, the evaluation "
                        f"store {path} uses {meta['components_fingerprint']}; evaluate on stores of the same "
                        "component set")
    if (attr.n_examples, attr.n_components) != (meta["n_examples"], meta["n_components"]):
        raise CoarError(f"attributions {name!r} cover {attr.n_examples} examples x {attr.n_components} components, "
                        f"the evaluation store {path} covers {meta['n_examples']} x {meta['n_components']}; evaluate "
                        "on stores of the same examples and components")
    prov = of(attr)
    for key, what in FINGERPRINTS:
        if prov.get(key) is not None and prov[key] != meta.get(key):
            raise CoarError(f"attributions {name!r} were computed for {what} {prov[key]}, the evaluation store "
                            f"{path} was sampled with {what} {meta.get(key)}; evaluate on stores sampled with the "
                            f"{what} the attributions were computed for")
    shards = prov.get("shards")
    if shards and prov.get("alpha") == meta["alpha"] and prov.get("scheme") == meta["scheme"]:
        if [meta["seed"], meta["shard"]] in [list(s) for s in shards]:
            raise CoarError(f"the evaluation store {path} holds the training masks of attributions {name!r} (seed "
                            f"{meta['seed']}, shard {meta['shard']}, alpha {meta['alpha']:g}, scheme "
                            f"{meta['scheme']}); evaluate on masks sampled with another seed")


def check_evaluations(attributions: Mapping[str, Attributions], metas: Mapping[str, dict]) -> None:
    """check_evaluation for every pair, after checking that the stores belong to one model and example set."""
    items = list(metas.items())
    p0, m0 = items[0]
    for p, m in items[1:]:
        for key in [k for k, _ in FINGERPRINTS] + ["n_examples", "n_components"]:
            if m.get(key) != m0.get(key):
                raise StoreMismatchError(f"evaluation stores {p0} and {p} differ in {key} ({m0.get(key)!r} vs "
                                         f"{m.get(key)!r}); evaluate on stores of one model and example set")
    for name, attr in attributions.items():
        for p, m in items:
            check_evaluation(name, attr, p, m)


def check_edit(attr: Attributions, name: str, model: nn.Module | None = None, model_name: str = "the model",
               examples: Examples | None = None, examples_name: str = "the examples") -> None:
    """Refuse editing with attributions of another model, or scoring them on another example set."""
    prov = of(attr)
    if model is not None and prov.get("model_fingerprint") is not None:
        from .components import model_fingerprint

        fp = model_fingerprint(model)
        if fp != prov["model_fingerprint"]:
            raise CoarError(f"attributions {name} were computed for model {prov['model_fingerprint']}, "
                            f"{model_name} is model {fp}; edit the model the attributions were computed for")
    if examples is not None:
        if len(examples) != attr.n_examples:
            raise CoarError(f"attributions {name} cover {attr.n_examples} examples, {examples_name} holds "
                            f"{len(examples)}; give the examples the attributions were computed for")
        fp = prov.get("examples_fingerprint")
        if fp is not None and fp != examples.fingerprint():
            raise CoarError(f"attributions {name} were computed for examples {fp}, {examples_name} has examples "
                            f"{examples.fingerprint()}; give the examples the attributions were computed for")


def check_prior(prior, meta: dict, where: str = "the stores") -> None:
    """Refuse a prior (attributions a fit shrinks toward) computed for another model, other examples or another
    component set than the masks it is fitted with (``meta``: a store's metadata)."""
    prov = of(prior)
    for key, what in FINGERPRINTS:
        if prov.get(key) is not None and meta.get(key) is not None and prov[key] != meta[key]:
            raise CoarError(f"the prior ({prior.method}) was computed for {what} {prov[key]}, {where} for "
                            f"{meta[key]}; give a prior of the same model, examples and components")
