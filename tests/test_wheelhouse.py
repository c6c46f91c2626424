"""benchmarks/wheelhouse.py, the packages a GPU machine without a package index needs to run gpu.sh: the closure
of what gpu.sh imports, never torch or what torch brings (the machine has it), and only wheels that install on its
Python. The download itself needs an index and is not run here."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import wheelhouse  # noqa: E402


def test_the_closure_carries_the_workflow_but_nothing_torch_brings():
    there = set(wheelhouse.closure(wheelhouse.INSTALLED_THERE, follow_excluded=True))
    assert {"torch", "numpy", "pillow", "typing-extensions"} <= there  # installed with torch and torchvision
    pins = wheelhouse.closure(exclude=there)
    assert {"snakemake", "captum", "pandas", "matplotlib", "pytest", "hypothesis", "sqlalchemy"} <= set(pins)
    assert not set(pins) & there
    assert not [n for n in pins if n.startswith(("nvidia-", "torch", "triton")) or n in ("pulp", "scipy")]
    from importlib import metadata

    assert all(metadata.version(n) == v for n, v in pins.items())  # the versions tested together here
    assert "pandas" not in wheelhouse.closure(exclude=there | {"pandas", "seaborn"})  # --have leaves them out


def test_only_wheels_for_the_machines_python_are_kept():
    ok = wheelhouse.installable
    assert ok("six-1.17.0-py2.py3-none-any.whl", "312")
    assert ok("psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.whl", "312")
    assert ok("pandas-3.1.1-cp312-cp312-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl", "312")
    assert not ok("pandas-3.1.1-cp311-cp311-manylinux_2_24_x86_64.whl", "312")  # built for another Python
    assert not ok("pandas-3.1.1-cp312-cp312-macosx_11_0_arm64.whl", "312")
    assert not ok("foo-1.0-cp313-abi3-manylinux_2_17_x86_64.whl", "312")  # needs a newer Python
