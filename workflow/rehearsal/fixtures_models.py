"""Local "published weights" (random values) and the two text data sets, for an offline rehearsal of the paper
preset that goes through the project's real loading code unchanged.

    python workflow/rehearsal/fixtures_models.py TORCH_HOME HF_HOME RAW MIRROR   (prints the environment)

What is written, each where the real loader looks for it:
  * torchvision: ResNet-50 and ViT-B/16 state dicts at their real architectures, named as the files of
    ResNet50_Weights / ViT_B_16_Weights.IMAGENET1K_V1 in $TORCH_HOME/hub/checkpoints. torch.hub loads an
    existing cached file without downloading and checks its hash only after a download, so random values
    pass. ResNet-50's BatchNorm running statistics are re-estimated on natural-looking images (train-mode
    forward) so that its activations neither vanish nor explode, and its classifier is centred on those
    images' mean feature, so that its predictions vary from image to image; torchvision zero-initialises
    ViT's head (every logit 0, every margin 0), so the fixture's head gets random values.
  * Hugging Face: gpt2 (GPT2LMHeadModel), microsoft/phi-2 (PhiForCausalLM) and openai/clip-vit-base-patch16
    (CLIPModel + CLIPTokenizer) as tiny configurations of the same classes and module names (so the
    component tables of coar.components match them), in the hub cache's own layout under HF_HOME/hub
    (blobs named by their git SHA-1 or, for LFS files, SHA-256; snapshots/<commit> symlinks; refs/main),
    with byte-level BPE tokenizers learnt here on the fixtures' own text (GPT-2 and Phi-2 share one
    vocabulary, as the real ones do) whose sizes equal the models' vocab_size.
  * TinyStories: TinyStoriesV2-GPT4-valid.txt (40 short stories in the release's format) in the dataset-repo
    cache layout under RAW/tinystories (the cache_dir coar.paper.data.hf_text.find_tinystories uses), its blob
    named by its SHA-256 as an LFS file's is, so verify_hub_blob accepts it.
  * BoolQ: MIRROR/dev.jsonl (40 records in the release's jsonl format), fetched by the real download code
    from COAR_DATA_MIRROR=file://MIRROR (coar.paper.data.mirror). Its record count is written next to it as
    MIRROR/dev.jsonl.count, which the loader checks instead of the release's 3,270 when the file comes
    from a mirror, and its SHA-256 in the mirror's SHA256SUMS (merged into one that is already there).

The models are seeded and the files deterministic (the same bytes on every run).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

SEED = 0
VOCAB = 512  # GPT-2 / Phi-2 tokenizer and models: 256 bytes, 255 merges, <|endoftext|>
CLIP_VOCAB = 1024  # CLIP: 2 x 256 byte symbols, 510 merges, <|startoftext|>, <|endoftext|>
EOT = "<|endoftext|>"
SOT = "<|startoftext|>"
ANSWER_WORDS = (" yes", " no")  # coar.paper.data.hf_text.ANSWERS: each must be one token
IMAGE_SIZE = 224

GPT2 = dict(vocab_size=VOCAB, n_positions=1024, n_embd=64, n_layer=2, n_head=4, bos_token_id=VOCAB - 1,
            eos_token_id=VOCAB - 1)
# hidden 80 so that Phi-2's blocks of 10 weight rows tile every layer exactly, as they do 2,560
PHI2 = dict(vocab_size=VOCAB, hidden_size=80, intermediate_size=320, num_hidden_layers=2, num_attention_heads=4,
            partial_rotary_factor=0.4, max_position_embeddings=2048, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
            tie_word_embeddings=False)
CLIP_TEXT = dict(vocab_size=CLIP_VOCAB, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=77, bos_token_id=CLIP_VOCAB - 2,
                 eos_token_id=CLIP_VOCAB - 1, pad_token_id=CLIP_VOCAB - 1)
CLIP_VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, patch_size=16,
                   image_size=IMAGE_SIZE)
CLIP_PROJECTION = 32

# ------------------------------------------------------------------------------------------------ text data
_NAMES = ["Lily", "Tom", "Ben", "Mia", "Sam", "Zoe", "Max", "Anna", "Tim", "Sue", "Lucy", "Jack"]
_ANIMALS = ["cat", "dog", "bird", "frog", "bunny", "fish", "bear", "duck", "mouse", "puppy"]
_PLACES = ["park", "garden", "forest", "house", "pond", "yard", "beach", "school"]
_THINGS = ["ball", "kite", "box", "stone", "hat", "cup", "toy car", "flower", "book", "cake"]
_ADJS = ["red", "big", "shiny", "little", "soft", "blue", "pretty", "old"]
_FEELINGS = ["happy", "sad", "scared", "excited", "proud", "tired"]


def tinystories_text(n: int = 40, seed: int = SEED) -> str:
    """`n` short stories in TinyStoriesV2-GPT4-valid.txt's format: a story, the separator on its own line."""
    rng = random.Random(seed)
    stories = []
    for _ in range(n):
        name, friend = rng.sample(_NAMES, 2)
        animal, place, thing, adj, feel = (rng.choice(v) for v in (_ANIMALS, _PLACES, _THINGS, _ADJS, _FEELINGS))
        opening = rng.choice([f"Once upon a time, there was a {adj} {animal} named {name}.",
                              f"One day, {name} went to the {place} with {friend}.",
                              f"{name} had a {adj} {thing}. {name} loved it very much."])
        middle = rng.sample([f"{name} saw a {thing} near the {place}.",
                             f'"Can I play with your {thing}?" asked {friend}.',
                             f"{name} felt {feel} and ran to find mom.",
                             f"The {animal} jumped and played all day.",
                             f"They shared the {thing} and laughed."], rng.randint(1, 3))
        ending = rng.choice([f"From that day on, {name} and {friend} were best friends.",
                             f"{name} learned that sharing is good.", "The end.",
                             f"At night, {name} went to bed {feel} and sleepy."])
        sep = "\n\n" if rng.random() < 0.3 else " "
        stories.append(opening + " " + " ".join(middle) + sep + ending)
    return "".join(s + f"\n{EOT}\n" for s in stories)


# (title, passage, [(question, answer), ...]): BoolQ's style (lower-case questions without a question mark)
_BOOLQ_TOPICS = [
    ("Moon", "The Moon is Earth's only natural satellite. It orbits Earth about once every 27 days and has almost "
     "no atmosphere.", [("is the moon a natural satellite of earth", True), ("does the moon have a thick "
                        "atmosphere", False), ("does the moon orbit the earth in about a month", True)]),
    ("Penguin", "Penguins are flightless birds that live almost only in the Southern Hemisphere. They are highly "
     "adapted for life in the water.", [("can penguins fly", False), ("are penguins birds", True),
                                        ("do penguins live in the southern hemisphere", True)]),
    ("Water", "Water boils at 100 degrees Celsius at sea level and freezes at 0 degrees Celsius.",
     [("does water boil at 100 degrees celsius at sea level", True), ("does water freeze at 10 degrees celsius",
                                                                      False), ("is ice frozen water", True)]),
    ("Spider", "Spiders are arachnids with eight legs. Most spiders spin silk, and they are not insects.",
     [("do spiders have eight legs", True), ("are spiders insects", False), ("can spiders spin silk", True)]),
    ("Sahara", "The Sahara is a desert in Africa. It is the largest hot desert in the world and gets very little "
     "rain.", [("is the sahara in africa", True), ("does the sahara get a lot of rain", False),
               ("is the sahara the largest hot desert", True)]),
    ("Whale", "Whales are large marine mammals. They breathe air through a blowhole and feed their young with "
     "milk.", [("are whales fish", False), ("do whales breathe air", True), ("are whales mammals", True)]),
    ("Tomato", "The tomato is the edible berry of a plant in the nightshade family. It is often eaten as a "
     "vegetable.", [("is a tomato a berry", True), ("is the tomato in the rose family", False),
                    ("is the tomato often eaten as a vegetable", True)]),
    ("Mount Everest", "Mount Everest is the highest mountain above sea level. It lies in the Himalayas on the "
     "border of Nepal and China.", [("is mount everest the highest mountain above sea level", True),
                                    ("is mount everest in the alps", False), ("is mount everest in nepal", True)]),
    ("Bat", "Bats are the only mammals capable of true flight. Many bats find their way in the dark by "
     "echolocation.", [("can bats fly", True), ("are bats birds", False), ("do bats use echolocation", True)]),
    ("Glass", "Glass is a hard material made by melting sand. It is usually transparent and breaks easily.",
     [("is glass made from sand", True), ("is glass usually transparent", True), ("is glass soft", False)]),
    ("Venus", "Venus is the second planet from the Sun. Its thick clouds make it the hottest planet in the solar "
     "system.", [("is venus the second planet from the sun", True), ("is venus the coldest planet", False),
                 ("does venus have thick clouds", True)]),
    ("Octopus", "An octopus has eight arms and three hearts. It has no bones and can change the colour of its "
     "skin.", [("does an octopus have three hearts", True), ("does an octopus have bones", False),
               ("can an octopus change colour", True)]),
    ("Chess", "Chess is a board game for two players. It is played on a board of 64 squares.",
     [("is chess played by two players", True), ("is a chess board made of 100 squares", False),
      ("is chess a board game", True)]),
    ("Honey", "Honey is a sweet food made by bees from the nectar of flowers. Sealed honey can keep for a very "
     "long time.", [("is honey made by bees", True), ("is honey made from leaves", False),
                    ("can honey keep for a long time", True)]),
]


def boolq_records(n: int = 40) -> list[dict]:
    """`n` records with the keys and types of BoolQ's dev.jsonl (question, title, answer, passage)."""
    recs = [{"question": q, "title": title, "answer": a, "passage": passage}
            for title, passage, qa in _BOOLQ_TOPICS for q, a in qa]
    if n > len(recs):
        raise ValueError(f"at most {len(recs)} BoolQ records, asked for {n}")
    return recs[:n]


# ------------------------------------------------------------------------------------------- BPE tokenizers
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's (and CLIP's) byte -> printable character table, in its vocabulary order (printable bytes first)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs)))


GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def learn_bpe(words: Counter, n_merges: int) -> list[tuple[str, str]]:
    """The first `n_merges` merges of byte-pair encoding on `words` (symbol tuple -> count): each merge joins the
    most frequent adjacent pair (ties: the lexicographically smallest), as BPE learning does."""
    words = dict(words)
    merges = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[a, b] += c
        if not pairs:
            raise ValueError(f"the corpus supports only {len(merges)} merges, {n_merges} asked")
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    return merges


def _corpus() -> str:
    prompts = [f"{r['passage']}\nQuestion: {r['question']}?\nAnswer: {'yes' if r['answer'] else 'no'}"
               for r in boolq_records()]
    return tinystories_text() + "\n".join(prompts)


def gpt2_bpe(vocab_size: int = VOCAB) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2-style byte-level BPE (vocab.json, merges.txt contents) of exactly `vocab_size` tokens, the last one
    <|endoftext|>; the BoolQ answer words " yes" and " no" are single tokens (weighted so they merge first)."""
    import regex

    table = bytes_to_unicode()
    sym = lambda s: tuple(table[b] for b in s.encode("utf-8"))  # noqa: E731
    words = Counter(sym(w) for w in regex.findall(GPT2_SPLIT, _corpus()))
    for w in ANSWER_WORDS:
        words[sym(w)] += 10 ** 6
    merges = learn_bpe(words, vocab_size - 257)
    vocab = {c: i for i, c in enumerate(table.values())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[EOT] = len(vocab)
    if len(vocab) != vocab_size:  # a merge repeating a token already made (cannot happen for byte-level BPE)
        raise ValueError(f"GPT-2 vocabulary has {len(vocab)} tokens, not {vocab_size}")
    return vocab, merges


def clip_bpe(vocab_size: int = CLIP_VOCAB) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-style BPE (lower-case words ending in </w>) of exactly `vocab_size` tokens, learnt on the fixture
    text and CLIP's prompt templates, ending with <|startoftext|>, <|endoftext|> as CLIP's vocabulary does."""
    import regex

    from coar.paper.data.typographic import ATTACK_WORDS
    from coar.paper.models.clip_zeroshot import TEMPLATES

    table = bytes_to_unicode()
    text = (_corpus() + "\n" + "\n".join(t.format(w) for t in TEMPLATES for w in (*ATTACK_WORDS, *_THINGS))).lower()
    words: Counter = Counter()
    for w in regex.findall(CLIP_SPLIT, " ".join(text.split())):
        s = [table[b] for b in w.encode("utf-8")]
        words[(*s[:-1], s[-1] + "</w>")] += 1
    merges = learn_bpe(words, vocab_size - 514)
    base = list(table.values())
    vocab = {t: i for i, t in enumerate(base + [c + "</w>" for c in base])}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[SOT] = len(vocab)
    vocab[EOT] = len(vocab)
    if len(vocab) != vocab_size:
        raise ValueError(f"CLIP vocabulary has {len(vocab)} tokens, not {vocab_size}")
    return vocab, merges


def _merges_txt(merges) -> bytes:
    return ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode("utf-8")


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


# -------------------------------------------------------------------------------------- Hugging Face cache
def _commit(repo_type: str, repo_id: str) -> str:
    return hashlib.sha1(f"coar rehearsal fixture {repo_type}/{repo_id} seed {SEED}".encode()).hexdigest()


def _blob_name(data: bytes, lfs: bool) -> str:
    """What the hub names a cached blob: the SHA-256 of an LFS file, the git blob SHA-1 of any other."""
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def put_hub_repo(cache: Path, repo_type: str, repo_id: str, files: dict[str, bytes],
                 lfs: tuple[str, ...] = (".safetensors", ".bin")) -> Path:
    """Write `files` (name -> content) as one commit of a hub repo in the cache layout of huggingface_hub:
    <cache>/<type>s--<org>--<name>/{blobs/<hash>, snapshots/<commit>/<name> -> ../../blobs/<hash>, refs/main};
    files whose names end with one of `lfs` are stored as LFS files are (blob named by SHA-256). Returns the
    snapshot folder."""
    repo = Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    commit = _commit(repo_type, repo_id)
    snap = repo / "snapshots" / commit
    if repo.exists():
        shutil.rmtree(repo)
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    for name, data in files.items():
        blob = repo / "blobs" / _blob_name(data, name.endswith(lfs))
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / "main").write_text(commit)
    return snap


def _saved(model) -> dict[str, bytes]:
    """The files save_pretrained writes for `model` (config.json, model.safetensors, ...), as bytes."""
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}


def make_hf_models(hub_cache: Path) -> dict[str, Path]:
    """Tiny gpt2, microsoft/phi-2 and openai/clip-vit-base-patch16 with their tokenizers in `hub_cache`."""
    import transformers as t

    t.logging.set_verbosity_error()
    t.logging.disable_progress_bar()
    vocab, merges = gpt2_bpe()
    gpt2_tok = {"vocab.json": _json(vocab), "merges.txt": _merges_txt(merges),
                "tokenizer_config.json": _json({"model_max_length": 1024, "bos_token": EOT, "eos_token": EOT,
                                                "unk_token": EOT, "add_prefix_space": False})}
    # Phi-2 ships GPT-2's BPE under CodeGen's tokenizer class (microsoft/phi-2 tokenizer_config.json)
    phi_tok = {"vocab.json": _json(vocab), "merges.txt": _merges_txt(merges),
               "tokenizer_config.json": _json({"tokenizer_class": "CodeGenTokenizer", "model_max_length": 2048,
                                               "bos_token": EOT, "eos_token": EOT, "unk_token": EOT,
                                               "add_prefix_space": False, "clean_up_tokenization_spaces": True})}
    cvocab, cmerges = clip_bpe()
    clip_tok = {"vocab.json": _json(cvocab), "merges.txt": _merges_txt(cmerges),
                "tokenizer_config.json": _json({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
                                                "bos_token": SOT, "eos_token": EOT, "unk_token": EOT,
                                                "pad_token": EOT, "do_lower_case": True})}
    torch.manual_seed(SEED + 1)
    gpt2 = t.GPT2LMHeadModel(t.GPT2Config(**GPT2))
    torch.manual_seed(SEED + 2)
    phi = t.PhiForCausalLM(t.PhiConfig(**PHI2))
    torch.manual_seed(SEED + 3)
    clip = t.CLIPModel(t.CLIPConfig(text_config=CLIP_TEXT, vision_config=CLIP_VISION, projection_dim=CLIP_PROJECTION))
    return {"gpt2": put_hub_repo(hub_cache, "model", "gpt2", {**_saved(gpt2), **gpt2_tok}),
            # microsoft/phi-2 publishes float16 weights (its config.json says torch_dtype float16): so does this
            "microsoft/phi-2": put_hub_repo(hub_cache, "model", "microsoft/phi-2", {**_saved(phi.half()), **phi_tok}),
            "openai/clip-vit-base-patch16": put_hub_repo(hub_cache, "model", "openai/clip-vit-base-patch16",
                                                         {**_saved(clip), **clip_tok})}


# ---------------------------------------------------------------------------------------- torchvision weights
def natural_images(n: int, size: int = IMAGE_SIZE, seed: int = SEED) -> torch.Tensor:
    """[n, 3, size, size] float in [0, 1]: random fields with a natural image's 1/f amplitude spectrum and
    correlated colour channels (a grey-level field plus weaker colour fields), each image's contrast random."""
    g = torch.Generator().manual_seed(seed)
    f = torch.fft.fftfreq(size)
    radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1.0 / size)

    def field(k):
        spec = torch.fft.fft2(torch.randn(n, k, size, size, generator=g)) / radius
        x = torch.fft.ifft2(spec).real
        return (x - x.mean((-2, -1), keepdim=True)) / x.std((-2, -1), keepdim=True)

    grey, colour = field(1), field(3)
    contrast = 0.1 + 0.15 * torch.rand(n, 1, 1, 1, generator=g)
    mean = 0.3 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    return (mean + contrast * (grey + 0.4 * colour)).clamp(0, 1)


def _imagenet_normalised(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def random_resnet50(n_calib: int = 16):
    """Seeded random ResNet-50 whose BatchNorm running statistics are those of `n_calib` natural-looking images
    (so every layer's eval-mode activations are standardised, as a trained network's are) and whose classifier
    bias centres the logits on those images' mean feature (so predictions depend on the image)."""
    import torchvision

    torch.manual_seed(SEED + 10)
    model = torchvision.models.resnet50(weights=None)
    x = _imagenet_normalised(natural_images(n_calib, seed=SEED + 11))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch, exactly its statistics
    model.train()
    feats = {}
    hook = model.fc.register_forward_hook(lambda mod, inp, out: feats.setdefault("x", inp[0]))
    model(x)
    hook.remove()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1  # torchvision's default, as in a saved model
    model.fc.bias.copy_(-model.fc.weight @ feats["x"].mean(0))
    return model.eval()


@torch.no_grad()
def random_vit_b_16():
    import torchvision

    torch.manual_seed(SEED + 20)
    model = torchvision.models.vit_b_16(weights=None)
    head = model.heads.head  # zero-initialised by torchvision: every logit would be 0
    torch.nn.init.normal_(head.weight, std=head.in_features ** -0.5)
    torch.nn.init.zeros_(head.bias)
    return model.eval()


@torch.no_grad()
def distinct_predictions(model, n: int = 16, seed: int = SEED + 99) -> int:
    """Number of distinct classes predicted for `n` natural-looking images (not those BatchNorm saw)."""
    return int(model(_imagenet_normalised(natural_images(n, seed=seed))).argmax(1).unique().numel())


def make_torchvision_weights(torch_home: Path) -> dict[str, Path]:
    from torchvision.models import ResNet50_Weights, ViT_B_16_Weights

    out = Path(torch_home) / "hub" / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, weights, build in (("resnet50", ResNet50_Weights.IMAGENET1K_V1, random_resnet50),
                                 ("vit_b_16", ViT_B_16_Weights.IMAGENET1K_V1, random_vit_b_16)):
        path = out / os.path.basename(weights.url)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(build().state_dict(), tmp)
        os.replace(tmp, path)
        paths[name] = path
    return paths


# ------------------------------------------------------------------------------------------------ data sets
def make_tinystories(raw: Path, cache: Path | None = None) -> Path:
    """TinyStoriesV2-GPT4-valid.txt in the dataset-repo cache layout under `cache` (default raw/tinystories, the
    cache_dir of coar.paper.data.hf_text.find_tinystories in the workflow)."""
    from coar.paper.data.hf_text import TINYSTORIES_FILE, TINYSTORIES_REPO

    snap = put_hub_repo(Path(cache) if cache is not None else Path(raw) / "tinystories", "dataset", TINYSTORIES_REPO,
                        {TINYSTORIES_FILE: tinystories_text().encode("utf-8")}, lfs=(TINYSTORIES_FILE,))
    return snap / TINYSTORIES_FILE


def make_boolq_mirror(mirror: Path) -> Path:
    """mirror/dev.jsonl in BoolQ's format, mirror/dev.jsonl.count (its number of records) and its entry in the
    mirror's SHA256SUMS (coar.paper.data.mirror; other entries of an existing SHA256SUMS are kept)."""
    from coar.paper.data.hf_text import BOOLQ_FILE
    from coar.paper.data.mirror import SUMS

    mirror = Path(mirror)
    mirror.mkdir(parents=True, exist_ok=True)
    records = boolq_records()
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    path = mirror / BOOLQ_FILE
    path.write_bytes(data)
    (mirror / f"{BOOLQ_FILE}.count").write_text(f"{len(records)}\n")
    sums = mirror / SUMS
    lines = [ln for ln in (sums.read_text().splitlines() if sums.exists() else [])
             if ln.split(None, 1)[1:] != [BOOLQ_FILE] and ln.strip()]
    sums.write_text("".join(f"{ln}\n" for ln in sorted([*lines, f"{hashlib.sha256(data).hexdigest()}  {BOOLQ_FILE}"],
                                                         key=lambda ln: ln.split(None, 1)[-1])))
    return path


def make_models(torch_home: Path, hf_home: Path, raw: Path, mirror: Path, tinystories_cache: Path | None = None
                ) -> dict[str, str]:
    """Local weight files and text data for an offline rehearsal. Returns the environment variables to load
    them from where they were written (TORCH_HOME, HF_HOME, HF_HUB_OFFLINE=1, ...). tinystories_cache: the hub
    cache the TinyStories dataset repository goes to (default: raw/tinystories, where the workflow's dataset rule
    reads it; the rehearsal puts it beside the models instead, which hub_server.py serves, so the rule downloads
    it)."""
    torch_home, hf_home, raw, mirror = (Path(p).resolve() for p in (torch_home, hf_home, raw, mirror))
    make_torchvision_weights(torch_home)
    make_hf_models(hf_home / "hub")
    make_tinystories(raw, tinystories_cache)
    make_boolq_mirror(mirror)
    return {
        "TORCH_HOME": str(torch_home),  # torch.hub: $TORCH_HOME/hub/checkpoints
        "HF_HOME": str(hf_home),
        # HF_HUB_CACHE (or the legacy HUGGINGFACE_HUB_CACHE) in the calling environment would override HF_HOME/hub
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "COAR_DATA_MIRROR": mirror.as_uri(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: fixtures_models.py TORCH_HOME HF_HOME RAW MIRROR  (prints the environment to run with)",
              file=sys.stderr)
        return 2
    env = make_models(*map(Path, argv))
    sys.stdout.write("".join(f"export {k}={v}\n" for k, v in env.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
