"""benchmarks/bench_sampling.py: the re-implemented authors' loop gives the same margins as ours (so the
benchmark compares equal work), and the script's CPU smoke run prints a row for every model and loop."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from coar.engine import counterfactual_outputs
from coar.components import component_set
from coar.paper.models import build_model
from coar.outputs import margin
from coar.sampling import sample_masks

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_sampling  # noqa: E402


def test_authors_loop_equals_ours_on_the_cifar_resnet():
    torch.manual_seed(0)
    model = build_model("cifar_resnet").eval()
    cset = component_set(model, "cifar_resnet")
    assert cset.size == 2304
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (6,), generator=g)
    keep = sample_masks(cset.size, 3, 0.05, seed=2)
    cpu = torch.device("cpu")
    theirs = bench_sampling.authors_loop(model, cset, images, labels, keep, cpu, batch_size=4)
    ours = counterfactual_outputs(model, cset, bench_sampling.normalise(images, cpu, torch.float32), labels, keep,
                                  margin, batch_size=3, masks_per_pass=2)
    unablated = counterfactual_outputs(model, cset, bench_sampling.normalise(images, cpu, torch.float32), labels,
                                       np.ones((1, cset.size), bool), margin)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.abs(theirs - unablated).max() > 1e-3  # the masks do change the margins


def test_forward_flops_of_the_cifar_resnet():
    """conv 3->256 then 8 convs 256->256, all 3x3 at 32x32, and a 4096->10 head: 2 FLOPs per multiply-add."""
    model = build_model("cifar_resnet").eval()
    convs = 32 * 32 * 9 * (3 * 256 + 8 * 256 * 256)
    assert bench_sampling.forward_flops(model, 32, torch.device("cpu"), torch.float32) == 2 * (convs + 4096 * 10)


def test_quick_run_prints_every_model_and_loop():
    r = subprocess.run([sys.executable, str(BENCH / "bench_sampling.py"), "--quick", "--device", "cpu"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    for name, size in (("cifar_resnet", "2304"), ("resnet50", "22720"), ("vit_b_16", "82944")):
        rows = [line for line in lines if line.startswith(name) and line.split()[1] == size]
        assert len(rows) == 2 and "authors" in rows[0] and "ours" in rows[1], r.stdout
        diff = float(rows[1].split("max|d|")[1].split(",")[0])
        assert diff < 1e-3, rows[1]  # float32 on the CPU: the two loops agree to rounding


def test_preset_models_are_the_default_presets_distinct_models():
    specs = bench_sampling.preset_models(str(BENCH.parent / "config" / "config.yaml"))
    by_setup = {s["setup"]: s for s in specs}
    assert {"A", "B", "C", "M", "G", "R", "L"} <= set(by_setup)
    assert "A_train" not in by_setup and "B_a10" not in by_setup  # the same model on the same number of examples
    assert (by_setup["C"]["model"], by_setup["C"]["n"]) == ("vit_tiny", 200)
    assert by_setup["G"]["length"] == 32 and by_setup["L"]["n"] == 100
    assert by_setup["Bd"]["n"] == 100  # 50 images, clean and triggered


def test_preset_run_prints_the_engine_against_the_plain_forward_pass():
    r = subprocess.run([sys.executable, str(BENCH / "bench_sampling.py"), "--preset", "--quick", "--setups", "A", "G",
                        "--threads", "1", "--reps", "1", "--variants"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.split()[:1] in (["A"], ["G"])}
    assert set(rows) == {"A", "G"}, r.stdout
    for row in rows.values():
        m = re.search(r"^\S+\s+\S+\s+\d+\s+\d+\s+\d+\s+([\d,]+) \(.*\)\s+([\d,]+)\s+([\d.]+)\s+(weights|hooks)",
                      " ".join(row))
        forward, engine, ratio = (float(v.replace(",", "")) for v in m.groups()[:3])
        assert forward > 0 and engine > 0 and abs(ratio - engine / forward) < 0.01 * ratio + 0.01
    assert "weights, K=1 x 200, channels_last, 7 BN folded" in " ".join(rows["A"])  # resnet_tiny: 7 BatchNorm
    assert "G" in rows and "BN folded" not in " ".join(rows["G"])
    assert "hooks channels_last" in r.stdout and "weights contiguous" in r.stdout
    assert "engine, BatchNorm kept" in r.stdout
