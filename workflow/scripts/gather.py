"""Rule gather_masks: check every shard of a split (complete, checksums as in its receipt, consistent
settings) and list them for the regression or the evaluation."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, torch=False)

import json  # noqa: E402
import os  # noqa: E402

from coar.errors import StoreError  # noqa: E402
from coar.store import verify  # noqa: E402

stores, total = [], 0
for path in sm.input:
    receipt = json.load(open(path))
    if verify(receipt["store"]) != receipt["checksums"]:
        raise StoreError(f"store {receipt['store']} changed since its receipt {path} was written")
    stores.append(receipt["store"])
    total += receipt["meta"]["m"]
keys = ("components_fingerprint", "examples_fingerprint", "model_fingerprint", "alpha", "output_fn")
metas = [json.load(open(p))["meta"] for p in sm.input]
for k in keys:
    if len({json.dumps(m[k]) for m in metas}) != 1:
        raise StoreError(f"shards of {sm.output[0]} disagree on {k}: {[m[k] for m in metas]}")
tmp = sm.output[0] + ".tmp"
with open(tmp, "w") as fh:
    json.dump({"stores": stores, "masks": total, "alpha": metas[0]["alpha"]}, fh, indent=1)
os.replace(tmp, sm.output[0])
print(f"{len(stores)} shards, {total} masks")
