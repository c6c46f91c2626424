"""Hash records of placed read-only copies (coar.paper.data.images.check_recorded / download_verified): a file's
SHA-256 is recorded beside it when its directory is writable (as before), otherwise under the workflow's
data/datasets/checksums/ (or COAR_CHECKSUM_DIR), named after the file's absolute path; later uses check it there.
The read-only directory is made with chmod (skipped as root, which ignores permissions) and simulated by a write
that raises PermissionError (so CI, which runs as root, tests the behaviour)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from coar.errors import CoarError
from coar.paper.data import images
from coar.paper.data.images import check_recorded, download_verified, sha256_file

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

def _records_dir(workdir: Path) -> Path:
    return workdir / "data" / "datasets" / "checksums"


def _check_read_only_copy(tmp_path, monkeypatch, placed: Path) -> None:
    """First use records the hash under the workflow's records dir, a later use verifies it, a modified file is
    refused naming it; a file of the same name elsewhere gets a record of its own."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("COAR_CHECKSUM_DIR", raising=False)
    assert check_recorded(placed) == placed
    assert not Path(f"{placed}.sha256").exists()
    records = list(_records_dir(work).iterdir())
    assert len(records) == 1 and records[0].read_text().split()[0] == sha256_file(placed)
    assert check_recorded(placed) == placed  # verified against that record
    assert download_verified("file:///nowhere/never-fetched", placed) == placed  # a placed copy is not refetched
    placed.write_bytes(placed.read_bytes()[:-1] + b"!")
    with pytest.raises(CoarError, match="corrupted or was modified") as info:
        check_recorded(placed)
    assert str(placed) in str(info.value) and str(records[0]) in str(info.value)


def _read_only_copy(tmp_path) -> Path:
    shared = tmp_path / "shared" / "cifar-10-batches-py"
    shared.mkdir(parents=True)
    placed = shared / "data_batch_1"
    placed.write_bytes(b"pickled batch" * 100)
    return placed


@pytest.mark.skipif(AS_ROOT, reason="root ignores directory permissions; the variant below simulates them")
def test_checksum_of_a_copy_in_a_read_only_directory_is_recorded_in_the_records_dir(tmp_path, monkeypatch):
    placed = _read_only_copy(tmp_path)
    placed.parent.chmod(0o555)
    try:
        _check_read_only_copy(tmp_path, monkeypatch, placed)
    finally:
        placed.parent.chmod(0o755)


def _refuse_writes_in(directory: Path, monkeypatch) -> None:
    """Writing a hash record into `directory` fails as in a read-only directory (CI runs as root)."""
    original = images._write_record

    def write(record, *args, **kwargs):
        if Path(record).parent == directory:
            raise PermissionError(13, "Permission denied", str(record))
        return original(record, *args, **kwargs)

    monkeypatch.setattr(images, "_write_record", write)


def test_checksum_of_a_copy_whose_directory_refuses_writes_is_recorded_in_the_records_dir(tmp_path, monkeypatch):
    placed = _read_only_copy(tmp_path)
    _refuse_writes_in(placed.parent, monkeypatch)
    _check_read_only_copy(tmp_path, monkeypatch, placed)


def test_checksum_records_dir_follows_coar_checksum_dir_and_names_do_not_collide(tmp_path, monkeypatch):
    monkeypatch.setenv("COAR_CHECKSUM_DIR", str(tmp_path / "records"))
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a" / "labels.npy", tmp_path / "b" / "labels.npy"
    for path, data in ((a, b"first"), (b, b"second")):
        path.parent.mkdir()
        path.write_bytes(data)
        _refuse_writes_in(path.parent, monkeypatch)
    check_recorded(a)
    check_recorded(b)
    records = sorted((tmp_path / "records").iterdir())
    assert len(records) == 2 and not (tmp_path / "data").exists()
    assert {r.read_text().split()[0] for r in records} == {sha256_file(a), sha256_file(b)}
    check_recorded(a)
    check_recorded(b)
    a.write_bytes(b"changed")
    with pytest.raises(CoarError, match=re.escape(str(a))):
        check_recorded(a)
    assert "COAR_CHECKSUM_DIR" in images.__doc__


def _first_use_in_a_writable_directory(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    placed = tmp_path / "raw" / "test_batch"
    placed.parent.mkdir()
    placed.write_bytes(b"x" * 1000)
    check_recorded(placed)
    return placed


def test_checksum_beside_a_writable_file_is_unchanged(tmp_path, monkeypatch):
    placed = _first_use_in_a_writable_directory(tmp_path, monkeypatch)
    assert Path(f"{placed}.sha256").read_text() == f"{sha256_file(placed)}  test_batch\n"
    assert not (tmp_path / "data").exists()


def test_checksum_recorded_beside_is_checked_even_when_the_directory_became_read_only(tmp_path, monkeypatch):
    placed = _first_use_in_a_writable_directory(tmp_path, monkeypatch)
    _refuse_writes_in(placed.parent, monkeypatch)
    placed.write_bytes(b"y" * 1000)
    with pytest.raises(CoarError, match="corrupted or was modified"):
        check_recorded(placed)
    assert not (tmp_path / "data").exists()



def test_a_modified_read_only_cifar_copy_is_refused_before_it_is_unpickled(tmp_path, monkeypatch):
    """CIFAR-10 (pickles) checks the recorded hashes before unpickling anything: records kept in the records
    directory, because the copy's directory refuses writes, count as well as records beside the files."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_backdoor import _write_cifar10

    from coar.paper.data import cifar
    from coar.paper.data.registry import load_images

    root = tmp_path / "cifar10"
    _write_cifar10(root)
    folder = root / "cifar-10-batches-py"
    _refuse_writes_in(folder, monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COAR_CHECKSUM_DIR", raising=False)
    load_images("cifar10", "test", root, download=False)  # first use: records under data/datasets/checksums
    assert not list(folder.glob("*.sha256")) and len(list(_records_dir(tmp_path).iterdir())) == 7
    with open(folder / "data_batch_3", "ab") as fh:
        fh.write(b"x")
    unpickled = []
    original = cifar._unpickle
    monkeypatch.setattr(cifar, "_unpickle", lambda path: unpickled.append(Path(path).name) or original(path))
    with pytest.raises(CoarError, match=r"data_batch_3 is corrupted or was modified"):
        load_images("cifar10", "test", root, download=False)
    assert unpickled == []
