"""Attribution evaluation (paper eq. 6): per-example Pearson correlation between true component
counterfactuals f_M(z, C_i) on fresh masks and the attribution-based estimates g(z)(keep_i).

A method whose estimates are constant across masks for an example (e.g. all-zero scores) has an undefined
correlation there; it is counted as 0 (no predictive information) in the mean and reported separately.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np

from .attributions import Attributions
from .errors import ShapeError

if TYPE_CHECKING:  # pandas is imported where a table is made: sampling jobs never need it
    import pandas as pd


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column pair: a, b [M, N] -> [N] (NaN where a column is constant)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ShapeError(f"correlation needs two [M, N] arrays of equal shape, got {a.shape} and {b.shape}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    num = (a * b).sum(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = num / den
    r[den <= 1e-300] = np.nan
    return r


def correlations(attributions: Mapping[str, Attributions] | Attributions, keep: np.ndarray, outputs: np.ndarray,
                 alpha_test: float | None = None) -> pd.DataFrame:
    """Tidy table: one row per (method, example) with the correlation on these held-out masks."""
    import pandas as pd

    if isinstance(attributions, Attributions):
        attributions = {attributions.method: attributions}
    outputs = np.asarray(outputs, dtype=np.float32)
    rows = []
    for name, attr in attributions.items():
        if outputs.shape != (len(keep), attr.n_examples):
            raise ShapeError(f"outputs must be [masks={len(keep)}, examples={attr.n_examples}] for {name}, "
                             f"got {outputs.shape}")
        r = pearson_columns(outputs, attr.predict(keep))
        rows.append(pd.DataFrame({"method": name, "alpha_test": alpha_test, "example": np.arange(len(r)),
                                  "correlation": r}))
    return pd.concat(rows, ignore_index=True)


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean correlation per (method, alpha_test); undefined correlations count as 0."""
    t = table.assign(undefined=table["correlation"].isna(), correlation=table["correlation"].fillna(0.0))
    keys = [k for k in ("method", "alpha_test") if t[k].notna().any()]
    out = t.groupby(keys, dropna=False).agg(
        mean_correlation=("correlation", "mean"), median_correlation=("correlation", "median"),
        sem=("correlation", "sem"), examples=("correlation", "size"), undefined=("undefined", "sum"))
    return out.reset_index()
