"""coar: component attributions (COAR) and attribution-based model editing (COAR-EDIT).

Shah, Ilyas, Madry (2024), "Decomposing and Editing Predictions by Modeling Model Computation".
The library never reads workflow config files; the Snakemake workflow and the `coar` CLI call it.

The front door, for any torch.nn.Module (see coar.api):
    attr = coar.attribute(model, inputs, targets, components="resnet50", masks=10_000, alpha=0.05)
    table = coar.evaluate(attr, model, inputs, targets, components="resnet50", masks=500, alpha=0.05)
    edited, ablated = coar.edit(model, attr, "resnet50", targets=[0], references=[1, 2, 3], k=3)
"""
from .attributions import Attributions
from .errors import ArgumentError, CoarError, ComponentError, ShapeError, StoreError, StoreMismatchError
from .settings import FitSettings, SampleSettings

__version__ = "0.1.0"
__all__ = ["attribute", "evaluate", "edit", "Attributions", "ComponentGroup", "ComponentSet", "Rule", "component_set",
           "model_fingerprint", "ArgumentError", "CoarError", "ComponentError", "ShapeError", "StoreError",
           "StoreMismatchError", "FitSettings", "SampleSettings", "__version__"]
_FROM_COMPONENTS = {"ComponentGroup", "ComponentSet", "Rule", "component_set", "model_fingerprint"}
_FROM_API = {"attribute", "evaluate", "edit"}


def __getattr__(name):
    """The front door (coar.api) and the component names import torch, so they load on first use: `import
    coar.store` (and the workflow's table and figure jobs) stay torch-free."""
    if name in _FROM_COMPONENTS:
        from . import components as module
    elif name in _FROM_API:
        from . import api as module
    else:
        raise AttributeError(f"module 'coar' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value
