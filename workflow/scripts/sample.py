"""Rule sample_shard: fill (or resume) one mask store, then write its receipt atomically."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "a", buffering=1)  # noqa: F821 (append: resumed runs)
sm = snakemake  # noqa: F821

import os  # noqa: E402

os.environ.setdefault("TQDM_MININTERVAL", "15")  # progress lines in the log every 15 s, not every step
import torch  # noqa: E402

torch.set_num_threads(sm.threads)  # one job = its declared threads: no oversubscription of the cores

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


from coar.components import component_set  # noqa: E402
from coar.data.examples import Examples  # noqa: E402
from coar.errors import StoreMismatchError  # noqa: E402
from coar.pipeline import sample_store  # noqa: E402
from coar.store import verify  # noqa: E402
from coar.training import load_checkpoint  # noqa: E402

spec, st, res = sm.params.spec, sm.params.settings, sm.resources
device = "cuda" if torch.cuda.is_available() and res.get("gpu", 0) else "cpu"
model, ck = load_checkpoint(sm.input.model, device)
cset = component_set(model, spec["components"] or spec["model"])
examples = Examples.load(sm.input.examples)
kw = dict(m=st["m"], alpha=st["alpha"], seed=st["seed"], shard=st["shard"], output=spec["output"],
          scheme=spec["scheme"], ablation=spec["ablation"], gamma=spec["gamma"], dtype=spec["dtype"],
          batch_size=res.get("batch_size", 256), masks_per_pass=res.get("masks_per_pass", 8), device=device)
try:
    store = sample_store(sm.params.store, model, cset, examples, **kw)
except StoreMismatchError as exc:  # settings changed since the store was made: keep it aside, start anew
    stale = f"{sm.params.store}.stale-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"{exc}\nmoving the old store to {stale}")
    os.rename(sm.params.store, stale)
    store = sample_store(sm.params.store, model, cset, examples, **kw)
receipt = {"store": sm.params.store, "meta": store.meta, "checksums": verify(sm.params.store)}
tmp = Path(sm.output[0] + ".tmp")
tmp.write_text(json.dumps(receipt, indent=1, default=str))
os.replace(tmp, sm.output[0])
