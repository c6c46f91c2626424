"""Rule model: train the setup's model (or load published weights) and save a checkpoint with metadata."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: F821
sm = snakemake  # noqa: F821

import os  # noqa: E402

os.environ.setdefault("TQDM_MININTERVAL", "15")  # progress lines in the log every 15 s, not every step
import torch  # noqa: E402

torch.set_num_threads(sm.threads)  # one job = its declared threads: no oversubscription of the cores

import numpy as np  # noqa: E402

from coar.data.examples import Examples  # noqa: E402
from coar.data.registry import DATASETS, load_images  # noqa: E402
from coar.models import build_model  # noqa: E402
from coar.training import accuracy, save_checkpoint, train_classifier  # noqa: E402

spec = sm.params.spec
device = "cuda" if torch.cuda.is_available() and sm.resources.get("gpu", 0) else "cpu"
kwargs = {"num_classes": spec["num_classes"], "in_channels": spec["in_channels"], "image_size": spec["image_size"]}
root = sm.params.data_root if spec["dataset"] == "fashion-mnist" else f"{sm.params.download_root}/{spec['dataset']}"
if spec["pretrained"]:
    model, info = build_model(spec["model"], pretrained=True, **kwargs), {"source": "published weights"}
else:
    torch.manual_seed(spec["seed"])
    info_d = DATASETS[spec["dataset"]]
    images, labels = load_images(spec["dataset"], "train", root)
    n = spec["train"]["n_train"] or len(images)
    idx = np.sort(np.random.default_rng(spec["seed"]).permutation(len(images))[:n])
    meta = {"mean": info_d["mean"], "std": info_d["std"]}
    x, y = Examples(images[idx], labels[idx], "image", meta).tensors(device)
    model = build_model(spec["model"], **kwargs).to(device)
    t = spec["train"]
    info = train_classifier(model, x, y, epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"],
                            seed=spec["seed"])
    xt, yt = Examples(*load_images(spec["dataset"], "test", root), "image", meta).tensors(device)
    info.update(test_accuracy=accuracy(model, xt, yt), n_train=n)
    print(f"test accuracy {info['test_accuracy']:.4f}")
save_checkpoint(sm.output[0], model.cpu(), spec["model"], kwargs, info)
