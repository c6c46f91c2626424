"""coar: component attributions (COAR) and attribution-based model editing (COAR-EDIT).

Shah, Ilyas, Madry (2024), "Decomposing and Editing Predictions by Modeling Model Computation".
The library never reads workflow config files; the Snakemake workflow and the `coar` CLI call it.
"""
from .attributions import Attributions
from .components import ComponentGroup, ComponentSet, Rule, component_set, model_fingerprint
from .errors import CoarError, ComponentError, ShapeError, StoreError, StoreMismatchError

__version__ = "0.1.0"
__all__ = ["Attributions", "ComponentGroup", "ComponentSet", "Rule", "component_set", "model_fingerprint",
           "CoarError", "ComponentError", "ShapeError", "StoreError", "StoreMismatchError", "__version__"]
