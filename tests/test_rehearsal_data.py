"""The rehearsal's miniature data sources (workflow/rehearsal/fixtures_data.py) pass the project's real loaders
and their checks, through the calls the workflow makes: coar.paper.data.sources.prepare (rule dataset, the downloads
from the mirror included), then make_examples with the rehearsal preset's settings (rules examples,
heldout_examples, shifted_examples and the training sets of rule model); and they hold what the preset's edits
need (targets of each kind, every class and group in both held-out halves)."""
from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from coar.paper.data.corruptions import load_cifar10c
from coar.paper.data.registry import (DATASETS, TEXT_DATASETS, class_names, dataset_root, decode_size, load_images,
                                make_examples)
from coar.paper.data.sources import prepare, source_root
from coar.errors import CoarError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "rehearsal"))

import fixtures_data as fd  # noqa: E402
import fixtures_models as fm  # noqa: E402
import preset  # noqa: E402

SOURCES = ("cifar10", "cifar10-c", "imagenet", "imagenet-sketch", "imagenet-star", "waterbirds", "celeba-blond",
           "mimic-cxr", "typographic")


def _resolved(cfg: dict) -> dict:
    """The setups with their parents' keys, as coar.paper.plan.resolve_parents resolves them (nested dicts merged one
    level)."""
    raw = cfg["setups"]

    def merged(name):
        s = raw[name]
        if s.get("parent") is None:
            return dict(s)
        base = {k: v for k, v in merged(s["parent"]).items() if k != "parent"}
        for k, v in s.items():
            if k not in ("parent", "title"):
                base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return base

    return {name: merged(name) for name in raw}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The fixtures laid out as rehearse.py lays them out, the rehearsal config, and every source prepared (about
    half a minute: the ResNet-50 labels ImageNet images on the CPU)."""
    d = tmp_path_factory.mktemp("fixtures")
    raw, mirror, torch_home = d / "data" / "raw", d / "mirror", d / "torch-home"
    fm.make_torchvision_weights(torch_home)  # the ResNet-50 the ImageNet images are labelled with
    env = fd.make_data(raw, mirror, torch_home)
    cfg = preset.derive(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()), d)
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    mp.setenv("TORCH_HOME", str(torch_home))
    roots = (cfg.get("data_root"), cfg["download_root"], cfg["imagenet_root"])
    manifests = {s: prepare(s, source_root(s, *roots)) for s in SOURCES}
    yield {"dir": d, "raw": raw, "mirror": mirror, "env": env, "setups": _resolved(cfg), "edits": cfg["edits"],
           "roots": roots, "manifests": manifests}
    mp.undo()


def _root(made, dataset):
    return dataset_root(dataset, *made["roots"])


def _examples(made, s: dict, n="setup", offset: int = 0):
    """make_examples as workflow/scripts/prepare_examples.py calls it (n "setup": the setup's own n)."""
    ex = s["examples"]
    return make_examples(s["dataset"], ex["split"], ex.get("n") if n == "setup" else n, s.get("seed", 0) + 1,
                         _root(made, s["dataset"]), ex.get("every"), ex.get("corruption"), ex.get("length"), offset,
                         ex.get("trigger"), ex.get("whole_classes") or (), size=_size(s, s["dataset"]))


def _size(s: dict, dataset: str):
    """The decode size the workflow passes for a setup's images (coar.paper.plan, train.py)."""
    return decode_size(dataset, s.get("image_size", 32))


def _heldout(made, edit: dict):
    """The held-out examples of an edit (Plan.heldout_file: the next `heldout` of the setup's draw)."""
    s = made["setups"][edit.get("heldout_setup") or edit["setup"]]
    assert s["examples"]["n"] is not None
    return _examples(made, s, edit["heldout"], s["examples"]["n"])


def _check(made, ex, dataset: str, n: int | None = None, size: int | None = None):
    info = DATASETS[dataset]
    size = size or info["size"]
    classes = info["classes"] or len(class_names(dataset, _root(made, dataset)))
    assert ex.inputs.dtype == np.uint8 and ex.inputs.shape[1:] == (3, size, size), ex.inputs.shape
    assert ex.targets.dtype == np.int64 and len(ex.targets) == len(ex.inputs) and (n is None or len(ex) == n)
    assert 0 <= ex.targets.min() and ex.targets.max() < classes
    assert ex.inputs.std() > 5  # pictures, not blank files


def _image_setups(made):
    return {name: s for name, s in made["setups"].items() if s["dataset"] not in TEXT_DATASETS}


@pytest.mark.slow
def test_the_mirror_publishes_every_download_with_its_sha256(made):
    mirror = made["mirror"]
    assert made["env"] == {"COAR_DATA_MIRROR": mirror.resolve().as_uri()}
    listed = {name: digest for digest, name in
              (line.split("  ", 1) for line in (mirror / "SHA256SUMS").read_text().splitlines())}
    assert set(listed) == {"cifar-10-python.tar.gz", "CIFAR-10-C.tar", "ImageNet-Sketch.zip",
                           "waterbird_complete95_forest2water2.tar.gz"}
    for name, digest in listed.items():
        assert hashlib.sha256((mirror / name).read_bytes()).hexdigest() == digest
    size = sum(p.stat().st_size for p in made["dir"].rglob("*") if p.is_file() and "torch-home" not in p.parts)
    assert size < 30e6, size  # the mirror, what was downloaded from it and unpacked, and the placed sources


@pytest.mark.slow
def test_every_source_passes_its_loaders_checks_with_the_counts_made(made):
    m = {s: made["manifests"][s]["counts"] for s in SOURCES}
    assert m["cifar10"] == {"train": 5 * fd.CIFAR_PER_BATCH, "test": fd.CIFAR_TEST}
    assert len(m["cifar10-c"]) == 19 and set(m["cifar10-c"].values()) == {fd.CIFAR_TEST}
    assert m["imagenet"]["val"] > 1000 + fd.PREDICTED and made["manifests"]["imagenet"]["manual"]
    assert m["imagenet-sketch"] == {"test": 1000 + len(fd.FORGET_CLASSES)}
    assert sorted(m["imagenet-star"]) == sorted(fd.SHIFT_TINTS)
    groups = {split: 4 * n for split, n in fd.GROUP_COUNTS.items()}
    assert m["waterbirds"] == groups and m["celeba-blond"] == groups
    assert m["mimic-cxr"]["train"] >= 64 and m["mimic-cxr"]["test"] >= 4  # frontal, Cardiomegaly not uncertain
    assert m["typographic"] == {"clean": len(fd.TYPO_OBJECTS), "classes": len(fd.TYPO_OBJECTS) + len(fd.TYPO_ATTACKS)}
    raw = made["raw"]
    # the downloads were verified and unpacked where the loaders read them; the files read got hash records
    assert (raw / "cifar10" / "cifar-10-batches-py" / "test_batch.sha256").is_file()
    assert (raw / "CIFAR-10-C" / "snow.npy.sha256").is_file() and (raw / "imagenet-sketch" / "sketch").is_dir()
    assert (raw / "waterbirds" / "waterbird_complete95_forest2water2" / "metadata.csv").is_file()


@pytest.mark.slow
def test_cifar10_batches_are_python2_pickles_as_in_the_release(made):
    folder = made["raw"] / "cifar10" / "cifar-10-batches-py"
    data = (folder / "data_batch_1").read_bytes()
    assert data.startswith(b"\x80\x02}") and b"cnumpy.core.multiarray\n_reconstruct\n" in data and b"U\x04data" in data
    with open(folder / "data_batch_1", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")  # the loading recipe of the CIFAR-10 page
    assert batch[b"data"].shape == (fd.CIFAR_PER_BATCH, 3072) and len(batch[b"labels"]) == fd.CIFAR_PER_BATCH
    assert batch[b"batch_label"] == b"training batch 1 of 5"


@pytest.mark.slow
def test_examples_of_every_setup_of_the_rehearsal(made):
    for name, s in _image_setups(made).items():
        ex = _examples(made, s)
        n = s["examples"]["n"] * (2 if s["examples"].get("trigger") else 1)
        if s["examples"].get("whole_classes"):
            assert len(ex) > n and set(s["examples"]["whole_classes"]) <= set(ex.targets.tolist()), name
        else:
            _check(made, ex, s["dataset"], n, _size(s, s["dataset"]))
        _check(made, ex, s["dataset"], size=_size(s, s["dataset"]))
        if s["examples"].get("corruption"):
            assert ex.meta["corruption"]["source"] == "CIFAR-10-C"


@pytest.mark.slow
def test_training_and_test_sets_of_every_trained_model(made):
    for name, s in _image_setups(made).items():
        if not s.get("train") or s.get("pretrained"):
            continue
        root = _root(made, s["dataset"])
        train = make_examples(s["dataset"], "train", s["train"].get("n_train"), s.get("seed", 0), root,
                              size=_size(s, s["dataset"]))
        test = make_examples(s["dataset"], "test", None, 0, root, size=_size(s, s["dataset"]))
        _check(made, train, s["dataset"], s["train"]["n_train"], _size(s, s["dataset"]))
        _check(made, test, s["dataset"], size=_size(s, s["dataset"]))
        assert len(np.unique(train.targets)) > 1 and len(np.unique(test.targets)) > 1, name


@pytest.mark.slow
def test_held_out_and_shifted_sets_of_every_edit(made):
    for name, e in made["edits"].items():
        ex = _examples(made, made["setups"][e["setup"]])
        held = _heldout(made, e)
        dataset = made["setups"][e["setup"]]["dataset"]
        _check(made, held, dataset, size=_size(made["setups"][e["setup"]], dataset))
        if e["kind"] == "forget":  # each class among the targets and in both halves, and in every shifted set
            halves = held.targets[0::2], held.targets[1::2]
            for c in e["classes"]:
                assert (ex.targets == c).sum() >= e["targets"]
                assert all((h == c).any() and (h != c).any() for h in halves), (name, c)
            for shift, spec in e["shifts"].items():
                shifted = make_examples(spec["dataset"], spec["split"], spec["n"], e.get("seed", 0) + 2,
                                        _root(made, spec["dataset"]), whole_classes=e["classes"],
                                        size=_size(made["setups"][e["setup"]], spec["dataset"]))
                _check(made, shifted, spec["dataset"], size=_size(made["setups"][e["setup"]], spec["dataset"]))
                assert set(e["classes"]) <= set(shifted.targets.tolist()) and sum(shifted.meta["drawn"]) == spec["n"]
                assert not set(shifted.targets.tolist()) <= set(e["classes"]), shift
        if e["kind"] == "subpop":  # every group has the targets and the others the references
            groups = np.asarray(ex.meta["groups"])
            assert all((groups == g).sum() >= e["targets"] and (groups != g).sum() >= e["references"]
                       for g in range(4)), (name, np.bincount(groups))
        if e["kind"] in ("typographic", "backdoor"):  # paired examples: clean, then attacked
            n = made["setups"][e["setup"]]["examples"]["n"]
            assert ex.meta["triggered"] == [False] * n + [True] * n and n >= e["targets"], name


@pytest.mark.slow
def test_imagenet_has_examples_for_the_fix_and_induce_edits(made):
    """Half the validation images are labelled with the fixture ResNet-50's prediction: the rehearsal's setup B
    holds examples it classifies right (induce targets) and wrong (fix targets)."""
    from coar.paper.data.imagenet import index_imagenet_val
    from coar.paper.models import build_model

    model = build_model("resnet50", pretrained=True, num_classes=1000, image_size=preset.IMAGE_SIZES["resnet50"])
    kinds = {e["kind"] for e in made["edits"].values() if made["setups"][e["setup"]]["dataset"] == "imagenet"}
    assert {"fix", "induce"} <= kinds
    for setup in {e["setup"] for e in made["edits"].values() if e["kind"] in ("fix", "induce")}:
        s = made["setups"][setup]
        if s["dataset"] != "imagenet":
            continue
        ex = _examples(made, s)
        drawn = np.asarray(ex.meta.get("drawn", [True] * len(ex)))
        with torch.inference_mode():
            right = model(ex.tensors()[0][drawn]).argmax(1).numpy() == ex.targets[drawn]
        assert right.any() and not right.all(), (setup, right)
    counts = np.bincount(index_imagenet_val(made["raw"] / "imagenet")[1], minlength=1000)
    assert counts.min() >= 1 and all(counts[c] >= fd.FORGET_IMAGES for c in fd.FORGET_CLASSES)


@pytest.mark.slow
def test_the_fixtures_are_deterministic(made, tmp_path):
    """Every source but the ImageNet validation set (which needs the ResNet-50) made again: the same bytes."""
    again = tmp_path / "raw", tmp_path / "mirror"
    for d in again:
        d.mkdir()
    test = fd.make_cifar10(again[1])
    fd.make_cifar10c(again[1], *test)
    fd.make_sketch(again[1])
    fd.make_waterbirds(again[1])
    fd.make_imagenet_star(again[0] / "imagenet-star")
    fd.make_celeba(again[0] / "celeba-blond")
    fd.make_mimic(again[0] / "mimic-cxr")
    fd.make_typographic(again[0] / "typographic")
    for name in ("cifar-10-python.tar.gz", "CIFAR-10-C.tar", "ImageNet-Sketch.zip",
                 "waterbird_complete95_forest2water2.tar.gz", "SHA256SUMS"):
        assert (again[1] / name).read_bytes() == (made["mirror"] / name).read_bytes(), name
    for source in ("imagenet-star", "celeba-blond", "mimic-cxr", "typographic"):
        files = sorted(p.relative_to(again[0]) for p in (again[0] / source).rglob("*") if p.is_file())
        assert files and all((again[0] / f).read_bytes() == (made["raw"] / f).read_bytes() for f in files), source


def test_cifar10_downloads_from_a_file_mirror_and_an_unlisted_copy_must_have_the_release_md5(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    images, labels = fd.make_cifar10(mirror)
    fd.make_cifar10c(mirror, images, labels)
    monkeypatch.setenv("COAR_DATA_MIRROR", mirror.as_uri())
    x, y = load_images("cifar10", "test", tmp_path / "a" / "cifar10")
    assert np.array_equal(x, images) and y.tolist() == labels.tolist()
    xc, yc = load_cifar10c(tmp_path / "a", "fog", 2)
    assert xc.shape == (fd.CIFAR_TEST, 3, 32, 32) and yc.tolist() == labels.tolist()
    (mirror / "SHA256SUMS").unlink()  # unlisted: the release's MD5 sum applies, which a miniature copy lacks
    with pytest.raises(CoarError, match="MD5 sum"):
        load_images("cifar10", "train", tmp_path / "b" / "cifar10")
    assert not list((tmp_path / "b" / "cifar10").iterdir())  # neither the archive nor a hash record is kept
