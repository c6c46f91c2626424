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


def test_a_wheelhouse_is_downloaded_here_and_installs_without_an_index(tmp_path):
    """`python benchmarks/wheelhouse.py wheelhouse`, then `python -m pip install --no-index --no-deps
    wheelhouse/*.whl` (into a folder of its own here), for two small pure-Python packages of the closure, one of
    them already there (--have)."""
    import subprocess

    import pytest

    have = tmp_path / "freeze.txt"
    have.write_text("# pip freeze of the GPU machine\nsix==1.17.0\n")
    r = subprocess.run([sys.executable, str(Path(wheelhouse.__file__)), str(tmp_path / "wh"), "--roots", "tabulate",
                        "six", "--have", str(have)], capture_output=True, text=True, timeout=300)
    if r.returncode and ("No matching distribution" in r.stderr or "connection" in r.stderr.lower()):
        pytest.skip(f"no package index reachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-2000:]
    wheels = sorted((tmp_path / "wh").glob("*.whl"))
    assert [w.name.split("-")[0].lower() for w in wheels] == ["tabulate"], wheels
    assert "1 distributions, 1 wheels" in r.stdout and "leaving out 1 the GPU machine has" in r.stdout
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    *map(str, wheels)], check=True, capture_output=True, timeout=300)
    out = subprocess.run([sys.executable, "-c", "import tabulate; print(tabulate.__file__)"],
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.returncode == 0 and str(site) in out.stdout, out.stdout + out.stderr
