"""The paper's reproduction on top of the engine: its datasets (`data`), the models it attributes and their
training (`models`, `training`), the edit experiments' protocols (`experiments`), the demo, plan-time
component counts (`counts`) and the figures (`plots`). Nothing in the engine (`coar.*` outside this package)
imports from here; the Snakemake workflow and the `coar` CLI's paper commands do.
"""
