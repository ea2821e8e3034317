"""How many trials a group holds: the ``fuse`` setting resolved on a device."""

from __future__ import annotations

import torch

__all__ = ["AUTO_LIMIT", "fuse_size"]

# The most members ``fuse=auto`` puts in a group: past it a GPU is busy already (HFTA's curves
# flatten by 8-16 models on V100/A100), and one failing batched model costs fewer trials.
AUTO_LIMIT = 16
# The share of the free device memory ``auto`` plans to fill; the rest is left to the
# allocator's fragmentation and cuDNN's workspaces.
_HEADROOM = 0.8


def fuse_size(
    setting: int | str, device: torch.device, member_bytes: int, free_bytes: int | None = None
) -> int:
    """The group size ``setting`` (the ``fuse`` key) asks for on ``device``.

    Args:
        setting: An int K >= 1 (1: every trial alone), or ``auto``: 1 on a CPU, where a batched
            model does not pay (issue 23: 0.8x on 2 threads for K=8 small_cnn); on CUDA as many
            members as 80% of the free memory holds, at most `AUTO_LIMIT`.
        device: Where the group runs.
        member_bytes: The device memory one member needs in training (its peak, measured or
            estimated: weights, gradients, optimizer state, masks and activations).
        free_bytes: Free device memory; read from the device when ``None``.

    Example:
        >>> fuse_size("auto", torch.device("cpu"), 10**6)
        1
        >>> fuse_size("auto", torch.device("cuda"), 10**9, free_bytes=5 * 10**9)
        4
    """
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 1
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    fits = int(free_bytes * _HEADROOM) // max(1, member_bytes)
    return max(1, min(AUTO_LIMIT, fits))
