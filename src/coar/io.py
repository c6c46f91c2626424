"""Atomic file writes: a crash never leaves a half-written file under its final name."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def atomic_savez(path: str | os.PathLike, header: dict | None = None, **arrays) -> None:
    """np.savez to `path` via a temporary sibling + fsync + os.replace; `header` is stored as JSON bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if header is not None:
        arrays["header"] = np.frombuffer(json.dumps(header, default=str).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_header(z) -> dict:
    """The JSON header stored by atomic_savez in an open np.load archive."""
    return json.loads(bytes(z["header"]).decode())
