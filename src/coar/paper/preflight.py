"""`coar preflight`: check a site before a run of the workflow, and print what the run will cost.

    report = run("config/paper.yaml", profile="workflow/profiles/slurm", calibrate=False)
    print(report.text()); sys.exit(0 if report.ok else 1)

The checks, one row each (ok or FAIL, and for a failure what to run or change):

1. data sources the planned jobs read: a manifest data/datasets/<source>.json (written by the workflow's local
   `dataset` rule once the source is verified) is ok; a downloadable source without one is "not fetched"; a
   source placed by hand (coar.paper.data.sources.MANUAL) is looked for at its root (present and non-empty, not
   decoded). Nothing is downloaded.
2. published weights and tokenizers (coar.paper.hub: `needed`, `status`, `manifest_path`), for the setups the
   planned jobs use.
3. GPUs: the GPU setups (below) against the devices torch sees and each device's memory against each GPU setup's
   estimated need: the model's parameters and one forward pass's activations at the engine's rows per pass
   (coar.engine.rows_per_pass), and the regression's arrays (coar.regression.memory_plan). On a login node
   without GPUs (`login_node=True`) with a SLURM profile the check is deferred to the GPU partition's GRES.
4. disk: free space of the working directory against every store, checkpoint, example set and attribution file
   the planned jobs write.
5. the SLURM profile (with `profile=`): partitions and per-rule runtime / mem_mb, its $VARIABLES expanded from
   the environment, and with `sinfo` each partition's existence and time limit.

A *GPU setup* is one that asks for a GPU (`precision: bfloat16`, whose forward passes are meant for GPUs, as the
schema says) or whose GPU rules' jobs would take more than GPU_SETUP_HOURS on a CPU at this module's CPU rates.

The cost plan comes from the planned jobs themselves: a Snakemake dry run of the targets (`snakemake -n` in an
empty scratch directory, so every job from scratch) gives each job's rule, wildcards, inputs and outputs, and
whether it asks for a GPU. Each job is costed from the plan (coar.paper.plan.Plan: masks per shard, examples,
components, edits) and a rate per model shape: rows (one example under one mask) per second of the real sampling
engine (coar.engine.Engine), images per second of training (coar.paper.training), measured by a short
calibration on the machine preflight runs on, with random weights (cached in ~/.cache/coar/) or taken from docs/benchmarks.md
(REFERENCE_* below). Jobs that read and write tables cost what they cost in the measured default-preset run
(JOB_SECONDS) plus their arithmetic. Wall time is estimated by scheduling the jobs on `slots` parallel workers
in dependency order (Snakemake's way: priority first).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArgumentError, CoarError

OK, FAIL = "ok", "FAIL"
GiB = 1024 ** 3

#: A setup whose GPU rules would run longer than this on a CPU needs a GPU (the default preset's setups take
#: minutes; the paper's take years).
GPU_SETUP_HOURS = 24.0

# --- reference rates ----------------------------------------------------------------------------------------------
# docs/benchmarks.md, "GPU: NVIDIA H200 ...", section "Mask sampling: ours vs the authors' loop", table at
# n = 10,000 examples, column "ours K = 1" (bf16, the engine's default memory format): rows/s of the sampling
# engine, with the forward GFLOP per example of the CPU table of "Mask sampling: the authors' per-mask loop vs
# ours" (9.7, 8.2, 33.7).
REFERENCE_H200 = {  # model: (rows/s, GFLOP per row)
    "cifar_resnet": (27468.0, 9.7),
    "resnet50": (8691.0, 8.2),
    "vit_b_16": (5648.0, 33.7),
}
#: The H200 figures are bf16; a float32 setup's forward passes are taken at this fraction of them (TF32
#: convolutions have half of bf16's peak; plain float32 matmuls have less, so this is optimistic for transformers).
FLOAT32_FRACTION = 0.5
#: No sampling rate above this many rows/s is believed (a pass's fixed costs bound tiny models, e.g. the MLP).
MAX_GPU_ROWS = 200000.0
# docs/benchmarks.md, "CPU: 2-core x86_64 VM ...", "The sampling engine against the plain forward pass"
# (`bench_sampling.py --preset`), the BatchNorm-folded table: engine rows/s at one thread, the default preset's
# models (1 x 28 x 28 images; gpt2_bytes at 32 tokens) at their setups' numbers of examples.
REFERENCE_CPU = {"resnet_tiny": 18604.0, "resnet_mini": 10949.0, "vit_tiny": 23578.0, "mlp_small": 191274.0,
                 "resnet18_w8": 4768.0, "resnet18_w32": 335.0, "gpt2_bytes": 4039.0}
# docs/benchmarks.md, "Training in channels_last (`bench_training.py`)": images/s of SGD steps of 128 images, one
# thread, contiguous (the default training format).
REFERENCE_CPU_TRAIN = {"resnet_tiny": 2117.0, "resnet_mini": 1960.0, "resnet18_w8": 844.0, "resnet18_w32": 121.0,
                       "vit_tiny": 7747.0}
# docs/benchmarks.md, "Mask sampling: the authors' per-mask loop vs ours", CPU, 2 threads, n = 64, "ours K = 1":
# FLOP/s of the large models on the VM's CPU (rows/s x GFLOP per example), for models too big to calibrate there.
REFERENCE_CPU_FLOPS = {"conv": 16.9 * 9.7e9, "conv224": 10.0 * 8.2e9, "other": 4.4 * 33.7e9}
# docs/benchmarks.md, "Regression at Setup A size vs minibatch SAGA" (H200): the accumulation pass is host-bound,
# 4.9 GB of float64 rows (m x (C + N) x 8 bytes) in 8.32 s; the 2,304 x 2,304 eigendecomposition 0.65 s; the solve
# for 10,000 examples 0.89 s.
REFERENCE_GPU_FIT = {"bytes_per_s": 50000 * (2304 + 10000) * 8 / 8.32, "eigh_s": 0.65, "eigh_c": 2304,
                     "solve_s": 0.89, "solve_cn": 2304 * 2304 * 10000}
#: docs/results.md, "Run time and the figures": two single-threaded jobs sharing the 2-core VM each sample at 60-85%
#: of the rate measured on a quiet machine; engine rows on a CPU run at this fraction when the jobs fill its cores.
SHARED_CPU = 0.72
#: Training on a GPU (bf16 autocast, as the training rule does by default): a forward and a backward pass, three
#: forward passes' FLOPs, at the sampling rate.
TRAIN_PASSES = 3.0

#: Seconds per job of each rule in the default preset's measured run (docs/results.md: 354 jobs in 18 min 32 s at
#: commit 33acf28 on the 2-core VM, two jobs at a time; the mean of each rule's jobs, from Snakemake's job records):
#: what a job costs besides the arithmetic this module adds for it (imports, reading and writing files, drawing).
JOB_SECONDS = {
    "dataset": 2.4, "weights": 2.4, "examples": 2.0, "heldout_examples": 1.9, "shifted_examples": 2.8,
    "gather_masks": 0.2, "fit": 0.27, "fit_sample_size": 0.24, "evaluate_alpha": 0.59, "evaluate_on": 0.45,
    "evaluate": 0.58, "example_scatters": 0.43, "sample_size_table": 0.93, "ablation_effect": 3.6,
    "backdoor_saliency": 10.9, "fig_backdoor": 6.7, "fig_attribution_examples": 4.2, "fig25": 4.7,
    "efficiency": 60.0,
}
#: A figure or table job of a rule not listed above.
FIGURE_SECONDS = 3.0
#: fix / induce edits with `targets: null` fix every error: this share of the examples is assumed wrong.
ERROR_SHARE = 0.1
#: Tokens a BoolQ prompt is padded to (the longest prompt: not known before its examples are made).
BOOLQ_TOKENS = 512
TEXT_TOKENS = {"os-text": 64, "tinystories": 256, "boolq": BOOLQ_TOKENS}
#: Split sizes the dataset specs leave open (coar.paper.data.specs: None), for counting: approximate.
OPEN_SPLITS = {("fashion-mnist-spurious", "train"): 12000, ("fashion-mnist-spurious", "test"): 2000,
               ("mimic-cxr", "train"): 200000, ("mimic-cxr", "test"): 5000, ("imagenet-sketch", "test"): 50889}
#: Calibration: at most this many seconds of sampling per model, and models larger than this are not built.
CALIBRATION_SECONDS = 1.0
MAX_CALIBRATION_PARAMS = {"cpu": 2e8, "cuda": 4e9}
#: Rough FLOP/s to size a calibration before it runs (one CPU thread, one GPU).
ROUGH_FLOPS = {"cpu": 5e10, "cuda": 5e13}


# --- the report -----------------------------------------------------------------------------------------------------

@dataclass
class Check:
    """One row of the site check."""
    check: str
    item: str
    ok: bool
    detail: str

    @property
    def status(self) -> str:
        return OK if self.ok else FAIL


@dataclass
class Cost:
    """What a set of jobs costs: forward passes (rows: one example under one mask), store bytes, job seconds."""
    name: str
    jobs: int = 0
    sampling_rows: int = 0  # training and evaluation masks x examples
    other_rows: int = 0  # leave-one-out, gradient baselines (forward-pass equivalents), edit sweeps, other passes
    train_images: int = 0  # training: images x epochs (language models: tokens)
    store_bytes: int = 0
    gpu_seconds: float = 0.0  # jobs of rules that ask for a GPU
    seconds: float = 0.0  # every job
    wall_seconds: float | None = None

    def add(self, c: "JobCost") -> None:
        self.jobs += 1
        self.sampling_rows += c.sampling_rows
        self.other_rows += c.other_rows
        self.train_images += c.train_images
        self.store_bytes += c.store_bytes
        self.seconds += c.seconds
        self.gpu_seconds += c.seconds if c.gpu else 0.0


@dataclass
class Report:
    config: list[str]
    preset: str
    targets: list[str]
    checks: list[Check]
    setups: list[Cost]
    figures: list[Cost]
    total: Cost
    rates: dict
    slots: int
    device: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1

    def cost(self, name: str) -> Cost:
        for c in [*self.figures, *self.setups, self.total]:
            if c.name == name:
                return c
        raise KeyError(name)

    def check_table(self) -> str:
        rows = [(c.check, c.item, c.status, c.detail) for c in self.checks]
        return _table(("check", "item", "status", "detail"), rows, wrap_last=True)

    def cost_table(self) -> str:
        head = ("", "jobs", "mask rows", "other rows", "training", "store", "GPU-rule h", "job h", "wall h")
        body = []
        for c in [*self.setups, None, *self.figures, None, self.total]:
            if c is None:
                body.append(None)
                continue
            body.append((c.name, f"{c.jobs:,}", _count(c.sampling_rows), _count(c.other_rows), _count(c.train_images),
                         _bytes(c.store_bytes), _hours(c.gpu_seconds), _hours(c.seconds),
                         "" if c.wall_seconds is None else _hours(c.wall_seconds)))
        return _table(head, body)

    def rate_table(self) -> str:
        rows = [(k, f"{v['rows_per_s']:,.0f}", v["source"],
                 "" if v.get("train_per_s") is None else f"{v['train_per_s']:,.1f} {v['train_unit']}",
                 v.get("train_source", "")) for k, v in sorted(self.rates.items())]
        return _table(("model, examples a pass (device; first setup)", "rows/s", "source", "training", "source"), rows)

    def text(self) -> str:
        out = [f"coar preflight: preset {self.preset!r} ({', '.join(self.config)}), "
               f"{len(self.targets)} target(s): {_shorten(self.targets)}", "", self.check_table(), "",
               f"{sum(c.ok for c in self.checks)} of {len(self.checks)} checks ok"
               + ("" if self.ok else f"; FAIL: {', '.join(sorted({c.check for c in self.checks if not c.ok}))}"), "",
               "Cost plan: every job from scratch. Rows: one example under one mask (forward passes; gradient "
               "baselines", "count 3 a row). GPU-rule h: hours of the jobs of rules that ask for a GPU; job h: every "
               f"job; wall h: {self.slots} job(s)", "at a time in dependency order. Each figure counts every job "
               "it needs; setups and the total count each job once.", self.cost_table(), "",
               f"Rates (preflight ran on {self.device}; training: images/s, or optimizer steps/s of a language model)",
               self.rate_table()]
        if self.notes:
            out += [""] + [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_json(self) -> dict:
        return {"config": self.config, "preset": self.preset, "targets": self.targets, "ok": self.ok,
                "checks": [dataclasses.asdict(c) | {"status": c.status} for c in self.checks],
                "setups": [dataclasses.asdict(c) for c in self.setups],
                "figures": [dataclasses.asdict(c) for c in self.figures], "total": dataclasses.asdict(self.total),
                "rates": self.rates, "slots": self.slots, "device": self.device, "notes": self.notes}


def _count(n: int) -> str:
    if n == 0:
        return "-"
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, div in (("TiB", 1024 ** 4), ("GiB", GiB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} B"


def _hours(s: float) -> str:
    h = s / 3600
    return f"{h:.3g}" if h >= 0.01 else f"{s:.0f} s"


def _shorten(items, n=6) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _table(head, rows, wrap_last: bool = False) -> str:
    rows = [r for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *[r for r in rows if r is not None])]
    if wrap_last:
        widths[-1] = min(widths[-1], 100)
    lines = []

    def emit(r):
        cells = [str(x) for x in r]
        if wrap_last and len(cells[-1]) > widths[-1]:
            import textwrap

            parts = textwrap.wrap(cells[-1], widths[-1]) or [""]
            lines.append("  ".join(c.ljust(w) for c, w in zip(cells[:-1] + [parts[0]], widths)).rstrip())
            pad = "  ".join(" " * w for w in widths[:-1])
            lines.extend(f"{pad}  {p}" for p in parts[1:])
            return
        lines.append("  ".join(c.ljust(w) if i == 0 or wrap_last else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))).rstrip())

    emit(head)
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        if r is None:
            lines.append("  ".join("-" * w for w in widths))
        else:
            emit(r)
    return "\n".join(lines)


# --- the config and the planned jobs -----------------------------------------------------------------------------

def workflow_root() -> Path:
    """The directory of the workflow's Snakefile: the working directory's, else this source tree's."""
    for d in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (d / "Snakefile").is_file() and (d / "workflow" / "schemas" / "config.schema.yaml").is_file():
            return d
    raise CoarError("no Snakefile with workflow/schemas/config.schema.yaml here or in coar's source tree: run "
                    "coar preflight in the workflow's directory (the clone)")


def _merge(base: dict, extra: dict) -> dict:
    """Snakemake's merge of several --configfile files: later values win, nested mappings merged."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_plan(config_paths, root: Path | None = None):
    """The Plan of config file(s), prepared as rules/common.smk prepares it (keys given twice refused, parents
    resolved, the schema checked and its defaults filled in, the checks across keys run)."""
    import yaml

    from .plan import Plan, check_duplicate_keys, check_schema, resolve_parents

    root = root or workflow_root()
    config: dict = {}
    for p in config_paths:
        if not Path(p).is_file():
            raise ArgumentError("--configfile", f"{p}: no such file")
        check_duplicate_keys(p)
        try:
            data = yaml.safe_load(Path(p).read_text())
        except yaml.YAMLError as exc:
            raise ArgumentError("--configfile", f"{p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ArgumentError("--configfile", f"{p} does not hold a mapping of config keys")
        config = _merge(config, data)
    schema = root / "workflow" / "schemas" / "config.schema.yaml"
    resolve_parents(config)
    check_schema(config, schema)
    from snakemake.utils import validate

    validate(config, str(schema))  # fills in the schema's defaults
    plan = Plan(config)
    plan.check()
    return plan


@dataclass
class Job:
    rule: str
    jobid: int
    wildcards: dict
    inputs: list
    outputs: list
    gpu: bool
    local: bool = False
    priority: int = 0


_DAG_CACHE: dict = {}


def planned_jobs(config_paths, targets, root: Path | None = None) -> list[Job]:
    """Every job that `snakemake -n TARGETS` plans from scratch (in an empty scratch directory), parsed from the
    dry run's listing. Cached per process by the config files' contents, targets and the workflow's files."""
    root = root or workflow_root()
    h = hashlib.sha256()
    for p in config_paths:
        h.update(Path(p).read_bytes())
    for p in [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]:
        h.update(str(p).encode() + p.read_bytes())
    key = (h.hexdigest(), tuple(targets))
    if key in _DAG_CACHE:
        return _DAG_CACHE[key]
    exe = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or shutil.which("snakemake")
    if exe is None:
        raise CoarError("snakemake is not installed (pip install -e '.[workflow]'): preflight plans the jobs "
                        "with a Snakemake dry run")
    with tempfile.TemporaryDirectory(prefix="coar-preflight-") as scratch:
        # targets before --configfile, which takes every word after it
        cmd = [exe, "--snakefile", str(root / "Snakefile"), "-n", "--directory", scratch, "--workflow-profile",
               "none", "--cores", "1", *targets, "--configfile", *[str(Path(p).resolve()) for p in config_paths]]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = r.stdout + "\n" + r.stderr
    if r.returncode != 0:
        raise CoarError(f"the Snakemake dry run of {' '.join(targets)} failed: {_snakemake_error(out)}")
    jobs = parse_dry_run(out)
    _DAG_CACHE[key] = jobs
    return jobs


def _snakemake_error(out: str) -> str:
    """The error a failed Snakemake run reports: its first "XError ..." / "XException ..." line and what follows."""
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if re.match(r"^\w+(Error|Exception)\b", ln):
            rest = [x for x in lines[i + 1:i + 4] if not x.startswith(("File ", "Traceback", "Exiting"))]
            return " ".join([ln, *rest])[:600]
    return " ".join(lines[-3:])[:600]


def parse_dry_run(out: str) -> list[Job]:
    """The jobs of a dry run's listing ("rule X:" or "localrule X:" blocks of "key: value" lines)."""
    jobs: list[Job] = []
    current = None
    for line in out.splitlines():
        m = re.match(r"^(local)?rule (\w+):$", line)
        if m:
            current = {"rule": m.group(2), "local": bool(m.group(1))}
            jobs.append(current)
            continue
        if current is not None and line.startswith("    ") and ": " in line:
            k, v = line.strip().split(": ", 1)
            current.setdefault(k, v)
        elif not line.startswith("    "):
            current = None

    def split(v):
        return [x.strip() for x in v.split(", ")] if v else []

    parsed = []
    for j in jobs:
        if j["rule"] == "all":
            continue
        res = dict(x.split("=", 1) for x in split(j.get("resources", "")) if "=" in x)
        wild = dict(x.split("=", 1) for x in split(j.get("wildcards", "")) if "=" in x)
        parsed.append(Job(j["rule"], int(j.get("jobid", len(parsed))), wild, split(j.get("input", "")),
                          split(j.get("output", "")), res.get("gpu", "0") not in ("0", ""), j["local"],
                          int(j.get("priority", 0) or 0)))
    return parsed


# --- model shapes ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """What a model's speed depends on: its architecture and size, the input, the compute precision."""
    model: str
    table: str | None
    num_classes: int
    in_channels: int
    image_size: int
    tokens: int | None  # text models: tokens per example
    precision: str
    hub_config: str | None = None  # a fetched hub model's configuration (JSON): the shape that will load

    @property
    def key(self) -> str:
        size = f"{self.tokens} tokens" if self.tokens else f"{self.in_channels}x{self.image_size}px"
        hub = "" if self.hub_config is None else f" config {hashlib.sha256(self.hub_config.encode()).hexdigest()[:8]}"
        return f"{self.model} {size}" + (f" {self.precision}" if self.precision != "float32" else "") + hub


def _text(spec) -> bool:
    from .data.specs import SPECS

    return SPECS[spec["dataset"]].kind == "tokens"


def shape_of(spec: dict) -> Shape:
    tokens = (spec["examples"].get("length") or TEXT_TOKENS.get(spec["dataset"], 256)) if _text(spec) else None
    from .hub import cached_architecture

    hub = cached_architecture(spec["model"]) if spec.get("pretrained") else None
    return Shape(spec["model"], spec.get("components"), int(spec["num_classes"]), int(spec["in_channels"]),
                 int(spec["image_size"]), tokens, spec.get("precision") or "float32",
                 None if hub is None else json.dumps(hub, sort_keys=True))


def _build(shape: Shape, device):
    from .models import build_model

    config = None if shape.hub_config is None else json.loads(shape.hub_config)
    return build_model(shape.model, num_classes=shape.num_classes, in_channels=shape.in_channels,
                       image_size=shape.image_size, device=device, config=config)


def _example_input(shape: Shape, n: int, device, generator=None):
    import torch

    if shape.tokens:
        vocab = 256 if shape.model.endswith(("bytes", "tiny")) else 1000
        if shape.hub_config is not None:  # a fetched model's own vocabulary (a rehearsal's stand-in has 512)
            vocab = min(vocab, int(json.loads(shape.hub_config).get("vocab_size", vocab)))
        return torch.randint(0, vocab, (n, shape.tokens), device=device, generator=generator)
    return torch.randn(n, shape.in_channels, shape.image_size, shape.image_size, device=device, generator=generator)


_INFO: dict = {}


def model_info(shape: Shape) -> dict:
    """Counted on the meta device (shapes only): parameters, components and groups, forward FLOPs per row, the
    largest module output and the model's output per row (numbers of values), input values per row."""
    if shape in _INFO:
        return _INFO[shape]
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..ablation import logits_of
    from ..components import component_set

    model = _build(shape, "meta")
    cset = component_set(model, shape.table or shape.model)
    x = _example_input(shape, 1, "meta")
    sizes: list = []

    def hook(module, args, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = logits_of(model(x))
    finally:
        for h in handles:
            h.remove()
    convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd) and
                m.kernel_size != m.stride)  # a patch embedding is not a convnet
    info = {"params": int(sum(p.numel() for p in model.parameters())), "components": cset.size,
            "groups": len(cset.groups), "flops": float(counter.get_total_flops()),
            "largest": max([n for n in sizes if n != out.numel()], default=0),  # the largest hidden output
            "output": int(out.numel()), "input": int(x[0].numel()),
            "family": "text" if shape.tokens else ("conv" if convs else "other")}
    _INFO[shape] = info
    return info


# --- rates -------------------------------------------------------------------------------------------------------------

def _cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "coar" / "preflight-rates.json"


def _code_hash() -> str:
    """What calibrated rates depend on besides the model: the engine's and training's code, torch's version."""
    import torch

    here = Path(__file__).resolve().parent
    h = hashlib.sha256(torch.__version__.encode())
    for p in (here.parent / "engine.py", here.parent / "ablation.py", here / "training.py"):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def _read_cache() -> dict:
    try:
        data = json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, value) -> None:
    from ..io import atomic_write_text

    try:
        atomic_write_text(_cache_path(), json.dumps({**_read_cache(), key: value}, indent=1, sort_keys=True))
    except OSError:  # a read-only home: calibrate again next time
        pass


def device_name(device: str) -> str:
    if device == "cpu":
        import platform

        return f"cpu ({platform.processor() or platform.machine()}, 1 thread)"
    import torch

    return torch.cuda.get_device_name(0)


@contextlib.contextmanager
def _threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def calibrate_sampling(shape: Shape, n_examples: int, device: str) -> dict:
    """rows/s of the sampling engine (coar.engine.Engine, its own plan) on `shape` with random weights, at the
    examples one pass of the setup takes, on `device` (a CPU: one thread, as the workflow's jobs run), and the
    seconds an Engine takes to plan and prepare."""
    import numpy as np
    import torch

    from ..components import component_set
    from ..engine import Engine, rows_per_pass
    from ..outputs import margin, token_margin

    info = model_info(shape)
    with _threads(1) if device == "cpu" else contextlib.nullcontext():
        g = torch.Generator(device=device).manual_seed(0)
        torch.manual_seed(0)
        model = _build(shape, device)
        if shape.precision == "bfloat16":
            model = model.to(torch.bfloat16)
        cset = component_set(model, shape.table or shape.model)
        n = max(1, min(int(n_examples), rows_per_pass(device, info["input"])))
        x = _example_input(shape, n, device, g)
        if shape.precision == "bfloat16" and x.is_floating_point():
            x = x.to(torch.bfloat16)
        y = x if shape.tokens else torch.randint(0, shape.num_classes, (n,), device=device, generator=g)
        start = time.perf_counter()
        engine = Engine(model, cset, x, y, token_margin if shape.tokens else margin)
        setup_s = time.perf_counter() - start
        rng = np.random.default_rng(0)
        keep = rng.random((1, cset.size)) > 0.05
        engine(keep)  # warm-up
        rate_guess = ROUGH_FLOPS[device] / max(info["flops"], 1.0)
        masks = int(min(max(2, CALIBRATION_SECONDS / 3 * rate_guess / n), 4096))
        keep = rng.random((masks, cset.size)) > 0.05
        seconds = math.inf
        for _ in range(3):  # the best of three: other work on the machine only slows a repetition down
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            engine(keep)
            if device != "cpu":
                torch.cuda.synchronize()
            seconds = min(seconds, time.perf_counter() - start)
    return {"rows_per_s": masks * n / seconds, "setup_s": setup_s, "rows": masks * n,
            "plan": engine.plan.describe()}


def calibrate_training(shape: Shape, spec: dict, device: str) -> dict:
    """Images/s (classifiers: SGD steps of the setup's batch size, coar.paper.training.train_classifier) or
    steps/s (language models: train_language_model) with random weights and data, on `device`."""
    import torch

    from .training import train_classifier, train_language_model

    t = spec["train"]
    with _threads(1) if device == "cpu" else contextlib.nullcontext():
        torch.manual_seed(0)
        model = _build(shape, device)
        if shape.tokens:
            tokens = torch.randint(0, 256, (20000,), device=device)
            train_language_model(model, tokens, steps=2, batch_size=t["batch_size"], length=64, progress=False)
            steps = 4
            start = time.perf_counter()
            train_language_model(model, tokens, steps=steps, batch_size=t["batch_size"], length=64, progress=False)
            return {"train_per_s": steps / (time.perf_counter() - start), "train_unit": "steps/s"}
        bs = int(t["batch_size"])
        n = 2 * bs
        x = torch.randint(0, 256, (n, shape.in_channels, shape.image_size, shape.image_size), dtype=torch.uint8,
                          device=device)
        y = torch.randint(0, shape.num_classes, (n,), device=device)
        kw = dict(batch_size=bs, lr=0.01, progress=False, norm=(0.5, 0.25), precision=t.get("precision"),
                  memory_format=t.get("memory_format") or "contiguous", augment_pad=0 if t.get("augment") is False
                  else 2, flip=t.get("augment") is not False)
        train_classifier(model, x[:bs], y[:bs], epochs=1, **kw)  # warm-up
        start = time.perf_counter()
        train_classifier(model, x, y, epochs=1, **kw)
        if device != "cpu":
            torch.cuda.synchronize()
        return {"train_per_s": n / (time.perf_counter() - start), "train_unit": "img/s"}


def calibrate_startup() -> float:
    """Seconds a job of a torch rule spends starting: Python, torch and coar's engine imported (measured)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, coar.engine, coar.store, coar.paper.training"],
                   check=False, capture_output=True)
    return time.perf_counter() - start


def _reference(shape: Shape, device: str, why: str) -> dict:
    """A rate from docs/benchmarks.md: the model's own row, else a reference model's FLOP rate scaled by FLOPs."""
    info = model_info(shape)
    if device == "cpu":
        own = (shape.model in REFERENCE_CPU and shape.in_channels == 1 and shape.image_size == 28
               and shape.tokens is None) or (shape.model == "gpt2_bytes" and shape.tokens == 32)
        if own:
            rate, src = REFERENCE_CPU[shape.model], f"docs/benchmarks.md CPU table ({why})"
        else:
            kind = "other" if info["family"] != "conv" else ("conv224" if shape.image_size >= 128 else "conv")
            rate = REFERENCE_CPU_FLOPS[kind] / max(info["flops"], 1.0)
            src = f"docs/benchmarks.md CPU {kind} FLOP rate x FLOPs ({why})"
        train = REFERENCE_CPU_TRAIN.get(shape.model) if own else None
        return {"rows_per_s": rate, "setup_s": 0.3, "source": src,
                "train_per_s": train if train else rate / TRAIN_PASSES, "train_unit": "img/s",
                "train_source": "docs/benchmarks.md training table" if train else "rows/s / 3 (forward + backward)"}
    if shape.model in REFERENCE_H200 and (shape.model != "cifar_resnet" or shape.image_size == 32):
        rate, src = REFERENCE_H200[shape.model][0], f"H200, docs/benchmarks.md ({why})"
    else:
        ref = "vit_b_16" if info["family"] != "conv" else ("resnet50" if shape.image_size >= 128 else "cifar_resnet")
        r, gflop = REFERENCE_H200[ref]
        rate = min(MAX_GPU_ROWS, r * gflop * 1e9 / max(info["flops"], 1.0))
        src = f"H200 {ref} FLOP rate x FLOPs, docs/benchmarks.md ({why})"
    train = rate / TRAIN_PASSES  # training runs under bf16 autocast on GPUs
    if shape.precision == "float32":
        rate *= FLOAT32_FRACTION
        src += f", float32 at {FLOAT32_FRACTION:g} of bf16"
    return {"rows_per_s": rate, "setup_s": 1.0, "source": src, "train_per_s": train, "train_unit": "img/s",
            "train_source": "H200 rows/s / 3 (forward + backward, bf16)"}


class Rates:
    """Rates per (model shape, device kind): calibrated here (cached) or from docs/benchmarks.md."""

    def __init__(self, calibrate: bool, gpu_here: bool):
        self.calibrate, self.gpu_here = calibrate, gpu_here
        self.table: dict[str, dict] = {}
        self._startup = None

    def startup(self) -> float:
        if self._startup is None:
            key = f"startup {sys.executable} {_code_hash()}"
            cached = _read_cache().get(key) if self.calibrate else None
            if isinstance(cached, (int, float)):
                self._startup = float(cached)
            elif self.calibrate:
                self._startup = calibrate_startup()
                _write_cache(key, self._startup)
            else:
                self._startup = 1.7  # docs/results.md: about 1.7 s of imports for a job that imports torch
        return self._startup

    def get(self, spec: dict, n_examples: int, device: str, setup: str = "") -> dict:
        """device: "cpu" or "cuda" (where the job runs; "cuda" without a GPU here: the H200 reference). The rate
        is named by the model, the examples a pass and the first setup that asked for it."""
        shape = shape_of(spec)
        info = model_info(shape)
        from ..engine import rows_per_pass

        n_pass = max(1, min(int(n_examples), rows_per_pass(device, info["input"])))
        trained = not spec["pretrained"] or bool((spec["train"] or {}).get("from_pretrained"))
        key = json.dumps([dataclasses.asdict(shape), n_pass, device, spec["train"] if trained else None])
        if key in self.table:
            return self.table[key]
        here = device == "cpu" or self.gpu_here
        small = (info["params"] <= MAX_CALIBRATION_PARAMS[device]
                 and info["flops"] * 512 / ROUGH_FLOPS[device] <= 20 * CALIBRATION_SECONDS)
        rate = None
        if self.calibrate and here and small:
            cache_key = json.dumps([key, device_name(device), _code_hash()])
            rate = _read_cache().get(cache_key)
            if not (isinstance(rate, dict) and rate.get("rows_per_s", 0) > 0):
                rate = calibrate_sampling(shape, n_pass, device)
                rate["source"] = f"calibrated on {device_name(device)}"
                rate["load"] = os.getloadavg()[0] / (os.cpu_count() or 1)  # runnable processes per core
                if trained:
                    rate.update(calibrate_training(shape, spec, device))
                    rate["train_source"] = rate["source"]
                _write_cache(cache_key, rate)
            else:
                rate = {**rate, "source": rate["source"] + ", cached"}
            if rate.get("train_per_s") is None:
                rate.update(train_per_s=rate["rows_per_s"] / TRAIN_PASSES, train_unit="img/s",
                            train_source="rows/s / 3 (forward + backward)")
        if rate is None:
            why = ("--no-calibrate" if not self.calibrate else "no GPU here" if not here else "too big to calibrate here")
            rate = _reference(shape, device, why)
        rate = {**rate, "n_pass": n_pass, "name": f"{shape.key}, {n_pass} a pass ({'GPU' if device == 'cuda' else 'CPU'}"
                                                   + (f"; {setup})" if setup else ")")}
        self.table[key] = rate
        return rate


# --- costing the jobs ----------------------------------------------------------------------------------------------

@dataclass
class JobCost:
    seconds: float
    gpu: bool
    setup: str | None
    sampling_rows: int = 0
    other_rows: int = 0
    train_images: int = 0
    store_bytes: int = 0
    device: str = "cpu"


class Costing:
    """Costs of the planned jobs of one plan at given rates."""

    def __init__(self, plan, rates: Rates, gpus: bool = False, cpu: dict | None = None, shared: float = 1.0):
        """gpus: the run has GPUs (here, or on the cluster its GPU setups are sent to): jobs of rules that ask
        for one run on one."""
        self.plan, self.rates, self.config, self.shared, self.gpus = plan, rates, plan.config, shared, gpus
        self.cpu = cpu or {"gemm32": 5e10, "gemm64": 2.5e10, "eigh512_s": 0.05}

    # sizes of a setup
    def spec(self, setup):
        return self.plan.setups[setup]

    def n_examples(self, setup) -> int:
        s = self.spec(setup)
        ex = s["examples"]
        if ex.get("n"):
            n = int(ex["n"])
        else:
            n = split_size(s["dataset"], ex["split"])
            if ex.get("every"):
                n = math.ceil(n / int(ex["every"]))
        return 2 * n if ex.get("trigger") == "paired" else n

    def n_train(self, setup) -> int:
        s = self.spec(setup)
        return int(s["train"].get("n_train") or split_size(s["dataset"], "train"))

    def info(self, setup) -> dict:
        return model_info(shape_of(self.spec(setup)))

    def components(self, setup) -> int:
        return self.info(setup)["components"]

    def device(self, setup, job_gpu: bool) -> str:
        """Where a job runs: a job of a rule that asks for a GPU on one when the run has GPUs."""
        return "cuda" if job_gpu and self.gpus else "cpu"

    def rate(self, setup, device) -> dict:
        return self.rates.get(self.spec(setup), self.n_examples(setup), device, setup)

    def input_bytes(self, setup) -> int:
        s = self.spec(setup)
        if _text(s):
            return 2 * 8 * shape_of(s).tokens  # int64 inputs and targets
        from .data.registry import decode_size
        from .data.specs import SPECS

        size = decode_size(s["dataset"], s["image_size"]) or SPECS[s["dataset"]].size or s["image_size"]
        return SPECS[s["dataset"]].channels * size * size

    def fit_seconds(self, m, c, n, device) -> float:
        from ..regression import memory_plan

        dual = memory_plan(max(m, 1), max(c, 1), max(n, 1))["chosen"] == "dual"
        if device == "cuda":
            g = REFERENCE_GPU_FIT
            side = m if dual else c
            return (m * (c + n) * 8 / g["bytes_per_s"] + g["eigh_s"] * (side / g["eigh_c"]) ** 3
                    + g["solve_s"] * side * side * n / g["solve_cn"])
        if dual:
            flops = 2.0 * m * m * c + 2.0 * m * m * n
            side = m
        else:
            flops = 2.0 * m * c * (c + n) + 2.0 * c * c * n
            side = c
        return flops / self.cpu["gemm64"] + self.cpu["eigh512_s"] * (side / 512) ** 3

    # the rules
    def cost(self, job: Job) -> JobCost:
        rule, setup = job.rule, job_setup(self.plan, job)
        base = JOB_SECONDS.get(rule, FIGURE_SECONDS if rule.startswith("fig") else 1.0)
        c = JobCost(base, job.gpu, setup)
        fn = getattr(self, f"_{rule}", None)
        if fn is not None and setup in self.plan.setups:
            fn(job, c, setup)
        return c

    def _engine(self, c: JobCost, setup, rows, engines=1, sampling=False):
        """rows forward rows of the setup's model through `engines` freshly planned engines."""
        c.device = self.device(setup, c.gpu)
        r = self.rate(setup, c.device)
        speed = r["rows_per_s"] * (self.shared if c.device == "cpu" else 1.0)
        c.seconds = self.rates.startup() + engines * r["setup_s"] + rows / speed
        if sampling:
            c.sampling_rows += int(rows)
        else:
            c.other_rows += int(rows)

    def _sample_shard(self, job, c, setup):
        m = self.plan.mask_settings(setup, job.wildcards["split"], job.wildcards["shard"])["m"]
        n = self.n_examples(setup)
        self._engine(c, setup, m * n, sampling=True)
        dtype = 2 if self.spec(setup)["dtype"] == "float16" else 4
        c.store_bytes = m * self.components(setup) + m * n * dtype + m

    def _baseline(self, job, c, setup):
        s, info, n = self.spec(setup), self.info(setup), self.n_examples(setup)
        opts = s.get("baseline_options") or {}
        method = job.wildcards["method"]
        if method == "loo":
            rows = (min(info["components"], opts.get("loo_components") or info["components"]) + 1) * n
        elif method == "gp":
            rows = TRAIN_PASSES * n
        else:  # NC/II: a forward and a backward pass per integration point and example, every group at once
            rows = TRAIN_PASSES * ((opts.get("n_steps") or 20) + 1) * n
        self._engine(c, setup, rows)
        c.store_bytes = (info["components"] + 1) * n * 4

    def _fit(self, job, c, setup):
        m = int(job.wildcards.get("m") or self.spec(setup)["masks"])
        n, comps = self.n_examples(setup), self.components(setup)
        c.device = self.device(setup, job.gpu)
        c.seconds += self.fit_seconds(m, comps, n, c.device)
        c.store_bytes = (comps + 1) * n * 4

    _fit_sample_size = _fit

    def _model(self, job, c, setup):
        s, info = self.spec(setup), self.info(setup)
        c.store_bytes = info["params"] * 4
        if s["pretrained"]:
            c.seconds += self.rates.startup() + info["params"] * 4 / 2e8  # load and save the published weights
            return
        c.device = self.device(setup, c.gpu)
        r = self.rate(setup, c.device)
        c.seconds = self.rates.startup()
        if _text(s):  # a language model trained here: steps of batch_size windows of 64 tokens
            steps, batch = s["train"].get("steps") or 1000, s["train"]["batch_size"]
            c.train_images = steps * batch  # windows
            per_s = r["train_per_s"] if r["train_unit"] == "steps/s" else \
                r["train_per_s"] * shape_of(s).tokens / 64 / batch  # rows of `tokens` tokens -> steps
            c.seconds += steps / per_s
            return
        c.train_images = self.n_train(setup) * s["train"]["epochs"]
        test = split_size(s["dataset"], "test") if "test" in _splits(s["dataset"]) else 0
        c.other_rows = test
        c.seconds += c.train_images / r["train_per_s"] + test / r["rows_per_s"]

    def _examples(self, job, c, setup):
        from .data.specs import SPECS

        n = self.n_examples(setup)
        c.store_bytes = n * self.input_bytes(setup)
        if SPECS[self.spec(setup)["dataset"]].decodable:
            c.seconds += n / 200.0  # JPEG decoding and resizing at 224 px: about 200 images/s (4 threads)

    def _heldout_examples(self, job, c, setup):
        from .data.specs import SPECS

        n = int(job.wildcards.get("n") or 0)
        c.store_bytes = n * self.input_bytes(setup)
        if SPECS[self.spec(setup)["dataset"]].decodable:
            c.seconds += n / 200.0

    def _shifted_examples(self, job, c, setup):
        n = int(self.plan.shift_spec(job.wildcards["edit"], job.wildcards["shift"]).get("n") or 1000)
        c.store_bytes = n * self.input_bytes(setup)
        c.seconds += n / 200.0  # decoding (image files; arrays are faster)

    def _held_out(self, edit) -> int:
        e = self.config["edits"][edit]
        path = self.plan.heldout_file(edit)
        who = e.get("heldout_setup") or e["setup"]
        return self.n_examples(who) if path.endswith("/examples.npz") else int(e["heldout"])

    def _edit_single(self, job, c, setup):
        edit = job.wildcards["edit"]
        e, n = self.config["edits"][edit], self.n_examples(setup)
        held, ks = self._held_out(edit), len(e["ks"])
        if e["kind"] == "subpop":
            rows, engines = 2 * ks * held + held // 2, 2 * 8 + 4
        else:
            targets = e.get("targets") or max(1, math.ceil(ERROR_SHARE * n))
            rows = targets * 2 * ks * (1 + e["references"] + held) + n
            engines = targets * 2 * 4 + 1
        self._engine(c, setup, rows, engines)

    def _edit_forget(self, job, c, setup):
        edit = job.wildcards["edit"]
        e = self.config["edits"][edit]
        held, ks = self._held_out(edit), len(e["ks"])
        shifts = sum(int(sh.get("n") or 1000) for sh in e.get("shifts", {}).values())
        rows = 2 * ks * held + 2 * held + 3 * shifts
        self._engine(c, setup, rows, 2 * 4 + 1 + len(e.get("shifts", {})))

    def _edit_backdoor(self, job, c, setup):
        edit = job.wildcards["edit"]
        e = self.config["edits"][edit]
        held, ks = self._held_out(edit), len(e["ks"])
        self._engine(c, setup, 2 * ks * 2 * held, 2 * 4)

    def _ablation_effect(self, job, c, setup):
        self._engine(c, setup, self.n_examples(setup))
        c.seconds += JOB_SECONDS["ablation_effect"] - self.rates.startup()

    def _predict(self, job, c, setup):
        methods = sum(1 for p in job.inputs if "/attributions/" in p or "/sample_size/" in p)
        tests = [p for p in job.inputs if "/masks/test-" in p]
        m = self.spec(setup)["test_masks"] * max(1, len(tests))
        c.seconds += methods * 2.0 * m * self.components(setup) * self.n_examples(setup) / self.cpu["gemm32"]

    _evaluate_alpha = _evaluate_on = _example_scatters = _sample_size_table = _predict


def training_seconds(spec: dict) -> float | None:
    """A setup's training on one CPU thread, estimated from REFERENCE_CPU_TRAIN (images x epochs / images per
    second); None for published weights, language models and models without a measured rate. No torch import:
    the workflow orders its model jobs by it when it builds the DAG."""
    rate = REFERENCE_CPU_TRAIN.get(spec["model"])
    if spec.get("pretrained") or rate is None or _text(spec):
        return None
    n = int(spec["train"].get("n_train") or split_size(spec["dataset"], "train"))
    return n * int(spec["train"].get("epochs") or 1) / rate


def split_size(dataset: str, split: str) -> int:
    from .data.specs import SPLIT_SIZES
    from .data.specs import SPECS

    size = SPLIT_SIZES.get((dataset, split)) or (SPECS[dataset].splits or {}).get(split)
    return int(size or OPEN_SPLITS.get((dataset, split), 10000))


def _splits(dataset):
    from .data.specs import SPECS

    return SPECS[dataset].splits or {}


def cpu_rates() -> dict:
    """This machine's float32 and float64 matrix-product FLOP/s (numpy, as the table and regression jobs compute)
    and the seconds of a 512 x 512 symmetric eigendecomposition: the best of three, cached with the rates."""
    import platform

    import numpy as np

    key = f"numpy {np.__version__} {platform.processor() or platform.machine()}"
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and {"gemm32", "gemm64", "eigh512_s"} <= set(cached):
        return cached
    rng = np.random.default_rng(0)
    out = {}
    for name, dtype in (("gemm32", np.float32), ("gemm64", np.float64)):
        a = rng.random((512, 512)).astype(dtype)
        a @ a
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - start)
        out[name] = 2 * 512 ** 3 / best
    s = rng.random((512, 512))
    s = s @ s.T
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        np.linalg.eigh(s)
        best = min(best, time.perf_counter() - start)
    out["eigh512_s"] = best
    _write_cache(key, out)
    return out


# --- scheduling -----------------------------------------------------------------------------------------------------

def producers(jobs: list[Job]) -> dict:
    return {o: j.jobid for j in jobs for o in j.outputs}


def closure(jobs: list[Job], target: str) -> list[Job]:
    """The jobs a target needs: the one that makes it and, recursively, those that make its inputs."""
    made, by_id = producers(jobs), {j.jobid: j for j in jobs}
    todo, seen = [made[target]] if target in made else [], set()
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo += [made[p] for p in by_id[i].inputs if p in made]
    return [j for j in jobs if j.jobid in seen]


def schedule(jobs: list[Job], seconds: dict, slots: int) -> float:
    """Wall seconds of running `jobs` (durations `seconds` by jobid) on `slots` workers: a job starts once every
    job making its inputs has ended, higher priority first, then the longest remaining chain (as Snakemake
    starts the critical path first)."""
    if not jobs:
        return 0.0
    made = producers(jobs)
    deps = {j.jobid: {made[p] for p in j.inputs if p in made} for j in jobs}
    children: dict = {j.jobid: [] for j in jobs}
    for i, ds in deps.items():
        for d in ds:
            children[d].append(i)
    prio = {j.jobid: j.priority for j in jobs}
    chain: dict = {}

    def tail(i):  # longest chain from i to the end
        if i not in chain:
            stack = [i]
            while stack:
                k = stack[-1]
                pending = [c for c in children[k] if c not in chain]
                if pending:
                    stack.extend(pending)
                    continue
                stack.pop()
                chain[k] = seconds[k] + max((chain[c] for c in children[k]), default=0.0)
        return chain[i]

    waiting = {i: len(ds) for i, ds in deps.items()}
    ready = [(-prio[i], -tail(i), i) for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    running: list = []
    now = 0.0
    while ready or running:
        while ready and len(running) < max(1, slots):
            _, _, i = heapq.heappop(ready)
            heapq.heappush(running, (now + seconds[i], i))
        now, i = heapq.heappop(running)
        for c in children[i]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (-prio[c], -tail(c), c))
    return now


# --- the checks -----------------------------------------------------------------------------------------------------

def job_setup(plan, job: Job) -> str | None:
    """The setup a job works for: its `setup` wildcard, or its edit's setup."""
    if "setup" in job.wildcards:
        return job.wildcards["setup"]
    e = plan.config.get("edits", {}).get(job.wildcards.get("edit"))
    return e["setup"] if e else None


def used_setups(plan, jobs: list[Job]) -> list[str]:
    used = {j.wildcards["setup"] for j in jobs if "setup" in j.wildcards}
    for j in jobs:
        e = plan.config.get("edits", {}).get(j.wildcards.get("edit"))
        if e:
            used |= {e["setup"], e.get("heldout_setup") or e["setup"]}
    return [s for s in plan.setups if s in used]


MANUAL_HINTS = {
    "imagenet": "the ImageNet validation images as <root>/val/<wnid>/*.JPEG, or ILSVRC2012_img_val.tar and "
                "ILSVRC2012_devkit_t12.tar.gz in <root> (docs/workflow.md, Data)",
    "imagenet-star": "ImageNet*'s <shift>.zip files from the Hugging Face dataset madrylab/imagenet-star in <root> "
                     "(the dataset rule unpacks them; or <root>/<shift>/<class>/<image>; docs/workflow.md, Data)",
    "mimic-cxr": "MIMIC-CXR-JPG 2.1.0 (or 2.0.0; credentialed PhysioNet access) as <root>/mimic-cxr-jpg/2.1.0/ "
                 "with its .csv.gz tables, SHA256SUMS.txt and files/ (docs/workflow.md, Data)",
}


def check_data(plan, jobs: list[Job]) -> list[Check]:
    from .data.sources import MANUAL, source_of, source_root

    cfg = plan.config
    wanted = {Path(o).stem for j in jobs if j.rule == "dataset" for o in j.outputs}
    for s in used_setups(plan, jobs):
        wanted |= {Path(plan.setup_source(s)).stem, *(Path(p).stem for p in plan.model_sources(s))}
    for name, e in cfg.get("edits", {}).items():
        if any(j.wildcards.get("edit") == name for j in jobs):
            for shift in e.get("shifts", {}):
                spec = plan.shift_spec(name, shift)
                wanted.add(source_of(spec["dataset"], spec.get("corruption")))
    rows = []
    for source in sorted(wanted):
        manifest = Path("data/datasets") / f"{source}.json"
        command = f"snakemake --cores 1 {manifest}"
        if manifest.is_file():
            try:
                found = json.loads(manifest.read_text())
                good = isinstance(found, dict) and found.get("source") == source and found.get("counts")
            except (OSError, ValueError):
                good = False
            rows.append(Check("data", source, bool(good), f"verified ({manifest}: {_counts(found)})" if good else
                              f"{manifest} is not a dataset manifest: delete it and run `{command}` on the login "
                              "node"))
            continue
        root = source_root(source, cfg["data_root"], cfg["download_root"], cfg["imagenet_root"])
        if source in MANUAL:
            where = Path(root) if root is not None else None
            placed = where is not None and where.is_dir() and any(where.iterdir())
            hint = MANUAL_HINTS.get(source, "its files").replace("<root>", str(root))
            rows.append(Check("data", source, placed,
                              f"placed at {root}, not verified yet: `{command}` verifies it (the run does it first)"
                              if placed else f"placed by hand and not found: put {hint}, then run `{command}`"))
        else:
            rows.append(Check("data", source, False, f"not fetched: run `{command}` on the login node"
                              + (f" (it downloads to {root})" if root is not None else "")))
    return rows


def _counts(manifest) -> str:
    counts = manifest.get("counts", {}) if isinstance(manifest, dict) else {}
    return ", ".join(f"{k} {v:,}" for k, v in list(counts.items())[:4]) + (" ..." if len(counts) > 4 else "")


def check_weights(plan, jobs: list[Job]) -> list[Check]:
    from . import plan as plan_module

    try:
        from . import hub
    except ImportError as exc:
        return [Check("weights", "coar.paper.hub", False, f"the module that checks published weights is missing "
                                                        f"({exc})")]
    used = used_setups(plan, jobs)
    sub = plan_module.Plan({**plan.config, "setups": {s: plan.setups[s] for s in used}})
    rows = []
    for name in hub.needed(sub):
        ok, detail = hub.status(name)
        if not ok and "snakemake" not in detail:
            detail += f": fetch it on the login node with `snakemake --cores 1 {hub.manifest_path(name)}`"
        rows.append(Check("weights", name, bool(ok), detail))
    if not rows:
        rows.append(Check("weights", "-", True, "no published weights or tokenizers needed"))
    return rows


@dataclass
class GpuNeed:
    """What a GPU setup's largest job allocates on the GPU (an estimate)."""
    setup: str
    bytes: int
    what: str  # "sampling" or "fit"
    detail: str
    fixed: int = 0  # sampling: bytes besides the activations
    per_row: int = 0  # sampling: activation bytes per row of a pass

    def remedy(self, memory: int) -> str:
        if self.what == "sampling" and memory > self.fixed:
            fit = max(1, (memory - self.fixed) // max(self.per_row, 1))
            return (f"at most about {fit:,} rows a pass fit: give sample_shard (and baseline) batch_size={fit} "
                    f"masks_per_pass=1 in the profile's set-resources, or use a larger GPU")
        return "run it on a larger GPU (a gpu_model or slurm_extra resource for the rule in the profile)"


def gpu_need(costing: Costing, setup: str) -> GpuNeed:
    """Bytes a GPU job of the setup allocates at most, and which: sampling (parameters twice, the engine's saved
    weights, and one pass's activations: two of the largest hidden module outputs, and the model's output with the
    output function's float32 copy, per row, at the engine's rows per pass on a GPU) or the fit
    (coar.regression.memory_plan's arrays of the form it takes)."""
    from ..engine import equal_batch, full_rows, rows_per_pass
    from ..regression import memory_plan

    s, info, n = costing.spec(setup), costing.info(setup), costing.n_examples(setup)
    b = 2 if s.get("precision") == "bfloat16" else 4
    rows = rows_per_pass("cuda", info["input"])
    rows = equal_batch(n, rows) if n >= full_rows("cuda", info["input"]) else max(1, rows // n) * n
    fixed, per_row = 2 * info["params"] * b, 2 * info["largest"] * b + 2 * info["output"] * 4
    sampling = fixed + rows * per_row
    plan = memory_plan(s["masks"], info["components"], n)
    fit = plan[plan["chosen"]]["total"]
    if fit > sampling:
        return GpuNeed(setup, fit, "fit", f"fit: {plan['chosen']} regression arrays for {s['masks']:,} masks, "
                                          f"C = {info['components']:,}, N = {n:,}")
    return GpuNeed(setup, sampling, "sampling", f"sampling: {info['params']:,} parameters, {rows:,} rows a pass",
                   fixed, per_row)


def check_gpus(costing: Costing, jobs: list[Job], gpu_setups: list[str], login_node: bool, profile: dict | None
               ) -> list[Check]:
    import torch

    by_rule: dict = {}
    for j in jobs:
        if j.gpu:
            by_rule.setdefault(j.rule, set()).add(job_setup(costing.plan, j) or "-")
    rules = ", ".join(f"{r} ({_shorten(sorted(s), 4)})" for r, s in sorted(by_rule.items())) or "none"
    if not gpu_setups:
        return [Check("GPU", "-", True, f"no setup needs a GPU (none asks for bfloat16, and each would take under "
                                        f"{GPU_SETUP_HOURS:g} h on a CPU); rules that use one where there is one: "
                                        f"{rules}")]
    needs = [gpu_need(costing, s) for s in gpu_setups]
    need_text = "; ".join(f"{g.setup} {_bytes(g.bytes)} ({g.detail})" for g in needs)
    count = torch.cuda.device_count()
    if count == 0:
        if login_node and profile is not None:
            return [deferred_gpu_check(needs, _gpu_partition(profile, jobs), need_text)]
        hint = ("add --profile workflow/profiles/slurm to defer this check to the GPU partition" if login_node
                else "run preflight where the jobs will run (a GPU node), or on a cluster's login node with "
                     "--login-node --profile workflow/profiles/slurm")
        big = max(needs, key=lambda g: g.bytes)
        return [Check("GPU", "none visible", False, f"setups {_shorten(gpu_setups, 8)} need a GPU (rules: {rules}) "
                                                    f"and torch sees none: {hint}. The largest need is {big.setup}'s "
                                                    f"{_bytes(big.bytes)} ({big.detail})")]
    rows = []
    for i in range(count):
        props = torch.cuda.get_device_properties(i)
        short = [f"{g.setup} needs {_bytes(g.bytes)} ({g.detail}): {g.remedy(props.total_memory)}" for g in needs
                 if g.bytes > props.total_memory]
        rows.append(Check("GPU", f"cuda:{i}", not short, f"{props.name}, {_bytes(props.total_memory)}: "
                          + ("; ".join(short) if short else f"holds every GPU setup's need ({need_text})")))
    return rows


def _gpu_partition(profile: dict, jobs: list[Job]) -> str | None:
    """The partition (expanded) the profile sends the planned GPU jobs to."""
    defaults, per_rule = profile.get("default-resources") or {}, profile.get("set-resources") or {}
    for rule in sorted({j.rule for j in jobs if j.gpu}):
        part, unset = _expand({**defaults, **(per_rule.get(rule) or {})}.get("slurm_partition", ""))
        if part and not unset:
            return part
    return None


#: GPU memory by the GRES type names SLURM sites commonly give (bytes; the smaller model where a name covers two).
GRES_MEMORY = {"h200": 141e9, "h100": 80e9, "a100": 40e9, "a100_80gb": 80e9, "a100-80gb": 80e9, "l40s": 48e9,
               "l40": 48e9, "a40": 48e9, "a6000": 48e9, "v100": 16e9, "v100-32gb": 32e9, "a10": 24e9, "t4": 16e9}


def deferred_gpu_check(needs: list, part: str | None, need_text: str) -> Check:
    """The GPU row of a login node: the GPU partition's GRES from sinfo, and where its GPU types are known
    (GRES_MEMORY), whether each GPU setup's need fits on one of them."""
    if not part:
        return Check("GPU", "deferred", True, "no GPU on this login node: deferred to the GPU partition, whose "
                                              f"variable is unset (see the profile rows). Each GPU must hold: {need_text}")
    if not _have_sinfo():
        return Check("GPU", part, True, f"no GPU on this login node, and no sinfo to read partition {part}'s GRES: "
                                        f"check by hand that its GPUs hold: {need_text}")
    ok, out = _sinfo(["-h", "-p", part, "-o", "%G"])
    if not ok:
        return Check("GPU", part, True, f"no GPU on this login node; sinfo failed ({out}): check by hand that "
                                        f"partition {part}'s GPUs hold: {need_text}")
    gres = sorted({g for g in out.split() if g.startswith("gpu")})
    types = {t: GRES_MEMORY[t] for g in gres for t in [g.split(":")[1].lower()] if g.count(":") >= 2 and
             t in GRES_MEMORY}
    if not types:
        return Check("GPU", part, bool(gres), f"partition {part} has GRES {', '.join(gres) or 'none'}"
                     + (f"; check that its GPUs hold: {need_text}" if gres else
                        ": no GPUs; set $COAR_GPU_PARTITION to a partition with GPUs"))
    too_big = [g for g in needs if all(g.bytes > m for m in types.values())]
    picky = [f"{g.setup} ({_bytes(g.bytes)}) only on {', '.join(t for t, m in types.items() if g.bytes <= m)}"
             for g in needs if g not in too_big and any(g.bytes > m for m in types.values())]
    detail = f"partition {part} has {', '.join(gres)}: " + (
        "; ".join(f"{g.setup} needs {_bytes(g.bytes)} ({g.detail}): {g.remedy(int(max(types.values())))}"
                  for g in too_big) if too_big else f"its GPUs hold every GPU setup's need ({need_text})")
    if picky:
        detail += "; ask for the larger GPU where needed (a gpu_model resource in the profile): " + "; ".join(picky)
    return Check("GPU", part, not too_big, detail)


def check_disk(total_bytes: int, where: Path = Path(".")) -> Check:
    free = shutil.disk_usage(where).free
    ok = total_bytes <= free
    return Check("disk", str(where.resolve()), ok,
                 f"{_bytes(free)} free, the run writes {_bytes(total_bytes)} (mask stores, outputs, checkpoints, "
                 "examples, attributions)" + ("" if ok else f": free {_bytes(total_bytes - free)} more, or run in a "
                                                            "directory on a larger filesystem"))


# --- the SLURM profile ----------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def _have_sinfo() -> bool:
    return shutil.which("sinfo") is not None


def _sinfo(args) -> tuple[bool, str]:
    """(succeeded, stdout or the last line of its error) of `sinfo ARGS`."""
    try:
        r = subprocess.run(["sinfo", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    if r.returncode == 0:
        return True, r.stdout
    said = (r.stderr or r.stdout).strip().splitlines()
    return False, said[-1] if said else f"exit status {r.returncode}"


def _minutes(expr, attempt=1) -> float | None:
    """A resource expression of the profile ("720*attempt", 60) at an attempt; None if it is not arithmetic."""
    import ast

    if isinstance(expr, (int, float)):
        return float(expr)
    try:
        tree = ast.parse(str(expr), mode="eval")
    except SyntaxError:
        return None

    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return n.value
        if isinstance(n, ast.Name) and n.id == "attempt":
            return attempt
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Mult, ast.Add, ast.Sub, ast.Div)):
            a, b = ev(n.left), ev(n.right)
            return {ast.Mult: a * b, ast.Add: a + b, ast.Sub: a - b, ast.Div: a / b if b else math.inf}[type(n.op)]
        raise ValueError

    try:
        return float(ev(tree))
    except (ValueError, TypeError):
        return None


def _limit_minutes(text: str) -> float | None:
    """A SLURM time limit (sinfo %l: infinite, days-hours:minutes:seconds, ...) in minutes."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED"):
        return math.inf
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")] if text else []
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    elif len(parts) == 1:
        h, m, s = 0, parts[0], 0
    else:
        return None
    return days * 1440 + h * 60 + m + s / 60


def read_profile(path) -> dict:
    import yaml

    p = Path(path)
    f = p / "config.yaml" if p.is_dir() else p
    if not f.is_file():
        raise ArgumentError("--profile", f"{path}: no profile config.yaml there")
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ArgumentError("--profile", f"{f} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ArgumentError("--profile", f"{f} does not hold a mapping")
    data["_file"] = str(f)
    return data


def _expand(value) -> tuple[str, list[str]]:
    """A profile value with its $VARIABLES from the environment, and the names of those unset."""
    text = str(value).strip().strip("'\"")
    unset = [v for v in _VAR.findall(text) if not os.environ.get(v)]
    return _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), text), unset


def local_rules(root: Path | None = None) -> set:
    """Rules the workflow runs on the submitting machine (`localrule: True` in rules/*.smk)."""
    out = set()
    for f in sorted(((root or workflow_root()) / "rules").glob("*.smk")):
        for block in re.split(r"^(?=rule \w+:)", f.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+localrule:\s*True", block, flags=re.M):
                out.add(m.group(1))
    return out


def check_profile(profile: dict, jobs: list[Job]) -> list[Check]:
    """The partitions the profile sends the planned jobs' rules to (local rules stay on the login node), its
    variables expanded from the environment, and with sinfo each partition's existence and time limit."""
    defaults = profile.get("default-resources") or {}
    per_rule = profile.get("set-resources") or {}
    local = local_rules()
    rules = sorted({j.rule for j in jobs if not j.local and j.rule not in local})
    rows, partitions, unset_rules = [], {}, {}
    for rule in rules:
        res = {**defaults, **(per_rule.get(rule) or {})}
        part, unset = _expand(res.get("slurm_partition", ""))
        account, unset_a = _expand(res.get("slurm_account", ""))
        for var in unset + unset_a:
            unset_rules.setdefault(var, []).append(rule)
        if not unset:
            partitions.setdefault(part, []).append((rule, _minutes(res.get("runtime", 0)), res.get("mem_mb")))
    for var, users in sorted(unset_rules.items()):
        rows.append(Check("profile", f"${var}", False, f"${var} is unset, and the profile passes it on literally, so "
                                                       f"sbatch would refuse the jobs of {_shorten(users, 8)}: export "
                                                       f"{var}=<value> first"))
    have_sinfo = _have_sinfo()
    limits, sinfo_error = {}, None
    if have_sinfo:
        ok, out = _sinfo(["-h", "-o", "%P %l"])
        if ok:
            for line in out.splitlines():
                if line.split():
                    name, limit = (line.split() + [""])[:2]
                    limits[name.rstrip("*")] = _limit_minutes(limit)
        else:
            sinfo_error = out
    for part, uses in sorted(partitions.items()):
        longest = max(uses, key=lambda u: u[1] or 0)
        described = (f"{len(uses)} rule(s): " + ", ".join(
            f"{r} {rt:g} min/{_mem(mem)}" if rt is not None else f"{r} ?/{_mem(mem)}" for r, rt, mem in uses))
        if not part:
            rows.append(Check("profile", "(no partition)", False, f"no slurm_partition for {described}: set one in "
                                                                  f"{profile['_file']}"))
            continue
        if not have_sinfo or sinfo_error is not None:
            why = "sinfo not found" if not have_sinfo else f"sinfo failed ({sinfo_error})"
            rows.append(Check("profile", part, True, f"{described}; {why}: partition and time limits not checked"))
            continue
        if part not in limits:
            rows.append(Check("profile", part, False, f"sinfo lists no partition {part!r} (it has "
                                                      f"{', '.join(sorted(limits)) or 'none'}): set the variable to "
                                                      "one of those"))
            continue
        limit = limits[part]
        ok = limit is None or longest[1] is None or longest[1] <= limit
        rows.append(Check("profile", part, ok, f"time limit {limit:g} min covers {described}" if ok else
                          f"time limit {limit:g} min is shorter than {longest[0]}'s runtime {longest[1]:g} min: lower "
                          f"the runtime in {profile['_file']} or use another partition"))
    if not rows:
        rows.append(Check("profile", "-", True, "no rule is submitted"))
    return rows


def _mem(mem) -> str:
    v = _minutes(mem) if mem is not None else None
    return f"{v / 1000:g} GB" if v is not None else "default mem"


# --- the whole run --------------------------------------------------------------------------------------------------

def check_target(plan, target: str) -> None:
    """Refuse a figure target the paper does not have or the preset does not configure, naming it."""
    from .plan import FIGURES, ConfigError

    m = re.fullmatch(r"figures/fig(\d+)\.pdf", target)
    if m is None:
        return  # any other file: the dry run says whether a rule makes it
    if int(m.group(1)) not in FIGURES:
        raise ArgumentError("--target", f"{target}: the paper has figures {min(FIGURES)} to {max(FIGURES)} only")
    try:
        plan.figure_config(f"fig{m.group(1)}")
    except ConfigError as exc:
        raise ArgumentError("--target", str(exc)) from None


def _gpu_setups(costing: Costing, jobs: list[Job], used: list[str]) -> list[str]:
    """Setups that ask for a GPU (bfloat16 forward passes) or whose GPU rules would take more than GPU_SETUP_HOURS
    on a CPU."""
    cpu: dict = {}
    for j in jobs:
        s = job_setup(costing.plan, j)
        if j.gpu and s is not None:
            cpu[s] = cpu.get(s, 0.0) + costing.cost(j).seconds
    return [s for s in used if costing.spec(s).get("precision") == "bfloat16" or cpu.get(s, 0.0) > GPU_SETUP_HOURS * 3600]


def run(config, profile=None, targets=None, calibrate: bool = True, login_node: bool = False,
        slots: int | None = None, figures: bool = True) -> Report:
    """Check this site for the planned jobs of `config` (a config file, or a list of them as --configfile takes)
    and cost them. targets: the files to plan (default: every figure the preset configures). Run in the
    workflow's working directory (data/, results/ and the caches are looked up there)."""
    import torch

    config_paths = [str(config)] if isinstance(config, (str, os.PathLike)) else [str(c) for c in config]
    if not config_paths:
        raise ArgumentError("--configfile", "give a config file (e.g. config/config.yaml)")
    for p in config_paths:
        if not Path(p).is_file():
            raise ArgumentError("--configfile", f"{p}: no such file")
    root = workflow_root()
    plan = load_plan(config_paths, root)
    targets = list(targets or plan.buildable_figures())
    for t in targets:
        check_target(plan, t)
    prof = read_profile(profile) if profile else None
    try:
        jobs = planned_jobs(config_paths, targets, root)
    except CoarError as exc:
        if "MissingRuleException" in str(exc) or "No rule to produce" in str(exc):
            raise ArgumentError("--target", f"no rule makes {' or '.join(targets)}: {exc}") from None
        raise
    gpu_here = torch.cuda.device_count() > 0
    cpu = cpu_rates() if calibrate else None
    used = used_setups(plan, jobs)
    # every job on a CPU at the reference rates first, to find the setups that need a GPU
    gpu_setups = _gpu_setups(Costing(plan, Rates(calibrate=False, gpu_here=False), cpu=cpu), jobs, used)
    gpus = gpu_here or bool(gpu_setups) or login_node  # the run's GPU rules run on GPUs
    if slots is None:  # the GPUs here; one GPU (or the profile's jobs) for a run elsewhere; else the CPU cores
        slots = (torch.cuda.device_count() if gpu_here else int((prof or {}).get("jobs") or 1) if gpus
                 else os.cpu_count() or 1)
    # single-threaded jobs filling every core share the machine (SHARED_CPU)
    shared = SHARED_CPU if not gpus and slots >= (os.cpu_count() or 1) > 1 else 1.0
    rates = Rates(calibrate, gpu_here)
    costing = Costing(plan, rates, gpus, cpu=cpu, shared=shared)
    costs = {j.jobid: costing.cost(j) for j in jobs}
    seconds = {i: c.seconds for i, c in costs.items()}
    total = Cost("all targets")
    per_setup: dict = {}
    for j in jobs:
        c = costs[j.jobid]
        total.add(c)
        per_setup.setdefault(c.setup or "(tables, figures)", Cost(c.setup or "(tables, figures)")).add(c)
    total.wall_seconds = schedule(jobs, seconds, slots)
    setups = [per_setup[s] for s in [*plan.setups, "(tables, figures)"] if s in per_setup]
    fig_costs = []
    for t in targets if figures else []:
        sub = closure(jobs, t)
        c = Cost(Path(t).stem if t.startswith("figures/") else t)
        for j in sub:
            c.add(costs[j.jobid])
        c.wall_seconds = schedule(sub, seconds, slots)
        fig_costs.append(c)
    checks = check_data(plan, jobs) + check_weights(plan, jobs)
    checks += check_gpus(costing, jobs, gpu_setups, login_node, prof)
    checks.append(check_disk(total.store_bytes))
    if prof is not None:
        checks += check_profile(prof, jobs)
    notes = []
    if gpus and not gpu_here:
        notes.append("the jobs of rules that ask for a GPU are costed at H200 rates (no GPU here to calibrate on; "
                     f"float32 forward passes at {FLOAT32_FRACTION:g} of the bf16 figures); a GPU job's start is "
                     "not counted")
    if shared < 1:
        notes.append(f"{slots} single-threaded jobs at a time fill the {os.cpu_count()} CPU cores: engine rows "
                     f"run at {SHARED_CPU:g} of the calibrated rate (docs/results.md: 60-85%)")
    if calibrate:
        notes.append(f"calibrated rates are cached in {_cache_path()} (delete it to measure again)")
        busy = max((v.get("load", 0.0) for v in rates.table.values()), default=0.0)
        if busy > 1.0:
            notes.append(f"some rates were calibrated with {busy:.1f} runnable processes per core (load average): "
                         "other work slowed them down, so the times above may be too long; measure again on a "
                         "quiet machine, or compare with --no-calibrate")
    device = device_name("cuda") if gpu_here else device_name("cpu")
    return Report(config_paths, plan.config["preset"], targets, checks, setups, fig_costs, total,
                  {v["name"]: {kk: v[kk] for kk in ("rows_per_s", "source", "train_per_s", "train_unit", "train_source")
                               if kk in v} for v in rates.table.values()}, slots, device, notes)


def main(config, profile=None, targets=None, calibrate=True, login_node=False, slots=None, json_path=None,
         out=None) -> int:
    """Run, print the report, write it as JSON when asked; returns the exit status (0: every check ok)."""
    report = run(config, profile, targets, calibrate, login_node, slots)
    print(report.text(), file=out or sys.stdout, flush=True)
    if json_path:
        from ..io import atomic_write_text

        atomic_write_text(json_path, json.dumps(report.to_json(), indent=1) + "\n")
    return report.exit_status


def workflow_preflight(configfiles, log, slurm: bool = False, calibrate: bool = True) -> None:
    """The workflow's `preflight` rule: the report printed and written to the log; raises CoarError when a check
    fails. Under the SLURM executor the checks are those of a login node with workflow/profiles/slurm."""
    import io

    buf = io.StringIO()
    profile = str(workflow_root() / "workflow" / "profiles" / "slurm") if slurm else None
    status = main(configfiles, profile, calibrate=calibrate, login_node=slurm, out=buf)
    text = buf.getvalue()
    print(text, flush=True)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text(text)
    if status:
        raise CoarError(f"preflight: a check failed (the table above, and {log}, name what to run or change)")


__all__ = ["run", "main", "workflow_preflight", "Report", "Check", "Cost", "planned_jobs", "parse_dry_run", "load_plan", "Costing",
           "Rates", "schedule", "closure", "check_data", "check_weights", "check_gpus", "check_disk",
           "check_profile", "GPU_SETUP_HOURS"]
