"""Datasets and fixed evaluation sets (uint8 tensors, normalised on the fly)."""
from .fashion_mnist import DEBIAN_ROOT, find_fashion_mnist, load_fashion_mnist, read_idx, write_idx
from .examples import Examples, normalize

__all__ = ["DEBIAN_ROOT", "find_fashion_mnist", "load_fashion_mnist", "read_idx", "write_idx", "Examples",
           "normalize"]
