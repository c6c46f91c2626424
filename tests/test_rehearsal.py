"""The paper preset, rehearsed: every rule config/paper.yaml plans runs end to end on miniature data in each
source's real format, with the real architectures (workflow/rehearsal/).

It takes about 8 minutes on 2 CPU cores (docs/workflow.md gives the measured time),
so it runs in CI (CI=true) and when asked (COAR_REHEARSAL=1); COAR_REHEARSAL=0 skips it in CI too:
    COAR_REHEARSAL=1 python -m pytest tests/test_rehearsal.py -s"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN = os.environ.get("COAR_REHEARSAL", "1" if os.environ.get("CI", "").lower() in ("1", "true") else "0") == "1"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not RUN, reason="the paper rehearsal (about 8 minutes) runs in "
                                                   "CI and with COAR_REHEARSAL=1")]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, request):
    d = tmp_path_factory.mktemp("rehearsal")
    r = subprocess.run([sys.executable, str(ROOT / "workflow" / "rehearsal" / "rehearse.py"), str(d)],
                       capture_output=True, text=True, timeout=3600)
    # the time per rule, shown even under output capture (as in CI's pytest -q)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n" + r.stdout[-8000:], flush=True)
    return d, r


def test_every_rule_of_the_paper_preset_runs_and_every_figure_is_built(rehearsal):
    d, r = rehearsal
    report = json.loads((d / "report.json").read_text())
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert report["paper_rules"] == report["rehearsal_rules"]
    assert not report["not_executed"] and set(report["paper_rules"]) <= set(report["executed_rules"])
    work = d / "work"
    pdfs = [work / "figures" / f"fig{n}.pdf" for n in range(2, 28)]
    missing = [p.name for p in pdfs if not p.exists() or not p.stat().st_size]
    assert not missing, missing


def test_every_setup_has_attributions_and_every_edit_its_tables(rehearsal):
    d, r = rehearsal
    assert r.returncode == 0, r.stdout[-3000:]
    work = d / "work"
    cfg = yaml.safe_load((d / "rehearsal.yaml").read_text())
    assert cfg["preset"] == "paper-rehearsal"
    for name in PAPER["setups"]:
        # a variant shares its parent's fit when its training masks are the same; look where its owner wrote
        own = work / "results" / name / "attributions" / "coar.npz"
        parent = cfg["setups"][name].get("parent")
        assert own.exists() or (parent and (work / "results" / parent / "attributions" / "coar.npz").exists()), name
    for name, e in PAPER["edits"].items():
        base = work / "results" / "edits" / name
        if e["kind"] == "forget":
            for c in e["classes"]:
                table = pd.read_csv(base / f"class-{c}" / "classwise.csv")
                assert len(table), (name, c)
        else:
            summary = pd.read_csv(base / "summary.csv")
            assert len(summary), name


def test_every_download_went_through_the_real_fetch_code_into_empty_caches(rehearsal):
    """The local rules fetched the weights, Hugging Face repositories, TinyStories and the mirrored data files from
    the server on 127.0.0.1 (workflow/rehearsal/hub_server.py) into the rehearsal's own caches, which started
    empty; every manifest's files are there with the SHA-256 it recorded."""
    from coar.paper import hub

    d, r = rehearsal
    assert r.returncode == 0, r.stdout[-3000:]
    report = json.loads((d / "report.json").read_text())
    # the login node's step (`snakemake fetch`) obtained everything; then, with the server stopped, coar preflight
    # passed on the site and every other job ran (none could have downloaded anything)
    assert report["fetch_returncode"] == 0 and report["preflight_returncode"] == 0
    preflight = (d / "preflight.txt").read_text()
    assert re.search(r"^(\d+) of \1 checks ok$", preflight, re.M), preflight[-3000:]
    fetched = set(re.findall(r"^(?:local)?rule (\w+):$", (d / "fetch.log").read_text(), re.M))
    assert {"dataset", "weights", "fetch"} <= fetched
    assert report["jobs"]["weights"] == len(hub.ASSETS) and report["jobs"]["dataset"] >= 10
    served = report["served"]
    assert served["download.pytorch.org"] == 2  # ResNet-50 and ViT-B/16, once each
    assert served["huggingface"] >= 3 * 4 + 1  # config, weights, vocabulary, merges of 3 models; TinyStories
    assert served["data mirror"] >= 5  # CIFAR-10, CIFAR-10-C, ImageNet-Sketch, Waterbirds, BoolQ
    requests = (d / "server.log").read_text().splitlines()
    assert "GET /datasets/roneneldan/TinyStories/resolve/" in "\n".join(requests)
    work, caches = d / "work", d / "caches"
    for name in hub.ASSETS:
        manifest = json.loads((work / hub.manifest_path(name)).read_text())
        assert Path(manifest["location"]).is_relative_to(caches), name
        folder = Path(manifest["location"])
        for f in manifest["files"]:
            path = folder / f["path"] if folder.is_dir() else folder
            assert hub.sha256_file(path) == f["sha256"], (name, f["path"])
    tinystories = json.loads((work / "data" / "datasets" / "tinystories.json").read_text())
    assert "datasets--roneneldan--TinyStories" in tinystories["location"]
