"""Output paths checked before any work: a run that would fail to write its result fails at once, naming the
path, instead of after hours of compute. Shared by the `coar` commands and the benchmark scripts."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import CoarError


def check_output_file(path: str | None, flag: str = "--out") -> None:
    """Refuse an output file name that is an existing directory, or that cannot be written (see check_output_path),
    before any work."""
    if path is not None and Path(path).is_dir():
        raise CoarError(f"{flag} {path} is a directory; give a file name")
    check_output_path(path, flag)


def check_output_path(path: str | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output path (file or directory) that cannot be made: one under a file, or
    whose nearest existing directory is not writable. Missing parent directories are created by the writers
    (as the workflow's output paths need), so they are refused only when they cannot be."""
    if path is None:
        return
    p = Path(path).absolute()
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CoarError(f"{flag} {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CoarError(f"{flag} {path}: the directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise CoarError(f"{flag} {path} exists and is not writable")
