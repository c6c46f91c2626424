"""Rule gather_masks: check every shard of a split (complete, checksums as in its receipt, consistent
settings) and list them for the regression or the evaluation."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, torch=False)

import json  # noqa: E402

from coar.errors import StoreError  # noqa: E402
from coar.paper.receipts import read_shard, write_split  # noqa: E402
from coar.store import verify  # noqa: E402

receipts = [read_shard(path) for path in sm.input]
for path, receipt in zip(sm.input, receipts):
    if verify(receipt["store"]) != receipt["checksums"]:
        raise StoreError(f"store {receipt['store']} changed since its receipt {path} was written")
stores = [r["store"] for r in receipts]
total = sum(r["meta"]["m"] for r in receipts)
keys = ("components_fingerprint", "examples_fingerprint", "model_fingerprint", "alpha", "output_fn")
metas = [r["meta"] for r in receipts]
for k in keys:
    if len({json.dumps(m.get(k)) for m in metas}) != 1:
        raise StoreError(f"shards of {sm.output[0]} disagree on {k}: {[m.get(k) for m in metas]}")
write_split(sm.output[0], stores, total, metas[0]["alpha"])
print(f"{len(stores)} shards, {total} masks")
