"""Training small classifiers with the data kept on the device and augmentation done by tensor ops
(random translation via padded crops, horizontal flips), deterministic from a seed; checkpoints carry the
architecture, its arguments and metadata (accuracy, data fingerprint, settings) so they rebuild offline.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import CoarError, StoreError



def check_lr(lr) -> float:
    """Refuse a learning rate that is not a finite number > 0."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise CoarError(f"learning rate must be a finite number > 0, got {lr!r}") from None
    if isinstance(lr, bool) or not math.isfinite(value) or value <= 0:
        raise CoarError(f"learning rate must be a finite number > 0, got {lr!r}")
    return value


def one_cycle(opt: torch.optim.Optimizer, lr: float, steps: int, pct_start: float):
    """Linear one-cycle schedule over `steps` optimizer steps, for any number of steps. torch's OneCycleLR
    divides by the warm-up's length in steps minus one, so a warm-up of exactly one step (4 steps at
    pct_start 0.25, 10 at 0.1) raises ZeroDivisionError; such a warm-up is lengthened to two steps."""
    if steps < 1:
        raise CoarError(f"training needs at least one optimizer step, got {steps}")
    if float(pct_start * steps) - 1 == 0 and steps > 2:
        pct_start = 2 / steps
    elif float(pct_start * steps) - 1 == 0:  # 1 step at pct_start 1, or 2 at 0.5: no warm-up phase
        pct_start = 0.5 / steps
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=pct_start,
                                               anneal_strategy="linear")

def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Random translation by up to `pad` pixels (zero padding) and horizontal flips, batched."""
    n, _, h, w = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad))
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device)[None])  # [n, h]
        cols = (dx[:, None] + torch.arange(w, device=x.device)[None])  # [n, w]
        x = xp[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[None, :, None, None],
               rows[:, None, :, None], cols[:, None, None, :]]
    if flip:
        f = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(f[:, None, None, None], x.flip(-1), x)
    return x


def _inputs(x: torch.Tensor, norm: tuple | None) -> torch.Tensor:
    """A batch as the model takes it: uint8 images standardised with norm = (mean, std), else as given."""
    if norm is None:
        if x.dtype == torch.uint8:
            raise CoarError("uint8 images need norm=(mean, std) to be standardised per batch")
        return x
    if x.dtype != torch.uint8:
        raise CoarError(f"norm=(mean, std) is for uint8 images, got {x.dtype} (already normalised?)")
    from ..examples import normalize

    return normalize(x, *norm)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000,
             norm: tuple | None = None) -> float:
    """Top-1 accuracy; x normalised, or uint8 with norm = (mean, std) (standardised per batch)."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += (model(_inputs(x[i: i + batch_size], norm)).argmax(-1) == y[i: i + batch_size]).sum().item()
    return correct / max(len(x), 1)


def training_precision(device: torch.device | str, precision: str | None = None) -> str:
    """The compute precision training uses: `precision` when given (float32 or bfloat16), else bfloat16 on a
    GPU that supports it and float32 elsewhere."""
    if precision not in (None, "float32", "bfloat16"):
        raise CoarError(f"training precision must be float32, bfloat16 or null (automatic), got {precision!r}")
    if precision is not None:
        return precision
    device = torch.device(device)
    return "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"


@torch.no_grad()
def training_memory_format(model: nn.Module, example: torch.Tensor) -> str:
    """channels_last for a convnet on image batches (the sampling engine's rule, coar.engine: convolutions carry
    at least half of the forward FLOPs), else contiguous. Counted in eval mode, so BatchNorm statistics stay."""
    from ..engine import CONV_SHARE, conv_flop_share

    if example.dim() != 4 or not example.is_floating_point():
        return "contiguous"
    was_training = model.training
    model.eval()
    try:
        share = conv_flop_share(model, example[:1])
    finally:
        model.train(was_training)
    return "channels_last" if share >= CONV_SHARE else "contiguous"


@torch.no_grad()
def check_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: tuple | None = None) -> None:
    """One forward pass on the first input, in eval mode (no state changes, no random numbers drawn): refuse a
    model that cannot take these inputs or does not return one logit per class for every label, before any
    training."""
    was_training = model.training
    model.eval()
    try:
        logits = model(_inputs(x[:1], norm))
    except Exception as exc:  # noqa: BLE001 - a language model given images, a wrong size or channel count
        raise CoarError(f"{type(model).__name__} cannot take the training inputs {tuple(x.shape[1:])} "
                        f"({x.dtype}): {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != 1:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise CoarError(f"{type(model).__name__} is not a classifier: it returns {got} for one input, not "
                        "[1, classes] logits")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= logits.shape[1]:
        raise CoarError(f"the training labels range over {lo}..{hi}, {type(model).__name__} has {logits.shape[1]} "
                        "classes")


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 2, batch_size: int = 128,
                     lr: float = 0.1, weight_decay: float = 5e-4, label_smoothing: float = 0.1, seed: int = 0,
                     augment_pad: int = 2, flip: bool = True, progress: bool = True,
                     precision: str | None = None, norm: tuple | None = None, memory_format: str = "contiguous") -> dict:
    """SGD (Nesterov) with a one-cycle linear schedule. x: normalised float [N, C, H, W] on the model's device,
    or uint8 with norm = (mean, std): the set then stays uint8 on the device (a quarter of the memory: all of
    CelebA's training images at 224 px take 24.5 GB, not 98) and each batch is standardised before it is
    augmented, which gives the same numbers as normalising the whole set first.
    precision: see training_precision; bfloat16 runs the forward pass and loss under autocast (weights,
    gradients and optimizer state stay float32, so no loss scaling is needed). memory_format: "contiguous" (the
    default), "channels_last" or "auto" (training_memory_format: channels_last for convnets, 1.2-1.8x faster on a
    2-core CPU, docs/benchmarks.md); the model is returned in the contiguous format either way. Other kernels
    train other weights: a preset's published numbers hold for the format it was trained in."""
    if len(x) != len(y) or len(x) == 0:
        raise CoarError(f"training data: {len(x)} inputs and {len(y)} labels")
    check_lr(lr)
    check_classifier(model, x, y, norm)
    precision = training_precision(x.device, precision)
    if memory_format not in ("auto", "channels_last", "contiguous"):
        raise CoarError(f"training memory format must be auto, channels_last or contiguous, got {memory_format!r}")
    if memory_format == "auto":
        memory_format = training_memory_format(model, _inputs(x[:1], norm))
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    model.to(memory_format=fmt)  # before the optimizer holds the parameters (their .data is replaced)
    autocast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bfloat16"
                else contextlib.nullcontext())
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = one_cycle(opt, lr, steps, 0.25)
    start = time.time()
    losses = []
    bar = tqdm(total=steps, desc="train", disable=not progress, leave=False)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = perm[i: i + batch_size]
            xb = _inputs(x[idx], norm)
            xb = augment(xb, g, augment_pad, flip) if (augment_pad or flip) else xb
            if memory_format == "channels_last":
                xb = xb.contiguous(memory_format=fmt)
            with autocast:
                loss = F.cross_entropy(model(xb), y[idx], label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)  # redrawn at the bar's own pace
    bar.close()
    model.eval()
    model.to(memory_format=torch.contiguous_format)  # checkpoints and every later job see the usual layout
    return {"epochs": epochs, "steps": steps, "final_loss": sum(losses[-20:]) / max(len(losses[-20:]), 1),
            "seconds": time.time() - start, "precision": precision, "memory_format": memory_format}


def train_language_model(model: nn.Module, tokens: torch.Tensor, steps: int = 1000, batch_size: int = 32,
                         length: int = 64, lr: float = 3e-3, weight_decay: float = 0.01, seed: int = 0,
                         progress: bool = True) -> dict:
    """AdamW with linear warm-up and decay on random windows of a 1-D token stream (next-token loss).
    `model` is a Hugging Face causal LM (logits from `.logits`), on the device of `tokens`."""
    if tokens.dim() != 1 or len(tokens) <= length + 1:
        raise CoarError(f"language-model training needs a 1-D token stream longer than {length + 1}, got "
                        f"{tuple(tokens.shape)}")
    check_lr(lr)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    sched = one_cycle(opt, lr, steps, 0.1)
    offsets = torch.arange(length + 1)
    start, losses = time.time(), []
    model.train()
    for _ in tqdm(range(steps), desc="train LM", disable=not progress, leave=False):
        begin = torch.randint(0, len(tokens) - length - 1, (batch_size,), generator=g)
        batch = tokens[(begin[:, None] + offsets).to(tokens.device)]
        logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return {"steps": steps, "final_loss": sum(losses[-50:]) / max(len(losses[-50:]), 1), "seconds": time.time() - start}


@torch.no_grad()
def language_model_loss(model: nn.Module, tokens: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over windows [N, T]."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(tokens), batch_size):
        b = tokens[i: i + batch_size]
        logits = model(b[:, :-1]).logits
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum").item()
        count += b[:, 1:].numel()
    return total / max(count, 1)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, arch: str, kwargs: dict, meta: dict | None = None):
    """Write atomically. `meta` must be JSON data (it is stored as its JSON round trip), so the checkpoint
    loads with torch.load(weights_only=True)."""
    try:
        meta = json.loads(json.dumps(meta or {}))
    except (TypeError, ValueError) as exc:
        raise CoarError(f"checkpoint metadata for {path} must be JSON data (str, numbers, lists, dicts): {exc}") from exc
    path = Path(path)
    state = model.state_dict()
    check_finite_state(state, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save({"arch": arch, "kwargs": kwargs, "state_dict": state, "meta": meta}, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk: say which file
            exc.filename = str(path)
        raise


def check_finite_state(state: dict, path, action: str = "not written") -> None:
    """Refuse weights with NaN or inf (a diverged training run), naming the first offending tensor. The one rule
    for checkpoints both ways: `save_checkpoint` does not write them, `load_checkpoint` does not use them."""
    for name, t in state.items():
        if not isinstance(t, torch.Tensor) or t.is_meta or not (t.is_floating_point() or t.is_complex()):
            continue
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = (~finite).nonzero()
            first = tuple(int(i) for i in bad[0])
            error = CoarError if action == "not written" else StoreError  # a file read back: StoreError
            raise error(f"checkpoint {path} {action}: {name} holds {len(bad)} non-finite value(s) of "
                        f"{t.numel()} (first at index {list(first)}: {t[first].item()}); the model diverged "
                        "(a smaller learning rate?) or was edited into NaN/inf")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, checkpoint dict without weights)."""
    from .models import build_model

    path = Path(path)
    if not path.exists():
        raise StoreError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise StoreError(f"checkpoint {path} is unreadable or truncated: {exc}") from exc
    if not isinstance(ck, dict):
        raise StoreError(f"checkpoint {path} holds a {type(ck).__name__}, not a coar checkpoint")
    for key in ("arch", "kwargs", "state_dict"):
        if key not in ck:
            raise StoreError(f"checkpoint {path} lacks the key {key!r}: not a coar checkpoint")
    if not isinstance(ck["arch"], str) or not isinstance(ck["kwargs"], dict) or not isinstance(ck["state_dict"], dict):
        raise StoreError(f"checkpoint {path}: arch must be a name, kwargs and state_dict mappings; got "
                         f"{type(ck['arch']).__name__}, {type(ck['kwargs']).__name__}, "
                         f"{type(ck['state_dict']).__name__}")
    if not isinstance(ck.get("meta", {}), dict):
        raise StoreError(f"checkpoint {path}: meta must be a mapping, got {type(ck['meta']).__name__}")
    check_finite_state(ck["state_dict"], path, "cannot be used")
    try:
        model = _load_without_init(build_model, ck)
    except CoarError as exc:  # an unknown architecture or arguments build_model refuses
        raise StoreError(f"checkpoint {path} records a model that cannot be built: {exc}") from None
    except (RuntimeError, TypeError, ValueError) as exc:  # load_state_dict: missing/unexpected keys, sizes
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise StoreError(f"checkpoint {path}: its weights do not fit the architecture it records ({ck['arch']} "
                         f"with {ck['kwargs']}): {detail}") from None
    model.to(device).eval()
    return model, {k: v for k, v in ck.items() if k != "state_dict"}


def _load_without_init(build_model, ck: dict) -> nn.Module:
    """The checkpoint's model, built on the meta device and given the saved tensors (no random initialisation
    to throw away: 5 s for ViT-B/16 on a CPU core). Hugging Face models (tied weights) and any model with state
    outside its state_dict (a non-persistent buffer) are built the usual way instead."""
    from .models import HF_ARCHITECTURES

    if ck["arch"] in HF_ARCHITECTURES:
        model = build_model(ck["arch"], **ck["kwargs"])
        model.load_state_dict(ck["state_dict"])
        return model
    try:
        model = build_model(ck["arch"], device="meta", **ck["kwargs"])
    except Exception:  # noqa: BLE001 - anything unusual: the ordinary path below reports it
        model = None
    if model is not None:
        mismatch = _state_mismatch(model.state_dict(), ck["state_dict"])
        if mismatch:  # before a real build: a corrupted size (num_classes 2**28) must not allocate 100 GB first
            raise RuntimeError(mismatch)
        try:
            model.load_state_dict(ck["state_dict"], assign=True)
        except Exception:  # noqa: BLE001 - anything unusual: the ordinary path below reports it
            model = None
    if model is None or any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = build_model(ck["arch"], **ck["kwargs"])
        model.load_state_dict(ck["state_dict"])
    return model


def _state_mismatch(expected: dict, found: dict) -> str | None:
    """Why weights `found` do not load into a model whose state_dict is `expected`, or None: load_state_dict's
    strict check (missing and unexpected keys, sizes), made on the shapes of a meta-device model."""
    def shape(t):
        return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__

    missing = [k for k in expected if k not in found]
    unexpected = [str(k) for k in found if k not in expected]
    sizes = [f"size mismatch for {k}: {shape(found[k])} in the file, {shape(v)} in the model"
             for k, v in expected.items() if k in found and isinstance(v, torch.Tensor) and shape(found[k]) != shape(v)]
    parts = ([f"missing keys {', '.join(missing[:5])}"] if missing else []) + (
        [f"unexpected keys {', '.join(unexpected[:5])}"] if unexpected else []) + sizes[:3]
    return "; ".join(parts) or None
