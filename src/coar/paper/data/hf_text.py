"""The paper's two language-model evaluation sets (App. B), from their original releases.

TinyStories (Eldan & Li 2023; paper App. B.1, Fig. 8): short synthetic stories written by GPT-3.5/GPT-4.
The real data is the file `TinyStoriesV2-GPT4-valid.txt` of the Hugging Face dataset repository
`roneneldan/TinyStories` (the validation split; stories separated by the line `<|endoftext|>`). It is
fetched with `huggingface_hub.hf_hub_download`, which checks the size/hash of what it downloads, or read
from a local copy. The paper attributes GPT-2 (64,512 components) on 1,000 random validation stories; the
model output is the mean next-token correct-class margin over the story (`coar.outputs.token_margin`).

BoolQ (Clark et al. 2019; paper App. B.2, Fig. 9): yes/no questions about a Wikipedia passage. The real data
is the original release's validation file `https://storage.googleapis.com/boolq/dev.jsonl` (3,270 JSON
lines with keys question, title, answer (bool), passage), downloaded to a temporary file and moved into
place only once complete and valid, or read from a local copy. The paper evaluates Phi-2 zero-shot with
the prompt of EleutherAI's lm-evaluation-harness on 500 random validation examples; the model output is
the correct-class margin between the two answers (`coar.outputs.answer_margin`).

Neither set ships with the operating system: without network access put the files in `root` yourself
(the error messages say where). The offline stand-in for TinyStories is `coar.paper.data.text`.
"""
from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import numpy as np

from ...errors import CoarError
from ...io import sha256_file
from ...examples import Examples

TINYSTORIES_REPO = "roneneldan/TinyStories"
TINYSTORIES_FILE = "TinyStoriesV2-GPT4-valid.txt"
STORY_SEPARATOR = "<|endoftext|>"

BOOLQ_URL = "https://storage.googleapis.com/boolq/dev.jsonl"
BOOLQ_FILE = "dev.jsonl"
BOOLQ_DEV_SIZE = 3270  # examples in the original validation release
BOOLQ_DEFAULT_ROOT = Path("data/raw/boolq")
BOOLQ_KEYS = {"question": str, "title": str, "answer": bool, "passage": str}
ANSWERS = (" yes", " no")  # lm-evaluation-harness: choices ["no", "yes"] after the target delimiter " "

GPT2_TOKENIZER = "gpt2"
PHI2_TOKENIZER = "microsoft/phi-2"


# ----------------------------------------------------------------------------------------------- helpers

def _load_tokenizer(name: str, fast_gpt2: bool):
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise CoarError("the TinyStories/BoolQ examples need the [text] extra: pip install 'coar[text]'") from exc
    try:
        if fast_gpt2:
            return transformers.GPT2TokenizerFast.from_pretrained(name)
        return transformers.AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise CoarError(f"could not load the {name!r} tokenizer from the Hugging Face hub ({exc}); when offline, "
                        "pass a tokenizer object loaded from a local copy (tokenizer=...)") from exc


def _tokenizer_name(tokenizer) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def _pad_id(tokenizer) -> int:
    pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if pad is None:
        raise CoarError(f"tokenizer {_tokenizer_name(tokenizer)} has neither an EOS nor a pad token to pad with")
    return int(pad)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids without special tokens (the harness's tok_encode for causal LMs adds none)."""
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _choose(total: int, n: int | None, seed: int, what: str) -> np.ndarray:
    """Sorted indices of a seeded random subset of size n (all if n is None)."""
    if n is None:
        return np.arange(total)
    if not 0 < n <= total:
        raise CoarError(f"asked for {n} {what}, the file has {total}")
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


# -------------------------------------------------------------------------------------------- TinyStories

def parse_tinystories(text: str) -> list[str]:
    """Stories of a TinyStories text file: split at `<|endoftext|>`, each stripped, empty ones dropped
    (the release puts the separator on a line of its own; inner newlines of a story are kept)."""
    return [s.strip() for s in text.split(STORY_SEPARATOR) if s.strip()]


def find_tinystories(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of TinyStoriesV2-GPT4-valid.txt: `root` itself if it is that file, `root/<file>`, a copy already in
    the Hugging Face cache (cache_dir=root), else downloaded from the hub into that cache."""
    from .images import check_recorded

    if root is not None:  # a file placed by hand: checked against the hash recorded at its first use
        r = Path(root)
        for placed in (r, r / TINYSTORIES_FILE):
            if placed.is_file():
                return check_recorded(placed, f"put a fresh copy of {TINYSTORIES_FILE} there")
    import huggingface_hub

    cache_dir = str(root) if root is not None else None
    cached = huggingface_hub.try_to_load_from_cache(TINYSTORIES_REPO, TINYSTORIES_FILE, cache_dir=cache_dir,
                                                    repo_type="dataset")
    if isinstance(cached, str) and Path(cached).is_file():
        return verify_hub_blob(Path(cached))
    where = f"{root}/{TINYSTORIES_FILE}" if root is not None else f"<root>/{TINYSTORIES_FILE} (pass root=...)"
    manual = (f"download https://huggingface.co/datasets/{TINYSTORIES_REPO}/resolve/main/{TINYSTORIES_FILE} "
              f"on a machine with network access and put it at {where}")
    if not download:
        raise CoarError(f"TinyStories validation file {TINYSTORIES_FILE} not found in {root} (download disabled); "
                        + manual)
    try:
        path = huggingface_hub.hf_hub_download(repo_id=TINYSTORIES_REPO, filename=TINYSTORIES_FILE,
                                               repo_type="dataset", cache_dir=cache_dir)
    except Exception as exc:
        raise CoarError(f"could not download {TINYSTORIES_FILE} from the Hugging Face dataset {TINYSTORIES_REPO} "
                        f"({type(exc).__name__}: {exc}); {manual}") from exc
    return verify_hub_blob(Path(path))


def verify_hub_blob(path: Path) -> Path:
    """A file of the Hugging Face cache checked against the name of the blob it links to: the SHA-256 of the
    content for LFS files, the git blob SHA-1 otherwise. A corrupted cached file is reported, never used."""
    import hashlib

    blob = path.resolve()
    name = blob.name
    if not _is_blob(blob):
        return path  # not a content-addressed cache entry: nothing to check against
    digest = hashlib.sha256() if len(name) == 64 else hashlib.sha1(f"blob {blob.stat().st_size}\0".encode())
    with open(blob, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != name:
        raise CoarError(f"{path} is corrupted in the Hugging Face cache: its content hashes to {digest.hexdigest()}, "
                        f"not to its blob name {name}. Delete {blob} and run again to download it")
    return path


def _is_blob(blob: Path) -> bool:
    name = blob.name
    return blob.parent.name == "blobs" and len(name) in (40, 64) and all(c in "0123456789abcdef" for c in name)


def hub_blob_sha256(path: Path) -> str:
    """The SHA-256 of a Hugging Face cache file, checked against its blob name (verify_hub_blob) and read once: an
    LFS blob is named by the SHA-256 of its content, so the check's digest is the answer; other files (git blobs,
    named by SHA-1) are hashed again with SHA-256."""
    verify_hub_blob(path)
    blob = path.resolve()
    return blob.name if _is_blob(blob) and len(blob.name) == 64 else sha256_file(path)


def load_tinystories(root: str | os.PathLike | None = None, download: bool = True) -> tuple[list[str], Path]:
    """(stories in file order, the file they came from)."""
    path = find_tinystories(root, download)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CoarError(f"TinyStories file {path} is unreadable or not UTF-8 text: {exc}") from exc
    stories = parse_tinystories(text)
    if not stories:
        raise CoarError(f"TinyStories file {path} contains no stories (expected text separated by "
                        f"lines '{STORY_SEPARATOR}')")
    return stories, path


def tinystories_examples(n: int | None = 1000, length: int = 256, seed: int = 0, root=None, tokenizer=None,
                         download: bool = True) -> Examples:
    """n validation stories chosen by a seeded permutation (sorted indices, as the other example sets),
    tokenised with GPT-2's tokenizer (no special tokens added), truncated to their first `length` tokens and
    right-padded with the EOS id to exactly `length` columns.

    inputs  int64 [n, length]: token ids, EOS after the end of a shorter story.
    targets int64 [n, length]: the same ids with every padding column set to -1. token_margin scores
            logits[:, t] against targets[:, t+1] and ignores negative labels, so the output is the mean
            next-token correct-class margin over exactly the story's real next tokens t+1 = 1 .. L-1
            (L = real length; the first token has no prediction, and the story's end is not scored as a
            token). This is the paper's per-story output (App. B.1: "the average correct-class margin over
            all tokens in a given sequence"); the paper does not state a maximum length.
    Right padding is exact for a causal LM run without an attention mask: padding only follows the real
    tokens, so it cannot change their logits.
    """
    if length < 2:
        raise CoarError(f"TinyStories examples need length >= 2 (one scored next token), got {length}")
    stories, path = load_tinystories(root, download)
    idx = _choose(len(stories), n, seed, "TinyStories stories")
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(GPT2_TOKENIZER, fast_gpt2=True)
    pad = _pad_id(tokenizer)
    ids = _encode(tokenizer, [stories[i] for i in idx])
    inputs = np.full((len(idx), length), pad, dtype=np.int64)
    targets = np.full((len(idx), length), -1, dtype=np.int64)
    real = []
    for row, (i, seq) in enumerate(zip(idx, ids)):
        seq = seq[:length]
        if len(seq) < 2:
            raise CoarError(f"TinyStories story {int(i)} of {path} has {len(seq)} token(s): no next token to score")
        inputs[row, :len(seq)] = seq
        targets[row, :len(seq)] = seq
        real.append(len(seq))
    return Examples(inputs, targets, "tokens",
                    {"dataset": "tinystories", "split": "validation", "file": TINYSTORIES_FILE, "source": str(path),
                     "n": len(idx), "seed": seed, "length": length, "tokenizer": _tokenizer_name(tokenizer),
                     "pad_id": pad, "indices": idx.tolist(), "n_stories": len(stories), "real_lengths": real,
                     "n_truncated": int(sum(len(s) > length for s in ids)), "output": "token_margin"})


# ------------------------------------------------------------------------------------------------- BoolQ

def boolq_prompt(passage: str, question: str) -> str:
    """The lm-evaluation-harness BoolQ prompt: passage, newline, 'Question: <question>?', newline, 'Answer:'."""
    return f"{passage}\nQuestion: {question}?\nAnswer:"


def read_boolq(path: str | os.PathLike) -> list[dict]:
    """Validated records of a BoolQ jsonl file. Every non-empty line must be a JSON object with str question,
    title, passage and bool answer; a line that is not (typically a truncated last line) raises CoarError
    naming the file and line, so a partial file is never used."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise CoarError(f"BoolQ file {path} is unreadable or not UTF-8 text: {exc}") from exc
    last = max((k for k, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"BoolQ file {path}, line {k + 1}" + (" (the last line: is the file truncated?)" if k == last else "")
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CoarError(f"{where} is not valid JSON ({exc}); delete the file and download it again from "
                            f"{BOOLQ_URL}") from exc
        if not isinstance(rec, dict):
            raise CoarError(f"{where} is not a JSON object")
        for key, typ in BOOLQ_KEYS.items():
            if not isinstance(rec.get(key), typ):
                raise CoarError(f"{where}: key {key!r} missing or not of type {typ.__name__}")
        records.append(rec)
    if not records:
        raise CoarError(f"BoolQ file {path} contains no examples")
    return records


def _download_boolq(target: Path, url: str, expected: int | None, sha256: str | None = None) -> None:
    """Stream `url` into a temporary sibling of `target`, validate it (complete lines, `expected` records,
    Content-Length if sent, `sha256` when given) and only then move it to `target`; on any failure the temporary
    file is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    manual = (f"download {url} on a machine with network access and put it at {target} "
              f"(or pass root= a directory containing {BOOLQ_FILE})")
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
                size = resp.headers.get("Content-Length") if getattr(resp, "headers", None) is not None else None
                got = 0
                while chunk := resp.read(1 << 20):
                    fh.write(chunk)
                    got += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except Exception as exc:
            raise CoarError(f"could not download BoolQ from {url} ({type(exc).__name__}: {exc}); {manual}") from exc
        if size is not None and int(size) != got:
            raise CoarError(f"BoolQ download {tmp} is incomplete: {got} of {size} bytes; {manual}")
        if sha256 is not None:

            found = sha256_file(tmp)
            if found != sha256:
                raise CoarError(f"BoolQ download from {url} failed verification: expected SHA-256 {sha256} (the "
                                f"mirror's SHA256SUMS), found {found}; {manual}")
        records = read_boolq(tmp)
        if expected is not None and len(records) != expected:
            source = "the release has" if url == BOOLQ_URL else "its mirror says it has"
            raise CoarError(f"BoolQ download {tmp} has {len(records)} examples, {source} {expected}; {manual}")
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def mirror_count(url: str) -> int:
    """The number of records a mirror of BoolQ says its copy at `url` has: the integer in `<url>.count`. A mirror
    (a local or test copy, see coar.paper.data.mirror) need not hold the release's 3,270 records, so its download is
    checked against the count the mirror publishes beside the file instead."""
    count_url = url + ".count"
    try:
        with urllib.request.urlopen(count_url, timeout=60) as resp:
            text = resp.read().decode("utf-8").strip()
        return int(text)
    except Exception as exc:
        raise CoarError(f"BoolQ mirror: could not read the number of records of {url} from {count_url} "
                        f"({type(exc).__name__}: {exc}); a mirror publishes it there as one integer") from exc


def find_boolq(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of BoolQ's dev.jsonl: `root` itself if it is a file, else `root/dev.jsonl` (root defaults to
    data/raw/boolq), downloaded there from the original release (or from the mirror that COAR_DATA_MIRROR
    names, checked against the record count it publishes: mirror_count) when missing and download is allowed."""
    from .images import check_recorded

    r = Path(root) if root is not None else BOOLQ_DEFAULT_ROOT
    refetch = f"download {BOOLQ_URL} again"
    # no checksum is published with the release: the file's SHA-256 is recorded at its first use (after a
    # download, once its records are counted) and checked on every later one
    if r.is_file():
        return check_recorded(r, refetch)
    target = r / BOOLQ_FILE
    if target.is_file():
        return check_recorded(target, refetch)
    if not download:
        raise CoarError(f"BoolQ validation file not found at {target} (download disabled); download {BOOLQ_URL} "
                        f"on a machine with network access and put it there, or pass root= a directory "
                        f"containing {BOOLQ_FILE}")
    from .mirror import mirror_sha256, mirrored

    url = mirrored(BOOLQ_URL)  # the release, or the same file name under COAR_DATA_MIRROR
    # a mirror's SHA256SUMS, when it lists dev.jsonl, is checked too
    _download_boolq(target, url, BOOLQ_DEV_SIZE if url == BOOLQ_URL else mirror_count(url), mirror_sha256(BOOLQ_URL))
    return check_recorded(target, refetch)


def _answer_ids(tokenizer) -> tuple[int, int]:
    ids = _encode(tokenizer, list(ANSWERS))
    for ans, seq in zip(ANSWERS, ids):
        if len(seq) != 1:
            raise CoarError(f"tokenizer {_tokenizer_name(tokenizer)} splits the answer {ans!r} into {len(seq)} "
                            "tokens; answer_margin needs single-token answers")
    return ids[0][0], ids[1][0]


def boolq_examples(n: int | None = 500, seed: int = 0, root=None, tokenizer=None, max_length: int | None = None,
                   download: bool = True) -> Examples:
    """n BoolQ validation examples chosen by a seeded permutation (sorted indices), as zero-shot prompts for
    Phi-2 (tokenizer `microsoft/phi-2` unless one is passed; no special tokens added).

    inputs  int64 [n, T]: the prompt's token ids RIGHT-padded with the EOS id; T = the longest chosen prompt
            (at least 3). A prompt longer than max_length keeps its last max_length tokens (the harness
            truncates from the left, so the question and "Answer:" survive).
            Right padding is chosen over left padding because the model is run on input ids alone (no
            attention mask, no position ids): for a causal LM the logits at the last prompt token then see
            exactly the prompt at its true positions, whereas left padding would put EOS tokens in the
            attended context and shift the (rotary) positions.
    targets int64 [n, T], all -1 except
            targets[:, 0] = id of the correct answer token (" yes" if answer is true, else " no"),
            targets[:, 1] = id of the other answer token,
            targets[:, 2] = index of the last prompt token (real length - 1), whose logits predict the answer.
    The output function is `answer_margin`.
    """
    records_path = find_boolq(root, download)
    records = read_boolq(records_path)
    idx = _choose(len(records), n, seed, "BoolQ examples")
    tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(PHI2_TOKENIZER, fast_gpt2=False)
    pad = _pad_id(tokenizer)
    yes_id, no_id = _answer_ids(tokenizer)
    chosen = [records[i] for i in idx]
    ids = _encode(tokenizer, [boolq_prompt(r["passage"], r["question"]) for r in chosen])
    if max_length is not None:
        if max_length < 1:
            raise CoarError(f"BoolQ max_length must be positive, got {max_length}")
        n_truncated = sum(len(s) > max_length for s in ids)
        ids = [s[-max_length:] for s in ids]
    else:
        n_truncated = 0
    width = max(3, max(len(s) for s in ids))
    inputs = np.full((len(idx), width), pad, dtype=np.int64)
    targets = np.full((len(idx), width), -1, dtype=np.int64)
    for row, (rec, seq) in enumerate(zip(chosen, ids)):
        inputs[row, :len(seq)] = seq
        targets[row, 0], targets[row, 1] = (yes_id, no_id) if rec["answer"] else (no_id, yes_id)
        targets[row, 2] = len(seq) - 1
    return Examples(inputs, targets, "tokens",
                    {"dataset": "boolq", "split": "validation", "file": BOOLQ_FILE, "source": str(records_path),
                     "n": len(idx), "seed": seed, "max_length": max_length, "tokenizer": _tokenizer_name(tokenizer),
                     "pad_id": pad, "indices": idx.tolist(), "n_records": len(records),
                     "answers": [bool(r["answer"]) for r in chosen], "answer_ids": {"yes": yes_id, "no": no_id},
                     "prompt": "{passage}\\nQuestion: {question}?\\nAnswer:", "n_truncated": int(n_truncated),
                     "padding": "right", "output": "answer_margin"})


__all__ = ["parse_tinystories", "find_tinystories", "load_tinystories", "tinystories_examples", "boolq_prompt",
           "read_boolq", "find_boolq", "boolq_examples", "TINYSTORIES_REPO", "TINYSTORIES_FILE",
           "BOOLQ_URL", "BOOLQ_FILE", "BOOLQ_DEV_SIZE"]
