"""The sampling engine's option names and the edit size check, importable without torch: coar.engine,
coar.editing, coar.settings and the workflow's plan (which checks every setup while Snakemake builds its DAG)
share them."""
from __future__ import annotations

import numbers

from .errors import CoarError

MECHANISMS = ("auto", "weights", "hooks", "shared")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
BATCHNORM = ("auto", "fold", "keep")


def check_k(k, n_components: int, what: str = "k", unedited: bool = False) -> int:
    """The number of components an edit ablates, refused unless it is an integer in 1..C - 1: k = C ablates every
    component (the model's output no longer depends on its input), k = 0 edits nothing. A sweep's k = 0, the
    unedited model it is measured against, is allowed with `unedited=True`. The one check the API (`coar.edit`),
    `coar edit --k/--sweep`, the editing experiments and the workflow's plan share; `what` names the argument."""
    lo = 0 if unedited else 1
    whole = isinstance(k, numbers.Integral) and not isinstance(k, bool)
    if whole and lo <= int(k) <= n_components - 1:
        return int(k)
    span = f"use {lo}..{n_components - 1} (the model has C = {n_components} components)"
    if whole and int(k) == n_components:
        raise CoarError(f"{what} = {k} ablates every component, so the edited model's output would not depend on its "
                        f"input; {span}")
    if whole and int(k) == 0:
        raise CoarError(f"{what} = 0 edits nothing (only a sweep's unedited point may be 0); {span}")
    raise CoarError(f"{what} = {k!r} is not an integer in {lo}..{n_components - 1} (the model has C = "
                    f"{n_components} components)")
