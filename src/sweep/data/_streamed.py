from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler, get_worker_info

from sweep.data._split import part_bounds
from sweep.errors import ConfigError

# Item seeds are drawn below 2**62: any such value seeds torch's generator.
_SEEDS = 2**62


class Streamed:
    """A split read item by item from a ``torch.utils.data.Dataset`` through a ``DataLoader``:
    for data that does not fit in memory, or whose training transforms are random per image.

    Each shuffled pass draws one seed from the generator given to `batches`; it fixes the order
    and seeds torch's RNG before each item is read, so the dataset's random transforms (those
    drawing from torch's RNG, as torchvision's do) give the same batches for the same seed,
    whatever ``num_workers`` and whether the workers persist. A pass in order seeds each item
    by its index: the same batches every time. The caller's RNG is never drawn from.

    Args:
        dataset: A map-style dataset of ``(input tensor (C, H, W), int label)`` items.
        num_workers: Processes reading items (0: read in the main process).
        pin_memory: Batches in page-locked memory, copied to the GPU without blocking:
            ``True``, ``False`` or ``"auto"`` (when the split's device is CUDA).
        persistent_workers: Keep the worker processes between passes (only with workers).
        device: Where batches are delivered; `to` gives a copy for another device.

    Raises:
        ConfigError: A loader setting is not one of the accepted values.

    Example:
        >>> data = torch.utils.data.TensorDataset(torch.zeros(5, 1, 2, 2), torch.arange(5))
        >>> split = Streamed(data, num_workers=0, pin_memory="auto", persistent_workers=False)
        >>> [y.tolist() for _, y in split.batches(2)]
        [[0, 1], [2, 3], [4]]
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        *,
        num_workers: int,
        pin_memory: bool | str,
        persistent_workers: bool,
        device: torch.device | str = "cpu",
    ) -> None:
        check_loader_settings(num_workers, pin_memory, persistent_workers)
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self._device = torch.device(device)
        self.part: tuple[int, int] | None = None  # (rank, world size), see `shard`
        # idle loaders by pinning, shared with copies: persistent workers outlive a pass
        self._idle: dict[bool, DataLoader] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getstate__(self) -> dict[str, Any]:
        # loaders hold worker processes: a pickled copy starts its own
        return {**self.__dict__, "_idle": {}}

    def __repr__(self) -> str:
        return (
            f"Streamed({type(self.dataset).__name__} of {len(self)}, "
            f"num_workers={self.num_workers}, pin_memory={self.pin_memory!r}, "
            f"persistent_workers={self.persistent_workers}, device={str(self._device)!r})"
        )

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def pinned(self) -> bool:
        """Whether batches come in page-locked memory (and are copied without blocking)."""
        return self.pin_memory is True or (
            self.pin_memory == "auto" and self._device.type == "cuda"
        )

    def to(self, device: torch.device | str) -> Streamed:
        moved = copy.copy(self)
        moved._device = torch.device(device)
        return moved

    def shard(self, rank: int, world_size: int) -> Streamed:
        """This split as rank ``rank`` of ``world_size`` reads it: the items of its part of
        each batch only (`sweep.data.shard`)."""
        sharded = copy.copy(self)  # the idle loaders are shared: each pass sets its part
        sharded.part = None if world_size == 1 else (rank, world_size)
        return sharded

    def inputs(self, n: int) -> torch.Tensor:
        # the first inputs of a pass in order: the same every time, the caller's RNG left alone
        items = _Seeded(self.dataset)
        x = [items[(i, i)][0] for i in range(min(n, len(self)))]
        return torch.stack(x).to(self._device)

    def batches(
        self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = int(torch.randint(_SEEDS, (), generator=generator)) if shuffle else None
        pinned = self.pinned
        # a pass already under way keeps its loader; a second one at once gets its own
        loader = self._idle.pop(pinned, None)
        if loader is None:
            loader = self._loader(pinned)
        loader.batch_sampler.start(batch_size, seed, self.part)
        try:
            count = 0
            for x, y in loader:
                count += 1
                yield (
                    x.to(self._device, non_blocking=pinned),
                    y.to(self._device, non_blocking=pinned).long(),
                )
        finally:
            self._idle[pinned] = loader
        if count < math.ceil(len(self) / batch_size):
            # this rank's part of the last batch is empty (fewer items than ranks); the loader
            # cannot collate nothing, and every rank must see the same number of batches
            x = self.inputs(1)
            yield x[:0], torch.zeros(0, dtype=torch.long, device=self._device)

    def _loader(self, pinned: bool) -> DataLoader:
        return DataLoader(
            _Seeded(self.dataset),
            batch_sampler=_Passes(len(self.dataset)),
            num_workers=self.num_workers,
            pin_memory=pinned,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            # the loader's own seeds come from here, not from the caller's global RNG
            generator=torch.Generator().manual_seed(0),
        )


def check_loader_settings(num_workers: Any, pin_memory: Any, persistent_workers: Any) -> None:
    """Raise `ConfigError` on a ``dataset.num_workers`` / ``pin_memory`` /
    ``persistent_workers`` value a ``DataLoader`` would not take."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(
            f"dataset.num_workers={num_workers!r} is not valid; "
            "accepted: an int >= 0 (0: read in the main process)"
        )
    if not (isinstance(pin_memory, bool) or pin_memory == "auto"):
        raise ConfigError(
            f"dataset.pin_memory={pin_memory!r} is not valid; "
            "accepted: true, false or auto (true when the device is CUDA)"
        )
    if not isinstance(persistent_workers, bool):
        raise ConfigError(
            f"dataset.persistent_workers={persistent_workers!r} is not valid; "
            "accepted: true or false"
        )


class _Passes(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, item seed)`` keys for the pass `start` set up: in order, each item
    seeded by its index, or in an order and with item seeds drawn from the pass's seed."""

    def __init__(self, n: int) -> None:
        self.n, self.batch_size, self.seed, self.part = n, 1, None, None

    def start(self, batch_size: int, seed: int | None, part: tuple[int, int] | None) -> None:
        self.batch_size, self.seed, self.part = batch_size, seed, part

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.seed is None:  # each item seeded by its index: the same random transforms each time
            keys = [(i, i) for i in range(self.n)]
        else:
            g = torch.Generator().manual_seed(self.seed)
            order = torch.randperm(self.n, generator=g).tolist()
            seeds = torch.randint(_SEEDS, (self.n,), generator=g).tolist()
            keys = list(zip(order, seeds, strict=True))
        for start in range(0, self.n, self.batch_size):
            batch = keys[start : start + self.batch_size]
            lo, hi = part_bounds(len(batch), self.part)
            if hi > lo:  # an empty part is made up by `Streamed.batches`
                yield batch[lo:hi]


class _Seeded(torch.utils.data.Dataset):
    """``dataset[index]``, read after seeding torch's CPU generator with the key's item seed."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if get_worker_info() is not None:  # a worker's generator is its own
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
        with torch.random.fork_rng(devices=[]):  # the main process's: restored after
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]
