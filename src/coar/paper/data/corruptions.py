"""Corrupted evaluation sets (paper App. C.1, Fig. 10).

Two sources, chosen by the dataset:
  * cifar10: the published CIFAR-10-C arrays (Hendrycks & Dietterich, 2019), read from
    <root>/CIFAR-10-C/<name>.npy (50,000 x 32 x 32 x 3 uint8: severities 1-5, 10,000 test images each, in
    test-set order) and labels.npy; `download_cifar10c` fetches and unpacks the archive.
  * any other image dataset (the offline Fashion-MNIST stand-in): our own implementations of six of the
    CIFAR-10-C corruption types, at five severities, applied to the uint8 test images. They follow the
    benchmark's definitions in spirit (the same kinds of noise, blur and photometric change) but are not
    the benchmark's images, and figures say "synthetic" when they are used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import CoarError

CIFAR10C_URL = "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar"
CIFAR10C_NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                  "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                  "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate")

# severity 1..5 -> parameter (images scaled to [0, 1])
_LEVELS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),   # noise standard deviation
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),    # fraction of pixels set to 0 or 1
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),         # blur sigma in pixels
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),          # added to every pixel
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),            # deviation from the image mean is scaled by this
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),          # downsampling factor (area), then bilinear back up
}
SYNTHETIC_NAMES = tuple(_LEVELS)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Our synthetic corruption of uint8 images [N, C, H, W] at severity 1-5; returns uint8 of the same shape."""
    if name not in _LEVELS:
        raise CoarError(f"unknown synthetic corruption {name!r}; available: {', '.join(SYNTHETIC_NAMES)}")
    if not 1 <= int(severity) <= 5:
        raise CoarError(f"corruption severity must be 1..5, got {severity}")
    if images.dtype != np.uint8 or images.ndim != 4:
        raise CoarError(f"corrupt() needs uint8 images [N, C, H, W], got {images.dtype} {images.shape}")
    import torch  # here, not at the top: the workflow's plan reads the corruption names without torch

    c = _LEVELS[name][int(severity) - 1]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    g = torch.Generator().manual_seed(seed)
    if name == "gaussian_noise":
        x = x + c * torch.randn(x.shape, generator=g)
    elif name == "impulse_noise":
        u = torch.rand(x.shape, generator=g)
        x = torch.where(u < c / 2, 0.0, torch.where(u > 1 - c / 2, 1.0, x))
    elif name == "gaussian_blur":
        from torchvision.transforms.functional import gaussian_blur

        k = 2 * int(np.ceil(3 * c)) + 1
        x = gaussian_blur(x, [k, k], [c, c])
    elif name == "brightness":
        x = x + c
    elif name == "contrast":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
    elif name == "pixelate":
        h, w = x.shape[-2:]
        small = torch.nn.functional.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
        x = torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def download_cifar10c(root: str | Path) -> Path:
    """Fetch and unpack CIFAR-10-C into <root>/CIFAR-10-C (about 2.9 GB); returns that directory. The archive
    comes from COAR_DATA_MIRROR when it is set (and is checked against its SHA256SUMS when that lists it)."""
    from torchvision.datasets.utils import download_url, extract_archive

    from .mirror import check_mirrored, download, mirror_base, mirrored

    root = Path(root)
    target = root / "CIFAR-10-C"
    if not (target / "labels.npy").exists():
        archive = root / "CIFAR-10-C.tar"
        try:
            if mirror_base() is None:
                download_url(CIFAR10C_URL, str(root), filename=archive.name)
            else:  # torchvision's downloader cannot read file:// URLs
                download(CIFAR10C_URL, archive)
        except Exception as exc:
            raise CoarError(f"downloading {mirrored(CIFAR10C_URL)} into {root} failed: {exc!r}") from exc
        check_mirrored(CIFAR10C_URL, archive)
        extract_archive(str(archive), str(root), remove_finished=True)
    return target


def load_cifar10c(root: str | Path, name: str, severity: int, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [10000, 3, 32, 32], int64 [10000]) CIFAR-10-C images of one corruption and severity, in the
    order of the CIFAR-10 test set. A file of the wrong shape or dtype (truncated download), or one changed
    since its first use (its SHA-256 is recorded beside it), is reported."""
    if name not in CIFAR10C_NAMES:
        raise CoarError(f"unknown CIFAR-10-C corruption {name!r}; available: {', '.join(CIFAR10C_NAMES)}")
    if not 1 <= int(severity) <= 5:
        raise CoarError(f"corruption severity must be 1..5, got {severity}")
    d = Path(root) / "CIFAR-10-C"
    if not (d / f"{name}.npy").exists() and download:
        d = download_cifar10c(root)
    from .images import check_recorded, hash_records

    files = (d / f"{name}.npy", d / "labels.npy")
    for f in files:
        if not f.exists():
            raise CoarError(f"CIFAR-10-C file {f} not found: download {CIFAR10C_URL} and unpack it into {root}")
    # no checksum is published with the release: a file's SHA-256 is recorded at its first valid use and
    # checked on every later one, so a file changed or damaged since is reported, never used
    refetch = f"download {CIFAR10C_URL} again"
    recorded = [f for f in files if hash_records(f)]  # beside it, or in the records directory
    for f in recorded:
        check_recorded(f, refetch)
    try:
        images = np.load(d / f"{name}.npy", mmap_mode="r")
        labels = np.load(d / "labels.npy", mmap_mode="r")
    except Exception as exc:
        raise CoarError(f"CIFAR-10-C files in {d} are unreadable (truncated download?): {exc}") from exc
    n = len(labels)
    if (images.dtype != np.uint8 or images.shape[1:] != (32, 32, 3) or images.shape[0] != n or n % 5
            or labels.ndim != 1):
        raise CoarError(f"CIFAR-10-C {d / (name + '.npy')}: expected uint8 [5 x n, 32, 32, 3] images matching "
                        f"labels.npy (50,000 each in the release), found {images.dtype} {images.shape} and labels "
                        f"{labels.shape}: delete the files and download again")
    for f in files:
        if f not in recorded:
            check_recorded(f, refetch)  # valid: its hash is recorded now
    per = n // 5  # five severities, in order, each the whole test set
    rows = slice((int(severity) - 1) * per, int(severity) * per)
    return np.ascontiguousarray(images[rows].transpose(0, 3, 1, 2)), labels[rows].astype(np.int64)
