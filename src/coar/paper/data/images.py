"""Shared helpers for the datasets stored as image files (Waterbirds, CelebA): decoding with the standard
ImageNet evaluation transform, and verified downloads.

Decoding: PIL opens the file, converts it to RGB, resizes the shorter side to round(size * 256 / 224) with
bilinear filtering, and crops the central size x size square. With size=224 this is torchvision's
Resize(256) + CenterCrop(224) on a PIL image, pixel for pixel (same output-size and crop-offset arithmetic,
same PIL call). Images come back as uint8 [3, size, size]; normalisation happens later, on the fly.

Downloads go to a temporary file beside the destination and are moved into place only when complete (and,
when a SHA-256 is known, verified). When no SHA-256 is known, the hash of the first complete download is
recorded in `<dest>.sha256` and later uses are checked against that record, so a file modified or corrupted
after download is reported, never used.

Where a file's directory cannot be written (a copy placed in a shared read-only dataset directory), its record
is kept instead in a records directory: `data/datasets/checksums/` relative to the current working directory
(the workflow's working directory, beside the data manifests), or the directory the environment variable
COAR_CHECKSUM_DIR names. The record there is named `<file name>.<first 16 hex digits of the SHA-256 of the
file's absolute path>.sha256`, so files of the same name in different directories get records of their own.
A later use checks every record it finds, beside the file and in the records directory.
"""
from __future__ import annotations

import errno
import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ...errors import CoarError
from ...io import sha256_file  # noqa: F401 (data sources import it from here)

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_USER_AGENT = "coar-reproduction (python urllib)"


def _resized_shape(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side equal to `short`; the longer side truncated, as torchvision does."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def decode_image(path: str | os.PathLike, size: int = 224) -> np.ndarray:
    """uint8 [3, size, size]: RGB, shorter side resized to round(size * 256 / 224) (bilinear), centre crop."""
    if size <= 0:
        raise CoarError(f"image size must be positive, got {size}")
    path = Path(path)
    short = int(round(size * 256 / 224))
    try:
        with Image.open(path) as img:
            img.load()  # forces the full decode: a truncated or corrupt file fails here, not later
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise CoarError(f"image file {path} does not exist") from exc
    except _DECODE_ERRORS as exc:
        raise CoarError(f"image file {path} cannot be decoded (truncated or corrupt?): {exc}") from exc
    width, height = rgb.size
    if width == 0 or height == 0:
        raise CoarError(f"image file {path} has an empty size {width}x{height}")
    new_w, new_h = _resized_shape(width, height, short)
    resized = rgb.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    cropped = resized.crop((left, top, left + size, top + size))
    array = np.asarray(cropped, dtype=np.uint8)
    if array.shape != (size, size, 3):
        raise CoarError(f"image file {path}: decoded to shape {array.shape}, expected ({size}, {size}, 3)")
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def decode_images(paths: Iterable[str | os.PathLike], size: int = 224, progress: bool = True,
                  workers: int | None = None) -> np.ndarray:
    """uint8 [N, 3, size, size], in the order of `paths`. PIL releases the GIL while decoding and resizing, so
    `workers` threads (default: up to 4, at most the CPU count) decode in parallel; the result does not
    depend on it."""
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    bar = tqdm(total=len(paths), desc=f"decoding {len(paths)} images", unit="img", disable=not progress)
    try:
        if workers <= 1 or len(paths) < 2:
            for i, path in enumerate(paths):
                out[i] = decode_image(path, size)
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for i, array in enumerate(pool.map(decode_image, paths, [size] * len(paths))):
                    out[i] = array
                    bar.update(1)
    finally:
        bar.close()
    return out


PAPER_EXTRA = "pip install 'coar[paper]'"  # the extra holding what obtaining the paper's datasets needs


def import_gdown(what: str, placement: str):
    """The gdown module, which the Google Drive downloads need (CelebA through torchvision, the typographic
    photos); it is in the `paper` extra. Missing, a CoarError says how to install it, or how to place `what`'s
    files by hand instead (`placement`)."""
    try:
        import gdown
    except ImportError as exc:
        raise CoarError(f"{what} is downloaded from Google Drive with the gdown package, which is not installed: "
                        f"run `{PAPER_EXTRA}` (or `pip install gdown`) and try again. Or place the files by hand: "
                        f"{placement}") from exc
    return gdown


def unsafe_member(name: str) -> bool:
    """Whether an archive member's name would land outside the extraction directory (absolute or '..')."""
    return name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in Path(name).parts


def extract_into_place(root: Path, final: Path, extract: Callable[[Path], None], locate: Callable[[Path], Path],
                       what_is_wrong: str) -> Path:
    """Unpack an archive so that a failure never leaves a layout that looks complete: extract(tmp) fills a
    temporary folder under root, locate(tmp) names the folder inside it that becomes `final` (both raise
    CoarError when the archive is bad), and only then is it renamed into place. `final` must not exist yet;
    what_is_wrong says why an existing one was not used."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.extract-"))
    try:
        extract(tmp)
        source = locate(tmp)
        if final.exists():
            raise CoarError(f"{final} already exists but {what_is_wrong}; remove it and run again")
        os.replace(source, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def seeded_subset(count: int, n: int | None, seed: int, what: str) -> np.ndarray:
    """Sorted indices of a seeded random subset of size n out of range(count) (all of them when n is None)."""
    if n is None:
        return np.arange(count)
    if n <= 0 or n > count:
        raise CoarError(f"{what}: n={n} must be between 1 and the split size {count}")
    return np.sort(np.random.default_rng(seed).choice(count, size=n, replace=False))


CHECKSUM_DIR_ENV = "COAR_CHECKSUM_DIR"
DEFAULT_CHECKSUM_DIR = Path("data") / "datasets" / "checksums"  # relative to the workflow's working directory


def checksum_dir() -> Path:
    """Where the hash records of files in directories that cannot be written are kept (see the module docstring),
    as an absolute path."""
    return Path(os.path.abspath(os.environ.get(CHECKSUM_DIR_ENV) or DEFAULT_CHECKSUM_DIR))


def _record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _elsewhere_path(dest: Path) -> Path:
    """The record of `dest` in the records directory, named after its absolute path."""
    absolute = os.path.abspath(dest)
    return checksum_dir() / f"{Path(absolute).name}.{hashlib.sha256(absolute.encode()).hexdigest()[:16]}.sha256"


def hash_records(path: str | os.PathLike) -> list[Path]:
    """The hash records of `path` that exist: beside it, then in the records directory."""
    path = Path(path)
    return [r for r in (_record_path(path), _elsewhere_path(path)) if r.exists()]


def _unwritable(exc: OSError) -> bool:
    return isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)


def _record_hash(path: Path, digest: str) -> Path:
    """Record `path`'s SHA-256 beside it, or in the records directory when its directory cannot be written;
    returns the record."""
    try:
        _write_record(_record_path(path), digest, path.name)
        return _record_path(path)
    except OSError as exc:
        if not _unwritable(exc):
            raise
        beside = exc
    record = _elsewhere_path(path)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        _write_record(record, digest, os.path.abspath(path))
    except OSError as exc:
        raise CoarError(f"cannot record the SHA-256 of {path}: its directory cannot be written ({beside}), nor "
                        f"can the records directory {record.parent} ({exc}); set {CHECKSUM_DIR_ENV} to a writable "
                        f"directory") from exc
    return record


def _check_or_record(path: Path, digest: str, refused: Callable[[Path, str], str]) -> None:
    """Check `digest` against every hash record of `path`, raising CoarError(refused(record, recorded hash)) at
    a mismatch; without any record, record it (the first use is trusted)."""
    records = hash_records(path)
    for record in records:
        recorded = _read_record(record)
        if recorded != digest:
            raise CoarError(refused(record, recorded))
    if not records:
        _record_hash(path, digest)


def _read_record(record: Path) -> str:
    try:
        text = record.read_text(errors="replace").split()  # bytes that are not text: no hash, refused below
    except OSError as exc:
        raise CoarError(f"cannot read the hash record {record}: {exc}") from exc
    value = text[0].lower() if text else ""
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise CoarError(f"hash record {record} does not hold a SHA-256 (found {value!r}); delete it and the file "
                        f"it describes, then download again")
    return value


def _write_record(record: Path, digest: str, name: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=f".{record.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{digest}  {name}\n")
        os.replace(tmp, record)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(url: str, target: Path) -> str:
    """Stream `url` into `target`; the hex SHA-256 of what was written. Raises CoarError on network errors or
    a response shorter than its announced length."""
    digest = hashlib.sha256()
    written = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request) as response, open(target, "wb") as fh:
            announced = response.headers.get("Content-Length")
            total = int(announced) if announced and announced.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {Path(url).name}") as bar:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise CoarError(f"downloading {url} failed: {exc!r}") from exc
    if total is not None and written != total:
        raise CoarError(f"downloading {url} failed: the server announced {total} bytes, {written} arrived")
    return digest.hexdigest()


def check_recorded(path: str | os.PathLike, refetch: str = "place it again") -> Path:
    """A file downloaded or placed earlier, checked against the SHA-256 recorded beside it (`<path>.sha256`)
    or, for a file in a directory that cannot be written, in the records directory (module docstring); without
    a record, its hash is recorded now (the first use is trusted). A mismatch raises CoarError naming both
    hashes and what to do (`refetch`): the file is reported, never used."""
    path = Path(path)
    try:
        found = sha256_file(path)
    except OSError as exc:  # a directory in its place, unreadable
        raise CoarError(f"cannot read {path} to check it against its hash record: {exc}; {refetch}") from None
    _check_or_record(path, found, lambda record, recorded: (
        f"{path} is corrupted or was modified: its SHA-256 is {found}, but {record} recorded {recorded} when it "
        f"was first used. Delete {path} (and {record} to accept a new version) and {refetch}"))
    return path


def download_verified(url: str, dest: str | os.PathLike, sha256: str | None = None) -> Path:
    """Download `url` to `dest` (via a temporary file in the same directory, moved into place when complete).

    sha256 given: the download must match it (otherwise it is deleted and CoarError names the URL and both
    hashes); a file already at `dest` is re-verified and downloaded again when it does not match.
    sha256 None: the hash of the first complete download is recorded in `<dest>.sha256`; a file at `dest`
    that no longer matches its record is reported (CoarError: delete it), never used. A file found at `dest`
    without a record (placed by hand) is trusted and its hash recorded (in the records directory when its
    directory cannot be written: check_recorded).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.lower() if sha256 is not None else None
    if expected is not None and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise CoarError(f"sha256 for {url} must be 64 hex digits, got {sha256!r}")
    if dest.exists():
        if expected is None:
            return check_recorded(dest, f"run again to download it from {url}")
        if sha256_file(dest) == expected:
            return dest
        dest.unlink()  # fails verification: fetch a fresh copy below

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        found = _fetch(url, tmp)
        if expected is not None and found != expected:
            raise CoarError(f"download of {url} failed verification: expected SHA-256 {expected}, found {found}; "
                            f"the file was deleted")
        if expected is None:
            _check_or_record(dest, found, lambda record, recorded: (
                f"download of {url} does not match the hash recorded in {record} at the first download: "
                f"expected SHA-256 {recorded}, found {found}; the file was deleted. If the server's file changed "
                f"on purpose, delete {record} and run again"))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a dataset file is ordinary readable data
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
