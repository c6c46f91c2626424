"""DVC round trip with a local remote: build the CI preset, push, clone, pull, sync; Snakemake then has
nothing to do, and a config change reruns exactly the affected rules. Runs on the committed HEAD."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from coar.paper.data.fashion_mnist import find_fashion_mnist
from tests.helpers import job_counts

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "dvc").exists() or not (BIN / "snakemake").exists(), reason="needs dvc and snakemake"),
    pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available"),
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git repository"),
]


def sh(cmd, cwd, check=True):
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
               GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@localhost", GIT_COMMITTER_NAME="ci",
               GIT_COMMITTER_EMAIL="ci@localhost")
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        raise AssertionError(f"`{cmd}` failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def dry_run(clone):
    return sh("snakemake -n --snakefile ../../Snakefile --configfile=../../config/test.yaml", clone / "runs/test",
              check=False)


def test_dvc_round_trip(tmp_path):
    remote, origin, clone = tmp_path / "remote", tmp_path / "origin", tmp_path / "clone"
    sh(f"git clone -q {ROOT} {origin}", tmp_path)
    sh(f"dvc remote modify --local local url {remote}", origin)
    sh("dvc repro test", origin)
    sh("git add dvc.lock && git commit -qm 'lock the test stage'", origin)
    sh("dvc push test", origin)

    sh(f"git clone -q {origin} {clone}", tmp_path)
    sh(f"dvc remote modify --local local url {remote}", clone)
    sh("dvc pull test", clone)
    assert (clone / "runs/test/figures/fig2.pdf").read_bytes()[:4] == b"%PDF"
    sync = sh("bash workflow/dvc-sync.sh test", clone)
    assert "marked up to date" in sync.stdout
    r = dry_run(clone)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "missing provenance" not in r.stdout + r.stderr, r.stdout + r.stderr  # every job has its record

    # a config change reruns exactly what depends on it: the fresh evaluation masks and what follows
    cfg = clone / "config/test.yaml"
    cfg.write_text(cfg.read_text().replace("test_masks: 60", "test_masks: 70"))
    changed = dry_run(clone)
    counts = job_counts(changed.stdout + changed.stderr)
    # T's evaluation masks at the four alphas its figures use (0.05, 0.10, 0.15, 0.20) and those of its
    # variant T_scale (which inherits test_masks) at 0.10 and 0.20; T_text sets its own test_masks
    assert counts.get("sample_shard") == 6 and counts.get("gather_masks") == 6, counts
    assert counts.get("evaluate") == 1 and counts.get("fig2") == 1, counts
    assert not {"model", "examples", "heldout_examples", "fit", "baseline", "edit_single", "edit_forget"} & set(counts), counts

    # and the sync refuses once the outputs no longer match dvc.lock for the current config
    refused = sh("bash workflow/dvc-sync.sh test", clone, check=False)
    assert refused.returncode == 1 and "not clean" in refused.stderr
    shutil.rmtree(remote, ignore_errors=True)
