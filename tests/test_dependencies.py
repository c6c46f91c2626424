"""The engine needs only its own dependencies (pyproject's `dependencies`): with every package of the workflow
extra made unimportable, `coar.attribute`, `coar.evaluate` and `coar.edit` still run, and so do the CLI's COAR
steps' modules."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# import names of the `workflow` extra's distributions
IMPORT_NAMES = {"scipy": "scipy", "matplotlib": "matplotlib", "seaborn": "seaborn", "pyyaml": "yaml",
                "jsonschema": "jsonschema", "snakemake": "snakemake", "dvc": "dvc"}

CODE = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed (the workflow extra)")
sys.meta_path.insert(0, Block())
import torch, coar
from torch import nn
import coar.cli, coar.pipeline, coar.regression, coar.baselines, coar.store, coar.correlation, coar.editing
model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
rules = [coar.Rule("0", ("Linear",))]
attr = coar.attribute(model, x, y, components=rules, masks=60, alpha=0.2, progress=False)
table = coar.evaluate(attr, model, x, y, components=rules, masks=20, alpha=0.2, progress=False)
coar.edit(model, attr, rules, targets=[0], references=[1, 2], k=1)
assert not BLOCKED & {m.split(".")[0] for m in sys.modules}, BLOCKED & set(sys.modules)
print("engine ok", len(table))
"""


def test_the_workflow_extra_lists_what_the_engine_does_without():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = {r.split(">")[0].split("=")[0].split("<")[0] for r in project["optional-dependencies"]["workflow"]}
    assert extra == set(IMPORT_NAMES)
    assert not extra & {r.split(">")[0].split("=")[0] for r in project["dependencies"]}


def test_the_engine_runs_without_the_workflow_extra():
    r = subprocess.run([sys.executable, "-c", CODE, ",".join(IMPORT_NAMES.values())], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "engine ok" in r.stdout, r.stderr[-3000:]
