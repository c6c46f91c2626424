"""Sizes checked before allocating: a request that cannot fit in the memory available (or on a disk) is refused
with the estimate and what to change, instead of running until MemoryError or a full disk."""
from __future__ import annotations

from .errors import ArgumentError


def size_text(n: float) -> str:
    """A byte count in words: 512 bytes, 1.5 KiB, 21.1 GiB, ..."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (psutil's estimate)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(need: float, argument: str, what: str, advice: str) -> None:
    """Refuse, naming `argument`, a request for `need` bytes (`what` says of what) above the memory available."""
    available = available_memory()
    if need > available:
        raise ArgumentError(argument, f"{what} need about {size_text(need)} of memory, more than the "
                                      f"{size_text(available)} available; {advice}")
