"""Fashion-MNIST from its IDX files: Debian's dataset-fashion-mnist package (offline), an explicit directory,
or torchvision's download (online). The IDX parser validates magic numbers, dimensions and sizes, so a
truncated or corrupted file is reported by name, never used.
"""
from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from ...errors import CoarError
from ...examples import Examples

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise CoarError(f"IDX file {path} is unreadable or truncated: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise CoarError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise CoarError(f"IDX file {path}: header says shape {dims} ({expected} bytes), file has {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array in IDX format (gzip if the name ends in .gz); used by tests to make real-format files."""
    array = np.asarray(array)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}[array.dtype]
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as fh:
        fh.write(payload)


def _candidates(root):
    """Where to look: only `root` when it is given (another copy found elsewhere would be used silently in its
    place), else $COAR_FASHION_MNIST and Debian's package."""
    if root is not None:
        yield Path(root)
        return
    if os.environ.get("COAR_FASHION_MNIST"):
        yield Path(os.environ["COAR_FASHION_MNIST"])
    yield DEBIAN_ROOT


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path | None:
    """The directory holding the four IDX files (gzipped or not): `root` or its FashionMNIST/raw when root is
    given, else $COAR_FASHION_MNIST or Debian's package; None when there is none."""
    for cand in _candidates(root):
        for sub in (cand, cand / "FashionMNIST" / "raw"):
            if all((sub / f"{n}.gz").exists() or (sub / n).exists() for pair in FILES.values() for n in pair):
                return sub
    return None


def _file(d: Path, name: str) -> Path:
    return d / f"{name}.gz" if (d / f"{name}.gz").exists() else d / name


def load_fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, download: bool = False):
    """(images uint8 [N, 28, 28], labels int64 [N]). Looks in root, $COAR_FASHION_MNIST, Debian's package;
    with download=True falls back to torchvision's download into root (needs network)."""
    if split not in FILES:
        raise CoarError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    d = find_fashion_mnist(root)
    if d is None:
        if not download and root is not None:
            missing = [n for pair in FILES.values() for n in pair if not _file(Path(root), n).exists()]
            raise CoarError(f"Fashion-MNIST not found in {root}" + (" (no such directory)" if not Path(root).is_dir()
                                                                    else f": missing {', '.join(missing)}")
                            + "; give the directory with the four IDX files")
        if not download:
            raise CoarError("Fashion-MNIST not found: install Debian's dataset-fashion-mnist "
                            "(apt-get install dataset-fashion-mnist), set COAR_FASHION_MNIST to a directory with "
                            "the four IDX files, or pass download=True (needs network)")
        from torchvision.datasets import FashionMNIST

        target = Path(root or "data/raw")
        made = [p for p in (target, target / "FashionMNIST") if not p.exists()]
        try:
            FashionMNIST(str(target), train=True, download=True)  # verifies torchvision's MD5 checksums
            FashionMNIST(str(target), train=False, download=True)
        except Exception as exc:  # offline, a proxy, a checksum mismatch: nothing half-downloaded is left
            if made:
                shutil.rmtree(made[0], ignore_errors=True)
            raise CoarError(f"Fashion-MNIST is not in {target} and could not be downloaded there: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        d = target / "FashionMNIST" / "raw"
    images, labels = (read_idx(_file(d, n)) for n in FILES[split])
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise CoarError(f"Fashion-MNIST {split} in {d}: images {images.shape} and labels {labels.shape} disagree")
    if labels.max(initial=0) >= 10:
        raise CoarError(f"Fashion-MNIST {split} in {d}: label {labels.max()} outside 0..9")
    return images, labels.astype(np.int64)


def fashion_mnist_examples(split: str, n: int | None = None, seed: int = 0, root=None, pad_to: int | None = None,
                           channels: int = 1) -> Examples:
    """A fixed Fashion-MNIST example set: the first n of a seeded permutation (all if n is None)."""
    images, labels = load_fashion_mnist(split, root)
    idx = np.arange(len(images))
    if n is not None:
        if n > len(images):
            raise CoarError(f"asked for {n} {split} examples, Fashion-MNIST {split} has {len(images)}")
        idx = np.sort(np.random.default_rng(seed).permutation(len(images))[:n])
    if pad_to is not None and pad_to < images.shape[-1]:
        raise CoarError(f"pad_to {pad_to} is smaller than Fashion-MNIST's {images.shape[-2]} x {images.shape[-1]} "
                        "images; padding never crops (leave it out, or give a size >= "
                        f"{images.shape[-1]})")
    x = images[idx][:, None]
    if pad_to is not None and pad_to > x.shape[-1]:
        p = (pad_to - x.shape[-1]) // 2
        x = np.pad(x, ((0, 0), (0, 0), (p, pad_to - x.shape[-1] - p), (p, pad_to - x.shape[-1] - p)))
    if channels > 1:
        x = np.repeat(x, channels, axis=1)
    return Examples(np.ascontiguousarray(x), labels[idx], "image",
                    {"dataset": "fashion-mnist", "split": split, "indices": idx.tolist() if n is not None else None,
                     "mean": 0.2860, "std": 0.3530})
