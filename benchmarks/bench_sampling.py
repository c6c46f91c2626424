"""Mask-sampling throughput: the authors' per-mask loop, re-implemented faithfully, against ours, on the
same device, models and examples.

The authors' loop (MadryLab/modelcomponents), per mask: copy the model on the CPU, zero the ablated weight
slices of the copy, move the copy to the device, then stream every example from host memory through it,
under fp16 autocast on a GPU, and bring the margins back. Their images are decoded by FFCV for every mask;
here they come pre-decoded (uint8) from host memory, which is generous to that loop.

Ours (coar.ablation.counterfactual_outputs): the examples stay on the device, already normalised, in the
compute dtype; the model is never copied; K masks run in one forward pass through output hooks whose
results are tested equal to weight zeroing.

Printed per model and n: example-forwards per second (one row = one example under one mask), the achieved
FLOP/s (the model's forward FLOPs per example, counted by torch's FlopCounterMode, times rows/s), its share
of --peak-tflops when given, the speedup over the authors' loop, and how closely the two loops' margins
agree (in float32 they must match to rounding). Random weights: speed does not depend on them.

    python benchmarks/bench_sampling.py --device cuda --peak-tflops 989         # the GPU table
    python benchmarks/bench_sampling.py --quick                                 # CPU smoke run (CI)

--preset CONFIG measures the engine against the plain forward pass instead, for every model of a workflow
preset (default config/config.yaml) at its own number of examples: rows/s of the plain forward pass of the
model without any ablation, in its best memory format and batch size, against rows/s of the engine's own choice
(coar.engine.plan), and their ratio; --variants adds every mechanism x memory format the rule chose among (the
shared first layer where the model allows it), and
the engine with BatchNorm kept (not folded) where it folds.
Repetitions are interleaved and the median is reported, so a slow spell of a shared machine hits every row.

    python benchmarks/bench_sampling.py --preset config/config.yaml --threads 1 2
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import device_name

from coar.ablation import ablate_weights, logits_of
from coar.engine import COMPILE, Engine, counterfactual_outputs
from coar.components import component_set
from coar.paper.models import build_model
from coar.outputs import margin
from coar.sampling import sample_masks

# model -> (input size, classes); the CIFAR ResNet is the authors' architecture (2,304 filters)
MODELS = {"cifar_resnet": (32, 10), "resnet50": (224, 1000), "vit_b_16": (224, 1000)}
#: --compile's rows: torch.compile's mode -> the loop column's name
COMPILE_LABELS = {"default": "compiled", "reduce-overhead": "compiled+cg", "max-autotune-no-cudagraphs": "autotuned"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def normalise(images_u8: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return ((images_u8.to(device, non_blocking=True).float() / 255 - mean) / std).to(dtype)


@torch.no_grad()
def authors_loop(cpu_model, cset, images_u8, labels, keep, device, batch_size) -> np.ndarray:
    """One mask at a time: CPU copy with zeroed weights -> device -> every batch from host memory."""
    amp = device.type == "cuda"  # their sampling ran under fp16 autocast
    out = np.empty((len(keep), len(images_u8)), dtype=np.float32)
    for i, k in enumerate(keep):
        edited = ablate_weights(cpu_model, cset, k).to(device)  # deepcopy on the CPU, zero slices, move
        for j in range(0, len(images_u8), batch_size):
            x = normalise(images_u8[j: j + batch_size], device, torch.float32)
            y = labels[j: j + batch_size].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out[i, j: j + len(x)] = margin(logits_of(edited(x)), y).cpu().numpy()
        del edited
    return out


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - t


def forward_flops(model, image_size, device, dtype) -> int:
    """FLOPs of one forward pass on one example (multiply-add = 2 FLOPs)."""
    x = torch.zeros(1, 3, image_size, image_size, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def preset_models(config_path: str) -> list[dict]:
    """One entry per distinct (model, classes, channels, image size, examples) of a workflow preset's setups."""
    import yaml

    from coar.paper.plan import resolve_parents

    with open(config_path) as fh:
        config = yaml.safe_load(fh)
    resolve_parents(config)
    seen, out = set(), []
    for name, s in config["setups"].items():
        ex = s.get("examples") or {}
        n = int(ex.get("n") or 200) * (2 if ex.get("trigger") == "paired" else 1)
        text = s.get("output") == "token_margin"
        key = (s["model"], s.get("num_classes", 10), s.get("in_channels", 3), s.get("image_size", 32), n,
               ex.get("length", 32) if text else None)
        if key in seen or s.get("pretrained"):
            continue
        seen.add(key)
        out.append(dict(setup=name, model=key[0], num_classes=key[1], in_channels=key[2], image_size=key[3], n=n,
                        length=key[5]))
    return out


def _median_rates(fns: dict, rows: dict, reps: int) -> dict:
    """Median rows/s of every callable, repetitions interleaved (one warm-up call each first)."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: rows[k] / float(np.median(v)) for k, v in times.items()}


@torch.no_grad()
def preset_table(config_path: str, threads: list[int], masks: int, reps: int, variants: bool,
                 only: list[str] | None = None, report=None, examples: list[int] | None = None,
                 min_rows: int = 2048) -> list[dict]:
    """Rows/s of the plain forward pass (best format and batch) and of the engine, per model and thread count;
    `report(row)` is called on each row as soon as it is measured."""
    from coar.engine import Engine, as_format, first_layer
    from coar.outputs import get_output_fn

    results = []
    for threads_n in threads:
        torch.set_num_threads(threads_n)
        specs = [s for s in preset_models(config_path) if not only or s["setup"] in only]
        if examples:  # the same models at other numbers of examples (where the mechanisms cross over)
            specs = [dict(s, n=n) for s in specs for n in examples]
        for spec in specs:
            torch.manual_seed(0)
            text = spec["length"] is not None
            if text:
                model = build_model(spec["model"]).eval()
                x = torch.randint(0, 256, (spec["n"], spec["length"]))
                y, fn = x.clone(), get_output_fn("token_margin")
            else:
                model = build_model(spec["model"], spec["num_classes"], spec["in_channels"], spec["image_size"]).eval()
                x = torch.randn(spec["n"], spec["in_channels"], spec["image_size"], spec["image_size"])
                y, fn = torch.randint(0, spec["num_classes"], (spec["n"],)), margin
            cset = component_set(model, spec["model"])
            m_n = max(masks, -(-min_rows // spec["n"]))  # enough rows per timing
            keep = sample_masks(cset.size, m_n, 0.05, seed=1)
            fns, rows = {}, {}
            formats = ["contiguous"] + ([] if text else ["channels_last"])
            for fmt in formats:
                m = model if fmt == "contiguous" else copy.deepcopy(model).to(memory_format=torch.channels_last)
                for b in sorted({min(spec["n"], 256), 256}):
                    xb = as_format(x.repeat(-(-b // len(x)), *([1] * (x.dim() - 1)))[:b].clone(), fmt)

                    def plain(m=m, xb=xb, times=max(1, m_n * spec["n"] // b)):
                        for _ in range(times):
                            m(xb)

                    fns[f"forward {fmt} b{b}"] = plain
                    rows[f"forward {fmt} b{b}"] = max(1, m_n * spec["n"] // b) * b
            engines = {"engine": Engine(model, cset, x, y, fn)}
            if variants:
                shareable = first_layer(model, cset, x[:1])[0] >= 0
                for mech in ("weights", "hooks") + (("shared",) if shareable else ()):
                    for fmt in formats:
                        engines[f"{mech} {fmt}"] = Engine(model, cset, x, y, fn, mechanism=mech, memory_format=fmt)
                if engines["engine"].plan.folded:
                    engines["engine, BatchNorm kept"] = Engine(model, cset, x, y, fn, batchnorm="keep")
            for k, e in engines.items():
                fns[k] = lambda e=e: e(keep)
                rows[k] = m_n * spec["n"]
            rates = _median_rates(fns, rows, reps)
            best = max((k for k in rates if k.startswith("forward")), key=rates.get)
            results.append(dict(spec, threads=threads_n, components=cset.size, forward=rates[best],
                                forward_how=best[len("forward "):], engine=rates["engine"],
                                plan=engines["engine"].plan,
                                variants={k: v for k, v in rates.items() if k != "engine"}))
            if report is not None:
                report(results[-1])
    return results


PRESET_HEADER = (f"{'setup':<8}{'model':<14}{'C':>6}{'n':>5}{'thr':>4}  {'plain forward, rows/s (best)':<36}"
                 f"{'engine, rows/s':>15}{'ratio':>7}  engine's plan")


def print_preset_rows(results: list[dict], variants: bool) -> None:
    for r in results:
        p = r["plan"]
        print(f"{r['setup']:<8}{r['model']:<14}{r['components']:>6}{r['n']:>5}{r['threads']:>4}  "
              f"{r['forward']:>10,.0f} ({r['forward_how']:<22}){r['engine']:>15,.0f}{r['engine'] / r['forward']:>7.2f}"
              f"  {p.mechanism}, K={p.masks_per_pass} x {p.batch_size}, {p.memory_format}"
              + (f", {len(p.folded)} BN folded" if p.folded else ""))
        if variants:
            for k, v in sorted(r["variants"].items()):
                print(f"{'':<12}{k:<30}{v:>12,.0f}{v / r['forward']:>7.2f}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="?", const="config/config.yaml", default=None, metavar="CONFIG",
                   help="engine vs plain forward pass on every model of a workflow preset (see above)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="--preset: torch threads (default: 1 2)")
    p.add_argument("--setups", nargs="+", default=None, help="--preset: only these setups")
    p.add_argument("--reps", type=int, default=5, help="--preset: interleaved repetitions (median reported)")
    p.add_argument("--variants", action="store_true", help="--preset: every mechanism x memory format too")
    p.add_argument("--examples", type=int, nargs="+", default=None,
                   help="--preset: these numbers of examples instead of each setup's own")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--n", type=int, nargs="+", default=[10000, 64], help="examples per mask")
    p.add_argument("--masks", type=int, default=16, help="masks timed for our loop (per K)")
    p.add_argument("--masks-authors", type=int, default=4, help="masks timed for the authors' loop")
    p.add_argument("--masks-per-pass", type=int, nargs="+", default=[1, 8, 32], help="K values of our loop")
    p.add_argument("--rows-per-pass", type=int, default=None,
                   help="our rows per forward pass (examples x K); default 2048 on a GPU, 256 on a CPU")
    p.add_argument("--batch-size", type=int, default=256, help="the authors' loop: examples per pass")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                   help="our compute dtype; default bfloat16 on a GPU, float32 on a CPU")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for the compute dtype")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true", help="our loop: NHWC memory format (convnets)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU smoke run")
    p.add_argument("--engine", action="store_true",
                   help="our loop with every choice the engine's (mechanism, format, rows per pass: measured "
                        "memory on a GPU), row 'engine'")
    p.add_argument("--compile", nargs="+", default=[], choices=[c for c in COMPILE if c != "off"],
                   help="the weights mechanism (K = 1) under torch.compile in these modes, rows 'compile:MODE' "
                        "(compilation time printed, not counted)")
    a = p.parse_args(argv)
    if a.preset is not None:
        threads = a.threads or [1, 2]
        masks = 4 if a.quick else a.masks if a.masks != 16 else 32
        print(f"{device_name(torch.device('cpu'))} | torch {torch.__version__} | preset {a.preset} | {masks} masks, "
              f"median of {a.reps} interleaved repetitions | random weights")
        print(PRESET_HEADER, flush=True)
        preset_table(a.preset, threads, masks, a.reps, a.variants, a.setups,
                     report=lambda row: print_preset_rows([row], a.variants) or sys.stdout.flush(), examples=a.examples,
                     min_rows=0 if a.quick else 2048)
        print("plain forward: the model without ablation on batches of the examples, best of both memory formats "
              "and of (all examples, 256) per batch; engine: coar.engine's plan, the masks' counterfactual outputs")
        return
    if a.quick:
        a.n, a.masks, a.masks_authors, a.masks_per_pass = [4], 2, 2, [2]
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    rows = a.rows_per_pass or (2048 if device.type == "cuda" else 256)
    print(f"device: {device_name(device)}, {torch.get_num_threads()} threads | torch {torch.__version__} | our dtype {str(dtype)[6:]}, authors' "
          f"{'fp16 autocast' if device.type == 'cuda' else 'float32'} | alpha {a.alpha} | rows/pass {rows}"
          f"{' | channels_last' if a.channels_last else ''}")
    print(f"{'model':<13}{'C':>7}{'n':>7}  {'loop':<12}{'K':>4}{'rows/s':>12}{'TFLOP/s':>9}{'% peak':>8}{'speedup':>9}"
          f"  agreement")
    for name in a.models:
        size, classes = MODELS[name]
        torch.manual_seed(0)
        cpu_model = build_model(name, num_classes=classes, image_size=size).eval()
        with torch.no_grad():  # torchvision's ViT starts with a zero head: every margin would be 0
            for param in cpu_model.parameters():
                if param.dim() >= 2 and not param.any():
                    param.normal_(0, 0.02)
        cset = component_set(cpu_model, name)
        ours_model = build_model(name, num_classes=classes, image_size=size).eval()
        ours_model.load_state_dict(cpu_model.state_dict())
        ours_model = ours_model.to(device, dtype)
        fmt = torch.channels_last if a.channels_last and name != "vit_b_16" else torch.contiguous_format
        ours_model = ours_model.to(memory_format=fmt)
        flops = forward_flops(ours_model, size, device, dtype)
        for n in a.n:
            g = torch.Generator().manual_seed(n)
            images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
            labels = torch.randint(0, classes, (n,), generator=g)
            if device.type == "cuda":
                images, labels = images.pin_memory(), labels.pin_memory()
            keep = sample_masks(cset.size, max(a.masks, a.masks_authors) + 1, a.alpha, seed=1)

            def row(loop, k, seconds, masks, ref=None, agreement=""):
                rate = masks * n / seconds
                tflops = rate * flops / 1e12
                peak = f"{100 * tflops / a.peak_tflops:.1f}" if a.peak_tflops else "-"
                speed = f"{ref / (seconds / masks):.2f}" if ref else "1.00"
                print(f"{name:<13}{cset.size:>7}{n:>7}  {loop:<12}{k:>4}{rate:>12,.1f}{tflops:>9.3f}{peak:>8}{speed:>9}"
                      f"  {agreement}")

            authors_loop(cpu_model, cset, images[:8], labels[:8], keep[:1], device, a.batch_size)  # warm-up
            base, t = timed(lambda: authors_loop(cpu_model, cset, images, labels, keep[1: 1 + a.masks_authors],
                                                 device, a.batch_size), device)
            per_mask = t / a.masks_authors
            row("authors", 1, t, a.masks_authors)

            def agree(out):
                shared = min(a.masks, a.masks_authors)
                diff = np.abs(out[:shared] - base[:shared]).max()
                r = np.corrcoef(out[:shared].ravel(), base[:shared].ravel())[0, 1]
                return f"max|d| {diff:.1e}, r {r:.5f}"
            x = normalise(images, device, dtype).contiguous(memory_format=fmt)  # resident on the device
            y = labels.to(device)
            for k in a.masks_per_pass:
                bs = max(1, min(n, rows // k))

                def ours(masks):
                    return counterfactual_outputs(ours_model, cset, x, y, masks, margin, batch_size=bs,
                                                  masks_per_pass=k)

                ours(keep[1: 1 + min(k, a.masks)])  # warm-up (cuDNN autotuning, allocator)
                out, t = timed(lambda: ours(keep[1: 1 + a.masks]), device)
                row("ours", k, t, a.masks, per_mask, agree(out))
            engines = {}
            if a.engine:  # every choice the engine's, as a workflow job with the default profile makes it
                engines["engine"] = lambda: Engine(ours_model, cset, x, y, margin)
            for mode in a.compile:
                engines[COMPILE_LABELS[mode]] = lambda mode=mode: Engine(
                    ours_model, cset, x, y, margin, mechanism="weights", batch_size=min(n, rows), compile=mode)
            for label, make in engines.items():
                sync(device)
                t0 = time.perf_counter()
                engine = make()
                engine(keep[1: 2])  # the plan, the probe pass, the compilation and the first mask
                sync(device)
                t_setup = time.perf_counter() - t0
                out, t = timed(lambda engine=engine: engine(keep[1: 1 + a.masks]), device)
                p_ = engine.plan
                row(label, p_.masks_per_pass, t, a.masks, per_mask,
                    agree(out) + f" | {p_.mechanism} {p_.masks_per_pass} x {p_.batch_size}, {p_.memory_format}, "
                                 f"set-up + first mask {t_setup:.1f} s")
                del engine
    print("rows/s: example-forwards per second; TFLOP/s: rows/s x forward FLOPs per example; speedup: over the "
          "authors' loop on the same device; agreement: our margins against theirs on the shared masks")


if __name__ == "__main__":
    main()
