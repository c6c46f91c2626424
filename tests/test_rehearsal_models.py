"""The rehearsal's local "published weights" and text data (workflow/rehearsal/fixtures_models.py) load through
the project's real loading code, offline, with the environment make_models returns.

transformers / huggingface_hub read HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE when they are imported, so the
loading is checked in one subprocess run with that environment (CHECK below), which reports what it found."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "rehearsal"))

import fixtures_models as fm  # noqa: E402

CHECK = r'''
import importlib.util, json, sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, sys.argv[2])
import fixtures_models as fm
from coar.components import component_set
from coar.outputs import answer_margin
from coar.paper.data.hf_text import _answer_ids, tinystories_examples
from coar.paper.models import architecture, build_model
from coar.paper.models.clip_zeroshot import build_zero_shot_clip
from coar.outputs import token_margin
from coar.paper.training import load_checkpoint, save_checkpoint

torch.manual_seed(0)
torch.set_num_threads(2)
paths = json.loads(sys.argv[1])
out = {}


def same(state, reference):
    """All tensors of `reference` are in `state` with equal values (and nothing is missing); a reference stored
    in a narrower dtype (Phi-2's float16) is compared at the state's dtype, which holds its values exactly."""
    return set(reference) <= set(state) and all(torch.equal(state[k], reference[k].to(state[k].dtype))
                                                for k in reference)


def round_trip(model, arch, kwargs, path):
    """Checkpoint with the architecture the training rule records, loaded back as the workflow's jobs do."""
    save_checkpoint(path, model, arch, {**kwargs, **architecture(model)})
    loaded, _ = load_checkpoint(path)
    return same(loaded.state_dict(), model.state_dict())


tv = Path(paths["torch_home"]) / "hub" / "checkpoints"
for name, file in (("resnet50", "resnet50-0676ba61.pth"), ("vit_b_16", "vit_b_16-c867db91.pth")):
    model = build_model(name, pretrained=True, num_classes=1000, image_size=224)
    # make_hookable turns MultiheadAttention's in_proj_weight / in_proj_bias into an in_proj Linear
    ref = {k.replace(".in_proj_weight", ".in_proj.weight").replace(".in_proj_bias", ".in_proj.bias"): v
           for k, v in torch.load(tv / file, weights_only=True).items()}
    out[name] = {"equal": same(model.state_dict(), ref), "components": len(component_set(model, name)),
                 "distinct_classes": fm.distinct_predictions(model, n=16 if name == "resnet50" else 4)}
    del model

snap = {k: Path(v) for k, v in paths["snapshots"].items()}
for name, hub in (("gpt2", "gpt2"), ("phi2", "microsoft/phi-2")):
    model = build_model(name, pretrained=True)
    ref = load_file(snap[hub] / "model.safetensors")
    out[name] = {"class": type(model).__name__, "equal": same(model.state_dict(), ref),
                 "file_dtypes": sorted({str(v.dtype) for v in ref.values()}),
                 "dtypes": sorted({str(v.dtype) for v in model.state_dict().values() if v.is_floating_point()}),
                 "vocab_size": model.config.vocab_size, "components": len(component_set(model, name)),
                 "round_trip": round_trip(model, name, {"num_classes": 10, "in_channels": 3, "image_size": 32},
                                          Path(paths["tmp"]) / f"{name}.pt")}
    if name == "gpt2":
        ex = tinystories_examples(n=2, length=16, root=paths["tinystories"])
        x, y = torch.from_numpy(ex.inputs), torch.from_numpy(ex.targets)
        with torch.no_grad():
            m = token_margin(model(x).logits, y)
        out["tinystories"] = {"inputs": list(ex.inputs.shape), "targets": list(ex.targets.shape),
                              "n_stories": ex.meta["n_stories"], "source": ex.meta["source"],
                              "margin_finite": bool(torch.isfinite(m).all()), "margin_shape": list(m.shape),
                              "max_id": int(ex.inputs.max())}
    else:
        if importlib.util.find_spec("coar.paper.data.mirror") is None:
            out["boolq"] = None  # coar.paper.data.mirror not there yet
        else:
            from coar.paper.data.hf_text import boolq_examples

            ex = boolq_examples(n=2, root=paths["boolq"])
            x, y = torch.from_numpy(ex.inputs), torch.from_numpy(ex.targets)
            with torch.no_grad():
                m = answer_margin(model(x).logits, y)
            out["boolq"] = {"inputs": list(ex.inputs.shape), "targets": list(ex.targets.shape),
                            "n_records": ex.meta["n_records"], "margin_finite": bool(torch.isfinite(m).all()),
                            "margin_shape": list(m.shape), "answer_ids": ex.meta["answer_ids"],
                            "files": sorted(p.name for p in Path(paths["boolq"]).iterdir())}
    del model

import transformers

for hub, cls in (("gpt2", transformers.GPT2TokenizerFast), ("microsoft/phi-2", transformers.AutoTokenizer),
                 ("openai/clip-vit-base-patch16", transformers.CLIPTokenizer)):
    tok = cls.from_pretrained(hub)
    out.setdefault("tokenizers", {})[hub] = {"class": type(tok).__name__, "size": len(tok),
                                            "eos": tok.eos_token, "bos": tok.bos_token,
                                            "answer_ids": list(_answer_ids(tok)) if hub != "openai/clip-vit-base-patch16"
                                            else None,
                                            "prompt": tok.convert_ids_to_tokens(tok("a photo of a cup.")["input_ids"])}

clip = transformers.CLIPModel.from_pretrained("openai/clip-vit-base-patch16")
zs = build_zero_shot_clip(["a", "b"])
ref = load_file(snap["openai/clip-vit-base-patch16"] / "model.safetensors")
with torch.no_grad():
    logits = zs(torch.randn(3, 3, 224, 224))
vision = {k: v for k, v in zs.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
out["clip"] = {"equal": same(clip.state_dict(), ref) and same(ref, vision),
               "text_vocab": clip.config.text_config.vocab_size, "components": len(component_set(zs, "clip_zeroshot")),
               "logits": list(logits.shape), "finite": bool(torch.isfinite(logits).all()),
               "round_trip": round_trip(zs, "clip_zeroshot", {"num_classes": 2, "in_channels": 3, "image_size": 224},
                                        Path(paths["tmp"]) / "clip.pt")}
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("rehearsal_models")
    paths = {k: d / k for k in ("torch_home", "hf_home", "raw", "mirror")}
    env = fm.make_models(**paths)
    return d, paths, env


@pytest.fixture(scope="module")
def loaded(made):
    """What the real loaders return in a fresh interpreter with make_models' environment."""
    d, paths, env = made
    snaps = {hub: str(next((paths["hf_home"] / "hub" / f"models--{hub.replace('/', '--')}" / "snapshots").iterdir()))
             for hub in ("gpt2", "microsoft/phi-2", "openai/clip-vit-base-patch16")}
    (d / "tmp").mkdir()
    args = {"torch_home": str(paths["torch_home"]), "snapshots": snaps, "tmp": str(d / "tmp"),
            "tinystories": str(paths["raw"] / "tinystories"), "boolq": str(paths["raw"] / "boolq")}
    # an inherited cache location must not win over make_models' (HF_HUB_CACHE is in env and overrides both)
    base = {k: v for k, v in os.environ.items() if k not in ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE")}
    script = d / "check.py"
    script.write_text(CHECK)
    r = subprocess.run([sys.executable, str(script), json.dumps(args), str(ROOT / "workflow" / "rehearsal")],
                       env={**base, **env}, cwd=d, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_environment_points_the_loaders_at_the_fixtures_offline(made):
    d, paths, env = made
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert Path(env["TORCH_HOME"]) == paths["torch_home"].resolve()
    assert Path(env["HF_HOME"]) == paths["hf_home"].resolve()
    assert Path(env["HF_HUB_CACHE"]) == paths["hf_home"].resolve() / "hub"
    assert env["COAR_DATA_MIRROR"] == paths["mirror"].resolve().as_uri()


def test_torchvision_files_are_named_as_the_published_weights(made):
    from torchvision.models import ResNet50_Weights, ViT_B_16_Weights

    d, paths, env = made
    names = sorted(p.name for p in (paths["torch_home"] / "hub" / "checkpoints").iterdir())
    assert names == sorted(w.url.rsplit("/", 1)[1] for w in (ResNet50_Weights.IMAGENET1K_V1,
                                                                 ViT_B_16_Weights.IMAGENET1K_V1))


def test_torchvision_models_load_the_fixture_weights_at_the_real_architectures(loaded):
    assert loaded["resnet50"]["equal"] and loaded["vit_b_16"]["equal"]
    assert loaded["resnet50"]["components"] == 22720 and loaded["vit_b_16"]["components"] == 82944
    # BatchNorm statistics of natural-looking images and a centred classifier: predictions vary by image
    assert loaded["resnet50"]["distinct_classes"] >= 4
    assert loaded["vit_b_16"]["distinct_classes"] >= 2  # torchvision's zero head would give class 0 always


def test_resnet50_batchnorm_statistics_are_those_of_images():
    model = fm.random_resnet50(n_calib=4)
    bn = model.bn1
    assert not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.equal(bn.running_var, torch.ones_like(bn.running_var))
    acts = []
    model.layer4.register_forward_hook(lambda m, i, o: acts.append(o))
    with torch.no_grad():
        model(fm._imagenet_normalised(fm.natural_images(2, seed=7)))
    assert 0.2 < float(acts[0].std()) < 5  # neither vanishing nor exploding at 224 px


def test_hugging_face_models_load_offline_and_equal_the_fixture_weights(loaded):
    assert loaded["gpt2"]["class"] == "GPT2LMHeadModel" and loaded["phi2"]["class"] == "PhiForCausalLM"
    for name in ("gpt2", "phi2", "clip"):
        assert loaded[name]["equal"], name
    # the component tables find the real models' module structure: 2 layers x (3 x 64 + 256) Conv1D rows;
    # Phi-2's blocks of 10 rows tile hidden 80 / 320 exactly; CLIP: 2 layers x (4 x 64 + 256 + 64) rows
    assert loaded["gpt2"]["components"] == 2 * (3 * 64 + 256)
    assert loaded["phi2"]["components"] == 2 * (4 * 8 + 32 + 8)
    assert loaded["clip"]["components"] == 2 * (4 * 64 + 256 + 64)
    assert loaded["clip"]["logits"] == [3, 2] and loaded["clip"]["finite"]


def test_phi2_is_published_in_float16_and_read_exactly_into_float32(loaded):
    # the fixture is stored as microsoft/phi-2 is (float16); the load reads those values and holds them in float32
    # whatever transformers' default dtype (float32 before 5.0, "auto" = the published float16 since)
    assert loaded["phi2"]["file_dtypes"] == ["torch.float16"] and loaded["gpt2"]["file_dtypes"] == ["torch.float32"]
    assert loaded["phi2"]["dtypes"] == ["torch.float32"] and loaded["gpt2"]["dtypes"] == ["torch.float32"]
    assert loaded["phi2"]["equal"]


def test_checkpoints_of_the_hub_models_load_into_their_own_architecture(loaded):
    # the workflow's jobs rebuild a checkpoint with load_checkpoint: the tiny hub configurations, not the
    # registry's full-size ones, thanks to the architecture the training rule records
    assert loaded["gpt2"]["round_trip"] and loaded["phi2"]["round_trip"] and loaded["clip"]["round_trip"]


def test_tokenizers_load_offline_with_the_models_vocabulary(loaded):
    toks = loaded["tokenizers"]
    assert toks["gpt2"]["size"] == loaded["gpt2"]["vocab_size"] == fm.VOCAB
    assert toks["microsoft/phi-2"]["size"] == loaded["phi2"]["vocab_size"] == fm.VOCAB
    assert toks["openai/clip-vit-base-patch16"]["size"] == loaded["clip"]["text_vocab"] == fm.CLIP_VOCAB
    assert toks["gpt2"]["eos"] == toks["microsoft/phi-2"]["eos"] == "<|endoftext|>"
    assert toks["microsoft/phi-2"]["class"] == "CodeGenTokenizer"  # as microsoft/phi-2's tokenizer_config says
    assert len(set(toks["microsoft/phi-2"]["answer_ids"])) == 2  # " yes", " no": one token each
    clip = toks["openai/clip-vit-base-patch16"]
    assert clip["bos"] == "<|startoftext|>" and clip["eos"] == "<|endoftext|>"
    assert clip["prompt"][0] == "<|startoftext|>" and clip["prompt"][-1] == "<|endoftext|>"


def test_tinystories_examples_from_the_dataset_cache(loaded, made):
    d, paths, env = made
    ts = loaded["tinystories"]
    assert ts["inputs"] == ts["targets"] == [2, 16] and ts["n_stories"] == 40
    assert ts["margin_finite"] and ts["margin_shape"] == [2] and ts["max_id"] < fm.VOCAB
    # read from the hub cache's snapshot, whose blob is named by its content's SHA-256 (an LFS file)
    src = Path(ts["source"])
    assert "datasets--roneneldan--TinyStories" in src.parts and src.is_symlink()
    blob = src.resolve()
    assert blob.parent.name == "blobs" and blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_boolq_examples_downloaded_from_the_mirror(loaded, made):
    if loaded["boolq"] is None:
        pytest.skip("coar.paper.data.mirror (COAR_DATA_MIRROR) is not in the library yet")
    d, paths, env = made
    bq = loaded["boolq"]
    assert bq["inputs"][0] == bq["targets"][0] == 2 and bq["inputs"][1] == bq["targets"][1] >= 3
    assert bq["n_records"] == 40 and bq["margin_finite"] and bq["margin_shape"] == [2]
    assert bq["answer_ids"]["yes"] != bq["answer_ids"]["no"]
    # moved into place by the real download code: the mirror's bytes, with the recorded hash beside them
    assert bq["files"] == ["dev.jsonl", "dev.jsonl.sha256"]
    assert (paths["raw"] / "boolq" / "dev.jsonl").read_bytes() == (paths["mirror"] / "dev.jsonl").read_bytes()


def test_text_fixtures_are_in_the_release_formats(made):
    from coar.paper.data.hf_text import parse_tinystories, read_boolq

    d, paths, env = made
    assert len(parse_tinystories(fm.tinystories_text())) == 40
    records = read_boolq(paths["mirror"] / "dev.jsonl")
    assert len(records) == 40 == int((paths["mirror"] / "dev.jsonl.count").read_text())
    assert {type(v) for r in records for v in r.values()} == {str, bool}
    assert {r["answer"] for r in records} == {True, False}


def test_fixtures_are_deterministic(made, tmp_path):
    d, paths, env = made
    a = fm.make_hf_models(tmp_path / "hub")
    for hub, snap in a.items():
        old = paths["hf_home"] / "hub" / snap.relative_to(tmp_path / "hub")
        assert sorted(p.name for p in snap.iterdir()) == sorted(p.name for p in old.iterdir())
        for p in snap.iterdir():  # blob names are content hashes
            assert p.resolve().name == (old / p.name).resolve().name, (hub, p.name)
    assert fm.boolq_records() == fm.boolq_records() and fm.tinystories_text() == fm.tinystories_text()
