"""coar: component attributions (COAR) and attribution-based model editing (COAR-EDIT).

Shah, Ilyas, Madry (2024), "Decomposing and Editing Predictions by Modeling Model Computation".
The library never reads workflow config files; the Snakemake workflow and the `coar` CLI call it.
"""
from .attributions import Attributions
from .errors import CoarError, ComponentError, ShapeError, StoreError, StoreMismatchError

__version__ = "0.1.0"
__all__ = ["Attributions", "ComponentGroup", "ComponentSet", "Rule", "component_set", "model_fingerprint",
           "CoarError", "ComponentError", "ShapeError", "StoreError", "StoreMismatchError", "__version__"]
_FROM_COMPONENTS = {"ComponentGroup", "ComponentSet", "Rule", "component_set", "model_fingerprint"}


def __getattr__(name):
    """The component names import torch, so they load on first use: `import coar.store` (and the workflow's
    table and figure jobs) stay torch-free."""
    if name in _FROM_COMPONENTS:
        from . import components

        return getattr(components, name)
    raise AttributeError(f"module 'coar' has no attribute {name!r}")
