"""Dataset builders: the embedded ones, and torchvision's readers on tiny files in real formats."""

from __future__ import annotations

import pytest
import torch

from sweep.data import Split, batches, cifar10, digits, fashion_mnist, mnist, synthetic
from sweep.errors import ConfigError


def test_digits_splits_are_disjoint_and_fixed():
    a = digits(val_fraction=0.15, test_fraction=0.2, split_seed=0)
    b = digits(val_fraction=0.15, test_fraction=0.2, split_seed=0)
    assert (len(a.train), len(a.val), len(a.test)) == (1222, 216, 359)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert a.train.x.shape[1:] == (1, 8, 8) and a.train.x.min() >= 0.0 and a.train.x.max() <= 1.0
    c = digits(val_fraction=0.15, test_fraction=0.2, split_seed=1)
    assert not torch.equal(a.test.y, c.test.y)


def test_synthetic_shapes():
    ds = synthetic(100, 3, 2, 5, 1.0, val_fraction=0.1, test_fraction=0.2, split_seed=1)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (72, 8, 20)
    assert ds.train.x.shape[1:] == (2, 5, 5) and (ds.num_classes, ds.in_channels) == (3, 2)


@pytest.mark.parametrize("builder", [mnist, fashion_mnist])
def test_idx_datasets_read_by_torchvision(builder, data_roots):
    ds = builder(str(data_roots), val_fraction=0.25, split_seed=0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 20)
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 1, 28)
    assert ds.test.y.tolist() == [i % 10 for i in range(20)]
    assert ds.train.x.dtype == torch.float32


def test_cifar10_read_by_torchvision(data_roots):
    ds = cifar10(str(data_roots), val_fraction=0.1, split_seed=0, verify_checksums=False)
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (40, 10)
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 3, 32)


def test_cifar10_checksums_are_verified_by_default(data_roots):
    with pytest.raises(
        ConfigError, match="no readable CIFAR10 files in <root>/cifar-10-batches-py/"
    ):
        cifar10(str(data_roots), val_fraction=0.1, split_seed=0)


@pytest.mark.parametrize("builder", [mnist, fashion_mnist, cifar10])
def test_missing_root_is_one_clear_error(builder, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root='.*nothing' is not a folder; accepted"):
        builder(str(tmp_path / "nothing"), val_fraction=0.1, split_seed=0)


def test_root_without_files_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"has no readable MNIST files in <root>/MNIST/raw/"):
        mnist(str(tmp_path), val_fraction=0.1, split_seed=0)


def test_batches_cover_every_row_once():
    split = Split(torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10))
    seen = [
        y
        for _, ys in batches(split, 3, shuffle=True, generator=torch.Generator().manual_seed(0))
        for y in ys.tolist()
    ]
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    assert [len(y) for _, y in batches(split, 4)] == [4, 4, 2]
