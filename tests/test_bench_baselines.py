"""benchmarks/bench_baselines.py: the one-integration NC/II path and Captum's per-layer path, timed side by side on
a preset's model, agree to float rounding in the table the script prints."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_times_both_paths_and_they_agree():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_baselines.py"), "--preset",
                        str(ROOT / "config/config.yaml"), "--setups", "A", "--reps", "1", "--examples", "8",
                        "--n-steps", "3"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [line for line in r.stdout.splitlines() if line.startswith("| A |")]
    assert [row.split("|")[5].strip() for row in rows] == ["nc", "ii"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[5]) > 0 and float(cells[6]) > 0
        assert re.fullmatch(r"\*\*[0-9.]+x\*\*", cells[7])
        assert float(cells[8]) < 1e-5  # the two paths give the same scores
