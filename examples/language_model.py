"""COAR on a Hugging Face causal language model, over a few sentences (paper Sec. 4, GPT-2).

    python examples/language_model.py [--model gpt2] [--masks 2000] [--alpha 0.025] [--sentences FILE]
    python examples/language_model.py --tiny      # offline: a 2-layer GPT-2 with random weights

The output of a sentence is the mean over its positions of the next-token margin ("token_margin"); the
components are the weight rows of every attention and MLP projection (the "gpt2" table: for GPT-2's Conv1D the
rows are input dimensions). --model loads any GPT-2 checkpoint from the hub or a local directory; --tiny builds
a small random GPT-2 and a byte-level tokenizer (every byte is one token) that need no download.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import transformers

import coar

SENTENCES = ["Once upon a time, there was a little cat named Tom.",
             "Tom liked to play in the garden with his red ball.",
             "One day, the ball rolled into the pond and Tom was sad.",
             "His friend the duck swam out and brought the ball back.",
             "From that day on, Tom and the duck were best friends."]


def byte_tokenizer(directory: Path) -> transformers.PreTrainedTokenizerBase:
    """GPT-2's byte-level tokenizer without merges: 256 byte tokens and <|endoftext|> (vocabulary 257)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    shifted = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(shifted)}
    vocab = {chars[b]: i for i, b in enumerate(printable + shifted)}
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return transformers.GPT2TokenizerFast.from_pretrained(str(directory))


def load(args) -> tuple[torch.nn.Module, transformers.PreTrainedTokenizerBase]:
    if not args.tiny:
        return (transformers.AutoModelForCausalLM.from_pretrained(args.model),
                transformers.AutoTokenizer.from_pretrained(args.model))
    with tempfile.TemporaryDirectory() as d:
        tok = byte_tokenizer(Path(d))
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return transformers.GPT2LMHeadModel(config), tok


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gpt2", help="hub id or local directory of a GPT-2 checkpoint")
    p.add_argument("--tiny", action="store_true", help="a random 2-layer GPT-2 and a byte tokenizer (offline)")
    p.add_argument("--sentences", help="text file, one sentence a line (default: five short sentences)")
    p.add_argument("--masks", type=int, default=2000)
    p.add_argument("--alpha", type=float, default=0.025)
    p.add_argument("--test-masks", type=int, default=200)
    p.add_argument("--store", help="directory for resumable mask shards (default: in memory)")
    a = p.parse_args(argv)

    model, tok = load(a)
    model.eval()  # dropout off: outputs must be a function of the ablated components only
    lines = Path(a.sentences).read_text().splitlines() if a.sentences else SENTENCES
    lines = [s for s in lines if s.strip()]
    ids = [tok(s)["input_ids"] for s in lines]
    width = max(map(len, ids))
    pad = tok.eos_token_id
    inputs = torch.tensor([t + [pad] * (width - len(t)) for t in ids])
    labels = torch.tensor([t + [-1] * (width - len(t)) for t in ids])  # padding is not scored

    attr = coar.attribute(model, inputs, labels, components="gpt2", output="token_margin", masks=a.masks,
                          alpha=a.alpha, store=a.store)
    table = coar.evaluate(attr, model, inputs, labels, components="gpt2", masks=a.test_masks, alpha=a.alpha)
    mean = float(table["correlation"].fillna(0).mean())
    print(f"{len(lines)} sentences, {attr.n_components} components: mean correlation {mean:.3f} on "
          f"{a.test_masks} fresh masks (alpha {a.alpha})")
    labels_of = coar.component_set(model, "gpt2").labels()
    for i, s in enumerate(lines[:3]):
        top = abs(attr.weights[i]).argsort()[::-1][:3]
        print(f"{s[:40]!r}: " + ", ".join(f"{labels_of[j]} {attr.weights[i, j]:+.3f}" for j in top))
    return mean


if __name__ == "__main__":
    main()
