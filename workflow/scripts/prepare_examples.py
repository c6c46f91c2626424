"""Rule examples: decode a fixed evaluation set once into uint8 arrays with a checksum."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm)

from coar.data.registry import make_examples  # noqa: E402

spec = sm.params.spec
roots = {"fashion-mnist": sm.params.data_root, "cifar10": f"{sm.params.download_root}/cifar10",
         "imagenet": sm.params.imagenet_root}
ex_spec = spec["examples"]
ex = make_examples(spec["dataset"], ex_spec["split"], ex_spec.get("n"), spec["seed"] + 1,
                   roots[spec["dataset"]], ex_spec.get("every"), ex_spec.get("corruption"))
ex.save(sm.output[0])
print(f"{len(ex)} {spec['dataset']} {ex_spec['split']} examples, fingerprint {ex.fingerprint()}")
