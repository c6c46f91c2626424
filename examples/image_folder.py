"""COAR on a torchvision model of yours, over a folder of images (one subfolder per class, as ImageFolder reads).

    python examples/image_folder.py --images DIR [--checkpoint resnet18.pt] [--masks 2000] [--alpha 0.05]

Builds torchvision's ResNet-18 with as many classes as DIR has subfolders (random weights unless --checkpoint
gives a state dict), takes the output channels of every conv named conv* as components, attributes the
correct-class margin of every image and prints the mean correlation on fresh masks and the components with
the largest attributions for the first image. With --store the sampling is sharded and resumable.
"""
from __future__ import annotations

import argparse

import torch
import torchvision
from torchvision import transforms

import coar

# output channels of convs named conv* (conv1, layerX.Y.conv1/conv2): the paper's ResNet components
RULES = [coar.Rule(r"(.*\.)?conv\d", ("Conv2d",))]


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", required=True, help="folder with one subfolder of images per class")
    p.add_argument("--checkpoint", help="state dict of a torchvision resnet18 with as many classes as --images has")
    p.add_argument("--size", type=int, default=64, help="images are resized to size x size")
    p.add_argument("--masks", type=int, default=2000)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--test-masks", type=int, default=200)
    p.add_argument("--store", help="directory for resumable mask shards (default: in memory)")
    p.add_argument("--out", help="write the attributions here (.npz)")
    a = p.parse_args(argv)

    tf = transforms.Compose([transforms.Resize((a.size, a.size)), transforms.ToTensor(),
                             transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    data = torchvision.datasets.ImageFolder(a.images, transform=tf)
    model = torchvision.models.resnet18(weights=None, num_classes=len(data.classes))
    if a.checkpoint:
        model.load_state_dict(torch.load(a.checkpoint, map_location="cpu"))
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=False)  # read once, in this order

    attr = coar.attribute(model, loader, components=RULES, masks=a.masks, alpha=a.alpha, store=a.store)
    table = coar.evaluate(attr, model, loader, components=RULES, masks=a.test_masks, alpha=a.alpha)
    mean = float(table["correlation"].fillna(0).mean())
    print(f"{len(data)} images, {attr.n_components} components: mean correlation {mean:.3f} on "
          f"{a.test_masks} fresh masks (alpha {a.alpha})")
    labels = coar.component_set(model, RULES).labels()
    top = abs(attr.weights[0]).argsort()[::-1][:5]
    print(f"{data.samples[0][0]}: " + ", ".join(f"{labels[j]} {attr.weights[0, j]:+.3f}" for j in top))
    if a.out:
        attr.save(a.out)
    return mean


if __name__ == "__main__":
    main()
