"""MIMIC-CXR-JPG 2.0.0 loader (coar.paper.data.mimic), offline: every test writes a small release in the real on-disk
format into tmp_path (gzip-compressed CSV tables, grayscale JPEGs under files/p<xx>/p<subject>/s<study>/,
a sha256sum-format SHA256SUMS.txt) and checks the index, the labels, decoding and the error paths."""
from __future__ import annotations

import csv
import gzip
import hashlib

import numpy as np
import pytest
from PIL import Image

from coar.paper.data import mimic
from coar.paper.data.mimic import (CARDIOMEGALY, CLASS_NAMES, FRONTAL, LABELS, SPLITS, cardiomegaly_task, index_mimic,
                             load_mimic, verify_release)
from coar.errors import CoarError

NAN = float("nan")
RELEASE = ("mimic-cxr-jpg", "2.0.0")
METADATA_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                   "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                   "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
VIEW_MEANING = {"PA": ("postero-anterior", "Erect"), "AP": ("antero-posterior", "Erect"),
                "LATERAL": ("lateral", "Erect")}

# (subject_id, study_id, dicom_id, ViewPosition, split): 4 subjects, 7 studies, 12 images, written to the
# tables in this (unsorted) order; the loader sorts by subject_id, study_id, dicom_id.
IMAGES = [
    (10000032, 53189527, "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "AP", "train"),
    (10000032, 50414267, "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "train"),
    (10000032, 50414267, "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "train"),
    (10000764, 57375967, "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "AP", "train"),
    (10000764, 57375967, "b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f", "LATERAL", "train"),
    (10000032, 56699142, "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c", "AP", "train"),
    (10001217, 58913004, "5e54fc9c-37c49834-9ac3b915-55811712-9d959d26", "PA", "validate"),
    (10001217, 58913004, "1a1fe7e3-cbac5d93-b339aeda-86bb86b5-4f31e82e", "LATERAL", "validate"),
    (10001217, 52067803, "4a1d3b3c-c0a4d9ba-9b1ba5ec-2e1b4d9e-b1bd4dc6", "AP", "validate"),
    (11000011, 51592424, "9c3f2b3d-2ec5dbf1-6f8ec5c2-0d6c3a4b-1e2f3a4b", "PA", "test"),
    (11000011, 51592424, "0c4eb1e1-b801903c-bcebe8a4-3da9cd3c-3b94a27c", "LATERAL", "test"),
    (11000011, 59120005, "77f0d3a1-6a3b0e8c-1e0bd2f1-2c9d4a5e-8f7e6d5c", "AP", "test"),
]
GRAY = {dicom: 30 + 17 * i for i, (_, _, dicom, _, _) in enumerate(IMAGES)}  # identifies a decoded image

# (subject_id, study_id) -> {label: cell}; unlisted labels are empty. Study 59120005 has no CheXpert row.
CHEXPERT = {
    (10000032, 50414267): {"No Finding": "1.0"},
    (10000032, 53189527): {"Cardiomegaly": "1.0", "Edema": "-1.0", "Pleural Effusion": "0.0"},
    (10000032, 56699142): {"Cardiomegaly": "-1.0", "Support Devices": "1.0"},
    (10000764, 57375967): {"Cardiomegaly": "0.0", "Atelectasis": "-1.0", "Lung Opacity": "1.0"},
    (10001217, 58913004): {"Cardiomegaly": "1.0", "Pneumonia": "-1.0"},
    (10001217, 52067803): {"Pneumothorax": "0.0", "Fracture": "1.0"},
    (11000011, 51592424): {"Cardiomegaly": "-1.0", "Consolidation": "0.0", "No Finding": ""},
}

# The sorted, frontal images of each split, spelled out.
EXPECTED = {
    "train": ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014",    # 10000032 / 50414267 PA
              "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab",    # 10000032 / 53189527 AP
              "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c",    # 10000032 / 56699142 AP
              "096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4"],   # 10000764 / 57375967 AP
    "validate": ["4a1d3b3c-c0a4d9ba-9b1ba5ec-2e1b4d9e-b1bd4dc6",  # 10001217 / 52067803 AP
                 "5e54fc9c-37c49834-9ac3b915-55811712-9d959d26"],  # 10001217 / 58913004 PA
    "test": ["9c3f2b3d-2ec5dbf1-6f8ec5c2-0d6c3a4b-1e2f3a4b",      # 11000011 / 51592424 PA
             "77f0d3a1-6a3b0e8c-1e0bd2f1-2c9d4a5e-8f7e6d5c"],     # 11000011 / 59120005 AP (no CheXpert row)
}
ROW = {dicom: (subject, study) for subject, study, dicom, _, _ in IMAGES}


def _label_row(subject, study):
    """The expected float32 labels of a study, from CHEXPERT (NaN for empty cells and for absent studies)."""
    cells = CHEXPERT.get((subject, study))
    if cells is None:
        return [NAN] * 14
    return [float(cells[name]) if cells.get(name, "") != "" else NAN for name in LABELS]


def _rel(subject, study, dicom):
    return f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"


def _write_gz(path, header, rows):
    with gzip.open(path, "wt", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _sums(base):
    """SHA256SUMS.txt as PhysioNet publishes it: `<sha256>  <path relative to the release>` for every file."""
    lines = []
    for path in sorted(p for p in base.rglob("*") if p.is_file() and p.name != "SHA256SUMS.txt"):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(base).as_posix()}")
    (base / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")


def _release(base, images=IMAGES, chexpert=CHEXPERT, sums=True, chexpert_header=None, label_override=None,
             split_override=None):
    """Write a MIMIC-CXR-JPG 2.0.0 release directory (the one holding the csv.gz files) at `base`."""
    base.mkdir(parents=True, exist_ok=True)
    meta_rows, split_rows = [], []
    for subject, study, dicom, view, split in images:
        path = base / _rel(subject, study, dicom)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (40, 48), GRAY[dicom]).save(path, "JPEG", quality=95)
        meaning, orientation = VIEW_MEANING[view]
        meta_rows.append([dicom, subject, study, "CHEST (PA AND LAT)", view, 3056, 2544, 21800506, 213014.531,
                          "CHEST (PA AND LAT)", meaning, orientation])
        split_rows.append([dicom, study, subject, split_override.get(dicom, split) if split_override else split])
    _write_gz(base / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER, meta_rows)
    _write_gz(base / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows)
    chex_rows = []
    for (subject, study), cells in chexpert.items():
        cells = {**cells, **(label_override or {})} if (subject, study) == (10000764, 57375967) else cells
        chex_rows.append([subject, study] + [cells.get(name, "") for name in LABELS])
    header = chexpert_header or ["subject_id", "study_id", *LABELS]
    _write_gz(base / "mimic-cxr-2.0.0-chexpert.csv.gz", header, chex_rows)
    if sums:
        _sums(base)
    return base


@pytest.fixture
def release(tmp_path):
    """(root, release directory) in the standard layout root/mimic-cxr-jpg/2.0.0."""
    return tmp_path, _release(tmp_path.joinpath(*RELEASE))


# --------------------------------------------------------------------------------------------- index

def test_constants():
    assert LABELS == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
                      "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other",
                      "Pneumonia", "Pneumothorax", "Support Devices")
    assert CARDIOMEGALY == 1 and CLASS_NAMES == LABELS and FRONTAL == ("PA", "AP")
    assert SPLITS == {"train": "train", "val": "validate", "validate": "validate", "test": "test"}


@pytest.mark.parametrize("split", ["train", "val", "validate", "test"])
def test_index_paths_and_labels_exactly(release, split):
    root, base = release
    paths, labels = index_mimic(split, root)
    dicoms = EXPECTED[SPLITS[split]]
    assert paths.dtype == object and labels.dtype == np.float32 and labels.shape == (len(dicoms), 14)
    assert [str(p) for p in paths] == [str(base / _rel(*ROW[d], d)) for d in dicoms]
    np.testing.assert_array_equal(labels, np.array([_label_row(*ROW[d]) for d in dicoms], dtype=np.float32))


def test_index_label_values_spelled_out(release):
    root, _ = release
    _, train = index_mimic("train", root)
    # 10000032/53189527 (second frontal training image): Cardiomegaly 1, Edema -1, Pleural Effusion 0, rest NaN
    row = train[1]
    assert row[CARDIOMEGALY] == 1.0 and row[LABELS.index("Edema")] == -1.0
    assert row[LABELS.index("Pleural Effusion")] == 0.0
    assert np.isnan(row).sum() == 11
    assert train[:, CARDIOMEGALY].tolist()[1:] == [1.0, -1.0, 0.0] and np.isnan(train[0, CARDIOMEGALY])
    _, test = index_mimic("test", root)
    assert test[0, CARDIOMEGALY] == -1.0 and test[0, LABELS.index("Consolidation")] == 0.0
    assert np.isnan(test[1]).all(), "a study without a CheXpert row gets all-NaN labels"


def test_views(release):
    root, base = release
    paths, labels = index_mimic("train", root, views=None)
    assert [p.name[:8] for p in paths] == ["02aa804e", "174413ec", "2a2277a9", "ea030e7a", "096052b7", "b79e55c3"]
    assert np.array_equal(labels[0], labels[1], equal_nan=True), "both images of a study share its labels"
    lateral = {d for _, _, d, v, _ in IMAGES if v == "LATERAL"}
    for split in ("train", "val", "test"):
        assert not {p.stem for p in index_mimic(split, root)[0]} & lateral, "lateral views dropped by default"
        everything = index_mimic(split, root, views=None)[0]
        assert len(everything) == sum(s == SPLITS[split] for *_, s in IMAGES)
    assert [p.stem[:8] for p in index_mimic("train", root, views=("AP",))[0]] == ["2a2277a9", "ea030e7a", "096052b7"]
    assert [p.stem[:8] for p in index_mimic("test", root, views="LATERAL")[0]] == ["0c4eb1e1"]
    with pytest.raises(CoarError, match="LL"):
        index_mimic("test", root, views=("LL",))


def test_splits_are_validated(release):
    root, _ = release
    with pytest.raises(CoarError, match="split"):
        index_mimic("validation", root)


# --------------------------------------------------------------------------------------------- load

def test_load_decodes_grayscale_to_three_equal_channels(release):
    root, _ = release
    images, labels = load_mimic("train", root, progress=False)
    assert images.shape == (4, 3, 224, 224) and images.dtype == np.uint8
    assert np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 1], images[:, 2])
    for image, dicom in zip(images, EXPECTED["train"]):  # the right file, in sorted order
        assert abs(float(image.mean()) - GRAY[dicom]) < 3
    np.testing.assert_array_equal(labels, index_mimic("train", root)[1])
    small, _ = load_mimic("test", root, size=32, views=None, progress=False)
    assert small.shape == (3, 3, 32, 32)


def test_load_seeded_subset_decodes_only_the_chosen_files(release, monkeypatch):
    root, _ = release
    paths, labels = index_mimic("train", root, views=None)
    decoded = []
    real = mimic.decode_images

    def counting(paths, **kw):
        paths = list(paths)
        decoded.append([p.stem for p in paths])
        return real(paths, **kw)

    monkeypatch.setattr(mimic, "decode_images", counting)
    chosen = set()
    for seed in range(6):
        images, sub = load_mimic("train", root, size=32, n=2, seed=seed, views=None, progress=False)
        rows = [[p.stem for p in paths].index(stem) for stem in decoded[-1]]
        assert len(decoded[-1]) == 2 and rows == sorted(set(rows)), "2 distinct files, kept in index order"
        np.testing.assert_array_equal(sub, labels[rows])
        assert [abs(float(img.mean()) - GRAY[paths[r].stem]) < 3 for img, r in zip(images, rows)] == [True, True]
        chosen.add(tuple(rows))
    assert len(chosen) > 1, "different seeds pick different subsets"
    again = load_mimic("train", root, size=32, n=2, seed=3, views=None, progress=False)
    assert decoded[-1] == decoded[3]
    assert again[0].shape == (2, 3, 32, 32)
    with pytest.raises(CoarError, match="n=7"):
        load_mimic("train", root, n=7, views=None, progress=False)


# --------------------------------------------------------------------------------------------- Cardiomegaly task

def test_cardiomegaly_task_policies():
    labels = np.full((5, 14), np.nan, dtype=np.float32)
    labels[:, CARDIOMEGALY] = [1.0, 0.0, -1.0, np.nan, 1.0]
    labels[3, 0] = 1.0  # other findings do not matter
    keep, y = cardiomegaly_task(labels)
    assert keep.tolist() == [True, True, False, True, True] and y.tolist() == [1, 0, 0, 1]
    assert y.dtype == np.int64 and keep.dtype == bool
    keep, y = cardiomegaly_task(labels, uncertain="zeros")
    assert keep.all() and y.tolist() == [1, 0, 0, 0, 1]
    keep, y = cardiomegaly_task(labels, uncertain="ones")
    assert keep.all() and y.tolist() == [1, 0, 1, 0, 1]
    with pytest.raises(CoarError, match="uncertain"):
        cardiomegaly_task(labels, uncertain="ignore")
    with pytest.raises(CoarError, match="14"):
        cardiomegaly_task(labels[:, :13])
    labels[0, CARDIOMEGALY] = 2.0
    with pytest.raises(CoarError, match="row 0"):
        cardiomegaly_task(labels)


def test_cardiomegaly_task_on_an_indexed_split(release):
    root, _ = release
    _, labels = index_mimic("train", root)  # Cardiomegaly: NaN, 1, -1, 0
    keep, y = cardiomegaly_task(labels)
    assert keep.tolist() == [True, True, False, True] and y.tolist() == [0, 1, 0]


# --------------------------------------------------------------------------------------------- layouts

def test_root_spellings(tmp_path):
    standard = _release(tmp_path / "a" / "mimic-cxr-jpg" / "2.0.0")
    expected = [str(standard / _rel(*ROW[d], d)) for d in EXPECTED["test"]]
    for root in (tmp_path / "a", standard, tmp_path / "a" / "mimic-cxr-jpg"):
        assert [str(p) for p in index_mimic("test", root)[0]] == expected
    flat = _release(tmp_path / "flat")  # the csv.gz files and files/ directly in root
    assert [str(p) for p in index_mimic("test", flat)[0]] == [str(flat / _rel(*ROW[d], d)) for d in EXPECTED["test"]]
    wget = _release(tmp_path / "w" / "physionet.org" / "files" / "mimic-cxr-jpg" / "2.0.0")  # plain `wget -r`
    assert index_mimic("test", tmp_path / "w")[0][0].is_relative_to(wget)


def test_missing_release_gives_instructions(tmp_path):
    with pytest.raises(CoarError) as info:
        index_mimic("train", tmp_path)
    msg = str(info.value)
    assert "physionet" in msg.lower() and "credentialed" in msg and "wget" in msg
    assert "https://physionet.org/content/mimic-cxr-jpg/2.0.0/" in msg
    assert str(tmp_path / "mimic-cxr-jpg" / "2.0.0" / "mimic-cxr-2.0.0-metadata.csv.gz") in msg
    assert str(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz") in msg, "every path tried is named"
    with pytest.raises(CoarError, match="physionet"):
        load_mimic("test", tmp_path / "nowhere")


def test_missing_table_is_named(release):
    root, base = release
    (base / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    with pytest.raises(CoarError) as info:
        index_mimic("train", root)
    msg = str(info.value)
    assert str(base / "mimic-cxr-2.0.0-chexpert.csv.gz") in msg and "physionet" in msg


def test_missing_image_is_named(release):
    root, base = release
    dicom = EXPECTED["validate"][1]
    (base / _rel(*ROW[dicom], dicom)).unlink()
    with pytest.raises(CoarError) as info:
        index_mimic("val", root)
    msg = str(info.value)
    assert "1 of the 2" in msg and str(base / _rel(*ROW[dicom], dicom)) in msg and "physionet" in msg
    assert len(index_mimic("train", root)[0]) == 4, "other splits are unaffected"
    lateral = "0c4eb1e1-b801903c-bcebe8a4-3da9cd3c-3b94a27c"
    (base / _rel(*ROW[lateral], lateral)).unlink()
    assert len(index_mimic("test", root)[0]) == 2, "a filtered-out view need not exist"
    with pytest.raises(CoarError, match=lateral):
        index_mimic("test", root, views=None)


# --------------------------------------------------------------------------------------------- integrity

def _flip_byte(path, offset=-10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-chexpert.csv.gz",
                                  "mimic-cxr-2.0.0-split.csv.gz"])
def test_corrupted_table_fails_sha256(release, name, monkeypatch):
    root, base = release
    _flip_byte(base / name)
    monkeypatch.setattr(mimic, "_rows", lambda *a, **k: pytest.fail("a table failing verification was read"))
    with pytest.raises(CoarError) as info:
        index_mimic("train", root)
    msg = str(info.value)
    assert str(base / name) in msg and "SHA256" in msg
    assert hashlib.sha256((base / name).read_bytes()).hexdigest() in msg, "found hash named"
    listed = [line.split()[0] for line in (base / "SHA256SUMS.txt").read_text().splitlines() if line.endswith(name)]
    assert listed[0] in msg, "expected hash named"


def test_every_read_verifies_so_a_table_changed_between_reads_is_caught(release, monkeypatch):
    root, base = release
    calls = []
    real = mimic.sha256_file
    monkeypatch.setattr(mimic, "sha256_file", lambda path: calls.append(path.name) or real(path))
    assert verify_release(base) is True and sorted(calls) == sorted(mimic.TABLES)
    assert len(index_mimic("train", root)[0]) == 4 and len(calls) == 6
    assert sorted(p.name for p in base.iterdir()) == sorted(["SHA256SUMS.txt", "files", *mimic.TABLES]), \
        "nothing is written into the release"
    table = base / "mimic-cxr-2.0.0-split.csv.gz"
    original = table.read_bytes()
    _flip_byte(table)
    with pytest.raises(CoarError, match="split.csv.gz failed SHA-256"):
        index_mimic("train", root)
    table.write_bytes(original)  # the re-downloaded table verifies again
    assert len(index_mimic("train", root)[0]) == 4


def test_without_sha256sums_nothing_is_hashed(tmp_path, monkeypatch):
    base = _release(tmp_path, sums=False)
    monkeypatch.setattr(mimic, "sha256_file", lambda path: pytest.fail(f"{path} hashed without SHA256SUMS.txt"))
    assert verify_release(base) is False
    assert len(index_mimic("train", tmp_path)[0]) == 4


def test_sha256sums_without_an_entry_is_reported(release):
    root, base = release
    sums = base / "SHA256SUMS.txt"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "chexpert" not in line))
    with pytest.raises(CoarError, match="chexpert.csv.gz"):
        verify_release(base)


def test_corrupt_gzip_without_sums_is_named(tmp_path):
    base = _release(tmp_path, sums=False)
    path = base / "mimic-cxr-2.0.0-metadata.csv.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CoarError, match="metadata.csv.gz"):
        index_mimic("train", tmp_path)


# --------------------------------------------------------------------------------------------- table validation

def test_bad_label_value_names_file_row_and_column(tmp_path):
    _release(tmp_path, label_override={"Edema": "2.0"}, sums=False)
    with pytest.raises(CoarError) as info:
        index_mimic("train", tmp_path)
    msg = str(info.value)
    assert "mimic-cxr-2.0.0-chexpert.csv.gz" in msg and "'Edema'" in msg and "'2.0'" in msg
    assert "line 5" in msg and "57375967" in msg  # the 4th data row of CHEXPERT, after the header


def test_alternative_label_spellings_are_accepted(tmp_path):
    _release(tmp_path, label_override={"Edema": "1", "Fracture": "-1", "Pneumonia": "0"}, sums=False)
    _, labels = index_mimic("train", tmp_path)
    assert labels[3, LABELS.index("Edema")] == 1.0 and labels[3, LABELS.index("Fracture")] == -1.0
    assert labels[3, LABELS.index("Pneumonia")] == 0.0


def test_missing_column_names_file_and_column(tmp_path):
    header = ["subject_id", "study_id", *LABELS]
    header[2 + CARDIOMEGALY] = "Cardiomegally"
    _release(tmp_path, chexpert_header=header, sums=False)
    with pytest.raises(CoarError) as info:
        index_mimic("train", tmp_path)
    assert "mimic-cxr-2.0.0-chexpert.csv.gz" in str(info.value) and "'Cardiomegaly'" in str(info.value)

    base = tmp_path / "m"
    _release(base, sums=False)
    rows = [["dicom_id", "subject_id", "study_id", "ViewCodeSequence_CodeMeaning"]]  # no ViewPosition
    _write_gz(base / "mimic-cxr-2.0.0-metadata.csv.gz", rows[0], [[d, s, t, "lateral"] for s, t, d, _, _ in IMAGES])
    with pytest.raises(CoarError) as info:
        index_mimic("train", base)
    assert "mimic-cxr-2.0.0-metadata.csv.gz" in str(info.value) and "'ViewPosition'" in str(info.value)


def test_bad_split_value_and_inconsistent_tables(tmp_path):
    dicom = IMAGES[4][2]
    _release(tmp_path / "a", split_override={dicom: "valid"}, sums=False)
    with pytest.raises(CoarError) as info:
        index_mimic("test", tmp_path / "a")
    msg = str(info.value)
    assert "mimic-cxr-2.0.0-split.csv.gz" in msg and "line 6" in msg and "'valid'" in msg and dicom in msg

    base = _release(tmp_path / "b", sums=False)
    meta_rows = [[d, s, t, "", v, 1, 1, 1, 1, "", "", ""] for s, t, d, v, _ in IMAGES[1:]]
    _write_gz(base / "mimic-cxr-2.0.0-metadata.csv.gz", METADATA_HEADER, meta_rows)
    with pytest.raises(CoarError, match=f"no row in .*metadata.csv.gz.*{IMAGES[0][2]}"):
        index_mimic("train", base)

    base = _release(tmp_path / "c", sums=False)
    rows = [[d, t, 19999999 if i == 2 else s, sp] for i, (s, t, d, _, sp) in enumerate(IMAGES)]
    _write_gz(base / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], rows)
    with pytest.raises(CoarError, match="line 4.*19999999"):
        index_mimic("train", base)


# --------------------------------------------------------------------------------------------- registry

def test_registry_examples_are_binary_cardiomegaly_on_frontal_views(release):
    """What the workflow decodes for setup MX: frontal views of the split, uncertain Cardiomegaly studies left
    out, label 1 = Cardiomegaly (the class whose logit is the model output, `logit:1`)."""
    from coar.paper.data.registry import DATASETS, class_names, make_examples

    root, base = release
    ex = make_examples("mimic-cxr", "train", n=None, root=root)
    kept = [EXPECTED["train"][i] for i in (0, 1, 3)]  # the third study is uncertain (-1.0)
    assert ex.targets.tolist() == [0, 1, 0] and ex.inputs.shape == (3, 3, 224, 224)
    for image, dicom in zip(ex.inputs, kept):
        assert abs(float(image.mean()) - GRAY[dicom]) < 2 and (image[0] == image[1]).all()
    assert class_names("mimic-cxr")[1] == "cardiomegaly" and DATASETS["mimic-cxr"]["classes"] == 2
    sub = make_examples("mimic-cxr", "val", n=1, seed=0, root=root)
    assert len(sub) == 1 and sub.meta["dataset"] == "mimic-cxr"
