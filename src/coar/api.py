"""The front door: COAR attributions (paper Sec. 3, eq. 3), their evaluation on fresh masks (eq. 6) and COAR-EDIT
(Sec. 5, eq. 8-9) for any ``torch.nn.Module``, one call each, on the library's engine (component sets, ablation
hooks, the seeded mask design, shard stores, the streaming regression, editing).

    >>> import torch, coar
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.randn(20, 8), torch.randint(0, 3, (20,))
    >>> rules = [coar.Rule(r"0", ("Linear",))]           # the 16 hidden units are the components
    >>> attr = coar.attribute(model, x, y, components=rules, masks=200, alpha=0.1, progress=False)
    >>> attr.weights.shape                                # one weight per (example, component)
    (20, 16)
    >>> table = coar.evaluate(attr, model, x, y, components=rules, masks=50, alpha=0.1, progress=False)
    >>> bool(table["correlation"].mean() > 0.9)
    True
    >>> edited, ablated = coar.edit(model, attr, rules, targets=[0], references=[1, 2, 3], k=2)
    >>> len(ablated), bool((edited[0].weight[torch.as_tensor(ablated)] == 0).all())
    (2, True)

Masks come from the shard scheme of the workflow: shard s of ``masks_per_shard`` masks is
``sample_masks(C, m_s, alpha, seed, s)``, a function of (seed, shard, alpha, C, scheme) only. With ``store=`` a
directory, every shard is a resumable ``ShardStore`` (``<store>/shard-000``, ...) in the format the workflow
writes, with outputs stored as float32; without it the same masks, the same forward passes (the same blocks of
masks, so the same floating-point rounding) and the same fit run on in-memory arrays. Both give bitwise the
same attributions.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import editing, provenance, regression
from .ablation import check_deterministic, logits_of, training_modules
from .attributions import Attributions
from .components import ComponentSet, Rule, component_set, model_fingerprint
from .engine import Engine
from .errors import ArgumentError, CoarError, ComponentError, ShapeError
from .sampling import sample_masks
from .resources import check_memory, size_text
from .settings import FIT_METHODS, EditSettings, FitSettings, SampleSettings, check_int, check_output
from .store import normalize_meta

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["attribute", "evaluate", "edit", "default_batching", "Components", "Output"]

#: A component table name (see ``coar.components.TABLES``), a list of Rules, or a ComponentSet.
Components = Union[str, Sequence[Rule], ComponentSet]
#: An output name ("margin", "token_margin", "logit:<class>", ...) or ``fn(logits, targets) -> tensor [n]``.
Output = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

#: Masks per shard unless given: part of the mask design (shard s draws its own stream), so it never depends
#: on the device.
MASKS_PER_SHARD = 1000
#: Rows per chunk in which the fit reads masks: ``load_shards``' default, which ``pipeline.fit_stores`` uses.
#: The float64 sums of the fit depend on the chunking, so the in-memory path reads in the same chunks.
FIT_CHUNK_ROWS = 4096
#: Store dtype of the API's shards: float32, the dtype the in-memory path records outputs in.
STORE_DTYPE = "float32"


# ------------------------------------------------------------------------------------------------- checks
def _fit_settings(method, masks: int) -> FitSettings:
    """`method` of coar.attribute: a method name, or a coar.FitSettings with the estimator's options."""
    if isinstance(method, str):
        if method == "prior":
            raise ArgumentError("method", "'prior' needs the attributions it shrinks toward: pass "
                                          "method=coar.FitSettings('prior', prior=attributions)")
        method = FitSettings(method)
    if not isinstance(method, FitSettings):
        raise ArgumentError("method", f"must be a method name ({', '.join(FIT_METHODS)}) or a coar.FitSettings, got "
                                      f"{method!r}")
    fit = method.validate({f: f"method.{f}" for f in FitSettings.__dataclass_fields__ if f != "method"}, masks)
    if fit.prior is not None and not isinstance(fit.prior, Attributions):
        raise ArgumentError("method.prior", f"must be coar.Attributions, got {type(fit.prior).__name__}")
    return fit


def _check_model(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ArgumentError("model", f"{type(model).__name__} has no parameters, hence no components")
    training = training_modules(model)
    if training:
        raise ArgumentError("model", f"BatchNorm/dropout modules are in training mode ({', '.join(training[:3])}"
                                     f"{', ...' if len(training) > 3 else ''}): they would mix the masks of one "
                                     "forward pass and make outputs random; call model.eval() first")
    return model


def _collect_loader(loader: torch.utils.data.DataLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for i, batch in enumerate(loader):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ArgumentError("inputs", f"DataLoader batch {i} is a {type(batch).__name__}, not an (x, y) pair")
        x, y = batch
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ArgumentError("inputs", f"DataLoader batch {i} holds {type(x).__name__} and {type(y).__name__}, "
                                          "not two tensors")
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ArgumentError("inputs", "the DataLoader yielded no batch")
    return torch.cat(xs), torch.cat(ys)


def _check_data(inputs, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) as tensors; a DataLoader is iterated once. Nothing is copied or changed."""
    if isinstance(inputs, torch.utils.data.DataLoader):
        if targets is not None:
            raise ArgumentError("targets", "must be None when inputs is a DataLoader of (x, y) batches")
        inputs, targets = _collect_loader(inputs)
    if not isinstance(inputs, torch.Tensor):
        raise ArgumentError("inputs", f"must be a torch.Tensor [n, ...] or a DataLoader of (x, y) batches, got "
                                      f"{type(inputs).__name__} (torch.as_tensor converts arrays)")
    if targets is None:
        raise ArgumentError("targets", "missing: give one target per input (e.g. class labels [n])")
    if not isinstance(targets, torch.Tensor):
        raise ArgumentError("targets", f"must be a torch.Tensor [n, ...], got {type(targets).__name__}")
    if inputs.dim() == 0 or len(inputs) == 0:
        raise ArgumentError("inputs", f"must hold at least one example along dim 0, got shape {tuple(inputs.shape)}")
    if targets.dim() == 0 or len(targets) != len(inputs):
        raise ArgumentError("targets", f"must have one entry per input: {len(inputs)} inputs, targets of shape "
                                       f"{tuple(targets.shape)}")
    if inputs.is_floating_point() and not bool(torch.isfinite(inputs).all()):
        raise ArgumentError("inputs", "contain NaN or infinite values")
    if inputs.dtype == torch.uint8:
        raise ArgumentError("inputs", f"are uint8 {tuple(inputs.shape)}: raw pixel values 0..255? Give the inputs "
                                      "as the model takes them, preprocessed as in its training (e.g. "
                                      "x.float() / 255 and its normalization)")
    return inputs, targets


def _run_model(model: nn.Module, device) -> tuple[nn.Module, torch.device]:
    """The module the forward passes run on: the caller's own, or a copy where it must change (another device,
    nn.MultiheadAttention made hookable). The caller's model is never moved or converted; the engine's "weights"
    mechanism masks its weights in place during a call and restores them bitwise."""
    own = next(model.parameters()).device
    dev = own if device is None else torch.device(device)
    run = model
    if any(type(m) is nn.MultiheadAttention for m in model.modules()):
        from .attention import make_hookable

        run = make_hookable(copy.deepcopy(model))
    if dev != own:
        run = (copy.deepcopy(run) if run is model else run).to(dev)
    return run, dev


def _devices(device) -> list:
    """`device` of coar.attribute / coar.evaluate as a list: [device] for None or one device; a list or tuple of
    devices is checked: not empty, one device type (the outputs of a block of masks must not depend on which
    device ran it), no device twice except "cpu" (each device holds its own copy of the model), cuda indices
    below the device count (coar.gpus.device_count)."""
    if not isinstance(device, (list, tuple)):
        return [device]
    if not device:
        raise ArgumentError("device", "an empty list: give a device, or a list of devices to split the masks over")
    devs = []
    for i, d in enumerate(device):
        if not isinstance(d, (str, torch.device)):
            raise ArgumentError("device", f"entry {i} is a {type(d).__name__} ({d!r}), not a device name such as "
                                          "'cuda:1' or a torch.device")
        try:
            devs.append(torch.device(d))
        except (RuntimeError, ValueError) as e:
            raise ArgumentError("device", f"entry {i} {d!r} is not a device: {str(e).splitlines()[0]}") from None
    types = sorted({d.type for d in devs})
    if len(types) > 1:
        raise ArgumentError("device", f"mixes device types ({', '.join(types)}): blocks of masks run on each give "
                                      "other rounding, so the attributions would depend on the split; use one type")
    if types[0] == "cuda":
        from . import gpus

        count = gpus.device_count()
        if count == 0:
            raise ArgumentError("device", f"{[str(d) for d in devs]} names CUDA devices, but CUDA sees none")
        devs = [torch.device("cuda", d.index if d.index is not None else
                                torch.cuda.current_device() if torch.cuda.is_available() else 0) for d in devs]
        beyond = [str(d) for d in devs if d.index >= count]
        if beyond:
            raise ArgumentError("device", f"{', '.join(beyond)} beyond the {count} CUDA device"
                                          f"{'s' if count > 1 else ''} this process sees (cuda:0 .. cuda:{count - 1})")
    if types[0] != "cpu":
        twice = sorted({str(d) for d in devs if devs.count(d) > 1})
        if twice:
            raise ArgumentError("device", f"{', '.join(twice)} given twice: each device holds one copy of the model "
                                          "and runs one block of masks at a time")
    return devs


def _on_device(dev: torch.device):
    """Context in which a worker thread's incidental allocations land on its own GPU."""
    import contextlib

    return torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()


def _components(model: nn.Module, components) -> ComponentSet:
    try:
        if isinstance(components, ComponentSet):
            components.check(model)
            return components
        if isinstance(components, str):
            return component_set(model, components)
        rules = list(components) if isinstance(components, (list, tuple)) else None
        if not rules or not all(isinstance(r, Rule) for r in rules):
            raise ArgumentError("components", f"must be a table name, a non-empty list of coar.Rule or a "
                                              f"ComponentSet, got {components!r}")
        return component_set(model, rules)
    except ComponentError as e:
        raise ArgumentError("components", str(e)) from None


def _output(output) -> tuple[Callable, str]:
    from .outputs import get_output_fn

    if callable(output):
        return output, f"callable:{getattr(output, '__qualname__', type(output).__name__)}"
    if not isinstance(output, str):
        raise ArgumentError("output", f"must be an output name or a callable (logits, targets) -> [n], got {output!r}")
    try:
        return get_output_fn(output), output
    except CoarError as e:
        raise ArgumentError("output", str(e)) from None


def _check_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fn: Callable, name: str, dev) -> None:
    """Unablated forward passes on the first examples: the model takes the inputs, the output function gives one
    finite value per example, and a second pass gives the same outputs (coar.ablation.check_deterministic)."""
    b = min(2, len(x))
    try:
        with torch.no_grad():
            logits = logits_of(model(x[:b].to(dev)))
            if name.startswith("logit:") and isinstance(logits, torch.Tensor):
                check_output(name, "output", num_classes=logits.shape[-1])
            if name == "margin" and isinstance(logits, torch.Tensor) and logits.dim() == 2 and y.dim() == 1:
                lo, hi = int(y.min()), int(y.max())
                if y.is_floating_point() or lo < 0 or hi >= logits.shape[-1]:
                    raise ArgumentError("targets", f"class labels must be integers in 0..{logits.shape[-1] - 1} "
                                                   f"(the model's classes), got {y.dtype} in {lo}..{hi}")
            out = fn(logits, y[:b].to(dev))
    except ArgumentError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError, CoarError) as e:
        raise ArgumentError("inputs", f"inputs {tuple(x.shape)} {x.dtype} and targets {tuple(y.shape)} do not fit "
                                      f"the model with output {name!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (b,):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArgumentError("output", f"must return one value per example, shape [{b}] for {b} examples; got {got}")
    if not bool(torch.isfinite(out.float()).all()):
        raise ArgumentError("output", f"gave non-finite values on the unablated model: {out.tolist()}")
    try:
        check_deterministic(model, x[:b].to(dev), logits)
    except CoarError as e:
        raise ArgumentError("model", str(e)) from None


def _check_room(masks: int, n: int, c: int, store: Path | None = None, shards: Sequence[int] = (),
                can_store: bool = True) -> None:
    """Refuse, before anything is drawn or allocated, a run whose masks and outputs (bool [masks, C] and float32
    [masks, N]) and least-squares system (float64 C x C and C x N) cannot fit in the memory available, or whose
    shards (`shards`: mask counts of those not yet on disk) cannot fit on the store's disk."""
    per_mask = c + 4 * n
    memory = (0 if store is not None else masks * per_mask) + 8 * c * (c + n + 2)
    check_memory(memory, "masks", f"{masks:,} masks of C = {c:,} components on N = {n:,} examples (masks, outputs "
                                  "and the least-squares system)",
                 "use fewer masks" + ("" if store is not None or not can_store else
                                      ", or store= a directory (the masks and outputs then live on disk)"))
    if store is not None and shards:
        probe = Path(store).absolute()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        disk, free = sum(shards) * per_mask, shutil.disk_usage(probe).free
        if disk > free:
            raise ArgumentError("store", f"{sum(shards):,} masks x (C = {c:,} + 4 x N = {4 * n:,} bytes) need about "
                                         f"{size_text(disk)} under {store}, more than the {size_text(free)} free there; use "
                                         "fewer masks or a store on a larger disk")


def default_batching(device: str | torch.device, example_numel: int, n_examples: int) -> tuple[int, int]:
    """(batch_size, masks_per_pass) of the engine's rule for `n_examples` on a device, known without a model: at
    most 256 rows a pass on a CPU (what coar.engine.plan picks there), up to 1,024 on a GPU (fewer for large inputs,
    about 2^26 input values a pass). On a GPU the engine itself sizes passes from the memory a probe pass uses and
    the memory free (coar.engine.measured_rows), so this is only the estimate made before a model is on the device.
    When one mask's examples fill a pass (64 on a CPU, more than half a pass on a GPU), one mask a pass in equal
    batches (weights masked in place); otherwise all examples and rows // n masks a pass (hooks)."""
    from .engine import equal_batch, full_rows, rows_per_pass

    rows, n = rows_per_pass(device, example_numel), max(1, int(n_examples))
    if n >= full_rows(device, example_numel):
        return equal_batch(n, rows), 1
    return n, rows // n


def _examples_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    from .examples import Examples

    def host(t: torch.Tensor) -> np.ndarray:
        t = t.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    return Examples(host(x), host(y)).fingerprint()


def _shard_sizes(masks: int, per_shard: int) -> list[int]:
    return [min(per_shard, masks - s) for s in range(0, masks, per_shard)]


class _Examples:
    """What pipeline.store_meta reads of an example set: its length and fingerprint."""

    def __init__(self, n: int, fingerprint: str):
        self.n, self.fp = n, fingerprint

    def __len__(self) -> int:
        return self.n

    def fingerprint(self) -> str:
        return self.fp


class _Setup:
    """Everything one attribution or evaluation run shares: validated arguments and the evaluation closure.
    `settings` (coar.settings.SampleSettings) is checked again with the component count once it is known."""

    def __init__(self, model, inputs, targets, components, settings: SampleSettings, device):
        self.model = _check_model(model)
        devices = _devices(device)
        self.x, self.y = _check_data(inputs, targets)
        self.run, self.dev = _run_model(self.model, devices[0])
        self.cset = _components(self.run, components)
        st = settings.validate(n_components=self.cset.size, min_masks=2)
        self.alpha, self.scheme, self.ablation, self.gamma = st.alpha, st.scheme, st.ablation, st.gamma
        self.fn, self.output = _output(st.output)
        _check_fit(self.run, self.x, self.y, self.fn, self.output, self.dev)
        try:
            self.engine = Engine(self.run, self.cset, self.x, self.y, self.fn, self.ablation, self.gamma,
                                 batch_size=st.batch_size, masks_per_pass=st.masks_per_pass, mechanism=st.mechanism,
                                 memory_format=st.memory_format, batchnorm=st.batchnorm)
        except CoarError as e:  # a contradiction among the given choices: name the one that was chosen
            name = ("batchnorm" if "batchnorm" in str(e) else "mechanism" if st.mechanism != "auto"
                    else "memory_format" if st.memory_format != "auto" else "masks_per_pass")
            raise ArgumentError(name, str(e)) from None
        self.block = self.engine.plan.masks_per_call
        self.engines = [self.engine] + [self._engine_on(d) for d in devices[1:]]
        #: Masks one call of `outputs` takes: a block per device, so a store's writer hands every device one.
        self.span = self.block * len(self.engines)

    def _engine_on(self, dev: torch.device) -> Engine:
        """An engine on another device with the first one's plan (the same blocks, passes and formats, so the same
        outputs whichever device runs a block), on its own copy of the model: the weights mechanism masks the
        weights of the model it runs on in place."""
        p = self.engine.plan
        run = copy.deepcopy(self.run).to(dev)
        return Engine(run, self.cset, self.x, self.y, self.fn, self.ablation, self.gamma, **p.choices())

    def outputs(self, keep: np.ndarray) -> np.ndarray:
        """f_M(z, C_i) float32 [len(keep), N]: the function every mask block goes through, in memory or in a store.

        With several devices, `keep` (at most `span` masks, starting on a block boundary) is cut into blocks of
        `block` masks, block i runs on device i, all at once (a thread each: torch releases the GIL in its
        kernels); every block is the one a single device would run, so the outputs are the same."""
        keep = np.asarray(keep)
        if len(self.engines) == 1 or len(keep) <= self.block:
            return self.engine(keep)
        from concurrent.futures import ThreadPoolExecutor

        parts = [keep[lo: lo + self.block] for lo in range(0, len(keep), self.block)]
        if len(parts) > len(self.engines):
            raise ShapeError(f"{len(keep)} masks for {len(self.engines)} devices of {self.block} masks a block")

        def run(engine: Engine, part: np.ndarray) -> np.ndarray:
            with _on_device(engine.device):
                return engine(part)

        with ThreadPoolExecutor(len(parts), thread_name_prefix="coar-device") as pool:
            outs = list(pool.map(run, self.engines, parts))
        return np.concatenate(outs)

    def outputs_in_blocks(self, keep: np.ndarray, bar=None) -> np.ndarray:
        """`outputs` over aligned spans of `span` masks (a block of `block` masks per device): the spans run_shard
        evaluates a shard in."""
        out = np.empty((len(keep), len(self.x)), dtype=np.float32)
        for lo in range(0, len(keep), self.span):
            out[lo: lo + self.span] = self.outputs(keep[lo: lo + self.span])
            if bar is not None:
                bar.update(len(keep[lo: lo + self.span]))
        return out

    def meta(self, examples_fp: str, m: int, seed: int, shard: int) -> dict:
        from .pipeline import store_meta

        return store_meta(self.model, self.cset, _Examples(len(self.x), examples_fp), m, self.alpha, seed, shard,
                          self.output, self.scheme, self.ablation, self.gamma, STORE_DTYPE)


def _chunks(shards: Sequence[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for keep, out in shards:
        for lo in range(0, len(keep), FIT_CHUNK_ROWS):
            yield keep[lo: lo + FIT_CHUNK_ROWS], out[lo: lo + FIT_CHUNK_ROWS]


# ------------------------------------------------------------------------------------------------ front door
def attribute(model: nn.Module, inputs: torch.Tensor | torch.utils.data.DataLoader,
              targets: torch.Tensor | None = None, *, components: Components, masks: int, alpha: float,
              output: Output = "margin", ablation: str = "zero", gamma: float = 0.5, seed: int = 0,
              device: str | torch.device | None = None, store: str | Path | None = None,
              method: str | FitSettings = "ols",
              scheme: str = "exact", masks_per_shard: int = MASKS_PER_SHARD, batch_size: int | None = None,
              masks_per_pass: int | None = None, mechanism: str = "auto", memory_format: str = "auto",
              batchnorm: str = "auto", progress: bool = True) -> Attributions:
    """COAR component attributions of `model` on the examples (paper eq. 3): ablate random subsets of an
    `alpha` fraction of the components on `masks` masks, record the output of every example, fit one linear
    model per example by least squares.

    Args:
        model: any torch.nn.Module in eval mode (BatchNorm/dropout in training mode, and a model whose two
            unablated passes differ, are refused). It is never left changed: a copy runs where the device, the
            memory format or folded BatchNorm differ or nn.MultiheadAttention needs explicit hook sites, and the
            "weights" mechanism restores the weights it masks in place bitwise, also when the call is interrupted
            (do not use the model from another thread during the call).
        inputs: tensor [n, ...] of model inputs (already preprocessed), or a DataLoader of (x, y) batches, which
            is iterated once (keep shuffle off so that `evaluate` sees the same order).
        targets: tensor [n] of class labels (or [n, T] token labels for "token_margin"); None with a DataLoader.
        components: a component table name ("resnet50", "vit_b_16", "gpt2", ... see coar.components.TABLES), a
            list of coar.Rule (regular expressions on module names with module classes), or a ComponentSet.
        masks: number of ablation masks m (>= 2); alpha: fraction ablated per mask, in (0, 1).
        output: "margin" (correct-class margin, eq. 5), "token_margin", "logit:<class>", or a callable
            (logits, targets) -> tensor [n]. A store records a callable by its qualified name only.
        ablation, gamma: "zero" zeroes a component's weight slice; "scale" multiplies it by gamma.
        seed, masks_per_shard, scheme: the mask design; shard s of masks_per_shard masks is drawn from
            (seed, s). Masks do not depend on the device, the batch size or whether a store is used.
        device: where the forward passes run (default: the model's device), or a list of devices of one type,
            e.g. ["cuda:0", "cuda:1"]: every device gets a copy of the model, the masks are cut into the blocks a
            single device would run, and the devices run them at once (one thread each), with the same
            attributions as on one device (bitwise on CPUs; on GPUs of one model when its kernels are
            deterministic). The first device plans the passes (batch size, mechanism), the others follow it.
        store: a directory for resumable shards <store>/shard-000, ... (outputs in float32, the workflow's
            format); an interrupted call resumes where it stopped. None: everything stays in memory.
        method: the regression, as `coar fit --method` offers it: "ols" (the paper's least squares; minimum-norm
            when masks < components), "ridge" (penalty per example by generalized cross-validation), "lowrank"
            or "lasso" with their defaults, or a coar.FitSettings with options, e.g.
            ``coar.FitSettings("prior", prior=loo_attributions)`` (ridge shrunk toward attributions of the same
            model, examples and components) or ``coar.FitSettings("lasso", ratios=(1, 0.1, 0.01))``.
        batch_size, masks_per_pass, mechanism, memory_format, batchnorm: how the masked forward passes run
            (default: the engine's choice for the model, device and number of examples, coar.engine.plan):
            examples and masks per pass, "weights" (one mask a pass, weight slices zeroed in place and restored
            bitwise) or "hooks" (several masks a pass), "channels_last" or "contiguous", eval-mode BatchNorm
            "fold"-ed into the convolution before it or "keep"-ed. Every choice gives the reference weight
            zeroing's outputs (to float rounding).
        progress: tqdm progress bars.

    Returns:
        Attributions: weights [n, C] (coefficient of "component j kept"), bias [n]; meta["provenance"] holds
        the model, example and component-set fingerprints and the mask settings.

    Raises:
        ArgumentError (a CoarError and ValueError) naming the argument for invalid input; StoreMismatchError
        when `store` holds shards made with other settings.

    Example:
        >>> import torch, coar
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
        >>> attr = coar.attribute(model, torch.randn(6, 4), torch.tensor([0, 1] * 3),
        ...                       components=[coar.Rule("0", ("Linear",))], masks=40, alpha=0.25, progress=False)
        >>> attr.weights.shape, attr.bias.shape
        ((6, 8), (6,))
    """
    settings = SampleSettings(masks, alpha, seed, 0, scheme, output, ablation, gamma, STORE_DTYPE, "float32",
                              batch_size, masks_per_pass, mechanism, memory_format, batchnorm).validate(min_masks=2)
    masks, seed = settings.masks, settings.seed
    per = check_int(masks_per_shard, "masks_per_shard", 1)
    fit = _fit_settings(method, masks)
    s = _Setup(model, inputs, targets, components, settings, device)
    if fit.prior is not None:
        try:
            _check_provenance(fit.prior, s.model, s.cset, _examples_fingerprint(s.x, s.y), len(s.x))
        except ArgumentError as e:
            raise ArgumentError("method.prior", f"the prior ({fit.prior.method}) does not fit these arguments: "
                                                f"{e}") from None
    if store is None:
        _check_room(masks, len(s.x), s.cset.size)
    else:  # the shards not yet on disk: sizes of masks_per_shard, the last one shorter
        todo = [min(per, masks - i * per) for i in range(-(-masks // per))
                if not (Path(store) / f"shard-{i:03d}").exists()] if -(-masks // per) <= 10 ** 6 else [masks]
        _check_room(masks, len(s.x), s.cset.size, Path(store), todo)
    sizes = _shard_sizes(masks, per)
    base = s.meta(_examples_fingerprint(s.x, s.y), sizes[0], seed, 0)  # fingerprints hashed once, not per shard
    metas = [normalize_meta({**base, "m": m, "shard": shard}) for shard, m in enumerate(sizes)]
    if store is not None:
        return _attribute_store(s, Path(store), metas, fit, progress)
    shards = []
    with tqdm(total=masks, unit="mask", desc="coar masks", disable=not progress) as bar:
        for shard, m in enumerate(sizes):
            keep = sample_masks(s.cset.size, m, s.alpha, seed, shard, s.scheme)
            shards.append((keep, s.outputs_in_blocks(keep, bar)))
    attr = regression.fit_chunks(_chunks(shards), masks, s.cset.size, len(s.x), components=s.cset.fingerprint(),
                                 **fit.fit_kwargs())
    attr.meta.update(alpha=s.alpha, scheme=s.scheme, provenance=provenance.from_stores(metas))
    return attr


def _attribute_store(s: _Setup, root: Path, metas: list[dict], fit: FitSettings, progress: bool) -> Attributions:
    from .pipeline import fit_stores
    from .store import ShardStore, run_shard

    paths = []
    for meta in metas:
        path = root / f"shard-{meta['shard']:03d}"
        st = ShardStore.create_or_open(path, meta)
        try:
            run_shard(st, s.outputs, masks_per_call=s.span, progress=progress)
        finally:
            st.close()
        paths.append(path)
    return fit_stores(paths, **fit.fit_kwargs())


def evaluate(attributions: Attributions, model: nn.Module, inputs: torch.Tensor | torch.utils.data.DataLoader,
             targets: torch.Tensor | None = None, *, components: Components, masks: int, alpha: float, seed: int = 1,
             output: Output | None = None, device: str | torch.device | None = None, batch_size: int | None = None,
             masks_per_pass: int | None = None, mechanism: str = "auto", memory_format: str = "auto",
             batchnorm: str = "auto", progress: bool = True) -> pd.DataFrame:
    """Per-example correlation between true and attribution-predicted outputs on fresh masks (paper eq. 6).

    `masks` masks at `alpha` are drawn from (seed, shard 0); a seed that drew the training masks is refused.
    The output function, ablation and scheme are those recorded in the attributions (a callable output must be
    given again as `output`). Returns a table with columns method, alpha_test, example, correlation (NaN where
    the prediction is constant); its mean over examples is the paper's attribution accuracy.

    `device` is as in `attribute`: one device, or a list of devices the masks are split over.

    Example (continuing `attribute`'s): ``coar.evaluate(attr, model, x, y, components=rules, masks=100,
    alpha=0.1)["correlation"].mean()``.
    """
    from .correlation import correlations

    if not isinstance(attributions, Attributions):
        raise ArgumentError("attributions", f"must be coar.Attributions, got {type(attributions).__name__}")
    prov = provenance.of(attributions)
    recorded = prov.get("output_fn")
    if output is None:
        if not isinstance(recorded, str) or recorded.startswith("callable:"):
            raise ArgumentError("output", f"the attributions were computed with output {recorded!r}: pass it again")
        output = recorded
    settings = SampleSettings(masks, alpha, seed, 0, prov.get("scheme") or "exact", output,
                              prov.get("ablation") or "zero", prov.get("gamma") if prov.get("gamma") is not None else 0.5,
                              STORE_DTYPE, "float32", batch_size, masks_per_pass, mechanism, memory_format,
                              batchnorm).validate(min_masks=2)
    masks, seed = settings.masks, settings.seed
    s = _Setup(model, inputs, targets, components, settings, device)
    _check_room(masks, len(s.x), s.cset.size, can_store=False)
    _check_provenance(attributions, s.model, s.cset, _examples_fingerprint(s.x, s.y), len(s.x))
    if recorded is not None and s.output != recorded:
        raise ArgumentError("output", f"the attributions were computed with output {recorded!r}, not {s.output!r}")
    used = sorted({int(sd) for sd, _ in prov.get("shards", [])})
    if seed in used:
        raise ArgumentError("seed", f"seed {seed} drew the training masks of these attributions (seeds {used}); "
                                    "use another seed for fresh masks")
    keep = sample_masks(s.cset.size, masks, s.alpha, seed, 0, s.scheme)
    with tqdm(total=masks, unit="mask", desc="coar evaluate", disable=not progress) as bar:
        out = s.outputs_in_blocks(keep, bar)
    return correlations(attributions, keep, out, alpha_test=s.alpha)


def _check_provenance(attr: Attributions, model: nn.Module, cset: ComponentSet, examples_fp: str | None,
                      n: int | None) -> None:
    if attr.components != cset.fingerprint():
        raise ArgumentError("components", f"the attributions were computed for component set {attr.components!r}; "
                                          f"these components ({cset!r}) have fingerprint {cset.fingerprint()!r}")
    if attr.n_components != cset.size:
        raise ArgumentError("components", f"{cset.size} components, the attributions have {attr.n_components}")
    prov = provenance.of(attr)
    if prov.get("model_fingerprint") not in (None, model_fingerprint(model)):
        raise ArgumentError("model", "is not the model the attributions were computed for (weights or "
                                     "architecture differ)")
    if n is not None and n != attr.n_examples:
        raise ArgumentError("inputs", f"{n} examples, the attributions have {attr.n_examples}")
    if examples_fp is not None and prov.get("examples_fingerprint") not in (None, examples_fp):
        raise ArgumentError("inputs", "are not the examples the attributions were computed for (values or order "
                                      "differ)")


EDIT_MODES = {"fix": "increase", "induce": "decrease"}


def edit(model: nn.Module, attributions: Attributions, components: Components, *, targets: Sequence[int],
         references: Sequence[int], k: int, mode: str = "fix") -> tuple[nn.Module, np.ndarray]:
    """COAR-EDIT (paper Sec. 5, eq. 8-9): ablate the k components that most separate the target examples from
    the reference examples, in a copy of `model`.

    Every component is scored by the two-sample t statistic between its attributions on `targets` and on
    `references` (example indices into the attributions). mode "fix" ablates the k lowest scores, the components
    whose ablation most raises the targets' outputs relative to the references (e.g. fixes a misclassified
    target); "induce" ablates the k highest, lowering them (e.g. induces an error or forgets a class).

    Returns (edited copy of the model with those components' weights zeroed, component indices ablated [k]).
    `model` itself is not changed.

    Example (continuing `attribute`'s): ``edited, ablated = coar.edit(model, attr, rules, targets=[0],
    references=[1, 2, 3], k=2)``.
    """
    if not isinstance(model, nn.Module):
        raise ArgumentError("model", f"must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(attributions, Attributions):
        raise ArgumentError("attributions", f"must be coar.Attributions, got {type(attributions).__name__}")
    if mode not in EDIT_MODES:
        raise ArgumentError("mode", f"must be one of {tuple(EDIT_MODES)}, got {mode!r}")
    cset = _components(model, components)
    _check_provenance(attributions, model, cset, None, None)
    e = EditSettings(targets, references, k, EDIT_MODES[mode]).validate(attributions.n_examples, cset.size,
                                                                       {"direction": "mode"})
    scores = editing.edit_scores(attributions, e.targets, e.references)
    ablate = editing.select_components(scores, e.k, e.direction)
    return editing.apply_edit(model, cset, ablate), ablate
