"""ImageNet* as published: one <shift>.zip per shift (Hugging Face dataset madrylab/imagenet-star). The dataset
preparation (sources.prepare, the workflow's `dataset` rule) unpacks each zip into its folder through a temporary
folder renamed into place when complete, refuses members that escape it and keeps the zip; the shift list ignores
folders that are not shifts (hidden ones such as a hub download's .cache, __MACOSX, folders without class
folders). Zips and folders are written here in the release's format (no network)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from coar.errors import CoarError
from coar.paper.data import imagenet, sources


def _jpeg_bytes(value: int, size=(20, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (value, value, value)).save(out, "JPEG", quality=95)
    return out.getvalue()

def _star_members(shift: str, classes, per_class: int, top: bool = True) -> dict[str, bytes]:
    """<shift>/<class index>/<image> (the shift's folder at the top of its zip, as the release is read)."""
    prefix = f"{shift}/" if top else ""
    return {f"{prefix}{c}/{shift}_{c}_{k}.jpg": _jpeg_bytes((7 * c + 40 * k) % 250)
            for c in classes for k in range(per_class)}


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip as `zip -r` writes one: an entry for every folder, then the files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folders = sorted({"/".join(n.split("/")[:i]) + "/" for n in members for i in range(1, n.count("/") + 1)})
    with zipfile.ZipFile(path, "w") as zf:
        for d in folders:
            zf.writestr(d, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _placed(root: Path, shift: str, classes, per_class: int) -> None:
    for name, data in _star_members(shift, classes, per_class).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


@pytest.mark.parametrize("top", [True, False], ids=["shift-folder-in-zip", "class-folders-at-top"])
def test_star_root_with_only_zips_is_unpacked_and_indexed(tmp_path, top):
    root = tmp_path / "imagenet-star"
    water = _zip(root / "in_the_water.zip", _star_members("in_the_water", [0, 1, 2], 2, top))
    green = _zip(root / "green.zip", _star_members("green", [5], 3, top))
    sizes = {p: p.stat().st_size for p in (water, green)}
    manifest = sources.prepare("imagenet-star", root)
    assert manifest["counts"] == {"green": 3, "in_the_water": 6}
    paths, labels = imagenet.index_imagenet_star(root, "in_the_water")
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [p.relative_to(root).as_posix() for p in paths][:2] == ["in_the_water/0/in_the_water_0_0.jpg",
                                                                   "in_the_water/0/in_the_water_0_1.jpg"]
    assert {p: p.stat().st_size for p in (water, green)} == sizes, "the zips are kept"
    assert sorted(p.name for p in root.iterdir()) == ["green", "green.zip", "in_the_water", "in_the_water.zip"]
    (root / "in_the_water" / "0" / "in_the_water_0_0.jpg").unlink()  # unpacked once: the folder is what is read
    assert sources.prepare("imagenet-star", root)["counts"] == {"green": 3, "in_the_water": 5}


def test_star_ignores_hidden_macosx_and_classless_folders(tmp_path):
    root = tmp_path / "imagenet-star"
    _placed(root, "at_dusk", [3, 7], 2)
    _zip(root / "orange.zip", {**_star_members("orange", [1], 2),
                               "__MACOSX/orange/1/._orange_1_0.jpg": b"\x00\x05\x16\x07resource fork"})
    # a Hugging Face download's cache, macOS's resource forks, a folder of notes: none of them is a shift
    (root / ".cache" / "huggingface" / "download" / "0").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "download" / "0" / "x.jpg").write_bytes(_jpeg_bytes(1))
    (root / "__MACOSX" / "at_dusk" / "3").mkdir(parents=True)
    (root / "__MACOSX" / "at_dusk" / "3" / "._at_dusk_3_0.jpg").write_bytes(b"\x00\x05\x16\x07")
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("downloaded from the hub")
    (root / "empty").mkdir()
    manifest = sources.prepare("imagenet-star", root)
    assert manifest["counts"] == {"at_dusk": 4, "orange": 2}
    assert not (root / "orange" / "__MACOSX").exists() and not list((root / "orange").rglob("._*"))
    assert imagenet.star_shifts(root) == ["at_dusk", "orange"]
    with pytest.raises(CoarError, match=r"shifts found: \['at_dusk', 'orange'\]"):
        imagenet.index_imagenet_star(root, "green")


def test_star_half_unpacked_folder_of_a_killed_run_is_cleaned_and_redone(tmp_path):
    root = tmp_path / "imagenet-star"
    _zip(root / "in_the_water.zip", _star_members("in_the_water", [0, 1], 2))
    # what a run killed during the unzip leaves: its temporary folder, holding part of the shift
    stale = root / ".in_the_water.extract-k1ll3d"
    (stale / "in_the_water" / "0").mkdir(parents=True)
    (stale / "in_the_water" / "0" / "in_the_water_0_0.jpg").write_bytes(_jpeg_bytes(0)[:50])  # cut short
    assert imagenet.star_shifts(root) == [], "a half-unpacked folder is never taken for a shift"
    assert sources.prepare("imagenet-star", root)["counts"] == {"in_the_water": 4}
    assert not stale.exists()
    assert sorted(p.name for p in root.iterdir()) == ["in_the_water", "in_the_water.zip"]


def test_star_interrupted_unzip_leaves_no_shift_folder(tmp_path, monkeypatch):
    root = tmp_path / "imagenet-star"
    _zip(root / "green.zip", _star_members("green", [4], 2))

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", killed)
    with pytest.raises(KeyboardInterrupt):
        sources.prepare("imagenet-star", root)
    assert sorted(p.name for p in root.iterdir()) == ["green.zip"]
    monkeypatch.undo()
    assert sources.prepare("imagenet-star", root)["counts"] == {"green": 2}


def test_star_zip_with_an_escaping_member_is_refused(tmp_path):
    root = tmp_path / "data" / "imagenet-star"
    archive = _zip(root / "in_the_water.zip", {**_star_members("in_the_water", [0], 1),
                                                "in_the_water/../../evil.txt": b"outside"})
    with pytest.raises(CoarError, match=r"in_the_water\.zip.*unsafe member") as info:
        sources.prepare("imagenet-star", root)
    assert "../" in str(info.value)
    assert not (tmp_path / "data" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in root.iterdir()) == ["in_the_water.zip"] and archive.is_file()


def test_star_zip_beside_a_folder_that_is_not_a_shift_is_reported(tmp_path):
    root = tmp_path / "imagenet-star"
    _zip(root / "green.zip", _star_members("green", [4], 2))
    (root / "green").mkdir()  # made by hand, empty
    with pytest.raises(CoarError, match=r"green.*holds no class folder.*remove it"):
        sources.prepare("imagenet-star", root)
    assert imagenet.index_imagenet_star.__doc__ and "shift" in imagenet.star_shifts.__doc__

