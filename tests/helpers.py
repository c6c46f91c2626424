"""Helpers shared by the test modules."""
import torch
from torch import nn


def randomize_bn(model, seed=0):
    """Non-trivial BatchNorm statistics and affine parameters, so that BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
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


# ----------------------------------------------------------------------------- killing a sampling job mid-shard

# A variant of the test preset's setup T with one long shard (T's model and examples), and the throughput
# settings that make that shard take seconds on a CPU (one example and one mask per forward pass), so that a
# test can kill its job in the middle. Every run that is compared uses the same settings: rows are evaluated
# in batches of the same composition, hence bitwise identical outputs.
KILL_SETUP, KILL_MASKS = "K", 400
KILL_RECEIPT = f"results/{KILL_SETUP}/masks/train/shard-000.json"
SLOW_SHARD = {"batch_size": 1, "masks_per_pass": 1}


def write_kill_config(root, dest):
    """The test preset plus setup K; returns the config file's path."""
    import yaml

    config = yaml.safe_load((root / "config/test.yaml").read_text())
    config["setups"][KILL_SETUP] = {"parent": "T", "masks": KILL_MASKS, "shards": 1}
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def rows_done(store_path) -> int:
    """Finished rows of a mask store now being written (0 while it does not exist yet)."""
    from coar.errors import CoarError
    from coar.store import ShardStore

    if not store_path.is_dir():
        return 0
    try:
        with ShardStore.open(store_path, readonly=True) as store:
            return int(store.done.sum())
    except CoarError:  # between the temporary directory's rename and the first write
        return 0


def wait_for_rows(store_path, alive, low, timeout=600):
    """Poll until at least `low` rows of the store are done (and not all); `alive()` false fails the wait."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        n = rows_done(store_path)
        assert n < KILL_MASKS, f"the shard finished before it could be killed ({n} rows)"
        if n >= low:
            return n
        assert alive(), f"the run ended before {low} rows of {store_path} were done"
        assert time.monotonic() < deadline, f"{store_path}: only {n} rows done after {timeout} s"
        time.sleep(0.05)


def processes():
    """{pid: (name, parent pid, command line, environment)} of the live processes (zombies left out)."""
    from pathlib import Path

    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                name, (state, ppid) = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()[:2]
                if state != "Z":
                    procs[int(d.name)] = (name, int(ppid), (d / "cmdline").read_bytes().replace(b"\0", b" "),
                                          b"\0" + (d / "environ").read_bytes() + b"\0")
            except (OSError, ValueError):
                pass
    return procs


def descendants(pid) -> set:
    """Process ids of every live descendant of `pid`."""
    children = {}
    for p, (_, ppid, _, _) in processes().items():
        children.setdefault(ppid, []).append(p)
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found
