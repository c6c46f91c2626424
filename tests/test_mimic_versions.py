"""MIMIC-CXR-JPG 2.1.0, the current release (same layout as 2.0.0, whose table names it keeps:
physionet.org/files/mimic-cxr-jpg/2.1.0/mimic-cxr-2.0.0-*.csv.gz and files/), is found as well as 2.0.0, the
newest present preferred and named in the dataset manifest; the tables and images are tests/test_mimic.py's."""
from __future__ import annotations

import pytest

from coar.errors import CoarError
from coar.paper.data import mimic, sources
from tests.test_mimic import EXPECTED, ROW, _rel, _release

@pytest.mark.parametrize("layout", [("mimic-cxr-jpg", "2.1.0"), ("physionet.org", "files", "mimic-cxr-jpg", "2.1.0")],
                         ids=["release", "wget"])
def test_mimic_2_1_0_release_is_read(tmp_path, layout):
    base = _release(tmp_path.joinpath(*layout))
    paths, labels = mimic.index_mimic("test", tmp_path)
    assert [str(p) for p in paths] == [str(base / _rel(*ROW[d], d)) for d in EXPECTED["test"]]
    assert labels.shape == (2, 14)
    assert mimic.find_release(tmp_path) == base
    manifest = sources.prepare("mimic-cxr", tmp_path)
    assert manifest["location"] == str(base) and "2.1.0" in manifest["location"]


def test_mimic_prefers_the_newest_release_present(tmp_path):
    _release(tmp_path / "mimic-cxr-jpg" / "2.0.0")
    newer = _release(tmp_path / "mimic-cxr-jpg" / "2.1.0")
    assert mimic.find_release(tmp_path) == newer
    assert all(p.is_relative_to(newer) for p in mimic.index_mimic("train", tmp_path)[0])
    assert sources.prepare("mimic-cxr", tmp_path)["location"] == str(newer)


def test_mimic_missing_names_both_versions(tmp_path):
    with pytest.raises(CoarError) as info:
        mimic.index_mimic("train", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "mimic-cxr-jpg" / "2.1.0" / "mimic-cxr-2.0.0-metadata.csv.gz") in message
    assert str(tmp_path / "mimic-cxr-jpg" / "2.0.0" / "mimic-cxr-2.0.0-metadata.csv.gz") in message
    assert "https://physionet.org/content/mimic-cxr-jpg/2.1.0/" in message
