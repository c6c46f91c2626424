"""Rule dataset: obtain one data source (download, or check what was placed by hand), verify it and write its
manifest (coar.paper.data.sources)."""
import json
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

start(sm, online=True)  # a local rule: it downloads (TinyStories through huggingface_hub)

from coar.paper.data.sources import prepare  # noqa: E402
from coar.io import atomic_write_text  # noqa: E402

manifest = prepare(sm.wildcards.source, sm.params.root)
atomic_write_text(sm.output[0], json.dumps(manifest, indent=1) + "\n")
print(json.dumps(manifest, indent=1))
