"""Dataset builders named by ``_target_`` in ``conf/dataset``.

Every builder returns a `Dataset`: train / validation / test splits plus the shape facts models
are built from. A split is either a `Split`, tensors held in memory (batching costs nothing and
a GPU run moves them once: digits, synthetic, MNIST, CIFAR-10, small image folders), or
`Streamed`, items read from a ``torch.utils.data.Dataset`` through a ``DataLoader`` (image
folders and datasets that do not fit in memory). Both offer the `DataSplit` interface that
training and evaluation use. Files are read from ``root`` by torchvision's own dataset classes;
nothing is downloaded.
"""

from sweep.data._augment import RandomCropFlip
from sweep.data._datasets import cifar10, digits, fashion_mnist, mnist, synthetic
from sweep.data._split import Augment, Dataset, DataSplit, Split, batches, shard
from sweep.data._streamed import Streamed
from sweep.data._user import from_torch, image_folder

__all__ = [
    "Augment",
    "DataSplit",
    "Dataset",
    "RandomCropFlip",
    "Split",
    "Streamed",
    "batches",
    "cifar10",
    "digits",
    "fashion_mnist",
    "from_torch",
    "image_folder",
    "mnist",
    "shard",
    "synthetic",
]
