"""Atomic file writes (a crash never leaves a half-written file under its final name) and file hashes."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks (the one file hash of stores, data sources and weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_savez(path: str | os.PathLike, header: dict | None = None, **arrays) -> None:
    """np.savez to `path` via a temporary sibling + fsync + os.replace; `header` is stored as JSON bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if header is not None:
        arrays["header"] = np.frombuffer(json.dumps(header, default=str).encode(), dtype=np.uint8)
    _write_then_replace(path, "wb", lambda fh: np.savez(fh, **arrays))


def _write_then_replace(path: Path, mode: str, write) -> None:
    """write(fh) into `path`.tmp, fsync, os.replace onto `path`; the temporary file is removed on any failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # fsync, write: say which file
            exc.filename = str(path)
        raise


def read_header(z) -> dict:
    """The JSON header stored by atomic_savez in an open np.load archive."""
    return json.loads(bytes(z["header"]).decode())


def check_file(path: Path, what: str) -> None:
    """StoreError naming `what` and `path` unless `path` is an existing regular file."""
    from .errors import StoreError

    if not path.exists():
        raise StoreError(f"{what} file not found: {path}")
    if not path.is_file():
        raise StoreError(f"{what} file {path} is {'a directory' if path.is_dir() else 'not a regular file'}, "
                         "not a file coar wrote")


def load_npz(path: str | os.PathLike, what: str, keys: tuple[str, ...],
             header_keys: tuple[str, ...] | None = ()) -> tuple[dict, dict | None]:
    """(arrays named `keys`, JSON header) of a file written by atomic_savez. The header must be a JSON object
    holding `header_keys`; header_keys=None: the file has no header (None is returned for it). A missing,
    truncated, corrupted or incomplete file raises StoreError naming `what` and the path, never a half-read
    result."""
    from .errors import StoreError

    path = Path(path)
    check_file(path, what)
    expected = keys if header_keys is None else (*keys, "header")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in expected if k not in z.files]
            if not missing:
                arrays = {k: z[k] for k in keys}
                header = None if header_keys is None else read_header(z)
    except Exception as exc:  # BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError...
        raise StoreError(f"{what} file {path} is unreadable or truncated (not a readable .npz: {exc})") from exc
    if missing:
        raise StoreError(f"{what} file {path} is not one coar wrote: it lacks {', '.join(map(repr, missing))}")
    if header_keys is not None:
        if not isinstance(header, dict):
            raise StoreError(f"{what} file {path} is not one coar wrote: its header is a {type(header).__name__}, "
                             "not a JSON object")
        lacking = [k for k in header_keys if k not in header]
        if lacking:
            raise StoreError(f"{what} file {path} is not one coar wrote: its header lacks "
                             f"{', '.join(map(repr, lacking))}")
    return arrays, header


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` via a temporary sibling + fsync + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_then_replace(path, "w", lambda fh: fh.write(text))


def atomic_write_csv(table, path: str | os.PathLike) -> None:
    """A pandas DataFrame as CSV (no index), atomically."""
    atomic_write_text(path, table.to_csv(index=False))
