"""Users' own torch datasets: good ones, read by `sweep.data.from_torch`, and bad ones."""

from __future__ import annotations

from typing import ClassVar

import torch
from PIL import Image


class Squares(torch.utils.data.Dataset):
    """``n`` images (``channels`` x ``size`` x ``size``): class ``i % num_classes`` is a square of
    its own brightness on noise. No ``classes`` or ``targets``: labels are read from the items."""

    def __init__(self, n: int = 30, num_classes: int = 3, size: int = 6, channels: int = 3):
        g = torch.Generator().manual_seed(0)
        self.y = [i % num_classes for i in range(n)]
        self.x = 0.1 * torch.rand(n, channels, size, size, generator=g)
        for i, label in enumerate(self.y):
            self.x[i, :, 1:-1, 1:-1] += (label + 1) / num_classes

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.x[index], self.y[index]


class NamedSquares(Squares):
    """`Squares` that name their classes, and one more than the labels use."""

    classes: ClassVar[list[str]] = ["small", "medium", "large", "unused"]


class TensorLabelSquares(Squares):
    """`Squares` with 0-d int tensor labels, listed in ``targets``."""

    @property
    def targets(self) -> list[int]:
        return self.y

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], torch.tensor(self.y[index], dtype=torch.int32)


class PILImages(torch.utils.data.Dataset):
    """A torchvision-style dataset without ``transform=ToTensor()``: items are PIL images."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.new("RGB", (6, 6)), index % 2


class Records(torch.utils.data.Dataset):
    """Items are dicts, as some datasets return."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return {"image": torch.zeros(3, 6, 6), "label": index % 2}
