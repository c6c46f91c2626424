"""Published weights and tokenizers (coar.paper.hub): fetched through the real download code (torch.hub,
huggingface_hub) from a server on 127.0.0.1 that stands in for download.pytorch.org and the Hugging Face hub
(workflow/rehearsal/hub_server.py), with the hash checks on; then only read, and a job that finds them missing
fails at once naming the rule that fetches them.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported, so every fetch runs in
a subprocess with the environment under test."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "rehearsal"))
sys.path.insert(0, str(Path(__file__).parent))

import fixtures_models as fm  # noqa: E402
from hub_server import Server  # noqa: E402

from coar.errors import CoarError  # noqa: E402
from coar.paper import hub  # noqa: E402

RESNET50_FILE = "resnet50-0676ba61.pth"  # ResNet50_Weights.IMAGENET1K_V1: its SHA-256 starts with 0676ba61


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny gpt2 repository in a hub cache, and a small file under ResNet-50's release name."""
    import torch
    import transformers as t

    d = tmp_path_factory.mktemp("published")
    vocab, merges = fm.gpt2_bpe()
    torch.manual_seed(0)
    model = t.GPT2LMHeadModel(t.GPT2Config(**fm.GPT2))
    fm.put_hub_repo(d / "hf", "model", "gpt2", {**fm._saved(model), "vocab.json": fm._json(vocab),
                                               "merges.txt": fm._merges_txt(merges),
                                               "tokenizer_config.json": fm._json({"model_max_length": 1024})})
    (d / "torch").mkdir()
    (d / "torch" / RESNET50_FILE).write_bytes(os.urandom(4096))
    (d / "mirror").mkdir()
    return d


@pytest.fixture()
def site(published, tmp_path):
    """The local server over `published`, and an environment with empty caches pointed at it."""
    with Server(published / "hf", published / "torch", published / "mirror", tmp_path / "server.log") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS"))}
        env.update(server.environment(), TORCH_HOME=str(tmp_path / "torch-home"), HF_HOME=str(tmp_path / "hf-home"),
                   HF_HUB_DISABLE_TELEMETRY="1")
        yield SimpleNamespace(server=server, env=env, work=tmp_path)


def run(site, code: str, *args: str, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env={**site.env, **extra_env}, cwd=site.work,
                          capture_output=True, text=True, timeout=300)


FETCH = ("import json, sys\nfrom coar.paper.hub import fetch, manifest_path\nfrom coar.io import atomic_write_text\n"
         "from pathlib import Path\nm = fetch(sys.argv[1])\nPath(manifest_path(sys.argv[1])).parent.mkdir(parents=True, "
         "exist_ok=True)\natomic_write_text(manifest_path(sys.argv[1]), json.dumps(m))\n")
CHECK = ("import sys\nfrom coar.errors import CoarError\nfrom coar.paper.hub import require\n"
         "try:\n    print('OK', require(sys.argv[1], verify=True))\nexcept CoarError as exc:\n    print('ERR', exc)\n")


def fetched(site, name: str) -> dict:
    r = run(site, FETCH, name)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads((site.work / hub.manifest_path(name)).read_text())


def test_huggingface_model_is_fetched_through_the_hub_api_and_loads_offline(site, published):
    manifest = fetched(site, "gpt2")
    files = {f["path"]: f for f in manifest["files"]}
    assert set(files) == {"config.json", "generation_config.json", "model.safetensors", "vocab.json", "merges.txt",
                          "tokenizer_config.json"}
    snap = Path(manifest["location"])
    assert snap.is_relative_to(site.work / "hf-home" / "hub") and manifest["revision"] == snap.name
    for name, f in files.items():  # recorded hashes are those of the published files
        assert f["sha256"] == hashlib.sha256((snap / name).read_bytes()).hexdigest()
    got = {line.split()[1].split("/")[-1] for line in site.server.requests() if line.startswith("GET /gpt2/resolve/")}
    assert got == set(files)  # each file came through the server's resolve endpoint
    # a compute job: offline, loads model and tokenizer from the fetched cache
    load = ("import transformers as t\nm = t.GPT2LMHeadModel.from_pretrained('gpt2')\n"
            "tok = t.GPT2TokenizerFast.from_pretrained('gpt2')\nprint('LOADED', m.config.n_embd, len(tok))")
    before = len(site.server.requests())
    r = run(site, load, HF_HUB_OFFLINE="1")
    assert "LOADED 64 512" in r.stdout, r.stderr[-2000:]
    assert len(site.server.requests()) == before  # nothing asked of the network
    assert run(site, CHECK, "gpt2").stdout.startswith("OK")
    # coar preflight costs the shape that will load: the fetched configuration (here the tiny one)
    shape = run(site, "from coar.paper.hub import cached_architecture as c\nprint('SHAPE', c('gpt2')['n_embd'], "
                      "c('phi2'), c('resnet50'))")
    assert "SHAPE 64 None None" in shape.stdout, shape.stderr[-2000:]


def test_torchvision_weights_are_fetched_with_the_mirrors_hash_check(site, published):
    manifest = fetched(site, "resnet50")
    dest = site.work / "torch-home" / "hub" / "checkpoints" / RESNET50_FILE
    assert manifest["location"] == str(dest) and dest.read_bytes() == (published / "torch" / RESNET50_FILE).read_bytes()
    assert f"GET /models/{RESNET50_FILE} 200" in site.server.requests()
    # fetched again: found in the cache and hashed, not downloaded again
    fetched(site, "resnet50")
    assert site.server.requests().count(f"GET /models/{RESNET50_FILE} 200") == 1
    # a cached file that does not match (torch.hub itself never checks a cached file): fetched again
    dest.write_bytes(b"truncated")
    assert fetched(site, "resnet50")["files"][0]["size"] == 4096
    assert site.server.requests().count(f"GET /models/{RESNET50_FILE} 200") == 2
    assert dest.read_bytes() == (published / "torch" / RESNET50_FILE).read_bytes()


def test_a_download_that_fails_its_hash_check_is_refused_and_leaves_nothing(site, published):
    # the release's own check: without a mirror SHA256SUMS the SHA-256 must start with the file name's 0676ba61
    env = {"COAR_WEIGHTS_MIRROR": site.server.base + "/nosums"}  # a mirror path that lists no checksums
    r = run(site, "import sys\nfrom coar.errors import CoarError\nfrom coar.paper.hub import fetch\n"
                  "try:\n    fetch('resnet50')\nexcept CoarError as exc:\n    print('ERR', exc)\n", **env)
    assert "ERR" in r.stdout and "resnet50" in r.stdout, r.stdout + r.stderr[-2000:]
    assert "invalid hash value" in r.stdout and f"GET /nosums/models/{RESNET50_FILE} 200" in site.server.requests()
    assert not (site.work / "torch-home" / "hub" / "checkpoints" / RESNET50_FILE).exists()
    # the hash prefix itself: a file whose SHA-256 does not start with the release's prefix is refused
    import torch.hub

    src = published / "torch" / RESNET50_FILE
    dst = site.work / "bad.pth"
    with pytest.raises(RuntimeError, match="invalid hash value"):
        torch.hub.download_url_to_file(f"{site.server.base}/models/{RESNET50_FILE}", str(dst), hash_prefix="0676ba61",
                                       progress=False)
    assert not dst.exists() and src.exists()


def test_a_corrupted_cached_file_is_refused_by_status_and_refetched(site, published):
    manifest = fetched(site, "gpt2")
    blob = (Path(manifest["location"]) / "model.safetensors").resolve()
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))  # same size: only the hash tells
    out = run(site, CHECK, "gpt2").stdout
    assert out.startswith("ERR") and "model.safetensors" in out and "snakemake --cores 1 data/weights/gpt2.json" in out


def test_a_job_without_the_weights_fails_naming_the_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CoarError, match=r"rule weights.*|snakemake --cores 1 data/weights/phi-2.json"):
        hub.require("phi-2")
    with pytest.raises(CoarError) as exc:
        hub.require("phi-2")
    assert "data/weights/phi-2.json" in str(exc.value) and "rule weights" in str(exc.value)
    # a manifest written by a fetch into another cache than this job reads
    Path("data/weights").mkdir(parents=True)
    Path(hub.manifest_path("resnet50")).write_text(json.dumps(
        {"files": [{"path": RESNET50_FILE, "size": 10, "sha256": "0" * 64}], "location": "/elsewhere"}))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(CoarError) as exc:
        hub.require("resnet50")
    assert "is not in the cache" in str(exc.value) and "/elsewhere" in str(exc.value)
    Path(hub.manifest_path("gpt2")).write_text("{not json")
    with pytest.raises(CoarError, match="not a manifest of the weights rule"):
        hub.require("gpt2")
    with pytest.raises(CoarError, match="unknown published weights"):
        hub.require("gpt3")


def test_compute_jobs_run_offline_and_check_their_weights_first(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    import _job

    monkeypatch.chdir(tmp_path)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    out, err = sys.stdout, sys.stderr

    def sm(inputs):
        return SimpleNamespace(log=[str(tmp_path / "job.log")], input=inputs, resources={}, threads=1)

    try:
        with pytest.raises(CoarError, match="rule weights"):
            _job.start(sm(["data/datasets/boolq.json", "data/weights/phi-2.json"]), torch=False)
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
        monkeypatch.delenv("HF_HUB_OFFLINE")
        assert _job.start(sm(["data/datasets/boolq.json"]), torch=False, online=True) == "cpu"
        assert "HF_HUB_OFFLINE" not in os.environ  # the fetching rules keep the network
    finally:
        sys.stdout, sys.stderr = out, err


def test_the_paper_preset_fetches_every_asset_in_a_local_rule_before_its_jobs():
    from test_plan import load

    def plan(path):
        return load({"config/paper.yaml": "paper", "config/config.yaml": "default"}[path])

    paper = plan("config/paper.yaml")
    assert hub.needed(paper) == ["resnet50", "vit_b_16", "clip-vit-base-patch16", "gpt2", "phi-2"]
    assert paper.weights_manifests("B", "model") == ["data/weights/resnet50.json"]
    assert paper.weights_manifests("WB", "model") == ["data/weights/resnet50.json"]  # fine-tuned from it
    assert paper.weights_manifests("A", "model") == [] and paper.weights_manifests("B", "examples") == []
    assert paper.weights_manifests("TY", "model") == ["data/weights/clip-vit-base-patch16.json"]
    assert paper.weights_manifests("G", "examples") == ["data/weights/gpt2.json"]  # its tokenizer
    assert paper.weights_manifests("P", "examples") == ["data/weights/phi-2.json"]
    assert hub.needed(plan("config/config.yaml")) == []  # the offline default needs no published weights
    # the `fetch` target (login node): every source the paper's jobs read (11: as many `dataset` jobs as its
    # full DAG has) and every asset
    fetch = paper.fetch_manifests()
    assert {p for p in fetch if p.startswith("data/weights/")} == {hub.manifest_path(n) for n in hub.ASSETS}
    sources = sorted(p for p in fetch if p.startswith("data/datasets/"))
    assert len(sources) == 11 and "data/datasets/imagenet-sketch.json" in sources  # a forget edit's shifted set
    assert "data/datasets/cifar10-c.json" in sources and "data/datasets/boolq.json" in sources
    assert plan("config/config.yaml").fetch_manifests() == ["data/datasets/fashion-mnist.json",
                                                            "data/datasets/os-text.json"]
    assert hub.required_by(["data/datasets/boolq.json", "data/weights/phi-2.json", "x/weights/gpt2.json"]) == ["phi-2"]
    rules = (ROOT / "rules" / "data.smk").read_text()
    block = rules[rules.index("rule weights:"):rules.index("rule examples:")]
    assert "localrule: True" in block and '"data/weights/{asset}.json"' in block


def test_mirror_checksum_listing_is_shared_with_the_data_mirror(tmp_path):
    from coar.paper.data.mirror import listed_sha256

    (tmp_path / "SHA256SUMS").write_text(f"{'a' * 64}  {RESNET50_FILE}\nzz  other.pth\n")
    base = tmp_path.as_uri()
    assert listed_sha256(base, f"https://download.pytorch.org/models/{RESNET50_FILE}") == "a" * 64
    assert listed_sha256(base, "https://download.pytorch.org/models/none.pth") is None
    with pytest.raises(CoarError, match="not a SHA-256"):
        listed_sha256(base, "https://x/other.pth")
    assert hub.weights_url("https://download.pytorch.org/models/x.pth") == "https://download.pytorch.org/models/x.pth"
    os.environ[hub.WEIGHTS_MIRROR] = "http://127.0.0.1:9/"
    try:
        assert hub.weights_url("https://download.pytorch.org/models/x.pth") == "http://127.0.0.1:9/models/x.pth"
    finally:
        del os.environ[hub.WEIGHTS_MIRROR]


def test_transformers_and_huggingface_hub_are_pinned_to_the_tested_series():
    """The text and dev extras pin the same series, and this environment is inside it (what the tests ran on)."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for package in ("transformers", "huggingface_hub"):
        specs = {str(Requirement(r).specifier) for extra in ("text", "dev") for r in extras[extra]
                 if Requirement(r).name.replace("-", "_") == package}
        assert len(specs) == 1, (package, specs)
        spec = Requirement(f"{package}{specs.pop()}").specifier
        assert any(s.operator == "<" for s in spec), f"{package}: no upper bound in {spec}"
        assert version(package) in spec, (package, version(package), str(spec))
        conda = [r for r in yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"][-1]["pip"]
                 if not r.startswith("-")]
        assert [str(Requirement(r).specifier) for r in conda if Requirement(r).name.replace("-", "_") == package] \
            == [str(spec)], f"environment.yml pins {package} otherwise than pyproject.toml"


def test_a_hub_blob_is_hashed_once_and_checked_against_its_name(tmp_path, monkeypatch):
    """An LFS blob is named by its content's SHA-256, so the manifest's digest is the check's: the file is read once;
    a git blob (SHA-1 name) is hashed again; a blob whose content does not match its name is refused."""
    from coar.paper.data import hf_text

    blobs = tmp_path / "blobs"
    blobs.mkdir()
    content = b"weights" * 1000
    lfs = blobs / hashlib.sha256(content).hexdigest()
    lfs.write_bytes(content)
    link = tmp_path / "model.safetensors"
    link.symlink_to(lfs)
    monkeypatch.setattr(hf_text, "sha256_file", lambda p: pytest.fail(f"{p} hashed a second time"))
    assert hf_text.hub_blob_sha256(link) == lfs.name

    text = b'{"n_layer": 2}'
    git = blobs / hashlib.sha1(b"blob %d\0" % len(text) + text).hexdigest()
    git.write_bytes(text)
    (tmp_path / "config.json").symlink_to(git)
    monkeypatch.setattr(hf_text, "sha256_file", lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest())
    assert hf_text.hub_blob_sha256(tmp_path / "config.json") == hashlib.sha256(text).hexdigest()

    lfs.write_bytes(content + b"!")
    with pytest.raises(CoarError, match="corrupted in the Hugging Face cache"):
        hf_text.hub_blob_sha256(link)
