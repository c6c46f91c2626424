"""Rule model: train the setup's model (or load published weights) and save a checkpoint with metadata."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from coar.data.examples import Examples  # noqa: E402
from coar.data.registry import DATASETS, load_images  # noqa: E402
from coar.models import build_model  # noqa: E402
from coar.training import accuracy, save_checkpoint, train_classifier  # noqa: E402

spec = sm.params.spec
kwargs = {"num_classes": spec["num_classes"], "in_channels": spec["in_channels"], "image_size": spec["image_size"]}
root = sm.params.data_root if spec["dataset"] == "fashion-mnist" else f"{sm.params.download_root}/{spec['dataset']}"
if spec["pretrained"]:
    model, info = build_model(spec["model"], pretrained=True, **kwargs), {"source": "published weights"}
else:
    torch.manual_seed(spec["seed"])
    norm = {k: DATASETS[spec["dataset"]][k] for k in ("mean", "std")}
    images, labels = load_images(spec["dataset"], "train", root)
    n = spec["train"]["n_train"] or len(images)
    idx = np.sort(np.random.default_rng(spec["seed"]).permutation(len(images))[:n])
    x, y = Examples(images[idx], labels[idx], "image", norm).tensors(device)
    model = build_model(spec["model"], **kwargs).to(device)
    t = spec["train"]
    info = train_classifier(model, x, y, epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"],
                            seed=spec["seed"])
    xt, yt = Examples(*load_images(spec["dataset"], "test", root), "image", norm).tensors(device)
    info.update(test_accuracy=accuracy(model, xt, yt), n_train=n)
    print(f"test accuracy {info['test_accuracy']:.4f}")
save_checkpoint(sm.output[0], model.cpu(), spec["model"], kwargs, info)
