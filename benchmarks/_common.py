"""What the benchmark scripts share: the device's name for their reports, and the planted-problem flags."""
from __future__ import annotations

import os
import platform

import torch


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name and core count (from /proc/cpuinfo where there is one)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def add_problem_args(ap, m: int, c: int, n: int) -> None:
    """--m --c --n --alpha --noise --seed of a planted regression problem (bench_regression.planted_problem)."""
    ap.add_argument("--m", type=int, default=m, help="number of masks M")
    ap.add_argument("--c", type=int, default=c, help="number of components C")
    ap.add_argument("--n", type=int, default=n, help="number of examples N")
    ap.add_argument("--alpha", type=float, default=0.1, help="ablated fraction per mask")
    ap.add_argument("--noise", type=float, default=0.1, help="output noise std")
    ap.add_argument("--seed", type=int, default=0)
