"""The paper's datasets: uint8 images (normalised on the fly) and token sets, each described by a spec
(coar.paper.data.specs) and loaded through coar.paper.data.registry."""
from .fashion_mnist import (DEBIAN_ROOT, fashion_mnist_examples, find_fashion_mnist, load_fashion_mnist, read_idx,
                            write_idx)

__all__ = ["DEBIAN_ROOT", "fashion_mnist_examples", "find_fashion_mnist", "load_fashion_mnist", "read_idx",
           "write_idx"]
