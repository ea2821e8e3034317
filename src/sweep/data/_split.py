from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch

# A training augmentation of in-memory batches: (inputs on their device, generator) -> inputs.
Augment = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


@runtime_checkable
class DataSplit(Protocol):
    """What training and evaluation need of a split: in-memory `Split` and `Streamed` both."""

    def __len__(self) -> int: ...

    @property
    def device(self) -> torch.device:
        """Where its batches are delivered."""
        ...

    def to(self, device: torch.device | str) -> DataSplit:
        """The same split, delivering its batches on ``device``."""
        ...

    def inputs(self, n: int) -> torch.Tensor:
        """The first ``n`` inputs (fewer when the split is shorter), stacked, on its device."""
        ...

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(x, y)`` mini-batches on its device; see `batches`."""
        ...

    def shard(self, rank: int, world_size: int) -> DataSplit:
        """The same split, each batch cut to rank ``rank``'s part of ``world_size`` (`shard`);
        ``world_size=1``: the whole batches again."""
        ...


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, C, H, W) float and labels ``y`` (N,) long, held in memory.

    ``augment``, when set, transforms each shuffled (training) batch on its device, drawing
    from the batches' generator; unshuffled batches (evaluation) are never augmented.
    """

    x: torch.Tensor
    y: torch.Tensor
    augment: Augment | None = None
    # (rank, world size): each batch is this rank's part of the batch of the whole split
    part: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> Split:
        return replace(self, x=self.x.to(device), y=self.y.to(device))

    def inputs(self, n: int) -> torch.Tensor:
        return self.x[:n]

    def shard(self, rank: int, world_size: int) -> Split:
        """This split as rank ``rank`` of ``world_size`` reads it (see `shard`)."""
        return replace(self, part=None if world_size == 1 else (rank, world_size))

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self)
        if not shuffle:
            for start in range(0, n, batch_size):
                lo, hi = part_bounds(min(batch_size, n - start), self.part)
                yield self.x[start + lo : start + hi], self.y[start + lo : start + hi]
            return
        order = torch.randperm(n, generator=generator).to(self.y.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            lo, hi = part_bounds(len(idx), self.part)
            if self.augment is None:
                yield self.x[idx[lo:hi]], self.y[idx[lo:hi]]
                continue
            # the whole batch: its augmentation draws what one process would draw, and the
            # generator stays in step on every rank
            x = self.augment(self.x[idx], generator)
            yield x[lo:hi], self.y[idx[lo:hi]]


@dataclass(frozen=True)
class Dataset:
    """A dataset split three ways, with what a model builder needs to know about its inputs.

    The splits are in-memory `Split` tensors or `Streamed` loaders; code that trains or
    evaluates sees only the `DataSplit` interface. ``fingerprint`` identifies the content of
    data read from files or from a user's dataset (see `sweep.data._fingerprint`).
    """

    train: DataSplit
    val: DataSplit
    test: DataSplit
    num_classes: int
    in_channels: int
    image_size: int
    # what the files or items hold (`sweep.data._fingerprint`): part of trial and baseline keys;
    # None where the config alone fixes the data (digits, synthetic)
    fingerprint: str | None = None

    def to(self, device: torch.device | str) -> Dataset:
        return replace(
            self,
            train=self.train.to(device),
            val=self.val.to(device),
            test=self.test.to(device),
        )


def shard(data: Dataset, rank: int, world_size: int) -> Dataset:
    """``data`` as rank ``rank`` of ``world_size`` processes reads it (a DDP trial).

    Every rank walks the same order of the whole split (the same generator state gives the same
    permutation everywhere) and gets its contiguous part of each batch; a batch size is the
    global one and ``len`` the whole split's. The ranks' parts of a batch are together the
    batch one process would get, its augmentation included: training over N ranks sees the
    examples one process sees, step by step (`DistributedSampler`'s idea, with the parts taken
    per batch rather than per pass so that the global batches are those of one process).
    In-memory tensors stay whole on each rank (they fit in memory, and the parts index them);
    a streamed split reads its part's items only.

    Example:
        >>> split = Split(torch.zeros(5, 1, 2, 2), torch.arange(5))
        >>> data = Dataset(split, split, split, 2, 1, 2)
        >>> [y.tolist() for _, y in shard(data, 1, 2).test.batches(4)]
        [[2, 3], [4]]
    """
    return replace(
        data,
        train=data.train.shard(rank, world_size),
        val=data.val.shard(rank, world_size),
        test=data.test.shard(rank, world_size),
    )


def part_bounds(n: int, part: tuple[int, int] | None) -> tuple[int, int]:
    """The slice ``[lo, hi)`` of a batch of ``n`` that rank ``part[0]`` of ``part[1]`` reads:
    contiguous parts whose sizes differ by at most one (empty when ``n`` < ranks)."""
    if part is None:
        return 0, n
    rank, world = part
    return n * rank // world, n * (rank + 1) // world


def batches(
    split: DataSplit,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches ``(x, y)`` of ``split`` on its device, in order or shuffled.

    Args:
        split: An in-memory `Split` or a `Streamed` one.
        batch_size: Examples per batch; the last batch holds the rest.
        shuffle: A new order for each call, drawn from ``generator``, and the split's training
            augmentation (an in-memory ``augment``, a streamed dataset's random transforms)
            drawn from it too: the same generator state gives the same batches.
        generator: The source of the order (the global RNG when ``None``).

    Example:
        >>> split = Split(torch.zeros(5, 1, 2, 2), torch.arange(5))
        >>> [y.tolist() for _, y in batches(split, 2)]
        [[0, 1], [2, 3], [4]]
    """
    return split.batches(batch_size, shuffle=shuffle, generator=generator)


def holdout(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, key: str = "fraction"
) -> tuple[Split, Split]:
    """Split off ``fraction`` of the rows at random (fixed by ``seed``): (kept, held out)."""
    kept, out = holdout_indices(len(y), fraction, seed, key)
    return Split(x[kept], y[kept]), Split(x[out], y[out])


def holdout_indices(
    n: int, fraction: float, seed: int, key: str = "fraction"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The row indices `holdout` keeps and holds out of ``n`` rows.

    Raises:
        ConfigError: A ``fraction`` (the setting ``key``) > 0 that rounds to no row held out,
            or to none kept: a split with nothing to train, validate or test on.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"split fraction {fraction!r} outside [0, 1)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_out = round(fraction * n)
    if fraction > 0 and not 0 < n_out < n:
        from sweep.errors import ConfigError

        what = "holds out no item" if n_out == 0 else "keeps no item"
        raise ConfigError(
            f"{key}={fraction!r} of {n} item(s) {what}; accepted: a fraction that leaves every "
            f"split at least one item"
            + (f" (from {0.5 / n:.2g} to {1 - 0.5 / n:.4g} here)" if n > 1 else ", and more items")
        )
    return order[n_out:], order[:n_out]


def three_way_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) row indices: ``test_fraction`` of all rows held out with ``seed``,
    then ``val_fraction`` of the rest with ``seed + 1``."""
    rest, test = holdout_indices(n, test_fraction, seed, "dataset.test_fraction")
    kept, val = holdout_indices(len(rest), val_fraction, seed + 1, "dataset.val_fraction")
    return rest[kept], rest[val], test
