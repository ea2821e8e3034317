"""A dataset's contents are part of its identity (issue 22): a changed folder is a new baseline,
a new trial key and a new row; the fingerprint is stored in the row."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from sweep import load_results
from sweep.data import mnist
from sweep.data._fingerprint import files_fingerprint, folder_fingerprint, object_fingerprint
from sweep.trial import prepare, run_trial
from tests.conftest import EARLIER_DEFAULTS, write_idx_dataset
from tests.test_image_folder import write_images

FOLDER = [
    "dataset=image_folder",
    "dataset.image_size=8",
    "dataset.num_workers=0",
    "pretrain.epochs=1",
    "finetune.epochs=1",
]


def _invert(folder: Path) -> None:
    """Every image of ``folder`` inverted in place, its modification time moved on by a second
    (so that the change shows even where the clock is coarser than two writes)."""
    for file in folder.iterdir():
        pixels = 255 - np.asarray(Image.open(file))
        Image.fromarray(pixels).save(file)
        st = file.stat()
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_a_changed_image_folder_is_a_new_baseline_key_and_row(cfg_factory, tmp_path):
    imgs = tmp_path / "imgs"
    write_images(imgs, 6)
    first = run_trial(cfg_factory(*FOLDER, f"dataset.root={imgs}"))
    again = run_trial(cfg_factory(*FOLDER, f"dataset.root={imgs}"))
    assert first["baseline_trained"] is True and again["baseline_trained"] is False
    assert again["trial_key"] == first["trial_key"]  # unchanged files: the same trial

    _invert(imgs / "dog")
    changed = run_trial(cfg_factory(*FOLDER, f"dataset.root={imgs}"))
    assert changed["baseline_trained"] is True  # before: False, the stale baseline reused
    assert changed["baseline_key"] != first["baseline_key"]
    assert changed["trial_key"] != first["trial_key"]
    assert changed["dataset.fingerprint"] != first["dataset.fingerprint"]

    df = load_results(tmp_path / "results")
    assert len(df) == 2  # before: one row, the first overwritten
    assert sorted(df["dataset.fingerprint"]) == sorted(
        [first["dataset.fingerprint"], changed["dataset.fingerprint"]]
    )

    # content, not path: the same files moved elsewhere (times kept) are the same trial
    moved = shutil.move(imgs, tmp_path / "elsewhere")
    there = run_trial(cfg_factory(*FOLDER, f"dataset.root={moved}"))
    assert there["trial_key"] == changed["trial_key"] and there["baseline_trained"] is False
    assert there["dataset.root"] == str(moved)


@pytest.mark.parametrize(
    "change",
    ["add", "remove", "rename", "touch", "resize"],
)
def test_the_files_fingerprint_sees_every_kind_of_change(tmp_path, change):
    root = tmp_path / "imgs"
    write_images(root, 3)
    before = folder_fingerprint(root)
    assert folder_fingerprint(root) == before  # stat only: nothing else moves it
    file = root / "dog" / "1.png"
    if change == "add":
        shutil.copy2(file, root / "dog" / "9.png")
    elif change == "remove":
        file.unlink()
    elif change == "rename":
        file.rename(root / "cat" / "1.png")  # same bytes, same time, another class
    elif change == "touch":
        st = file.stat()
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    else:
        st = file.stat()
        file.write_bytes(file.read_bytes() + b"\0")
        os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns))  # same time, another size
    assert folder_fingerprint(root) != before


def test_a_folder_fingerprint_is_relative_to_its_folder(tmp_path):
    write_images(tmp_path / "a", 2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # copy2: times kept
    assert folder_fingerprint(tmp_path / "a") == folder_fingerprint(tmp_path / "b")
    files = sorted((tmp_path / "a").rglob("*.png"))
    assert files_fingerprint(tmp_path / "a", files) == folder_fingerprint(tmp_path / "a")


def test_torchvision_roots_are_keyed_by_their_files(tmp_path, cfg_factory):
    root = write_idx_dataset(tmp_path, "MNIST")
    before = mnist(str(root), 0.1, 0).fingerprint
    plan = prepare(cfg_factory("dataset=mnist", f"dataset.root={root}"), check_store=False)
    assert plan.resolved["dataset"]["fingerprint"] == before
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # one label changed, size and time kept
    st = labels.stat()
    labels.write_bytes(bytes(data))
    os.utime(labels, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = prepare(cfg_factory("dataset=mnist", f"dataset.root={root}"), check_store=False)
    assert after.resolved["dataset"]["fingerprint"] != before
    assert after.key != plan.key


def test_a_users_dataset_is_keyed_by_its_files_or_its_items(tmp_path):
    from torchvision.datasets import ImageFolder

    write_images(tmp_path / "imgs", 2)
    folder = ImageFolder(str(tmp_path / "imgs"))
    assert object_fingerprint(folder).startswith("files:")
    assert object_fingerprint(folder) == object_fingerprint(ImageFolder(str(tmp_path / "imgs")))

    class Rooted(torch.utils.data.Dataset):
        root = str(tmp_path / "imgs")

    assert object_fingerprint(Rooted()) == "folder:" + folder_fingerprint(tmp_path / "imgs")

    x, y = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(40)
    items = object_fingerprint(TensorDataset(x, y))
    assert items.startswith("items:") and items == object_fingerprint(TensorDataset(x.clone(), y))
    changed = x.clone()
    changed[39, 0, 0, 0] += 1  # the last item is always sampled
    assert object_fingerprint(TensorDataset(changed, y)) != items
    assert object_fingerprint(TensorDataset(x[:39], y[:39])) != items  # len() counts


class NoisyItems(torch.utils.data.Dataset):
    """Items with a random transform (torch's RNG): the same under the same seed."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        return torch.full((1, 2, 2), float(i)) + torch.rand(1, 2, 2), i % 2


def test_random_transforms_do_not_move_the_fingerprint_nor_the_callers_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    first = object_fingerprint(NoisyItems())
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG as it was
    assert object_fingerprint(NoisyItems()) == first


def test_embedded_datasets_keep_their_keys(cfg_factory):
    plan = prepare(cfg_factory(*EARLIER_DEFAULTS), check_store=False)
    assert "fingerprint" not in plan.resolved["dataset"]
    assert plan.key == "265616c46077d97b"  # digits: fixed by its config, key as before
    synthetic = prepare(cfg_factory("dataset=synthetic"), check_store=False)
    assert "fingerprint" not in synthetic.resolved["dataset"]


def _with_corrupt_image(root: Path, split: str = "") -> Path:
    """Class folders (2 per class in each of train/ val/ test/ when ``split``) and
    ``<split>/dog/corrupt.jpg`` holding garbage bytes."""
    for sub in ("train", "val", "test") if split else ("",):
        write_images(root / sub, 4)
    bad = root / split / "dog" / "corrupt.jpg"
    bad.write_bytes(b"these are not the bytes of a JPEG")
    return bad


def test_a_corrupt_image_refuses_an_in_memory_folder_before_anything_runs(
    tmp_path, monkeypatch, capsys
):
    from sweep.cli import check_overrides
    from tests.conftest import FAST

    _with_corrupt_image(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "bad.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        check_overrides([*FAST, *FOLDER, "dataset.root=imgs", "dataset.in_memory=true"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: dataset.root='imgs' holds 2 unreadable images: ['cat/bad.png', "
        "'dog/corrupt.jpg']; accepted: image files PIL can read (remove or replace them)"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["imgs"]  # no store, no run folder


@pytest.mark.parametrize("workers", [0, 2])
def test_a_corrupt_streamed_image_fails_the_trial_in_one_line_and_caches_no_baseline(
    cfg_factory, tmp_path, workers
):
    bad = _with_corrupt_image(tmp_path / "imgs", "test")  # pretraining never reads test/
    row = run_trial(
        cfg_factory(*FOLDER, f"dataset.root={tmp_path / 'imgs'}", f"dataset.num_workers={workers}")
    )
    assert (row["status"], row["error"]) == (
        "failed",
        f"unreadable image {bad}: not an image format PIL knows",
    )
    # before: the baseline was cached, and every later run reused it
    assert list((tmp_path / "results" / "baselines").glob("*.pt")) == []


def test_the_key_a_trial_announces_holds_its_data(cfg_factory, tmp_path):
    """``run_trial(on_start=)`` (an Optuna job records it on its trial, for a row the job never
    wrote) gets the key with the fingerprint in it, not the key of the raw config."""
    from omegaconf import OmegaConf

    from sweep.plan import resolve_device, trial_key

    imgs = tmp_path / "imgs"
    write_images(imgs, 6)
    cfg = cfg_factory(*FOLDER, f"dataset.root={imgs}")
    announced = []
    row = run_trial(cfg, on_start=announced.append)
    raw = trial_key(OmegaConf.to_container(cfg, resolve=True), resolve_device(cfg.device))
    assert announced == [row["trial_key"]] and raw != row["trial_key"]
