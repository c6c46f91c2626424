"""CIFAR-10 (Krizhevsky, 2009) from its python release, `cifar-10-python.tar.gz`, unpacked as

    <root>/cifar-10-batches-py/data_batch_1 ... data_batch_5   training batches (10,000 images each)
    <root>/cifar-10-batches-py/test_batch                      the 10,000 test images
    <root>/cifar-10-batches-py/batches.meta                    label_names (10), num_cases_per_batch

Each batch is a pickled dict with `data` (uint8 [n, 3072]: the red, green and blue 32 x 32 planes of an image
per row) and `labels` (n ints in 0..9).

Two ways in:
  * placed copy: when the folder holds all seven files, they are read here (no torchvision), whoever put them
    there: every file's structure is checked (keys, 3,072 bytes per row, labels in range, consistent counts),
    and its SHA-256 is recorded beside it at its first use (`<file>.sha256`, coar.paper.data.images.check_recorded)
    and checked on every later one, so a file changed or damaged since is reported, never used. This is how a
    copy from another machine, a cluster's shared copy or a miniature one (workflow/rehearsal) is used:
    torchvision's own loader accepts only the official files (their MD5 sums).
  * download: otherwise the release is downloaded (torchvision's download; from COAR_DATA_MIRROR when it is set,
    coar.paper.data.mirror's), checked against the release's MD5 sum (or the mirror's SHA256SUMS when it lists the
    tarball), then read as above.

The batches are pickles, unpickled with a restricted unpickler that only rebuilds numpy arrays, lists and
strings, so a placed file cannot run code.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from ...errors import CoarError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
FILES = (*TRAIN_FILES, TEST_FILE, META_FILE)
CLASSES = 10
ROW = 3 * 32 * 32

# what a CIFAR-10 batch pickle may reference: numpy's array reconstruction (numpy 1.x and 2.x module names)
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
            ("__builtin__", "object"), ("builtins", "object")}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR-10 batch holds only arrays, "
                                         f"lists and strings)")
        return super().find_class(module, name)


def placed(root: str | os.PathLike) -> bool:
    """Whether `root` holds all seven files of the python release."""
    folder = Path(root) / FOLDER
    return all((folder / name).is_file() for name in FILES)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            entry = _Unpickler(fh, encoding="latin1").load()  # the release was pickled by Python 2
    except (OSError, EOFError, ValueError, TypeError, AttributeError, IndexError, pickle.UnpicklingError) as exc:
        raise CoarError(f"CIFAR-10 file {path} cannot be read as a batch pickle (truncated or not CIFAR-10?): "
                        f"{exc}") from exc
    if not isinstance(entry, dict):
        raise CoarError(f"CIFAR-10 file {path} holds a {type(entry).__name__}, not the release's dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, 3, 32, 32], int64 [n]) of one batch file, its structure checked."""
    entry = _unpickle(path)
    missing = [k for k in ("data", "labels") if k not in entry]
    if missing:
        raise CoarError(f"CIFAR-10 file {path} lacks the key(s) {missing} (has {sorted(entry)})")
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise CoarError(f"CIFAR-10 file {path}: `data` must be uint8 rows of {ROW} bytes, found "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    try:
        labels = np.asarray(entry["labels"])
    except (TypeError, ValueError) as exc:
        raise CoarError(f"CIFAR-10 file {path}: `labels` is not a list of class indices ({exc})") from exc
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CoarError(f"CIFAR-10 file {path}: `labels` must be a list of integers, found {labels.dtype} "
                        f"{labels.shape}")
    if len(labels) != len(data):
        raise CoarError(f"CIFAR-10 file {path}: {len(data)} images but {len(labels)} labels")
    if not len(data):
        raise CoarError(f"CIFAR-10 file {path} holds no images")
    if labels.min() < 0 or labels.max() >= CLASSES:
        raise CoarError(f"CIFAR-10 file {path}: labels must lie in 0..{CLASSES - 1}, found {labels.min()}.."
                        f"{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_placed(root: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 3, 32, 32], int64 [N]) of a split ("train" or "test") from the seven files under
    root/cifar-10-batches-py: all of them checked (structure, and the SHA-256 recorded at their first use)."""
    from .images import check_recorded, hash_records

    if split not in ("train", "test"):
        raise CoarError(f"CIFAR-10 split must be train or test, got {split!r}")
    folder = Path(root) / FOLDER
    paths = [folder / name for name in FILES]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise CoarError(f"CIFAR-10 placed copy in {folder} is incomplete: {absent} missing")
    refetch = f"place it again (or delete {folder} to download the release)"
    recorded = [p for p in paths if hash_records(p)]  # beside it, or in the records directory
    for p in recorded:  # hashes first: a file changed since its first use is never unpickled
        check_recorded(p, refetch)
    meta = _unpickle(folder / META_FILE)
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or len(names) != CLASSES or not all(isinstance(n, str) for n in names):
        raise CoarError(f"CIFAR-10 file {folder / META_FILE}: `label_names` must list the {CLASSES} class names, "
                        f"found {names!r}"[:400])
    batches = {name: _batch(folder / name) for name in (*TRAIN_FILES, TEST_FILE)}
    sizes = {name: len(batches[name][1]) for name in TRAIN_FILES}
    per_batch = meta.get("num_cases_per_batch")
    if len(set(sizes.values())) != 1 or (per_batch is not None and per_batch != sizes[TRAIN_FILES[0]]):
        raise CoarError(f"CIFAR-10 placed copy in {folder}: the training batches hold {sizes} images"
                        + (f", {META_FILE} says {per_batch} each" if per_batch is not None else "")
                        + "; the files are not of one release")
    train_labels = np.concatenate([batches[name][1] for name in TRAIN_FILES])
    if len(np.unique(train_labels)) != CLASSES:
        raise CoarError(f"CIFAR-10 placed copy in {folder}: the training batches hold only the classes "
                        f"{np.unique(train_labels).tolist()}")
    for p in paths:
        if p not in recorded:
            check_recorded(p, refetch)  # valid: its hash is recorded now
    if split == "test":
        return np.ascontiguousarray(batches[TEST_FILE][0]), batches[TEST_FILE][1]
    return (np.ascontiguousarray(np.concatenate([batches[name][0] for name in TRAIN_FILES])), train_labels)


def download_release(root: str | os.PathLike) -> None:
    """The download of cifar-10-python.tar.gz into `root`: torchvision's from the release URL, checked against
    the release's MD5 sum; from COAR_DATA_MIRROR when it is set (coar.paper.data.mirror.download: torchvision's
    downloader cannot read file:// URLs), checked against the mirror's SHA-256 when its SHA256SUMS lists the
    tarball, else against the release's MD5 sum."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_url, extract_archive

    from .mirror import check_mirrored, download, mirror_base, mirror_sha256, mirrored

    root = Path(root)
    archive = root / CIFAR10.filename
    url = mirrored(CIFAR10.url)
    try:
        if mirror_base() is None:
            download_url(url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
        else:
            download(CIFAR10.url, archive)
            if mirror_sha256(CIFAR10.url) is None and not check_integrity(str(archive), CIFAR10.tgz_md5):
                archive.unlink()
                Path(f"{archive}.sha256").unlink(missing_ok=True)  # the hash recorded at this download
                raise CoarError(f"the archive does not have the release's MD5 sum {CIFAR10.tgz_md5} (and the "
                                f"mirror's SHA256SUMS lists none for it); it was deleted")
    except Exception as exc:
        raise CoarError(f"CIFAR-10 could not be downloaded from {url} into {root}: {exc}") from exc
    if not archive.is_file():  # torchvision reports a failed MD5 check by leaving no file behind
        raise CoarError(f"CIFAR-10 could not be downloaded from {url} into {root}: no verified archive arrived")
    check_mirrored(CIFAR10.url, archive)
    extract_archive(str(archive), str(root))


def load_cifar10(split: str, root: str | os.PathLike, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [N, 3, 32, 32], int64 [N]) of CIFAR-10's train or test split under `root` (see the module
    docstring: a placed copy is read and checked here; without one, the release is downloaded if allowed)."""
    root = Path(root)
    if not placed(root):
        if not download:
            present = sorted(p.name for p in (root / FOLDER).iterdir()) if (root / FOLDER).is_dir() else []
            raise CoarError(f"CIFAR-10 could not be loaded from {root}: {root / FOLDER} must hold {list(FILES)} "
                            f"(found {present or 'nothing'}); download the release "
                            f"(https://www.cs.toronto.edu/~kriz/cifar.html) or allow the download")
        download_release(root)
        if not placed(root):
            raise CoarError(f"CIFAR-10 could not be loaded from or downloaded into {root}: the downloaded archive "
                            f"did not hold {FOLDER}/ with {list(FILES)}")
    return read_placed(root, split)
