"""Offline tests of the zero-shot CLIP wrapper and the typographic-attack data (paper Sec. 5.5, App. D.5).

A tiny random-init CLIPModel and a CLIPTokenizer built from a self-made vocab.json / merges.txt in CLIP's
BPE file format stand in for openai/clip-vit-base-patch16; the [MTB22] loader is run on tiny JPEGs written
in the layout of the released archive.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from coar.ablation import ablate_weights, ablation_hooks  # noqa: E402
from coar.components import component_set  # noqa: E402
from coar.paper.data.typographic import (  # noqa: E402
    ATTACK_WORDS, DATASET_URL, attack_patch, load_typographic, random_attacks, render_attack,
)
from coar.errors import CoarError  # noqa: E402
from coar.paper.models.clip_zeroshot import (  # noqa: E402
    CLIP_MEAN, CLIP_STD, TEMPLATES, ZeroShotCLIP, build_zero_shot_clip,
)

CLASSES = ["cup", "hat", "taxi"]


# ----------------------------------------------------------------------------------------------
# offline tokenizer and tiny model
def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2 / CLIP byte -> unicode table)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    extra = [b for b in range(256) if b not in keep]
    codes = dict(zip(keep, keep)) | {b: 256 + i for i, b in enumerate(extra)}
    return [chr(codes[b]) for b in range(256)]


MERGES = [("p", "h"), ("ph", "o"), ("t", "o</w>"), ("pho", "to</w>"), ("o", "f</w>"), ("c", "u"), ("cu", "p</w>")]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip_tok")
    sym = _byte_symbols()
    tokens = sym + [s + "</w>" for s in sym] + [a + b for a, b in MERGES] + ["<|startoftext|>", "<|endoftext|>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    tok = transformers.CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    assert tok.convert_ids_to_tokens(tok("a photo of a cup.")["input_ids"]) == [
        "<|startoftext|>", "a</w>", "photo</w>", "of</w>", "a</w>", "cup</w>", ".</w>", "<|endoftext|>"]
    return tok


@pytest.fixture(scope="module")
def clip(tokenizer):
    torch.manual_seed(0)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=32, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    return transformers.CLIPModel(cfg).eval()


@pytest.fixture(scope="module")
def zs(clip, tokenizer):
    return build_zero_shot_clip(CLASSES, model=clip, tokenizer=tokenizer, pretrained=False)


def _pixels(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)


@torch.no_grad()
def _text_features(clip, tokenizer, prompts):
    enc = tokenizer(prompts, padding=True, return_tensors="pt")
    out = clip.text_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return F.normalize(clip.text_projection(out.pooler_output), dim=-1)


# ----------------------------------------------------------------------------------------------
# ZeroShotCLIP
def test_class_embeddings_are_normalised_template_means(zs, clip, tokenizer):
    assert zs.class_embeddings.shape == (len(CLASSES), 16)
    expected = torch.stack([F.normalize(_text_features(clip, tokenizer, [t.format(c) for t in TEMPLATES]).mean(0), dim=0)
                            for c in CLASSES])
    torch.testing.assert_close(zs.class_embeddings, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zs.class_embeddings.norm(dim=-1), torch.ones(len(CLASSES)))
    assert zs.class_names == CLASSES and zs.templates == list(TEMPLATES)
    assert "class_embeddings" in dict(zs.named_buffers()) and "logit_scale" in dict(zs.named_buffers())
    # buffers, not parameters: the text side is frozen
    assert not any("class_embeddings" in n or "logit_scale" in n for n, _ in zs.named_parameters())


@torch.no_grad()
def test_logits_equal_manual_computation(zs, clip):
    x = _pixels()
    img = F.normalize(clip.visual_projection(clip.vision_model(pixel_values=x).pooler_output), dim=-1)
    manual = clip.logit_scale.exp() * img @ zs.class_embeddings.T
    logits = zs(x)
    assert logits.shape == (4, len(CLASSES))
    torch.testing.assert_close(logits, manual, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zs.logit_scale, clip.logit_scale.exp())


@torch.no_grad()
def test_single_template_matches_clip_forward(clip, tokenizer):
    """With one template the zero-shot logits are CLIPModel's own logits_per_image for those prompts."""
    model = build_zero_shot_clip(CLASSES, templates=("a photo of a {}.",), model=clip, tokenizer=tokenizer,
                                 pretrained=False)
    x = _pixels(3, seed=2)
    enc = tokenizer([f"a photo of a {c}." for c in CLASSES], padding=True, return_tensors="pt")
    ref = clip(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=x).logits_per_image
    torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_components_and_ablation_change_logits(zs):
    cset = component_set(zs, "clip_vit_b_16")
    # per block: q, k, v, out (4 x 32 rows) + fc1 (64) + fc2 (32); 2 blocks
    assert cset.size == 2 * (4 * 32 + 64 + 32)
    assert len(cset.groups) == 12
    assert all(g.module.startswith("vision_model.encoder.layers.") for g in cset.groups)
    assert {g.module.rsplit(".", 1)[1] for g in cset.groups} == {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}
    x = _pixels()
    base = zs(x)
    keep = np.ones(cset.size, dtype=bool)
    fc1 = next(i for i, g in enumerate(cset.groups) if g.module.endswith("layers.0.mlp.fc1"))
    start = cset.group_range(fc1).start
    keep[start: start + 8] = False  # zero 8 rows of the first block's fc1
    edited = ablate_weights(zs, cset, keep)
    assert not torch.allclose(edited(x), base, atol=1e-6)
    torch.testing.assert_close(zs(x), base)  # ablate_weights worked on a copy
    # the hook mechanism gives the same numbers as weight surgery on the wrapper
    with ablation_hooks(zs, cset, torch.as_tensor(keep)[None]):
        hooked = zs(x)
    torch.testing.assert_close(hooked, edited(x), atol=1e-5, rtol=1e-5)


def test_full_size_vision_tower_has_82944_components():
    text = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=16)
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
    with torch.device("meta"):  # shapes only: counting needs no weights
        clip = transformers.CLIPModel(cfg)
        emb = torch.zeros(3, 512)
    model = ZeroShotCLIP(clip.vision_model, clip.visual_projection, emb, 100.0)
    cset = component_set(model, "clip_vit_b_16")
    assert cset.size == 82_944
    assert len(cset.groups) == 12 * 6
    assert sum(g.units for g in cset.groups if "layers.0." in g.module) == 6_912


def test_build_errors(clip, tokenizer, monkeypatch):
    with pytest.raises(CoarError, match="needs both"):
        build_zero_shot_clip(CLASSES, model=clip, pretrained=False)

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(transformers.CLIPModel, "from_pretrained", offline)
    with pytest.raises(CoarError, match="openai/clip-vit-base-patch16"):
        build_zero_shot_clip(CLASSES, tokenizer=tokenizer)
    with pytest.raises(CoarError, match="placeholder"):
        build_zero_shot_clip(CLASSES, templates=("a photo",), model=clip, tokenizer=tokenizer, pretrained=False)
    with pytest.raises(CoarError, match=r"\[K, 16\]"):
        ZeroShotCLIP(clip.vision_model, clip.visual_projection, torch.zeros(3, 7), 100.0)


def test_clip_normalisation_constants():
    assert len(CLIP_MEAN) == len(CLIP_STD) == 3
    assert CLIP_MEAN[0] == pytest.approx(0.48145466) and CLIP_STD[2] == pytest.approx(0.27577711)


# ----------------------------------------------------------------------------------------------
# synthetic attacks
def test_render_attack_changes_only_the_centred_box():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 96, 128), dtype=torch.uint8, generator=g)
    before = images.clone()
    out = render_attack(images, "twitter", scale=0.5)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(images, before)  # input untouched
    patch, top, left = attack_patch("twitter", 96, 128, 0.5)
    h, w = patch.shape[1:]
    assert 0 < w <= 64 and 0 < h <= 48
    assert top == (96 - h) // 2 and left == (128 - w) // 2  # centred
    inside = torch.zeros(96, 128, dtype=torch.bool)
    inside[top: top + h, left: left + w] = True
    assert torch.equal(out[:, :, ~inside], images[:, :, ~inside])
    box = out[:, :, top: top + h, left: left + w]
    assert torch.equal(box, torch.from_numpy(patch.copy()).expand_as(box))  # same box on every image
    assert (box[:, :, 0, :] == 255).all() and (box[:, :, -1, :] == 255).all()  # white border (padding)
    assert (box[:, :, :, 0] == 255).all() and (box[:, :, :, -1] == 255).all()
    assert (box < 64).float().mean() > 0.05  # dark text pixels
    assert torch.equal(box[:, 0], box[:, 1]) and torch.equal(box[:, 1], box[:, 2])  # black text, grey AA


def test_render_attack_scales_with_image_and_words():
    small = attack_patch("taxi", 32, 32, 0.5)[0]
    large = attack_patch("taxi", 224, 224, 0.5)[0]
    assert small.shape[2] <= 16 and large.shape[2] <= 112 and large.shape[2] > 3 * small.shape[2]
    assert {"taxi", "twitter", "EU", "iPad"} <= set(ATTACK_WORDS)
    images = torch.full((6, 3, 64, 64), 90, dtype=torch.uint8)
    out, words = random_attacks(images, seed=3)
    assert len(words) == 6 and set(words) <= set(ATTACK_WORDS)
    for i, w in enumerate(words):
        assert torch.equal(out[i], render_attack(images[i: i + 1], w)[0])


def test_render_attack_errors():
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(CoarError, match="uint8"):
        render_attack(images.float(), "taxi")
    with pytest.raises(CoarError, match=r"\[N, 3, H, W\]"):
        render_attack(images[0], "taxi")
    with pytest.raises(CoarError, match="non-empty"):
        render_attack(images, "  ")
    with pytest.raises(CoarError, match="does not fit"):
        render_attack(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "a very long attack text")


# ----------------------------------------------------------------------------------------------
# [MTB22] loader on tiny files in the released layout
COLOURS = {"cup": (200, 30, 30), "hat": (30, 30, 200)}


def _write_jpeg(path, colour, size=(40, 30), exif_orientation=None):
    from PIL import Image

    im = Image.new("RGB", size, colour)
    kwargs = {"quality": 95}
    if exif_orientation is not None:
        exif = im.getexif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    im.save(path, "JPEG", **kwargs)


def _make_dataset(root, annotation_name="annotations.json", images_subdir=True, as_list=False):
    folder = root / "typographic_attack_dataset"
    img_dir = folder / "images" if images_subdir else folder
    img_dir.mkdir(parents=True)
    ann = {}
    n = 2930
    for obj in ("hat", "cup"):
        for attack in ("", "taxi", "EU"):
            name = f"IMG_{n}.JPG"
            _write_jpeg(img_dir / name, COLOURS[obj])
            ann[name] = {"true object": obj, "typographic attack label": attack}
            n += 1
    data = [{k: v} for k, v in ann.items()] if as_list else ann
    (folder / annotation_name).write_text(json.dumps(data))
    return folder, ann


def test_loader_reads_released_layout(tmp_path):
    _make_dataset(tmp_path)
    data = load_typographic(tmp_path, size=16)
    assert data.object_names == ["cup", "hat"]
    assert data.class_names == ["cup", "hat", "taxi", "EU"]  # attack words are zero-shot classes too
    assert data.attack_words == ["taxi", "EU"]
    assert data.clean_images.shape == (2, 3, 16, 16) and data.clean_images.dtype == torch.uint8
    assert data.clean_files == ["IMG_2930.JPG", "IMG_2933.JPG"]
    assert data.clean_labels.tolist() == [1, 0]  # hat, cup
    x, y = data.attack("eu")  # case-insensitive
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [1, 0]
    assert data.attacked_files["taxi"] == ["IMG_2931.JPG", "IMG_2934.JPG"]
    # pixel content survives resize + crop (solid colours, JPEG tolerance)
    hat = data.clean_images[0].float().mean(dim=(1, 2))
    assert torch.allclose(hat, torch.tensor(COLOURS["hat"], dtype=torch.float), atol=8)
    allx, ally = data.all_attacked()
    assert allx.shape[0] == 4 and ally.tolist() == [1, 0, 1, 0]
    objects_only = load_typographic(tmp_path / "typographic_attack_dataset", size=8, include_attack_classes=False)
    assert objects_only.class_names == ["cup", "hat"]
    with pytest.raises(CoarError, match="attacks present: taxi, EU"):
        data.attack("iPad")


def test_loader_readme_variant_and_exif(tmp_path):
    """README spelling `annotation.json`, photos beside the JSON, list-of-files JSON, EXIF orientation."""
    folder, ann = _make_dataset(tmp_path, annotation_name="annotation.json", images_subdir=False, as_list=True)
    from PIL import Image

    # left half red, right half blue, stored rotated by 180 degrees via EXIF orientation 3
    im = Image.new("RGB", (40, 40), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 40))
    exif = im.getexif()
    exif[0x0112] = 3
    im.save(folder / "IMG_2930.JPG", "JPEG", quality=95, exif=exif)
    data = load_typographic(folder, size=20)
    assert len(data.clean_files) == 2 and data.class_names[:2] == ["cup", "hat"]
    first = data.clean_images[0].float()
    assert first[2, :, :8].mean() > 200 and first[0, :, -8:].mean() > 200  # rotated: blue left, red right


def test_loader_uses_classes_json(tmp_path):
    folder, _ = _make_dataset(tmp_path)
    (folder / "classes.json").write_text(json.dumps({"hat": 0, "cup": 1, "mug": 2}))
    data = load_typographic(tmp_path, size=8)
    assert data.class_names == ["hat", "cup", "mug", "taxi", "EU"]
    assert data.clean_labels.tolist() == [0, 1]


def test_loader_error_paths(tmp_path, monkeypatch):
    with pytest.raises(CoarError) as err:
        load_typographic(tmp_path / "nowhere")
    msg = str(err.value)
    assert DATASET_URL in msg and "annotations.json" in msg and "typographic_attack_dataset" in msg

    monkeypatch.setitem(sys.modules, "gdown", None)  # import fails: no network client
    with pytest.raises(CoarError, match="gdown"):
        load_typographic(tmp_path / "nowhere", download=True)

    folder, ann = _make_dataset(tmp_path / "a")
    (folder / "images" / "IMG_2931.JPG").unlink()
    with pytest.raises(CoarError, match="IMG_2931.JPG"):
        load_typographic(tmp_path / "a")

    folder, ann = _make_dataset(tmp_path / "b")
    ann["IMG_2932.JPG"] = {"typographic attack label": "taxi"}
    (folder / "annotations.json").write_text(json.dumps(ann))
    with pytest.raises(CoarError, match="IMG_2932.JPG.*true object"):
        load_typographic(tmp_path / "b")

    folder, _ = _make_dataset(tmp_path / "c")
    (folder / "annotations.json").write_text("{not json")
    with pytest.raises(CoarError, match="annotations.json"):
        load_typographic(tmp_path / "c")

    folder, _ = _make_dataset(tmp_path / "d")
    (folder / "images" / "IMG_2930.JPG").write_bytes(b"not a jpeg")
    with pytest.raises(CoarError, match="IMG_2930.JPG"):
        load_typographic(tmp_path / "d")

    folder, _ = _make_dataset(tmp_path / "e")
    (folder / "classes.json").write_text(json.dumps({"hat": 0}))
    with pytest.raises(CoarError, match="cup"):
        load_typographic(tmp_path / "e")


def test_registry_typographic_examples_pair_clean_photos_with_synthetic_attacks(tmp_path):
    """The workflow's view: clean photos only (disjoint held-out sets by offset), paired with a random synthetic
    attack per photo; the zero-shot classes come from the annotations; a saved zero-shot classifier's
    architecture is rebuilt without the hub (skeleton)."""
    from coar.components import component_set
    from coar.paper.data.registry import class_names, make_examples
    from coar.paper.models import build_model

    _make_dataset(tmp_path)
    ex = make_examples("typographic", "test", 1, seed=0, root=tmp_path, trigger="paired")
    rest = make_examples("typographic", "test", 1, seed=0, root=tmp_path, offset=1)
    assert len(ex) == 2 and ex.meta["triggered"] == [False, True] and ex.meta["attack_words"][0] in ATTACK_WORDS
    assert sorted(ex.meta["files"] + rest.meta["files"]) == ["IMG_2930.JPG", "IMG_2933.JPG"]  # the clean photos
    clean, attacked = torch.from_numpy(ex.inputs[:1]), torch.from_numpy(ex.inputs[1:])
    assert torch.equal(attacked, render_attack(clean, ex.meta["attack_words"][0]))
    assert ex.inputs.shape[-1] == 224 and ex.meta["mean"] == list(CLIP_MEAN)
    assert class_names("typographic", tmp_path) == ["cup", "hat", "taxi", "EU"]
    with pytest.raises(CoarError, match="asked for 3 typographic test examples after the first 0, only 2"):
        make_examples("typographic", "test", 3, root=tmp_path)
    model = build_model("clip_zeroshot", num_classes=4)
    assert model.num_classes == 4 and component_set(model, "clip_zeroshot").size == 82944
