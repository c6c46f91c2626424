"""COAR-EDIT on one prediction (paper Sec. 5.1): fix a misclassified Fashion-MNIST image by ablating a few
components of a small CNN, and check what the edit costs on other images.

    python examples/edit_prediction.py [--data DIR] [--train 2000] [--examples 200] [--masks 1000] [--max-k 5]

Trains a small CNN (a plain nn.Sequential: its components are given as rules), attributes the correct-class
margin of held-out images, takes the misclassified one closest to right as the target and 50 others as
references, and ablates in a copy of the model the fewest components of eq. 8 (k = 1, 2, ...) that fix it.
--data is a directory with Fashion-MNIST's IDX files (default: Debian's dataset-fashion-mnist package).
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import coar
from coar.paper.data.fashion_mnist import fashion_mnist_examples
from coar.outputs import margin

# output channels of both convs and the hidden units of the first linear layer
RULES = [coar.Rule(r"0|2", ("Conv2d",)), coar.Rule(r"5", ("Linear",))]


def small_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    return model.eval()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="directory with Fashion-MNIST's IDX files")
    p.add_argument("--train", type=int, default=2000, help="training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--examples", type=int, default=200, help="held-out images attributed (target and references)")
    p.add_argument("--masks", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--max-k", type=int, default=5, help="most components the edit may ablate")
    p.add_argument("--references", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    model = train(small_cnn(), *fashion_mnist_examples("train", a.train, a.seed, a.data).tensors(), a.epochs)
    x, y = fashion_mnist_examples("test", a.examples, a.seed + 1, a.data).tensors()
    attr = coar.attribute(model, x, y, components=RULES, masks=a.masks, alpha=a.alpha, seed=a.seed)

    with torch.no_grad():
        before = margin(model(x), y)
    wrong = torch.where(before < 0, before, -torch.inf)
    # the misclassified image closest to right (without errors: the one with the smallest margin)
    target = int(wrong.argmax()) if bool((before < 0).any()) else int(before.argmin())
    others = [i for i in range(len(x)) if i != target]
    references = others[: a.references]
    rest = torch.tensor(others[a.references:] or others)  # images that took no part in choosing the components
    labels = coar.component_set(model, RULES).labels()
    print(f"image {target} (label {int(y[target])}): margin {before[target].item():+.3f}; accuracy on "
          f"{len(rest)} other images {(before[rest] > 0).float().mean().item():.3f}")
    for k in range(1, a.max_k + 1):  # the fewest components that fix it (the paper picks k on validation data)
        edited, ablated = coar.edit(model, attr, RULES, targets=[target], references=references, k=k, mode="fix")
        with torch.no_grad():
            after = margin(edited(x), y)
        result = {"target": target, "k": k, "margin_before": before[target].item(),
                  "margin_after": after[target].item(), "ablated": [labels[j] for j in ablated],
                  "accuracy_before": (before[rest] > 0).float().mean().item(),
                  "accuracy_after": (after[rest] > 0).float().mean().item()}
        print(f"k={k}: ablating {', '.join(result['ablated'])}: margin {result['margin_after']:+.3f} "
              f"({'right' if result['margin_after'] > 0 else 'still wrong'}), accuracy on the others "
              f"{result['accuracy_after']:.3f}")
        if result["margin_after"] > 0:
            break
    return result

if __name__ == "__main__":
    main()
