"""A warm process for the workflow's jobs on a CPU machine: torch, torchvision, captum, pandas, matplotlib
and coar imported once, each job forked from it.

Importing torch and what the scripts use takes 1.5-4 s of CPU per job on a 2-core VM (torchvision alone pulls
in torch._dynamo and sympy), and the default preset runs about 150 such jobs; its 200 table and figure jobs
spend 0.5-1.5 s each importing pandas, scipy or matplotlib. A local Snakemake run therefore starts one
server the first time a job runs; every later job's script connects to it, and the server forks a child
that already has everything imported. The child takes over the job's stdin, stdout and
stderr (passed over the socket), working directory, environment, sys.path and argv, and runs the same script
file with the same `snakemake` object, so it computes exactly what the job would have computed on its own
(the workflow's tests compare both). The job's own process waits, forwards signals (Ctrl-C reaches the
child as it would have reached the job: a sampling job keeps its finished masks) and exits with the child's
status. If the job's process dies (killed), the child dies with it; if the server dies, the job fails.

When it is not used (the job then imports everything itself, as before):
- COAR_JOB_SERVER=0 (or off/no/false) in the environment;
- a GPU may be present (a device file exists: CUDA must never be initialised in a process that forks) or the
  job runs inside a SLURM allocation (one job per node: nothing to share);
- no server is listening yet: the first job starts one in the background and runs on its own;
- anything at all goes wrong before the child has been told to start (the job runs on its own then).

One server per key (Python executable, the coar and torch installations and their files' sizes and times,
the environment variables read at import time): editing coar's source, reinstalling torch or changing OMP_*
starts another server instead of reusing modules imported from old files. A server exits after IDLE_SECONDS
($COAR_JOB_SERVER_IDLE) without a job. Sockets, locks and the servers' logs live in $COAR_JOB_SERVER_DIR or <tmp>/coar-jobs-<uid>
(mode 0700, refused if another user owns it).

Why not a library: process pools (multiprocessing forkserver, loky) serve one parent's function calls; here
each job is a separate process started by Snakemake, and what must cross over is a whole script run with its
file descriptors and signals.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
import time

IDLE_SECONDS = 60.0
# imported by the server before it serves: what the workflow's torch scripts import (missing ones skipped)
PRELOAD = ("numpy", "scipy.linalg", "pandas", "matplotlib.figure", "torch", "torchvision", "captum.attr",
           "snakemake.iocontainers", "snakemake.logging", "coar.engine", "coar.pipeline", "coar.store",
           "coar.examples", "coar.components", "coar.outputs", "coar.baselines", "coar.editing", "coar.ablation",
           "coar.saliency", "coar.regression", "coar.gram", "coar.correlation", "coar.paper.training",
           "coar.paper.models", "coar.paper.receipts", "coar.paper.experiments", "coar.paper.plots.appendix",
           "coar.paper.plots.attribution", "coar.paper.plots.backdoor", "coar.paper.plots.editing",
           "coar.paper.plots.efficiency", "coar.paper.plots.style")
# never imported by the server: they read the environment (HF_HUB_OFFLINE, ...) when imported, and a job sets it
NOT_PRELOADED = ("huggingface_hub", "transformers")
# environment variables that change what an import does: a server is shared only by jobs that agree on them
IMPORT_ENV = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "TORCH", "PYTORCH_", "CUDA_", "NVIDIA_", "LD_",
              "PYTHON", "MALLOC_", "MPL")
_HEADER = struct.Struct("!Q")
_CHILD = False


def in_child() -> bool:
    """True inside a job forked by the server."""
    return _CHILD


def wanted() -> bool:
    """Whether a job here should try the server (see the module docstring for when it is not used)."""
    if _CHILD or os.name != "posix" or not hasattr(socket, "send_fds"):
        return False
    if os.environ.get("COAR_JOB_SERVER", "1").strip().lower() in ("0", "off", "no", "false"):
        return False
    return "SLURM_JOB_ID" not in os.environ and not gpu_possible()


def gpu_possible() -> bool:
    """False when the machine has no GPU device file (NVIDIA, WSL2's /dev/dxg, ROCm's /dev/kfd): torch cannot
    see a GPU there, so there is no need to import it to ask."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd"))


def directory() -> str:
    """The private directory of this user's sockets, locks and logs (created 0700; another owner is refused)."""
    import tempfile

    d = os.environ.get("COAR_JOB_SERVER_DIR") or os.path.join(tempfile.gettempdir(), f"coar-jobs-{os.getuid()}")
    os.makedirs(d, mode=0o700, exist_ok=True)
    st = os.stat(d)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise PermissionError(f"{d} is not a private directory of uid {os.getuid()}")
    return d


def _tree_stamp(root: str, h) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith((".py", ".so", ".pth")):
                st = os.stat(os.path.join(dirpath, f))
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())


def key(environ=None) -> str:
    """What a server must agree on with a job to run it: the interpreter, where coar and torch are imported
    from (every coar file's size and time, torch's version file), and the import-time environment (`environ`,
    os.environ by default)."""
    import hashlib
    from importlib.util import find_spec

    h = hashlib.sha256(f"{sys.executable}\n{sys.version}\n{sys.prefix}\n".encode())
    for name in ("coar", "torch", "torchvision"):
        spec = find_spec(name)
        if spec is None or not spec.origin:
            h.update(f"{name}: none\n".encode())
            continue
        root = os.path.dirname(spec.origin)
        h.update(f"{name}: {root}\n".encode())
        if name == "coar":
            _tree_stamp(root, h)
        else:
            st = os.stat(os.path.join(root, "version.py"))
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
    environ = os.environ if environ is None else environ
    for k in sorted(environ):
        if k.startswith(IMPORT_ENV):
            h.update(f"{k}={environ[k]}\n".encode())
    return h.hexdigest()[:20]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _recv_int(sock: socket.socket) -> int:
    return struct.unpack("!q", _recv_exact(sock, 8))[0]


# ---------------------------------------------------------------- the job's side


def hand_off(sm, script: str) -> None:
    """Run this Snakemake job (`sm`, the script's `snakemake` object; `script`, its file) in the server.

    Returns only when the job should run here instead (no server yet, or it could not take the job before
    starting it); otherwise the process exits with the child's status."""
    if not wanted():
        return
    try:
        d, k = directory(), key()
    except (OSError, ValueError, ImportError):
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(os.path.join(d, f"{k}.sock"))
    except OSError:
        sock.close()
        _spawn(d, k)
        return
    try:
        import pickle

        umask = os.umask(0)
        os.umask(umask)
        payload = pickle.dumps({"script": os.path.abspath(script), "snakemake": sm, "argv": list(sys.argv),
                                "path": list(sys.path), "cwd": os.getcwd(), "environ": dict(os.environ),
                                "umask": umask}, protocol=4)
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(sock, [_HEADER.pack(len(payload))], [0, 1, 2])
        sock.sendall(payload)
        pid = _recv_int(sock)
        if pid <= 0:
            raise ConnectionError("the server did not take the job")
        sock.sendall(b"g")  # from here on the job is the child's: no way back
        _forward_signals(pid)
    except Exception:  # not started: the child, if any, sees the socket close and exits without running
        sock.close()
        return
    try:
        code = _recv_int(sock)
    except (OSError, ConnectionError):
        sys.stderr.write(f"coar job server: lost the job (process {pid}) before it reported its exit status\n")
        sys.stderr.flush()
        os._exit(1)
    _exit_as(code)


def _forward_signals(pid: int) -> None:
    import signal

    def forward(signum, frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)


def _exit_as(code: int) -> None:
    """Exit with status `code` (os.waitstatus_to_exitcode's convention: -N = killed by signal N)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        import signal

        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
        code = 128 - code
    os._exit(code)


def _spawn(d: str, k: str) -> None:
    """Start a server for key `k` in the background, unless one is starting already (it holds the lock)."""
    import fcntl
    import subprocess

    if os.path.exists(os.path.join(d, f"{k}.refused")):
        return  # a server for this key found it could not serve it (see the .log next to it): do not retry
    try:
        with open(os.path.join(d, f"{k}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close: the server takes it next
    except OSError:
        return  # held: a server for this key is importing, or serving with its socket gone
    # the server imports from the job's sys.path (snakemake's and the scripts' directories included)
    idle = os.environ.get("COAR_JOB_SERVER_IDLE", str(IDLE_SECONDS))
    code = (f"import sys; sys.path[:] = {list(sys.path)!r}; from coar.paper.jobserver import main; "
            f"sys.exit(main(['serve', {d!r}, {k!r}, {idle!r}]))")
    try:
        with open(os.path.join(d, f"{k}.log"), "w") as log:
            subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, cwd=os.getcwd())
    except OSError:
        pass


# ---------------------------------------------------------------- the server


def serve(d: str, k: str, idle: float = IDLE_SECONDS) -> int:
    """Serve jobs for key `k` from directory `d` until `idle` seconds pass without one. Returns an exit code."""
    import fcntl
    import importlib
    import select
    import signal

    lock = open(os.path.join(d, f"{k}.lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("another server holds this key", flush=True)
        return 0
    t0 = time.monotonic()
    before = dict(os.environ)
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional package missing: the jobs that need it import it themselves
            print(f"not preloaded: {name}: {type(exc).__name__}: {exc}", flush=True)
    for name in NOT_PRELOADED:
        if name in sys.modules:
            print(f"not serving: preloading imported {name}, which reads the job's environment on import",
                  flush=True)
            open(os.path.join(d, f"{k}.refused"), "w").close()
            return 1
    # what the imports put in the environment (TORCHINDUCTOR_CACHE_DIR, ...): a job importing them would have it too
    added = {name: v for name, v in os.environ.items() if before.get(name) != v}
    if key(before) != k:  # the job that started it imports other files (or they changed meanwhile): never serve it
        print("this process imports other coar/torch files than the job that started it: not serving", flush=True)
        open(os.path.join(d, f"{k}.refused"), "w").close()
        return 1
    print(f"imported in {time.monotonic() - t0:.1f} s; serving", flush=True)
    path = os.path.join(d, f"{k}.sock")
    if os.path.exists(path):
        os.unlink(path)  # left by a server that was killed: we hold the lock, so nobody else serves it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    ino = os.stat(path).st_ino
    wake_r, wake_w = os.pipe()  # a child's exit wakes the loop at once (SIGCHLD writes a byte here)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    children: dict[int, socket.socket] = {}
    last = time.monotonic()
    served = 0
    try:
        while children or time.monotonic() - last < idle:
            ready, _, _ = select.select([listener, wake_r], [], [], 1.0)
            if wake_r in ready:
                os.read(wake_r, 4096)
            if listener in ready:
                conn, _ = listener.accept()
                pid = _take(conn, [listener, lock, *children.values()], (wake_r, wake_w), added)
                last = time.monotonic()
                if pid:
                    children[pid] = conn
                    served += 1
                else:
                    conn.close()
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = children.pop(pid, None)
                if conn is not None:
                    try:
                        conn.sendall(struct.pack("!q", os.waitstatus_to_exitcode(status)))
                    except OSError:
                        pass
                    conn.close()
                last = time.monotonic()
    finally:
        try:
            if os.stat(path).st_ino == ino:
                os.unlink(path)
        except OSError:
            pass
        listener.close()
    print(f"served {served} jobs; idle for {idle:g} s: exiting", flush=True)
    return 0


def _take(conn: socket.socket, inherited: list, pipe: tuple[int, int], added: dict) -> int:
    """Read one job request from `conn` and fork its child; returns the child's pid (0: request refused).
    The child closes `inherited` (the server's socket, lock and other jobs' connections) and `pipe`; its
    environment is the job's, plus what the server's imports `added` to the server's where the job lacks it."""
    conn.settimeout(10)
    fds: list[int] = []
    try:
        msg, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        if len(msg) != _HEADER.size or len(fds) != 3:
            raise ConnectionError("malformed request")
        payload = _recv_exact(conn, _HEADER.unpack(msg)[0])
    except (OSError, ConnectionError, struct.error) as exc:
        print(f"refused a request: {exc}", flush=True)
        for fd in fds:
            os.close(fd)
        return 0
    pid = os.fork()
    if pid == 0:
        import signal

        signal.set_wakeup_fd(-1)
        for f in inherited:
            f.close()
        for fd in pipe:
            os.close(fd)
        _child(conn, fds, payload, added)  # never returns
    for fd in fds:
        os.close(fd)
    try:
        conn.sendall(struct.pack("!q", pid))
    except OSError:
        pass  # the client went away: the child sees the socket close and exits without running
    return pid


def _child(conn: socket.socket, fds: list[int], payload: bytes, added: dict) -> None:
    import signal

    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        conn.settimeout(None)
        if conn.recv(1) != b"g":
            os._exit(1)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        code = _run(conn, payload, added)
    except SystemExit as exc:
        code = _code_of(exc)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _watch(conn: socket.socket) -> None:
    """Kill this child when the job's process goes away (its end of the socket closes)."""
    import signal

    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def _code_of(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _run(conn: socket.socket, payload: bytes, added: dict) -> int:
    global _CHILD
    import atexit
    import pickle
    import runpy
    import signal
    import threading
    import traceback

    req = pickle.loads(payload)
    os.chdir(req["cwd"])
    os.umask(req["umask"])
    os.environ.clear()
    os.environ.update({**added, **req["environ"]})
    sys.argv[:] = req["argv"]
    sys.path[:] = req["path"]
    _CHILD = True
    threading.Thread(target=_watch, args=(conn,), daemon=True).start()
    interrupted = False
    try:
        runpy.run_path(req["script"], init_globals={"snakemake": req["snakemake"]}, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _code_of(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        code, interrupted = 1, True
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if interrupted:  # as Python does for an uncaught KeyboardInterrupt: die of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) in (3, 4) and argv[0] == "serve":
        return serve(argv[1], argv[2], *(float(a) for a in argv[3:]))
    print("usage: python -m coar.paper.jobserver serve DIR KEY [IDLE_SECONDS]   (started by the workflow's jobs)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
