"""Offline stand-in datasets: the OS-text corpus (for TinyStories) and spurious-background Fashion-MNIST (for
Waterbirds)."""
import numpy as np
import pytest
import torch
from coar.engine import counterfactual_outputs
from coar.components import component_set
from coar.paper.data.fashion_mnist import find_fashion_mnist, load_fashion_mnist
from coar.paper.data.registry import make_examples
from coar.paper.data.spurious import BACKGROUND_GRAY, CLASS_IDS, GARMENT_THRESHOLD, load_spurious_fashion_mnist
from coar.paper.data.text import load_corpus, text_examples
from coar.errors import CoarError
from coar.paper.models import build_model
from coar.outputs import token_margin
from coar.paper.training import language_model_loss, train_language_model


def _corpus(tmp_path):
    words = "the licensee may copy and distribute verbatim copies of the program source code ".split()
    rng = np.random.default_rng(0)
    for i in range(3):
        (tmp_path / f"doc{i}").write_text(" ".join(rng.choice(words, 2000)))
    (tmp_path / "same-as-doc0").write_bytes((tmp_path / "doc0").read_bytes())  # duplicates are dropped
    return tmp_path


def test_corpus_split_and_windows(tmp_path):
    root = _corpus(tmp_path)
    train, held = load_corpus(root)
    total = sum(len((root / f"doc{i}").read_bytes()) for i in range(3))
    assert len(train) + len(held) == total + 6  # one separator per document and part; the duplicate dropped
    assert 0.08 < len(held) / (len(train) + len(held)) < 0.12
    ex = text_examples("test", 20, 16, seed=1, root=root)
    assert ex.kind == "tokens" and ex.inputs.shape == (20, 16) and np.array_equal(ex.inputs, ex.targets)
    windows = {bytes(w.astype(np.uint8)) for w in ex.inputs}
    assert len(windows) == 20 and all(w in held.tobytes() for w in windows)
    with pytest.raises(CoarError, match="asked for 10000 text windows"):
        text_examples("test", 10000, 16, root=root)
    with pytest.raises(CoarError, match="COAR_TEXT_ROOT"):
        load_corpus(tmp_path / "missing")


def test_language_model_learns_and_token_margin_ablation_runs(tmp_path):
    torch.manual_seed(0)
    train, held = load_corpus(_corpus(tmp_path))
    model = build_model("gpt2_bytes")
    x = torch.from_numpy(text_examples("test", 8, 32, root=tmp_path).inputs)
    before = language_model_loss(model, x)
    train_language_model(model, torch.from_numpy(train.astype(np.int64)), steps=150, batch_size=16, length=32,
                         progress=False)
    after = language_model_loss(model, x)
    assert after < 0.6 * before, (before, after)  # a 13-word vocabulary is quickly learnt
    cset = component_set(model, "gpt2_bytes")
    assert cset.size == 896
    keep = np.ones((2, cset.size), bool)
    keep[1, ::7] = False
    out = counterfactual_outputs(model, cset, x, x.clone(), keep, token_margin)
    assert out.shape == (2, 8) and np.all(out[0] != out[1])


@pytest.mark.skipif(find_fashion_mnist() is None, reason="Fashion-MNIST not available")
def test_spurious_background_agrees_with_label_in_train_only():
    x, y, g = load_spurious_fashion_mnist("train")
    cue = g % 2
    assert set(np.unique(y)) == {0, 1} and len(y) == 12000
    assert abs((cue == y).mean() - 0.95) < 0.01
    xt, yt, gt = load_spurious_fashion_mnist("test")
    assert abs(((gt % 2) == yt).mean() - 0.5) < 0.05 and np.bincount(gt).min() > 400
    # the gray background is painted exactly where the garment is absent; black-background images are untouched
    raw, labels = load_fashion_mnist("train")
    raw = raw[np.isin(labels, CLASS_IDS)]
    garment = raw > GARMENT_THRESHOLD
    painted = x[:, 0]
    assert np.array_equal(painted[garment], raw[garment])
    assert np.all(painted[(cue == 1)[:, None, None] & ~garment] == BACKGROUND_GRAY)
    assert np.array_equal(painted[cue == 0], raw[cue == 0])
    ex = make_examples("fashion-mnist-spurious", "test", 50, seed=2)
    assert len(ex.meta["groups"]) == 50 and set(ex.meta["groups"]) <= {0, 1, 2, 3}
