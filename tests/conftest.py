"""Shared fixtures: composed configs that train in well under a second, and tiny dataset files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

# Small enough to train in a fraction of a second, large enough that pruning visibly hurts.
# Every layer in scope (the default leaves the first layer and the classifier dense): the tests
# check pruning on every layer type; the dense_ends tests set it themselves.
FAST = [
    "scope.dense_ends=false",
    "pretrain.epochs=3",
    "finetune.epochs=1",
    "latency.warmup=1",
    "latency.repeats=2",
    "latency.batch_size=8",
    "progress=false",
]
# The defaults that changed after stores existed (issue 12); with them, FAST configs hash to the
# keys they had before, which pins that settings added since leave old keys alone.
EARLIER_DEFAULTS = ["recalibrate.batches=0"]


def make_cfg(store: Path, *overrides: str, fast: bool = True) -> DictConfig:
    """Compose ``conf/config.yaml`` with fast settings (unless not ``fast``: the defaults as a
    user gets them), a store under ``store``, and overrides."""
    with initialize_config_module("sweep.conf", version_base="1.3"):
        return compose("config", [*FAST * fast, f"store.path={store}", *overrides])


def row_file_reads(monkeypatch) -> list[str]:
    """The names of the store's row files that loads read from now on (none of those the
    store's index holds)."""
    from sweep import store

    read, names = store._read_file, []

    def counting(file, strict, columns=None):
        names.append(file.name)
        return read(file, strict, columns)

    monkeypatch.setattr(store, "_read_file", counting)
    return names


@pytest.fixture
def cfg_factory(tmp_path):
    return lambda *overrides: make_cfg(tmp_path / "results", *overrides)


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m sweep ARGS`` in ``cwd`` (whose files, like a user's module, are importable)."""
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(cwd), **(env or {})},
        timeout=300,
    )


def write_idx_dataset(root: Path, folder: str, n_train: int = 40, n_test: int = 20) -> Path:
    """MNIST-format files (big-endian idx headers, uint8 payload) under ``root/folder/raw``."""
    import numpy as np

    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        header = np.array([0x0803, n, 28, 28], dtype=">i4").tobytes()
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([0x0801, n], dtype=">i4").tobytes()
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    return root


def write_cifar10(root: Path, per_batch: int = 8, n_test: int = 10) -> Path:
    """CIFAR-10 python-format pickles (5 train batches, test batch, meta) under ``root``."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    for name, n in [(b, per_batch) for b in batches] + [("test_batch", n_test)]:
        entry = {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(n)],
        }
        (folder / name).write_bytes(pickle.dumps(entry))
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return root


@pytest.fixture
def data_roots(tmp_path_factory):
    """Tiny MNIST, Fashion-MNIST and CIFAR-10 folders in torchvision's on-disk layouts."""
    root = tmp_path_factory.mktemp("data")
    write_idx_dataset(root, "MNIST")
    write_idx_dataset(root, "FashionMNIST")
    write_cifar10(root)
    return root


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server on 127.0.0.1, started for the session from Debian's packages.

    CI installs the server (.ci/run); elsewhere the test is skipped when it is missing.
    """
    from tests.postgres import postgres_bin, postgres_server

    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing; .ci/run installs them")
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    with postgres_server() as url:
        yield url
