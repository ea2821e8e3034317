"""Dataset builders: the embedded ones, and torchvision's readers on tiny files in real formats."""

from __future__ import annotations

import hashlib
import pickle
import re
from functools import partial
from pathlib import Path

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


def test_digits_read_without_scikit_learn_are_what_scikit_learn_reads(monkeypatch):
    from sklearn.datasets import load_digits

    from sweep.data._datasets import _digits_arrays

    x, y = _digits_arrays()
    expected_x, expected_y = load_digits(return_X_y=True)
    assert x.dtype == expected_x.dtype and y.dtype == expected_y.dtype
    assert (x == expected_x).all() and (y == expected_y).all()
    # where the file is not where it was, scikit-learn reads it
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    x, y = _digits_arrays()
    assert (x == expected_x).all() and (y == expected_y).all()


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
    ds = cifar10(
        str(data_roots),
        val_fraction=0.1,
        split_seed=0,
        allow_unpickling_unverified_files=True,
        augment=False,
    )
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (40, 10)
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 3, 32)


def _refused(root, name: str) -> str:
    return (
        f"dataset.root={str(root)!r}: cifar-10-batches-py/{name} does not match the official "
        "CIFAR-10 md5; these files are Python pickles, which can run code when loaded; "
        "accepted: the official files, or dataset.allow_unpickling_unverified_files=true "
        "if you trust these"
    )


def test_cifar10_files_must_match_the_official_md5_by_default(data_roots):
    with pytest.raises(ConfigError) as e:
        cifar10(
            str(data_roots),
            val_fraction=0.1,
            split_seed=0,
            allow_unpickling_unverified_files=False,
            augment=False,
        )
    assert str(e.value) == _refused(data_roots, "data_batch_1")


@pytest.fixture
def official_sums(data_roots, monkeypatch):
    """Makes the md5 sums of the tiny CIFAR-10 files under ``data_roots`` the official ones."""
    from torchvision.datasets import CIFAR10

    folder = data_roots / "cifar-10-batches-py"

    def md5(name: str) -> str:
        return hashlib.md5(folder.joinpath(name).read_bytes()).hexdigest()

    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5(n)] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})
    return folder


def test_cifar10_files_matching_the_official_md5_load_by_default(data_roots, official_sums):
    ds = cifar10(
        str(data_roots),
        val_fraction=0.1,
        split_seed=0,
        allow_unpickling_unverified_files=False,
        augment=False,
    )
    assert (len(ds.train) + len(ds.val), len(ds.test)) == (40, 10)


class _TouchWhenUnpickled:
    """A crafted pickle: loading it calls ``Path.touch(marker)``, as an attack would run code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("name", ["data_batch_3", "test_batch", "batches.meta"])
def test_cifar10_crafted_pickle_is_refused_before_unpickling(
    name, data_roots, official_sums, tmp_path
):
    # issue "Unsafe data formats are named": crafted batch files ran code when loaded
    marker = tmp_path / "code-ran"
    (official_sums / name).write_bytes(pickle.dumps(_TouchWhenUnpickled(marker)))

    with pytest.raises(ConfigError) as e:
        cifar10(
            str(data_roots),
            val_fraction=0.1,
            split_seed=0,
            allow_unpickling_unverified_files=False,
            augment=False,
        )
    assert str(e.value) == _refused(data_roots, name)
    assert not marker.exists()
    # MNIST and Fashion-MNIST are raw IDX bytes, not pickles: no such check, nothing to opt into
    assert len(mnist(str(data_roots), val_fraction=0.25, split_seed=0).test) == 20
    assert len(fashion_mnist(str(data_roots), val_fraction=0.25, split_seed=0).test) == 20

    # the crafted file is live: opting in unpickles it, which runs its code
    with pytest.raises(TypeError):
        cifar10(
            str(data_roots),
            val_fraction=0.1,
            split_seed=0,
            allow_unpickling_unverified_files=True,
            augment=False,
        )
    assert marker.exists()


_cifar10_by_default = partial(cifar10, allow_unpickling_unverified_files=False, augment=False)


@pytest.mark.parametrize(
    "builder",
    [mnist, fashion_mnist, _cifar10_by_default],
    ids=["mnist", "fashion_mnist", "cifar10"],
)
def test_missing_root_is_one_clear_error(builder, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root='.*nothing' is not a folder; accepted"):
        builder(str(tmp_path / "nothing"), val_fraction=0.1, split_seed=0)


@pytest.mark.parametrize(
    ("builder", "files"),
    [
        (mnist, "MNIST files in <root>/MNIST/raw/"),
        (_cifar10_by_default, "CIFAR10 files in <root>/cifar-10-batches-py/"),
    ],
    ids=["mnist", "cifar10"],
)
def test_root_without_files_is_one_clear_error(builder, files, tmp_path):
    with pytest.raises(ConfigError, match=rf"has no readable {re.escape(files)}") as e:
        builder(str(tmp_path), val_fraction=0.1, split_seed=0)
    # torchvision's advice to download it does not apply: nothing is ever downloaded
    assert "download=True" not in str(e.value)
    assert str(e.value).endswith(
        "accepted: torchvision's on-disk layout (prune-sweep never downloads)"
    )


def test_batches_cover_every_row_once():
    split = Split(torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10))
    seen = [
        y
        for _, ys in batches(split, 3, shuffle=True, generator=torch.Generator().manual_seed(0))
        for y in ys.tolist()
    ]
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    assert [len(y) for _, y in batches(split, 4)] == [4, 4, 2]
