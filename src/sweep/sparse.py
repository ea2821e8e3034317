"""Sparse checkpoints: what an unstructured-pruned model costs on disk.

A float tensor with zeros is stored as its non-zero values plus a bitmask of where they go
(1 bit per entry), which beats a dense tensor once about 1/32 of a float32 tensor is zero;
other tensors are stored as they are. Files load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["dense_size", "load_sparse", "pack", "save_sparse", "sparse_size", "unpack"]


def save_sparse(state: Mapping[str, torch.Tensor], path: str | os.PathLike | io.BytesIO) -> None:
    """Save a state dict with sparse float tensors packed as values + bitmask.

    Example:
        >>> buf = io.BytesIO()
        >>> save_sparse({"w": torch.tensor([0.0, 2.0, 0.0, 3.0])}, buf)
        >>> _ = buf.seek(0)
        >>> load_sparse(buf)["w"].tolist()
        [0.0, 2.0, 0.0, 3.0]
    """
    torch.save(pack(state), path)


def load_sparse(path: str | os.PathLike | io.BytesIO) -> dict[str, torch.Tensor]:
    """The state dict saved by `save_sparse`, with every tensor dense again."""
    return unpack(torch.load(path, weights_only=True))


def pack(state: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """``state`` on the CPU, each float tensor with enough zeros as values + bitmask."""
    packed: dict[str, object] = {}
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        nonzero = t != 0
        if t.is_floating_point() and t.numel() and _worth_packing(t, int(nonzero.sum())):
            bits = np.packbits(nonzero.flatten().numpy())
            packed[name] = {
                "values": t[nonzero].clone(),
                "bitmask": torch.from_numpy(bits),
                "shape": list(t.shape),
            }
        else:
            packed[name] = t.clone()
    return packed


def unpack(packed: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The dense state dict of a `pack` result."""
    state = {}
    for name, entry in packed.items():
        if isinstance(entry, dict):
            n = int(np.prod(entry["shape"]))
            where = np.unpackbits(entry["bitmask"].numpy(), count=n).astype(bool)
            dense = torch.zeros(n, dtype=entry["values"].dtype)
            dense[torch.from_numpy(where)] = entry["values"]
            state[name] = dense.reshape(entry["shape"])
        else:
            state[name] = entry
    return state


def sparse_size(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of the `save_sparse` file for ``state``."""
    buf = io.BytesIO()
    save_sparse(state, buf)
    return buf.getbuffer().nbytes


def dense_size(state: Mapping[str, torch.Tensor]) -> int:
    """Bytes of ``torch.save(state)``."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return buf.getbuffer().nbytes


def _worth_packing(t: torch.Tensor, nonzero: int) -> bool:
    bits = t.element_size() * 8
    return nonzero * bits + t.numel() < t.numel() * bits
