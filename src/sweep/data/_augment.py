from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RandomCropFlip:
    """Random crop after ``padding`` on each side, then a horizontal flip with probability 1/2:
    the usual CIFAR training augmentation, on a whole batch on its device at once.

    The offsets and flips are drawn on the CPU from ``generator`` (so a seed fixes them), one
    per image; the crop and the flip are one gather on the batch's device.

    Args:
        padding: Pixels added on each side before cropping back to the input size.
        fill: The padded pixels' value per channel (one value: every channel), in the units of
            the inputs: for normalised inputs, the normalised value of black.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> RandomCropFlip(padding=1)(x, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 1, 4, 4])
    """

    padding: int
    fill: Sequence[float] = (0.0,)

    def __post_init__(self) -> None:
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"padding={self.padding!r} is out of range; accepted: an int >= 0")
        object.__setattr__(self, "fill", tuple(float(v) for v in self.fill))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        p, device = self.padding, x.device
        shifts = torch.randint(0, 2 * p + 1, (2, n, 1), generator=generator).to(device)
        flips = (torch.rand(n, 1, generator=generator) < 0.5).to(device)
        if p:
            fill = torch.tensor(self.fill, dtype=x.dtype, device=device).view(1, -1, 1, 1)
            padded = fill.expand(n, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p : p + h, p : p + w] = x
        else:
            padded = x
        rows = shifts[0] + torch.arange(h, device=device)  # (n, h)
        cols = shifts[1] + torch.arange(w, device=device)  # (n, w)
        cols = torch.where(flips, cols.flip(1), cols)  # a flipped crop reads its columns backwards
        images = torch.arange(n, device=device).view(n, 1, 1, 1)
        channels = torch.arange(c, device=device).view(1, c, 1, 1)
        return padded[images, channels, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
