"""MIMIC-CXR-JPG 2.1.0 or 2.0.0 (Johnson et al., 2019, PhysioNet): chest X-rays as JPEGs with the 14
CheXpert-labeler findings per study, the data of the paper's Fig. 12 panel whose model output is the
"Cardiomegaly" logit of a multi-label chest X-ray classifier (a fine-tuned ResNet-50).

MIMIC-CXR-JPG is credentialed-access data: it is never downloaded here. A credentialed PhysioNet user who
signed the data use agreement downloads it by hand (see PHYSIONET_URL); the loader only reads the files and
explains what is missing. The current release is 2.1.0 (March 2024); 2.0.0 is read as well. Both have the
same layout and file names (2.1.0 keeps 2.0.0's table names, mimic-cxr-2.0.0-*.csv.gz); when both are present
the newest is used, and the dataset manifest's location names the release directory read. Under a root
directory the release reads:

    <root>/mimic-cxr-jpg/<version>/mimic-cxr-2.0.0-metadata.csv.gz   one row per image: dicom_id, subject_id,
        study_id, PerformedProcedureStepDescription, ViewPosition (PA, AP, LATERAL, LL, ..., sometimes
        empty), Rows, Columns, StudyDate, StudyTime, ProcedureCodeSequence_CodeMeaning,
        ViewCodeSequence_CodeMeaning, PatientOrientationCodeSequence_CodeMeaning
    <root>/mimic-cxr-jpg/<version>/mimic-cxr-2.0.0-chexpert.csv.gz   one row per STUDY: subject_id, study_id and
        the 14 LABELS, each 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or empty (not mentioned)
    <root>/mimic-cxr-jpg/<version>/mimic-cxr-2.0.0-split.csv.gz      one row per image: dicom_id, study_id,
        subject_id, split in {train, validate, test}
    <root>/mimic-cxr-jpg/<version>/SHA256SUMS.txt                    `<sha256>  <relative path>` per file
    <root>/mimic-cxr-jpg/<version>/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
        i.e. files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg

`root` may also be the release directory itself (…/mimic-cxr-jpg/<version>, or any directory holding the csv.gz
files and files/), or the directory where a plain `wget -r` was run (…/physionet.org/files/mimic-cxr-jpg/<version>).

Labels come back as float32 [N, 14] in LABELS order with 1.0, 0.0, -1.0 as in the file and NaN for "not
mentioned" (an empty cell, or a study without a row in the CheXpert table). `cardiomegaly_task` turns them
into binary Cardiomegaly targets under the usual CheXpert uncertainty policies.

Integrity: when SHA256SUMS.txt is present, the three csv.gz tables are checked against it every time they
are read (a mismatch is reported, the file never used; hashing them takes well under a second). The ~377k images are not hashed.
Images are decoded with the ImageNet evaluation transform (coar.paper.data.images.decode_image); the grayscale
JPEGs become 3-channel RGB with equal channels.
"""
from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ...errors import CoarError
from .images import decode_images, seeded_subset, sha256_file

VERSIONS = ("2.1.0", "2.0.0")  # the releases read, newest first (the newest present is used)
VERSION = VERSIONS[0]  # the current release, the one the instructions download
RELEASE = Path("mimic-cxr-jpg") / VERSION
PHYSIONET_URL = f"https://physionet.org/content/mimic-cxr-jpg/{VERSION}/"
FILES_URL = f"https://physionet.org/files/mimic-cxr-jpg/{VERSION}/"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
TABLES = (METADATA_FILE, CHEXPERT_FILE, SPLIT_FILE)
SUMS_FILE = "SHA256SUMS.txt"
IMAGE_DIR = "files"

LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
          "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
          "Pneumothorax", "Support Devices")
CARDIOMEGALY = LABELS.index("Cardiomegaly")
CLASS_NAMES = LABELS
SPLITS = {"train": "train", "val": "validate", "validate": "validate", "test": "test"}
FRONTAL = ("PA", "AP")
UNCERTAIN_POLICIES = ("exclude", "zeros", "ones")  # CheXpert's U-Ignore, U-Zeros, U-Ones

METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "ViewPosition")
SPLIT_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
CHEXPERT_COLUMNS = ("subject_id", "study_id") + LABELS

_LABEL_VALUES = {"1.0": 1.0, "0.0": 0.0, "-1.0": -1.0, "": math.nan, "1": 1.0, "0": 0.0, "-1": -1.0}
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error)


# --------------------------------------------------------------------------------------------- instructions

_ACCESS = (f"MIMIC-CXR-JPG is credentialed-access data on PhysioNet and is never downloaded automatically: become "
           f"a credentialed PhysioNet user (identity check and the required CITI human-subjects research training) "
           f"and sign the data use agreement on {PHYSIONET_URL} (release {VERSION}; "
           + "; ".join(f"release {v}, https://physionet.org/content/mimic-cxr-jpg/{v}/, is read as well"
                       for v in VERSIONS[1:])
           + "), then download it by hand")


def release_version(base: str | os.PathLike) -> str:
    """The release a release directory holds, from its name (…/mimic-cxr-jpg/2.1.0); VERSION when the name
    does not tell (the csv.gz files and files/ directly in a folder of another name)."""
    name = Path(base).name
    return name if name in VERSIONS else VERSION


def _files_url(base: Path) -> str:
    """The download URL of the release in `base`."""
    return f"https://physionet.org/files/mimic-cxr-jpg/{release_version(base)}/"


def _instructions(root: Path) -> str:
    """How to download the whole release so that `root` finds it."""
    return (f"{_ACCESS} (several hundred GB), e.g. `cd {root} && wget -r -N -c -np -nH --cut-dirs=1 --user "
            f"<physionet-user> --ask-password {FILES_URL}`, so that {root / RELEASE / METADATA_FILE} exists (a "
            f"plain `wget -r -N -c -np --user <physionet-user> --ask-password {FILES_URL}` run in {root} also "
            f"works: it creates {root / 'physionet.org' / 'files' / RELEASE})")


def _resume_hint(base: Path) -> str:
    """How to complete an interrupted download of the release found in `base`."""
    return (f"{_ACCESS}; to complete the download in place run `cd {base} && wget -r -N -c -np -nH --cut-dirs=3 "
            f"--user <physionet-user> --ask-password {_files_url(base)}` (-N -c skip or resume the files already "
            f"there)")


def _file_hint(base: Path, relative: str) -> str:
    """How to (re-)download one file of the release into `base`."""
    target = base / relative
    return (f"download it again by hand (credentialed PhysioNet access, see {PHYSIONET_URL}), e.g. `wget -N -c "
            f"--user <physionet-user> --ask-password -P {target.parent} {_files_url(base)}{relative}`")


def _missing_file(base: Path, relative: str) -> CoarError:
    return CoarError(f"MIMIC-CXR-JPG: {base / relative} does not exist; the release in {base} is incomplete. "
                     f"{_ACCESS}, e.g. `wget -N -c --user <physionet-user> --ask-password -P {base} "
                     f"{_files_url(base)}{relative}`")


# --------------------------------------------------------------------------------------------- layout

def candidate_dirs(root: str | os.PathLike) -> list[Path]:
    """The directories tried, in order, as the release directory for `root`: each release's spellings, newest
    release first, then `root` itself."""
    root = Path(root)
    tried = []
    for version in VERSIONS:
        release = Path("mimic-cxr-jpg") / version
        tried += [root / release, root / version, root / "physionet.org" / "files" / release]
    return [*tried, root]


def find_release(root: str | os.PathLike) -> Path:
    """The release directory (the one holding METADATA_FILE) for any accepted spelling of `root`, the newest
    release present (VERSIONS) preferred."""
    root = Path(root)
    tried = candidate_dirs(root)
    for base in tried:
        if (base / METADATA_FILE).is_file():
            return base
    raise CoarError(f"MIMIC-CXR-JPG not found (releases read: {', '.join(VERSIONS)}): none of "
                    f"{[str(b / METADATA_FILE) for b in tried]} exists. {_instructions(root)}")


def image_path(base: str | os.PathLike, subject_id: int, study_id: int, dicom_id: str) -> Path:
    """base/files/p<first two digits of subject_id>/p<subject_id>/s<study_id>/<dicom_id>.jpg"""
    subject = str(subject_id)
    return Path(base) / IMAGE_DIR / f"p{subject[:2]}" / f"p{subject}" / f"s{study_id}" / f"{dicom_id}.jpg"


# --------------------------------------------------------------------------------------------- integrity

def _read_sums(sums: Path, names: Sequence[str]) -> dict[str, str]:
    """The SHA-256 listed for each of `names` in a sha256sum-format file (streamed: the real one lists every
    image of the release)."""
    wanted = set(names)
    found: dict[str, str] = {}
    try:
        with open(sums, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                parts = line.strip().split(None, 1)
                if len(parts) != 2:
                    continue
                digest, relative = parts[0].lower(), parts[1].lstrip("*")
                if relative.startswith("./"):
                    relative = relative[2:]
                if relative in wanted:
                    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                        raise CoarError(f"{sums}, line {number}: the entry for {relative} holds {parts[0]!r}, not a "
                                        f"SHA-256; download {_files_url(sums.parent)}{SUMS_FILE} again")
                    found[relative] = digest
                    if len(found) == len(wanted):
                        break
    except OSError as exc:
        raise CoarError(f"cannot read {sums}: {exc}") from exc
    absent = [n for n in names if n not in found]
    if absent:
        raise CoarError(f"{sums} lists no SHA-256 for {absent}; it is not the {SUMS_FILE} of MIMIC-CXR-JPG "
                        f"{release_version(sums.parent)}. Download {_files_url(sums.parent)}{SUMS_FILE} again (or "
                        f"delete it to skip verification)")
    return found


def verify_release(base: str | os.PathLike) -> bool:
    """Check the three csv.gz tables of the release directory `base` against its SHA256SUMS.txt.

    Returns True when they were verified, False when `base` has no SHA256SUMS.txt (nothing is checked then;
    the images are never hashed, there are too many). A table whose hash differs raises CoarError naming it
    and both hashes."""
    base = Path(base)
    sums = base / SUMS_FILE
    if not sums.is_file():
        return False
    for name in TABLES:
        if not (base / name).is_file():
            raise _missing_file(base, name)
    expected = _read_sums(sums, TABLES)
    for name in TABLES:
        found = sha256_file(base / name)
        if found != expected[name]:
            raise CoarError(f"{base / name} failed SHA-256 verification: {sums} lists {expected[name]}, the file "
                            f"has {found}. It is corrupted or incomplete and was not used: delete it and "
                            f"{_file_hint(base, name)}")
    return True


# --------------------------------------------------------------------------------------------- tables

def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, the values of `columns`) for each data row of a gzip-compressed CSV."""
    try:
        with gzip.open(path, "rt", newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise CoarError(f"{path} is empty: expected a header line with the columns {list(columns)}")
            header = [h.strip().lstrip("\ufeff") for h in header]
            missing = [c for c in columns if c not in header]
            if missing:
                raise CoarError(f"{path} lacks the column(s) {missing} (has {header}); it is not the "
                                f"MIMIC-CXR-JPG table {path.name}")
            index = [header.index(c) for c in columns]
            width = len(header)
            for row in reader:
                if not row:
                    continue
                if len(row) != width:
                    raise CoarError(f"{path}, line {reader.line_num}: expected {width} fields as in the header, "
                                    f"found {len(row)}")
                yield reader.line_num, [row[i] for i in index]
    except FileNotFoundError as exc:
        raise CoarError(f"MIMIC-CXR-JPG: {path} does not exist") from exc
    except _READ_ERRORS as exc:
        raise CoarError(f"cannot read {path} (truncated or corrupt gzip/CSV?): {exc}. Delete it and "
                        f"{_file_hint(path.parent, path.name)}") from exc


def _id(path: Path, line: int, column: str, raw: str) -> int:
    text = raw.strip()
    if not text.isdigit() or int(text) <= 0:
        raise CoarError(f"{path}, line {line}: column {column!r} is {raw!r}, expected a positive integer id")
    return int(text)


def _dicom(path: Path, line: int, raw: str, seen: set[str]) -> str:
    """A row's dicom_id: non-empty and not seen before in the same table (added to `seen`)."""
    dicom = raw.strip()
    if not dicom:
        raise CoarError(f"{path}, line {line}: column 'dicom_id' is empty")
    if dicom in seen:
        raise CoarError(f"{path}, line {line}: dicom_id {dicom!r} appears more than once")
    seen.add(dicom)
    return dicom


def read_split(path: str | os.PathLike, split: str) -> list[tuple[int, int, str, int]]:
    """(subject_id, study_id, dicom_id, line) of the images of `split` ('train', 'validate' or 'test', as in
    the file) in mimic-cxr-2.0.0-split.csv.gz; every row's split value and ids are validated."""
    path = Path(path)
    allowed = sorted(set(SPLITS.values()))
    chosen: list[tuple[int, int, str, int]] = []
    seen: set[str] = set()
    for line, (dicom, study, subject, value) in _rows(path, SPLIT_COLUMNS):
        value = value.strip()
        if value not in allowed:
            raise CoarError(f"{path}, line {line} (dicom_id {dicom!r}): column 'split' is {value!r}, expected one "
                            f"of {allowed}")
        dicom = _dicom(path, line, dicom, seen)
        subject_id, study_id = _id(path, line, "subject_id", subject), _id(path, line, "study_id", study)
        if value == split:
            chosen.append((subject_id, study_id, dicom, line))
    if not seen:
        raise CoarError(f"{path} has a header but no rows")
    return chosen


def read_metadata(path: str | os.PathLike, only: Iterable[str] | None = None) -> dict[str, tuple[int, int, str]]:
    """dicom_id -> (subject_id, study_id, ViewPosition) from mimic-cxr-2.0.0-metadata.csv.gz (ViewPosition is
    stripped and may be empty, as in the release); `only` restricts the result to those dicom_ids."""
    path = Path(path)
    wanted = None if only is None else set(only)
    out: dict[str, tuple[int, int, str]] = {}
    seen: set[str] = set()
    for line, (dicom, subject, study, view) in _rows(path, METADATA_COLUMNS):
        dicom = _dicom(path, line, dicom, seen)
        if wanted is None or dicom in wanted:
            out[dicom] = (_id(path, line, "subject_id", subject), _id(path, line, "study_id", study), view.strip())
    return out


def read_chexpert(path: str | os.PathLike) -> tuple[dict[tuple[int, int], int], np.ndarray]:
    """((subject_id, study_id) -> row, labels float32 [studies, 14] in LABELS order: 1.0 positive, 0.0
    negative, -1.0 uncertain, NaN not mentioned) from mimic-cxr-2.0.0-chexpert.csv.gz."""
    path = Path(path)
    row_of: dict[tuple[int, int], int] = {}
    values: list[list[float]] = []
    for line, fields in _rows(path, CHEXPERT_COLUMNS):
        key = (_id(path, line, "subject_id", fields[0]), _id(path, line, "study_id", fields[1]))
        parsed = []
        for name, raw in zip(LABELS, fields[2:]):
            value = _LABEL_VALUES.get(raw)
            if value is None:
                try:
                    value = float(raw.strip()) if raw.strip() else math.nan
                except ValueError:
                    value = None
                if value is not None and not math.isnan(value) and value not in (1.0, 0.0, -1.0):
                    value = None
            if value is None:
                raise CoarError(f"{path}, line {line} (subject_id {key[0]}, study_id {key[1]}): column {name!r} is "
                                f"{raw!r}, expected 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or empty "
                                f"(not mentioned)")
            parsed.append(value)
        if key in row_of:
            raise CoarError(f"{path}, line {line}: study (subject_id {key[0]}, study_id {key[1]}) appears more "
                            f"than once")
        row_of[key] = len(values)
        values.append(parsed)
    return row_of, np.array(values, dtype=np.float32).reshape(len(values), len(LABELS))


# --------------------------------------------------------------------------------------------- index / load

def _views(views: Iterable[str] | str | None) -> tuple[str, ...] | None:
    if views is None:
        return None
    if isinstance(views, str):
        views = (views,)
    views = tuple(views)
    if not views or not all(isinstance(v, str) for v in views):
        raise CoarError(f"views must be None (all images) or view positions such as {FRONTAL}, got {views!r}")
    return tuple(v.strip() for v in views)


def index_mimic(split: str, root: str | os.PathLike, views: Iterable[str] | None = FRONTAL):
    """(image paths np.ndarray of Path objects [N], labels float32 [N, 14]) of a split, without decoding.

    split: 'train', 'val' (= 'validate') or 'test' (mimic-cxr-2.0.0-split.csv.gz). Images are kept when their
    ViewPosition (metadata table) is in `views` (default: frontal PA and AP; None keeps every image, including
    those with an empty ViewPosition). Labels are those of the image's study in the CheXpert table, in LABELS
    order: 1.0 positive, 0.0 negative, -1.0 uncertain, NaN not mentioned; a study without a row there gets
    all-NaN labels. Order: by subject_id, study_id, dicom_id. Every indexed image must exist."""
    if split not in SPLITS:
        raise CoarError(f"MIMIC-CXR split must be one of {tuple(SPLITS)}, got {split!r}")
    views = _views(views)
    root = Path(root)
    base = find_release(root)
    for name in TABLES:
        if not (base / name).is_file():
            raise _missing_file(base, name)
    verify_release(base)

    value = SPLITS[split]
    chosen = read_split(base / SPLIT_FILE, value)
    if not chosen:
        raise CoarError(f"{base / SPLIT_FILE} lists no images with split {value!r}")
    meta = read_metadata(base / METADATA_FILE, only=(dicom for _, _, dicom, _ in chosen))
    no_meta = [dicom for _, _, dicom, _ in chosen if dicom not in meta]
    if no_meta:
        raise CoarError(f"{len(no_meta)} image(s) of the {value} split in {base / SPLIT_FILE} have no row in "
                        f"{base / METADATA_FILE}, e.g. {no_meta[:5]}")
    entries = []
    found_views: dict[str, int] = {}
    for subject, study, dicom, line in chosen:
        m_subject, m_study, view = meta[dicom]
        if (m_subject, m_study) != (subject, study):
            raise CoarError(f"{base / SPLIT_FILE}, line {line}: dicom_id {dicom!r} has subject_id {subject}, "
                            f"study_id {study}, but {base / METADATA_FILE} says subject_id {m_subject}, study_id "
                            f"{m_study}")
        found_views[view] = found_views.get(view, 0) + 1
        if views is None or view in views:
            entries.append((subject, study, dicom))
    if not entries:
        raise CoarError(f"MIMIC-CXR {split}: no image has a ViewPosition in {views}; the split's view positions "
                        f"are {found_views}")
    entries.sort()

    paths = np.empty(len(entries), dtype=object)
    for i, (subject, study, dicom) in enumerate(entries):
        paths[i] = image_path(base, subject, study, dicom)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CoarError(f"MIMIC-CXR-JPG: {len(missing)} of the {len(paths)} image(s) of the {value} split "
                        f"(views {views}) are missing under {base / IMAGE_DIR}, e.g. {missing[:5]}. The download "
                        f"is incomplete. {_resume_hint(base)}")

    row_of, table = read_chexpert(base / CHEXPERT_FILE)
    labels = np.full((len(entries), len(LABELS)), np.nan, dtype=np.float32)
    for i, (subject, study, _) in enumerate(entries):
        row = row_of.get((subject, study))
        if row is not None:
            labels[i] = table[row]
    return paths, labels


def cardiomegaly_task(labels: np.ndarray, uncertain: str = "exclude") -> tuple[np.ndarray, np.ndarray]:
    """(keep bool [N], targets int64 [keep.sum()]) for a binary Cardiomegaly classifier (the model output of
    Fig. 12 is the Cardiomegaly logit), from labels float32 [N, 14] as index_mimic returns them.

    Not mentioned (NaN) counts as negative (0), as is standard for MIMIC-CXR / CheXpert. Uncertain (-1.0):
    'exclude' drops the row (U-Ignore), 'zeros' makes it negative (U-Zeros), 'ones' positive (U-Ones).
    `targets` holds only the kept rows, so use `images[keep]` with it (a forgotten mask then fails loudly
    whenever rows were dropped)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise CoarError(f"uncertain must be one of {UNCERTAIN_POLICIES}, got {uncertain!r}")
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(LABELS):
        raise CoarError(f"cardiomegaly_task needs labels [N, {len(LABELS)}] (LABELS order), got shape {labels.shape}")
    column = labels[:, CARDIOMEGALY].astype(np.float64)
    bad = np.flatnonzero(~(np.isnan(column) | np.isin(column, (1.0, 0.0, -1.0))))
    if bad.size:
        raise CoarError(f"labels row {bad[0]}: Cardiomegaly is {column[bad[0]]}, expected 1.0, 0.0, -1.0 or NaN")
    unsure = column == -1.0
    positive = column == 1.0
    if uncertain == "exclude":
        keep = ~unsure
        targets = positive[keep]
    else:
        keep = np.ones(len(column), dtype=bool)
        targets = positive | unsure if uncertain == "ones" else positive
    return keep, targets.astype(np.int64)


def load_mimic(split: str, root: str | os.PathLike, size: int = 224, n: int | None = None, seed: int = 0,
               views: Iterable[str] | None = FRONTAL, progress: bool = True):
    """(images uint8 [N, 3, size, size], labels float32 [N, 14]) of a split, in index_mimic's order (see there
    for views and the label values). `n` takes a seeded random subset (kept in order) before decoding."""
    paths, labels = index_mimic(split, root, views=views)
    keep = seeded_subset(len(paths), n, seed, f"MIMIC-CXR {split}")
    return decode_images(list(paths[keep]), size=size, progress=progress), labels[keep]
