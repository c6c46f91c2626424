"""The workflow's receipts: small JSON files a rule writes once its heavy output is complete, and which later
rules read instead of that output.

- A shard receipt (rule ``sample_shard``, ``results/<setup>/masks/<split>/shard-<s>.json``) names one mask
  store, its metadata and its checksums (the record coar.store.verify returns).
- A split receipt (rule ``gather_masks``, ``results/<setup>/masks/<split>.json``) lists the stores of a split
  (training masks, or evaluation masks at one alpha), their number of masks and their alpha.

Both are written atomically and read back with the rules they are written by: a receipt that is missing,
unreadable or not of its kind is refused naming the file and the rule that makes it.
"""
from __future__ import annotations

import json
import numbers
from pathlib import Path

from ..errors import CoarError
from ..io import atomic_write_text


def _is_count(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0


def _is_alpha(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 < v < 1


def shard_problem(receipt) -> str | None:
    """What is wrong with a shard receipt ({"store", "meta", "checksums"}), or None."""
    if not isinstance(receipt, dict):
        return f"it holds a {type(receipt).__name__}, not an object"
    if not isinstance(receipt.get("store"), str) or not receipt["store"]:
        return "'store' must name the mask store"
    meta = receipt.get("meta")
    if not isinstance(meta, dict) or not _is_count(meta.get("m")) or not _is_alpha(meta.get("alpha")):
        return "'meta' must be the store's metadata, with its number of masks m and its alpha"
    files = receipt.get("checksums", {}).get("files") if isinstance(receipt.get("checksums"), dict) else None
    if not isinstance(files, dict) or not files or not all(isinstance(v, str) for v in files.values()):
        return "'checksums' must be the store's COMPLETE record, its 'files' mapping each file to its checksum"
    return None


def split_problem(receipt) -> str | None:
    """What is wrong with a split receipt ({"stores", "masks", "alpha"}), or None."""
    if not isinstance(receipt, dict):
        return f"it holds a {type(receipt).__name__}, not an object"
    stores = receipt.get("stores")
    if not (isinstance(stores, list) and stores and all(isinstance(s, str) and s for s in stores)):
        return "'stores' must be a non-empty list of store paths"
    if not _is_count(receipt.get("masks")) or not _is_alpha(receipt.get("alpha")):
        return "'masks' must be a number of masks and 'alpha' an ablation fraction in (0, 1)"
    return None


def _write(path, receipt: dict, problem) -> None:
    why = problem(receipt)
    if why is not None:
        raise CoarError(f"refusing to write the receipt {path}: {why}")
    atomic_write_text(path, json.dumps(receipt, indent=1, default=str))


def _read(path, problem, kind: str, rule: str) -> dict:
    try:
        receipt = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CoarError(f"{path} is missing: it is written by the rule {rule} (snakemake {path})") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CoarError(f"{path} is not a readable {kind} receipt ({exc}); remove it and run "
                        f"snakemake {path}") from None
    why = problem(receipt)
    if why is not None:
        raise CoarError(f"{path} is not a {kind} receipt: {why}; remove it and run snakemake {path}")
    return receipt


def write_shard(path, store: str, meta: dict, checksums: dict) -> None:
    _write(path, {"store": store, "meta": meta, "checksums": checksums}, shard_problem)


def read_shard(path) -> dict:
    return _read(path, shard_problem, "shard", "sample_shard")


def write_split(path, stores: list, masks: int, alpha: float) -> None:
    _write(path, {"stores": stores, "masks": masks, "alpha": alpha}, split_problem)


def read_split(path) -> dict:
    return _read(path, split_problem, "split", "gather_masks")
