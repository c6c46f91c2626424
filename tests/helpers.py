"""Helpers shared by the test modules."""
import torch
from torch import nn


def randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, so that BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def assert_no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, f"hook left on {type(m).__name__}"


def job_counts(output: str) -> dict:
    """The "Job stats" table of a Snakemake dry run as {rule: count}."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Job stats")), None)
    assert start is not None, f"no 'Job stats' table in the dry run's output:\n{output[-4000:]}"
    counts = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts
