"""The warm job server (coar.paper.jobserver): a job handed to it runs the same script in a forked child with
the job's environment, directory, arguments and file descriptors, and exits as the job would have; signals
reach the child, a killed job takes its child with it, and the job runs on its own whenever the server
cannot take it."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from coar.paper import jobserver

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sm = snakemake  # noqa: F821
    from coar.paper import jobserver
    if not jobserver.in_child():
        jobserver.hand_off(sm, __file__)
    print("stdout of", sm["name"], flush=True)
    print("stderr of", sm["name"], file=sys.stderr, flush=True)
    with open(sm["out"], "w") as f:
        json.dump({"child": jobserver.in_child(), "pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv[1:],
                   "env": os.environ.get("JOB_VALUE"), "torch": "torch" in sys.modules, "name": sm["name"],
                   "umask": os.umask(0o022)}, f)
    if sm["name"] == "fail":
        raise ValueError("the job's own error")
    if sm["name"] == "exit3":
        sys.exit(3)
    if sm["name"] == "sleep":
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            open(sm["out"] + ".interrupted", "w").close()
            sys.exit(130)
""")
# what Snakemake's preamble does: the `snakemake` object in the script's globals, the script run as __main__
LAUNCH = "import runpy, sys; runpy.run_path(sys.argv[1], init_globals={'snakemake': eval(sys.argv[2])}, run_name='__main__')"


@pytest.fixture
def world(tmp_path, monkeypatch):
    d = tmp_path / "servers"
    env = {k: v for k, v in os.environ.items() if k not in ("COAR_JOB_SERVER", "SLURM_JOB_ID")}
    env.update(COAR_JOB_SERVER_DIR=str(d), COAR_JOB_SERVER_IDLE="30", PYTHONPATH=str(ROOT / "src"))
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    work = tmp_path / "work"
    work.mkdir()
    if not jobserver.wanted() and os.environ.get("COAR_JOB_SERVER", "1") not in ("0", "off", "no", "false"):
        pytest.skip("the job server is not used on this machine (GPU device files or SLURM)")
    yield env, script, work, d
    for log in d.glob("*.log"):  # stop the servers this test started (they would idle out anyway)
        out = subprocess.run(["pgrep", "-f", log.stem], capture_output=True, text=True).stdout.split()
        for pid in out:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def launch(env, script, work, name, *argv, value="x", wait=True, **kw):
    sm = {"name": name, "out": str(work / f"{name}.json")}
    cmd = [sys.executable, "-c", LAUNCH, str(script), repr(sm), *argv]
    e = dict(env, JOB_VALUE=value)
    if not wait:
        return subprocess.Popen(cmd, cwd=work, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    return subprocess.run(cmd, cwd=work, env=e, capture_output=True, text=True, timeout=120)


def warm(env, script, work, d):
    """Run one job (it starts the server and runs on its own), then wait until the server listens."""
    import json

    r = launch(env, script, work, "first")
    assert r.returncode == 0, r.stderr
    assert json.loads((work / "first.json").read_text())["child"] is False
    for _ in range(600):
        if any("serving" in log.read_text() for log in d.glob("*.log")):
            return
        time.sleep(0.1)
    raise AssertionError("no server: " + " ".join(p.read_text() for p in d.glob("*.log")))


def result(work, name):
    import json

    return json.loads((work / f"{name}.json").read_text())


def test_a_job_runs_in_a_forked_child_as_it_would_on_its_own(world):
    env, script, work, d = world
    warm(env, script, work, d)
    r = launch(env, script, work, "ok", "--flag", "a b", value="seen")
    assert r.returncode == 0, r.stderr
    got = result(work, "ok")
    assert got["child"] is True and got["torch"] is True  # forked from the process that imported torch
    assert got["cwd"] == str(work) and got["argv"][-2:] == ["--flag", "a b"]
    assert got["env"] == "seen" and got["umask"] == 0o022
    assert r.stdout == "stdout of ok\n" and r.stderr == "stderr of ok\n"  # the job's own descriptors
    # the same job with the server turned off runs in its own process and writes the same
    off = launch(dict(env, COAR_JOB_SERVER="0"), script, work, "ok", "--flag", "a b", value="seen")
    assert off.returncode == 0 and result(work, "ok")["child"] is False
    assert {k: v for k, v in result(work, "ok").items() if k not in ("child", "pid", "torch")} == \
           {k: v for k, v in got.items() if k not in ("child", "pid", "torch")}


def test_exit_status_and_errors_are_the_jobs(world):
    env, script, work, d = world
    warm(env, script, work, d)
    r = launch(env, script, work, "exit3")
    assert r.returncode == 3 and result(work, "exit3")["child"] is True
    r = launch(env, script, work, "fail")
    assert r.returncode == 1 and result(work, "fail")["child"] is True
    assert "ValueError: the job's own error" in r.stderr


def test_ctrl_c_reaches_the_child_and_a_killed_job_takes_its_child_with_it(world):
    env, script, work, d = world
    warm(env, script, work, d)
    job = launch(env, script, work, "sleep", wait=False)
    for _ in range(300):
        if (work / "sleep.json").exists() and (work / "sleep.json").stat().st_size:
            break
        time.sleep(0.05)
    child = result(work, "sleep")["pid"]
    assert result(work, "sleep")["child"] is True and child != job.pid
    job.send_signal(signal.SIGINT)
    assert job.wait(timeout=30) == 130 and (work / "sleep.json.interrupted").exists()  # the job saved its work

    (work / "sleep.json").unlink()
    job = launch(env, script, work, "sleep", wait=False)
    for _ in range(300):
        if (work / "sleep.json").exists() and (work / "sleep.json").stat().st_size:
            break
        time.sleep(0.05)
    child = result(work, "sleep")["pid"]
    job.kill()  # SIGKILL: no chance to forward anything
    job.wait(timeout=30)
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the child {child} outlived its killed job")


def test_the_job_runs_on_its_own_when_no_server_can_take_it(world, tmp_path):
    env, script, work, d = world
    r = launch(dict(env, COAR_JOB_SERVER="off"), script, work, "off")
    assert r.returncode == 0 and result(work, "off")["child"] is False and not d.exists()
    r = launch(dict(env, SLURM_JOB_ID="7"), script, work, "slurm")
    assert r.returncode == 0 and result(work, "slurm")["child"] is False and not d.exists()
    # a directory another user could write to is refused: the job runs on its own
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    r = launch(dict(env, COAR_JOB_SERVER_DIR=str(shared)), script, work, "shared")
    assert r.returncode == 0 and result(work, "shared")["child"] is False and not list(shared.iterdir())
    # a socket left by a killed server: refused connection, the job runs on its own and a new server starts
    d.mkdir(mode=0o700)
    key = subprocess.run([sys.executable, "-c", "from coar.paper.jobserver import key; print(key())"], env=env,
                         capture_output=True, text=True, cwd=work).stdout.strip()
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(d / f"{key}.sock"))
    stale.close()
    warm(env, script, work, d)
    r = launch(env, script, work, "after")
    assert r.returncode == 0 and result(work, "after")["child"] is True


def test_the_key_follows_the_import_environment_and_the_code(tmp_path, monkeypatch):
    base = jobserver.key({})
    assert jobserver.key({"OMP_NUM_THREADS": "2"}) != base and jobserver.key({"COAR_X": "1"}) == base
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    import hashlib

    def stamp():
        h = hashlib.sha256()
        jobserver._tree_stamp(str(pkg), h)
        return h.hexdigest()

    before = stamp()
    (pkg / "a.py").write_text("x = 22\n")
    assert stamp() != before  # an edited source file: another server


def test_a_server_exits_when_idle_and_removes_its_socket(tmp_path):
    d = tmp_path / "servers"
    d.mkdir(mode=0o700)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    key = subprocess.run([sys.executable, "-c", "from coar.paper.jobserver import key; print(key())"], env=env,
                         capture_output=True, text=True).stdout.strip()
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "coar.paper.jobserver", "serve", str(d), key, "0.5"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "served 0 jobs" in r.stdout, r.stdout + r.stderr
    assert not (d / f"{key}.sock").exists() and time.monotonic() - t < 60
    wrong = subprocess.run([sys.executable, "-m", "coar.paper.jobserver", "serve", str(d), "0" * 20, "0.5"], env=env,
                           capture_output=True, text=True, timeout=120)  # a key this process does not match
    assert wrong.returncode == 1 and (d / f"{'0' * 20}.refused").exists()
