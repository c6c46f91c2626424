"""Resumable on-disk shards of (ablation mask, model output) pairs.

A shard is a directory::

    meta.json      settings the shard was created with (see ``REQUIRED_META_KEYS``)
    masks.npy      bool    [m, C]  keep masks (True = component kept), written once at creation
    outputs.npy    float16 | float32 [m, N]  model outputs, one row per mask
    done.npy       bool    [m]     per-row "output written" flags
    COMPLETE       written when every row is done: sha256 of the files above

Crash safety (SIGKILL at any instant leaves a shard that resumes to the same result):

* Creation happens in a sibling temporary directory that is renamed into place only
  once every file is written and fsync'ed, so a directory under the final name is
  always a whole shard. Temporary directories left by killed creations are never
  read; those of dead processes on this host are removed.
* :meth:`ShardStore.write` flushes the outputs to disk before it sets (and flushes)
  the done flags, so a done flag never refers to an unwritten output row.
* The ``COMPLETE`` marker is written to a temporary file and renamed.

Concurrency: one writer per shard. :func:`run_shard` holds an exclusive advisory lock
(flock on ``.writer.lock`` in the shard) while it fills the shard, so a second process
filling the same shard is refused at once with a StoreError naming the holder, instead
of computing the shard again. The lock goes with its process, killed or not. On a
filesystem without flock (some network filesystems) no lock is taken: two writers then
do not corrupt the shard (they write identical values) but waste work.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from numpy.lib.format import open_memmap

from .errors import ShapeError, StoreError, StoreMismatchError
from .io import sha256_file
from .sampling import SCHEMES, iter_mask_chunks

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_META_KEYS",
    "META_DEFAULTS",
    "PRECISIONS",
    "ShardStore",
    "normalize_meta",
    "read_meta",
    "run_shard",
    "verify",
    "load_shards",
]

FORMAT_VERSION = 1

MASKS_FILE = "masks.npy"
OUTPUTS_FILE = "outputs.npy"
DONE_FILE = "done.npy"
META_FILE = "meta.json"
COMPLETE_FILE = "COMPLETE"
LOCK_FILE = ".writer.lock"
CHECKSUM_FILES = (META_FILE, MASKS_FILE, OUTPUTS_FILE, DONE_FILE)

#: Keys every shard's meta must give.
REQUIRED_META_KEYS = (
    "model_fingerprint",  # fingerprint of the model weights/architecture
    "components_fingerprint",  # fingerprint of the ComponentSet
    "n_components",  # C
    "n_examples",  # N
    "examples_fingerprint",  # fingerprint of the ordered example set
    "m",  # rows (masks) in this shard
    "alpha",  # ablated fraction
    "seed",
    "shard",
    "output_fn",  # name of the output function (e.g. "margin")
)

#: Keys filled in when absent.
META_DEFAULTS = {
    "scheme": "exact",
    "ablation": "zero",
    "gamma": None,
    "dtype": "float16",
    "precision": "float32",  # compute precision of the forward passes (absent in stores made before it existed)
    "format_version": FORMAT_VERSION,
}

#: Compute precisions of the forward passes a store's outputs may come from.
PRECISIONS = ("float32", "bfloat16")

#: Keys that every shard of one data set must share (checked by :func:`load_shards`).
DATASET_KEYS = (
    "model_fingerprint",
    "components_fingerprint",
    "n_components",
    "n_examples",
    "examples_fingerprint",
    "output_fn",
    "ablation",
    "gamma",
)

_HASH_BLOCK = 1 << 24
_TMP_TAG = ".creating."


# ----------------------------------------------------------------------------- meta


def _meta_int(meta: dict, key: str, minimum: int) -> int:
    v = meta[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise StoreError(f"meta[{key!r}] must be an integer, got {v!r}")
    if int(v) < minimum:
        raise StoreError(f"meta[{key!r}] must be >= {minimum}, got {v}")
    return int(v)


def normalize_meta(meta: dict) -> dict:
    """Validated copy of ``meta`` with defaults filled in and JSON-normalized values.

    Raises StoreError naming the missing or invalid key. Extra keys are kept (and
    compared on reopen) as long as they are JSON-serializable.
    """
    if not isinstance(meta, dict):
        raise StoreError(f"meta must be a dict, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise StoreError(f"meta is missing required key(s) {missing}; required: {list(REQUIRED_META_KEYS)}")
    out = dict(META_DEFAULTS)
    out.update(meta)
    for key in ("n_components", "n_examples", "m"):
        out[key] = _meta_int(out, key, 1)
    for key in ("seed", "shard", "format_version"):
        out[key] = _meta_int(out, key, 0)
    a = out["alpha"]
    if isinstance(a, bool) or not isinstance(a, numbers.Real) or not (0.0 <= float(a) < 1.0):
        raise StoreError(f"meta['alpha'] must be a number in [0, 1), got {a!r}")
    out["alpha"] = float(a)
    g = out["gamma"]
    if g is not None:
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(float(g)):
            raise StoreError(f"meta['gamma'] must be a finite number or None, got {g!r}")
        out["gamma"] = float(g)
    if out["scheme"] not in SCHEMES:
        raise StoreError(f"meta['scheme'] must be one of {SCHEMES}, got {out['scheme']!r}")
    try:
        dt = np.dtype(out["dtype"]).name
    except TypeError:
        dt = None
    if dt not in ("float16", "float32"):
        raise StoreError(f"meta['dtype'] must be 'float16' or 'float32', got {out['dtype']!r}")
    out["dtype"] = dt
    if out["precision"] not in PRECISIONS:
        raise StoreError(f"meta['precision'] must be one of {PRECISIONS}, got {out['precision']!r}")
    try:
        # JSON round trip: tuples -> lists, numpy scalars rejected, etc.
        return json.loads(json.dumps(out, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise StoreError(f"meta must be JSON-serializable (finite numbers, str, lists, dicts): {e}") from None


def _meta_diff(stored: dict, requested: dict) -> list[str]:
    missing = "<absent>"
    diffs = []
    for key in sorted(set(stored) | set(requested)):
        s, r = stored.get(key, missing), requested.get(key, missing)
        if s != r or isinstance(s, bool) != isinstance(r, bool):
            diffs.append(f"{key}: stored {s!r}, requested {r!r}")
    return diffs


# ----------------------------------------------------------------------------- fs helpers


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}{_TMP_TAG}"


def _clean_stale_tmp_dirs(path: Path) -> None:
    """Remove temporary creation directories of ``path`` left by dead processes on this host.

    Names are ``.<name>.creating.<host>.<pid>.<random>``; directories of other hosts (or
    live processes) are left alone -- they are never read, so leaving them is harmless.
    """
    prefix = _tmp_prefix(path)
    host = socket.gethostname()
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        parts = entry.name[len(prefix) :].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _pid_alive(int(parts[1])):
            continue
        shutil.rmtree(entry, ignore_errors=True)


def _sha256_file(path: Path) -> str:
    return sha256_file(path, _HASH_BLOCK)


def _check_array_file(path: Path, shape: tuple, dtype: np.dtype) -> None:
    """Raise StoreError unless ``path`` is a C-order .npy file of exactly ``shape``/``dtype`` (as the shard's
    meta.json records them), untruncated."""
    name = path.name
    exp = f"expected shape {shape} dtype {np.dtype(dtype).name}, as {META_FILE} records"
    if not path.is_file():
        found = "a directory" if path.is_dir() else "no file"
        raise StoreError(f"{name} is missing from shard {path.parent} ({exp}, found {found})")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                hshape, fortran, hdtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                hshape, fortran, hdtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = f.tell()
    except Exception as e:  # ValueError, OSError, SyntaxError, tokenize.TokenError...: a garbled header
        raise StoreError(
            f"{name} in shard {path.parent} is not a readable .npy file ({exp}, found {size} bytes: {e})"
        ) from None
    if tuple(hshape) != tuple(shape) or np.dtype(hdtype) != np.dtype(dtype) or fortran:
        raise StoreError(
            f"{name} in shard {path.parent} has the wrong layout: {exp}, "
            f"found shape {tuple(hshape)} dtype {np.dtype(hdtype).name}{' (Fortran order)' if fortran else ''}"
        )
    need = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if size < need:
        row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        rows = max(size - offset, 0) // max(row_bytes, 1)
        found = (rows,) + tuple(shape[1:])
        raise StoreError(
            f"{name} in shard {path.parent} is truncated: {exp} ({need} bytes), "
            f"found {size} bytes, i.e. data for shape {found}"
        )
    if size > need:
        raise StoreError(
            f"{name} in shard {path.parent} has {size - need} trailing bytes beyond {exp} ({need} bytes)"
        )


# ----------------------------------------------------------------------------- store


class ShardStore:
    """One shard: memory-mapped masks/outputs/done arrays plus meta.json. See the module docstring.

    Attributes: ``path``, ``meta`` (dict copy), ``masks`` (read-only bool [m, C] memmap),
    ``outputs`` ([m, N] memmap), ``done`` (bool [m] memmap).
    """

    def __init__(self, path: Path, meta: dict, readonly: bool):
        # Use ShardStore.open / ShardStore.create_or_open.
        self.path = Path(path)
        self._meta = meta
        self.readonly = readonly
        m, c, n = meta["m"], meta["n_components"], meta["n_examples"]
        dtype = np.dtype(meta["dtype"])
        for fname, shape, dt in (
            (MASKS_FILE, (m, c), np.dtype(bool)),
            (OUTPUTS_FILE, (m, n), dtype),
            (DONE_FILE, (m,), np.dtype(bool)),
        ):
            _check_array_file(self.path / fname, shape, dt)
        mode = "r" if readonly else "r+"
        self._masks = open_memmap(self.path / MASKS_FILE, mode="r")
        self._outputs = open_memmap(self.path / OUTPUTS_FILE, mode=mode)
        self._done = open_memmap(self.path / DONE_FILE, mode=mode)

    # --- construction

    @classmethod
    def open(cls, path, readonly: bool = False) -> "ShardStore":
        """Open an existing shard with the settings it was created with."""
        path = Path(path)
        if not path.is_dir():
            raise StoreError(f"shard {path} does not exist (or is not a directory)")
        return cls(path, read_meta(path), readonly)

    @classmethod
    def create_or_open(cls, path, meta: dict) -> "ShardStore":
        """Open the shard at ``path``, creating it (atomically) if it does not exist.

        An existing shard must have been created with the same (normalized) meta;
        otherwise StoreMismatchError lists every differing key. An existing empty
        directory counts as absent.
        """
        path = Path(path)
        requested = normalize_meta(meta)
        if not _is_empty_or_absent(path):
            return cls._open_matching(path, requested)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the directory of shard {path}: {e.strerror or e}") from e
        _clean_stale_tmp_dirs(path)
        tmp = path.parent / f"{_tmp_prefix(path)}{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            try:
                _build_shard(tmp, requested)
            except OSError as e:  # full disk, no permission, read-only filesystem: say which shard and why
                need = _shard_bytes(requested)
                where = f" ({Path(e.filename).name})" if e.filename else ""
                raise StoreError(f"cannot create shard {path} ({need:,} bytes, {need / 2**20:,.1f} MiB): "
                                 f"{e.strerror or e}{where}"
                                 + (" (free some space, or point the workflow at another disk)"
                                    if e.errno == errno.ENOSPC else "")) from e
            try:
                os.rename(tmp, path)  # replaces an empty directory; fails on a non-empty one
            except OSError:
                if _is_empty_or_absent(path):
                    raise
                # another process created the shard meanwhile: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
                return cls._open_matching(path, requested)
            _fsync_dir(path.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path, requested, readonly=False)

    @classmethod
    def _open_matching(cls, path: Path, requested: dict) -> "ShardStore":
        stored = read_meta(path)
        diffs = _meta_diff(stored, requested)
        if diffs:
            raise StoreMismatchError(
                f"shard {path} was created with other settings ({len(diffs)} differing key(s) in its {META_FILE}): "
                + "; ".join(diffs)
                + ". Use another directory, or the settings the shard was created with."
            )
        return cls(path, stored, readonly=False)

    # --- properties

    @property
    def meta(self) -> dict:
        return json.loads(json.dumps(self._meta))

    @property
    def masks(self) -> np.ndarray:
        """Read-only bool [m, C] keep masks."""
        return self._masks

    @property
    def outputs(self) -> np.ndarray:
        return self._outputs

    @property
    def done(self) -> np.ndarray:
        return self._done

    @property
    def n_rows(self) -> int:
        return self._meta["m"]

    @property
    def n_components(self) -> int:
        return self._meta["n_components"]

    @property
    def n_examples(self) -> int:
        return self._meta["n_examples"]

    @property
    def is_complete(self) -> bool:
        """True when every row's output is written (the COMPLETE marker may still be missing)."""
        return bool(np.all(self._done))

    @property
    def has_marker(self) -> bool:
        return (self.path / COMPLETE_FILE).is_file()

    def pending_rows(self) -> np.ndarray:
        """Sorted int64 indices of rows whose output is not written yet."""
        return np.flatnonzero(~np.asarray(self._done)).astype(np.int64)

    # --- writing

    def write(self, rows, outputs) -> None:
        """Store ``outputs`` ([len(rows), N]) for ``rows``; outputs reach disk before the done flags.

        Raises StoreError on non-finite outputs (or values that overflow the storage dtype),
        naming the rows; nothing is written in that case.
        """
        if self.readonly:
            raise StoreError(f"shard {self.path} was opened read-only")
        if self.has_marker:
            raise StoreError(f"shard {self.path} is complete (has a {COMPLETE_FILE} marker); refusing to modify it")
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise ShapeError(f"rows must be a 1-D integer array, got shape {rows.shape} dtype {rows.dtype}")
        rows = rows.astype(np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise ShapeError(f"rows must be in [0, {self.n_rows}), got min {rows.min()} max {rows.max()}")
        if np.unique(rows).size != rows.size:
            raise ShapeError("rows must not repeat")
        outputs = _to_numpy(outputs)
        if outputs.shape != (rows.size, self.n_examples):
            raise ShapeError(
                f"outputs must be [len(rows), N] = [{rows.size}, {self.n_examples}], got shape {outputs.shape}"
            )
        if not np.issubdtype(outputs.dtype, np.number) or np.issubdtype(outputs.dtype, np.complexfloating):
            raise ShapeError(f"outputs must be real numbers, got dtype {outputs.dtype}")
        finite = np.isfinite(outputs)
        bad = ~finite.all(axis=1)
        if bad.any():
            raise StoreError(
                f"non-finite outputs (NaN/inf) for shard {self.path} rows {_fmt_rows(rows[bad])}, first at "
                f"{_first_bad(rows, finite, outputs)}; nothing written"
            )
        with np.errstate(over="ignore"):
            cast = outputs.astype(self._outputs.dtype)
        finite = np.isfinite(cast)
        bad = ~finite.all(axis=1)
        if bad.any():
            raise StoreError(
                f"outputs overflow {self._outputs.dtype} (max {np.finfo(self._outputs.dtype).max}) for shard "
                f"{self.path} rows {_fmt_rows(rows[bad])}, first at {_first_bad(rows, finite, outputs)}; create "
                "the shard with dtype 'float32'; nothing written"
            )
        if rows.size == 0:
            return
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo == rows.size and np.all(np.diff(rows) == 1):
            self._outputs[lo:hi] = cast
        else:
            self._outputs[rows] = cast
        self._outputs.flush()  # msync: outputs are on disk before any done flag says so
        self._done[rows] = True
        self._done.flush()

    def write_marker(self) -> dict:
        """Write the COMPLETE marker (checksums of the shard files). The shard must be complete."""
        if not self.is_complete:
            raise StoreError(f"shard {self.path} has {self.pending_rows().size} pending rows; cannot mark complete")
        self._outputs.flush()
        self._done.flush()
        record = {
            "format_version": FORMAT_VERSION,
            "algorithm": "sha256",
            "files": {f: _sha256_file(self.path / f) for f in CHECKSUM_FILES},
        }
        _write_text_atomic(self.path / COMPLETE_FILE, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return record

    def verify(self) -> dict:
        return verify(self.path)

    def close(self) -> None:
        for name in ("_masks", "_outputs", "_done"):
            arr = getattr(self, name, None)
            if arr is not None and not self.readonly and name != "_masks":
                arr.flush()
            setattr(self, name, None)

    def __enter__(self) -> "ShardStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        done = int(np.count_nonzero(self._done)) if self._done is not None else "?"
        return f"ShardStore({str(self.path)!r}, rows={self.n_rows}, done={done})"


def _is_empty_or_absent(path: Path) -> bool:
    if not path.exists():
        return True
    return path.is_dir() and not any(path.iterdir())


def _shard_bytes(meta: dict) -> int:
    m, c, n = meta["m"], meta["n_components"], meta["n_examples"]
    return m * c + m * n * np.dtype(meta["dtype"]).itemsize + m


def _reserve(path: Path) -> None:
    """Allocate a (sparse) file's blocks now: a full disk then fails here with ENOSPC, not later inside a
    memory-mapped write, where it would kill the process with SIGBUS."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, path.stat().st_size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):  # filesystems without fallocate
            if e.filename is None:
                e.filename = str(path)
            raise
    finally:
        os.close(fd)


def _allocate(path: Path, dtype, shape: tuple) -> np.memmap:
    """A new .npy file of `shape` with every block reserved (see _reserve), mapped for writing. The file is
    made sparse and reserved before it is mapped, so no write into the map can meet a full disk."""
    arr = open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # header + a sparse body, nothing mapped written
    del arr
    _reserve(path)
    return open_memmap(path, mode="r+")


def _build_shard(tmp: Path, meta: dict) -> None:
    tmp.mkdir()
    m, c, n = meta["m"], meta["n_components"], meta["n_examples"]
    masks = _allocate(tmp / MASKS_FILE, bool, (m, c))
    outputs = _allocate(tmp / OUTPUTS_FILE, np.dtype(meta["dtype"]), (m, n))  # zero-filled
    done = _allocate(tmp / DONE_FILE, bool, (m,))
    del outputs, done
    row = 0
    for chunk in iter_mask_chunks(c, m, meta["alpha"], meta["seed"], meta["shard"], meta["scheme"]):
        masks[row : row + len(chunk)] = chunk
        row += len(chunk)
    if row != m:
        raise StoreError(f"mask generator produced {row} rows, expected {m}")
    masks.flush()
    del masks
    with open(tmp / META_FILE, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    for fname in (MASKS_FILE, OUTPUTS_FILE, DONE_FILE, META_FILE):
        _fsync_file(tmp / fname)
    _fsync_dir(tmp)


def _first_bad(rows: np.ndarray, finite: np.ndarray, outputs: np.ndarray) -> str:
    """'row (mask) r, example e (value v)' of the first False in `finite` [len(rows), N]."""
    i, e = (int(v) for v in np.argwhere(~finite)[0])
    return f"row (mask) {int(rows[i])}, example {e} (value {outputs[i, e]})"


def _fmt_rows(rows: np.ndarray, limit: int = 10) -> str:
    rows = [int(r) for r in rows]
    s = ", ".join(map(str, rows[:limit]))
    return f"[{s}{', ...' if len(rows) > limit else ''}] ({len(rows)} row(s))"


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach()
        if getattr(x, "dtype", None) is not None and "bfloat16" in str(x.dtype):
            x = x.float()
        x = x.cpu().numpy()
    return np.asarray(x)


def read_meta(path) -> dict:
    """The normalized meta of the shard at ``path``."""
    path = Path(path)
    f = path / META_FILE
    if not f.is_file():
        raise StoreError(f"{path} is not a shard: {META_FILE} is missing")
    try:
        raw = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise StoreError(f"{META_FILE} of shard {path} is unreadable: {e}") from None
    try:
        return normalize_meta(raw)
    except StoreError as e:
        raise StoreError(f"{META_FILE} of shard {path} is invalid: {e}") from None


# ----------------------------------------------------------------------------- running


def run_shard(
    store: ShardStore,
    evaluate_fn: Callable[[np.ndarray], np.ndarray],
    masks_per_call: int = 32,
    progress: bool = True,
) -> int:
    """Evaluate every pending row of ``store`` and write the COMPLETE marker at the end.

    ``evaluate_fn(keep)`` gets a bool ndarray [k, C] (k <= masks_per_call, a copy) and must
    return [k, N] outputs (ndarray or torch tensor). Safe to kill at any point and rerun.
    Returns the number of rows evaluated by this call.
    """
    if isinstance(masks_per_call, bool) or not isinstance(masks_per_call, numbers.Integral) or masks_per_call < 1:
        raise ValueError(f"masks_per_call must be a positive integer, got {masks_per_call!r}")
    with _writer_lock(store.path) if store.pending_rows().size else contextlib.nullcontext():
        pending = store.pending_rows()  # after the lock: what a writer that just finished left to do
        written = _fill(store, evaluate_fn, masks_per_call, progress, pending)
        if store.is_complete and not store.has_marker:
            store.write_marker()
    return written


def _fill(store: ShardStore, evaluate_fn, masks_per_call: int, progress: bool, pending: np.ndarray) -> int:
    total = store.n_rows
    written = 0
    bar = None
    if progress and pending.size:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=total - pending.size, unit="mask", desc=f"shard {store.path.name}")
    # Rows are evaluated in ALIGNED blocks [b*k, (b+1)*k): a resumed run feeds every row through exactly
    # the same batch as an uninterrupted run, so float results (whose rounding can depend on the batch
    # composition) are bitwise identical. Done rows inside a partly done block are recomputed, not rewritten.
    pending_set = np.zeros(total, dtype=bool)
    pending_set[pending] = True
    try:
        for start in range(0, total, masks_per_call):
            stop = min(start + masks_per_call, total)
            todo = pending_set[start:stop]
            if not todo.any():
                continue
            keep = np.array(store.masks[start:stop])
            out = _to_numpy(evaluate_fn(keep))
            if out.shape != (stop - start, store.n_examples):
                raise ShapeError(
                    f"evaluate_fn returned shape {out.shape} for {stop - start} masks; "
                    f"expected [{stop - start}, {store.n_examples}]"
                )
            rows = np.arange(start, stop)[todo]
            store.write(rows, out[todo])
            written += rows.size
            if bar is not None:
                bar.update(rows.size)
    finally:
        if bar is not None:
            bar.close()
    return written


@contextlib.contextmanager
def _writer_lock(path: Path):
    """Hold an exclusive flock on <shard>/.writer.lock, refusing at once (StoreError naming the holder) when
    another process holds it. No lock where the file cannot be made or the filesystem has no flock."""
    import fcntl

    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
                raise StoreError(f"shard {path} is being filled by {holder} right now; wait for it to finish "
                                 "(a rerun then finds the shard complete, or resumes it if that process died), "
                                 "or stop that process") from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
                os.close(fd)
                fd = None
            else:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------- reading


def verify(path) -> dict:
    """Recompute the checksums of a complete shard and compare them with its COMPLETE marker.

    Returns the marker record; raises StoreError naming the shard and every file that differs
    (or when the marker is missing or unreadable).
    """
    path = Path(path)
    marker = path / COMPLETE_FILE
    if not marker.is_file():
        raise StoreError(f"shard {path} has no {COMPLETE_FILE} marker (not finished, or not a shard)")
    try:
        record = json.loads(marker.read_text())
        expected = record["files"]
        if not isinstance(expected, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StoreError(f"{COMPLETE_FILE} marker of shard {path} is unreadable: {e}") from None
    bad = []
    for fname in CHECKSUM_FILES:
        f = path / fname
        if fname not in expected:
            bad.append(f"{fname}: no checksum in the marker")
        elif not f.is_file():
            bad.append(f"{fname}: missing")
        else:
            got = _sha256_file(f)
            if got != expected[fname]:
                bad.append(f"{fname}: sha256 {got[:16]}... != recorded {str(expected[fname])[:16]}...")
    if bad:
        raise StoreError(f"shard {path} is corrupted (checksum mismatch between its files and its {COMPLETE_FILE} "
                         "marker): " + "; ".join(bad))
    return record


def load_shards(
    paths: Iterable,
    chunk_rows: int = 4096,
    dtype=np.float32,
    check: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(keep [k, C] bool, outputs [k, N])`` chunks over complete, verified shards.

    Every shard is opened, checked complete and (``check=True``) verified before the first
    chunk is yielded. Shards must agree on :data:`DATASET_KEYS` (StoreMismatchError otherwise)
    and must not repeat a (seed, shard, alpha, scheme) combination (identical masks).
    ``dtype`` is the dtype outputs are yielded in (``None``: as stored).
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    paths = [Path(p) for p in paths]
    if not paths:
        raise StoreError("load_shards got no shard paths")
    stores = []
    first = None
    seen = {}
    for p in paths:
        store = ShardStore.open(p, readonly=True)
        if check and store.has_marker:  # before its done flags are believed: a corrupted done.npy is a checksum
            verify(p)                   # mismatch, not unfinished rows
        pending = store.pending_rows().size
        if pending:
            raise StoreError(f"shard {p} is incomplete: {pending} of {store.n_rows} rows pending")
        if check and not store.has_marker:
            verify(p)  # raises: every row done, but no COMPLETE marker
        meta = store.meta
        if first is None:
            first = (p, meta)
        else:
            diffs = [
                f"{k}: {first[0]} has {first[1].get(k)!r}, {p} has {meta.get(k)!r}"
                for k in DATASET_KEYS
                if first[1].get(k) != meta.get(k)
            ]
            if diffs:
                raise StoreMismatchError("shards do not belong to one data set: " + "; ".join(diffs))
        ident = (meta["seed"], meta["shard"], meta["alpha"], meta["scheme"])
        if ident in seen:
            raise StoreError(
                f"shards {seen[ident]} and {p} have the same (seed, shard, alpha, scheme) = {ident}, "
                "hence identical masks; drop one"
            )
        seen[ident] = p
        stores.append(store)
    return _iter_chunks(stores, chunk_rows, dtype)


def _iter_chunks(stores, chunk_rows, dtype):
    for store in stores:
        for lo in range(0, store.n_rows, chunk_rows):
            hi = min(lo + chunk_rows, store.n_rows)
            keep = np.array(store.masks[lo:hi])
            out = np.array(store.outputs[lo:hi], dtype=dtype) if dtype is not None else np.array(store.outputs[lo:hi])
            yield keep, out
        store.close()
