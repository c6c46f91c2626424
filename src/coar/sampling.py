"""Random ablation masks for COAR.

A mask is a *keep* mask: ``keep[i, j] is True`` when component ``j`` is kept in
ablation ``i`` and ``False`` when it is ablated.

Three schemes are supported:

* ``"exact"`` (the paper): every mask ablates exactly ``round(alpha * C)``
  components, chosen uniformly at random without replacement.
* ``"bernoulli"`` (the authors' released code): every component is ablated
  independently with probability ``alpha``; component ``j`` is kept iff
  ``u < 1 - alpha`` for a uniform draw ``u`` in [0, 1).
* ``"balanced"``: every mask ablates exactly ``k = round(alpha * C)``
  components, and each group of ``r = min(round(1 / alpha), C // k)``
  consecutive masks ablates disjoint sets: the first ``r * k`` entries of one
  random permutation of the components, cut into ``r`` sets. When ``r * k = C``
  (e.g. C = 200, alpha = 0.05) every component is ablated exactly once per
  group; otherwise at most once, the ``C - r * k`` left over drawn at random.
  Each mask alone has the exact scheme's distribution; only the dependence
  between masks differs (see :func:`balance_group`).

Masks are a deterministic function of ``(seed, shard)`` (and of ``n_components``,
``alpha`` and ``scheme``). Rows are generated in fixed blocks of
:data:`BLOCK_ROWS` rows (for ``"balanced"``, the largest multiple of the group
size ``r`` that is at most :data:`BLOCK_ROWS`, or ``r``, so that no group
straddles two blocks; groups start again at row 0 of every shard); block ``b`` draws from its own stream
``SeedSequence([seed, shard], spawn_key=(b,))`` -- the ``b``-th child that
``SeedSequence([seed, shard]).spawn`` would hand out. The result therefore
does not depend on how the caller chunks the generation, and memory use is
bounded by one block (a few tens of MB at C = 82,944) plus the chunk being
returned.
"""
from __future__ import annotations

import numbers
from typing import Iterator

import numpy as np

from .errors import CoarError

__all__ = [
    "SCHEMES",
    "BLOCK_ROWS",
    "SamplingArgumentError",
    "n_ablated",
    "balance_group",
    "sample_masks",
    "iter_mask_chunks",
]

SCHEMES = ("exact", "bernoulli", "balanced")

#: Rows generated from one random stream. Part of the definition of the masks:
#: changing it changes every mask, so it is fixed.
BLOCK_ROWS = 64

#: Default number of rows per chunk yielded by :func:`iter_mask_chunks`.
DEFAULT_CHUNK_ROWS = 256


class SamplingArgumentError(CoarError, ValueError):
    """An argument of the mask sampler is out of range (catchable as ValueError or CoarError)."""


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SamplingArgumentError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise SamplingArgumentError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise SamplingArgumentError(f"alpha must be a number in [0, 1), got {alpha!r}")
    alpha = float(alpha)
    if not (0.0 <= alpha < 1.0):  # also rejects NaN
        raise SamplingArgumentError(f"alpha must be in [0, 1) (fraction of components ablated), got {alpha}")
    return alpha


def _check_scheme(scheme) -> str:
    if scheme not in SCHEMES:
        raise SamplingArgumentError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def n_ablated(n_components: int, alpha: float) -> int:
    """Number of components every mask of the ``"exact"`` scheme ablates: ``round(alpha * C)``."""
    n_components = _check_int("n_components", n_components, 1)
    alpha = _check_alpha(alpha)
    return int(round(alpha * n_components))


def check_alpha(alpha, n_components: int, owner: str = "the", note: str = "") -> int:
    """round(alpha * C), the number of components every mask at `alpha` ablates, refused unless it is between 1
    and C - 1: at 0 every mask ablates nothing, at C every mask ablates everything, and either way all masks are
    the same and the attributions all zero. The one check of an ablation fraction that the API, the CLI, the
    workflow's plan and the benchmark scripts share; `owner` and `note` only word the message ("setup A's",
    "(resnet_tiny)")."""
    k = n_ablated(n_components, alpha)
    if 1 <= k <= n_components - 1:
        return k
    c = n_components
    fix = (f"use alpha between {0.5 / c:.3g} and {1 - 0.5 / c:.3g} (exclusive)" if c >= 2
           else "a single component cannot be ablated at random")
    raise SamplingArgumentError(
        f"alpha {alpha:g} ablates round(alpha * C) = round({alpha:g} * {c}) = round({alpha * c:g}) = {k} of {owner} "
        f"C = {c} components"
        f"{' ' + note if note else ''}, so every mask would ablate {'nothing' if k == 0 else 'every component'} "
        f"and all masks would be the same; {fix}")


def balance_group(n_components: int, alpha: float) -> int:
    """Masks per group of the ``"balanced"`` scheme: ``min(round(1 / alpha), C // k)`` with
    ``k = round(alpha * C)``, the most disjoint sets of ``k`` components there are; 1 when ``k = 0``."""
    k = n_ablated(n_components, alpha)
    if k == 0:
        return 1
    return max(1, min(int(round(1.0 / alpha)), n_components // k))


def _block_rows(n_components: int, alpha: float, scheme: str) -> int:
    """Rows drawn from one random stream: :data:`BLOCK_ROWS`, or for ``"balanced"`` whole groups."""
    if scheme != "balanced":
        return BLOCK_ROWS
    r = balance_group(n_components, alpha)
    return r * max(1, BLOCK_ROWS // r)


def _block_rng(seed: int, shard: int, block: int) -> np.random.Generator:
    ss = np.random.SeedSequence([seed, shard], spawn_key=(block,))
    return np.random.Generator(np.random.PCG64(ss))


def _fill_block(out: np.ndarray, rng: np.random.Generator, alpha: float, scheme: str, k: int) -> None:
    """Fill ``out`` ([rows, C] bool) with keep masks drawn from ``rng``."""
    rows, n_components = out.shape
    if scheme == "exact":
        out[...] = True
        if k == 0:
            return
        for i in range(rows):
            out[i, rng.choice(n_components, size=k, replace=False)] = False
    elif scheme == "balanced":
        out[...] = True
        if k == 0:
            return
        r = balance_group(n_components, alpha)
        for g in range(0, rows, r):  # the block holds whole groups, except at the end of the shard
            perm = rng.permutation(n_components)
            for j in range(min(r, rows - g)):
                out[g + j, perm[j * k : (j + 1) * k]] = False
    else:  # bernoulli, as in the authors' code: kept iff rand < 1 - alpha
        # Row by row keeps the float64 scratch to one row (0.7 MB at C = 82,944);
        # Generator.random fills sequentially, so this equals one [rows, C] draw.
        for i in range(rows):
            np.less(rng.random(n_components), 1.0 - alpha, out=out[i])


def iter_mask_chunks(
    n_components: int,
    n_masks: int,
    alpha: float,
    seed: int,
    shard: int = 0,
    scheme: str = "exact",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[np.ndarray]:
    """Yield the masks of :func:`sample_masks` as consecutive bool chunks of at most ``chunk_rows`` rows.

    ``np.concatenate(list(iter_mask_chunks(...)))`` equals ``sample_masks(...)`` for any ``chunk_rows``.
    Arguments are validated when this function is called, not at the first ``next()``.
    """
    n_components = _check_int("n_components", n_components, 1)
    n_masks = _check_int("n_masks", n_masks, 1)
    alpha = _check_alpha(alpha)
    seed = _check_int("seed", seed, 0)
    shard = _check_int("shard", shard, 0)
    scheme = _check_scheme(scheme)
    chunk_rows = _check_int("chunk_rows", chunk_rows, 1)
    k = int(round(alpha * n_components))
    return _generate(n_components, n_masks, alpha, seed, shard, scheme, chunk_rows, k)


def _generate(n_components, n_masks, alpha, seed, shard, scheme, chunk_rows, k) -> Iterator[np.ndarray]:
    block_rows = _block_rows(n_components, alpha, scheme)
    block_buf = np.empty((block_rows, n_components), dtype=bool)
    block_idx = -1  # index of the block currently held in block_buf
    start = 0
    while start < n_masks:
        stop = min(start + chunk_rows, n_masks)
        chunk = np.empty((stop - start, n_components), dtype=bool)
        row = start
        while row < stop:
            b = row // block_rows
            if b != block_idx:
                b_rows = min(block_rows, n_masks - b * block_rows)
                _fill_block(block_buf[:b_rows], _block_rng(seed, shard, b), alpha, scheme, k)
                block_idx = b
            b_start = b * block_rows
            take = min(stop, b_start + block_rows) - row
            chunk[row - start : row - start + take] = block_buf[row - b_start : row - b_start + take]
            row += take
        yield chunk
        start = stop


def sample_masks(
    n_components: int,
    n_masks: int,
    alpha: float,
    seed: int,
    shard: int = 0,
    scheme: str = "exact",
) -> np.ndarray:
    """Keep masks, bool ``[n_masks, n_components]`` (True = kept, False = ablated).

    Deterministic in ``(seed, shard)``; different shards (or seeds) give different masks.
    ``alpha`` is the ablated fraction, in [0, 1). See the module docstring for the schemes.
    The only large allocation is the bool result itself (use :func:`iter_mask_chunks`
    to avoid even that).
    """
    chunks = iter_mask_chunks(n_components, n_masks, alpha, seed, shard, scheme)
    out = np.empty((int(n_masks), int(n_components)), dtype=bool)
    row = 0
    for chunk in chunks:
        out[row : row + len(chunk)] = chunk
        row += len(chunk)
    return out
