"""Data that does not fit in memory: image folders and users' torch datasets, streamed through a
DataLoader or decoded into memory; the CIFAR-10 augmentation of in-memory batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import TensorDataset

from sweep.data import (
    RandomCropFlip,
    Split,
    Streamed,
    batches,
    cifar10,
    from_torch,
    image_folder,
)
from sweep.errors import ConfigError
from sweep.models import small_cnn
from sweep.training import evaluate, train
from tests.conftest import make_cfg
from tests.custom_datasets import NamedSquares, PILImages, Records, Squares, TensorLabelSquares

CONF = Path(__file__).parents[1] / "conf"
CLASSES = ("cat", "dog", "fox")
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "fox": (30, 30, 200)}
ACCEPTED = (
    "a local folder of class subfolders holding images, or one whose train/ and val/ "
    "(and test/) hold the same class subfolders"
)


def write_images(folder: Path, per_class: int, classes=CLASSES, size: int = 12) -> None:
    """``per_class`` 12x12 RGB PNGs per class: the class's colour, brighter to the right (so that
    crops and flips change them), with a row of its own per image."""
    ramp = np.linspace(0.4, 1.0, size)[None, :, None]
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = (np.array(COLOURS.get(name, (90, 90, 90))) * ramp).repeat(size, 0)
            pixels[i % size] = 255
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i}.png")


@pytest.fixture
def given(tmp_path) -> Path:
    """train/ val/ test/, each split given: 3 classes x 6, 3 and 2 images."""
    for sub, n in (("train", 6), ("val", 3), ("test", 2)):
        write_images(tmp_path / sub, n)
    return tmp_path


@pytest.fixture
def train_val(tmp_path) -> Path:
    """train/ (3 x 6) and val/ (3 x 3): val/ is the test split, validation held out of train/."""
    for sub, n in (("train", 6), ("val", 3)):
        write_images(tmp_path / sub, n)
    return tmp_path


@pytest.fixture
def one_folder(tmp_path) -> Path:
    """Class subfolders only (3 x 6), split three ways."""
    write_images(tmp_path, 6)
    return tmp_path


def build(root, **overrides):
    """`image_folder` with conf/dataset/image_folder.yaml's settings but image size 8, fractions
    0.25 and 0.2 (3 x 6 images: 10, 4, 4; train/ of 18: 14, 4) and no workers."""
    node = OmegaConf.load(CONF / "dataset" / "image_folder.yaml")
    fast = {"image_size": 8, "val_fraction": 0.25, "test_fraction": 0.2, "num_workers": 0}
    node = OmegaConf.merge(node, {"root": str(root), **fast}, overrides)
    spec = OmegaConf.to_container(node)
    del spec["name"], spec["_target_"]
    return image_folder(**spec)


def everything(split) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches(split, 4), strict=True)
    return torch.cat(xs), torch.cat(ys)


@pytest.mark.parametrize(
    ("layout", "sizes", "test_labels"),
    [
        ("given", (18, 9, 6), [0, 0, 1, 1, 2, 2]),
        ("train_val", (14, 4, 9), [0, 0, 0, 1, 1, 1, 2, 2, 2]),
        ("one_folder", (10, 4, 4), None),
    ],
)
def test_layouts_split_as_documented(layout, sizes, test_labels, request):
    root = request.getfixturevalue(layout)
    ds = build(root, val_fraction=0.2 if layout == "train_val" else 0.25, test_fraction=0.2)
    assert (len(ds.train), len(ds.val), len(ds.test)) == sizes
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (3, 3, 8)
    assert all(isinstance(s, Streamed) for s in (ds.train, ds.val, ds.test))
    x, y = everything(ds.test)
    assert x.shape == (sizes[2], 3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    if test_labels is not None:
        assert y.tolist() == test_labels
    assert ds.test.inputs(2).shape == (2, 3, 8, 8) and ds.test.inputs(100).shape[0] == sizes[2]
    # every image in exactly one split, with its own class's label
    seen = []
    for split in (ds.train, ds.val, ds.test):
        items = split.dataset
        paths = items.dataset.samples if hasattr(items, "indices") else items.samples
        chosen = items.indices if hasattr(items, "indices") else range(len(items))
        seen += [paths[i] for i in chosen]
    assert len(set(seen)) == len(seen) == sum(sizes)
    assert all(Path(path).parent.name == CLASSES[label] for path, label in seen)


def test_split_seed_fixes_the_held_out_images(one_folder):
    def held(seed):
        return build(one_folder, split_seed=seed).test.dataset.indices

    assert held(0) == held(0) != held(1)


@pytest.mark.parametrize("layout", ["given", "train_val", "one_folder"])
def test_streamed_and_in_memory_give_the_same_eval_tensors(layout, request):
    root = request.getfixturevalue(layout)
    streamed, in_memory = build(root), build(root, in_memory=True)
    for name in ("val", "test"):
        split = getattr(in_memory, name)
        assert isinstance(split, Split) and split.augment is None
        x, y = everything(getattr(streamed, name))
        assert torch.equal(x, split.x) and torch.equal(y, split.y)
        assert torch.equal(everything(getattr(streamed, name))[0], x)  # eval is deterministic
    assert torch.equal(streamed.test.inputs(3), in_memory.test.x[:3])
    assert isinstance(in_memory.train.augment, RandomCropFlip)


def test_the_train_split_is_augmented(train_val):
    plain = build(train_val, in_memory=True)  # the train images through the eval transform
    augmented, unaugmented = build(train_val), build(train_val, augment=False)
    n = len(plain.train)
    assert n == 14 and torch.equal(unaugmented.train.inputs(n), plain.train.x)
    assert augmented.train.inputs(n).shape == plain.train.x.shape
    assert not torch.equal(augmented.train.inputs(n), plain.train.x)
    # in order (as for evaluating the train split) it is augmented too, but the same each time
    assert torch.equal(everything(augmented.train)[0], everything(augmented.train)[0])


@pytest.mark.parametrize("workers", [0, 2])
def test_shuffled_batches_are_fixed_by_the_generator(workers, one_folder):
    ds = build(one_folder, num_workers=workers, persistent_workers=True)

    def epochs(seed):
        g = torch.Generator().manual_seed(seed)
        return [[b for b in batches(ds.train, 4, shuffle=True, generator=g)] for _ in range(2)]

    first, again, other = epochs(0), epochs(0), epochs(1)
    assert [len(y) for _, y in first[0]] == [4, 4, 2]
    flat = [(torch.cat([x for x, _ in e]), torch.cat([y for _, y in e])) for e in first]
    assert sorted(flat[0][1].tolist()) == sorted(flat[1][1].tolist())
    assert not torch.equal(flat[0][0], flat[1][0])  # each epoch a new order and new crops
    for a, b in zip(first, again, strict=True):
        for (ax, ay), (bx, by) in zip(a, b, strict=True):
            assert torch.equal(ax, bx) and torch.equal(ay, by)
    assert not torch.equal(flat[0][0], torch.cat([x for x, _ in other[0]]))


def test_workers_do_not_change_the_batches(one_folder):
    def epoch(workers, persistent):
        ds = build(one_folder, num_workers=workers, persistent_workers=persistent)
        g = torch.Generator().manual_seed(3)
        return [
            torch.cat(t) for t in zip(*batches(ds.train, 4, shuffle=True, generator=g), strict=True)
        ]

    x0, y0 = epoch(0, False)
    x2, y2 = epoch(2, True)
    assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_streamed_batches_leave_the_global_rng_alone(one_folder):
    ds = build(one_folder)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(batches(ds.train, 4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    ds.train.inputs(2)
    assert torch.equal(torch.rand(3), expected)


def test_streamed_to_device_and_pinning(one_folder):
    split = build(one_folder).test
    moved = split.to("cpu")
    assert moved is not split and moved.device == torch.device("cpu") and len(moved) == 4
    assert not moved.pinned  # auto: only on CUDA
    assert all(x.device.type == "cpu" for x, _ in batches(moved, 2))
    if torch.cuda.is_available():
        gpu = split.to("cuda")
        assert gpu.pinned and {x.device.type for x, _ in batches(gpu, 2)} == {"cuda"}
        assert gpu.inputs(2).device.type == "cuda"


@pytest.mark.parametrize("in_memory", [False, True])
def test_train_and_evaluate_read_both_kinds(in_memory, one_folder):
    ds = build(one_folder, in_memory=in_memory)
    torch.manual_seed(0)
    model = small_cnn(num_classes=3, in_channels=3, image_size=8)
    settings = {"epochs": 2, "batch_size": 4, "optimizer": "adam", "lr": 1e-2}
    accs = []
    loss = train(
        model,
        ds.train,
        settings,
        seed=0,
        val_split=ds.val,
        on_epoch=lambda _, acc: accs.append(acc),
        progress=False,
    )
    acc, _ = evaluate(model, ds.test)
    assert loss > 0 and len(accs) == 2 and 0 <= acc <= 1


def test_grayscale_gives_one_channel(one_folder):
    ds = build(one_folder, grayscale=True, mean=[0.5], std=[0.25])
    assert ds.in_channels == 1 and ds.test.inputs(1).shape == (1, 1, 8, 8)


# --- bad folders and settings: one line naming the value and what is accepted --------------


def test_missing_folder(tmp_path):
    root = str(tmp_path / "nothing")
    with pytest.raises(ConfigError) as e:
        build(root)
    assert str(e.value) == f"dataset.root={root!r} is not a folder; accepted: {ACCEPTED}"


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError) as e:
        build(tmp_path)
    assert str(e.value) == (
        f"dataset.root={str(tmp_path)!r} has no class folders; accepted: {ACCEPTED}"
    )


def test_class_folder_without_images(train_val):
    (train_val / "val" / "fox" / "0.png").unlink()
    for image in (train_val / "val" / "fox").iterdir():
        image.unlink()
    (train_val / "val" / "fox" / "readme.txt").write_text("not an image")
    with pytest.raises(ConfigError) as e:
        build(train_val)
    assert str(e.value) == (
        f"dataset.root={str(train_val)!r}: val/fox/ holds no images; accepted: class folders "
        "each holding images (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp)"
    )


def test_one_class(tmp_path):
    write_images(tmp_path, 6, classes=["cat"])
    with pytest.raises(ConfigError) as e:
        build(tmp_path)
    assert str(e.value) == (
        f"dataset.root={str(tmp_path)!r} has one class folder (cat/); "
        "accepted: two or more class folders"
    )


def test_train_and_val_classes_disagree(tmp_path):
    write_images(tmp_path / "train", 2)
    write_images(tmp_path / "val", 2, classes=["cat", "dog", "owl"])
    with pytest.raises(ConfigError) as e:
        build(tmp_path)
    assert str(e.value) == (
        f"dataset.root={str(tmp_path)!r}: the classes of train/ and val/ differ (val/ has "
        "['owl'] that train/ lacks; val/ lacks ['fox']); accepted: the same class folders in "
        "train/, val/ and test/"
    )


def test_train_without_val(tmp_path):
    write_images(tmp_path / "train", 2)
    with pytest.raises(ConfigError) as e:
        build(tmp_path)
    assert str(e.value) == (
        f"dataset.root={str(tmp_path)!r} has train/ but no val/; accepted: {ACCEPTED}"
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            {"num_workers": -1},
            "dataset.num_workers=-1 is not valid; accepted: an int >= 0 (0: read in the main "
            "process)",
        ),
        (
            {"num_workers": "2"},
            "dataset.num_workers='2' is not valid; accepted: an int >= 0 (0: read in the main "
            "process)",
        ),
        (
            {"num_workers": 1.5},
            "dataset.num_workers=1.5 is not valid; accepted: an int >= 0 (0: read in the main "
            "process)",
        ),
        ({"image_size": 0}, "dataset.image_size=0 is out of range; accepted: an int >= 1"),
        (
            {"pin_memory": "yes"},
            "dataset.pin_memory='yes' is not valid; accepted: true, false or auto (true when "
            "the device is CUDA)",
        ),
        (
            {"resize": 4},
            "dataset.resize=4 is out of range; accepted: null (round(image_size / 0.875)) or an "
            "int >= image_size (8)",
        ),
        (
            {"mean": [0.5]},
            "dataset.mean=[0.5] is not valid; accepted: 3 numbers, one per channel (RGB)",
        ),
    ],
    ids=["negative-workers", "str-workers", "float-workers", "image-size", "pin", "resize", "mean"],
)
def test_bad_settings(setting, message, one_folder):
    with pytest.raises(ConfigError) as e:
        build(one_folder, **setting)
    assert str(e.value) == message


# --- a user's own torch Dataset -------------------------------------------------------------


def loader_settings(**overrides):
    return {
        "num_workers": 0,
        "pin_memory": "auto",
        "persistent_workers": False,
        "in_memory": False,
        **overrides,
    }


def test_from_torch_splits_three_ways():
    ds = from_torch(Squares(), 0.25, 0.2, 0, **loader_settings())
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 6, 6)
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (3, 3, 6)  # classes from labels
    indices = ds.train.dataset.indices + ds.val.dataset.indices + ds.test.dataset.indices
    assert sorted(indices) == list(range(30))
    memory = from_torch(Squares(), 0.25, 0.2, 0, **loader_settings(in_memory=True))
    for name in ("train", "val", "test"):
        x, y = everything(getattr(ds, name))
        split = getattr(memory, name)
        assert torch.equal(x, split.x) and torch.equal(y, split.y)
    assert memory.num_classes == 3


@pytest.mark.parametrize(
    ("dataset", "num_classes", "expected"),
    [
        (NamedSquares(), None, 4),  # len(dataset.classes)
        (TensorLabelSquares(num_classes=5), None, 5),  # max of dataset.targets + 1
        (Squares(), 7, 7),  # the argument
    ],
    ids=["classes", "targets", "argument"],
)
def test_from_torch_number_of_classes(dataset, num_classes, expected):
    ds = from_torch(dataset, 0.25, 0.2, 0, num_classes, **loader_settings(num_workers=2))
    assert ds.num_classes == expected
    _, y = everything(ds.test)
    assert y.dtype == torch.long


@pytest.mark.parametrize(
    ("dataset", "found"),
    [
        (PILImages(), "tuple(PIL.Image.Image, int)"),
        (Records(), "dict"),
        (
            TensorDataset(torch.zeros(4, 3, 6, 6, dtype=torch.uint8), torch.arange(4)),
            "tuple(Tensor[3, 6, 6] uint8, Tensor[] int64)",
        ),
        (
            TensorDataset(torch.zeros(4, 3, 6, 6), torch.rand(4)),
            "tuple(Tensor[3, 6, 6] float32, Tensor[] float32)",
        ),
    ],
    ids=["pil", "dict", "uint8-images", "float-labels"],
)
def test_from_torch_refuses_items_that_are_not_tensor_label_pairs(dataset, found):
    with pytest.raises(ConfigError) as e:
        from_torch(dataset, 0.25, 0.2, 0, **loader_settings())
    name = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
    assert str(e.value) == (
        f"dataset.dataset={name}: item 0 is {found}; accepted: (float tensor of shape (C, H, W) "
        "with H == W, int label) items"
    )


def test_custom_config_builds_the_users_dataset(tmp_path):
    cfg = make_cfg(
        tmp_path,
        "dataset=custom",
        "dataset.dataset._target_=tests.custom_datasets.Squares",
        "+dataset.dataset.n=20",
        "dataset.num_workers=0",
    )
    spec = OmegaConf.to_container(cfg.dataset, resolve=True)
    del spec["name"]
    ds = instantiate(spec)
    assert (len(ds.train), len(ds.val), len(ds.test), ds.num_classes) == (16, 2, 2, 3)


def test_a_users_dataset_that_fails_is_named_in_the_error(tmp_path):
    """Not the wrapper that splits it (``sweep.data.from_torch``): the user's own class."""
    from sweep.trial import prepare

    cfg = make_cfg(
        tmp_path,
        "dataset=custom",
        "dataset.dataset._target_=tests.custom_datasets.Squares",
        "+dataset.dataset.size=-1",
    )
    with pytest.raises(ConfigError) as e:
        prepare(cfg)
    assert str(e.value).startswith(
        "dataset.dataset._target_='tests.custom_datasets.Squares' failed: RuntimeError: "
    )


# --- CIFAR-10: augmentation of in-memory batches ---------------------------------------------


def test_cifar10_augment_changes_training_batches_only(data_roots):
    def load(augment):
        return cifar10(
            str(data_roots),
            val_fraction=0.1,
            split_seed=0,
            allow_unpickling_unverified_files=True,
            augment=augment,
        )

    plain, augmented = load(False), load(True)
    assert plain.train.augment is None and isinstance(augmented.train.augment, RandomCropFlip)

    def epoch(ds, seed):
        g = torch.Generator().manual_seed(seed)
        return [
            torch.cat(t) for t in zip(*batches(ds.train, 8, shuffle=True, generator=g), strict=True)
        ]

    (xp, yp), (xa, ya) = epoch(plain, 0), epoch(augmented, 0)
    assert torch.equal(yp, ya) and xa.shape == xp.shape == (36, 3, 32, 32)
    assert not torch.equal(xa, xp)
    assert torch.equal(epoch(augmented, 0)[0], xa)  # a seed fixes the crops and flips
    assert torch.equal(everything(augmented.train)[0], plain.train.x)  # in order: untouched
    assert torch.equal(everything(augmented.test)[0], plain.test.x)


def test_random_crop_flip_moves_and_mirrors_each_image():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    out = RandomCropFlip(padding=0)(x, torch.Generator().manual_seed(0))
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(out, x, strict=True))
    fill = (-1.0, -2.0, -3.0)
    out = RandomCropFlip(padding=2, fill=fill)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = torch.tensor(fill).view(1, 3, 1, 1).expand(2, 3, 9, 9).clone()
    padded[:, :, 2:7, 2:7] = x
    for n, o in enumerate(out):
        windows = [padded[n, :, i : i + 5, j : j + 5] for i in range(5) for j in range(5)]
        assert any(torch.equal(o, w) or torch.equal(o, w.flip(-1)) for w in windows)


@pytest.mark.parametrize("workers", [0, 2])
def test_trial_on_an_image_folder_streams_and_keeps_its_model(cfg_factory, tmp_path, workers):
    from sweep import load_model
    from sweep.training import evaluate
    from sweep.trial import prepare, run_trial

    write_images(tmp_path / "images", 8)
    cfg = cfg_factory(
        "dataset=image_folder",
        f"dataset.root={tmp_path / 'images'}",
        "dataset.image_size=8",
        f"dataset.num_workers={workers}",
        "method=ln_structured",
        "compact=true",
    )
    row = run_trial(cfg)
    assert (row["status"], row["dataset"], row["compacted"]) == ("complete", "image_folder", True)
    data = prepare(cfg, check_store=False).data
    assert isinstance(data.test, Streamed) and len(data.test) == 2  # 10 % of 24 images
    model = load_model(row["trial_key"], tmp_path / "results")
    assert evaluate(model, data.test)[0] == row["acc_finetuned"]


def test_trial_on_a_users_dataset(cfg_factory):
    from sweep.trial import run_trial

    row = run_trial(
        cfg_factory(
            "dataset=custom",
            "dataset.dataset._target_=tests.custom_datasets.Squares",
            "dataset.num_workers=0",
        )
    )
    assert (row["status"], row["dataset"]) == ("complete", "custom")
    assert row["dataset.dataset._target_"] == "tests.custom_datasets.Squares"
