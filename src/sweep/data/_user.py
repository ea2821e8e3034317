"""The user's own data: a folder of images by class, or any ``torch.utils.data.Dataset``."""

from __future__ import annotations

import copy
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset, Subset

from sweep.data._augment import RandomCropFlip
from sweep.data._datasets import _check_fractions
from sweep.data._fingerprint import files_fingerprint, object_fingerprint
from sweep.data._split import Dataset, Split, holdout_indices, three_way_indices
from sweep.data._streamed import Streamed, check_loader_settings
from sweep.errors import ConfigError, TrialFailed

_LAYOUTS = (
    "a local folder of class subfolders holding images, or one whose train/ and val/ "
    "(and test/) hold the same class subfolders"
)
_ITEMS = "(float tensor of shape (C, H, W) with H == W, int label) items"


def image_folder(
    root: str,
    image_size: int,
    resize: int | None,
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool,
    grayscale: bool,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    num_workers: int,
    pin_memory: bool | str,
    persistent_workers: bool,
    in_memory: bool,
) -> Dataset:
    """Images in class subfolders, read by torchvision's ``ImageFolder``; streamed from disk by
    a ``DataLoader``, or decoded once into memory (``in_memory``).

    Layouts of ``root``:

    - ``train/``, ``val/`` and ``test/``, each with the same class subfolders: used as given.
    - ``train/`` and ``val/`` only: ``val/`` is the test split (the accuracy reported), and
      ``val_fraction`` of ``train/`` is held out for validation with ``split_seed``.
    - class subfolders directly: ``test_fraction`` of all images held out for testing, then
      ``val_fraction`` of the rest for validation, with ``split_seed``.

    Evaluation reads each image resized to ``resize`` and centre-cropped to ``image_size``.
    Training, with ``augment``, reads a random resized crop, flipped at random; in memory, it
    takes the decoded evaluation tensors with a random crop (padding ``image_size // 8``) and
    flip per batch instead.

    Args:
        root: The folder.
        image_size: Height and width of the inputs.
        resize: Shorter side before the centre crop; ``None``: ``round(image_size / 0.875)``.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        augment: Random crops and flips for training.
        grayscale: One channel instead of RGB.
        val_fraction: Validation share where there is no ``val/`` to use (see the layouts).
        test_fraction: Test share of a folder without ``train/``.
        split_seed: Fixes the held-out images.
        num_workers: Processes decoding images (0: the main process).
        pin_memory: ``True``, ``False`` or ``"auto"`` (true when the device is CUDA).
        persistent_workers: Keep the workers between passes.
        in_memory: Decode every image once into tensors: faster for a folder that fits in memory.

    Raises:
        ConfigError: A setting is out of range, ``root`` is not a folder, a folder has no class
            subfolders, a class no images, there is only one class, or the class subfolders of
            ``train/``, ``val/`` and ``test/`` differ.
        ConfigError: With ``in_memory`` (or when the first image is one), an image that PIL
            cannot read; the message names each such file. Streamed images are read as the
            trial goes: one that cannot be read fails the trial with `UnreadableImage`.

    Example:
        >>> ds = image_folder("/data/pets", 224, None, [0.485, 0.456, 0.406],
        ...     [0.229, 0.224, 0.225], True, False, 0.1, 0.1, 0, 2, "auto", True, False)
        ... # doctest: +SKIP
    """
    from torchvision import transforms as T

    check_loader_settings(num_workers, pin_memory, persistent_workers)
    _check_int("image_size", image_size, 1)
    resize = round(image_size / 0.875) if resize is None else resize
    if isinstance(resize, bool) or not isinstance(resize, int) or resize < image_size:
        raise ConfigError(
            f"dataset.resize={resize!r} is out of range; accepted: null "
            f"(round(image_size / 0.875)) or an int >= image_size ({image_size})"
        )
    for name, value in (("augment", augment), ("grayscale", grayscale), ("in_memory", in_memory)):
        _check_bool(name, value)
    channels = 1 if grayscale else 3
    mean, std = _check_stats("mean", mean, channels), _check_stats("std", std, channels)
    if min(std) <= 0:
        raise ConfigError(f"dataset.std={std!r} is out of range; accepted: numbers > 0")

    gray = [T.Grayscale()] if grayscale else []
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    eval_tf = T.Compose([*gray, T.Resize(resize), T.CenterCrop(image_size), *tail])
    train_tf = eval_tf
    if augment:
        train_tf = T.Compose(
            [*gray, T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *tail]
        )

    parts = _folder_parts(root, eval_tf, train_tf, val_fraction, test_fraction, split_seed)
    black = tuple(-m / s for m, s in zip(mean, std, strict=True))
    try:
        return _dataset(
            parts,
            num_classes=len(parts.train.eval_view.classes),
            in_channels=parts.train.eval_view[0][0].shape[0],
            image_size=image_size,
            loader={"num_workers": num_workers, "pin_memory": pin_memory},
            persistent_workers=persistent_workers,
            in_memory=in_memory,
            augment=RandomCropFlip(image_size // 8, black) if augment else None,
            fingerprint=_folder_fingerprint(root, parts),
        )
    except UnreadableImage:  # met while decoding into memory: name them all, before anything runs
        raise _unreadable(root, parts) from None


def from_torch(
    dataset: torch.utils.data.Dataset,
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
    num_classes: int | None = None,
    *,
    num_workers: int,
    pin_memory: bool | str,
    persistent_workers: bool,
    in_memory: bool,
) -> Dataset:
    """Any map-style ``torch.utils.data.Dataset`` of ``(input tensor, int label)`` items, split
    three ways: ``test_fraction`` of the items held out for testing, then ``val_fraction`` of
    the rest for validation, with ``split_seed``. Every split reads the same items, transforms
    included.

    Args:
        dataset: Items ``(float tensor (C, H, W) with H == W, int label)``; shapes, channels and
            image size are read from the first.
        val_fraction: Validation share of what the test split leaves.
        test_fraction: Test share of all items.
        split_seed: Fixes the split.
        num_classes: ``None``: ``len(dataset.classes)``, else the largest label + 1 of
            ``dataset.targets``, else of all items (reading every item once).
        num_workers: Processes reading items (0: the main process).
        pin_memory: ``True``, ``False`` or ``"auto"`` (true when the device is CUDA).
        persistent_workers: Keep the workers between passes.
        in_memory: Read every item once into tensors.

    Raises:
        ConfigError: A setting is out of range, or the dataset is not map-style, is empty, or
            its first item is not ``(tensor (C, H, W), int label)``.

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.rand(20, 3, 4, 4), torch.arange(20) % 2)
        >>> ds = from_torch(data, 0.25, 0.2, 0, num_workers=0, pin_memory="auto",
        ...                 persistent_workers=False, in_memory=False)
        >>> len(ds.train), len(ds.val), len(ds.test), ds.num_classes, ds.image_size
        (12, 4, 4, 2, 4)
    """
    check_loader_settings(num_workers, pin_memory, persistent_workers)
    _check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
    _check_bool("in_memory", in_memory)
    if num_classes is not None:
        _check_int("num_classes", num_classes, 2, also="or null (from the dataset)")
    name = _name(dataset)
    if isinstance(dataset, IterableDataset) or not (
        hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
    ):
        raise ConfigError(
            f"dataset.dataset={name} is not a map-style dataset; "
            "accepted: a torch.utils.data.Dataset with __len__ and __getitem__"
        )
    if len(dataset) == 0:
        raise ConfigError(f"dataset.dataset={name} has no items; accepted: {_ITEMS}")
    x0 = _check_item(dataset[0], name)

    decoded = _read_all(dataset, num_workers, inputs=True) if in_memory else None
    if num_classes is None:
        num_classes = _count_classes(dataset, decoded, num_workers)
    train, val, test = three_way_indices(len(dataset), val_fraction, test_fraction, split_seed)
    parts = _Parts(*(_Part(dataset, dataset, idx) for idx in (train, val, test)))
    return _dataset(
        parts,
        num_classes=num_classes,
        in_channels=x0.shape[0],
        image_size=x0.shape[-1],
        loader={"num_workers": num_workers, "pin_memory": pin_memory},
        persistent_workers=persistent_workers,
        in_memory=in_memory,
        augment=None,
        decoded={id(dataset): decoded} if decoded is not None else None,
        fingerprint=object_fingerprint(dataset),
    )


class _Part(NamedTuple):
    """One split: what streaming reads (``view``), what decoding in memory reads (``eval_view``,
    the same files with evaluation transforms), and the item indices (``None``: all)."""

    view: Any
    eval_view: Any
    indices: torch.Tensor | None


class _Parts(NamedTuple):
    train: _Part
    val: _Part
    test: _Part


def _folder_parts(root, eval_tf, train_tf, val_fraction, test_fraction, split_seed) -> _Parts:
    if root is None or not Path(root).is_dir():
        raise ConfigError(f"dataset.root={root!r} is not a folder; accepted: {_LAYOUTS}")
    base = Path(root)
    if not (base / "train").is_dir():
        _check_fractions(val_fraction=val_fraction, test_fraction=test_fraction)
        everything = _open_folder(root, "", eval_tf)
        train, val, test = three_way_indices(
            len(everything), val_fraction, test_fraction, split_seed
        )
        training = _with_transform(everything, train_tf)
        return _Parts(
            _Part(training, everything, train),
            _Part(everything, everything, val),
            _Part(everything, everything, test),
        )
    if not (base / "val").is_dir():
        raise ConfigError(f"dataset.root={root!r} has train/ but no val/; accepted: {_LAYOUTS}")
    train = _open_folder(root, "train/", eval_tf)
    val = _open_folder(root, "val/", eval_tf)
    _check_same_classes(root, train, val, "val/")
    training = _with_transform(train, train_tf)
    if (base / "test").is_dir():
        test = _open_folder(root, "test/", eval_tf)
        _check_same_classes(root, train, test, "test/")
        return _Parts(_Part(training, train, None), _Part(val, val, None), _Part(test, test, None))
    _check_fractions(val_fraction=val_fraction)
    kept, held = holdout_indices(len(train), val_fraction, split_seed, "dataset.val_fraction")
    return _Parts(_Part(training, train, kept), _Part(train, train, held), _Part(val, val, None))


def _open_folder(root: str, sub: str, transform):
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    where = f" in {sub}" if sub else ""
    try:
        folder = ImageFolder(
            str(Path(root, sub)), transform=transform, loader=_load_image, allow_empty=True
        )
    except FileNotFoundError:  # no class subfolders at all
        raise ConfigError(
            f"dataset.root={root!r} has no class folders{where}; accepted: {_LAYOUTS}"
        ) from None
    targets = torch.tensor(folder.targets, dtype=torch.long)
    counts = torch.bincount(targets, minlength=len(folder.classes))
    empty = [c for c, k in zip(folder.classes, counts.tolist(), strict=True) if k == 0]
    if empty:
        raise ConfigError(
            f"dataset.root={root!r}: {sub}{empty[0]}/ holds no images; accepted: class folders "
            f"each holding images ({' '.join(IMG_EXTENSIONS)})"
        )
    if len(folder.classes) < 2:
        raise ConfigError(
            f"dataset.root={root!r} has one class folder ({sub}{folder.classes[0]}/); "
            "accepted: two or more class folders"
        )
    return folder


class UnreadableImage(TrialFailed):
    """An image file PIL cannot read: one line naming it.

    A ``DataLoader`` worker's exception comes back in the main process as the same type with
    the worker's traceback for message; its last line is the one that names the file.
    """

    def __init__(self, message: str) -> None:
        last = message.rstrip().splitlines()[-1] if message.strip() else message
        super().__init__(last.split(f"{type(self).__name__}: ", 1)[-1])


def _load_image(path: str):
    """torchvision's default loader, failing with `UnreadableImage` naming the file."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except UnidentifiedImageError:  # its message shows the open file object, not the path
        raise UnreadableImage(f"unreadable image {path}: not an image format PIL knows") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise UnreadableImage(f"unreadable image {path}: {reason}") from None


def _unreadable(root: str, parts: _Parts) -> ConfigError:
    """The refusal naming every image of the splits that does not load (each file once)."""
    folders = {id(part.eval_view): part.eval_view for part in parts}.values()
    bad = []
    for path in dict.fromkeys(p for f in folders for p, _ in f.samples):
        try:
            _load_image(path)
        except UnreadableImage:
            bad.append(os.path.relpath(path, root))
    return ConfigError(
        f"dataset.root={root!r} holds {len(bad)} unreadable image"
        f"{'s' if len(bad) != 1 else ''}: {_some(bad)}; accepted: image files PIL can read "
        "(remove or replace them)"
    )


def _check_same_classes(root: str, train, other, sub: str) -> None:
    if other.classes == train.classes:
        return
    extra = sorted(set(other.classes) - set(train.classes))
    missing = sorted(set(train.classes) - set(other.classes))
    found = [f"{sub} has {_some(extra)} that train/ lacks"] if extra else []
    found += [f"{sub} lacks {_some(missing)}"] if missing else []
    raise ConfigError(
        f"dataset.root={root!r}: the classes of train/ and {sub} differ ({'; '.join(found)}); "
        "accepted: the same class folders in train/, val/ and test/"
    )


def _some(names: list[str], shown: int = 5) -> str:
    listed = ", ".join(repr(n) for n in names[:shown])
    return f"[{listed}, ... {len(names)} in all]" if len(names) > shown else f"[{listed}]"


def _folder_fingerprint(root: str, parts: _Parts) -> str:
    """`files_fingerprint` of the images the splits read (each folder once), relative to
    ``root``: an image edited, added, removed or moved to another class is a new dataset."""
    folders = {id(part.eval_view): part.eval_view for part in parts}.values()
    return files_fingerprint(root, [path for f in folders for path, _ in f.samples])


def _with_transform(folder, transform):
    """A second view of the same files (no second scan of the folder) with ``transform``."""
    view = copy.copy(folder)
    view.transform = transform
    view.transforms = copy.copy(folder.transforms)
    view.transforms.transform = transform
    return view


def _dataset(
    parts: _Parts,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    loader: dict[str, Any],
    persistent_workers: bool,
    in_memory: bool,
    augment: RandomCropFlip | None,
    decoded: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    fingerprint: str | None = None,
) -> Dataset:
    splits = []
    if in_memory:
        # each set of files decoded once, however many splits take from it
        decoded = {} if decoded is None else decoded
        for part in parts:
            key = id(part.eval_view)
            if key not in decoded:
                decoded[key] = _read_all(part.eval_view, loader["num_workers"], inputs=True)
            x, y = decoded[key]
            if part.indices is not None:
                x, y = x[part.indices], y[part.indices]
            splits.append(Split(x, y, augment if part is parts.train else None))
    else:
        for part in parts:
            items = part.view if part.indices is None else Subset(part.view, part.indices.tolist())
            splits.append(Streamed(items, persistent_workers=persistent_workers, **loader))
    return Dataset(*splits, num_classes, in_channels, image_size, fingerprint)


def _read_all(
    dataset: torch.utils.data.Dataset, num_workers: int, *, inputs: bool
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Every item's input (when ``inputs``) and label, in order, read by ``num_workers``."""
    loader = DataLoader(
        dataset, batch_size=256, num_workers=num_workers, generator=torch.Generator()
    )
    xs, ys = [], []
    # random transforms draw from a fixed seed, and the caller's RNG is left as it was
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        for x, y in loader:
            if inputs:
                xs.append(x)
            ys.append(torch.as_tensor(y).long())
    return (torch.cat(xs) if inputs else None), torch.cat(ys)


def _count_classes(dataset, decoded, num_workers: int) -> int:
    classes = getattr(dataset, "classes", None)
    if classes is not None:
        return len(classes)
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        labels = torch.as_tensor(targets)
    elif decoded is not None:
        labels = decoded[1]
    else:
        labels = _read_all(dataset, num_workers, inputs=False)[1]
    return int(labels.max()) + 1


def _check_item(item: Any, name: str) -> torch.Tensor:
    """The first item's input, once the item is ``(tensor (C, H, H) float, int label)``."""
    ok = isinstance(item, tuple | list) and len(item) == 2
    if ok:
        x, y = item
        ok = (
            isinstance(x, torch.Tensor)
            and x.ndim == 3
            and x.is_floating_point()
            and x.shape[1] == x.shape[2]
        )
        if isinstance(y, torch.Tensor):
            ok = ok and y.ndim == 0 and not (y.is_floating_point() or y.is_complex())
            ok = ok and y.dtype != torch.bool
        else:
            ok = ok and isinstance(y, numbers.Integral) and not isinstance(y, bool)
    if not ok:
        raise ConfigError(
            f"dataset.dataset={name}: item 0 is {_describe(item)}; accepted: {_ITEMS}"
        )
    return item[0]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    if isinstance(value, tuple | list):
        inner = ", ".join(_describe(v) for v in value[:4])
        return f"{type(value).__name__}({inner}{', ...' if len(value) > 4 else ''})"
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else _name(value)


def _name(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _check_int(name: str, value: Any, low: int, also: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(
            f"dataset.{name}={value!r} is out of range; accepted: an int >= {low}"
            + (f" {also}" if also else "")
        )


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"dataset.{name}={value!r} is not valid; accepted: true or false")


def _check_stats(name: str, value: Any, channels: int) -> tuple[float, ...]:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if (
        values is None
        or len(values) != channels
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    ):
        kind = "grayscale" if channels == 1 else "RGB"
        shown = values if values is not None else value
        raise ConfigError(
            f"dataset.{name}={shown!r} is not valid; accepted: {channels} number"
            f"{'s' if channels > 1 else ''}, one per channel ({kind})"
        )
    return tuple(float(v) for v in values)
