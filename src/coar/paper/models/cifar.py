"""Small image models: the authors' CIFAR ResNet, a standard CIFAR ResNet-18, an MLP, a small ViT."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:  # named "shortcut": not a component (no "conv" in its name)
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images.

    stages: (width, blocks, stride) per stage. pool: kernel of the final average pool, or None for a
    global pool. The authors' CIFAR-10 model is stem=256, stages=[(256, 4, 1)], pool=8 (linear 4096->10).
    """

    def __init__(self, stem: int, stages: Sequence[tuple[int, int, int]], num_classes: int = 10,
                 in_channels: int = 3, pool: int | None = None, image_size: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        layers, cin, size = [], stem, image_size
        for width, blocks, stride in stages:
            seq = []
            for b in range(blocks):
                seq.append(BasicBlock(cin, width, stride if b == 0 else 1))
                cin = width
            size = (size + stride - 1) // stride
            layers.append(nn.Sequential(*seq))
        self.layers = nn.Sequential(*layers)
        if pool is None:
            self.pool, feats = nn.AdaptiveAvgPool2d(1), cin
        else:
            self.pool, feats = nn.AvgPool2d(pool), cin * (size // pool) ** 2
        self.linear = nn.Linear(feats, num_classes)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.pool(self.layers(out))
        return self.linear(out.flatten(1))


def cifar_resnet(num_classes=10, in_channels=3, image_size=32):
    """The authors' released CIFAR-10 ResNet: 9 convs x 256 filters = 2,304 components."""
    return CifarResNet(256, [(256, 4, 1)], num_classes, in_channels, pool=8, image_size=image_size)


def resnet18_cifar(num_classes=10, in_channels=3, image_size=32, width=64):
    """The standard CIFAR ResNet-18 layout (stem, then 2 blocks at each of 4 widths); 3,904 filters at width 64."""
    w = width
    return CifarResNet(w, [(w, 2, 1), (2 * w, 2, 2), (4 * w, 2, 2), (8 * w, 2, 2)], num_classes, in_channels, None,
                       image_size)


def resnet18_w8(num_classes=10, in_channels=3, image_size=32):
    """ResNet-18's layout at 1/8 of its width: 8 + 2x(8+8) + 2x(16+16) + 2x(32+32) + 2x(64+64) = 488 filters.
    The default preset's model for the single-example fixes of Fig. 19: fixing one error of the 104-filter
    resnet_tiny changed held-out accuracy by a median -25 points, one of this model's by +0.1 (docs/results.md, "A's
    filters are too coarse")."""
    return resnet18_cifar(num_classes, in_channels, image_size, width=8)


def resnet18_w32(num_classes=10, in_channels=3, image_size=32):
    """ResNet-18's layout at half its width: 32 + 2x(32+32) + 2x(64+64) + 2x(128+128) + 2x(256+256) = 1,952
    filters. The default preset's model with thousands of components (the efficiency study), a quarter of
    resnet18_cifar's forward cost."""
    return resnet18_cifar(num_classes, in_channels, image_size, width=32)


def resnet_small(num_classes=10, in_channels=3, image_size=32):
    """A CPU-sized ResNet: 16 + (16+16) + (32+32) + (64+64) = 240 filters."""
    return CifarResNet(16, [(16, 1, 1), (32, 1, 2), (64, 1, 2)], num_classes, in_channels, None, image_size)


def resnet_mini(num_classes=10, in_channels=3, image_size=32):
    """Deeper than resnet_tiny at the same width (two blocks per stage): 8 + 2x(16+16) + 2x(32+32) = 200."""
    return CifarResNet(8, [(16, 2, 2), (32, 2, 2)], num_classes, in_channels, None, image_size)


def resnet_tiny(num_classes=10, in_channels=3, image_size=32):
    """The smallest ResNet used by tests and the offline preset: 8 + (16+16) + (32+32) = 104 filters."""
    return CifarResNet(8, [(16, 1, 2), (32, 1, 2)], num_classes, in_channels, None, image_size)


class MLP(nn.Module):
    """One-hidden-layer MLP; components are the hidden neurons (rows of fc1)."""

    def __init__(self, in_features=3072, hidden=3072, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _vit(num_classes, in_channels, image_size, patch_size, layers, heads, hidden, mlp):
    from torchvision.models import VisionTransformer

    m = VisionTransformer(image_size, patch_size, num_layers=layers, num_heads=heads, hidden_dim=hidden,
                          mlp_dim=mlp, num_classes=num_classes)
    if in_channels != 3:
        m.conv_proj = nn.Conv2d(in_channels, hidden, patch_size, patch_size)
    return m


def vit_small(num_classes=10, in_channels=3, image_size=32, patch_size=4):
    """A small torchvision ViT for 32 px images: 6 blocks x (768 + 256 + 512 + 256) = 10,752 components."""
    return _vit(num_classes, in_channels, image_size, patch_size, 6, 8, 256, 512)


def vit_tiny(num_classes=10, in_channels=3, image_size=28, patch_size=7):
    """A CPU-sized ViT (the offline stand-in for ViT-B/16): 2 blocks x (96 + 32 + 64 + 32) = 448 components."""
    return _vit(num_classes, in_channels, image_size, patch_size, 2, 4, 32, 64)
