"""Dataset builders named by ``_target_`` in ``conf/dataset``.

Every builder returns a `Dataset`: train / validation / test `Split` tensors held in memory (so
batching costs nothing and a GPU run moves them once), plus the shape facts models are built
from. Files are read by torchvision's own dataset classes from ``root``; nothing is downloaded.
"""

from sweep.data._datasets import cifar10, digits, fashion_mnist, mnist, synthetic
from sweep.data._split import Dataset, Split, batches

__all__ = [
    "Dataset",
    "Split",
    "batches",
    "cifar10",
    "digits",
    "fashion_mnist",
    "mnist",
    "synthetic",
]
