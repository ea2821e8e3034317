from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sweep.data._augment import RandomCropFlip
from sweep.data._fingerprint import folder_fingerprint
from sweep.data._split import Dataset, Split, holdout
from sweep.errors import ConfigError

# Per-channel mean and std of each training set, as commonly used with these datasets.
_MNIST_STATS = ((0.1307,), (0.3081,))
_FASHION_STATS = ((0.2860,), (0.3530,))
_CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def digits(val_fraction: float, test_fraction: float, split_seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images), scaled to [0, 1].

    ``test_fraction`` of all images is held out for testing, then ``val_fraction`` of the rest
    for validation; ``split_seed`` fixes both.

    Example:
        >>> ds = digits(val_fraction=0.15, test_fraction=0.2, split_seed=0)
        >>> len(ds.train) + len(ds.val) + len(ds.test), ds.num_classes, ds.image_size
        (1797, 10, 8)
    """
    _check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
    x, y = _digits_arrays()
    x = torch.from_numpy(x.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(y.astype(np.int64))
    return _three_way(x, y, val_fraction, test_fraction, split_seed, num_classes=10)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.datasets.load_digits(return_X_y=True)``: its file, read as it reads it, without
    importing scikit-learn, which costs every process that loads the default dataset 0.9 s of
    its 1.0 (the file takes 8 ms); scikit-learn itself reads it where the file is not as
    expected (test_data checks that both give the same arrays)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        file = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        try:
            data = np.loadtxt(file, delimiter=",")
        except (OSError, ValueError):
            break
        if data.shape == (1797, 65):
            return data[:, :-1], data[:, -1].astype(int)
        break
    from sklearn.datasets import load_digits

    return load_digits(return_X_y=True)


def synthetic(
    num_samples: int,
    num_classes: int,
    in_channels: int,
    image_size: int,
    noise: float,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> Dataset:
    """One random prototype image per class plus Gaussian ``noise``; fixed by ``split_seed``."""
    _check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
    for name, value, low in (
        ("num_classes", num_classes, 2),
        ("in_channels", in_channels, 1),
        ("image_size", image_size, 1),
        ("num_samples", num_samples, 3 * num_classes),  # every split sees every class
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(
                f"dataset.{name}={value!r} is out of range; accepted: an int >= {low}"
            )
    if not noise >= 0:
        raise ConfigError(f"dataset.noise={noise!r} is out of range; accepted: a number >= 0")
    g = torch.Generator().manual_seed(split_seed)
    prototypes = torch.randn(num_classes, in_channels, image_size, image_size, generator=g)
    y = torch.randint(num_classes, (num_samples,), generator=g)
    x = prototypes[y] + noise * torch.randn(num_samples, *prototypes.shape[1:], generator=g)
    return _three_way(x, y, val_fraction, test_fraction, split_seed, num_classes)


def mnist(root: str, val_fraction: float, split_seed: int) -> Dataset:
    """MNIST from ``root`` (torchvision layout: ``<root>/MNIST/raw/*-ubyte``)."""
    from torchvision.datasets import MNIST

    return _torchvision_grayscale(MNIST, "MNIST", root, val_fraction, split_seed, _MNIST_STATS)


def fashion_mnist(root: str, val_fraction: float, split_seed: int) -> Dataset:
    """Fashion-MNIST from ``root`` (torchvision layout: ``<root>/FashionMNIST/raw/*-ubyte``)."""
    from torchvision.datasets import FashionMNIST

    return _torchvision_grayscale(
        FashionMNIST,
        "FashionMNIST",
        root,
        val_fraction,
        split_seed,
        _FASHION_STATS,
    )


def cifar10(
    root: str,
    val_fraction: float,
    split_seed: int,
    *,
    allow_unpickling_unverified_files: bool,
    augment: bool,
) -> Dataset:
    """CIFAR-10 from ``root`` (torchvision layout: ``<root>/cifar-10-batches-py/``).

    With ``augment`` the training batches are randomly cropped (after padding 4 pixels of black
    on each side) and flipped horizontally, on their device, drawn from the batches' generator.

    The batch files are Python pickles, and unpickling a crafted file runs its code. So each
    file's md5 must match the official one (torchvision's list) before any is opened;
    ``allow_unpickling_unverified_files=True`` loads files that differ (re-packed copies you
    trust).

    Raises:
        ConfigError: ``root`` is not a folder, a file differs from the official md5 (and
            unverified files are not allowed), or the files cannot be read.
    """
    from torchvision.datasets import CIFAR10

    _check_fractions(val_fraction=val_fraction)
    if not isinstance(augment, bool):
        raise ConfigError(f"dataset.augment={augment!r} is not valid; accepted: true or false")
    _check_root(root, CIFAR10.base_folder)
    if not allow_unpickling_unverified_files:
        _check_official_md5(root, CIFAR10)
    # Verified above, or allowed unverified: torchvision then only checks that each file exists.
    unchecked = type(
        "CIFAR10",
        (CIFAR10,),
        {
            "train_list": [[name, None] for name, _ in CIFAR10.train_list],
            "test_list": [[name, None] for name, _ in CIFAR10.test_list],
            "meta": {**CIFAR10.meta, "md5": None},
        },
    )
    train, test = _open(unchecked, CIFAR10.base_folder, root)

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255)
        return _normalize(x, _CIFAR10_STATS), torch.tensor(ds.targets, dtype=torch.long)

    data = _two_way(tensors(train), tensors(test), val_fraction, split_seed, len(train.classes))
    data = replace(data, fingerprint=folder_fingerprint(Path(root, CIFAR10.base_folder)))
    if not augment:
        return data
    black = tuple(-m / s for m, s in zip(*_CIFAR10_STATS, strict=True))
    return replace(data, train=replace(data.train, augment=RandomCropFlip(4, black)))


def _torchvision_grayscale(cls, folder, root, val_fraction, split_seed, stats) -> Dataset:
    _check_fractions(val_fraction=val_fraction)
    train, test = _open(cls, f"{folder}/raw", root)

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = ds.data.unsqueeze(1).float().div_(255)
        return _normalize(x, stats), ds.targets.long()

    data = _two_way(tensors(train), tensors(test), val_fraction, split_seed, len(train.classes))
    return replace(data, fingerprint=folder_fingerprint(Path(root, folder, "raw")))


def _check_fractions(**fractions: float) -> None:
    # an empty split would leave nothing to validate or test on
    for name, value in fractions.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ConfigError(
                f"dataset.{name}={value!r} is out of range; accepted: a fraction in (0, 1)"
            )


def _check_official_md5(root: str, cls) -> None:
    folder = Path(root) / cls.base_folder
    expected = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    for name, md5 in expected:
        path = folder / name
        # a missing file is left to torchvision, which reports the folder as unreadable
        if path.is_file() and _md5(path) != md5:
            raise ConfigError(
                f"dataset.root={root!r}: {cls.base_folder}/{name} does not match the official "
                "CIFAR-10 md5; these files are Python pickles, which can run code when loaded; "
                "accepted: the official files, or dataset.allow_unpickling_unverified_files=true "
                "if you trust these"
            )


def _md5(path: Path) -> str:
    # md5 because it is what torchvision lists; a second preimage is still out of reach.
    # usedforsecurity=False as in torchvision, so that FIPS builds of OpenSSL allow it.
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_root(root: str, layout: str) -> None:
    if root is None or not Path(root).is_dir():
        raise ConfigError(
            f"dataset.root={root!r} is not a folder; accepted: a local folder holding "
            f"<root>/{layout}/ as torchvision lays it out (prune-sweep never downloads)"
        )


def _open(cls, layout: str, root: str):
    _check_root(root, layout)
    try:
        return cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError as e:
        # torchvision's reason, less its advice to download: prune-sweep never does
        sentences = re.split(r"(?<=\.)\s+", str(e).splitlines()[0])
        reason = " ".join(s for s in sentences if "download" not in s).rstrip(".")
        raise ConfigError(
            f"dataset.root={root!r} has no readable {cls.__name__} files in <root>/{layout}/ "
            f"({reason}); accepted: torchvision's on-disk layout (prune-sweep never downloads)"
        ) from None


def _normalize(x: torch.Tensor, stats) -> torch.Tensor:
    mean = torch.tensor(stats[0]).view(1, -1, 1, 1)
    std = torch.tensor(stats[1]).view(1, -1, 1, 1)
    return (x - mean) / std


def _three_way(x, y, val_fraction, test_fraction, split_seed, num_classes) -> Dataset:
    rest, test = holdout(x, y, test_fraction, split_seed, "dataset.test_fraction")
    train, val = holdout(rest.x, rest.y, val_fraction, split_seed + 1, "dataset.val_fraction")
    return Dataset(train, val, test, num_classes, x.shape[1], x.shape[-1])


def _two_way(train, test, val_fraction, split_seed, num_classes) -> Dataset:
    kept, val = holdout(*train, val_fraction, split_seed, "dataset.val_fraction")
    x = train[0]
    return Dataset(kept, val, Split(*test), num_classes, x.shape[1], x.shape[-1])
