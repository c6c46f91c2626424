"""Text that ships with the operating system, as byte tokens: the offline stand-in for TinyStories (paper
App. B, Fig. 8).

The corpus is every distinct file of `/usr/share/common-licenses` (Debian's base-files: GPL, Apache, MPL,
... about 200 KB of English prose), or the directory in COAR_TEXT_ROOT. Files are deduplicated by content
(several names are symlinks to one text) and read in name order. Tokens are bytes (vocabulary 256), so no
tokenizer has to be downloaded. The last `HELD_OUT` fraction of every document is held out: evaluation
examples are non-overlapping windows from it, and training sees only the rest.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ...errors import CoarError
from ...examples import Examples

DEFAULT_ROOT = Path("/usr/share/common-licenses")
HELD_OUT = 0.1
VOCAB = 256


def text_root(root=None) -> Path:
    return Path(root or os.environ.get("COAR_TEXT_ROOT") or DEFAULT_ROOT)


def load_corpus(root=None) -> tuple[np.ndarray, np.ndarray]:
    """(train bytes, held-out bytes) as uint8 streams; documents are separated by a 0 byte."""
    root = text_root(root)
    files = sorted(p for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    seen, train, held = set(), [], []
    for p in files:
        data = p.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen or len(data) < 1000:
            continue
        seen.add(digest)
        cut = int(len(data) * (1 - HELD_OUT))
        train.append(data[:cut] + b"\0")
        held.append(data[cut:] + b"\0")
    if not train:
        raise CoarError(f"no text corpus found in {root} (expected Debian's /usr/share/common-licenses, from the "
                        "base-files package); point COAR_TEXT_ROOT or the config's `data_root` at a directory of "
                        "plain-text files")
    as_array = lambda parts: np.frombuffer(b"".join(parts), dtype=np.uint8)  # noqa: E731
    return as_array(train), as_array(held)


def text_examples(split: str, n: int | None, length: int = 64, seed: int = 0, root=None) -> Examples:
    """n non-overlapping windows of `length` bytes from the held-out text ("test"/"val") or the training
    text ("train"), chosen by a seeded permutation. inputs = targets = the tokens (int64 [n, length]): the
    LM output (token_margin) scores every next-token prediction inside the window."""
    train, held = load_corpus(root)
    stream = train if split == "train" else held
    windows = len(stream) // length
    if n is not None and n > windows:
        raise CoarError(f"asked for {n} text windows of {length} bytes, the {split} text has {windows}")
    idx = np.arange(windows) if n is None else np.sort(np.random.default_rng(seed).permutation(windows)[:n])
    tokens = np.stack([stream[i * length:(i + 1) * length] for i in idx]).astype(np.int64)
    return Examples(tokens, tokens.copy(), "tokens",
                    {"dataset": "os-text", "split": split, "n": len(idx), "seed": seed, "length": length,
                     "root": str(text_root(root)), "vocab": VOCAB})
