"""TinyStories / BoolQ example sets (coar.paper.data.hf_text), offline: self-made files in the real release formats
and a tiny GPT-2-style byte-level BPE tokenizer written to tmp_path."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from coar.paper.data import hf_text
from coar.examples import Examples
from coar.outputs import answer_margin
from coar.paper.data.hf_text import (BOOLQ_FILE, TINYSTORIES_FILE, boolq_examples, boolq_prompt,
                               parse_tinystories, read_boolq, tinystories_examples)
from coar.errors import CoarError, ShapeError
from coar.outputs import token_margin

MERGES = ["Ġ y", "Ġy e", "Ġye s", "Ġ n", "Ġn o", "Ġ t", "Ġt h", "Ġth e"]

STORIES = [
    "Once upon a time there was a little cat.\nThe cat liked milk.",
    "Tom had a red ball. He threw it high.",
    "A",  # one token: nothing to score
    "The sun was warm. Lily smiled at the sky and ran to the park.",
    "Ben saw a big dog.",
    "Mia found a shiny stone by the river. She kept it in her pocket.",
    "The bird sang.",
    "Sam and Zoe built a tall tower of blocks, then it fell down with a crash.",
    "Max was sad.\n\nThen his friend came to play.",
    "It rained all day, so they read books.",
    "The little fish swam fast.",
]

CLEAN = [s for s in STORIES if s != "A"]

BOOLQ = [
    {"question": "is the sky blue", "title": "Sky", "answer": True, "passage": "The sky is blue on a clear day."},
    {"question": "do fish fly", "title": "Fish", "answer": False, "passage": "Fish swim in water.\nThey have fins."},
    {"question": "is ice cold", "title": "Ice", "answer": True, "passage": "Ice is frozen water."},
    {"question": "can a cat bark", "title": "Cat", "answer": False, "passage": "Cats meow; dogs bark."},
    {"question": "is the earth round", "title": "Earth", "answer": True, "passage": "The earth is nearly a sphere."},
    {"question": "is fire wet", "title": "Fire", "answer": False, "passage": "Fire is hot and dry."},
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table: printable Latin-1 bytes map to themselves, the other bytes
    to code points 256, 257, ... in byte order."""
    keep = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import GPT2Tokenizer

    d = tmp_path_factory.mktemp("tok")
    chars = _bytes_to_unicode()
    vocab = {chars[b]: b for b in range(256)}
    for m in MERGES:
        vocab[m.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(MERGES) + "\n", encoding="utf-8")
    tok = GPT2Tokenizer.from_pretrained(str(d))
    assert tok.eos_token_id == len(vocab) - 1 and len(tok(" yes")["input_ids"]) == 1
    return tok


@pytest.fixture
def stories_dir(tmp_path):
    d = tmp_path / "tinystories"
    d.mkdir()
    # the release's layout: a story, the separator on its own line, the next story; an empty entry and a
    # trailing separator must be dropped
    body = "\n<|endoftext|>\n".join(STORIES[:5]) + "\n<|endoftext|>\n   \n<|endoftext|>\n" + \
        "\n<|endoftext|>\n".join(STORIES[5:]) + "\n<|endoftext|>\n"
    (d / TINYSTORIES_FILE).write_text(body, encoding="utf-8")
    return d


@pytest.fixture
def clean_dir(tmp_path):
    """The stories without the one-token one, so any seed and n=None work."""
    d = tmp_path / "clean"
    d.mkdir()
    (d / TINYSTORIES_FILE).write_text("\n<|endoftext|>\n".join(CLEAN) + "\n", encoding="utf-8")
    return d


@pytest.fixture
def boolq_dir(tmp_path):
    d = tmp_path / "boolq"
    d.mkdir()
    (d / BOOLQ_FILE).write_text("".join(json.dumps(r) + "\n" for r in BOOLQ), encoding="utf-8")
    return d


class TableLM(nn.Module):
    """Fake causal LM whose logits at position t depend only on the token there: logits = W[x_t]."""

    def __init__(self, vocab: int, seed: int = 0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x):
        return self.W[x]


# ---------------------------------------------------------------------------------------------- TinyStories

def test_parse_tinystories_splits_strips_and_drops_empties():
    text = "  First story.\nSecond line.\n<|endoftext|>\n\n<|endoftext|>\nSecond story.  \n<|endoftext|>\n"
    assert parse_tinystories(text) == ["First story.\nSecond line.", "Second story."]
    assert parse_tinystories("<|endoftext|>\n \n") == []


def test_load_tinystories_reads_the_release_layout(stories_dir):
    stories, path = hf_text.load_tinystories(stories_dir, download=False)
    assert stories == STORIES and path == stories_dir / TINYSTORIES_FILE
    # root may also name the file itself
    assert hf_text.load_tinystories(path, download=False)[0] == STORIES


def test_tinystories_seeded_choice_is_reproducible(stories_dir, tokenizer):
    chosen = {}
    for seed in range(6):
        try:
            ex = tinystories_examples(4, 128, seed=seed, root=stories_dir, tokenizer=tokenizer, download=False)
        except CoarError as exc:  # the seed drew the one-token story
            assert "has 1 token" in str(exc)
            continue
        again = tinystories_examples(4, 128, seed=seed, root=stories_dir, tokenizer=tokenizer, download=False)
        assert ex.fingerprint() == again.fingerprint() and ex.meta == again.meta
        idx = ex.meta["indices"]
        assert idx == sorted(idx) and len(set(idx)) == 4 and ex.inputs.shape == (4, 128)
        # every row is the tokenisation of the story the meta names
        for row, i in enumerate(idx):
            L = ex.meta["real_lengths"][row]
            assert tokenizer.decode(ex.inputs[row, :L].tolist()) == STORIES[i]
        chosen[seed] = tuple(idx)
    assert len(chosen) >= 2 and len(set(chosen.values())) >= 2  # the seed changes the choice


def test_tinystories_truncation_padding_and_meta(clean_dir, tokenizer):
    length = 20
    d, keep = clean_dir, CLEAN
    ex = tinystories_examples(None, length, seed=0, root=d, tokenizer=tokenizer, download=False)
    eos = tokenizer.eos_token_id
    assert ex.kind == "tokens" and ex.inputs.dtype == np.int64 and ex.targets.dtype == np.int64
    assert ex.inputs.shape == ex.targets.shape == (len(keep), length)
    n_trunc = 0
    for row, story in enumerate(keep):
        ids = tokenizer(story, add_special_tokens=False)["input_ids"]
        L = min(len(ids), length)
        n_trunc += len(ids) > length
        assert ex.meta["real_lengths"][row] == L
        assert ex.inputs[row, :L].tolist() == ids[:L]  # first `length` tokens
        assert (ex.inputs[row, L:] == eos).all()  # right-padded with EOS
        assert ex.targets[row, :L].tolist() == ids[:L] and (ex.targets[row, L:] == -1).all()
    assert 0 < n_trunc < len(keep) and ex.meta["n_truncated"] == n_trunc  # both cases occur
    m = ex.meta
    assert (m["dataset"], m["split"], m["n"], m["seed"], m["length"]) == ("tinystories", "validation", len(keep), 0,
                                                                          length)
    assert m["tokenizer"] == tokenizer.name_or_path and m["pad_id"] == eos and m["indices"] == list(range(len(keep)))
    # the fixed set survives a save/load round trip (meta is JSON)
    ex.save(d / "ex.npz")
    back = Examples.load(d / "ex.npz")
    assert back.fingerprint() == ex.fingerprint() and back.meta["real_lengths"] == m["real_lengths"]


def test_token_margin_scores_exactly_the_real_next_tokens(clean_dir, tokenizer):
    ex = tinystories_examples(None, 24, seed=1, root=clean_dir / TINYSTORIES_FILE, tokenizer=tokenizer, download=False)
    assert min(ex.meta["real_lengths"]) < 24 == max(ex.meta["real_lengths"])  # padded and truncated rows
    model = TableLM(len(tokenizer))
    x, y = ex.tensors()
    with torch.no_grad():
        logits = model(x)
        got = token_margin(logits, y)
    W = model.W.detach().double().numpy()
    for row in range(len(ex)):
        L = ex.meta["real_lengths"][row]
        toks = ex.inputs[row, :L].tolist()
        margins = []
        for t in range(L - 1):  # the prediction at t of the real token t+1
            a, b = toks[t], toks[t + 1]
            margins.append(W[a, b] - max(W[a, v] for v in range(W.shape[1]) if v != b))
        assert got[row].item() == pytest.approx(float(np.mean(margins)), abs=1e-5)
    # logits at and after the last real token (which would predict padding) do not enter the output
    spoiled = logits.clone()
    for row in range(len(ex)):
        spoiled[row, ex.meta["real_lengths"][row] - 1:] = 1e4 * torch.randn_like(spoiled[row, 0])
    assert torch.allclose(token_margin(spoiled, y), got)


def test_right_padding_leaves_a_causal_lm_output_unchanged(clean_dir, tokenizer):
    from coar.paper.models import build_model

    torch.manual_seed(0)
    model = build_model("gpt2_tiny")  # random weights, vocabulary 512 > the test tokenizer's
    ex = tinystories_examples(5, 48, seed=0, root=clean_dir, tokenizer=tokenizer, download=False)
    x, y = ex.tensors()
    with torch.no_grad():
        batch = token_margin(model(x).logits, y)
        for row in range(len(ex)):
            L = ex.meta["real_lengths"][row]
            alone = token_margin(model(x[row:row + 1, :L]).logits, y[row:row + 1, :L])
            assert batch[row].item() == pytest.approx(alone.item(), abs=1e-4)
    assert len(set(ex.meta["real_lengths"])) > 1  # the batch really mixes lengths


def test_tinystories_errors(tmp_path, stories_dir, tokenizer, monkeypatch):
    with pytest.raises(CoarError, match=f"{TINYSTORIES_FILE}.*huggingface.co/datasets/roneneldan/TinyStories"):
        tinystories_examples(2, 16, root=tmp_path / "nowhere", tokenizer=tokenizer, download=False)

    import huggingface_hub

    calls = []

    def offline(**kw):
        calls.append(kw)
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(CoarError) as err:
        tinystories_examples(2, 16, root=tmp_path / "empty", tokenizer=tokenizer)
    msg = str(err.value)
    assert "no network" in msg and str(tmp_path / "empty" / TINYSTORIES_FILE) in msg and "download" in msg
    assert calls == [{"repo_id": "roneneldan/TinyStories", "filename": TINYSTORIES_FILE, "repo_type": "dataset",
                      "cache_dir": str(tmp_path / "empty")}]

    with pytest.raises(CoarError, match="story 2 .* 1 token"):
        tinystories_examples(None, 16, root=stories_dir, tokenizer=tokenizer, download=False)
    with pytest.raises(CoarError, match="asked for 99"):
        tinystories_examples(99, 16, root=stories_dir, tokenizer=tokenizer, download=False)
    with pytest.raises(CoarError, match="length >= 2"):
        tinystories_examples(2, 1, root=stories_dir, tokenizer=tokenizer, download=False)


# ------------------------------------------------------------------------------------------------- BoolQ

def test_boolq_prompt_is_the_harness_format():
    assert boolq_prompt("Fish swim.\nThey have fins.", "do fish fly") == \
        "Fish swim.\nThey have fins.\nQuestion: do fish fly?\nAnswer:"


def test_boolq_examples_inputs_and_target_encoding(boolq_dir, tokenizer):
    ex = boolq_examples(4, seed=2, root=boolq_dir, tokenizer=tokenizer, download=False)
    yes, no = tokenizer(" yes")["input_ids"][0], tokenizer(" no")["input_ids"][0]
    eos = tokenizer.eos_token_id
    idx = ex.meta["indices"]
    assert idx == sorted(idx) and len(set(idx)) == 4
    prompts = [tokenizer(boolq_prompt(BOOLQ[i]["passage"], BOOLQ[i]["question"]),
                         add_special_tokens=False)["input_ids"] for i in idx]
    assert ex.inputs.shape == ex.targets.shape == (4, max(len(p) for p in prompts))
    for row, (i, p) in enumerate(zip(idx, prompts)):
        assert tokenizer.decode(ex.inputs[row, :len(p)].tolist()) == \
            f"{BOOLQ[i]['passage']}\nQuestion: {BOOLQ[i]['question']}?\nAnswer:"
        assert ex.inputs[row, :len(p)].tolist() == p and (ex.inputs[row, len(p):] == eos).all()
        assert ex.targets[row, :3].tolist() == ([yes, no] if BOOLQ[i]["answer"] else [no, yes]) + [len(p) - 1]
        assert (ex.targets[row, 3:] == -1).all()
    assert ex.meta["answers"] == [BOOLQ[i]["answer"] for i in idx]
    assert {ex.meta[k] for k in ("dataset", "split", "tokenizer")} == {"boolq", "validation", tokenizer.name_or_path}
    assert (ex.meta["n"], ex.meta["seed"]) == (4, 2)
    again = boolq_examples(4, seed=2, root=boolq_dir / BOOLQ_FILE, tokenizer=tokenizer, download=False)
    assert again.fingerprint() == ex.fingerprint()


def test_boolq_max_length_keeps_the_end_of_the_prompt(boolq_dir, tokenizer):
    ex = boolq_examples(None, root=boolq_dir, tokenizer=tokenizer, max_length=12, download=False)
    assert ex.inputs.shape[1] == 12
    for row, rec in enumerate(BOOLQ):
        p = tokenizer(boolq_prompt(rec["passage"], rec["question"]), add_special_tokens=False)["input_ids"]
        assert ex.inputs[row].tolist() == p[-12:] and ex.targets[row, 2] == 11
        assert tokenizer.decode(ex.inputs[row].tolist()).endswith("?\nAnswer:")
    assert ex.meta["n_truncated"] == len(BOOLQ)


def test_answer_margin_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    targets = torch.full((3, 5), -1, dtype=torch.long)
    targets[:, :3] = torch.tensor([[2, 5, 4], [5, 2, 1], [0, 6, 0]])
    got = answer_margin(logits, targets)
    want = [logits[0, 4, 2] - logits[0, 4, 5], logits[1, 1, 5] - logits[1, 1, 2], logits[2, 0, 0] - logits[2, 0, 6]]
    assert got.shape == (3,) and torch.allclose(got, torch.stack(want))
    # only the named entries matter
    logits2 = logits.clone()
    logits2[0, :4] += 100.0
    logits2[0, 4, 3] = 1e6
    assert answer_margin(logits2, targets)[0] == got[0]
    with pytest.raises(ShapeError, match="answer_margin needs"):
        answer_margin(logits[:, 0], targets)
    with pytest.raises(ShapeError, match="answer_margin needs"):
        answer_margin(logits, targets[:, :2])
    bad = targets.clone()
    bad[1, 2] = 5
    with pytest.raises(ShapeError, match="position"):
        answer_margin(logits, bad)
    bad = targets.clone()
    bad[2, 1] = 7
    with pytest.raises(ShapeError, match="vocabulary"):
        answer_margin(logits, bad)


def test_answer_margin_on_boolq_with_a_causal_lm_ignores_padding(boolq_dir, tokenizer):
    from coar.paper.models import build_model

    torch.manual_seed(0)
    model = build_model("phi2_tiny")  # rotary positions: left padding would shift them
    ex = boolq_examples(None, root=boolq_dir, tokenizer=tokenizer, download=False)
    x, y = ex.tensors()
    with torch.no_grad():
        logits = model(x).logits
        batch = answer_margin(logits, y)
        for row in range(len(ex)):
            last = int(y[row, 2])
            alone = model(x[row:row + 1, :last + 1]).logits[0, -1]
            correct, other = int(y[row, 0]), int(y[row, 1])
            assert batch[row].item() == pytest.approx((alone[correct] - alone[other]).item(), abs=1e-4)
    # the two answers swap sign with the label
    swapped = y.clone()
    swapped[:, [0, 1]] = y[:, [1, 0]]
    assert torch.allclose(answer_margin(logits, swapped), -batch)


def test_read_boolq_rejects_a_truncated_last_line(boolq_dir, tokenizer):
    path = boolq_dir / BOOLQ_FILE
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:-25], encoding="utf-8")  # cut inside the last JSON object
    with pytest.raises(CoarError, match=rf"{BOOLQ_FILE}, line {len(BOOLQ)} \(the last line: is the file truncated"):
        read_boolq(path)
    with pytest.raises(CoarError, match="truncated"):
        boolq_examples(2, root=boolq_dir, tokenizer=tokenizer, download=False)


def test_read_boolq_validates_keys(tmp_path):
    bad = dict(BOOLQ[0], answer="yes")
    p = tmp_path / BOOLQ_FILE
    p.write_text(json.dumps(BOOLQ[1]) + "\n" + json.dumps(bad) + "\n" + json.dumps(BOOLQ[2]) + "\n")
    with pytest.raises(CoarError, match=r"line 2: key 'answer' missing or not of type bool"):
        read_boolq(p)
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(BOOLQ[0]) + "\n\n" + json.dumps(BOOLQ[1]))  # a blank line, no final newline
    assert read_boolq(ok) == BOOLQ[:2]


def test_boolq_missing_file_message(tmp_path, tokenizer):
    with pytest.raises(CoarError) as err:
        boolq_examples(2, root=tmp_path / "nowhere", tokenizer=tokenizer, download=False)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / BOOLQ_FILE) in msg and hf_text.BOOLQ_URL in msg and "put it there" in msg


class _Response:
    def __init__(self, payload: bytes, length: int | None = None, fail_after: int | None = None):
        self.buf = io.BytesIO(payload)
        self.headers = {"Content-Length": str(length)} if length is not None else {}
        self.fail_after = fail_after

    def read(self, n):
        if self.fail_after is not None and self.buf.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset")
        return self.buf.read(min(n, 7))  # small chunks, so a failure can hit mid-stream

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _serve(monkeypatch, response):
    seen = []

    def urlopen(url, timeout=None):
        seen.append(url)
        return response

    monkeypatch.setattr(hf_text.urllib.request, "urlopen", urlopen)
    return seen


@pytest.mark.parametrize("case", ["truncated", "short_content_length", "reset", "wrong_count"])
def test_boolq_download_never_leaves_a_partial_file(tmp_path, tokenizer, monkeypatch, case):
    payload = "".join(json.dumps(r) + "\n" for r in BOOLQ).encode()
    monkeypatch.setattr(hf_text, "BOOLQ_DEV_SIZE", len(BOOLQ) + (case == "wrong_count"))
    resp = {"truncated": _Response(payload[:-30]),
            "short_content_length": _Response(payload[:-30], length=len(payload)),
            "reset": _Response(payload, length=len(payload), fail_after=50),
            "wrong_count": _Response(payload, length=len(payload))}[case]
    _serve(monkeypatch, resp)
    root = tmp_path / "boolq"
    with pytest.raises(CoarError) as err:
        boolq_examples(2, root=root, tokenizer=tokenizer)
    msg = str(err.value)
    assert hf_text.BOOLQ_URL in msg or "truncated" in msg
    assert {"truncated": "truncated", "short_content_length": "incomplete", "reset": "connection reset",
            "wrong_count": "the release has"}[case] in msg
    assert sorted(p.name for p in root.iterdir()) == []  # neither dev.jsonl nor dev.jsonl.part


def test_boolq_download_moves_a_complete_file_into_place(tmp_path, tokenizer, monkeypatch):
    payload = "".join(json.dumps(r) + "\n" for r in BOOLQ).encode()
    monkeypatch.setattr(hf_text, "BOOLQ_DEV_SIZE", len(BOOLQ))
    seen = _serve(monkeypatch, _Response(payload, length=len(payload)))
    root = tmp_path / "boolq"
    ex = boolq_examples(3, root=root, tokenizer=tokenizer)
    assert seen == [hf_text.BOOLQ_URL] and sorted(p.name for p in root.iterdir()) == [BOOLQ_FILE, BOOLQ_FILE + ".sha256"]
    assert (root / BOOLQ_FILE).read_bytes() == payload and ex.meta["n_records"] == len(BOOLQ)
    # a second call reads the file and does not download again
    boolq_examples(3, root=root, tokenizer=tokenizer)
    assert seen == [hf_text.BOOLQ_URL]
    # a file changed since (same record count: only its recorded SHA-256 can tell) is reported, never used
    (root / BOOLQ_FILE).write_bytes(payload.replace(b'"answer": true', b'"answer": false', 1))
    with pytest.raises(CoarError, match=f"{BOOLQ_FILE} is corrupted or was modified.*download .* again"):
        boolq_examples(3, root=root, tokenizer=tokenizer)
    assert seen == [hf_text.BOOLQ_URL]


def test_tinystories_placed_file_is_checked_against_its_first_use(clean_dir, tokenizer):
    """A file placed by hand is trusted once (its SHA-256 recorded beside it); changed later, it is refused."""
    first = tinystories_examples(2, 16, root=clean_dir, tokenizer=tokenizer)
    record = clean_dir / f"{TINYSTORIES_FILE}.sha256"
    assert record.is_file()
    assert tinystories_examples(2, 16, root=clean_dir, tokenizer=tokenizer).fingerprint() == first.fingerprint()
    path = clean_dir / TINYSTORIES_FILE
    path.write_text(path.read_text(encoding="utf-8").replace("a", "b"), encoding="utf-8")
    with pytest.raises(CoarError, match=rf"{TINYSTORIES_FILE} is corrupted or was modified.*fresh copy"):
        tinystories_examples(2, 16, root=clean_dir, tokenizer=tokenizer)


@pytest.mark.parametrize("lfs", [True, False])
def test_tinystories_hub_cache_blob_is_checked_against_its_name(tmp_path, lfs):
    """The Hugging Face cache names each blob by its content hash (SHA-256 for LFS files, git's blob SHA-1
    otherwise); a cached file whose content no longer matches is reported, never read."""
    import hashlib
    import os

    data = "\n<|endoftext|>\n".join(CLEAN).encode()
    name = (hashlib.sha256(data) if lfs else hashlib.sha1(f"blob {len(data)}\0".encode() + data)).hexdigest()
    repo = tmp_path / "datasets--roneneldan--TinyStories"
    blob = repo / "blobs" / name
    snap = repo / "snapshots" / "0123abcd" / TINYSTORIES_FILE
    blob.parent.mkdir(parents=True)
    snap.parent.mkdir(parents=True)
    blob.write_bytes(data)
    os.symlink(os.path.relpath(blob, snap.parent), snap)
    assert hf_text.verify_hub_blob(snap) == snap
    blob.write_bytes(data[:-5])
    with pytest.raises(CoarError, match=rf"corrupted in the Hugging Face cache.*Delete {blob}"):
        hf_text.verify_hub_blob(snap)
    plain = tmp_path / "plain.txt"  # not a cache entry: nothing to compare with
    plain.write_bytes(data)
    assert hf_text.verify_hub_blob(plain) == plain
