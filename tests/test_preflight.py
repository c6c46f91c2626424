"""coar preflight (coar.paper.preflight): a site that passes, the same site with one thing broken per check, the
cost plan's counts against the config, the SLURM profile check, and the command line's errors. Rates come from
docs/benchmarks.md (calibrate=False) except in the calibration tests, which time a tiny model."""
import importlib
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import yaml

from coar import cli
from coar.paper import preflight
from coar.paper.preflight import Job, Shape

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "config.yaml"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"

pytestmark = pytest.mark.skipif(shutil.which("snakemake", path=str(Path(sys.executable).parent)) is None
                                and shutil.which("snakemake") is None, reason="snakemake is not installed")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    """The default preset's data manifests, as the workflow's `dataset` rule writes them (Fashion-MNIST from
    Debian's package, the OS's license texts)."""
    from coar.paper.data.fashion_mnist import find_fashion_mnist
    from coar.paper.data.sources import prepare

    if find_fashion_mnist() is None:
        pytest.skip("Fashion-MNIST is not installed (Debian's dataset-fashion-mnist)")
    d = tmp_path_factory.mktemp("manifests")
    for source in ("fashion-mnist", "os-text"):
        (d / f"{source}.json").write_text(json.dumps(prepare(source, None)))
    return d


@pytest.fixture
def site(tmp_path, monkeypatch, manifests):
    """A working directory where the default preset's data is verified; no GPU; the real hub module when it
    exists, else a fake one that needs nothing."""
    shutil.copytree(manifests, tmp_path / "data" / "datasets")
    monkeypatch.chdir(tmp_path)
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    try:
        importlib.import_module("coar.paper.hub")
    except ImportError:
        fake_hub(monkeypatch, needed=[])
    return tmp_path


def fake_hub(monkeypatch, needed, missing=()):
    """A stand-in for coar.paper.hub: `needed` assets, those in `missing` not fetched."""
    hub = types.ModuleType("coar.paper.hub")
    hub.needed = lambda plan: list(needed)
    hub.manifest_path = lambda name: f"data/weights/{name}.json"
    hub.cached_architecture = lambda model: None
    hub.status = lambda name: ((False, f"published weights {name}: not fetched. Fetch them: `snakemake --cores 1 "
                                       f"data/weights/{name}.json`") if name in missing else (True, f"verified in /x/{name}"))
    import coar.paper

    monkeypatch.setitem(sys.modules, "coar.paper.hub", hub)
    monkeypatch.setattr(coar.paper, "hub", hub, raising=False)
    return hub


def failed(report):
    return [c for c in report.checks if not c.ok]


def test_a_verified_site_passes(site):
    report = preflight.run(DEFAULT, calibrate=False)
    assert report.ok and report.exit_status == 0, report.check_table()
    kinds = {c.check for c in report.checks}
    assert {"data", "weights", "GPU", "disk"} <= kinds
    assert {c.item for c in report.checks if c.check == "data"} == {"fashion-mnist", "os-text"}
    # the whole preset: 353 jobs (docs/results.md: 354 with `all`), Fig. 2 alone 62
    assert report.total.jobs == 353 and report.cost("fig2").jobs == 62
    assert report.cost("fig2").seconds < report.total.seconds


def test_missing_data_fails_naming_the_source(site):
    (site / "data" / "datasets" / "os-text.json").unlink()
    report = preflight.run(DEFAULT, calibrate=False, figures=False)
    bad = failed(report)
    assert report.exit_status == 1 and [(c.check, c.item) for c in bad] == [("data", "os-text")]
    assert "snakemake --cores 1 data/datasets/os-text.json" in bad[0].detail


def test_missing_weights_fail_naming_the_asset(site, monkeypatch):
    fake_hub(monkeypatch, needed=["resnet50", "gpt2"], missing=["gpt2"])
    report = preflight.run(DEFAULT, calibrate=False, figures=False)
    bad = failed(report)
    assert report.exit_status == 1 and [(c.check, c.item) for c in bad] == [("weights", "gpt2")]
    assert "data/weights/gpt2.json" in bad[0].detail
    assert any(c.check == "weights" and c.item == "resnet50" and c.ok for c in report.checks)


def test_real_hub_names_what_the_paper_setups_need(tmp_path, monkeypatch):
    """Against coar.paper.hub itself (skipped while it does not exist): a plan of the paper preset needs ResNet-50's
    and ViT-B/16's weights for Fig. 2, and an empty site has neither, each failing with the command that fetches
    it."""
    hub = pytest.importorskip("coar.paper.hub")
    monkeypatch.chdir(tmp_path)
    plan = preflight.load_plan([ROOT / "config" / "paper.yaml"])
    jobs = [Job("model", i, {"setup": s}, [], [f"results/{s}/model.pt"], False) for i, s in enumerate("ABC")]
    rows = preflight.check_weights(plan, jobs)
    fig2 = plan.__class__({**plan.config, "setups": {s: plan.setups[s] for s in "ABC"}})
    assert sorted(c.item for c in rows) == sorted(hub.needed(fig2))
    assert {"resnet50", "vit_b_16"} <= {c.item for c in rows} and not any(c.ok for c in rows)
    assert all(hub.manifest_path(c.item) in c.detail for c in rows)


def test_too_little_disk_fails_saying_how_much(site, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(total=10 ** 9, used=10 ** 9, free=1000))
    report = preflight.run(DEFAULT, calibrate=False, figures=False)
    bad = failed(report)
    assert report.exit_status == 1 and [c.check for c in bad] == ["disk"]
    assert "1000 B free" in bad[0].detail and "free " in bad[0].detail.split(":")[-1]


@pytest.fixture(scope="module")
def bf16_config(tmp_path_factory):
    """The default preset with setup B's forward passes in bfloat16, which asks for a GPU."""
    config = yaml.safe_load(DEFAULT.read_text())
    config["setups"]["B"]["precision"] = "bfloat16"
    path = tmp_path_factory.mktemp("config") / "bf16.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_no_gpu_for_a_gpu_setup_fails_naming_it(site, bf16_config):
    report = preflight.run(bf16_config, targets=["figures/fig2.pdf"], calibrate=False, figures=False)
    bad = failed(report)
    assert report.exit_status == 1 and [c.check for c in bad] == ["GPU"]
    assert "setups B need a GPU" in bad[0].detail and "sample_shard" in bad[0].detail


def test_login_node_defers_the_gpu_check_to_the_partition(site, bf16_config, monkeypatch):
    monkeypatch.setenv("SBATCH_ACCOUNT", "acct")
    monkeypatch.setenv("SBATCH_PARTITION", "cpu")
    monkeypatch.setenv("COAR_GPU_PARTITION", "gpu")
    monkeypatch.setattr(preflight, "_sinfo", lambda args: (True, "gpu:h100:4\n" if "%G" in args else
                                                           "cpu* 2-00:00:00\ngpu 3-00:00:00\n"))
    monkeypatch.setattr(preflight, "_have_sinfo", lambda: True)
    report = preflight.run(bf16_config, profile=PROFILE, targets=["figures/fig2.pdf"], calibrate=False,
                           login_node=True, figures=False)
    gpu = [c for c in report.checks if c.check == "GPU"]
    assert report.ok and len(gpu) == 1 and gpu[0].item == "gpu", report.check_table()
    assert "gpu:h100:4" in gpu[0].detail and "B " in gpu[0].detail and "hold every" in gpu[0].detail
    assert {c.item for c in report.checks if c.check == "profile"} == {"cpu", "gpu"}


def test_partition_gpus_too_small_for_a_need_fail(monkeypatch):
    """Setup C of the paper preset: its fit's regression arrays (105.6 GiB, docs/benchmarks.md) fit an H200, not an
    H100: a partition of H100s fails naming C, one with both says to ask for the H200 there."""
    plan = preflight.load_plan([ROOT / "config" / "paper.yaml"])
    costing = preflight.Costing(plan, preflight.Rates(False, False), gpus=True)
    needs = [preflight.gpu_need(costing, s) for s in ("A", "C")]
    assert needs[1].what == "fit" and round(needs[1].bytes / 2 ** 30, 1) == 105.6
    monkeypatch.setattr(preflight, "_have_sinfo", lambda: True)
    monkeypatch.setattr(preflight, "_sinfo", lambda args: (True, "gpu:h100:4(S:0-1)\n"))
    row = preflight.deferred_gpu_check(needs, "gpu", "")
    assert not row.ok and "C needs 106 GiB" in row.detail and "A needs" not in row.detail
    monkeypatch.setattr(preflight, "_sinfo", lambda args: (True, "gpu:h100:4\ngpu:h200:8\n"))
    row = preflight.deferred_gpu_check(needs, "gpu", "")
    assert row.ok and "C (106 GiB) only on h200" in row.detail


def test_profile_names_an_unset_gpu_partition(site, monkeypatch):
    monkeypatch.setenv("SBATCH_ACCOUNT", "acct")
    monkeypatch.setenv("SBATCH_PARTITION", "cpu")
    monkeypatch.delenv("COAR_GPU_PARTITION", raising=False)
    monkeypatch.setattr(preflight, "_have_sinfo", lambda: False)
    report = preflight.run(DEFAULT, profile=PROFILE, calibrate=False, figures=False)
    bad = failed(report)
    assert report.exit_status == 1 and {c.check for c in bad} == {"profile"}
    assert any(c.item == "$COAR_GPU_PARTITION" and "export COAR_GPU_PARTITION=" in c.detail for c in bad)
    cpu = [c for c in report.checks if c.item == "cpu"]
    assert len(cpu) == 1 and cpu[0].ok and "sinfo not found" in cpu[0].detail


def test_profile_time_limit_shorter_than_a_rule_fails(site, monkeypatch):
    monkeypatch.setenv("SBATCH_ACCOUNT", "acct")
    monkeypatch.setenv("SBATCH_PARTITION", "cpu")
    monkeypatch.setenv("COAR_GPU_PARTITION", "gpu")
    monkeypatch.setattr(preflight, "_have_sinfo", lambda: True)
    monkeypatch.setattr(preflight, "_sinfo", lambda args: (True, "cpu* 1-00:00:00\ngpu 12:00:00\n"))
    rows = preflight.check_profile(preflight.read_profile(PROFILE), preflight.planned_jobs([str(DEFAULT)], [
        "figures/fig2.pdf"]))
    by = {c.item: c for c in rows}
    assert by["cpu"].ok and not by["gpu"].ok
    # the GPU partition's 12 h is shorter than the baseline rule's 24 h (1440 min) in the profile
    assert "baseline" in by["gpu"].detail and "1440" in by["gpu"].detail
    monkeypatch.setattr(preflight, "_sinfo", lambda args: (True, "cpu 1-00:00:00\n"))
    by = {c.item: c for c in preflight.check_profile(preflight.read_profile(PROFILE), preflight.planned_jobs(
        [str(DEFAULT)], ["figures/fig2.pdf"]))}
    assert not by["gpu"].ok and "no partition 'gpu'" in by["gpu"].detail


def test_forward_passes_are_the_plans_masks_times_examples(site):
    """Fig. 2 of the default preset: each setup's sampled rows are (training masks + evaluation masks at each
    alpha_test) x examples, counted here from the config file itself."""
    raw = yaml.safe_load(DEFAULT.read_text())["setups"]
    report = preflight.run(DEFAULT, targets=["figures/fig2.pdf"], calibrate=False)
    expected = {}
    for s in ("A", "B", "C"):
        v = raw[s]
        expected[s] = (v["masks"] + len(v["alpha_test"]) * v["test_masks"]) * v["examples"]["n"]
        assert report.cost(s).sampling_rows == expected[s], s
    assert report.cost("fig2").sampling_rows == sum(expected.values()) == report.total.sampling_rows
    # stores: bool masks (m x C) and float32 outputs (m x N) at least
    assert report.total.store_bytes > sum(expected.values()) * 4
    assert report.total.wall_seconds <= report.total.seconds


def test_cost_plan_is_within_2x_of_the_measured_default_run(site):
    """docs/results.md: the whole default preset took 18 min 32 s on the 2-core VM, Fig. 2 alone 3 min 19 s. At
    the rates docs/benchmarks.md records and two jobs at a time, the estimates are within 2x."""
    report = preflight.run(DEFAULT, calibrate=False, slots=2)
    assert 0.5 < report.total.wall_seconds / (18 * 60 + 32) < 2
    assert 0.5 < report.cost("fig2").wall_seconds / (3 * 60 + 19) < 2


def test_schedule_respects_dependencies_and_slots():
    jobs = [Job("a", 1, {}, [], ["a"], False), Job("b", 2, {}, ["a"], ["b"], False),
            Job("c", 3, {}, ["a"], ["c"], False), Job("d", 4, {}, ["b", "c"], ["d"], False)]
    secs = {1: 1.0, 2: 5.0, 3: 3.0, 4: 1.0}
    assert preflight.schedule(jobs, secs, 1) == 10.0
    assert preflight.schedule(jobs, secs, 2) == 7.0  # a, then b and c side by side, then d
    assert [j.jobid for j in preflight.closure(jobs, "b")] == [1, 2]


def test_calibration_times_the_engine_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(preflight, "CALIBRATION_SECONDS", 0.03)
    shape = Shape("resnet_tiny", None, 10, 1, 28, None, "float32")
    real = preflight.calibrate_sampling(shape, 16, "cpu")
    assert real["rows_per_s"] > 0 and real["rows"] >= 32 and real["setup_s"] >= 0
    calls = []

    def fake(shape, n, device):
        calls.append(n)
        return {"rows_per_s": 1234.0, "setup_s": 0.01}

    monkeypatch.setattr(preflight, "calibrate_sampling", fake)
    monkeypatch.setattr(preflight, "calibrate_training", lambda shape, spec, device: {"train_per_s": 99.0,
                                                                                      "train_unit": "img/s"})
    spec = preflight.load_plan([DEFAULT]).setups["A"]
    first = preflight.Rates(True, False).get(spec, 200, "cpu")
    again = preflight.Rates(True, False).get(spec, 200, "cpu")
    assert calls == [200] and first["rows_per_s"] == again["rows_per_s"] == 1234.0
    assert first["source"].startswith("calibrated on cpu") and again["source"].endswith("cached")
    assert json.loads((tmp_path / "coar" / "preflight-rates.json").read_text())


def test_reference_rates_name_their_source():
    plan = preflight.load_plan([ROOT / "config" / "paper.yaml"])
    rates = preflight.Rates(False, False)
    b = rates.get(plan.setups["B"], 50000, "cuda")
    assert b["rows_per_s"] == pytest.approx(8691.0 * preflight.FLOAT32_FRACTION) and "H200" in b["source"]
    a = rates.get(preflight.load_plan([DEFAULT]).setups["A"], 200, "cpu")
    assert a["rows_per_s"] == 18604.0 and "docs/benchmarks.md CPU table" in a["source"]


def test_cli_exit_status_and_json(site, capsys, tmp_path):
    out = tmp_path / "report.json"
    assert cli.main(["preflight", "--configfile", str(DEFAULT), "--no-calibrate", "--target", "figures/fig2.pdf",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Cost plan" in printed and "fig2" in printed
    assert json.loads(out.read_text())["ok"] is True
    (site / "data" / "datasets" / "fashion-mnist.json").unlink()
    with pytest.raises(SystemExit) as info:
        cli.main(["preflight", "--configfile", str(DEFAULT), "--no-calibrate", "--target", "figures/fig2.pdf"])
    assert info.value.code == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["--configfile", "nope.yaml"], ["--configfile", "nope.yaml: no such file"]),
    (["--configfile", str(DEFAULT), "--target", "figures/fig99.pdf"], ["--target", "figures 2 to 27 only"]),
    (["--configfile", str(DEFAULT), "--target", "figures/fig7.pdf"], ["--target", "figures.fig7"]),
    (["--configfile", str(DEFAULT), "--profile", "no/such/profile"], ["--profile", "no/such/profile"]),
])
def test_bad_arguments_get_one_line(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["preflight", "--no-calibrate", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coar preflight: error: ") and len(err.strip().splitlines()) == 1, err
    assert all(w in err for w in words) and "Traceback" not in err


def test_each_visible_gpu_is_checked_against_the_needs(site, bf16_config, monkeypatch):
    import torch

    props = types.SimpleNamespace(name="Tiny GPU", total_memory=2 * 1024 ** 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: props.name)
    report = preflight.run(bf16_config, targets=["figures/fig2.pdf"], calibrate=False, figures=False)
    gpu = [c for c in report.checks if c.check == "GPU"]
    assert [c.item for c in gpu] == ["cuda:0"] and not gpu[0].ok
    assert "B needs" in gpu[0].detail and "rows a pass fit" in gpu[0].detail
    props.total_memory = 80 * 1024 ** 3
    report = preflight.run(bf16_config, targets=["figures/fig2.pdf"], calibrate=False, figures=False)
    assert report.ok, report.check_table()


def test_the_workflow_rule_writes_the_report_and_fails_with_a_check(site):
    """rules/preflight.smk's body: the report goes to the log; a failed check fails the job."""
    log = site / "logs" / "preflight.log"
    preflight.workflow_preflight([str(DEFAULT)], str(log), calibrate=False)
    assert "5 of 5 checks ok" in log.read_text() and "Cost plan" in log.read_text()
    (site / "data" / "datasets" / "os-text.json").unlink()
    with pytest.raises(preflight.CoarError, match="a check failed"):
        preflight.workflow_preflight([str(DEFAULT)], str(log), calibrate=False)
    assert "FAIL" in log.read_text()
    assert "rule preflight:" in (ROOT / "rules" / "preflight.smk").read_text()
    assert 'include: "rules/preflight.smk"' in (ROOT / "Snakefile").read_text()
