"""The dataset specs (coar.paper.data.specs) are the one description of every dataset: the config schema, the
registry's loaders, the sources and the workflow's plan all agree with them."""
import yaml

import pytest

from coar.errors import CoarError
from coar.paper.data import registry, sources
from coar.paper.data.specs import SPECS, spec

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_dataset_the_config_accepts_has_a_spec_and_no_spec_is_unreachable():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())

    def enums(node):
        if isinstance(node, dict):
            if "dataset" in node.get("properties", {}) and "enum" in node["properties"]["dataset"]:
                yield set(node["properties"]["dataset"]["enum"])
            for v in node.values():
                yield from enums(v)
        elif isinstance(node, list):
            for v in node:
                yield from enums(v)

    found = list(enums(schema))
    assert found and all(e == set(SPECS) for e in found)


def test_published_split_sizes_and_normalisation():
    # the published sizes the plan bounds counts with
    assert registry.SPLIT_SIZES[("fashion-mnist", "train")] == 60000
    assert registry.SPLIT_SIZES[("cifar10-backdoor", "test")] == 10000
    assert registry.SPLIT_SIZES[("imagenet", "val")] == 50000
    assert registry.SPLIT_SIZES[("celeba-blond", "train")] == 162770
    assert ("mimic-cxr", "train") not in registry.SPLIT_SIZES  # no fixed size: its job checks the copy
    assert registry.DATASETS["imagenet"]["mean"] == [0.485, 0.456, 0.406]
    assert registry.DATASETS["fashion-mnist"] == {"mean": 0.2860, "std": 0.3530, "channels": 1, "size": 28,
                                                  "classes": 10}
    # a backdoored dataset is its base dataset's images
    for name in ("fashion-mnist-backdoor", "cifar10-backdoor"):
        base = SPECS[name].backdoor_of
        assert registry.DATASETS[name] == registry.DATASETS[base] and SPECS[name].source == SPECS[base].source


def test_kinds_of_datasets_derive_from_the_specs():
    assert set(registry.GROUPED) == {"fashion-mnist-spurious", "waterbirds", "celeba-blond"}
    assert registry.TEXT_DATASETS == {"tinystories": "token_margin", "boolq": "answer_margin"}
    assert set(registry.DECODED) == set(registry.FILE_DATASETS) | {"typographic"}
    assert "cifar10" not in registry.DECODED and registry.decode_size("cifar10", 32) is None
    assert registry.decode_size("imagenet", 64) == 64 and registry.decode_size("imagenet", 224) is None
    with pytest.raises(CoarError, match="stored as arrays"):
        registry._size("cifar10", 64)
    assert [n for n, s in SPECS.items() if s.attack == "typographic"] == ["typographic"]
    assert {n for n, s in SPECS.items() if s.attack == "backdoor"} == {"fashion-mnist-backdoor", "cifar10-backdoor"}


def test_every_source_can_be_prepared_and_roots_follow_the_spec():
    assert set(sources.SOURCE_OF) == set(SPECS)
    assert set(sources.sources()) == {s.source for s in SPECS.values()} | {"cifar10-c"}
    assert set(sources.MANUAL) == {"imagenet", "imagenet-star", "mimic-cxr"}
    assert sources.source_of("cifar10", {"name": "fog", "severity": 3}) == "cifar10-c"
    assert sources.source_of("fashion-mnist", {"name": "fog", "severity": 3}) == "fashion-mnist"
    assert registry.dataset_root("fashion-mnist-backdoor", "/d", "/dl", "/in") == "/d"
    assert registry.dataset_root("cifar10-backdoor", "/d", "/dl", "/in") == "/dl/cifar10"
    assert registry.dataset_root("imagenet", "/d", "/dl", "/in") == "/in"
    assert registry.dataset_root("imagenet-sketch", "/d", "/dl", "/in") == "/dl/imagenet-sketch"


def test_an_unknown_dataset_is_named():
    with pytest.raises(CoarError, match="unknown dataset 'mnist'; known: fashion-mnist"):
        spec("mnist")
    with pytest.raises(CoarError, match="unknown dataset 'mnist'"):
        registry.dataset_root("mnist")
