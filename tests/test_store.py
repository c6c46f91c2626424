"""Tests for coar.sampling and coar.store (mask sampling, resumable shards, crash safety)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coar.errors import CoarError, ShapeError, StoreError, StoreMismatchError
from coar.sampling import BLOCK_ROWS, balance_group, check_alpha, iter_mask_chunks, n_ablated, sample_masks
from coar.store import COMPLETE_FILE, ShardStore, load_shards, run_shard, verify

SRC = Path(__file__).resolve().parents[1] / "src"


def make_meta(**over):
    meta = dict(
        model_fingerprint="model-abc",
        components_fingerprint="comp-123",
        examples_fingerprint="ex-xyz",
        n_components=40,
        n_examples=6,
        m=50,
        alpha=0.1,
        seed=7,
        shard=0,
        output_fn="margin",
        scheme="exact",
        ablation="zero",
        gamma=None,
        dtype="float16",
    )
    meta.update(over)
    return meta


def linear_eval(n_components, n_examples, seed=0):
    # quarter-integer weights: float32 sums are exact, so results do not depend on batching
    w = (np.random.default_rng(seed).integers(-8, 9, (n_components, n_examples)) / 4).astype(np.float32)

    def evaluate(keep):
        assert keep.dtype == bool
        return keep.astype(np.float32) @ w

    return evaluate


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("n_components,alpha", [(1000, 0.1), (37, 0.25), (82, 0.05), (10, 0.0), (13, 0.9)])
def test_exact_scheme_ablates_exactly_round_alpha_c(n_components, alpha):
    keep = sample_masks(n_components, 300, alpha, seed=3)
    assert keep.shape == (300, n_components) and keep.dtype == bool
    k = int(round(alpha * n_components))
    assert n_ablated(n_components, alpha) == k
    assert np.all((~keep).sum(axis=1) == k)


def test_exact_scheme_is_uniform_over_components():
    c, m, alpha = 50, 4000, 0.2
    keep = sample_masks(c, m, alpha, seed=11)
    freq = (~keep).mean(axis=0)  # per-component ablation frequency, expected alpha
    std = np.sqrt(alpha * (1 - alpha) / m)
    assert np.all(np.abs(freq - alpha) < 5 * std), freq
    # different rows are different subsets
    assert len({row.tobytes() for row in keep}) > 0.99 * m


def test_bernoulli_fraction_within_4_std():
    c, m, alpha = 500, 400, 0.15
    keep = sample_masks(c, m, alpha, seed=5, scheme="bernoulli")
    ablated = ~keep
    std = np.sqrt(alpha * (1 - alpha) / (m * c))
    assert abs(ablated.mean() - alpha) < 4 * std
    # per-row counts vary (not the exact scheme)
    assert np.unique(ablated.sum(axis=1)).size > 5


@pytest.mark.parametrize("scheme", ["exact", "bernoulli", "balanced"])
def test_masks_deterministic_and_differ_across_shards_and_seeds(scheme):
    a = sample_masks(64, 100, 0.3, seed=1, shard=2, scheme=scheme)
    b = sample_masks(64, 100, 0.3, seed=1, shard=2, scheme=scheme)
    assert np.array_equal(a, b)
    other_shard = sample_masks(64, 100, 0.3, seed=1, shard=3, scheme=scheme)
    other_seed = sample_masks(64, 100, 0.3, seed=2, shard=2, scheme=scheme)
    assert not np.array_equal(a, other_shard)
    assert not np.array_equal(a, other_seed)
    # no row of shard 2 equals the same row of shard 3 (streams are independent)
    assert (a != other_shard).any(axis=1).mean() > 0.99


@pytest.mark.parametrize("scheme", ["exact", "bernoulli", "balanced"])
@pytest.mark.parametrize("chunk_rows", [1, 7, BLOCK_ROWS, BLOCK_ROWS + 1, 1000])
def test_chunked_generation_equals_one_shot(scheme, chunk_rows):
    n = 3 * BLOCK_ROWS + 5  # crosses block boundaries
    full = sample_masks(30, n, 0.2, seed=9, shard=1, scheme=scheme)
    chunks = list(iter_mask_chunks(30, n, 0.2, seed=9, shard=1, scheme=scheme, chunk_rows=chunk_rows))
    assert all(len(ch) <= chunk_rows for ch in chunks)
    assert np.array_equal(np.concatenate(chunks), full)
    # a prefix of a longer run equals the shorter run
    assert np.array_equal(sample_masks(30, n + 50, 0.2, seed=9, shard=1, scheme=scheme)[:n], full)


# (C, alpha, group size r): r = min(round(1/alpha), C // k); the setups' designs, one that covers C exactly,
# one where round(1/alpha) * k > C, one where 1/alpha is not an integer, and k = 0
BALANCED = [(200, 0.05, 20), (104, 0.10, 10), (448, 0.05, 20), (104, 0.15, 6), (30, 0.3, 3), (10, 0.0, 1)]


@pytest.mark.parametrize("n_components,alpha,r", BALANCED)
def test_balanced_scheme_groups_ablate_disjoint_sets(n_components, alpha, r):
    m = 5 * BLOCK_ROWS + 3  # several random streams, and a last group cut short
    keep = sample_masks(n_components, m, alpha, seed=4, shard=1, scheme="balanced")
    k = n_ablated(n_components, alpha)
    assert balance_group(n_components, alpha) == r
    assert keep.shape == (m, n_components) and np.all((~keep).sum(axis=1) == k)
    for g in range(0, m, r):
        counts = (~keep[g:g + r]).sum(axis=0)
        assert counts.max() <= 1, f"a component is ablated twice in the group at row {g}"
        if g + r <= m and r * k == n_components:
            assert np.all(counts == 1)  # a full group covers every component once
    if k:  # consecutive groups are not copies of one another
        assert not np.array_equal(keep[:r], keep[r:2 * r])


def test_balanced_scheme_ablates_every_component_equally_often():
    c, alpha = 200, 0.05  # r * k = C: every component exactly once per group of 20
    keep = sample_masks(c, 1000, alpha, seed=2, scheme="balanced")
    assert np.all((~keep).sum(axis=0) == 1000 // 20)
    exact = sample_masks(c, 1000, alpha, seed=2, scheme="exact")
    assert np.unique((~exact).sum(axis=0)).size > 1  # the exact scheme does not balance


def test_balanced_groups_restart_at_every_shard():
    a = sample_masks(200, 30, 0.05, seed=3, shard=0, scheme="balanced")
    b = sample_masks(200, 30, 0.05, seed=3, shard=1, scheme="balanced")
    assert np.all((~a[:20]).sum(axis=0) == 1) and np.all((~b[:20]).sum(axis=0) == 1)
    assert not np.array_equal(a, b)


def test_store_resumes_balanced_shard(tmp_path):
    meta = make_meta(scheme="balanced", n_components=40, alpha=0.1, m=50)
    store = ShardStore.create_or_open(tmp_path / "s", meta)
    assert np.array_equal(store.masks, sample_masks(40, 50, 0.1, seed=7, shard=0, scheme="balanced"))
    ev = linear_eval(40, 6)
    store.write(np.arange(13), ev(np.array(store.masks[:13])))
    store.close()
    again = ShardStore.create_or_open(tmp_path / "s", dict(meta))
    assert again.pending_rows().tolist() == list(range(13, 50))
    assert run_shard(again, ev, masks_per_call=8, progress=False) == 37
    assert again.is_complete and np.array_equal(again.outputs, ev(np.array(again.masks)))
    again.close()
    with pytest.raises(StoreMismatchError, match="scheme"):
        ShardStore.create_or_open(tmp_path / "s", make_meta(scheme="exact", n_components=40, alpha=0.1, m=50))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(alpha=1.0), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(n_masks=0), "n_masks"),
        (dict(n_components=0), "n_components"),
        (dict(seed=-1), "seed"),
        (dict(shard=1.5), "shard"),
        (dict(scheme="uniform"), "scheme"),
        (dict(scheme="antithetic"), "scheme"),
    ],
)
def test_sampling_validation_names_argument(kwargs, name):
    args = dict(n_components=10, n_masks=5, alpha=0.1, seed=0, shard=0, scheme="exact")
    args.update(kwargs)
    with pytest.raises(ValueError, match=name) as ei:
        sample_masks(**args)
    assert isinstance(ei.value, CoarError)
    with pytest.raises(ValueError, match=name):
        iter_mask_chunks(**args)  # validated eagerly, before the first next()


# ----------------------------------------------------------------------------- store basics


def test_create_reopen_and_masks_match_sampler(tmp_path):
    meta = make_meta()
    store = ShardStore.create_or_open(tmp_path / "s0", meta)
    assert np.array_equal(store.masks, sample_masks(40, 50, 0.1, seed=7, shard=0, scheme="exact"))
    assert store.outputs.shape == (50, 6) and store.outputs.dtype == np.float16
    assert np.all(store.outputs == 0) and not store.done.any()
    assert store.pending_rows().tolist() == list(range(50))
    assert store.meta["format_version"] >= 1
    with pytest.raises(ValueError):
        store.masks[0, 0] = False  # read-only
    store.write(np.array([3, 4]), np.ones((2, 6)))
    store.close()

    again = ShardStore.create_or_open(tmp_path / "s0", dict(meta))
    assert again.pending_rows().size == 48 and 3 not in again.pending_rows()
    assert np.all(again.outputs[3:5] == 1)
    # no temp directories left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s0"]


@pytest.mark.parametrize(
    "key,value",
    [("alpha", 0.2), ("seed", 8), ("components_fingerprint", "comp-999"), ("dtype", "float32"), ("scheme", "bernoulli")],
)
def test_reopen_with_other_meta_raises_naming_key(tmp_path, key, value):
    ShardStore.create_or_open(tmp_path / "s", make_meta()).close()
    with pytest.raises(StoreMismatchError, match=key) as ei:
        ShardStore.create_or_open(tmp_path / "s", make_meta(**{key: value}))
    msg = str(ei.value)
    assert repr(value) in msg and repr(make_meta()[key]) in msg  # stored vs requested


def test_mismatch_lists_every_differing_key(tmp_path):
    ShardStore.create_or_open(tmp_path / "s", make_meta()).close()
    with pytest.raises(StoreMismatchError) as ei:
        ShardStore.create_or_open(tmp_path / "s", make_meta(alpha=0.3, seed=1, model_fingerprint="other"))
    msg = str(ei.value)
    for key in ("alpha", "seed", "model_fingerprint"):
        assert key in msg
    assert "3 differing" in msg


def test_missing_meta_key_raises(tmp_path):
    meta = make_meta()
    del meta["examples_fingerprint"]
    with pytest.raises(StoreError, match="examples_fingerprint"):
        ShardStore.create_or_open(tmp_path / "s", meta)
    assert not (tmp_path / "s").exists()


def test_truncated_outputs_raises_store_error(tmp_path):
    ShardStore.create_or_open(tmp_path / "s", make_meta()).close()
    f = tmp_path / "s" / "outputs.npy"
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        fh.truncate(size - 6 * 2 * 10 - 3)  # drop 10 rows and a bit
    with pytest.raises(StoreError, match="outputs.npy") as ei:
        ShardStore.create_or_open(tmp_path / "s", make_meta())
    msg = str(ei.value)
    assert "truncated" in msg and "(50, 6)" in msg and "(39, 6)" in msg


def test_missing_done_file_raises_store_error(tmp_path):
    ShardStore.create_or_open(tmp_path / "s", make_meta()).close()
    (tmp_path / "s" / "done.npy").unlink()
    with pytest.raises(StoreError, match="done.npy.*missing|missing.*done.npy"):
        ShardStore.create_or_open(tmp_path / "s", make_meta())


def test_run_shard_complete_verify_and_corruption(tmp_path):
    meta = make_meta(dtype="float32")
    store = ShardStore.create_or_open(tmp_path / "s", meta)
    ev = linear_eval(40, 6)
    assert run_shard(store, ev, masks_per_call=7, progress=False) == 50
    assert store.is_complete and store.has_marker
    assert np.array_equal(store.outputs, ev(np.array(store.masks)))
    record = verify(tmp_path / "s")
    assert set(record["files"]) >= {"masks.npy", "outputs.npy", "done.npy"}
    assert run_shard(store, ev, progress=False) == 0  # nothing left
    with pytest.raises(StoreError, match="COMPLETE"):
        store.write(np.array([0]), np.zeros((1, 6)))
    store.close()

    f = tmp_path / "s" / "outputs.npy"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    data[200] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="outputs.npy") as ei:
        verify(tmp_path / "s")
    assert "masks.npy" not in str(ei.value)
    with pytest.raises(StoreError, match="corrupt"):
        list(load_shards([tmp_path / "s"]))


def test_write_rejects_non_finite_and_float16_overflow(tmp_path):
    store = ShardStore.create_or_open(tmp_path / "s", make_meta())
    out = np.zeros((3, 6))
    out[1, 2] = np.nan
    with pytest.raises(StoreError, match=r"\[11\]"):
        store.write(np.array([10, 11, 12]), out)
    big = np.full((2, 6), 1e6)
    with pytest.raises(StoreError, match="float16"):
        store.write(np.array([0, 1]), big)
    assert not store.done.any()  # nothing written
    with pytest.raises(ShapeError):
        store.write(np.array([0, 1]), np.zeros((2, 5)))


def test_load_shards(tmp_path):
    ev = linear_eval(40, 6)
    paths = []
    for shard in range(2):
        p = tmp_path / f"shard{shard}"
        store = ShardStore.create_or_open(p, make_meta(shard=shard, m=30))
        run_shard(store, ev, masks_per_call=8, progress=False)
        store.close()
        paths.append(p)
    keep, out = zip(*load_shards(paths, chunk_rows=11))
    keep, out = np.concatenate(keep), np.concatenate(out)
    assert keep.shape == (60, 40) and out.shape == (60, 6) and out.dtype == np.float32
    expected_keep = np.concatenate([sample_masks(40, 30, 0.1, seed=7, shard=s) for s in range(2)])
    assert np.array_equal(keep, expected_keep)
    assert np.array_equal(out, ev(keep))  # exact in float16

    # an incomplete shard is refused, naming it and its pending rows
    p = tmp_path / "shard2"
    store = ShardStore.create_or_open(p, make_meta(shard=2, m=30))
    store.write(np.arange(10), ev(np.array(store.masks[:10])))
    store.close()
    with pytest.raises(StoreError, match=r"shard2.*20 of 30 rows pending"):
        load_shards(paths + [p])
    # duplicate masks and mixed data sets are refused
    with pytest.raises(StoreError, match="identical masks"):
        load_shards([paths[0], paths[0]])
    other = tmp_path / "other"
    run_shard(ShardStore.create_or_open(other, make_meta(shard=5, m=30, output_fn="loss")), ev, progress=False)
    with pytest.raises(StoreMismatchError, match="output_fn"):
        load_shards([paths[0], other])


def test_full_disk_and_unwritable_directory_are_named_and_leave_nothing(tmp_path, monkeypatch):
    """Issue 7's disk faults: the shard's blocks are reserved when it is created, so a full disk is an error
    that names the shard and its size then, not a SIGBUS inside a memory-mapped write later; an unwritable
    directory names the directory. Nothing half-built is left behind either way."""
    import errno
    import os

    import coar.store as store_mod

    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")
    reserved = []
    real = os.posix_fallocate

    def record(fd, offset, length):
        reserved.append(length)
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", record)
    ShardStore.create_or_open(tmp_path / "ok", make_meta()).close()
    # masks, done flags and float16 outputs: every byte of the three files (the .npy header included) is
    # reserved, the masks before they are written
    sizes = sorted((tmp_path / "ok" / f).stat().st_size for f in ("done.npy", "outputs.npy", "masks.npy"))
    assert sorted(reserved) == sizes and sizes[0] >= 50 and sizes[1] >= 50 * 6 * 2

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    need = 50 * make_meta()["n_components"] + 50 * 6 * 2 + 50
    with pytest.raises(StoreError, match=rf"cannot create shard .*s1 \({need:,} bytes, 0\.0 MiB\): No space left on "
                                         r"device \(masks\.npy\)"):
        ShardStore.create_or_open(tmp_path / "s1", make_meta())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(store_mod.Path, "mkdir", denied)
    with pytest.raises(StoreError, match=r"cannot create the directory of shard .*deep/s2: Permission denied"):
        ShardStore.create_or_open(tmp_path / "deep" / "s2", make_meta())


def test_leftover_temp_dir_does_not_break_create(tmp_path):
    import socket

    target = tmp_path / "s"
    # a dead process's half-built shard (pid far above pid_max is never alive)
    dead = tmp_path / f".s.creating.{socket.gethostname()}.999999999.deadbeef"
    dead.mkdir()
    (dead / "masks.npy").write_bytes(b"\x93NUMPY garbage")
    # a temp dir from another host: left alone, never read
    foreign = tmp_path / ".s.creating.some-other-host.123.cafef00d"
    foreign.mkdir()
    # an empty directory under the final name counts as absent
    target.mkdir()
    store = ShardStore.create_or_open(target, make_meta())
    assert np.array_equal(store.masks, sample_masks(40, 50, 0.1, seed=7))
    assert not dead.exists()
    assert foreign.exists()
    store.close()
    assert ShardStore.create_or_open(target, make_meta()).pending_rows().size == 50


# ----------------------------------------------------------------------------- crash safety (real SIGKILL)

WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    import coar.store as cs
    from coar.store import ShardStore, run_shard

    path, sleep, slow_create = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1"
    C, N = 60, 5
    meta = dict(model_fingerprint="m", components_fingerprint="c", examples_fingerprint="e",
                n_components=C, n_examples=N, m=96, alpha=0.2, seed=123, shard=4,
                output_fn="margin", dtype="float16")
    # quarter-integer weights: exact in float32 and float16, whatever the batching
    W = (np.random.default_rng(42).integers(-8, 9, (C, N)) / 4).astype(np.float32)

    if slow_create:  # make creation take long enough to be killed in the middle of it
        orig = cs.iter_mask_chunks
        def slow(*a, **k):
            for chunk in orig(*a, **k):
                for row in chunk:
                    (path.parent / "creating.flag").touch()
                    time.sleep(0.02)
                    yield row[None]
        cs.iter_mask_chunks = slow

    def evaluate(keep):
        time.sleep(sleep)
        return keep.astype(np.float32) @ W

    (path.parent / "started.flag").touch()  # imports done: kill times are measured from here
    store = ShardStore.create_or_open(path, meta)
    run_shard(store, evaluate, masks_per_call=4, progress=False)
    """
)


def _start(script, path, sleep, slow_create=False, log=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        [sys.executable, str(script), str(path), str(sleep), "1" if slow_create else "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log if log is not None else subprocess.DEVNULL,
    )


def _check_partial(path, ref):
    """Whatever state a killed run left must be consistent: done rows hold the final outputs."""
    if not path.exists():
        return 0
    store = ShardStore.open(path, readonly=True)
    assert np.array_equal(store.masks, ref.masks)
    done = np.array(store.done)
    assert np.array_equal(store.outputs[done], ref.outputs[done])
    n = int(done.sum())
    store.close()
    return n


def test_sigkill_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    log_path = tmp_path / "worker.log"

    # uninterrupted reference run
    ref_dir = tmp_path / "ref" / "shard"
    ref_dir.parent.mkdir()
    with open(log_path, "ab") as log:
        assert _start(script, ref_dir, 0.0, log=log).wait(timeout=60) == 0, log_path.read_text()
    ref = ShardStore.open(ref_dir, readonly=True)
    assert ref.is_complete and ref.has_marker

    work = tmp_path / "run"
    work.mkdir()
    path = work / "shard"
    flag = work / "creating.flag"

    # 1) kill in the middle of creation: the temp dir is left, the shard name is not taken
    with open(log_path, "ab") as log:
        proc = _start(script, path, 0.1, slow_create=True, log=log)
        deadline = time.monotonic() + 30
        while not flag.exists():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert not path.exists()
    leftovers = [p for p in work.iterdir() if p.name.startswith(".shard.creating.")]
    assert leftovers, "creation should have been interrupted mid-way"

    # 2) several kills at random times (creation, mid-run), resuming each time; on a very
    #    loaded machine a few more tries, until at least one kill lands mid-run
    rng = random.Random(20240613)
    progress = []
    for attempt in range(8):
        if attempt >= 3 and any(0 < n < 96 for n in progress):
            break
        started = work / "started.flag"
        started.unlink(missing_ok=True)
        with open(log_path, "ab") as log:
            proc = _start(script, path, 0.1, log=log)
            deadline = time.monotonic() + 60
            while not started.exists() and proc.poll() is None:  # interpreter start + imports vary with load
                assert time.monotonic() < deadline
                time.sleep(0.01)
            try:
                proc.wait(timeout=rng.uniform(0.0, 1.5))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        progress.append(_check_partial(path, ref))
    assert any(0 < n < 96 for n in progress), f"no kill landed mid-run: rows done after each kill {progress}"

    # 3) finish
    with open(log_path, "ab") as log:
        assert _start(script, path, 0.0, log=log).wait(timeout=60) == 0, log_path.read_text()
    got = ShardStore.open(path, readonly=True)
    assert np.array_equal(got.masks, ref.masks)
    assert np.array_equal(got.outputs, ref.outputs)
    assert np.array_equal(got.done, ref.done) and got.done.all()
    assert got.outputs.dtype == np.float16
    verify(path)
    assert not any(p.exists() for p in leftovers)  # the dead creator's temp dir was cleaned up
    assert json.loads((path / COMPLETE_FILE).read_text())["files"] == json.loads(
        (ref_dir / COMPLETE_FILE).read_text()
    )["files"]


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    """While one process fills a shard (it holds the flock on .writer.lock), another run_shard on the same
    shard fails at once, before evaluating anything; once the first lets go, the shard fills normally."""
    import fcntl

    from coar.store import LOCK_FILE

    store = ShardStore.create_or_open(tmp_path / "s", make_meta(dtype="float32"))
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(tmp_path / "s" / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"pid %d on the other host" % os.getpid(), 0)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        calls = []

        def ev(keep):
            calls.append(len(keep))
            return linear_eval(40, 6)(keep)

        with pytest.raises(StoreError, match=rf"being filled by pid {holder.pid} on the other host") as ei:
            run_shard(store, ev, progress=False)
        assert str(tmp_path / "s") in str(ei.value) and not calls and store.pending_rows().size == 50
    finally:
        holder.kill()
        holder.wait()
    assert run_shard(store, ev, masks_per_call=10, progress=False) == 50 and store.has_marker
    fd = os.open(tmp_path / "s" / LOCK_FILE, os.O_RDWR)  # released when run_shard returned
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert os.pread(fd, 100, 0).decode().startswith(f"pid {os.getpid()} on ")
    os.close(fd)
    verify(tmp_path / "s")  # the lock file is not part of the shard's checksums
    store.close()


@given(n_components=st.integers(1, 5000), alpha=st.floats(0.0, 1.0, exclude_max=True))
def test_check_alpha_accepts_exactly_the_alphas_whose_masks_differ(n_components, alpha):
    """1 <= round(alpha * C) <= C - 1 is accepted (and returned); 0 or C is refused, saying which end."""
    k = n_ablated(n_components, alpha)
    if 1 <= k <= n_components - 1:
        assert check_alpha(alpha, n_components) == k
    else:
        with pytest.raises(CoarError, match="ablate nothing" if k == 0 else "ablate every component"):
            check_alpha(alpha, n_components)
