"""Published weights and tokenizers, fetched once on a machine with network access (the workflow's local rule
`weights`, which runs on a cluster's login node) and only read afterwards (compute jobs run offline).

An *asset* is what one rule fetches: the torchvision weights of ResNet-50 or ViT-B/16 (IMAGENET1K_V1), or a
Hugging Face model repository (gpt2, microsoft/phi-2, openai/clip-vit-base-patch16: the model's config and
weights and its tokenizer). `fetch(name)` downloads through the libraries' own code into their own caches:

* torchvision: `torch.hub.download_url_to_file` into `$TORCH_HOME/hub/checkpoints` under the release's file
  name, with its hash check on (the SHA-256 prefix the file name carries, as torch.hub checks it), so that
  torchvision's own loader finds it there. An existing cached file is hashed too (torch.hub checks only what
  it downloads).
* Hugging Face: `huggingface_hub.snapshot_download` of the files a model needs (config, safetensors weights or,
  when a repository has none, its PyTorch ones, tokenizer files) into the hub cache (`$HF_HOME/hub`), then every
  file is checked against the name of its blob (the SHA-256 of an LFS file, the git SHA-1 of any other), which
  huggingface_hub does not check.

It returns a manifest {name, kind, location, revision, files: [{path, size, sha256}]}, which the rule writes as
data/weights/<name>.json. Jobs that load the asset take that manifest as an input, so Snakemake fetches before
it submits them, and call `require(name)`, which checks that every file is still in the cache at its recorded
size and fails at once naming the rule that fetches it otherwise (instead of trying the network from a node
that has none). `status(name)` is the thorough check (every file hashed) that `coar preflight` runs.

Mirrors (an internal server, or the rehearsal's server on 127.0.0.1):
* COAR_WEIGHTS_MIRROR (a base URL) replaces https://download.pytorch.org in torchvision's URLs, the path kept.
  A mirror that lists a file in `<base>/SHA256SUMS` (sha256sum's format, by file name) is checked against that
  full SHA-256 instead of the release's prefix (a mirror may hold other bytes under the same name, as the
  rehearsal's random weights do); coar.paper.data.mirror does the same for data.
* Hugging Face: huggingface_hub's own HF_ENDPOINT.
"""
from __future__ import annotations

import json
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..errors import CoarError
from ..io import sha256_file

MANIFEST_DIR = "data/weights"
WEIGHTS_MIRROR = "COAR_WEIGHTS_MIRROR"
RULE = "weights"

# files of a Hugging Face repository a model needs besides its weights (those a repository lacks are skipped)
HF_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                 "merges.txt", "special_tokens_map.json", "added_tokens.json", "preprocessor_config.json")
SAFETENSORS = re.compile(r"^model(-\d+-of-\d+)?\.safetensors$|^model\.safetensors\.index\.json$")
PYTORCH_BIN = re.compile(r"^pytorch_model(-\d+-of-\d+)?\.bin$|^pytorch_model\.bin\.index\.json$")


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # "torchvision" or "huggingface"
    ref: str  # torchvision: the weights enum value ("ResNet50_Weights.IMAGENET1K_V1"); huggingface: the repo id


ASSETS = {a.name: a for a in (
    Asset("resnet50", "torchvision", "ResNet50_Weights.IMAGENET1K_V1"),
    Asset("vit_b_16", "torchvision", "ViT_B_16_Weights.IMAGENET1K_V1"),
    Asset("gpt2", "huggingface", "gpt2"),
    Asset("phi-2", "huggingface", "microsoft/phi-2"),
    Asset("clip-vit-base-patch16", "huggingface", "openai/clip-vit-base-patch16"),
)}
# registry model -> the asset its published weights (and tokenizer) come from
MODEL_ASSET = {"resnet50": "resnet50", "vit_b_16": "vit_b_16", "gpt2": "gpt2", "phi2": "phi-2",
               "clip_vit_b_16": "clip-vit-base-patch16", "clip_zeroshot": "clip-vit-base-patch16"}
# dataset -> the asset whose tokenizer encodes its examples (coar.paper.data.hf_text: GPT2_TOKENIZER, PHI2_TOKENIZER)
TOKENIZER_ASSET = {"tinystories": "gpt2", "boolq": "phi-2"}


def asset(name: str) -> Asset:
    if name not in ASSETS:
        raise CoarError(f"unknown published weights {name!r}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


def manifest_path(name: str) -> str:
    """Where the `weights` rule records a fetched asset (relative to the workflow's working directory)."""
    return f"{MANIFEST_DIR}/{asset(name).name}.json"


def fetch_command(name: str) -> str:
    return f"snakemake --cores 1 {manifest_path(name)}"


def _missing(name: str, what: str) -> CoarError:
    return CoarError(f"published weights {name}: {what}. Fetch them on a machine with network access (a cluster's "
                     f"login node): `{fetch_command(name)}` (rule {RULE}), with the same TORCH_HOME / HF_HOME as the "
                     f"jobs")


# --------------------------------------------------------------------------------------------- what a setup needs

def setup_assets(spec: dict, rule: str) -> list[str]:
    """Assets a job of `rule` ("model" or "examples") for a setup (its resolved config) reads: the model rule loads
    published weights (used as they are, or fine-tuned), the examples of a language setup need its tokenizer."""
    model = spec.get("model")
    pretrained = bool(spec.get("pretrained")) or bool((spec.get("train") or {}).get("from_pretrained"))
    if rule == "model":
        return [MODEL_ASSET[model]] if pretrained and model in MODEL_ASSET else []
    if rule == "examples":  # the tokenizer the examples are encoded with (coar.paper.data.hf_text)
        return [TOKENIZER_ASSET[spec["dataset"]]] if spec.get("dataset") in TOKENIZER_ASSET else []
    raise ValueError(rule)


def needed(plan) -> list[str]:
    """Names of the assets the setups of a coar.paper.plan.Plan need (model and examples jobs)."""
    out = []
    for spec in plan.setups.values():
        out += setup_assets(spec, "model") + setup_assets(spec, "examples")
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------------------------------- torchvision

def _torch_checkpoints() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights(a: Asset):
    from torchvision.models import get_weight

    return get_weight(a.ref)


def weights_url(url: str) -> str:
    """`url` with its scheme and host replaced by COAR_WEIGHTS_MIRROR's (the path kept), when that is set."""
    base = os.environ.get(WEIGHTS_MIRROR, "").strip()
    if not base:
        return url
    return base.rstrip("/") + urllib.parse.urlsplit(url).path


def _mirror_sha256(url: str) -> str | None:
    from .data.mirror import listed_sha256

    base = os.environ.get(WEIGHTS_MIRROR, "").strip()
    return listed_sha256(base, url, WEIGHTS_MIRROR) if base else None


def _fetch_torchvision(a: Asset) -> dict:
    import torch.hub

    url = _weights(a).url
    dest = _torch_checkpoints() / os.path.basename(url)
    prefix = _mirror_sha256(url) or torch.hub.HASH_REGEX.search(dest.name).group(1)
    digest = sha256_file(dest) if dest.is_file() else None
    if digest is not None and not digest.startswith(prefix):
        print(f"{dest} does not match its expected SHA-256 ({prefix}...): fetching it again", flush=True)
        dest.unlink()
        digest = None
    if digest is None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = weights_url(url)
        print(f"downloading {source} to {dest}", flush=True)
        try:  # torch.hub's own download: a temporary file, its SHA-256 prefix checked, then moved into place
            torch.hub.download_url_to_file(source, str(dest), hash_prefix=prefix, progress=True)
        except Exception as exc:
            raise CoarError(f"downloading {a.name} weights from {source} failed: {exc}") from exc
        digest = sha256_file(dest)  # torch.hub checked only the prefix while downloading; the manifest keeps it all
    return {"location": str(dest), "url": weights_url(url), "revision": a.ref,
            "files": [{"path": dest.name, "size": dest.stat().st_size, "sha256": digest}]}


# ---------------------------------------------------------------------------------------------------- Hugging Face

def _hf_files(repo_files: list[str]) -> list[str]:
    """The files of a repository a model needs: its safetensors weights (else its PyTorch ones) and side files."""
    top = [f for f in repo_files if "/" not in f]
    weights = [f for f in top if SAFETENSORS.match(f)] or [f for f in top if PYTORCH_BIN.match(f)]
    if not weights:
        raise CoarError(f"the repository holds no model weights (model*.safetensors or pytorch_model*.bin) among "
                        f"{sorted(top)}")
    return sorted(weights + [f for f in top if f in HF_SIDE_FILES])


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _fetch_huggingface(a: Asset) -> dict:
    import huggingface_hub
    from .data.hf_text import hub_blob_sha256

    try:
        info = huggingface_hub.HfApi().model_info(a.ref)
        files = _hf_files([s.rfilename for s in info.siblings or []])
        print(f"downloading {len(files)} files of {a.ref} at {info.sha} from {huggingface_hub.constants.ENDPOINT}",
              flush=True)
        snap = Path(huggingface_hub.snapshot_download(a.ref, revision=info.sha, allow_patterns=files))
    except CoarError as exc:
        raise CoarError(f"{a.ref}: {exc}") from exc
    except Exception as exc:
        raise CoarError(f"downloading {a.ref} from the Hugging Face hub failed: {exc}") from exc
    _write_ref(a.ref, info.sha)
    records = []
    for name in files:
        path = snap / name
        if not path.is_file():
            raise CoarError(f"{a.ref}: {name} is missing from {snap} after the download")
        records.append({"path": name, "size": path.stat().st_size, "sha256": hub_blob_sha256(path)})
    return {"location": str(snap), "url": f"{huggingface_hub.constants.ENDPOINT}/{a.ref}", "revision": info.sha,
            "files": records}


def _repo_folder(repo_id: str) -> Path:
    return _hub_cache() / f"models--{repo_id.replace('/', '--')}"


def _write_ref(repo_id: str, commit: str) -> None:
    """refs/main -> the fetched commit: offline loads of "main" (transformers' default) read that snapshot."""
    ref = _repo_folder(repo_id) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    if not ref.is_file() or ref.read_text().strip() != commit:
        from ..io import atomic_write_text

        atomic_write_text(ref, commit)


# -------------------------------------------------------------------------------------------------- the interface

def fetch(name: str) -> dict:
    """Download (or find in the cache and verify) an asset; returns its manifest."""
    a = asset(name)
    found = _fetch_torchvision(a) if a.kind == "torchvision" else _fetch_huggingface(a)
    return {"name": a.name, "kind": a.kind, "ref": a.ref, **found}


def _location(a: Asset, manifest: dict) -> Path:
    if a.kind == "torchvision":
        return _torch_checkpoints()
    return _repo_folder(a.ref) / "snapshots" / str(manifest.get("revision"))


def _read_manifest(name: str) -> dict:
    path = Path(manifest_path(name))
    if not path.is_file():
        raise _missing(name, f"not fetched ({path} does not exist)")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not files or not all(isinstance(f, dict) and {"path", "size", "sha256"} <= set(f) for f in files):
            raise ValueError("no file records")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise _missing(name, f"{path} is not a manifest of the {RULE} rule ({exc})") from None
    return manifest


def require(name: str, verify: bool = False) -> Path:
    """Where a fetched asset is, after checking that every file its manifest lists is in the cache this process
    reads (TORCH_HOME / HF_HOME) at its recorded size (verify=True: and SHA-256). Raises CoarError naming the
    rule and the command that fetches it."""
    a = asset(name)
    manifest = _read_manifest(name)
    where = _location(a, manifest)
    for f in manifest["files"]:
        path = where / f["path"]
        if not path.is_file():
            raise _missing(name, f"{path} is not in the cache (the manifest {manifest_path(name)} was written "
                                 f"by a fetch into {manifest.get('location')})")
        if path.stat().st_size != f["size"]:
            raise _missing(name, f"{path} has {path.stat().st_size:,} bytes, the fetch recorded {f['size']:,}")
        if verify and sha256_file(path) != f["sha256"]:
            raise _missing(name, f"{path} does not have the SHA-256 the fetch recorded ({f['sha256']})")
    if a.kind == "huggingface":
        ref = _repo_folder(a.ref) / "refs" / "main"
        if not ref.is_file() or ref.read_text().strip() != manifest.get("revision"):
            raise _missing(name, f"the cache's {ref} does not point at the fetched commit {manifest.get('revision')}")
    return where


def status(name: str) -> tuple[bool, str]:
    """(present and verified, detail): the thorough check of coar preflight (every file hashed)."""
    try:
        where = require(name, verify=True)
    except CoarError as exc:
        return False, str(exc)
    return True, f"verified in {where}"


def cached_architecture(model: str) -> dict | None:
    """build_model's `config=` for a registry model whose published weights are in the local cache (coar preflight
    builds the shape that will load, a rehearsal's tiny stand-in included); None when they are not fetched or the
    model's shape is fixed by its registry name."""
    a = ASSETS.get(MODEL_ASSET.get(model, ""))
    if a is None or a.kind != "huggingface":
        return None
    try:
        where = require(a.name)
        config = json.loads((where / "config.json").read_text())
    except (CoarError, OSError, ValueError):
        return None
    if model == "clip_zeroshot":
        return {"vision_config": config.get("vision_config", {}), "projection_dim": config.get("projection_dim", 512)}
    if model == "clip_vit_b_16":
        return config.get("vision_config")
    return config


def required_by(inputs) -> list[str]:
    """Assets whose manifests are among a job's input files (data/weights/<name>.json)."""
    names = []
    for path in map(Path, inputs):
        if path.parent.as_posix().endswith(MANIFEST_DIR) and path.suffix == ".json" and path.stem in ASSETS:
            names.append(path.stem)
    return names


__all__ = ["ASSETS", "MODEL_ASSET", "fetch", "require", "status", "needed", "setup_assets", "manifest_path",
           "fetch_command", "weights_url", "required_by", "cached_architecture"]
