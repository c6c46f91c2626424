"""Training throughput in both memory formats: the default preset's convnets (and its ViT, for contrast), SGD steps
as coar.paper.training.train_classifier takes them (Nesterov momentum, cross-entropy, 128 images a batch), images
per second in the contiguous (NCHW) and the channels_last format, and which of the two
coar.paper.training.training_memory_format picks. Random weights and images: speed does not depend on them.
Repetitions are interleaved and the median is reported.

    python benchmarks/bench_training.py --threads 1 2
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import device_name

from coar.paper.models import build_model
from coar.paper.training import training_memory_format

MODELS = ["resnet_tiny", "resnet_mini", "resnet18_w8", "resnet18_w32", "vit_tiny"]


def step_fn(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="steps per timing")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args(argv)
    print(f"{device_name(torch.device('cpu'))} | torch {torch.__version__} | batch {a.batch_size}, {a.steps} steps "
          f"a timing, median of {a.reps}")
    print(f"{'model':<14}{'thr':>4}{'contiguous, img/s':>19}{'channels_last, img/s':>22}{'ratio':>7}  chosen")
    for threads in a.threads:
        torch.set_num_threads(threads)
        for name in a.models:
            torch.manual_seed(0)
            base = build_model(name, 10, 1, 28).train()
            x, y = torch.randn(a.batch_size, 1, 28, 28), torch.randint(0, 10, (a.batch_size,))
            steps = {"contiguous": step_fn(base, x, y)}
            cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
            steps["channels_last"] = step_fn(cl, x.contiguous(memory_format=torch.channels_last), y)
            for fn in steps.values():
                for _ in range(3):
                    fn()
            times = {k: [] for k in steps}
            for _ in range(a.reps):
                for k, fn in steps.items():
                    t = time.perf_counter()
                    for _ in range(a.steps):
                        fn()
                    times[k].append(time.perf_counter() - t)
            rate = {k: a.steps * a.batch_size / float(np.median(v)) for k, v in times.items()}
            chosen = training_memory_format(build_model(name, 10, 1, 28), x)
            print(f"{name:<14}{threads:>4}{rate['contiguous']:>19,.0f}{rate['channels_last']:>22,.0f}"
                  f"{rate['channels_last'] / rate['contiguous']:>7.2f}  {chosen}", flush=True)


if __name__ == "__main__":
    main()
