"""Rule model: train the setup's model (or load published weights) and save a checkpoint with metadata."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from coar.data.examples import Examples  # noqa: E402
from coar.data.registry import DATASETS, dataset_root, load_images  # noqa: E402
from coar.models import build_model  # noqa: E402
from coar.training import accuracy, save_checkpoint, train_classifier  # noqa: E402

spec = sm.params.spec
kwargs = {"num_classes": spec["num_classes"], "in_channels": spec["in_channels"], "image_size": spec["image_size"]}
root = dataset_root(spec["dataset"], sm.params.data_root, sm.params.download_root)
if spec["pretrained"]:
    model, info = build_model(spec["model"], pretrained=True, **kwargs), {"source": "published weights"}
elif spec["dataset"] == "os-text":  # the byte-level LM of the offline text stand-in
    from coar.data.text import load_corpus, text_examples
    from coar.training import language_model_loss, train_language_model

    torch.manual_seed(spec["seed"])
    model = build_model(spec["model"], **kwargs).to(device)
    t = spec["train"]
    train_tokens = torch.from_numpy(load_corpus(root)[0].astype(np.int64)).to(device)
    info = train_language_model(model, train_tokens, steps=t.get("steps") or 1000, batch_size=t["batch_size"],
                                length=64, lr=t["lr"], seed=spec["seed"])  # 64-byte training windows
    held = torch.from_numpy(text_examples("test", None, 64, root=root).inputs).to(device)
    info["held_out_loss_nats_per_byte"] = language_model_loss(model, held)
    print(f"held-out loss {info['held_out_loss_nats_per_byte']:.3f} nats/byte")
else:
    torch.manual_seed(spec["seed"])
    norm = {k: DATASETS[spec["dataset"]][k] for k in ("mean", "std")}
    images, labels = load_images(spec["dataset"], "train", root)
    n = spec["train"].get("n_train") or len(images)
    idx = np.sort(np.random.default_rng(spec["seed"]).permutation(len(images))[:n])
    x, y = Examples(images[idx], labels[idx], "image", norm).tensors(device)
    model = build_model(spec["model"], **kwargs).to(device)
    t = spec["train"]
    augment = t.get("augment") is not False
    info = train_classifier(model, x, y, epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"],
                            seed=spec["seed"], augment_pad=2 if augment else 0, flip=augment)
    test_images, test_labels = load_images(spec["dataset"], "test", root)
    xt, yt = Examples(test_images, test_labels, "image", norm).tensors(device)
    info.update(test_accuracy=accuracy(model, xt, yt), n_train=n)
    print(f"test accuracy {info['test_accuracy']:.4f}")
    if spec["dataset"] == "fashion-mnist-spurious":  # the Waterbirds stand-in: accuracy per group
        from coar.data.spurious import GROUP_NAMES, load_spurious_fashion_mnist

        groups = load_spurious_fashion_mnist("test", root)[2]
        info["group_accuracy"] = {name: accuracy(model, xt[groups == g], yt[groups == g])
                                  for g, name in enumerate(GROUP_NAMES)}
        print("group accuracy", info["group_accuracy"])
    if spec["dataset"].endswith("-backdoor"):  # the attack: the trigger on every test image
        from coar.data.backdoor import trigger

        xa, _ = Examples(trigger(spec["dataset"], test_images), test_labels, "image", norm).tensors(device)
        info["triggered_test_accuracy"] = accuracy(model, xa, yt)
        print(f"test accuracy with the trigger {info['triggered_test_accuracy']:.4f}")
save_checkpoint(sm.output[0], model.cpu(), spec["model"], kwargs, info)
