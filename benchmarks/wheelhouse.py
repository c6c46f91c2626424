"""A wheelhouse for running benchmarks/gpu.sh on a GPU machine that reaches no package index but has torch.

The GPU run needs snakemake (the Fig. 2 chain), captum (baselines), pytest and hypothesis (the cuda tests) and the
workflow's table and figure packages, but never a second copy of torch. This script walks the installed
distributions of the current environment (the one install.sh made, where they are tested together) from those
roots, leaves out torch, torchvision, triton, the NVIDIA/CUDA wheels and whatever `--have` lists (the `pip freeze`
of the GPU machine, when known), and downloads the wheels of exactly those versions for the GPU machine's Python
into OUT, without dependencies (the closure is already complete):

    python benchmarks/wheelhouse.py wheelhouse                        # here, with a package index
    python benchmarks/wheelhouse.py wheelhouse --have gpu-freeze.txt  # only what the GPU machine lacks
    # there:  python -m pip install --no-index --no-deps wheelhouse/*.whl && bash benchmarks/gpu.sh OUT

It prints the wheels' total size and exits non-zero above --max-mib (what a copy to the machine may carry).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

#: what gpu.sh imports (directly or through the workflow it runs), by distribution name. Not scipy (the engine
#: solves without it) nor sklearn (only bench_regression's non-streamed comparison).
ROOTS = ("snakemake", "captum", "pytest", "hypothesis", "pandas", "matplotlib", "seaborn", "pyyaml", "jsonschema",
         "tqdm", "psutil")
#: on the GPU machine already (torch, torchvision and all they require, e.g. numpy and pillow), far too large to
#: carry, or never imported there: pulp is snakemake's ILP scheduler, and gpu.sh runs the greedy one
EXCLUDE = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|pulp)$")
INSTALLED_THERE = ("torch", "torchvision")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots=ROOTS, exclude: set[str] = frozenset(), python: str = "3.12",
            follow_excluded: bool = False) -> dict[str, str]:
    """{distribution: version} of the installed distributions `roots` need, dependencies included, with the
    environment markers evaluated for Linux and `python`; excluded names (and EXCLUDE, unless `follow_excluded`)
    are not followed."""
    env = dict(default_environment(), python_version=python, python_full_version=f"{python}.0",
               sys_platform="linux", platform_system="Linux", os_name="posix")
    found: dict[str, str] = {}
    todo = [canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in exclude or (EXCLUDE.match(name) and not follow_excluded):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed in {sys.prefix}: run install.sh first") from None
        found[name] = dist.version
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(canonical(req.name))
    return dict(sorted(found.items()))


def installable(wheel: str, tag: str) -> bool:
    """Whether a wheel's tags (name-version[-build]-python-abi-platform.whl) admit CPython `tag` (e.g. "312") on
    x86_64 Linux."""
    py, abi, plat = wheel[: -len(".whl")].split("-")[-3:]
    pys, plats = py.split("."), plat.split(".")
    python_ok = ("py3" in pys or f"cp{tag}" in pys
                 or (abi == "abi3" and any(p.startswith("cp3") and int(p[3:]) <= int(tag[1:]) for p in pys)))
    return python_ok and ("any" in plats or any(p.endswith("x86_64") and "linux" in p for p in plats))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for the wheels (ignored by git, e.g. wheelhouse)")
    ap.add_argument("--have", type=Path, help="`pip freeze` of the GPU machine: these are not downloaded")
    ap.add_argument("--roots", nargs="+", default=list(ROOTS),
                    help="distributions to start from (default: what gpu.sh imports)")
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python (major.minor)")
    ap.add_argument("--max-mib", type=float, default=60.0, help="fail above this total size")
    a = ap.parse_args(argv)
    have = set()
    if a.have:
        have = {canonical(re.split(r"[=<>@ ]", line, 1)[0]) for line in a.have.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    there = set(closure(INSTALLED_THERE, python=a.python, follow_excluded=True))
    pins = closure(a.roots, exclude=have | there, python=a.python)
    a.out.mkdir(parents=True, exist_ok=True)
    tag = a.python.replace(".", "")
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--prefer-binary", "-d", str(a.out),
           "--python-version", a.python, "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3",
           "--abi", "none"]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64",
                     "any"):
        cmd += ["--platform", platform]
    subprocess.run(cmd + [f"{n}=={v}" for n, v in pins.items()], check=True)
    for sdist in sorted(a.out.glob("*.tar.gz")) + sorted(a.out.glob("*.zip")):  # published without a wheel
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(a.out), str(sdist)],
                       check=True)
        sdist.unlink()
    impure = [w.name for w in a.out.glob("*.whl") if not installable(w.name, tag)]
    if impure:  # built here for another Python: would not install there
        print(f"wheels that would not install on Python {a.python}: {impure}", file=sys.stderr)
        return 1
    wheels = sorted(a.out.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(pins)} distributions, {len(wheels)} wheels in {a.out}: {total:.1f} MiB"
          + (f" (leaving out {len(have)} the GPU machine has)" if have else ""))
    if total > a.max_mib:
        print(f"more than --max-mib {a.max_mib:g}: pass --have with the GPU machine's `pip freeze`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
