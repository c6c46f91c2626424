"""The settings of a sampling run and of a fit, each checked in one place.

Every entry point builds one of these objects and calls its ``validate``: the front door (``coar.attribute``,
``coar.evaluate``), the ``coar sample`` and ``coar fit`` commands, the workflow's plan (at plan time, before any
job runs) and its scripts, and the benchmark scripts. So one bad value gets the same verdict everywhere; only
the name it is reported under differs, in the entry point's own vocabulary (an argument, a ``--flag``, a config
key), given as ``names``, a map from field name to that name.

    >>> from coar.settings import FitSettings
    >>> FitSettings("lowrank", ranks=(0, 2, 4)).validate()
    FitSettings(method='lowrank', lambdas=None, select=None, ranks=(0, 2, 4), couplings=None, ratios=None, l1_ratio=None, holdout_fraction=None, prior=None, standardize=True)
    >>> FitSettings("ols", ranks=(1,)).validate(names={"ranks": "--ranks"})
    Traceback (most recent call last):
    ...
    coar.errors.ArgumentError: --ranks: does nothing with method ols (lowrank only); leave it out

Each check raises :class:`coar.errors.ArgumentError` (a CoarError and ValueError) whose ``argument`` is the name
under which the value was given and whose ``problem`` says what is wrong.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Mapping, Sequence

from .errors import ArgumentError, CoarError
from .store import PRECISIONS
from .options import BATCHNORM, MECHANISMS, MEMORY_FORMATS, check_k  # noqa: F401 - check_k: this module's checks

#: The largest seed: seeds go to numpy's SeedSequence and to torch.manual_seed, which takes a signed 64-bit value.
MAX_SEED = 2 ** 63 - 1
#: Regression methods: least squares, ridge, and the estimators of coar.estimators.
FIT_METHODS = ("ols", "ridge", "prior", "lowrank", "lasso")
#: Penalties of ridge when none are given.
RIDGE_LAMBDAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
#: The options of the estimators, and the methods that take each.
FIT_OPTIONS = {"lambdas": ("ridge", "prior", "lowrank"), "select": ("prior", "lowrank"), "ranks": ("lowrank",),
               "couplings": ("lowrank",), "ratios": ("lasso",), "l1_ratio": ("lasso",),
               "holdout_fraction": ("prior", "lowrank", "lasso")}
#: Share of the training masks held out to choose penalties when none is given (coar.estimators).
HOLDOUT_FRACTION = 0.2
#: Store dtypes of the outputs.
DTYPES = ("float16", "float32")


def _fail(names: Mapping[str, str] | None, field: str, problem: str):
    raise ArgumentError((names or {}).get(field, field), problem)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def check_int(value, field: str, lo: int, hi: int | None = None, names=None) -> int:
    """An integer in lo..hi (hi None: no upper bound); a bool, a float or a string is refused."""
    span = f">= {lo:,}" if hi is None else f"in {lo:,}..{hi:,}"
    if not _is_int(value):
        _fail(names, field, f"must be an integer {span}, got {value!r} ({type(value).__name__})")
    if int(value) < lo or (hi is not None and int(value) > hi):
        _fail(names, field, f"must be an integer {span}, got {int(value):,}")
    return int(value)


def check_real(value, field: str, lo: float, hi: float, names=None, open_lo: bool = False,
               open_hi: bool = False) -> float:
    """A finite real number within [lo, hi] (ends excluded where open_*)."""
    span = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
    ok = _is_real(value)
    if ok:
        v = float(value)
        ok = (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
    if not ok:
        _fail(names, field, f"must be a finite number in {span}, got {value!r}")
    return float(value)


def check_choice(value, field: str, allowed: Sequence[str], names=None) -> str:
    if not isinstance(value, str) or value not in allowed:
        _fail(names, field, f"must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _check_list(value, field: str, item: Callable[[Any], bool], what: str, names=None) -> tuple:
    """A non-empty list (or tuple) whose every item passes `item`."""
    items = tuple(value) if isinstance(value, (list, tuple)) else None
    if not items or not all(item(v) for v in items):
        _fail(names, field, f"must be a non-empty list of {what}, got {value!r}")
    return items


def check_output(output, field: str = "output", num_classes: int | None = None, names=None) -> str:
    """An output name: margin, token_margin, answer_margin or logit:<c> with c a class of the model (when the
    class count is known)."""
    from .outputs import get_output_fn

    try:
        if not isinstance(output, str):
            raise CoarError(f"must be an output name, got {output!r}")
        get_output_fn(output)
    except CoarError as e:
        _fail(names, field, str(e))
    if output.startswith("logit:"):
        c = int(output.split(":", 1)[1])
        if c < 0 or (num_classes is not None and c >= num_classes):
            span = "a class index >= 0" if num_classes is None else f"a class of the model, 0..{num_classes - 1}"
            _fail(names, field, f"{output!r}: the class must be {span}")
    return output


@dataclass(frozen=True)
class SampleSettings:
    """What one run of masked forward passes is: the mask design (masks, alpha, seed, shard, scheme), what is
    recorded (output, ablation, gamma, dtype, precision) and how the passes run (batch_size, masks_per_pass,
    mechanism, memory_format, batchnorm; None or "auto": the engine's choice)."""

    masks: int
    alpha: float
    seed: int = 0
    shard: int = 0
    scheme: str = "exact"
    output: str = "margin"
    ablation: str = "zero"
    gamma: float = 0.5
    dtype: str = "float32"
    precision: str = "float32"
    batch_size: int | None = None
    masks_per_pass: int | None = None
    mechanism: str = "auto"
    memory_format: str = "auto"
    batchnorm: str = "auto"

    def validate(self, n_components: int | None = None, num_classes: int | None = None, min_masks: int = 1,
                 names: Mapping[str, str] | None = None) -> "SampleSettings":
        """Check every field, cheapest first; alpha against the component count C and logit:<c> against the class
        count where they are known. Returns the settings with numbers in their plain Python types."""
        from .sampling import SCHEMES, check_alpha

        masks = check_int(self.masks, "masks", min_masks, names=names)
        alpha = check_real(self.alpha, "alpha", 0.0, 1.0, names, open_lo=True, open_hi=True)
        if n_components is not None:
            try:
                check_alpha(alpha, n_components)
            except CoarError as e:
                _fail(names, "alpha", str(e))
        seed = check_int(self.seed, "seed", 0, MAX_SEED, names)
        shard = check_int(self.shard, "shard", 0, names=names)
        check_choice(self.scheme, "scheme", SCHEMES, names)
        if not callable(self.output):  # the API also takes a function (logits, targets) -> [n]
            check_output(self.output, "output", num_classes, names)
        check_choice(self.ablation, "ablation", ("zero", "scale"), names)
        gamma = check_real(self.gamma, "gamma", 0.0, 1.0, names)
        check_choice(self.dtype, "dtype", DTYPES, names)
        check_choice(self.precision, "precision", PRECISIONS, names)
        batch = None if self.batch_size is None else check_int(self.batch_size, "batch_size", 1, names=names)
        per_pass = None if self.masks_per_pass is None else check_int(self.masks_per_pass, "masks_per_pass", 1,
                                                                      names=names)
        check_choice(self.mechanism, "mechanism", MECHANISMS, names)
        check_choice(self.memory_format, "memory_format", MEMORY_FORMATS, names)
        check_choice(self.batchnorm, "batchnorm", BATCHNORM, names)
        return replace(self, masks=masks, alpha=alpha, seed=seed, shard=shard, gamma=gamma, batch_size=batch,
                       masks_per_pass=per_pass)


@dataclass(frozen=True)
class FitSettings:
    """A regression: the method and the options it takes (None: the method's default). An option given to a
    method that does not take it is refused, not ignored.

    method: "ols" (the paper's least squares), "ridge" (GCV over ``lambdas`` per example), "prior" (ridge shrunk
    toward ``prior`` attributions), "lowrank" (shrunk toward a subspace learned from all examples), "lasso"
    (lasso / elastic net); see coar.estimators. ``prior`` is the attributions to shrink toward (the workflow's
    plan gives the baseline's name instead); ``standardize`` centres and scales the masks' columns."""

    method: str = "ols"
    lambdas: Sequence[float] | None = None
    select: str | None = None
    ranks: Sequence[int] | None = None
    couplings: Sequence[float] | None = None
    ratios: Sequence[float] | None = None
    l1_ratio: float | None = None
    holdout_fraction: float | None = None
    prior: Any = None
    standardize: bool = True

    def validate(self, names: Mapping[str, str] | None = None, masks: int | None = None) -> "FitSettings":
        """Check the method, that every option given applies to it, and each option's values; with the number of
        training masks, that a held-out part (lasso; prior and lowrank with select holdout) leaves >= 1 mask held
        out and >= 2 to fit. Returns the settings with lists as tuples of plain numbers."""
        m = check_choice(self.method, "method", FIT_METHODS, names)
        with_m = f"with {(names or {}).get('method', 'method')} {m}"
        for key, methods in FIT_OPTIONS.items():
            if getattr(self, key) is not None and m not in methods:
                _fail(names, key, f"does nothing {with_m} ({', '.join(methods)} only); leave it out")
        if self.select is not None:
            check_choice(self.select, "select", ("gcv", "holdout"), names)
        uses_holdout = m == "lasso" or (m in ("prior", "lowrank") and self.select == "holdout")
        if self.holdout_fraction is not None and not uses_holdout:
            _fail(names, "holdout_fraction", f"does nothing {with_m} unless select is holdout (only where held-out "
                                             "training masks choose the penalty); leave it out")
        if (self.prior is None) == (m == "prior"):
            _fail(names, "prior", f"is needed {with_m}: the attributions it shrinks toward (e.g. leave-one-out)"
                  if m == "prior" else f"does nothing {with_m} (prior only); leave it out")
        if not isinstance(self.standardize, bool):
            _fail(names, "standardize", f"must be True or False, got {self.standardize!r}")
        nonneg = lambda v: _is_real(v) and float(v) >= 0  # noqa: E731
        out = {}
        if self.lambdas is not None:
            out["lambdas"] = tuple(float(v) for v in _check_list(self.lambdas, "lambdas", nonneg,
                                                                 "finite penalties >= 0", names))
        if self.ranks is not None:
            out["ranks"] = tuple(int(v) for v in _check_list(self.ranks, "ranks", lambda v: _is_int(v) and v >= 0,
                                                             "integers >= 0", names))
        if self.couplings is not None:
            out["couplings"] = tuple(float(v) for v in _check_list(
                self.couplings, "couplings", lambda v: nonneg(v) and float(v) <= 1, "numbers in [0, 1]", names))
        if self.ratios is not None:
            out["ratios"] = tuple(float(v) for v in _check_list(self.ratios, "ratios", nonneg,
                                                                "finite numbers >= 0", names))
        if self.l1_ratio is not None:
            out["l1_ratio"] = check_real(self.l1_ratio, "l1_ratio", 0.0, 1.0, names, open_lo=True)
        if self.holdout_fraction is not None:
            out["holdout_fraction"] = check_real(self.holdout_fraction, "holdout_fraction", 0.0, 1.0, names,
                                                 open_lo=True, open_hi=True)
        if uses_holdout and masks is not None:
            f = out.get("holdout_fraction", HOLDOUT_FRACTION)
            held = int(round(f * masks))
            if held < 1 or masks - held < 2:
                _fail(names, "holdout_fraction", f"holding out {f:g} of {masks} training masks leaves {held} held out "
                                                 f"and {masks - held} to fit; {with_m} needs >= 1 held out and >= 2 "
                                                 "to fit (use more masks or another fraction)")
        return replace(self, **out)

    @property
    def fit_lambdas(self) -> tuple | None:
        """The penalties the fit uses: ridge's default grid when none were given to ridge."""
        return RIDGE_LAMBDAS if self.method == "ridge" and self.lambdas is None else self.lambdas

    def options(self) -> dict:
        """The estimator options that were given (those of coar.regression.fit_chunks' ``**options``)."""
        keys = ("select", "ranks", "couplings", "ratios", "l1_ratio", "holdout_fraction")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def fit_kwargs(self) -> dict:
        """Keyword arguments of coar.pipeline.fit_stores (and coar.regression.fit_chunks, less the prior)."""
        kw = {"method": self.method, "lambdas": self.fit_lambdas, "standardize": self.standardize, **self.options()}
        if self.prior is not None:
            kw["prior"] = self.prior
        return kw

    @classmethod
    def from_spec(cls, spec: Mapping) -> "FitSettings":
        """The fit of a workflow setup: ``regression``, ``lambdas`` (ridge's penalties) and ``estimator`` (the
        options of prior, lowrank and lasso; ``estimator.prior`` names the baseline). The setup's ``lambdas``
        carry a default for every method, so they count as given for ridge only."""
        est = dict(spec.get("estimator") or {})
        method = spec.get("regression", "ols")
        lambdas = spec.get("lambdas") if method == "ridge" else est.pop("lambdas", None)
        known = {f.name for f in fields(cls)} - {"method", "lambdas", "standardize"}
        return cls(method=method, lambdas=lambdas, **{k: v for k, v in est.items() if k in known})

    @staticmethod
    def spec_names(prefix: str, method: str) -> dict:
        """The config keys of a setup's fit (`prefix` = setups.<name>), for validate(names=...): the estimator's
        options live under `estimator`, ridge's penalties are the setup's own `lambdas`."""
        names = {k: f"{prefix}.estimator.{k}" for k in FIT_OPTIONS}
        names.update(prior=f"{prefix}.estimator.prior", method=f"{prefix}.regression")
        if method == "ridge":
            names["lambdas"] = f"{prefix}.lambdas"
        return names


@dataclass(frozen=True)
class EditSettings:
    """A COAR-EDIT (paper eq. 8-9): the target and reference examples (indices into the attributions; the
    references given, or ``references_random`` of the other examples drawn with ``seed``), the number k of
    components ablated and the direction ("increase": the k lowest scores, raising the targets' outputs
    relative to the references; "decrease": the k highest)."""

    targets: Sequence[int]
    references: Sequence[int] | None = None
    k: int = 1
    direction: str = "increase"
    references_random: int | None = None
    seed: int = 0

    def validate(self, n_examples: int, n_components: int, names: Mapping[str, str] | None = None
                 ) -> "EditSettings":
        """Check every field against the attributions' N examples and C components: targets and references in
        range, none repeated, none both; k in 1..C - 1 (coar.editing.check_k); a direction. Returns the settings
        with targets and references as index arrays (random references drawn)."""
        from . import editing

        def named(field, check, *args):
            try:
                return check(*args)
            except CoarError as e:
                _fail(names, field, str(e))

        check_choice(self.direction, "direction", editing.DIRECTIONS, names)
        k = named("k", editing.check_k, self.k, n_components)
        if (self.references is None) == (self.references_random is None):
            _fail(names, "references", "give either the references or a number of random references, not both or "
                                       "neither")
        seed = check_int(self.seed, "seed", 0, MAX_SEED, names)
        targets = named("targets", editing._indices, self.targets, "targets", n_examples)
        if self.references_random is not None:
            check_int(self.references_random, "references_random", 1, names=names)
            refs = named("references_random", editing.edit_references, n_examples, targets, None,
                         self.references_random, seed)[1]
        else:
            refs = named("references", editing.check_edit_examples, n_examples, targets, self.references)[1]
        return replace(self, targets=targets, references=refs, k=k, seed=seed, references_random=None)
