"""Throughput of the two ablation mechanisms: (a) weight surgery on a copy, one mask per pass set (the
authors' loop) vs (b) hooks with per-sample keep-masks, K masks per forward pass.

Prints masks/s (one "mask" = the model evaluated on all n examples under one ablation) and rows/s.
Example: python benchmarks/bench_ablation.py --model resnet_small --n 500 16 --device cpu
"""
from __future__ import annotations

import argparse
import time

import torch

from _common import device_name

from coar.ablation import surgery_outputs
from coar.engine import counterfactual_outputs
from coar.components import component_set
from coar.paper.models import build_model
from coar.outputs import margin
from coar.sampling import sample_masks


def timed(fn, device, repeats=1):
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeats


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet_small")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--n", type=int, nargs="+", default=[500, 16])
    p.add_argument("--masks", type=int, default=32, help="masks timed per configuration")
    p.add_argument("--masks-per-pass", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--batch-size", type=int, default=256, help="max rows per forward pass (examples x masks)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    a = p.parse_args()
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    model = build_model(a.model, in_channels=a.channels, image_size=a.image_size).to(device, dtype)
    cset = component_set(model, a.model)
    name = device_name(device)
    print(f"device: {name} ({device}), threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"model {a.model} ({cset.size} components), dtype {a.dtype}")
    keep = sample_masks(cset.size, a.masks, 0.1, seed=0)
    print(f"{'mechanism':<28}{'n':>6}{'K':>5}{'masks/s':>10}{'rows/s':>12}{'speedup':>9}")
    for n in a.n:
        x = torch.randn(n, a.channels, a.image_size, a.image_size, device=device, dtype=dtype)
        y = torch.randint(0, 10, (n,), device=device)
        ref = timed(lambda: surgery_outputs(model, cset, x, y, keep, margin, batch_size=a.batch_size), device)
        print(f"{'(a) weight surgery':<28}{n:>6}{1:>5}{a.masks / ref:>10.1f}{a.masks * n / ref:>12.0f}{1.0:>9.2f}")
        for k in a.masks_per_pass:
            bs = max(1, min(n, a.batch_size // k)) if n * k > a.batch_size else n
            dt = timed(lambda: counterfactual_outputs(model, cset, x, y, keep, margin, batch_size=bs,
                                                      masks_per_pass=k), device)
            print(f"{'(b) hooks, K masks/pass':<28}{n:>6}{k:>5}{a.masks / dt:>10.1f}{a.masks * n / dt:>12.0f}"
                  f"{ref / dt:>9.2f}")


if __name__ == "__main__":
    main()
