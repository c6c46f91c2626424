"""Rule shifted_examples: decode a distribution-shifted set once (n random examples plus every example of the
forget edit's classes) into uint8 arrays with a checksum."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm)

from coar.paper.data.registry import dataset_root, make_examples  # noqa: E402

spec = sm.params.spec
root = dataset_root(spec["dataset"], sm.params.data_root, sm.params.download_root, sm.params.imagenet_root)
ex = make_examples(spec["dataset"], spec["split"], spec["n"], spec["seed"] + 2, root,
                   corruption=spec["corruption"], whole_classes=spec["classes"], size=spec.get("image_size"))
ex.meta["title"] = spec["title"]
ex.save(sm.output[0])
print(f"{spec['title']}: {len(ex)} {spec['dataset']} {spec['split']} examples ({spec['n']} random, all of classes "
      f"{spec['classes']}), fingerprint {ex.fingerprint()}")
