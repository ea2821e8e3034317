"""Streamed or in memory: one finetuning epoch through each path of `sweep.data.image_folder`.

The script writes an image folder (JPEG files, one subfolder per class), opens it three ways
(streamed through a DataLoader with 0 and 2 worker processes, both with the training
augmentation, and decoded once into memory) and finetunes a small_cnn for one epoch through
`sweep.training.train` on each, side by side in one run: the first epoch (with worker start-up)
and the median of the warm ones after it; the reading alone (batches, no model) beside it.
Ratios are against the in-memory path measured in the same run.

    python experiments/benchmarks/data_paths.py [--classes 10] [--per-class 100] [--size 64]
        [--image-size 32] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sweep.data import Dataset, batches, image_folder
from sweep.models import small_cnn
from sweep.training import train

SETTINGS = {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 1e-3}


def write_folder(root: Path, classes: int, per_class: int, size: int) -> None:
    """Smooth colour gradients plus noise, one hue per class, saved as JPEG (quality 90)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.2, 1.0, size)
    for c in range(classes):
        folder = root / f"class_{c:02d}"
        folder.mkdir(parents=True)
        colour = rng.uniform(60, 255, size=3)
        for i in range(per_class):
            image = colour * ramp[None, :, None] * ramp[::-1, None, None]
            image = image + rng.normal(0, 25, size=(size, size, 3))
            pixels = image.clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)


def open_paths(root: Path, image_size: int) -> dict[str, tuple[Dataset, float]]:
    """The three paths, each with the seconds it took to open (decoding, for in memory)."""
    common = {
        "root": str(root),
        "image_size": image_size,
        "resize": None,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "augment": True,
        "grayscale": False,
        "val_fraction": 0.1,
        "test_fraction": 0.1,
        "split_seed": 0,
        "pin_memory": "auto",
        "persistent_workers": True,
    }
    image_folder(**common, num_workers=0, in_memory=False)  # imports and file cache: untimed
    paths = {}
    for name, workers, in_memory in (
        ("streamed, 0 workers", 0, False),
        ("streamed, 2 workers", 2, False),
        ("in memory", 2, True),
    ):
        start = time.perf_counter()
        data = image_folder(**common, num_workers=workers, in_memory=in_memory)
        paths[name] = (data, time.perf_counter() - start)
    return paths


def epoch_s(data: Dataset, device: torch.device, seed: int) -> float:
    torch.manual_seed(0)
    model = small_cnn(
        num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size
    )
    model = model.to(device)
    start = time.perf_counter()
    train(model, data.train, SETTINGS, seed=seed, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def read_s(data: Dataset, seed: int) -> float:
    start = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    for x, _ in batches(data.train, SETTINGS["batch_size"], shuffle=True, generator=g):
        x.sum().item()  # the batch is there, on the device
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--size", type=int, default=64, help="side of the JPEG files")
    parser.add_argument("--image-size", type=int, default=32, help="side of the inputs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.classes, args.per_class, args.size)
        paths = {
            name: (data.to(device), opened)
            for name, (data, opened) in open_paths(root, args.image_size).items()
        }
        n = len(next(iter(paths.values()))[0].train)
        print(
            f"{args.classes} classes x {args.per_class} JPEGs {args.size}x{args.size} -> "
            f"{args.image_size}x{args.image_size}, {n} training images; small_cnn, one epoch, "
            f"batch {SETTINGS['batch_size']}; device {device}, "
            f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
        )
        first = {name: epoch_s(data, device, seed=0) for name, (data, _) in paths.items()}
        warm: dict[str, list[float]] = {name: [] for name in paths}
        reads: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.repeats):  # alternating, so that drift hits every path
            for name, (data, _) in paths.items():
                warm[name].append(epoch_s(data, device, seed=r + 1))
                reads[name].append(read_s(data, seed=r + 1))

        base = statistics.median(warm["in memory"])
        base_read = statistics.median(reads["in memory"])
        print(
            f"{'path':21} {'open s':>7} {'1st epoch':>9} {'samples/s':>10} {'x in mem':>9} "
            f"{'read only/s':>12} {'x in mem':>9}"
        )
        for name, (_, opened) in paths.items():
            t, rd = statistics.median(warm[name]), statistics.median(reads[name])
            print(
                f"{name:21} {opened:7.2f} {first[name]:8.2f}s {n / t:10.0f} {base / t:9.3f} "
                f"{n / rd:12.0f} {base_read / rd:9.3f}"
            )
        print(
            "open s: building the dataset (in memory: decoding every image once); samples/s: "
            f"training, median of {args.repeats} warm epochs; x in mem: speed relative to in "
            "memory (1 = as fast)"
        )


if __name__ == "__main__":
    main()
