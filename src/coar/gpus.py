"""One GPU per process on a machine with several: `claim()` picks a visible GPU that no other process holds.

Every GPU has a lock file in a lock directory; a process claims GPU k by holding an exclusive ``fcntl.flock`` on
its file, non-blocking, and keeps the file open for the rest of its life. The OS drops the lock when the process
ends, however it ends (return, exception, SIGKILL, out of memory), so a crashed job never leaves a GPU marked as
taken and there is nothing to clean up. N jobs that claim at once get N distinct GPUs:

    >>> from coar import gpus
    >>> k = gpus.claim()            # doctest: +SKIP
    >>> device = f"cuda:{k}"        # doctest: +SKIP

Lock directory: ``$COAR_GPU_LOCK_DIR`` if set, else ``/tmp/coar-gpu-locks-<uid>``. /tmp is local to each machine
(flock must not span machines: the GPU numbers are per machine) and outlives login sessions; the per-user name
avoids a directory other users could own or fill. ``$XDG_RUNTIME_DIR`` is not the default: logind deletes it
when its user's last login session ends (a workflow left running under nohup would then lose its lock files while
holding them, and later jobs would lock new files of the same names), and on a cluster's compute node it is often
unset or inherited from the login node. Processes of different users see each other's claims only if they share a
lock directory (``COAR_GPU_LOCK_DIR`` pointing to one directory all of them can write).

CUDA_VISIBLE_DEVICES: when set, its entries are the candidates; the index returned is the position among them
(what ``cuda:k`` means to the process) and the lock file is named after the entry (the physical GPU number or
UUID), so processes with different CUDA_VISIBLE_DEVICES on one machine still see each other's claims. With one
visible GPU there is nothing to choose: ``claim()`` returns 0 without a lock (SLURM hands a job its own GPUs).
Under SLURM (``SLURM_JOB_ID`` set) the locks live in a subdirectory per job: SLURM gives every job its own GPUs,
and with device cgroups it numbers them from 0 in every job, so two jobs' "0" may be different GPUs.

All taken: `claim` polls for ``wait`` seconds (default ``$COAR_GPU_WAIT`` or 60), then shares the GPU with the
fewest holders with a warning. A workflow run with ``--resources gpu=N`` (N at most the GPU count) never has more
GPU jobs than GPUs, so all taken means processes outside its accounting (another workflow, a notebook, another
user with a shared lock directory): waiting briefly covers a job that is just ending; waiting for ever could stall
a workflow behind a session that holds a GPU all day, and failing would waste the job, while a shared GPU still
runs it (slower, and out of memory only where both need most of its memory).
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import time
import warnings
from pathlib import Path

from .errors import CoarError

#: Environment variable that overrides the lock directory.
LOCK_DIR_ENV = "COAR_GPU_LOCK_DIR"
#: Environment variable with the seconds to wait for a free GPU before sharing one.
WAIT_ENV = "COAR_GPU_WAIT"
DEFAULT_WAIT = 60.0
#: Seconds between two looks for a free GPU while waiting.
POLL = 0.25

#: The claims of this process: (file descriptor, visible index). The descriptors stay open (so the locks stay
#: held) until `release` or the end of the process.
_held: list[tuple[int, int]] = []


def device_count() -> int:
    """CUDA devices this process sees (0 without CUDA). Tests replace it to fake a multi-GPU machine."""
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def lock_dir(path: str | os.PathLike | None = None) -> Path:
    """The lock directory: `path`, else $COAR_GPU_LOCK_DIR, else /tmp/coar-gpu-locks-<uid> (module docstring).
    A SLURM job's locks are in its subdirectory ``slurm-<job id>``."""
    root = Path(path) if path is not None else Path(os.environ.get(LOCK_DIR_ENV) or f"/tmp/coar-gpu-locks-{os.getuid()}")
    job = os.environ.get("SLURM_JOB_ID")
    return root / f"slurm-{_safe(job)}" if job else root


def visible(n_devices: int) -> list[str]:
    """Names of the GPUs a process that sees `n_devices` can claim, in the order of their cuda indices: the
    entries of CUDA_VISIBLE_DEVICES when it is set, else "0" .. "n-1"."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(n_devices)]
    names = [t.strip() for t in env.split(",")]
    names = names[: next((i for i, t in enumerate(names) if not t), len(names))]  # CUDA stops at an empty entry
    return names[:n_devices]


def claim(n_devices: int | None = None, lock_dir: str | os.PathLike | None = None,
          wait: float | None = None) -> int:
    """Claim a GPU no other process holds; returns its index among the visible devices (use ``f"cuda:{k}"``).

    n_devices: the number of visible GPUs (default: `device_count()`); lock_dir: default `lock_dir()`;
    wait: seconds to wait when every GPU is held before sharing the least-held one with a warning (default
    $COAR_GPU_WAIT, else 60). The claim lasts until `release` or the end of the process. A second claim in the
    same process gets another GPU."""
    n = device_count() if n_devices is None else n_devices
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise CoarError(f"n_devices must be an integer >= 0, got {n_devices!r}")
    names = visible(n)
    if not names:
        cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise CoarError("no GPU to claim: " + (f"CUDA_VISIBLE_DEVICES={cvd!r} shows none" if cvd is not None
                                               else "CUDA sees no device"))
    if len(names) == 1:
        return 0
    wait = _wait_seconds(wait)
    d = _make_dir(lock_dir)
    deadline, told = time.monotonic() + wait, False
    while True:
        for k, name in enumerate(names):
            if _take(d, name, 0, k):
                return k
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not told:
            warnings.warn(f"all {len(names)} GPUs are claimed ({_holders_text(d, names)}; lock files in {d}): "
                          f"waiting up to {wait:g} s for one to be free, then sharing the least-held one",
                          RuntimeWarning, stacklevel=2)
            told = True
        time.sleep(min(POLL, left))
    while True:  # share: the GPU with the fewest holders, on its first free slot
        loads = [len(_held_slots(d, name)) for name in names]
        k = min(range(len(names)), key=loads.__getitem__)
        slot = next(s for s in range(loads[k] + 1) if s not in _held_slots(d, names[k]))
        if _take(d, names[k], slot, k):
            warnings.warn(f"all {len(names)} GPUs stayed claimed for {wait:g} s ({_holders_text(d, names)}): "
                          f"sharing cuda:{k} with {loads[k]} other process{'es' if loads[k] > 1 else ''}",
                          RuntimeWarning, stacklevel=2)
            return k


def release(index: int | None = None) -> None:
    """Give back this process's claims (all, or those of visible GPU `index`); the end of the process does too."""
    for fd, k in list(_held):
        if index is None or k == index:
            os.close(fd)  # closing the only descriptor of the open file drops its flock
            _held.remove((fd, k))


def claimed() -> list[int]:
    """Visible indices of the GPUs this process holds, in claim order."""
    return [k for _, k in _held]


# ------------------------------------------------------------------------------------------------ internals
def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _lock_path(d: Path, name: str, slot: int) -> Path:
    return d / (f"gpu-{_safe(name)}.lock" if slot == 0 else f"gpu-{_safe(name)}.{slot}.lock")


def _wait_seconds(wait) -> float:
    if wait is None:
        text = os.environ.get(WAIT_ENV)
        try:
            wait = float(text) if text else DEFAULT_WAIT
        except ValueError:
            raise CoarError(f"{WAIT_ENV} must be a number of seconds, got {text!r}") from None
        what = WAIT_ENV
    else:
        what = "wait"
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait >= 0:
        raise CoarError(f"{what} must be a number of seconds >= 0, got {wait!r}")
    return float(wait)


def _make_dir(path) -> Path:
    d = lock_dir(path)
    named = path is not None or bool(os.environ.get(LOCK_DIR_ENV))
    what = "lock_dir" if path is not None else LOCK_DIR_ENV if named else "the GPU lock directory"
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise CoarError(f"{what}: cannot create {d}: {e.strerror or e}") from None
    root = d.parent if os.environ.get("SLURM_JOB_ID") else d
    if not named and root.stat().st_uid != os.getuid():  # /tmp is everyone's: a directory made by someone else
        raise CoarError(f"the GPU lock directory {root} belongs to another user; set {LOCK_DIR_ENV} to a "
                        "directory of yours")
    if not os.access(d, os.W_OK | os.X_OK):
        raise CoarError(f"{what}: {d} is not writable; set {LOCK_DIR_ENV} to a writable directory on a local "
                        "disk")
    return d


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except PermissionError:  # another user's file in a shared lock directory: a read-only descriptor locks too
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _take(d: Path, name: str, slot: int, k: int) -> bool:
    """Lock slot `slot` of GPU `name` and keep it (True), or False when another open file holds it."""
    fd = _open(_lock_path(d, name, slot))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    except BaseException:
        os.close(fd)
        raise
    try:  # who holds it, for the messages of processes that find it taken
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    except OSError:
        pass  # a read-only descriptor: the lock holds all the same
    _held.append((fd, k))
    return True


def _held_slots(d: Path, name: str) -> set[int]:
    """Slots of GPU `name` whose lock another open file holds now."""
    held = set()
    pattern = re.compile(rf"gpu-{re.escape(_safe(name))}(?:\.(\d+))?\.lock")
    for p in d.iterdir():
        m = pattern.fullmatch(p.name)
        if not m:
            continue
        try:
            fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.add(int(m.group(1) or 0))
        finally:
            os.close(fd)
    return held


def _holders_text(d: Path, names: list[str]) -> str:
    parts = []
    for name in names:
        try:
            who = _lock_path(d, name, 0).read_text().strip()
        except OSError:
            who = ""
        parts.append(f"GPU {name}: {who or 'held'}")
    return ", ".join(parts)
