"""Component sets: which weight slices of a model are the "components" that COAR ablates (paper Sec. 2).

A ComponentSet is an ordered tuple of groups. A group is one module and a site:
  * site "output": unit j is output channel / weight row j of a Conv2d, Linear, or the in-projection of
    attention. Zero ablation zeroes that weight row, so the unit then outputs its bias (BatchNorm after a
    conv is left untouched, as in the authors' code).
  * site "input": unit j is input feature j of the module. For HF GPT-2's Conv1D (weight stored as
    (in, out)) a weight *row* is an input dimension, so zeroing row j equals zeroing input feature j.
A unit may cover a contiguous block of features (Phi-2: blocks of 10 weight vectors).

Groups are found by small declarative rule tables (one per architecture), walked in the model's
named_modules() order; the flat component index is the concatenation of groups in that order.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ComponentError

SITES = ("output", "input")


@dataclass(frozen=True)
class ComponentGroup:
    module: str  # dotted path as in model.named_modules()
    site: str  # "output" or "input"
    units: int  # number of components in this group
    width: int  # number of features the units cover (units = ceil(width / block))
    block: int = 1  # features per unit
    kind: str = ""  # conv2d | linear | conv1d | mha_in_proj (informative; not part of the fingerprint)

    def unit_slice(self, unit: int) -> slice:
        return slice(unit * self.block, min((unit + 1) * self.block, self.width))


@dataclass(frozen=True)
class Rule:
    """Match modules whose full name matches `pattern` (re.fullmatch) and whose class is one of `types`."""

    pattern: str
    types: tuple[str, ...]  # class names; "Linear" also matches subclasses such as NonDynamicallyQuantizableLinear
    site: str = "output"
    block: int = 1


class ComponentSet:
    """Ordered groups with flat index <-> (group, unit) maps, labels and a fingerprint."""

    def __init__(self, groups: Sequence[ComponentGroup], name: str = "custom"):
        if not groups:
            raise ComponentError(f"component set {name!r} is empty: no module matched its rules")
        for g in groups:
            if g.site not in SITES:
                raise ComponentError(f"group {g.module}: site must be one of {SITES}, got {g.site!r}")
            if g.units != -(-g.width // g.block):
                raise ComponentError(f"group {g.module}: {g.units} units do not tile width {g.width} in blocks of {g.block}")
        self.groups = tuple(groups)
        self.name = name
        self.offsets = np.concatenate([[0], np.cumsum([g.units for g in self.groups])]).astype(np.int64)

    @property
    def size(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.size

    def group_range(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def locate(self, index: int) -> tuple[int, int]:
        """Flat component index -> (group index, unit within group)."""
        if not 0 <= index < self.size:
            raise ComponentError(f"component index {index} out of range [0, {self.size})")
        g = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return g, int(index - self.offsets[g])

    def label(self, index: int) -> str:
        g, u = self.locate(index)
        return f"{self.groups[g].module}[{u}]"

    def labels(self) -> list[str]:
        return [f"{g.module}[{u}]" for g in self.groups for u in range(g.units)]

    def group_of(self) -> np.ndarray:
        """[C] group index of every component."""
        return np.repeat(np.arange(len(self.groups)), [g.units for g in self.groups])

    def fingerprint(self) -> str:
        spec = [[g.module, g.site, g.units, g.width, g.block] for g in self.groups]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]

    def table(self):
        import pandas as pd

        return pd.DataFrame(
            [{"group": i, "module": g.module, "kind": g.kind, "site": g.site, "units": g.units, "block": g.block}
             for i, g in enumerate(self.groups)]
        )

    def to_dict(self) -> dict:
        return {"name": self.name, "groups": [asdict(g) for g in self.groups]}

    @classmethod
    def from_dict(cls, d: dict) -> "ComponentSet":
        return cls([ComponentGroup(**g) for g in d["groups"]], name=d.get("name", "custom"))

    def check(self, model: nn.Module) -> None:
        """Raise ComponentError if this set does not fit `model` (missing module or width mismatch)."""
        found = discover(model, [Rule(re.escape(g.module), ANY, g.site, g.block) for g in self.groups])
        by_name = {g.module: g for g in found}
        for g in self.groups:
            f = by_name.get(g.module)
            if f is None:
                raise ComponentError(f"component group {g.module!r} not found in model {type(model).__name__}")
            if f.width != g.width:
                raise ComponentError(f"component group {g.module!r}: model has width {f.width}, set expects {g.width}")

    def __repr__(self) -> str:
        return f"ComponentSet({self.name!r}, groups={len(self.groups)}, size={self.size})"


ANY = ("Conv2d", "Linear", "Conv1D", "MultiheadAttention")


def _class_names(module: nn.Module) -> set[str]:
    return {c.__name__ for c in type(module).__mro__}


def _width(module: nn.Module, site: str) -> tuple[int, str]:
    names = _class_names(module)
    if "MultiheadAttention" in names:
        # the bare in_proj_weight parameter; out_proj is a separate Linear submodule
        return module.in_proj_weight.shape[0], "mha_in_proj"
    if "Conv1D" in names:  # HF: weight (in, out); rows are inputs
        w = module.weight.shape
        return (w[0] if site == "input" else w[1]), "conv1d"
    if isinstance(module, nn.Conv2d):
        return (module.in_channels if site == "input" else module.out_channels), "conv2d"
    if isinstance(module, nn.Linear):
        return (module.in_features if site == "input" else module.out_features), "linear"
    raise ComponentError(f"module type {type(module).__name__} cannot hold components")


def discover(model: nn.Module, rules: Iterable[Rule]) -> list[ComponentGroup]:
    rules = list(rules)
    groups = []
    for name, module in model.named_modules():
        names = _class_names(module)
        for rule in rules:
            if set(rule.types) & names and re.fullmatch(rule.pattern, name):
                site = rule.site
                width, kind = _width(module, site)
                path = f"{name}.in_proj" if kind == "mha_in_proj" else name
                if kind == "mha_in_proj" and site != "output":
                    raise ComponentError(f"{name}: attention in_proj supports site 'output' only")
                groups.append(ComponentGroup(path, site, -(-width // rule.block), width, rule.block, kind))
                break
    return groups


# --------------------------------------------------------------------------------------------------
# Declarative tables, one per architecture.
CONV_NOT_DOWNSAMPLE = [Rule(r"(.*\.)?conv[^.]*", ("Conv2d",))]  # torchvision / CIFAR ResNets
VIT_TORCHVISION = [
    # MultiheadAttention first so its in_proj group precedes out_proj (named_modules order)
    Rule(r"encoder\..*self_attention", ("MultiheadAttention",)),
    Rule(r"encoder\..*", ("Linear",)),
]
GPT2 = [Rule(r".*\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)", ("Conv1D",), site="input")]
PHI2 = [Rule(r".*\.(self_attn\.(q_proj|k_proj|v_proj|dense)|mlp\.(fc1|fc2))", ("Linear",), block=10)]
CLIP_VISION = [Rule(r".*encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))", ("Linear",))]
MLP_HIDDEN = [Rule(r"fc1", ("Linear",))]

TABLES: dict[str, list[Rule]] = {
    "cifar_resnet": CONV_NOT_DOWNSAMPLE,
    "resnet18_cifar": CONV_NOT_DOWNSAMPLE,
    "resnet18_w8": CONV_NOT_DOWNSAMPLE,
    "resnet18_w32": CONV_NOT_DOWNSAMPLE,
    "resnet_small": CONV_NOT_DOWNSAMPLE,
    "resnet_tiny": CONV_NOT_DOWNSAMPLE,
    "resnet_mini": CONV_NOT_DOWNSAMPLE,
    "resnet50": CONV_NOT_DOWNSAMPLE,
    "vit_b_16": VIT_TORCHVISION,
    "vit_small": VIT_TORCHVISION,
    "vit_tiny": VIT_TORCHVISION,
    "clip_vit_b_16": CLIP_VISION,
    "clip_zeroshot": CLIP_VISION,  # the same rows inside the zero-shot classifier's vision tower
    "gpt2": GPT2,
    "gpt2_tiny": GPT2,
    "gpt2_bytes": GPT2,
    "phi2": PHI2,
    "phi2_tiny": PHI2,
    "mlp": MLP_HIDDEN,
    "mlp_small": MLP_HIDDEN,
}


def component_set(model: nn.Module, table: str | Sequence[Rule]) -> ComponentSet:
    """Build the component set of `model` from a named table (see TABLES) or a list of Rules."""
    if isinstance(table, str):
        if table not in TABLES:
            raise ComponentError(f"unknown component table {table!r}; known: {', '.join(sorted(TABLES))}")
        name, rules = table, TABLES[table]
    else:
        name, rules = "custom", list(table)
    return ComponentSet(discover(model, rules), name=name)


def model_fingerprint(model: nn.Module) -> str:
    """Hash of parameter and buffer names, shapes and values: stored with every artifact."""
    h = hashlib.sha256()
    for name, t in list(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        if t.device.type != "meta":
            h.update(t.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                     if t.numel() else b"")
    return h.hexdigest()[:16]
