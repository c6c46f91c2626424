"""The SLURM profile (workflow/profiles/slurm) on a real single-node SLURM cluster: munged, slurmctld and
slurmd started by the test on private ports (workflow/slurm/*.in), the test preset's Fig. 2 run with
`--workflow-profile workflow/profiles/slurm`, and SLURM's own records checked: every job of the plan was
submitted with sbatch, ran to completion, and got the account, partition and GPU the profile asks for.

SLURM comes from the Debian/Ubuntu packages: workflow/slurm/install-slurm.sh, which CI runs, and which the
test runs when SLURM is missing and it is root with apt-get. Without root or apt-get, or when the daemons do
not start, the test skips and names the reason; in CI (CI=true, as root) it fails instead. It stops every
daemon it started and every process of its jobs, also when it fails."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import json
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from coar.paper.data.fashion_mnist import find_fashion_mnist

from tests.helpers import (KILL_MASKS, KILL_RECEIPT, SLOW_SHARD, job_counts, processes, rows_done,
                           wait_for_rows, write_kill_config)

ROOT = Path(__file__).resolve().parents[1]
SLURM_FILES = ROOT / "workflow/slurm"
PROFILE = ROOT / "workflow/profiles/slurm"
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes") and IS_ROOT
TARGET = "figures/fig2.pdf"  # the test preset's Fig. 2 chain: 18 jobs, every GPU rule but the edits
GPU_RULES = {"model", "sample_shard", "baseline", "fit", "edit_single", "edit_forget", "edit_backdoor"}

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed"),
    pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available"),
]


def _unavailable(reason):
    """Skip, naming the reason; in CI, fail instead (there the test must run)."""
    if IN_CI:
        pytest.fail(f"SLURM test must run in CI (CI=true, root): {reason}")
    pytest.skip(reason)


def _missing():
    return [c for c in COMMANDS if shutil.which(c, path=SEARCH_PATH) is None]


def _slurm_commands():
    """{name: path} of the SLURM and munge commands, installing them with apt-get where that is allowed."""
    missing = _missing()
    if not IS_ROOT:  # slurmd must run as root, and the packages are installed as root
        _unavailable("starting a SLURM cluster needs root (slurmd)"
                     + (f"; SLURM is not installed ({', '.join(missing)} missing)" if missing else ""))
    if missing:
        if shutil.which("apt-get") is None:
            _unavailable(f"SLURM is not installed ({', '.join(missing)} missing) and cannot be installed here "
                         "(no apt-get): see workflow/slurm/install-slurm.sh")
        r = subprocess.run(["bash", str(SLURM_FILES / "install-slurm.sh")], capture_output=True, text=True,
                           timeout=600)
        missing = _missing()
        if r.returncode != 0 or missing:
            _unavailable(f"installing SLURM failed (rc {r.returncode}, missing: {', '.join(missing) or 'none'}):\n"
                         f"{(r.stdout + r.stderr)[-3000:]}")
    return {c: shutil.which(c, path=SEARCH_PATH) for c in COMMANDS}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, n=3000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no file)"


def _stepd_pids():
    """Process ids of slurmstepd processes (slurmd's job step managers) now running."""
    return {pid for pid, (name, _, _, _) in processes().items() if name == "slurmstepd"}


class Cluster:
    def __init__(self, cmd, state, env):
        self.cmd, self.state, self.env = cmd, state, env

    def run(self, *args, timeout=30):
        return subprocess.run([self.cmd[args[0]], *args[1:]], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def logs(self):
        return "".join(f"\n--- {name} ---\n{_tail(self.state / name)}"
                       for name in ("munged.out", "slurmctld.log", "slurmctld.out", "slurmd.log", "slurmd.out"))


@pytest.fixture(scope="module")
def slurm():
    """A running single-node cluster, shared by this module's tests; stopped afterwards (jobs cancelled, then
    slurmd, slurmctld, munged)."""
    cmd = _slurm_commands()
    # a short path: munge's socket path must fit in a sockaddr_un (108 bytes)
    state = Path(tempfile.mkdtemp(prefix="coar-slurm-"))
    host = socket.gethostname().split(".")[0]
    fields = {"@HOST@": host, "@STATE@": str(state), "@CTLD_PORT@": str(_free_port()),
              "@SLURMD_PORT@": str(_free_port()), "@MUNGE_SOCKET@": str(state / "munge.socket")}
    for name in ("slurm.conf", "gres.conf"):  # slurmd reads gres.conf from slurm.conf's directory
        text = (SLURM_FILES / f"{name}.in").read_text()
        for key, value in fields.items():
            text = text.replace(key, value)
        (state / name).write_text(text)
    for d in ("ctld", "slurmd"):
        (state / d).mkdir()
    key = state / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    state.chmod(0o755)  # munged's socket directory: searchable by all
    # The commands find this cluster through SLURM_CONF. Inside a job, the plugin's job step clears every
    # SLURM_* variable but the job's identity before it calls srun, so that srun would look for
    # /etc/slurm/slurm.conf: a wrapper first on PATH hands it SLURM_CONF (nothing outside `state` changes).
    (state / "bin").mkdir()
    wrapper = state / "bin/srun"
    wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={state / "slurm.conf"} exec {cmd["srun"]} "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ, SLURM_CONF=str(state / "slurm.conf"),
               PATH=os.pathsep.join([str(state / "bin"), os.environ.get("PATH", "")]))
    env.pop("SLURM_JOB_ID", None)
    cluster = Cluster(cmd, state, env)
    stepd_before = _stepd_pids()
    daemons = []

    def start(name, *args):
        out = open(state / f"{name}.out", "w")
        daemons.append(subprocess.Popen([cmd[name], *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL))
        out.close()

    try:
        t0 = time.monotonic()
        start("munged", "--foreground", "--force", f"--key-file={key}", f"--socket={state / 'munge.socket'}",
              f"--pid-file={state / 'munged.pid'}", f"--log-file={state / 'munged.log'}",
              f"--seed-file={state / 'munged.seed'}")
        while not (state / "munge.socket").exists():
            if daemons[0].poll() is not None or time.monotonic() - t0 > 20:
                _unavailable(f"munged did not start{cluster.logs()}")
            time.sleep(0.1)
        start("slurmctld", "-D", "-f", str(state / "slurm.conf"))
        start("slurmd", "-D", "-f", str(state / "slurm.conf"), "-N", host)
        while True:  # up when the node is idle
            r = cluster.run("sinfo", "-h", "-N", "-o", "%T")
            if r.returncode == 0 and r.stdout.split() and all(s == "idle" for s in r.stdout.split()):
                break
            dead = [p.args[0] for p in daemons if p.poll() is not None]
            if dead or time.monotonic() - t0 > 60:
                _unavailable(f"SLURM did not start ({'exited: ' + ', '.join(dead) if dead else 'node not idle'}, "
                             f"sinfo: {r.stdout.strip()} {r.stderr.strip()}){cluster.logs()}")
            time.sleep(0.5)
        cluster.startup_s = time.monotonic() - t0
        yield cluster
    finally:
        conf = env["SLURM_CONF"]
        daemon_pids = {p.pid for p in daemons}

        def leftovers():
            """This cluster's step managers and job processes (their environment names its slurm.conf), not
            the daemons and their helpers (slurmctld's slurmscriptd)."""
            needle = f"\0SLURM_CONF={conf}\0".encode()
            return {pid for pid, (name, ppid, _, environ) in processes().items()
                    if pid not in daemon_pids and ppid not in daemon_pids and pid != os.getpid()
                    and ((name == "slurmstepd" and pid not in stepd_before) or needle in environ)}

        if len(daemons) == 3 and all(p.poll() is None for p in daemons):
            # after a failure: cancel what is still queued or running, and let the steps end their processes
            # (SIGTERM, then SIGKILL after KillWait)
            ids = cluster.run("squeue", "-h", "-t", "PD,R,CG,S", "-o", "%A").stdout.split()
            if ids:
                cluster.run("scancel", *ids)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (leftovers() or cluster.run("squeue", "-h", "-t", "PD,R,CG,S").stdout.strip()):
                time.sleep(0.5)
        for p in reversed(daemons):  # slurmd, slurmctld, munged
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        for pid in leftovers():  # whatever outlived its step or slurmd
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(state, ignore_errors=True)


def _records(text: str) -> list:
    """`scontrol show job -o` or job completion log lines as dicts of their Key=Value fields."""
    return [dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)) for line in text.splitlines() if "JobId=" in line]


def _env(slurm):
    return dict(slurm.env, PYTHONUNBUFFERED="1", SBATCH_ACCOUNT="coar", SBATCH_PARTITION="cpu",
                COAR_GPU_PARTITION="gpu")


def _snakemake_args(profile, target, configfile, workdir):
    return [SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--workflow-profile", str(profile), target,
            f"--configfile={configfile}", "--directory", str(workdir),
            # this cluster has no accounting database (sacct): status from squeue, polled soon after submission
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
            "--slurm-keep-successful-logs"]


def _jobs(slurm, run_id):
    """slurmctld's records of this run's jobs (kept for MinJobAge), each with its rule (the plugin puts the
    rule in the job's comment)."""
    shown = slurm.run("scontrol", "--details", "--oneliner", "show", "job")
    assert shown.returncode == 0, shown.stderr
    jobs = [j for j in _records(shown.stdout) if j.get("JobName") == run_id]
    for j in jobs:
        j["rule"] = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", j["Comment"]).group(1)
    return jobs


def test_slurm_profile_runs_fig2_through_sbatch(slurm, tmp_path):
    t0 = time.monotonic()
    env = _env(slurm)
    args = _snakemake_args(PROFILE, TARGET, ROOT / "config/test.yaml", tmp_path)
    plan = subprocess.run([*args, "-n"], env=env, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-4000:]
    planned = job_counts(plan.stdout + plan.stderr)
    planned.pop("total", None)
    assert planned["sample_shard"] == 4 and planned["baseline"] == 4 and planned["fig2"] == 1
    # the dataset job is a local rule: it runs on the submitting machine (internet access), never via sbatch
    assert planned.pop("dataset") == 1

    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=480)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:] + slurm.logs()
    assert (tmp_path / TARGET).read_bytes()[:4] == b"%PDF"
    assert (tmp_path / "data/datasets/fashion-mnist.json").is_file() and "localrule dataset:" in out
    run_id = re.search(r"SLURM run ID: (\S+)", out).group(1)
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", out))
    assert len(submitted) == sum(planned.values()), out[-4000:]

    # slurmctld's own record of every job (kept for MinJobAge): each submitted job, under this run's job
    # name, completed with exit code 0; one per planned job of each rule (the plugin puts the rule in the
    # job's comment); account, partition and GPUs as the profile says
    jobs = _jobs(slurm, run_id)
    assert {j["JobId"] for j in jobs} == submitted
    for j in jobs:
        assert j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0", j
        assert j["Account"] == "coar" and j["WorkDir"] == str(tmp_path), j
    rule = {j["JobId"]: j["rule"] for j in jobs}
    assert Counter(rule.values()) == Counter(planned)
    for j in jobs:  # TresPerJob: what sbatch asked for; JOB_GRES: what the job was given
        if rule[j["JobId"]] in GPU_RULES:
            assert j["Partition"] == "gpu" and j.get("TresPerJob") == "gres:gpu:1" and j.get("JOB_GRES") == "gpu:1", j
        else:
            assert j["Partition"] == "cpu" and "TresPerJob" not in j and j.get("JOB_GRES", "(null)") == "(null)", j
    # the job completion log (SLURM's record of every finished job) and slurmctld's log of sbatch's RPCs
    done = {j["JobId"]: j for j in _records((slurm.state / "jobcomp.txt").read_text())}
    assert all(done[i]["JobState"] == "COMPLETED" and done[i]["Name"] == run_id for i in submitted)
    ctld_log = (slurm.state / "slurmctld.log").read_text()
    assert submitted <= set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld_log))
    gpu_job = next(j for j in jobs if rule[j["JobId"]] == "sample_shard")
    print(f"\n[slurm] {len(submitted)} jobs through sbatch; cluster up in {slurm.startup_s:.1f} s, "
          f"plan + run {time.monotonic() - t0:.0f} s; e.g. " + " ".join(
              f"{k}={gpu_job.get(k)}" for k in ("JobId", "Comment", "JobState", "ExitCode", "Account", "Partition",
                                                "TresPerJob", "JOB_GRES")))


def test_shard_job_killed_mid_shard_is_retried_and_matches_a_local_run(slurm, tmp_path):
    """A running sample_shard job's sampling process killed with SIGKILL: SLURM records the job as failed, the profile's `retries` submits it again, the
    new job resumes from the rows the killed one finished, and the store ends bitwise identical to the same
    shard run locally without interruption."""
    t0 = time.monotonic()
    env = _env(slurm)
    config = write_kill_config(ROOT, tmp_path / "kill.yaml")
    profile = tmp_path / "profile"  # the real profile with slow sampling settings, so that there is a middle
    shutil.copytree(PROFILE, profile)
    settings = yaml.safe_load((profile / "config.yaml").read_text())
    settings["set-resources"]["sample_shard"].update(SLOW_SHARD)
    (profile / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    receipt = tmp_path / KILL_RECEIPT
    store = receipt.with_suffix("")

    with open(tmp_path / "slurm-run.out", "w") as out:
        run = subprocess.Popen(_snakemake_args(profile, KILL_RECEIPT, config, tmp_path), env=env, stdout=out,
                               stderr=subprocess.STDOUT)
        try:
            killed_after = wait_for_rows(store, lambda: run.poll() is None, KILL_MASKS // 10, timeout=300)
            running = slurm.run("squeue", "-h", "-t", "R", "-o", "%A %k").stdout.split("\n")
            shard_jobs = [line.split()[0] for line in running if "rule_sample_shard" in line]
            assert len(shard_jobs) == 1, running
            # the job's sampling process (the one running sample.py in the job's environment), as the kernel's
            # out-of-memory killer would end it
            needle = f"\0SLURM_JOB_ID={shard_jobs[0]}\0".encode()
            victims = [pid for pid, (_, _, cmdline, environ) in processes().items()
                       if b"sample.py" in cmdline and needle in environ]
            assert len(victims) == 1, victims
            os.kill(victims[0], signal.SIGKILL)
            rc = run.wait(timeout=400)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
    output = (tmp_path / "slurm-run.out").read_text(errors="replace")
    assert rc == 0, output[-6000:] + slurm.logs()

    # SLURM's records: the killed job failed, a second sample_shard job (the retry) completed
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    shard = sorted((j for j in _jobs(slurm, run_id) if j["rule"] == "sample_shard"), key=lambda j: int(j["JobId"]))
    assert [j["JobState"] for j in shard] == ["FAILED", "COMPLETED"], shard
    assert shard[0]["JobId"] == shard_jobs[0] and shard[1]["ExitCode"] == "0:0", shard
    done = {j["JobId"]: j for j in _records((slurm.state / "jobcomp.txt").read_text())}
    assert [done[j["JobId"]]["JobState"] for j in shard] == ["FAILED", "COMPLETED"]
    # the retry resumed from the rows the killed job had finished (its log is the retry's: Snakemake
    # deletes a job's log before it runs it)
    log = (tmp_path / "logs/K/masks/train/shard-000.log").read_text(errors="replace")
    resumed = int(re.search(rf"(\d+) of {KILL_MASKS} rows already done", log).group(1))
    assert killed_after <= resumed < KILL_MASKS, (killed_after, resumed)
    retried = json.loads(receipt.read_text())

    # the same shard, locally and uninterrupted, with the same settings
    store.rename(tmp_path / "killed-store")
    receipt.unlink()
    local = subprocess.run([SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), KILL_RECEIPT, "--cores", "2",
                            f"--configfile={config}", "--directory", str(tmp_path), "--set-resources",
                            *(f"sample_shard:{k}={v}" for k, v in SLOW_SHARD.items())],
                           env=dict(os.environ, PYTHONUNBUFFERED="1"), capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, (local.stdout + local.stderr)[-4000:]
    assert rows_done(store) == KILL_MASKS
    assert retried["checksums"]["files"] == json.loads(receipt.read_text())["checksums"]["files"]
    print(f"\n[slurm] shard job {shard[0]['JobId']} killed after >= {killed_after} rows, retried as "
          f"{shard[1]['JobId']}, resumed at row {resumed}; store identical to a local run "
          f"({time.monotonic() - t0:.0f} s)")
