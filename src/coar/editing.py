"""COAR-EDIT (paper Sec. 5, eq. 8-9): score components by how differently they affect target and reference
examples, then ablate a few of them.

tau_j = (mu_T,j - mu_R,j) / sqrt(var_T,j / |T| + var_R,j / |R|)   (population variances by default)

Attributions are coefficients on "component kept", so a component with tau_j < 0 lowers target outputs
relative to references: ablating the most negative scores (bottom-k) RAISES target outputs (e.g. fixes a
misclassified example); ablating the top-k LOWERS them (e.g. forgets a class).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .ablation import ablate_weights
from .engine import counterfactual_outputs
from .attributions import Attributions
from .components import ComponentSet
from .options import check_k  # noqa: F401 - part of this module's interface (the API, CLI, experiments)
from .errors import CoarError, ShapeError

DIRECTIONS = ("increase", "decrease")
DROP_TOLERANCE = 1e-9  # accuracy drops are differences of counts / n: compare "at most max_drop" with slack for rounding


def t_statistic(target: np.ndarray, reference: np.ndarray, ddof: int = 0) -> np.ndarray:
    """Eq. 8: per-component two-sample t statistic between target [T, C] and reference [R, C] attributions.

    Where both variance terms vanish the score is +-inf by the sign of the mean difference (0 if equal).
    """
    target = np.atleast_2d(np.asarray(target, dtype=np.float64))
    reference = np.atleast_2d(np.asarray(reference, dtype=np.float64))
    if target.shape[1] != reference.shape[1]:
        raise ShapeError(f"target attributions {target.shape} and reference {reference.shape} differ in components")
    nt, nr = len(target), len(reference)
    if nt - ddof <= 0 or nr - ddof <= 0:
        raise CoarError(f"ddof={ddof} needs more than {ddof} target and reference examples (have {nt}, {nr})")
    diff = target.mean(0) - reference.mean(0)
    se = np.sqrt(target.var(0, ddof=ddof) / nt + reference.var(0, ddof=ddof) / nr)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = diff / se
    flat = se == 0
    tau[flat] = np.where(diff[flat] > 0, np.inf, np.where(diff[flat] < 0, -np.inf, 0.0))
    return tau


def _indices(values: Sequence[int], what: str, n_examples: int) -> np.ndarray:
    idx = np.asarray(values).reshape(-1)
    if idx.size == 0:
        raise CoarError(f"no {what} given: name at least one example index")
    if not np.issubdtype(idx.dtype, np.integer):
        raise CoarError(f"{what} must be integer example indices, got {idx.tolist()}")
    bad = sorted({int(i) for i in idx if not 0 <= i < n_examples})
    if bad:
        raise CoarError(f"{what} {bad} outside the {n_examples} attributed examples (0..{n_examples - 1})")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise CoarError(f"{what} repeat example(s) {uniq[counts > 1].tolist()}; name each example once")
    return idx.astype(np.int64)


def check_edit_examples(n_examples: int, targets: Sequence[int], references: Sequence[int]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Targets and references as index arrays: each in range, none repeated, no example in both."""
    t = _indices(targets, "targets", n_examples)
    r = _indices(references, "references", n_examples)
    both = np.intersect1d(t, r)
    if both.size:
        raise CoarError(f"example(s) {both.tolist()} are both targets and references; a reference must be another "
                        "example than every target")
    return t, r


def edit_references(n_examples: int, targets: Sequence[int], references: Sequence[int] | None = None,
                    n_random: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(targets, references) for an edit: the references given, or `n_random` of the non-target examples drawn
    without replacement (seeded); more than there are is refused, not clipped."""
    if (references is None) == (n_random is None):
        raise CoarError("give either references or a number of random references, not both or neither")
    t = _indices(targets, "targets", n_examples)
    if references is None:
        pool = np.setdiff1d(np.arange(n_examples), t)
        if not 1 <= n_random <= len(pool):
            raise CoarError(f"asked for {n_random} random references, there are {len(pool)} examples besides the "
                            f"{len(t)} target(s) among the {n_examples} attributed; ask for 1..{len(pool)}")
        references = np.random.default_rng(seed).choice(pool, size=n_random, replace=False)
    return check_edit_examples(n_examples, t, references)


def edit_scores(attributions: Attributions, targets: Sequence[int], references: Sequence[int],
                ddof: int = 0) -> np.ndarray:
    targets, references = check_edit_examples(attributions.n_examples, targets, references)
    return t_statistic(attributions.weights[targets], attributions.weights[references], ddof)


def ranking(scores: np.ndarray, direction: str) -> np.ndarray:
    """Component indices in the order they are ablated: most negative first to increase target outputs."""
    if direction not in DIRECTIONS:
        raise CoarError(f"edit direction must be one of {DIRECTIONS}, got {direction!r}")
    order = np.argsort(scores, kind="stable")
    return order if direction == "increase" else order[::-1].copy()


def select_components(scores: np.ndarray, k: int, direction: str) -> np.ndarray:
    """bottom-k (direction "increase") or top-k ("decrease") components of eq. 8 scores."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= len(scores):
        raise CoarError(f"k must be in [0, {len(scores)}], got {k}")
    return ranking(scores, direction)[:k]


def random_components(n_components: int, k: int, seed: int = 0) -> np.ndarray:
    """The random-components control: k components chosen uniformly, same k as the edit."""
    return np.random.default_rng(seed).choice(n_components, size=k, replace=False)


def keep_mask(n_components: int, ablate: Sequence[int]) -> np.ndarray:
    keep = np.ones(n_components, dtype=bool)
    keep[np.asarray(ablate, dtype=np.int64)] = False
    return keep


def apply_edit(model: nn.Module, cset: ComponentSet, ablate: Sequence[int], mode: str = "zero",
               gamma: float = 0.5) -> nn.Module:
    """A permanent edit: a copy of the model with the chosen components' weights ablated (eq. 9)."""
    return ablate_weights(model, cset, keep_mask(cset.size, ablate), mode, gamma)


def sweep_outputs(model: nn.Module, cset: ComponentSet, order: np.ndarray, ks: Sequence[int], inputs: torch.Tensor,
                  targets: torch.Tensor, output_fn: Callable, mode: str = "zero", gamma: float = 0.5,
                  batch_size: int | None = None, masks_per_pass: int | None = None) -> np.ndarray:
    """Outputs [len(ks), N] after ablating the first k components of `order`, for every k, in batched passes."""
    keep = np.stack([keep_mask(cset.size, order[:k]) for k in ks])
    return counterfactual_outputs(model, cset, inputs, targets, keep, output_fn, mode, gamma, batch_size,
                                  masks_per_pass)


def sweep_table(margins: dict[str, np.ndarray], ks: Sequence[int]) -> pd.DataFrame:
    """Tidy accuracy table from correct-class margins per split ([len(ks), N] each): correct <=> margin > 0."""
    rows = []
    for split, m in margins.items():
        for i, k in enumerate(ks):
            rows.append({"split": split, "k": int(k), "accuracy": float((m[i] > 0).mean()),
                         "mean_margin": float(m[i].mean())})
    return pd.DataFrame(rows)


def choose_k(table: pd.DataFrame, target_split: str, reference_split: str, max_drop: float = 0.02,
             maximize: bool = True) -> int:
    """k on a validation table: best target accuracy whose reference accuracy drops by at most max_drop."""
    ref = table[table.split == reference_split].set_index("k")["accuracy"]
    tgt = table[table.split == target_split].set_index("k")["accuracy"]
    if 0 not in ref.index:
        raise CoarError("the sweep must include k = 0 (the unedited model) to measure the reference drop")
    # a drop of exactly max_drop is allowed: 0.9145 - 0.9045 is 0.01000000000000001 in floating point
    ok = ref.index[(ref.loc[0] - ref) <= max_drop + DROP_TOLERANCE]
    cand = tgt.loc[ok]
    best = cand.max() if maximize else cand.min()
    return int(cand[cand == best].index.min())

