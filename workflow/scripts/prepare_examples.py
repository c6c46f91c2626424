"""Rule examples: decode a fixed evaluation set once into uint8 arrays with a checksum."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm)

from coar.paper.data.registry import dataset_root, make_examples  # noqa: E402

spec = sm.params.spec
ex_spec = spec["examples"]
# rule heldout_examples: the next n examples of the same seeded permutation, disjoint from the setup's own
n, offset = ex_spec.get("n"), 0
if "n" in sm.wildcards.keys():
    n, offset = int(sm.wildcards.n), ex_spec["n"]
ex = make_examples(spec["dataset"], ex_spec["split"], n, spec["seed"] + 1,
                   dataset_root(spec["dataset"], sm.params.data_root, sm.params.download_root, sm.params.imagenet_root),
                   ex_spec.get("every"), ex_spec.get("corruption"), ex_spec.get("length"), offset, ex_spec.get("trigger"),
                   ex_spec.get("whole_classes") or (), size=spec.get("image_size"))
ex.save(sm.output[0])
print(f"{len(ex)} {spec['dataset']} {ex_spec['split']} examples, fingerprint {ex.fingerprint()}")
