"""benchmarks/gpu.sh, the one-command GPU run, rehearsed on the CPU with --tiny: every section runs to exit 0
within its limit, prints its table, and every section's log is packed into logs.tar.gz."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["cuda-tests", "regression-setup-A", "regression-setup-B", "sampling-n10000", "sampling-compile",
            "sampling-n64", "fig2-chain", "memory-plan-vit"]


@pytest.mark.slow
def test_gpu_script_tiny_runs_every_section(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_BUDGET_S": "1500", "TMPDIR": str(tmp_path)}
    r = subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh"), "--tiny", str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = (tmp_path / "out/summary.txt").read_text()
    for name in SECTIONS:
        assert f"== {name}: rc 0," in summary, summary[-4000:]
    for model in ("cifar_resnet", "resnet50", "vit_b_16"):  # authors' loop and ours, agreeing to rounding
        rows = [line for line in summary.splitlines() if line.startswith(model)]
        assert any(" authors " in line for line in rows) and any("r 1.00000" in line for line in rows), rows
    assert "SAGA total, to max (dw_std)^2 < 1e-10" in summary
    assert summary.count("speedup (SAGA total / COAR host store") == 2  # Cholesky and eigendecomposition
    assert "COAR OLS solve (primal-cholesky), all N examples" in summary
    engine_rows = [line for line in summary.splitlines() if line.startswith("cifar_resnet") and " engine " in line]
    compiled = [line for line in summary.splitlines() if " compiled" in line and "r 1.00000" in line]
    assert engine_rows and len(compiled) == 2, summary[-4000:]  # the engine's own plan; compiled, with graphs
    assert "sampling on cpu:" in summary  # the workflow's sample jobs say where they ran
    assert "method  alpha_test  mean_correlation" in summary
    with tarfile.open(tmp_path / "out/logs.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {f"{s}.log" for s in SECTIONS} | {"summary.csv"} <= names, names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("coar-gpu.")]  # its work folder is removed
