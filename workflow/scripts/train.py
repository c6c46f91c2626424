"""Rule model: train the setup's model (or load published weights) and save a checkpoint with metadata: the
accuracy, the setup's model config, fingerprints of the training and test data and of the weights, and the
software and device it was made with."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _job import start  # noqa: E402

device = start(sm)

import hashlib  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from coar.examples import Examples  # noqa: E402
from coar.paper.data.registry import dataset_root, decode_size, group_names, make_examples  # noqa: E402
from coar.paper.data.specs import SPECS  # noqa: E402
from coar.paper.models import architecture, build_model, replace_head  # noqa: E402
from coar.paper.training import accuracy, save_checkpoint, train_classifier  # noqa: E402

spec = sm.params.spec
kwargs = {"num_classes": spec["num_classes"], "in_channels": spec["in_channels"], "image_size": spec["image_size"]}
root = dataset_root(spec["dataset"], sm.params.data_root, sm.params.download_root)
if spec["model"] == "clip_zeroshot":  # zero-shot CLIP over the dataset's class names (paper Sec. 5.5)
    from coar.paper.data.registry import class_names
    from coar.paper.models.clip_zeroshot import build_zero_shot_clip

    names = class_names(spec["dataset"], root)
    model, info = build_zero_shot_clip(names), {"source": "published weights", "class_names": names}
    kwargs["num_classes"] = len(names)
    kwargs.update(architecture(model))  # the hub's configuration, which the checkpoint loads into
elif spec["pretrained"]:
    model, info = build_model(spec["model"], pretrained=True, **kwargs), {"source": "published weights"}
    kwargs.update(architecture(model))
elif SPECS[spec["dataset"]].kind == "tokens":  # a language model trained here: the offline text stand-in
    from coar.paper.data.text import load_corpus, text_examples
    from coar.paper.training import language_model_loss, train_language_model

    torch.manual_seed(spec["seed"])
    model = build_model(spec["model"], **kwargs).to(device)
    t = spec["train"]
    train_tokens = torch.from_numpy(load_corpus(root)[0].astype(np.int64)).to(device)
    info = train_language_model(model, train_tokens, steps=t.get("steps") or 1000, batch_size=t["batch_size"],
                                length=64, lr=t["lr"], seed=spec["seed"])  # 64-byte training windows
    held = torch.from_numpy(text_examples("test", None, 64, root=root).inputs).to(device)
    info["held_out_loss_nats_per_byte"] = language_model_loss(model, held)
    info["data"] = {"dataset": spec["dataset"], "train_bytes": len(train_tokens),
                    "train_fingerprint": hashlib.sha256(train_tokens.cpu().numpy().astype(np.uint8).tobytes()).hexdigest()[:16]}
    print(f"held-out loss {info['held_out_loss_nats_per_byte']:.3f} nats/byte")
else:
    torch.manual_seed(spec["seed"])
    t = spec["train"]
    # the first n_train of a seeded permutation of the training split (all when null)
    train_set = make_examples(spec["dataset"], "train", t.get("n_train"), spec["seed"], root,
                              size=decode_size(spec["dataset"], spec["image_size"]))
    x, y = train_set.tensors(device, normalized=False)  # uint8 on the device, standardised per batch
    if t.get("from_pretrained"):  # fine-tune published weights with a fresh head (paper Sec. 5.3's ResNet-50s)
        model = replace_head(build_model(spec["model"], pretrained=True, **kwargs), spec["num_classes"]).to(device)
    else:
        model = build_model(spec["model"], **kwargs).to(device)
    augment = t.get("augment") is not False
    info = train_classifier(model, x, y, epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"],
                            seed=spec["seed"], augment_pad=2 if augment else 0, flip=augment,
                            precision=t.get("precision"), norm=train_set.norm(),
                            memory_format=t.get("memory_format") or "contiguous")
    del x
    test = make_examples(spec["dataset"], "test", None, 0, root)  # the whole test split
    xt, yt = test.tensors(device, normalized=False)
    norm = test.norm()
    info.update(test_accuracy=accuracy(model, xt, yt, norm=norm), n_train=len(train_set),
                data={"dataset": spec["dataset"], "train_fingerprint": train_set.fingerprint(),
                      "test_fingerprint": test.fingerprint()})
    print(f"test accuracy {info['test_accuracy']:.4f}")
    if "groups" in test.meta:  # group-labelled data: accuracy per group (the worst one is the paper's metric)
        groups = np.asarray(test.meta["groups"])
        info["group_accuracy"] = {name: accuracy(model, xt[groups == g], yt[groups == g], norm=norm)
                                  for g, name in enumerate(group_names(spec["dataset"])) if (groups == g).any()}
        print("group accuracy", info["group_accuracy"])
    if SPECS[spec["dataset"]].backdoor_of:  # the attack: the trigger on every test image
        from coar.paper.data.backdoor import trigger

        xa, _ = Examples(trigger(spec["dataset"], test.inputs), test.targets, "image", test.meta).tensors(
            device, normalized=False)
        info["triggered_test_accuracy"] = accuracy(model, xa, yt, norm=norm)
        print(f"test accuracy with the trigger {info['triggered_test_accuracy']:.4f}")
import coar  # noqa: E402
from coar.components import model_fingerprint  # noqa: E402

info.update(config=spec, weights_fingerprint=model_fingerprint(model),
            software={"coar": coar.__version__, "torch": str(torch.__version__),
                      "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"})
save_checkpoint(sm.output[0], model.cpu(), spec["model"], kwargs, info)
