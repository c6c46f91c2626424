"""The sampling engine: which exact ablation mechanism, memory format and batch shape run the masked forward
passes of COAR (f_M(z, C_i) for every mask i and example z), chosen per model, device and size.

Three mechanisms, all tested equal to the reference weight zeroing of :func:`coar.ablation.ablate_weights`:

* ``"weights"``: one mask per forward pass. The ablated weight slices of the model are overwritten in place,
  mask after mask, from a saved copy of the original weights, and every weight is restored bitwise on exit,
  also when a forward pass raises or the run is interrupted (KeyboardInterrupt). Its outputs are bitwise those
  of the reference (the same products in the same dtype), and it adds no work to the forward pass.
* ``"shared"``: K masks per pass (often 1), for a model whose first component module does most of the work (an
  MLP's first layer). That module's unablated output h on a batch of examples is computed once and kept across
  masks (and across calls when one batch holds every example); per mask only h * s + bias * (1 - s) is formed
  (the output the weight zeroing or scaling of its rows gives, bias kept) and the rest of the model runs, its
  other component groups masked by the ablation hooks. Eligibility is checked, not assumed (:func:`first_layer`:
  a probe pass records the call order; the module is an nn.Linear or nn.Conv2d called first and once, its
  components its output units, its weight a plain unshared parameter, no hooks). While a call runs, the module's
  forward is replaced (an instance attribute) and restored on exit. Equal to the reference to float rounding
  (bitwise in zero mode where the BLAS gives a row's product independently of the other rows).
* ``"hooks"``: K masks per forward pass. A batch of K * B rows is K blocks of B rows, and forward hooks scale
  block r's component outputs by mask r (``coar.ablation.ablation_hooks``). It adds one elementwise product per
  hooked layer, and it is the only way to fill a pass when there are fewer examples than rows per pass.

The rule (:func:`plan`), derived from ``benchmarks/bench_sampling.py --preset`` (docs/benchmarks.md) rather
than a calibration run: a calibration would pick by timings that vary by 20% from run to run on a shared
machine, so two identical calls could take different mechanisms and give outputs that differ in the last bits.
The rule gives the same plan for the same model, device and sizes, every time.

1. Rows per pass: at most 256 on a CPU (larger passes make the allocator hand activation buffers back to the
   OS after every pass). On a CUDA device, when neither ``batch_size`` nor ``masks_per_pass`` is given, from
   measured memory (:func:`measured_rows`): one probe pass of at most 64 rows, under the ablation hooks, gives
   the peak bytes a row allocates, and the rows are as many as fit in :data:`SAFETY` (80%) of the free memory
   (less the saved copy of the component weights the weights mechanism keeps), at most :data:`GPU_MAX_ROWS`
   and at least 1. Without a measurement (:func:`rows_per_pass`, which preflight estimates with) a GPU pass is
   up to 1,024 rows, fewer for large inputs (about 2^26 input values a pass). The measurement is of memory,
   not of time, so it is the same for the same model, inputs and free memory.
2. Mechanism: when one mask's N examples fill a pass (N >= 64 on a CPU, where kernels run at full rate from
   about 64 rows; N > rows / 2 on a GPU, where a second mask would not fit), ``"weights"`` runs one mask per pass
   on all N examples, in equal batches of at most ``rows``; otherwise ``"hooks"`` runs K = rows // N masks per
   pass on all N examples. Before either, ``"shared"`` (with the same batch shape) when the first component
   module is eligible, carries at least :data:`SHARED_SHARE` of one example's multiply-accumulates (counted as in
   3.) and computes at least :data:`SHARED_MACS` of them per output value.
3. Memory format: channels_last when the inputs are image batches [N, C, H, W] and convolutions carry at
   least half of the model's forward FLOPs (counted once on one example by forward hooks, :func:`conv_flop_share`):
   convnets, not vision transformers, whose only convolution is the patch embedding. The model runs as a
   converted copy; the caller's model keeps its format.
4. BatchNorm: an eval-mode BatchNorm whose only input is a convolution's output, used nowhere else, is folded
   into that convolution (:func:`foldable`, found by a torch.fx trace; the folded weights are computed in
   float64): W' = W * s and b' = (b - mean) * s + beta with s = weight / sqrt(var + eps) per output channel.
   Ablation stays exact: zeroing or scaling a channel's weights W' (or an input channel) gives the ablated
   convolution followed by the BatchNorm, and an ablated output unit keeps its bias b', which is the
   BatchNorm of the unablated bias. The pass loses one read and write of every activation the BatchNorm
   normalised (docs/benchmarks.md: up to 1.5x on the preset's ResNets on a CPU). Outputs then differ from the
   unfolded model's in the last bits (about 1e-6 relative); ``batchnorm="keep"`` gives the bitwise reference.

Every choice can be given instead (``mechanism=``, ``memory_format=``, ``batchnorm=``, ``batch_size=``,
``masks_per_pass=``). A shard of the workflow records the plan it started with (``coar.pipeline.PLAN_FILE``) and
a resume reuses it, so its rows come out as an uninterrupted run's.

5. Compilation (``compile=``, off unless asked for): the weights mechanism's passes can run under torch.compile
   (:data:`COMPILE`; "reduce-overhead" adds CUDA graphs). The masks are written into the parameters in place, and
   a compiled module reads its parameters at every call, so one compilation serves every mask; the hooks
   mechanism would compile again for every block of masks and is refused. Outputs agree with the weight zeroing
   reference to float32 rounding, not bitwise (the compiler fuses and reorders). Off by default: compiling takes
   tens of seconds a model (about 34 s for the 28 x 28 ResNet on a 2-core CPU), which a sampling job pays again
   at every start, and ``benchmarks/bench_sampling.py --compile`` measures whether it pays on a device.

A pass that runs out of memory (``torch.OutOfMemoryError``, which ``torch.cuda.OutOfMemoryError`` is) is not
fatal: the engine empties the CUDA cache, halves the rows per pass (the hooks mechanism its masks per pass
first, then its batch size; the weights mechanism its batch size), runs the masks of that pass again with the
smaller plan, warns once per call and keeps the smaller plan for later calls. Out of memory at one row a pass
raises :class:`coar.errors.CoarError` with the model, the device and its free memory. The memory readings go
through :class:`_Memory`, which tests replace with simulated readings on a CPU.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .ablation import _check_eval, _expand, _module, ablation_hooks, logits_of, unit_factors, weight_slot
from .components import ComponentSet
from .errors import CoarError, ShapeError
from .resources import size_text

from .options import BATCHNORM, MECHANISMS, MEMORY_FORMATS  # noqa: E402 - the choices, torch-free there
#: torch.compile modes the weights mechanism can run its passes under ("off": the model as it is). "reduce-overhead"
#: adds CUDA graphs on a GPU (the masks are written into the weights in place, so a graph's replay reads them).
COMPILE = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
#: Rows per forward pass on a CPU (docs/benchmarks.md: 256-row passes run at the plain forward pass's best rate;
#: passes of thousands of rows measured 3x slower).
CPU_ROWS = 256
#: On a CPU one mask's examples fill a pass from this many rows on: below it, several masks a pass (hooks) win; from
#: it on, one mask a pass with its weights zeroed in place does (docs/benchmarks.md, the crossover table of
#: `bench_sampling.py --preset --examples`: the ResNet's crossing is at 64 examples).
CPU_FULL_ROWS = 64
#: At least this share of the forward FLOPs in convolutions makes a model a convnet for the memory-format rule.
CONV_SHARE = 0.5
#: The shared mechanism is chosen when the first component module (in call order, eligible: :func:`first_layer`)
#: carries at least this share of one example's forward multiply-accumulates (and see :data:`SHARED_MACS`). Measured on a 2-core CPU, 1 thread,
#: 200 examples (engine rows/s, shared against the better of weights and hooks): MLPs whose first layer carries
#: 42% to 99% of the MACs ran 1.17x to 6.6x faster shared (mlp_small, 99%: 6.5x); at 32% 1.02x; at 6% to 19%
#: 0.88x to 1.07x; vit_tiny (17%) 0.91x and resnet_tiny (4%) 0.88x ran slower.
SHARED_SHARE = 0.5
#: ... and computes at least this many multiply-accumulates per output value (a Linear's in_features, a
#: convolution's in_channels / groups x kernel size). What sharing adds per mask is one elementwise pass over that
#: module's output; what it saves is this many MACs per output value, which FLOP shares overstate when the module's
#: output is large and cheap to compute: a 3 x 7 x 7 convolution to 32 channels on 28 x 28 images (147 MACs an
#: output, 97% of the MACs) ran 0.6x to 1.0x shared, the activations after it being as slow as the convolution.
SHARED_MACS = 256
#: Share of a CUDA device's free memory that measured rows per pass may fill. The probe measures one pass of
#: at most :data:`PROBE_ROWS` rows; a larger pass can need more than its share of that: cuDNN and cuBLAS pick
#: other algorithms (and workspaces) for other batch shapes, the caching allocator rounds blocks up and leaves
#: fragments it cannot reuse, the call's [M, N] output buffer is not in the probe, and another process can take
#: memory meanwhile. A fifth kept free covers these; a pass that still does not fit is halved (module docstring).
SAFETY = 0.8
#: At most this many rows a pass from measured memory. More rows no longer shorten a sampling run once a pass
#: fills the GPU (the rule's 1,024 rows do for the preset's small models); beyond that they only lengthen one
#: pass, the work lost to a pass that runs out of memory and the store writer's blocks (4 passes of masks). A
#: fixed number, not a multiple of the rule's input-size estimate: the measurement already counts the input size.
GPU_MAX_ROWS = 8192
#: Rows of the probe pass that measures a row's memory (fewer when the rule gives fewer): enough that the fixed
#: part of a pass's memory is a small share of the per-row figure, few enough to fit beside a large model.
PROBE_ROWS = 64


@dataclass(frozen=True)
class Plan:
    """How the masked forward passes run: `masks_per_pass` masks on `batch_size` examples a pass."""

    mechanism: str
    memory_format: str
    batch_size: int
    masks_per_pass: int
    reason: str = ""
    #: Names of the BatchNorm modules folded into the convolution before them (empty: the model runs as given).
    folded: tuple[str, ...] = ()

    @property
    def rows_per_pass(self) -> int:
        return self.batch_size * self.masks_per_pass

    @property
    def masks_per_call(self) -> int:
        """Masks a store's writer hands the engine at once: 4 passes (each call ends in two msyncs of the store,
        about 0.5 ms a call on a 2-core VM; aligned blocks keep a resumed shard bitwise identical)."""
        return self.masks_per_pass * 4

    def choices(self) -> dict:
        """The keyword arguments of :class:`Engine` (or :func:`plan`) that reproduce this plan exactly."""
        return {"mechanism": self.mechanism, "memory_format": self.memory_format, "batch_size": self.batch_size,
                "masks_per_pass": self.masks_per_pass, "batchnorm": "fold" if self.folded else "keep"}

    def describe(self) -> str:
        return (f"{self.mechanism} ({self.masks_per_pass} mask{'s' if self.masks_per_pass > 1 else ''} x "
                f"{self.batch_size} examples a pass), {self.memory_format}"
                + (f", {len(self.folded)} BatchNorm folded" if self.folded else "")
                + (f": {self.reason}" if self.reason else ""))


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def rows_per_pass(device: str | torch.device, example_numel: int) -> int:
    """Rows a forward pass aims at: :data:`CPU_ROWS` on a CPU; on a GPU up to 1,024, fewer for large inputs
    (about 2^26 input values a pass, e.g. 445 rows of 3 x 224 x 224 images)."""
    if torch.device(device).type == "cpu":
        return CPU_ROWS
    return int(min(1024, max(32, 2 ** 26 // max(int(example_numel), 1))))


def full_rows(device: str | torch.device, example_numel: int) -> int:
    """Examples from which one mask a pass fills it: :data:`CPU_FULL_ROWS` on a CPU, more than half of
    :func:`rows_per_pass` on a GPU."""
    if torch.device(device).type == "cpu":
        return CPU_FULL_ROWS
    return rows_per_pass(device, example_numel) // 2 + 1


def equal_batch(n: int, rows: int) -> int:
    """Examples a pass when `n` examples are split into the fewest equal batches of at most `rows`."""
    return math.ceil(n / max(1, math.ceil(n / rows))) if n else 1


class _Memory:
    """Memory readings of the device a model runs on: what the engine sizes its passes by and frees after an
    out-of-memory error. Tests substitute an object with the same methods to simulate a GPU on a CPU."""

    def __init__(self, device: str | torch.device):
        self.device = torch.device(device)

    @property
    def _cuda(self) -> bool:
        return self.device.type == "cuda"

    def free(self) -> int:
        """Bytes a pass can still allocate: on CUDA the driver's free memory plus what torch's caching allocator
        holds unallocated (a previous pass's activations, reused without asking the driver); on a CPU the memory
        available to a new allocation."""
        if self._cuda:
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device))
        from .resources import available_memory

        return available_memory()

    def total(self) -> int:
        if self._cuda:
            return int(torch.cuda.mem_get_info(self.device)[1])
        import psutil

        return int(psutil.virtual_memory().total)

    def peak_of(self, fn: Callable[[], object]) -> int:
        """Bytes `fn()` allocated at its peak beyond what was allocated before it (CUDA only: torch counts no
        CPU allocations). Resets the device's peak-memory statistics."""
        if not self._cuda:
            raise CoarError(f"peak memory can be measured on a CUDA device only, not on {self.device}")
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        fn()
        torch.cuda.synchronize(self.device)
        return max(0, int(torch.cuda.max_memory_allocated(self.device)) - int(before))

    def release(self) -> None:
        """Hand the allocator's cached blocks back after an out-of-memory error (CUDA; nothing on a CPU)."""
        if self._cuda:
            torch.cuda.empty_cache()

    def describe(self) -> str:
        try:
            return f"{size_text(self.free())} free of {size_text(self.total())}"
        except Exception:  # noqa: BLE001 - the reading is only for an error message
            return "free memory unknown"


def saved_weight_bytes(model: nn.Module, cset: ComponentSet) -> int:
    """Bytes of the copy of the component weights that the weights mechanism keeps to restore them."""
    seen: dict[int, int] = {}
    for group in cset.groups:
        weight, _, _ = weight_slot(model, group)
        seen[id(weight)] = weight.numel() * weight.element_size()
    return sum(seen.values())


def measured_rows(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, memory, *, memory_format: str,
                  folded: tuple[str, ...] = (), probe_rows: int = PROBE_ROWS, hooks: bool = True,
                  reserve: int = 0) -> tuple[int, str]:
    """(rows per pass that fit in memory, why): one probe pass of `probe_rows` copies of the first example
    through the model as the engine runs it (memory format, folded BatchNorm and, with `hooks`, the ablation
    hooks of `probe_rows` masks) gives the peak bytes a row allocates (peak / rows: the pass's fixed part is
    counted in every row, so the figure errs high); the rows are :data:`SAFETY` x (free - `reserve`) / that,
    at most :data:`GPU_MAX_ROWS` and at least 1. A 1-row pass runs first, so workspaces libraries allocate
    once are not counted as rows' memory. A probe that runs out of memory is halved."""
    run = prepare(model, Plan("hooks", memory_format, 1, 1, folded=folded), cset)
    x1 = inputs[:1].to(_device_of(run))
    if hooks and any(isinstance(_module(run, g), nn.MultiheadAttention) for g in cset.groups):
        hooks = False  # the fused attention path skips hooks: only the weights mechanism can mask this model

    def probe(r: int) -> None:
        x = as_format(_repeat(x1, r), memory_format)
        ctx = ablation_hooks(run, cset, torch.ones(r, cset.size, dtype=torch.bool)) if hooks else \
            contextlib.nullcontext()
        with torch.no_grad(), ctx:
            logits_of(run(x))

    r = max(1, int(probe_rows))
    while True:
        try:
            probe(1)
            peak = memory.peak_of(lambda: probe(r))
            break
        except torch.OutOfMemoryError as exc:
            if r == 1:
                raise CoarError(f"{type(model).__name__} runs out of memory on {memory.device} on one example "
                                f"({memory.describe()}): {exc}") from exc
        memory.release()  # outside the except clause: the traceback no longer holds the probe's tensors
        r //= 2
    free = memory.free()
    per_row = max(1, math.ceil(peak / r))
    fit = int(SAFETY * max(0, free - reserve) // per_row)
    rows = min(GPU_MAX_ROWS, max(1, fit))
    why = (f"{rows:,} rows a pass from measured memory: {SAFETY:.0%} of {size_text(free)} free"
           + (f" (less {size_text(reserve)} of saved weights)" if reserve else "")
           + f" / {size_text(per_row)} a row (peak of a {r}-row probe)"
           + (f", capped at {GPU_MAX_ROWS:,}" if fit > GPU_MAX_ROWS else ""))
    return rows, why


def _macs(module: nn.Module, args, out) -> int:
    """Multiply-accumulates of one call of a convolution, Linear or MultiheadAttention module (0 for another)."""
    if not isinstance(out, torch.Tensor) and not isinstance(module, nn.MultiheadAttention):
        return 0
    if isinstance(module, nn.modules.conv._ConvNd):
        if isinstance(module, nn.modules.conv._ConvTransposeNd):  # each input value meets out/groups x kernel
            return args[0].numel() * module.out_channels // module.groups * math.prod(module.kernel_size)
        return out.numel() * (module.in_channels // module.groups * math.prod(module.kernel_size))
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.MultiheadAttention) and len(args) >= 2:
        q, k = args[0], args[1]
        e, tq, tk = module.embed_dim, q.numel() // q.shape[-1], k.numel() // k.shape[-1]
        s = q.shape[1] if module.batch_first and q.dim() == 3 else q.shape[0]
        return (tq + 2 * tk) * e * e + tq * e * e + 2 * tq * s * e
    return 0


_COUNTED = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention)


def conv_flop_share(model: nn.Module, example: torch.Tensor) -> float:
    """Share of one example's forward multiply-accumulates spent in convolutions (0 when the pass fails).

    Counted by forward hooks on the modules that carry a network's arithmetic: convolutions (output size x
    input channels per group x kernel size), Linear (output size x input features) and MultiheadAttention
    (projections and attention products, from the query and key shapes). Arithmetic outside such modules (a
    functional matmul) is not seen. torch's FlopCounterMode counts every op but imports sympy on first use, a
    second at the start of every sampling job for a choice this coarse."""
    counts = {"conv": 0, "other": 0}

    def count(module, args, out):
        counts["conv" if isinstance(module, nn.modules.conv._ConvNd) else "other"] += _macs(module, args, out)

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, _COUNTED)]
    try:
        with torch.no_grad():
            model(example)
    except Exception:  # noqa: BLE001 - a model that cannot take one example alone: no evidence for a convnet
        return 0.0
    finally:
        for h in handles:
            h.remove()
    total = counts["conv"] + counts["other"]
    return counts["conv"] / total if total else 0.0


def first_layer(model: nn.Module, cset: ComponentSet, example: torch.Tensor) -> tuple[int, float, int, str]:
    """(index of the component group the shared mechanism can compute once, its module's share of one example's
    forward multiply-accumulates, its multiply-accumulates per output value, '') when the model allows it, else
    (-1, 0.0, 0, why not).

    The shared mechanism computes the unablated output of the first component module once per batch of examples
    and only masks it per mask; that is exact when, and only when, the module's input depends on no mask and
    its ablated output is a function of its unablated output. Checked, not assumed, with one probe pass on
    `example` (pre-hooks record the call order of the component modules; forward hooks count the
    multiply-accumulates as :func:`conv_flop_share` does, HF Conv1D included): the first component module called
    is an nn.Linear or nn.Conv2d called exactly once; its only component group is its output units (Linear rows,
    convolution filters); its weight is a plain parameter (not parametrized), shared with no other module; it
    has no hooks and no patched forward, and no global forward hooks are registered. Data-dependent control flow
    that calls it again or calls another component module first is caught while the engine runs."""
    from torch.nn.modules import module as module_globals
    from torch.nn.utils import parametrize

    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return -1, 0.0, 0, "global forward hooks are registered"
    modules: dict[int, tuple[nn.Module, list[int]]] = {}
    for i, group in enumerate(cset.groups):
        try:
            m = _module(model, group)
        except Exception as exc:  # noqa: BLE001 - an unresolvable group: the other mechanisms report it
            return -1, 0.0, 0, str(exc)
        modules.setdefault(id(m), (m, []))[1].append(i)
    order: list[int] = []
    macs = {"first": 0, "total": 0}

    def called(module, args):
        order.append(id(module))

    def count(module, args, out):
        n = _macs(module, args, out)
        if not n and "Conv1D" in {c.__name__ for c in type(module).__mro__} and isinstance(out, torch.Tensor):
            n = out.numel() * module.weight.shape[0]  # HF Conv1D: weight (in, out)
        macs["total"] += n
        if order and id(module) == order[0] and order.count(order[0]) == 1:
            macs["first"] += n

    handles = [m.register_forward_pre_hook(called) for m, _ in modules.values()]
    handles += [m.register_forward_hook(count) for m in model.modules()
                if isinstance(m, _COUNTED) or "Conv1D" in {c.__name__ for c in type(m).__mro__}]
    try:
        with torch.no_grad():
            model(example)
    except Exception as exc:  # noqa: BLE001 - a model that cannot take one example alone: not probed, not shared
        return -1, 0.0, 0, f"the probe pass on one example failed ({type(exc).__name__})"
    finally:
        for h in handles:
            h.remove()
    if not order:
        return -1, 0.0, 0, "no component module is called in a forward pass"
    module, groups = modules[order[0]]
    name = cset.groups[groups[0]].module
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        return -1, 0.0, 0, f"the first component module, {name}, is a {type(module).__name__}, not a Linear or Conv2d"
    if order.count(order[0]) != 1:
        return -1, 0.0, 0, f"the first component module, {name}, is called {order.count(order[0])} times a pass"
    if len(groups) != 1 or cset.groups[groups[0]].site != "output":
        return -1, 0.0, 0, f"{name}'s components are not only its output units (input features are masked too)"
    if parametrize.is_parametrized(module) or not isinstance(module.weight, nn.Parameter):
        return -1, 0.0, 0, f"{name}'s weight is computed (parametrized), not a plain parameter"
    if _has_hooks(module) or "forward" in vars(module):
        return -1, 0.0, 0, f"{name} has hooks or a patched forward"
    own = {id(p) for p in module.parameters(recurse=False)}
    for _, m in model.named_modules(remove_duplicate=False):
        if m is not module and any(id(p) in own for p in m.parameters(recurse=False)):
            return -1, 0.0, 0, f"{name}'s parameters are shared with another module"
    share = macs["first"] / macs["total"] if macs["total"] else 0.0
    per_output = module.in_features if isinstance(module, nn.Linear) else \
        module.in_channels // module.groups * math.prod(module.kernel_size)
    return groups[0], share, per_output, ""


def model_memory_format(model: nn.Module) -> str:
    """"channels_last" when the model's 4-D weights are stored channels-last, else "contiguous"."""
    for p in model.parameters():
        if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
            return "channels_last"
    return "contiguous"


def _weights_maskable(model: nn.Module, cset: ComponentSet) -> str:
    """'' when every component group's weight is a plain parameter that can be overwritten in place; else why not."""
    from torch.nn.utils import parametrize

    for group in cset.groups:
        module = _module(model, group)
        if parametrize.is_parametrized(module):
            return f"{group.module} is parametrized (its weight is computed at every forward pass)"
        weight, _, _ = weight_slot(model, group)
        if not isinstance(weight, nn.Parameter):
            return f"{group.module}'s weight is not a parameter"
    return ""


_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or getattr(module, "_backward_hooks", None))


def _conv_bn_nodes(model: nn.Module, cset: ComponentSet):
    """(torch.fx GraphModule, [(conv node, BatchNorm node)] that can be folded, why none can) for `model`."""
    from torch.fx import symbolic_trace
    from torch.nn.modules import module as module_globals
    from torch.nn.utils import parametrize

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None, [], "no BatchNorm"
    if module_globals._global_forward_hooks or module_globals._global_forward_pre_hooks:
        return None, [], "global forward hooks are registered"
    try:
        gm = symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - data-dependent control flow, a scripted model: not traceable
        return None, [], f"torch.fx cannot trace the model ({type(exc).__name__})"
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    shared = {}  # parameters reachable from more than one module (tied weights) are never rewritten
    for _, m in model.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            shared[id(p)] = shared.get(id(p), 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        bn, src = gm.get_submodule(node.target), node.args[0]
        if not (getattr(src, "op", None) == "call_module" and type(bn) in _CONV_BN.values()):
            continue
        conv = gm.get_submodule(src.target)
        if (_CONV_BN.get(type(conv)) is not type(bn) or len(src.users) != 1 or calls[src.target] != 1
                or calls[node.target] != 1 or bn.training or bn.running_mean is None
                or bn.running_var is None or _has_hooks(conv) or _has_hooks(bn) or parametrize.is_parametrized(conv)
                or any(shared[id(p)] > 1 for p in conv.parameters())):
            continue
        pairs.append((src, node))
    return gm, pairs, "" if pairs else "no BatchNorm directly after a convolution whose output it alone reads"


def foldable(model: nn.Module, cset: ComponentSet) -> tuple[tuple[str, ...], str]:
    """(names of the BatchNorm modules that can be folded into the convolution before them, why none can)."""
    _, pairs, why = _conv_bn_nodes(model, cset)
    return tuple(bn.target for _, bn in pairs), why


@torch.no_grad()
def _fused_conv(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of `conv` computing conv followed by the eval-mode `bn`, weights computed in float64."""
    w = conv.weight.detach().double()
    s = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(s)
    b = (b - bn.running_mean.double()) * s
    if bn.bias is not None:
        b = b + bn.bias.detach().double()
    fused = copy.deepcopy(conv)
    fused.weight = nn.Parameter((w * s.view(-1, *[1] * (w.dim() - 1))).to(conv.weight.dtype),  # format: prepare()
                                requires_grad=conv.weight.requires_grad)
    fused.bias = nn.Parameter(b.to(conv.weight.dtype), requires_grad=conv.weight.requires_grad)
    return fused


def fold_batchnorm(model: nn.Module, cset: ComponentSet, names: tuple[str, ...]) -> nn.Module:
    """A torch.fx copy of `model` with the BatchNorm modules `names` (from :func:`foldable`) folded into their
    convolutions; every other module keeps its name, so `cset` resolves on the copy as on `model`."""
    gm, pairs, _ = _conv_bn_nodes(copy.deepcopy(model), cset)
    pairs = [(c, b) for c, b in pairs if b.target in set(names)]
    if {b.target for _, b in pairs} != set(names):
        raise CoarError(f"cannot fold BatchNorm {sorted(set(names) - {b.target for _, b in pairs})} of this model")
    for conv_node, bn_node in pairs:
        parent, _, leaf = conv_node.target.rpartition(".")
        setattr(gm.get_submodule(parent), leaf, _fused_conv(gm.get_submodule(conv_node.target),
                                                            gm.get_submodule(bn_node.target)))
        bn_node.replace_all_uses_with(conv_node)
        gm.graph.erase_node(bn_node)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm.train(model.training)


def plan(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, *, device: str | torch.device | None = None,
         mechanism: str = "auto", memory_format: str = "auto", batch_size: int | None = None,
         masks_per_pass: int | None = None, batchnorm: str = "auto", memory: _Memory | None = None) -> Plan:
    """The engine's choice for `model` on `inputs` [N, ...] (module docstring); given values are kept.

    With neither `batch_size` nor `masks_per_pass` given, on a CUDA device or wherever `memory` (a
    :class:`_Memory`, or simulated readings) is given, the rows per pass are measured (:func:`measured_rows`) and
    one mask's examples fill a pass when they are more than half of them; otherwise the rule
    (:func:`rows_per_pass`, :func:`full_rows`) gives both."""
    if mechanism not in MECHANISMS:
        raise CoarError(f"ablation mechanism must be one of {MECHANISMS}, got {mechanism!r}")
    if memory_format not in MEMORY_FORMATS:
        raise CoarError(f"memory format must be one of {MEMORY_FORMATS}, got {memory_format!r}")
    if batchnorm not in BATCHNORM:
        raise CoarError(f"batchnorm must be one of {BATCHNORM}, got {batchnorm!r}")
    for name, v in (("batch_size", batch_size), ("masks_per_pass", masks_per_pass)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
            raise CoarError(f"{name} must be an integer >= 1 (or None: chosen by the engine), got {v!r}")
    dev = torch.device(device) if device is not None else _device_of(model)
    n = len(inputs)
    numel = inputs[0].numel() if n else 1
    rows, full = rows_per_pass(dev, numel), full_rows(dev, numel)
    reasons = []

    image = inputs.dim() == 4 and inputs.is_floating_point()
    if memory_format == "auto":
        share = conv_flop_share(model, inputs[:1].to(dev)) if image else 0.0
        memory_format = "channels_last" if image and share >= CONV_SHARE else "contiguous"
        if image:
            reasons.append(f"convolutions are {100 * share:.0f}% of the FLOPs")
    elif memory_format == "channels_last" and not image:
        raise CoarError(f"memory format channels_last needs image inputs [N, C, H, W], got {tuple(inputs.shape)} "
                        f"{inputs.dtype}")

    why_not = _weights_maskable(model, cset) if mechanism in ("auto", "weights") else ""
    folded: tuple[str, ...] = ()
    if batchnorm != "keep":
        folded, why = foldable(model, cset)
        if batchnorm == "fold" and not folded:
            raise CoarError(f"batchnorm='fold': nothing to fold in this model ({why}); use 'auto' or 'keep'")
    on = _device_of(model)  # where the probe runs: a model elsewhere than `device` gets the rule's estimate
    if mechanism in ("auto", "shared"):
        first, share, per_output, why_shared = (first_layer(model, cset, inputs[:1].to(on)) if n else
                                                (-1, 0.0, 0, "no examples"))
        if mechanism == "shared" and first < 0:
            raise CoarError(f"the shared mechanism cannot run on this model: {why_shared}; use 'weights' or 'hooks' "
                            "(or 'auto')")
        if first >= 0 and (mechanism == "shared" or (share >= SHARED_SHARE and per_output >= SHARED_MACS)):
            mechanism = "shared"
            reasons.append(f"{cset.groups[first].module} carries {100 * share:.0f}% of the FLOPs ({per_output} MACs an "
                           "output) and runs once for every mask")
    if batch_size is None and masks_per_pass is None and (memory is not None or on.type == "cuda"):
        weights = mechanism in ("auto", "weights") and not why_not
        rows, why = measured_rows(model, cset, inputs, memory if memory is not None else _Memory(on),
                                  memory_format=memory_format, folded=folded, probe_rows=min(rows, PROBE_ROWS),
                                  hooks=mechanism != "weights", reserve=saved_weight_bytes(model, cset) if weights else 0)
        full = rows // 2 + 1
        reasons.append(why)
    if mechanism == "auto":
        b = batch_size if batch_size is not None else max(1, min(n, rows))
        if masks_per_pass is not None:
            k = masks_per_pass
        elif batch_size is not None:
            k = max(1, rows // b)  # the rows per pass are kept
        else:
            k = 1 if n >= full else max(1, rows // b)
        if k > 1:
            mechanism = "hooks"
            reasons.append(f"{k} masks of {b} examples a pass" if masks_per_pass is not None or batch_size is not None
                           else f"{n} examples fill less than a pass ({full} rows on {dev.type})")
        else:
            mechanism = "hooks" if why_not else "weights"
            reasons.append((f"{n} examples fill a pass ({full} rows on {dev.type})" if masks_per_pass is None
                            else "one mask a pass") + (f", but {why_not}" if why_not else ""))
    if mechanism == "shared":  # as "auto" sizes its passes: one mask a pass when the examples fill it
        if masks_per_pass is None:
            b = batch_size if batch_size is not None else max(1, min(n, rows))
            masks_per_pass = max(1, rows // b) if batch_size is not None or n < full else 1
            reasons.append(f"{masks_per_pass} masks of {b} examples a pass" if batch_size is not None else
                           f"{n} examples fill {'a pass' if n >= full else 'less than a pass'} ({full} rows on "
                           f"{dev.type})")
        if batch_size is None:
            batch_size = equal_batch(n, rows) if masks_per_pass == 1 else max(1, min(n, rows // masks_per_pass))
    elif mechanism == "weights":
        if masks_per_pass not in (None, 1):
            raise CoarError(f"the weights mechanism runs one mask per pass; masks_per_pass={masks_per_pass} needs "
                            "mechanism 'hooks'")
        if why_not:
            raise CoarError(f"the weights mechanism cannot mask this model in place: {why_not}; use 'hooks'")
        masks_per_pass = 1
        if batch_size is None:  # equal batches of at most `rows` examples
            batch_size = equal_batch(n, rows)
    else:
        if batch_size is None:
            batch_size = max(1, min(n, rows)) if masks_per_pass is None else max(1, min(n, rows // masks_per_pass))
        if masks_per_pass is None:
            masks_per_pass = max(1, rows // batch_size)
    return Plan(mechanism, memory_format, int(batch_size), int(masks_per_pass), "; ".join(reasons), folded)


def prepare(model: nn.Module, p: Plan, cset: ComponentSet) -> nn.Module:
    """The module the passes run on: `model` itself when it already has the plan's memory format and nothing is
    folded, else a copy with BatchNorm folded and converted to the format (the caller's model never changes)."""
    if model_memory_format(model) == p.memory_format and not p.folded:
        return model
    fmt = torch.channels_last if p.memory_format == "channels_last" else torch.contiguous_format
    run = fold_batchnorm(model, cset, p.folded) if p.folded else copy.deepcopy(model)
    return run.to(memory_format=fmt)


def as_format(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    if memory_format == "channels_last" and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


class _WeightMasks:
    """Mechanism "weights": `apply(r)` writes mask r's factors into the component weights; `restore()` puts back
    the original weights bitwise. Factors are those of `unit_factors`, multiplied in the weight's dtype in the
    groups' order, exactly as `ablate_weights` does, so the masked weights are bitwise the reference's."""

    def __init__(self, model: nn.Module, cset: ComponentSet, factors: torch.Tensor):
        self.slots = []  # (weight, original, [K, width] factors in the weight's dtype, view shape, first use)
        self.originals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, group in enumerate(cset.groups):
            weight, dim, _ = weight_slot(model, group)
            first = id(weight) not in self.originals
            if first:
                self.originals[id(weight)] = (weight, weight.detach().clone())
            s = _expand(factors[:, cset.group_range(i)], group).to(weight.device, weight.dtype)
            shape = [1] * weight.dim()
            shape[dim] = group.width
            self.slots.append((weight, self.originals[id(weight)][1], s, shape, first))

    @torch.no_grad()
    def apply(self, r: int) -> None:
        for weight, original, s, shape, first in self.slots:
            if first:  # the first group of a weight rewrites it whole from the original
                torch.mul(original, s[r].view(shape), out=weight)
            else:  # later groups of the same weight (another dim or site) multiply on, as ablate_weights does
                weight.mul_(s[r].view(shape))

    @torch.no_grad()
    def restore(self) -> None:
        for weight, original in self.originals.values():
            weight.copy_(original)


class _Stop(BaseException):
    """Ends a forward pass at the first component module once its output is computed (a BaseException, so a
    model's own ``except Exception`` cannot swallow it)."""


class _SharedFirst:
    """Mechanism "shared": the first component module's unablated output h on a batch of examples is computed
    once (`output_of`) and every mask only masks it (`masked`): per block r of K masks, h * s_r + bias * (1 - s_r),
    the output weight zeroing (or scaling by gamma) of its rows gives, bias kept, as the ablation hooks compute it.
    While `installed()`, the module's forward returns the masked output it was handed (`serve`) instead of
    computing; the rest of the model runs as usual, its other component groups masked by the ablation hooks
    (`rest`, with the columns `rest_cols` of the masks)."""

    def __init__(self, model: nn.Module, cset: ComponentSet, index: int):
        self.model, self.index, self.group = model, index, cset.groups[index]
        self.module = _module(model, self.group)
        _, _, bias = weight_slot(model, self.group)
        self.bias = None if bias is None else bias.detach()
        self.chan = 1 if isinstance(self.module, nn.Conv2d) else -1
        others = [g for i, g in enumerate(cset.groups) if i != index]
        self.rest = ComponentSet(others, name=cset.name) if others else None
        self.rest_cols = np.concatenate([np.arange(cset.offsets[i], cset.offsets[i + 1])
                                         for i in range(len(cset.groups)) if i != index] or [np.zeros(0, int)])
        self._served: torch.Tensor | None = None
        self._input_shape: tuple[int, ...] = ()
        self._capture = False
        self._seen: list[str] = []

    def _forward(self, *args, **kwargs):
        if self._capture:  # the unablated output on the batch, then the pass ends here
            self._input_shape = tuple(args[0].shape)
            raise _Stop(type(self.module).forward(self.module, *args, **kwargs))
        out, self._served = self._served, None
        if out is None:
            raise CoarError(f"the shared mechanism: {self.group.module} was called twice in one forward pass (the "
                            "model's control flow depends on its inputs); use mechanism 'weights' or 'hooks'")
        rows = out.shape[0] // self._output_rows
        if tuple(args[0].shape) != (rows * self._input_shape[0],) + self._input_shape[1:]:
            raise CoarError(f"the shared mechanism: {self.group.module} received an input of shape "
                            f"{tuple(args[0].shape)} in a pass of {rows} blocks of its input {self._input_shape}; use "
                            "mechanism 'weights' or 'hooks'")
        return out

    @contextlib.contextmanager
    def installed(self):
        """The module's forward replaced by the shared one, restored (the class's forward again) on exit."""
        self.module.forward = self._forward
        try:
            yield self
        finally:
            del self.module.forward
            self._served, self._capture = None, False

    def output_of(self, x: torch.Tensor) -> torch.Tensor:
        """The module's unablated output on the batch `x` (model inputs), from a pass that stops there; refuses a
        batch on which another component module runs first (data-dependent control flow)."""
        first = []
        modules = {id(_module(self.model, g)): g.module for g in (self.rest.groups if self.rest else ())}
        handles = [_module(self.model, g).register_forward_pre_hook(lambda m, a: first.append(modules[id(m)]))
                   for g in (self.rest.groups if self.rest else ())]
        self._capture = True
        try:
            self.model(x)
        except _Stop as stop:
            h = stop.args[0]
        else:
            raise CoarError(f"the shared mechanism: {self.group.module} was not called in a forward pass on these "
                            "examples; use mechanism 'weights' or 'hooks'")
        finally:
            self._capture = False
            for handle in handles:
                handle.remove()
        if first:
            raise CoarError(f"the shared mechanism: {first[0]} ran before {self.group.module} on these examples; use "
                            "mechanism 'weights' or 'hooks'")
        if not isinstance(h, torch.Tensor) or h.shape[0] != self._input_shape[0]:
            raise CoarError(f"the shared mechanism: {self.group.module}'s output does not hold one row per row of its "
                            "input; use mechanism 'weights' or 'hooks'")
        self._output_rows = h.shape[0]
        return h

    def serve(self, h: torch.Tensor, s: torch.Tensor) -> None:
        """Hand the next forward pass K blocks of `h` masked by the factors s [K, units] (float32)."""
        s = _expand(s, self.group).to(h.device)
        K, nd = s.shape[0], h.dim()
        shape = [K] + [1] * nd
        shape[self.chan % nd + 1] = s.shape[1]
        s_ = s.to(h.dtype).view(shape)
        # [K, B, ...] in h's layout with the block outermost (a channels-last h stays channels-last), so flattening
        # the blocks is a view; written into a preallocated view instead, torch computes a temporary and copies it
        if self.bias is None:
            out = h.unsqueeze(0) * s_
        else:  # bias + s * (y - bias) as bias * (1 - s) + s * y, the ablation hooks' products
            out = torch.addcmul((self.bias[None, :] * (1.0 - s)).to(h.dtype).view(shape), h.unsqueeze(0), s_)
        self._served = out.flatten(0, 1)


class Engine:
    """Counterfactual outputs of one model on one example set, planned once and run on any number of masks.

    >>> engine = Engine(model, cset, x, y, margin)        # doctest: +SKIP
    >>> engine.plan.describe(); out = engine(keep)         # float32 [len(keep), N]  # doctest: +SKIP

    The caller's model is never left changed: the weights mechanism restores its weights bitwise after every
    call, and another memory format or folded BatchNorm runs on a copy. A pass that runs out of memory is run
    again with half the rows, and `plan` keeps the smaller plan (module docstring). `memory` replaces the
    device's memory readings (:class:`_Memory`).
    """

    def __init__(self, model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor,
                 output_fn: Callable, mode: str = "zero", gamma: float = 0.5, *, batch_size: int | None = None,
                 masks_per_pass: int | None = None, mechanism: str = "auto", memory_format: str = "auto",
                 batchnorm: str = "auto", memory: _Memory | None = None, compile: str = "off"):
        if compile not in COMPILE:
            raise CoarError(f"compile must be one of {COMPILE}, got {compile!r}")
        if len(inputs) != len(targets):
            raise ShapeError(f"inputs ({len(inputs)}) and targets ({len(targets)}) differ in length")
        unit_factors(np.zeros(1, dtype=bool), mode, gamma)  # refuses an unknown mode or gamma outside [0, 1]
        _check_eval(model)
        self.cset, self.output_fn, self.mode, self.gamma = cset, output_fn, mode, gamma
        self.plan = plan(model, cset, inputs, mechanism=mechanism, memory_format=memory_format,
                         batch_size=batch_size, masks_per_pass=masks_per_pass, batchnorm=batchnorm, memory=memory)
        self._planned, self._model_name = self.plan, type(model).__name__
        if compile != "off" and self.plan.mechanism != "weights":
            raise CoarError(f"compile={compile!r} runs with the weights mechanism only (one mask a pass, the masks "
                            f"written into the weights): the hooks and shared mechanisms register new hooks for every "
                            f"block of masks, which would compile the model again for every block; the plan is "
                            f"{self.plan.describe()}. Give mechanism='weights', or compile='off'")
        self.model = prepare(model, self.plan, cset)
        self.device = _device_of(self.model)
        #: what the weights mechanism's passes call: the model, or torch.compile's wrapper of it (same parameters)
        self.compile = compile
        self._forward = self.model if compile == "off" else torch.compile(
            self.model, mode=None if compile == "default" else compile, dynamic=False)
        self.memory = memory if memory is not None else _Memory(self.device)
        # converted once where the inputs live: a batch sliced from it keeps the format, so no pass copies it
        self.inputs, self.targets = as_format(inputs, self.plan.memory_format), targets
        self._shared = None
        if self.plan.mechanism == "shared":  # checked again on the module that runs (a copy: folded, converted)
            first, _, _, why = first_layer(self.model, cset, self.inputs[:1].to(self.device))
            if first < 0:
                raise CoarError(f"the shared mechanism cannot run on this model: {why}; use 'weights' or 'hooks'")
            self._shared = _SharedFirst(self.model, cset, first)
        #: the shared mechanism's first-layer outputs, kept across calls when one batch holds every example
        self._first_outputs: dict[tuple[int, int], torch.Tensor] = {}

    def _batches(self):
        b = self.plan.batch_size
        for j in range(0, len(self.inputs), b):
            yield (j, self.inputs[j: j + b].to(self.device, non_blocking=True),
                   self.targets[j: j + b].to(self.device, non_blocking=True))

    def _pass_batches(self):
        """The batches of a pass: held on the device across passes when one batch holds every example."""
        return list(self._batches()) if len(self.inputs) <= self.plan.batch_size else None

    @torch.no_grad()
    def __call__(self, keep, progress: bool = False) -> np.ndarray:
        keep = torch.as_tensor(np.asarray(keep) if not isinstance(keep, torch.Tensor) else keep)
        if keep.dim() != 2 or keep.shape[1] != self.cset.size:
            raise ShapeError(f"keep masks must have shape [M, {self.cset.size}], got {tuple(keep.shape)}")
        out = np.empty((keep.shape[0], len(self.inputs)), dtype=np.float32)
        start = self.plan
        try:
            if self.plan.mechanism == "weights":
                self._run_weights(keep, out, progress)
            elif self.plan.mechanism == "shared":
                self._run_shared(keep, out, progress)
            else:
                self._run_hooks(keep, out, progress)
        finally:
            if self.plan != start:
                warnings.warn(f"out of memory at {start.rows_per_pass:,} rows a pass on {self.device}; the engine "
                              f"went on, and goes on, with {self.plan.describe()}", RuntimeWarning, stacklevel=3)
        return out

    def _out_of_memory(self, exc: BaseException) -> None:
        """Raise CoarError when the pass that ran out of memory had one row; else nothing (see `_halve`)."""
        if self.plan.rows_per_pass <= 1:
            raise CoarError(f"{self._model_name} runs out of memory on {self.device} on one example a "
                            f"pass ({self.memory.describe()}); free memory on the device or run on a larger "
                            f"one: {exc}") from exc

    def _halve(self) -> None:
        """Free the allocator's cache and halve the rows per pass: masks per pass first, then the batch size (in
        equal batches)."""
        self.memory.release()
        p, n = self.plan, len(self.inputs)
        if p.masks_per_pass > 1:
            new = dataclasses.replace(p, masks_per_pass=p.masks_per_pass // 2)
        else:
            new = dataclasses.replace(p, batch_size=equal_batch(n, max(1, p.batch_size // 2)))
        planned = self._planned  # the first pass out of memory ran the plan as planned
        self.plan = dataclasses.replace(new, reason=(planned.reason + "; " if planned.reason else "")
                                        + f"out of memory at {planned.rows_per_pass:,} rows a pass, halved to "
                                          f"{new.rows_per_pass:,}")

    def _run_weights(self, keep: torch.Tensor, out: np.ndarray, progress: bool) -> None:
        masks = _WeightMasks(self.model, self.cset, unit_factors(keep, self.mode, self.gamma))
        batches = self._pass_batches()
        vals = torch.empty(out.shape, dtype=torch.float32, device=self.device)  # one copy to the host per call
        bar = tqdm(total=keep.shape[0], desc="counterfactuals", disable=not progress, leave=False)
        i = 0
        try:
            while i < keep.shape[0]:
                try:
                    masks.apply(i)
                    for j, x, y in (batches or self._batches()):
                        vals[i, j: j + len(x)] = self.output_fn(logits_of(self._forward(x)), y)
                except torch.OutOfMemoryError as exc:
                    self._out_of_memory(exc)
                else:
                    i += 1
                    bar.update(1)
                    continue
                # out of memory; outside the except clause, the traceback no longer holds the pass's tensors
                batches = x = y = None
                self._halve()
                batches = self._pass_batches()  # and mask i again, all of its batches, with the smaller ones
        finally:  # also on KeyboardInterrupt: the model's weights are bitwise the original ones again
            masks.restore()
            bar.close()
        out[...] = vals.cpu().numpy()

    def _run_hooks(self, keep: torch.Tensor, out: np.ndarray, progress: bool) -> None:
        batches = self._pass_batches()
        vals = torch.empty(out.shape, dtype=torch.float32, device=self.device)
        bar = tqdm(total=keep.shape[0], desc="counterfactuals", disable=not progress, leave=False)
        i = 0
        try:
            while i < keep.shape[0]:
                k = keep[i: i + self.plan.masks_per_pass]
                try:
                    with ablation_hooks(self.model, self.cset, k, self.mode, self.gamma):
                        for j, x, y in (batches or self._batches()):
                            n = len(x)
                            rows = as_format(_repeat(x, len(k)), self.plan.memory_format)
                            vals[i: i + len(k), j: j + n] = self.output_fn(logits_of(self.model(rows)),
                                                                           _repeat(y, len(k))).view(len(k), n)
                except torch.OutOfMemoryError as exc:
                    self._out_of_memory(exc)
                else:
                    i += len(k)
                    bar.update(len(k))
                    continue
                # out of memory; outside the except clause, the traceback no longer holds the pass's tensors
                batches = x = y = rows = None
                self._halve()
                batches = self._pass_batches()  # and masks i, ... again with the smaller plan
        finally:
            bar.close()
        out[...] = vals.cpu().numpy()


    def _run_shared(self, keep: torch.Tensor, out: np.ndarray, progress: bool) -> None:
        """Batch after batch: the first component module's output once, then every block of K masks on it."""
        sh = self._shared
        s_all = unit_factors(keep, self.mode, self.gamma).to(self.device)
        s_first = s_all[:, self.cset.group_range(sh.index)]
        keep_rest = keep[:, torch.as_tensor(sh.rest_cols, dtype=torch.long)] if sh.rest is not None else None
        vals = torch.empty(out.shape, dtype=torch.float32, device=self.device)
        m_total = keep.shape[0]
        bar = tqdm(total=m_total, desc="counterfactuals", disable=not progress, leave=False)
        keep_all = True
        try:
            while True:
                b, K = self.plan.batch_size, self.plan.masks_per_pass
                keep_all = len(self.inputs) <= b  # one batch holds every example: its output serves every call
                if not keep_all:
                    self._first_outputs.clear()
                try:
                    with sh.installed():
                        for j, x, y in self._batches():
                            h = self._first_outputs.get((j, b))
                            if h is None:
                                h = sh.output_of(x)
                                if not keep_all:  # only the batch in hand
                                    self._first_outputs.clear()
                                self._first_outputs[(j, b)] = h
                            n = len(x)
                            for i in range(0, m_total, K):
                                k = min(K, m_total - i)
                                rows = as_format(_repeat(x, k), self.plan.memory_format)
                                sh.serve(h, s_first[i: i + k])
                                ctx = (ablation_hooks(self.model, sh.rest, keep_rest[i: i + k], self.mode, self.gamma)
                                       if sh.rest is not None else contextlib.nullcontext())
                                with ctx:
                                    vals[i: i + k, j: j + n] = self.output_fn(logits_of(self.model(rows)),
                                                                              _repeat(y, k)).view(k, n)
                            if j + n >= len(self.inputs):
                                bar.update(m_total)
                except torch.OutOfMemoryError as exc:
                    self._out_of_memory(exc)
                else:
                    break
                # out of memory; outside the except clause, the traceback no longer holds the pass's tensors
                x = y = rows = h = None
                self._first_outputs.clear()
                self._halve()  # and every mask again, batch after batch, with the smaller plan
        finally:
            if not keep_all:
                self._first_outputs.clear()
            bar.close()
        out[...] = vals.cpu().numpy()

def counterfactual_outputs(model: nn.Module, cset: ComponentSet, inputs: torch.Tensor, targets: torch.Tensor,
                           keep, output_fn: Callable, mode: str = "zero", gamma: float = 0.5,
                           batch_size: int | None = None, masks_per_pass: int | None = None, progress: bool = False,
                           *, mechanism: str = "auto", memory_format: str = "auto",
                           batchnorm: str = "auto", compile: str = "off") -> np.ndarray:
    """f_M(z, C_i) for every mask i and example z: returns float32 [M, N].

    Each forward pass runs `masks_per_pass` masks on `batch_size` examples. Every choice left as None or
    "auto" is the engine's (coar.engine: the mechanism, the memory format and the batch shape for this model,
    device and size); to run many mask sets on the same model and examples, build one coar.engine.Engine.
    `compile` (:data:`COMPILE`) runs the weights mechanism's passes under torch.compile.
    """
    engine = Engine(model, cset, inputs, targets, output_fn, mode, gamma, batch_size=batch_size,
                    masks_per_pass=masks_per_pass, mechanism=mechanism, memory_format=memory_format,
                    batchnorm=batchnorm, compile=compile)
    return engine(keep, progress=progress)


def _repeat(t: torch.Tensor, K: int) -> torch.Tensor:
    return t if K == 1 else t.repeat(K, *([1] * (t.dim() - 1)))
