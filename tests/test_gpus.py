"""Several GPUs on one machine: coar.gpus.claim gives concurrent processes distinct GPUs through flock'd lock
files (released when a process ends, crashes included), the workflow's jobs run on the GPU they claimed, and
coar.attribute / coar.evaluate split the masks over a list of devices with the attributions of one device."""
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import coar
from coar import gpus
from coar.engine import Engine
from coar.errors import ArgumentError, CoarError

ROOT = Path(__file__).resolve().parents[1]

# A child process that claims a GPU once the go file exists, prints its index and holds the claim until its stdin
# closes (argv: go file, device count, lock dir, wait seconds, claims).
HOLDER = """
import sys, time
from pathlib import Path
from coar import gpus
go, n, lock_dir, wait, claims = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
while not go.exists():
    time.sleep(0.002)
print(*[gpus.claim(n_devices=n, lock_dir=lock_dir, wait=wait) for _ in range(claims)], flush=True)
sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No GPU claims survive a test; no inherited CUDA_VISIBLE_DEVICES, SLURM job or lock-dir override."""
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", gpus.LOCK_DIR_ENV, gpus.WAIT_ENV):
        monkeypatch.delenv(name, raising=False)
    yield
    gpus.release()


def _holders(tmp_path, count, n=4, claims=1, wait=0.0, env=None):
    """`count` holder processes that claim at the same instant; returns (processes, claimed indices each)."""
    go = tmp_path / f"go-{time.monotonic_ns()}"
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, str(go), str(n), str(tmp_path / "locks"), str(wait),
                               str(claims)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **(env or {})}) for _ in range(count)]
    go.touch()
    return procs, [[int(k) for k in p.stdout.readline().split()] for p in procs]


def _end(procs):
    for p in procs:
        p.stdin.close()
        p.wait(timeout=30)


def _is_locked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ claiming
def test_concurrent_processes_claim_distinct_gpus_and_hold_them(tmp_path):
    procs, got = _holders(tmp_path, 4)
    try:
        assert sorted(k for ks in got for k in ks) == [0, 1, 2, 3]
        assert all(_is_locked(tmp_path / "locks" / f"gpu-{k}.lock") for k in range(4))
        text = {(tmp_path / "locks" / f"gpu-{ks[0]}.lock").read_text() for ks in got}
        assert text == {f"pid {p.pid} on {os.uname().nodename}\n" for p in procs}  # who holds it, for messages
    finally:
        _end(procs)


def test_a_process_that_ends_or_is_killed_frees_its_gpu(tmp_path):
    locks = tmp_path / "locks"
    procs, [[k]] = _holders(tmp_path, 1, n=2)
    assert k == 0 and gpus.claim(n_devices=2, lock_dir=locks, wait=0) == 1  # held: the next one is taken
    _end(procs)  # a normal exit
    gpus.release()
    assert not _is_locked(locks / "gpu-0.lock") and gpus.claim(n_devices=2, lock_dir=locks, wait=0) == 0
    gpus.release()

    procs, [[k]] = _holders(tmp_path, 1, n=2)
    assert k == 0 and _is_locked(locks / "gpu-0.lock")
    os.kill(procs[0].pid, signal.SIGKILL)  # no Python cleanup runs: the OS drops the lock with the process
    assert procs[0].wait(timeout=30) == -signal.SIGKILL
    assert not _is_locked(locks / "gpu-0.lock") and gpus.claim(n_devices=2, lock_dir=locks, wait=0) == 0


def test_release_gives_back_this_process_claims(tmp_path):
    assert [gpus.claim(n_devices=3, lock_dir=tmp_path, wait=0) for _ in range(3)] == [0, 1, 2]
    assert gpus.claimed() == [0, 1, 2]
    gpus.release(1)
    assert gpus.claimed() == [0, 2] and not _is_locked(tmp_path / "gpu-1.lock")
    assert gpus.claim(n_devices=3, lock_dir=tmp_path, wait=0) == 1


def test_cuda_visible_devices_are_the_candidates_indexed_among_themselves(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert gpus.claim(n_devices=2, lock_dir=tmp_path, wait=0) == 0  # cuda:0 of this process is GPU 5
    assert _is_locked(tmp_path / "gpu-5.lock") and not (tmp_path / "gpu-0.lock").exists()
    # another process that sees GPUs 5 and 7 the other way round finds GPU 5 taken: its cuda:0 (GPU 7) is free
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,5")
    assert gpus.claim(n_devices=2, lock_dir=tmp_path, wait=0) == 0 and _is_locked(tmp_path / "gpu-7.lock")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1f/x,3")  # UUIDs name the files too
    assert gpus.claim(n_devices=2, lock_dir=tmp_path, wait=0) == 0 and _is_locked(tmp_path / "gpu-GPU-8a1f_x.lock")
    assert gpus.visible(4) == ["GPU-8a1f/x", "3"]


@pytest.mark.parametrize("visible", ["3", "3,,4", "1,2"])
def test_one_visible_gpu_needs_no_lock(tmp_path, monkeypatch, visible):
    """SLURM hands a job its own GPU (CUDA_VISIBLE_DEVICES of one entry; CUDA reads up to an empty entry):
    there is nothing to choose, so nothing is locked; a process that sees one device of two likewise."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert [gpus.claim(n_devices=1 if visible == "1,2" else 2, lock_dir=tmp_path, wait=0) for _ in range(3)] == [0] * 3
    assert list(tmp_path.iterdir()) == [] and gpus.claimed() == []


def test_no_visible_gpu_is_an_error_naming_why(tmp_path, monkeypatch):
    with pytest.raises(CoarError, match="CUDA sees no device"):
        gpus.claim(n_devices=0, lock_dir=tmp_path)
    with pytest.raises(CoarError, match="n_devices"):
        gpus.claim(n_devices=-1, lock_dir=tmp_path)
    with pytest.raises(CoarError, match="wait"):
        gpus.claim(n_devices=2, lock_dir=tmp_path, wait=-1)
    monkeypatch.setenv(gpus.WAIT_ENV, "soon")
    with pytest.raises(CoarError, match=f"{gpus.WAIT_ENV} must be a number"):
        gpus.claim(n_devices=2, lock_dir=tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(CoarError, match="CUDA_VISIBLE_DEVICES=''"):
        gpus.claim(n_devices=4, lock_dir=tmp_path)


def test_the_lock_dir_is_per_user_under_tmp_overridable_and_per_slurm_job(tmp_path, monkeypatch):
    assert gpus.lock_dir() == Path(f"/tmp/coar-gpu-locks-{os.getuid()}")
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "shared"))
    assert gpus.lock_dir() == tmp_path / "shared"
    assert gpus.claim(n_devices=2, wait=0) == 0 and _is_locked(tmp_path / "shared" / "gpu-0.lock")
    assert gpus.lock_dir(tmp_path / "arg") == tmp_path / "arg"  # the argument comes first
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # SLURM numbers each job's own GPUs from 0: its own namespace
    assert gpus.lock_dir() == tmp_path / "shared" / "slurm-4242"
    assert gpus.claim(n_devices=2, wait=0) == 0 and _is_locked(tmp_path / "shared" / "slurm-4242" / "gpu-0.lock")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(gpus.LOCK_DIR_ENV, str(tmp_path / "file" / "locks"))
    with pytest.raises(CoarError, match=f"{gpus.LOCK_DIR_ENV}: cannot create"):
        gpus.claim(n_devices=2, wait=0)


def test_all_taken_shares_the_least_held_gpu_with_a_warning(tmp_path):
    assert [gpus.claim(n_devices=2, lock_dir=tmp_path, wait=0) for _ in range(2)] == [0, 1]
    shared = []
    for _ in range(3):
        with pytest.warns(RuntimeWarning, match="sharing cuda:"):
            shared.append(gpus.claim(n_devices=2, lock_dir=tmp_path, wait=0))
    assert shared == [0, 1, 0]  # always onto the GPU with the fewest holders
    assert all(_is_locked(tmp_path / name) for name in ("gpu-0.1.lock", "gpu-1.1.lock", "gpu-0.2.lock"))
    gpus.release(1)  # both holders of GPU 1 leave: it is free again, not shared
    assert gpus.claim(n_devices=2, lock_dir=tmp_path, wait=0) == 1


def test_all_taken_waits_then_shares(tmp_path):
    procs, _ = _holders(tmp_path, 1, n=2, claims=2)
    try:
        t = time.monotonic()
        with pytest.warns(RuntimeWarning) as caught:
            k = gpus.claim(n_devices=2, lock_dir=tmp_path / "locks", wait=0.6)
        assert time.monotonic() - t >= 0.6 and k == 0
        messages = [str(w.message) for w in caught]
        assert "waiting up to 0.6 s" in messages[0] and f"pid {procs[0].pid}" in messages[0]
        assert "sharing cuda:0 with 1 other process" in messages[-1]
    finally:
        _end(procs)


def test_all_taken_gets_the_gpu_freed_while_it_waits(tmp_path):
    procs, _ = _holders(tmp_path, 1, n=2, claims=2)
    ender = threading.Timer(0.5, _end, (procs,))
    ender.start()
    t = time.monotonic()
    with pytest.warns(RuntimeWarning, match="waiting up to 30 s") as caught:
        k = gpus.claim(n_devices=2, lock_dir=tmp_path / "locks", wait=30)
    ender.join()
    assert k == 0 and time.monotonic() - t < 20
    assert not any("sharing cuda:" in str(w.message) for w in caught)
    assert gpus.claimed() == [0] and _is_locked(tmp_path / "locks" / "gpu-0.lock")


# ------------------------------------------------------------------------------------------- workflow jobs
START = """
import sys, types, torch
import _job
_job.cuda_possible = lambda: True
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 4
current = []
torch.cuda.set_device = current.append
sm = types.SimpleNamespace(log=[sys.argv[1]], threads=1, resources={"gpu": int(sys.argv[2])})
device = _job.start(sm, torch=sys.argv[3] == "True")
sys.stdout = sys.__stdout__
print(device, current)
"""


@pytest.mark.parametrize("gpu, light, device", [(1, False, "cuda:2 [2]"), (1, True, "cuda:2 [2]"),
                                                (0, False, "cpu []"), (0, True, "cpu []")])
def test_a_gpu_job_starts_on_the_gpu_it_claims(tmp_path, gpu, light, device):
    """Under a faked 4-GPU CUDA, with GPUs 0 and 1 held by others, start() of a GPU rule returns "cuda:2" and makes
    it torch's current device; a rule without a GPU stays on the CPU and claims nothing."""
    locks = tmp_path / "locks"
    assert [gpus.claim(n_devices=4, lock_dir=locks, wait=0) for _ in range(2)] == [0, 1]
    r = subprocess.run([sys.executable, "-c", START, str(tmp_path / "job.log"), str(gpu), str(light)],
                       capture_output=True, text=True, cwd=ROOT / "workflow/scripts",
                       env={**os.environ, gpus.LOCK_DIR_ENV: str(locks)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == device
    assert sorted(p.name for p in locks.iterdir()) == ["gpu-0.lock", "gpu-1.lock"] + ["gpu-2.lock"] * gpu
    assert not _is_locked(locks / "gpu-2.lock") if gpu else True  # the job has ended: its GPU is free


# --------------------------------------------------------------------------------- attribute on several devices
RULES = [coar.Rule(r"0", ("Conv2d",)), coar.Rule(r"3", ("Linear",))]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.ReLU(),
                         nn.Linear(8, 3)).eval()


def _data(n=30):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


# 130 masks in shards of 50: blocks of 4 x masks_per_pass masks, spans of one block per device, short last ones
KW = dict(components=RULES, masks=130, alpha=0.25, masks_per_shard=50, batch_size=7, progress=False)


@pytest.mark.parametrize("mechanism, masks_per_pass", [("hooks", 3), ("weights", 1)])
def test_several_cpus_give_bitwise_the_single_device_attributions_using_every_device(tmp_path, monkeypatch,
                                                                                    mechanism, masks_per_pass):
    model, (x, y) = _model(), _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(KW, mechanism=mechanism, masks_per_pass=masks_per_pass)
    one = coar.attribute(model, x, y, device="cpu", **kw)
    calls, call = [], Engine.__call__

    def spy(self, keep, progress=False):
        calls.append((id(self), id(next(self.model.parameters())), threading.current_thread().name, len(keep)))
        return call(self, keep, progress)

    monkeypatch.setattr(Engine, "__call__", spy)
    two = coar.attribute(model, x, y, device=["cpu", "cpu"], **kw)
    assert np.array_equal(two.weights, one.weights) and np.array_equal(two.bias, one.bias)
    assert len({c[0] for c in calls}) == 2 and len({c[1] for c in calls}) == 2  # two engines, two model copies
    assert sum(c[3] for c in calls) == 130 and max(c[3] for c in calls) == 4 * masks_per_pass
    assert all(c[2].startswith("coar-device") for c in calls if c[3] == 4 * masks_per_pass)  # run in threads
    three = coar.attribute(model, x, y, device=("cpu", "cpu", torch.device("cpu")), store=tmp_path / "s", **kw)
    assert np.array_equal(three.weights, one.weights) and np.array_equal(three.bias, one.bias)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the caller's model is unchanged

    monkeypatch.setattr(Engine, "__call__", call)
    table = coar.evaluate(one, model, x, y, components=RULES, masks=70, alpha=0.25, batch_size=7,
                          masks_per_pass=masks_per_pass, mechanism=mechanism, progress=False, device="cpu")
    split = coar.evaluate(one, model, x, y, components=RULES, masks=70, alpha=0.25, batch_size=7,
                          masks_per_pass=masks_per_pass, mechanism=mechanism, progress=False, device=["cpu"] * 2)
    assert table.equals(split)


def test_the_progress_bar_counts_every_mask_over_several_devices(capsys):
    model, (x, y) = _model(), _data()
    coar.attribute(model, x, y, device=["cpu", "cpu"], **dict(KW, masks_per_pass=3, progress=True))
    assert "130/130" in capsys.readouterr().err


@pytest.mark.parametrize("device, words", [
    ([], "empty list"),
    (["cpu", 0], "entry 1 is a int"),
    (["cpu", "gpu:0"], "entry 1 'gpu:0' is not a device"),
    (["cpu", "cuda:0"], "mixes device types"),
    (["cuda:0", "cuda:1", "cuda:0"], "cuda:0 given twice"),
    (["cuda", "cuda:0"], "cuda:0 given twice"),
    (["cuda:0", "cuda:4"], "cuda:4 beyond the 4 CUDA devices"),
])
def test_a_bad_device_list_is_refused_naming_device(monkeypatch, device, words):
    monkeypatch.setattr(gpus, "device_count", lambda: 4)  # a faked 4-GPU machine
    model, (x, y) = _model(), _data(6)
    with pytest.raises(ArgumentError, match=words) as e:
        coar.attribute(model, x, y, device=device, **KW)
    assert e.value.argument == "device"
    attr = coar.attribute(model, x, y, device="cpu", **dict(KW, masks=20))
    with pytest.raises(ArgumentError, match=words):
        coar.evaluate(attr, model, x, y, components=RULES, masks=10, alpha=0.25, device=device, progress=False)


def test_cuda_devices_without_cuda_are_refused_naming_device(monkeypatch):
    monkeypatch.setattr(gpus, "device_count", lambda: 0)
    model, (x, y) = _model(), _data(6)
    with pytest.raises(ArgumentError, match="device: .*CUDA sees none"):
        coar.attribute(model, x, y, device=["cuda:0", "cuda:1"], **KW)


# ----------------------------------------------------------------------------------------------- real GPUs
needs_two = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")


@pytest.mark.cuda
@needs_two
def test_two_gpus_give_the_attributions_of_one(tmp_path):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model, (x, y) = _model(), _data()
        one = coar.attribute(model, x, y, device="cuda:0", **dict(KW, masks_per_pass=3))
        two = coar.attribute(model, x, y, device=["cuda:0", "cuda:1"], **dict(KW, masks_per_pass=3))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
    np.testing.assert_allclose(two.weights, one.weights, rtol=1e-5, atol=1e-6)  # same kernels on GPUs of a kind


@pytest.mark.cuda
@needs_two
def test_processes_claim_distinct_real_gpus(tmp_path):
    n = torch.cuda.device_count()
    procs, got = _holders(tmp_path, n, n=n)
    try:
        assert sorted(k for ks in got for k in ks) == list(range(n))
    finally:
        _end(procs)
