"""Rule sample_shard: fill (or resume) one mask store, then write its receipt atomically."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import model_and_components, start  # noqa: E402

device = start(sm)  # Snakemake deletes a job's log before it runs: a rerun says below what it resumed

import os  # noqa: E402
import time  # noqa: E402

from coar.examples import Examples  # noqa: E402
from coar.errors import CoarError, StoreMismatchError  # noqa: E402
from coar.paper.receipts import write_shard  # noqa: E402
from coar.pipeline import sample_store  # noqa: E402
from coar.store import ShardStore, verify  # noqa: E402

spec, st, res = sm.params.spec, sm.params.settings, sm.resources
model, cset = model_and_components(sm.input.model, spec, device)
examples = Examples.load(sm.input.examples)
kw = dict(m=st["m"], alpha=st["alpha"], seed=st["seed"], shard=st["shard"], output=spec["output"],
          scheme=spec["scheme"], ablation=spec["ablation"], gamma=spec["gamma"], dtype=spec["dtype"],
          precision=spec.get("precision") or "float32",
          batch_size=res.get("batch_size") or None, masks_per_pass=res.get("masks_per_pass") or None,
          device=device, log=print)  # 0 or unset: the engine's choice (coar.engine.plan)
print(f"sampling on {device}: {kw['precision']} forward passes")
if os.path.isdir(sm.params.store):  # a killed or failed earlier attempt: its finished rows are kept
    try:
        with ShardStore.open(sm.params.store, readonly=True) as old:
            print(f"resuming {sm.params.store}: {int(old.done.sum())} of {old.n_rows} rows already done")
    except CoarError as exc:
        print(f"the existing store {sm.params.store} cannot be resumed as it is: {exc}")
try:
    store = sample_store(sm.params.store, model, cset, examples, **kw)
except StoreMismatchError as exc:  # settings changed since the store was made: keep it aside, start anew
    stale = f"{sm.params.store}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"{exc}\nmoving the old store to {stale}")
    os.rename(sm.params.store, stale)
    store = sample_store(sm.params.store, model, cset, examples, **kw)
write_shard(sm.output[0], sm.params.store, store.meta, verify(sm.params.store))
