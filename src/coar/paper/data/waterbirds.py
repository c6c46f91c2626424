"""Waterbirds (Sagawa et al., 2020, "Distributionally Robust Neural Networks"): CUB-200-2011 bird photos
pasted onto Places backgrounds, the dataset of the paper's subpopulation-robustness experiment (Sec. 5.3,
App. C.3). Task: landbird (y=0) vs waterbird (y=1); the spurious attribute is the background, land (place=0)
or water (place=1). Groups are 2 * y + place, so groups 1 ("landbird, water") and 2 ("waterbird, land") are
the minority groups.

The data is the authors' release `waterbird_complete95_forest2water2` (95% of training birds on their
"own" background), distributed as the tarball at TARBALL_URL. Extracted under `root` it reads:

    <root>/waterbird_complete95_forest2water2/metadata.csv
    <root>/waterbird_complete95_forest2water2/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg
    ...

metadata.csv has the columns img_id, img_filename, y, split, place, place_filename; split is 0 train,
1 val, 2 test. Images are decoded with the ImageNet evaluation transform (coar.paper.data.images.decode_image).
"""
from __future__ import annotations

import csv
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ...errors import CoarError
from .images import decode_images, extract_into_place, seeded_subset, unsafe_member

DIRNAME = "waterbird_complete95_forest2water2"
TARBALL_URL = "https://nlp.stanford.edu/data/dro/waterbird_complete95_forest2water2.tar.gz"
# The release publishes no checksum and we have none we could verify, so none is pinned here: the first
# complete download's SHA-256 is recorded beside the tarball (<tarball>.sha256) and checked on later uses.
TARBALL_SHA256: str | None = None
SPLITS = {"train": 0, "val": 1, "test": 2}
REQUIRED_COLUMNS = ("img_filename", "y", "split", "place")
CLASS_NAMES = ("landbird", "waterbird")
GROUP_NAMES = ("landbird, land", "landbird, water", "waterbird, land", "waterbird, water")


def _instructions(root: Path) -> str:
    return (f"Download {TARBALL_URL} and extract it into {root} so that {root / DIRNAME / 'metadata.csv'} "
            f"exists (e.g. `tar -xzf waterbird_complete95_forest2water2.tar.gz -C {root}`), or call with "
            f"download=True")


def _safe_members(tar: tarfile.TarFile, tarball: Path) -> list[tarfile.TarInfo]:
    """All members, refusing any that would land outside the extraction directory."""
    members = tar.getmembers()
    for m in members:
        if unsafe_member(m.name):
            raise CoarError(f"tarball {tarball} holds an unsafe member {m.name!r} (absolute path or '..'); "
                            f"refusing to extract it")
        if m.issym() or m.islnk():
            target = Path(m.linkname)
            if target.is_absolute() or ".." in target.parts:
                raise CoarError(f"tarball {tarball} holds a link {m.name!r} -> {m.linkname!r} pointing outside "
                                f"the extraction directory; refusing to extract it")
        if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
            raise CoarError(f"tarball {tarball} holds a special file {m.name!r}; refusing to extract it")
    return members


def extract_tarball(tarball: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Extract the release tarball so that root/DIRNAME/metadata.csv exists. Extraction goes into a temporary
    directory under root, renamed into place only when complete, so a failed extraction never leaves a
    layout that looks complete. Returns root/DIRNAME."""
    tarball, root = Path(tarball), Path(root)

    def extract(tmp: Path) -> None:
        try:
            with tarfile.open(tarball, "r:*") as tar:
                members = _safe_members(tar, tarball)
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=members, **kwargs)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise CoarError(f"tarball {tarball} is truncated or corrupt ({exc}); nothing was extracted. Delete "
                            f"{tarball} (and {tarball}.sha256 if present) and download {TARBALL_URL} again") from exc

    def locate(tmp: Path) -> Path:
        for source in (tmp / DIRNAME, tmp):
            if (source / "metadata.csv").is_file():
                return source
        raise CoarError(f"tarball {tarball} does not contain {DIRNAME}/metadata.csv; it is not the Waterbirds "
                        f"release from {TARBALL_URL}")

    return extract_into_place(root, root / DIRNAME, extract, locate, "has no usable metadata.csv")


def ensure_waterbirds(root: str | os.PathLike, download: bool = True) -> Path:
    """root/DIRNAME with metadata.csv present, downloading and extracting the release when allowed."""
    root = Path(root)
    directory = root / DIRNAME
    if (directory / "metadata.csv").is_file():
        return directory
    if not download:
        raise CoarError(f"Waterbirds not found: {directory / 'metadata.csv'} does not exist. {_instructions(root)}")
    from .mirror import download

    # from COAR_DATA_MIRROR when it is set (checked against its SHA256SUMS when it lists the tarball)
    tarball = download(TARBALL_URL, root / f"{DIRNAME}.tar.gz", sha256=TARBALL_SHA256)
    return extract_tarball(tarball, root)


def read_metadata(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The columns the loader needs from metadata.csv: img_filename (str), y, split, place (int64)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CoarError(f"{path} lacks the column(s) {missing} (has {header}); expected the Waterbirds "
                                f"metadata columns img_id, img_filename, y, split, place, place_filename")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CoarError(f"cannot read Waterbirds metadata {path}: {exc}") from exc
    if not rows:
        raise CoarError(f"{path} has a header but no rows")
    allowed = {"y": (0, 1), "split": (0, 1, 2), "place": (0, 1)}
    out: dict[str, np.ndarray] = {"img_filename": np.array([r["img_filename"] for r in rows], dtype=object)}
    for column, values in allowed.items():
        parsed = np.empty(len(rows), dtype=np.int64)
        for i, r in enumerate(rows):
            raw = (r.get(column) or "").strip()
            try:
                number = float(raw)  # "1" and "1.0" both mean 1; "1.5" is rejected below
                value = int(number) if number.is_integer() else None
            except ValueError:
                value = None
            if value not in values:
                raise CoarError(f"{path}, data row {i + 1} ({r.get('img_filename')!r}): column {column!r} is "
                                f"{raw!r}, expected one of {values}")
            parsed[i] = value
        out[column] = parsed
    empty = [i + 1 for i, name in enumerate(out["img_filename"]) if not name]
    if empty:
        raise CoarError(f"{path}: empty img_filename in data row(s) {empty[:10]}")
    return out


def index_waterbirds(split: str, root: str | os.PathLike, download: bool = True):
    """(image paths [N], labels int64 [N] (1 = waterbird), groups int64 [N] = 2 * y + place) of a split, in
    metadata order, without decoding anything; every listed image is checked to exist."""
    if split not in SPLITS:
        raise CoarError(f"Waterbirds split must be one of {tuple(SPLITS)}, got {split!r}")
    directory = ensure_waterbirds(root, download=download)
    meta = read_metadata(directory / "metadata.csv")
    rows = np.flatnonzero(meta["split"] == SPLITS[split])
    if rows.size == 0:
        raise CoarError(f"{directory / 'metadata.csv'} has no rows with split={SPLITS[split]} ({split})")
    paths = [directory / name for name in meta["img_filename"][rows]]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CoarError(f"Waterbirds: {len(missing)} image(s) listed in {directory / 'metadata.csv'} are missing, "
                        f"e.g. {missing[:5]}. The extraction is incomplete: {_instructions(Path(root))}")
    labels = meta["y"][rows].astype(np.int64)
    return np.array(paths, dtype=object), labels, (2 * labels + meta["place"][rows]).astype(np.int64)


def load_waterbirds(split: str, root: str | os.PathLike, download: bool = True, size: int = 224,
                    n: int | None = None, seed: int = 0, progress: bool = True):
    """(images uint8 [N, 3, size, size], labels int64 [N] (1 = waterbird), groups int64 [N] = 2 * y + place),
    in metadata order. `n` takes a seeded random subset (kept in metadata order) before decoding."""
    paths, labels, groups = index_waterbirds(split, root, download)
    keep = seeded_subset(len(paths), n, seed, f"Waterbirds {split}")
    return decode_images(list(paths[keep]), size=size, progress=progress), labels[keep], groups[keep]
