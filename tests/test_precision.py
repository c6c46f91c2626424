"""Compute precision of mask sampling (`precision: bfloat16`): bf16 forward passes track float32 on the same
masks, the precision is part of a shard's metadata (never resumed in the other one), and shards made before
the key existed still open as float32."""
import json

import numpy as np
import pytest
import torch

from coar.components import component_set
from coar.examples import Examples
from coar.errors import CoarError, StoreError, StoreMismatchError
from coar.paper.models import build_model
from coar.pipeline import sample_store
from coar.store import META_FILE, ShardStore

from tests.helpers import randomize_bn


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = randomize_bn(build_model("resnet_tiny", in_channels=1, image_size=28)).eval()
    cset = component_set(model, "resnet_tiny")
    g = np.random.default_rng(0)
    examples = Examples(g.integers(0, 256, (24, 1, 28, 28), dtype=np.uint8), g.integers(0, 10, 24).astype(np.int64))
    return model, cset, examples


def _sample(path, setup, precision, m=40):
    model, cset, examples = setup
    return sample_store(path, model, cset, examples, m=m, alpha=0.1, seed=3, shard=0, dtype="float32",
                        precision=precision, progress=False)


def test_bfloat16_tracks_float32_on_the_same_masks(tmp_path, setup):
    fp32, bf16 = _sample(tmp_path / "fp32", setup, "float32"), _sample(tmp_path / "bf16", setup, "bfloat16")
    assert fp32.meta["precision"] == "float32" and bf16.meta["precision"] == "bfloat16"
    assert np.array_equal(fp32.masks, bf16.masks)
    a, b = np.asarray(fp32.outputs), np.asarray(bf16.outputs)
    assert not np.array_equal(a, b)  # really computed in another precision
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    # per example, across masks: what the regression sees
    r = [np.corrcoef(a[:, n], b[:, n])[0, 1] for n in range(a.shape[1])]
    assert np.median(r) > 0.95, np.round(r, 3)
    # the caller's model is left in float32
    assert all(p.dtype == torch.float32 for p in setup[0].parameters())


def test_a_shard_is_never_resumed_in_the_other_precision(tmp_path, setup):
    _sample(tmp_path / "s", setup, "float32")
    with pytest.raises(StoreMismatchError, match="precision"):
        _sample(tmp_path / "s", setup, "bfloat16")
    with pytest.raises(CoarError, match="precision: must be one of"):
        _sample(tmp_path / "t", setup, "float16")


def test_shards_made_before_the_key_existed_open_as_float32(tmp_path, setup):
    _sample(tmp_path / "old", setup, "float32")
    meta_file = tmp_path / "old" / META_FILE
    meta = json.loads(meta_file.read_text())
    del meta["precision"]
    meta_file.write_text(json.dumps(meta))
    assert ShardStore.open(tmp_path / "old", readonly=True).meta["precision"] == "float32"
    assert _sample(tmp_path / "old", setup, "float32").is_complete  # reopened, nothing to redo
    meta["precision"] = "float8"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="precision"):
        ShardStore.open(tmp_path / "old", readonly=True)
