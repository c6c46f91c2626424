"""Rehearse the paper preset before a cluster run: every job of config/paper.yaml, shrunk, on miniature data.

    python workflow/rehearsal/rehearse.py DIR [--config config/paper.yaml] [--cores N] [-- SNAKEMAKE_ARGS...]

1. makes the fixtures under DIR/fixtures: every data source in its real on-disk format (fixtures_data.py),
   published weights as local files with random values and the text data (fixtures_models.py); what a real
   run downloads (weights, Hugging Face repositories, TinyStories, the mirrored data files) is served by a
   server on 127.0.0.1 (hub_server.py) under the real URL paths, and the workflow's local rules fetch it from
   there into empty caches (DIR/caches) through the real download code, with its hash checks: first the
   `fetch` target alone, as on a cluster's login node (DIR/fetch.log); then the server is stopped, `coar
   preflight` checks the site (DIR/preflight.txt) and every other job runs with nothing left to download from;
2. derives the rehearsal preset from the paper config (preset.py) into DIR/rehearsal.yaml;
3. plans the paper config and the rehearsal, runs snakemake on the rehearsal in DIR/work (your results/ and
   data/ are not touched), and checks that every rule the paper config plans has executed;
4. prints the job-seconds per rule and writes DIR/report.json.

Fixtures are made once (DIR/fixtures/.complete marks them); a rerun resumes the workflow where it stopped.
Exit status: 0 when every planned rule ran and snakemake succeeded, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import preset  # noqa: E402


def _snakemake() -> str:
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
    if exe is None:
        sys.exit("rehearse: snakemake is not installed (pip install -e '.[dev]')")
    return exe


def make_fixtures(directory: Path) -> dict[str, str]:
    """The fixtures (once): the "published" files the local server (hub_server.py) serves, and the data sources
    placed by hand. Returns their folders."""
    done = directory / ".complete"
    if done.exists():
        made = json.loads(done.read_text())
        if "published_hf" in made:
            return made
    from fixtures_data import make_data
    from fixtures_models import make_models

    shutil.rmtree(directory, ignore_errors=True)  # a half-made tree from an interrupted run
    raw, mirror = directory / "data" / "raw", directory / "mirror"
    published_torch, published_hf = directory / "published" / "torch-home", directory / "published" / "hf-home"
    for d in (raw, mirror, published_torch, published_hf):
        d.mkdir(parents=True, exist_ok=True)
    start = time.time()
    # first: the ImageNet fixture is labelled with ResNet-50; TinyStories goes to the hub the server publishes
    make_models(published_torch, published_hf, raw, mirror, tinystories_cache=published_hf / "hub")
    make_data(raw, mirror, published_torch)
    print(f"[rehearse] fixtures made in {time.time() - start:.0f} s under {directory}", flush=True)
    made = {"published_hf": str(published_hf / "hub"), "published_torch": str(published_torch / "hub" / "checkpoints"),
            "mirror": str(mirror)}
    done.write_text(json.dumps(made, indent=1))
    return made


def environment(directory: Path, server) -> dict[str, str]:
    """The environment the workflow runs with: empty caches of its own (TORCH_HOME, HF_HOME), which the local
    rules fill through the real download code from the local server (HF_ENDPOINT, COAR_WEIGHTS_MIRROR,
    COAR_DATA_MIRROR); network access left on, as on a login node (the compute jobs turn it off themselves)."""
    drop = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HUB_CACHE",
            "HF_DATASETS_OFFLINE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    caches = directory / "caches"
    return {**env, "TORCH_HOME": str(caches / "torch-home"), "HF_HOME": str(caches / "hf-home"),
            "HF_HUB_CACHE": str(caches / "hf-home" / "hub"), "HF_HUB_DISABLE_TELEMETRY": "1",
            **server.environment(), "PYTHONUNBUFFERED": "1"}


def served(requests: list[str]) -> dict[str, int]:
    """Files downloaded from the local server (GET, status 200), counted by host stood in for."""
    out = {"huggingface": 0, "download.pytorch.org": 0, "data mirror": 0}
    for line in requests:
        method, path, status = line.split(" ")
        if method != "GET" or status != "200" or path.startswith("/api/") or path.endswith("SHA256SUMS"):
            continue
        host = ("download.pytorch.org" if path.startswith("/models/") else
                "data mirror" if path.startswith("/mirror/") else "huggingface")
        out[host] += 1
    return out


def planned_rules(config: Path, workdir: Path, env: dict) -> set[str]:
    """Rules of the full DAG of a config (every figure it builds), from a dry run in an empty directory."""
    workdir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([_snakemake(), "-n", "--snakefile", str(ROOT / "Snakefile"), f"--configfile={config}",
                        "--directory", str(workdir)], capture_output=True, text=True, env=env)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        sys.exit(f"rehearse: planning {config} failed:\n{out[-4000:]}")
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    rules = set()
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            rules.add(parts[0])
    return rules


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def job_times(log: str) -> dict[str, list[float]]:
    """Seconds of every finished job, by rule, from snakemake's log (its timestamp lines, a job's "rule X:"
    block with its jobid, and "Finished jobid: N")."""
    now, started, rule_of, times = None, {}, {}, {}
    current = None
    for line in log.splitlines():
        stamp = _STAMP.match(line.strip())
        if stamp:
            now = datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        m = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^jobid: (\d+)$", line.strip())
        if m and current is not None:
            started[m.group(1)], rule_of[m.group(1)] = now, current
            current = None
            continue
        m = re.match(r"^Finished jobid: (\d+)", line.strip())
        if m and m.group(1) in started and now is not None:
            j = m.group(1)
            times.setdefault(rule_of[j], []).append((now - started[j]).total_seconds())
    return times


def _run_snakemake(cfg_path: Path, d: Path, log_path: Path, env: dict, args, *targets: str):
    with open(log_path, "w") as fh:
        return subprocess.run([_snakemake(), *targets, "--snakefile", str(ROOT / "Snakefile"),
                               f"--configfile={cfg_path}", "--directory", str(d / "work"), "--cores", str(args.cores),
                               "--keep-going",
                               # the ILP scheduler runs a solver process after every finished job: on 2 cores its
                               # rounds took CPU time from the jobs of a run of a few hundred short jobs
                               "--scheduler", "greedy",
                               *args.snakemake_args], stdout=fh, stderr=subprocess.STDOUT, text=True, env=env)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", type=Path)
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    ap.add_argument("--cores", default="all")
    ap.add_argument("snakemake_args", nargs="*", help="more snakemake arguments (after --)")
    args = ap.parse_args(argv)
    d = args.directory.resolve()
    made = make_fixtures(d / "fixtures")
    import yaml
    from hub_server import Server

    cfg_path = d / "rehearsal.yaml"
    with open(args.config) as fh:
        derived = preset.derive(yaml.safe_load(fh), d / "fixtures")
    cfg_path.write_text(yaml.safe_dump(derived, sort_keys=False, width=120))
    (d / "server.log").unlink(missing_ok=True)
    start = time.time()
    # 1. the login node: every data source and published weight fetched from the (local) internet
    with Server(made["published_hf"], made["published_torch"], made["mirror"], d / "server.log") as server:
        env = environment(d, server)
        paper_rules = planned_rules(args.config.resolve(), d / "plan-paper", env)
        rehearsal_rules = planned_rules(cfg_path, d / "work", env)
        print(f"[rehearse] fetching on the 'login node' (log: {d / 'fetch.log'})", flush=True)
        fetch = _run_snakemake(cfg_path, d, d / "fetch.log", env, args, "fetch")
        requests = server.requests()
    # 2. the server is gone: nothing after this point can download. The preflight check, then every other job.
    pre = subprocess.run([sys.executable, "-m", "coar.cli", "preflight", "--configfile", str(cfg_path),
                          "--no-calibrate", "--json", str(d / "preflight.json")], cwd=d / "work", env=env,
                         capture_output=True, text=True)
    (d / "preflight.txt").write_text(pre.stdout + pre.stderr)
    print(f"[rehearse] coar preflight exit {pre.returncode} (DIR/preflight.txt); running the rehearsal in "
          f"{d / 'work'} (log: {d / 'snakemake.log'})", flush=True)
    r = _run_snakemake(cfg_path, d, d / "snakemake.log", env, args) if fetch.returncode == 0 else fetch
    wall = time.time() - start
    log = (d / "fetch.log").read_text() + "\n" + (d / "snakemake.log").read_text() if fetch.returncode == 0 \
        else (d / "fetch.log").read_text()
    times = job_times(log)
    ran = set(times)
    report = {"seconds": round(wall, 1), "returncode": r.returncode, "fetch_returncode": fetch.returncode,
              "preflight_returncode": pre.returncode, "paper_rules": sorted(paper_rules),
              "rehearsal_rules": sorted(rehearsal_rules), "executed_rules": sorted(ran),
              "not_executed": sorted(paper_rules - ran),
              "job_seconds": {k: round(sum(v), 1) for k, v in sorted(times.items(), key=lambda kv: -sum(kv[1]))},
              "jobs": {k: len(v) for k, v in times.items()}, "served": served(requests)}
    (d / "report.json").write_text(json.dumps(report, indent=1))
    print(f"[rehearse] snakemake exit {r.returncode} after {wall:.0f} s ({sum(report['jobs'].values())} jobs)")
    print("[rehearse] downloaded from the local server: "
          + ", ".join(f"{n} files as {host}" for host, n in report["served"].items()))
    print(f"{'rule':28s} {'jobs':>5s} {'job-seconds':>12s}")
    for rule, secs in report["job_seconds"].items():
        print(f"{rule:28s} {report['jobs'][rule]:5d} {secs:12.1f}")
    if paper_rules != rehearsal_rules:
        print(f"[rehearse] the rehearsal plans other rules than the paper config: only in the paper's "
              f"{sorted(paper_rules - rehearsal_rules)}, only in the rehearsal's {sorted(rehearsal_rules - paper_rules)}")
    if report["not_executed"]:
        print(f"[rehearse] rules of the paper config that did not execute: {report['not_executed']}")
    if pre.returncode != 0:
        print((pre.stdout + pre.stderr)[-4000:])
    if r.returncode != 0:
        print(log[-6000:])
    ok = r.returncode == 0 and not report["not_executed"] and paper_rules == rehearsal_rules and pre.returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
