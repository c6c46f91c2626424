"""Rule examples: decode a fixed evaluation set once into uint8 arrays with a checksum."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (injected by Snakemake)
sm = snakemake  # noqa: F821

import os  # noqa: E402

os.environ.setdefault("TQDM_MININTERVAL", "15")  # progress lines in the log every 15 s, not every step
import torch  # noqa: E402

torch.set_num_threads(sm.threads)  # one job = its declared threads: no oversubscription of the cores

from coar.data.registry import make_examples  # noqa: E402

spec = sm.params.spec
roots = {"fashion-mnist": sm.params.data_root, "cifar10": f"{sm.params.download_root}/cifar10",
         "imagenet": sm.params.imagenet_root}
ex_spec = spec["examples"]
ex = make_examples(spec["dataset"], ex_spec["split"], ex_spec.get("n"), spec["seed"] + 1,
                   roots[spec["dataset"]], ex_spec.get("every"))
ex.save(sm.output[0])
print(f"{len(ex)} {spec['dataset']} {ex_spec['split']} examples, fingerprint {ex.fingerprint()}")
