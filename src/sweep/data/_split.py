from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, C, H, W) float and labels ``y`` (N,) long."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class Dataset:
    """A dataset split three ways, with what a model builder needs to know about its inputs."""

    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int

    def to(self, device: torch.device | str) -> Dataset:
        return Dataset(
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.num_classes,
            self.in_channels,
            self.image_size,
        )


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of ``split``; with ``shuffle`` a new permutation drawn from ``generator``."""
    n = len(split)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(split.y.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield split.x[idx], split.y[idx]
    else:
        for start in range(0, n, batch_size):
            yield split.x[start : start + batch_size], split.y[start : start + batch_size]


def holdout(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off ``fraction`` of the rows at random (fixed by ``seed``): (kept, held out)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction {fraction!r} outside [0, 1)")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_out = round(fraction * len(y))
    out, kept = order[:n_out], order[n_out:]
    return Split(x[kept], y[kept]), Split(x[out], y[out])
