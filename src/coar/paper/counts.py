"""Component counts C of registry models, for checks made before anything runs (the workflow's plan-time
check that every alpha ablates round(alpha * C) >= 1 components).

Counting builds the model on the meta device (shapes only, nothing downloaded), which needs torch and, for
some models, torchvision or transformers: 2 to 4 s of imports on a CPU core. The counts are therefore kept
in a small JSON file under the user's cache directory ($XDG_CACHE_HOME or ~/.cache, coar/), named by a hash
of the code that determines them (coar's component tables and model definitions, and the versions of torch,
torchvision and transformers), so a plan pays the imports once, not every time. Each count is stored with a
checksum: a count a corruption changed is counted again, not believed. This module imports nothing
heavy itself.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

_MEMORY: dict[str, int] = {}


def _cache_file() -> Path:
    here = Path(__file__).resolve().parent
    engine = here.parent
    h = hashlib.sha256()
    for p in sorted([engine / "components.py", engine / "attention.py", *(here / "models").glob("*.py")]):
        h.update(p.name.encode() + p.read_bytes())
    for dist in ("torch", "torchvision", "transformers"):
        try:
            h.update(f"{dist}={metadata.version(dist)}".encode())
        except metadata.PackageNotFoundError:
            pass
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "coar" / f"component-counts-{h.hexdigest()[:16]}.json"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _tag(key: str, count: int) -> str:
    """A short checksum stored with each count: a count a corruption changed no longer matches it."""
    return hashlib.sha256(f"{key}={count}".encode()).hexdigest()[:12]


def component_count(model: str, table: str | None = None, num_classes: int = 10, in_channels: int = 3,
                    image_size: int = 32, cache: bool = True) -> int:
    """C of component table `table` (default: the model's own) on registry model `model` built with these
    arguments (random-init shape; a Hugging Face model's shape is the registry's configuration, not a hub's).
    Raises CoarError for an unknown model or table."""
    table = table or model
    key = json.dumps([model, table, int(num_classes), int(in_channels), int(image_size)])
    if key in _MEMORY:
        return _MEMORY[key]
    path = _cache_file() if cache else None
    stored = _read(path) if path is not None else {}
    entry = stored.get(key)
    if (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int and entry[0] > 0
            and entry[1] == _tag(key, entry[0])):  # [count, checksum]: a corrupted entry is counted again
        _MEMORY[key] = entry[0]
        return entry[0]
    from ..components import component_set
    from .models import build_model

    built = build_model(model, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        device="meta")
    count = component_set(built, table).size
    _MEMORY[key] = count
    if path is not None:
        stored = {**_read(path), key: [count, _tag(key, count)]}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(stored, indent=1, sort_keys=True))
            os.replace(tmp, path)
        except OSError:  # a read-only home: count again next time
            tmp.unlink(missing_ok=True)
    return count
