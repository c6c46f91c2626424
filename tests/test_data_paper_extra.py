"""Obtaining CelebA and the typographic-attack photos [MTB22], offline: both download through gdown, an optional
dependency (the `paper` extra); without it the download path says `pip install 'coar[paper]'` and where to place
the files by hand. The typographic set takes either annotation file name (annotation.json, as its README spells
it; annotations.json, as loaders of others read it) and refuses a copy whose clean split comes out empty."""
from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from coar.errors import CoarError
from coar.paper.data import celeba, sources, typographic

ROOT = Path(__file__).resolve().parents[1]

def _requirement_names(requirements) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_the_paper_and_dev_extras_list_gdown():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "gdown" in _requirement_names(extras["paper"])
    assert "gdown" in _requirement_names(extras["dev"])  # dev repeats every extra's packages


def _says_install_and_placement(message: str, *places) -> None:
    assert "pip install 'coar[paper]'" in message, message
    for place in places:
        assert str(place) in message, (place, message)


def test_celeba_download_without_gdown_names_the_extra_and_where_to_place_the_files(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown fails
    with pytest.raises(CoarError) as info:
        celeba.ensure_celeba(tmp_path / "celeba-blond", download=True)
    base = tmp_path / "celeba-blond" / "celeba"
    _says_install_and_placement(str(info.value), base / "img_align_celeba", base)
    assert "list_attr_celeba.txt" in str(info.value) and "list_eval_partition.txt" in str(info.value)
    with pytest.raises(CoarError, match=re.escape("pip install 'coar[paper]'")):  # the workflow's dataset rule
        sources.prepare("celeba-blond", tmp_path / "celeba-blond")


def test_typographic_download_without_gdown_names_the_extra_and_where_to_place_the_files(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)
    with pytest.raises(CoarError) as info:
        typographic.load_typographic(tmp_path / "typographic", download=True)
    folder = tmp_path / "typographic" / typographic.SUBDIR
    _says_install_and_placement(str(info.value), folder)
    assert "annotations.json" in str(info.value) and typographic.DATASET_URL in str(info.value)
    with pytest.raises(CoarError, match=re.escape("pip install 'coar[paper]'")):
        sources.prepare("typographic", tmp_path / "typographic")


def _typographic(root: Path, name: str, attacks=("", "taxi", "EU")) -> Path:
    """The [MTB22] layout: typographic_attack_dataset/<name> mapping photos to labels, photos in images/."""
    folder = root / typographic.SUBDIR
    (folder / "images").mkdir(parents=True)
    annotations, number = {}, 2930
    for obj, level in (("hat", 60), ("cup", 180)):
        for attack in attacks:
            photo = f"IMG_{number}.JPG"
            Image.new("RGB", (20, 16), (level, level, level)).save(folder / "images" / photo, "JPEG")
            annotations[photo] = {"true object": obj, "typographic attack label": attack}
            number += 1
    (folder / name).write_text(json.dumps(annotations))
    return folder


@pytest.mark.parametrize("name", ["annotation.json", "annotations.json"])
def test_typographic_reads_either_annotation_file_name(tmp_path, name):
    _typographic(tmp_path, name)
    data = typographic.load_typographic(tmp_path, size=8)
    assert Path(data.annotation_file).name == name
    assert data.clean_files == ["IMG_2930.JPG", "IMG_2933.JPG"] and data.clean_labels.tolist() == [1, 0]
    assert sources.prepare("typographic", tmp_path)["counts"] == {"clean": 2, "classes": 4}


def test_typographic_with_no_clean_photo_is_refused_naming_the_folder_and_the_count(tmp_path):
    folder = _typographic(tmp_path, "annotation.json", attacks=("taxi", "EU"))  # every photo attacked
    with pytest.raises(CoarError) as info:
        typographic.load_typographic(tmp_path, size=8)
    message = str(info.value)
    assert str(folder) in message and "0 clean" in message and "4 photos" in message
    with pytest.raises(CoarError, match="0 clean"):
        sources.prepare("typographic", tmp_path)

