"""Rule weights: fetch one set of published weights (or a Hugging Face model with its tokenizer), verify every
file and write its manifest (coar.paper.hub)."""
import json
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, torch=False, online=True)

from coar.io import atomic_write_text  # noqa: E402
from coar.paper.hub import fetch  # noqa: E402

manifest = fetch(sm.wildcards.asset)
atomic_write_text(sm.output[0], json.dumps(manifest, indent=1) + "\n")
print(json.dumps(manifest, indent=1))
