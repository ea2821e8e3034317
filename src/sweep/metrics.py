"""What a pruned model costs: parameters, non-zeros, FLOPs and latency."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_flops",
    "count_nonzero",
    "count_params",
    "latency_ms",
    "layer_table",
    "removed_fraction",
    "weight_numels",
]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def count_params(model: nn.Module) -> int:
    """Number of parameter entries (masked entries included: they still occupy memory)."""
    return sum(t.numel() for t in _weights_and_buffers(model))


def count_nonzero(model: nn.Module) -> int:
    """Number of parameter entries that are not zero, masks applied."""
    return sum(int(torch.count_nonzero(t)) for t in _weights_and_buffers(model))


@torch.no_grad()
def count_flops(model: nn.Module, example: torch.Tensor, *, zero_aware: bool = True) -> int:
    """FLOPs of one forward pass on ``example``, counted by ``torch.utils.flop_counter``.

    With ``zero_aware`` each Linear/Conv layer's FLOPs are scaled by the fraction of its weight
    that is non-zero: the work that remains when multiplications by zero are skipped.

    Example:
        >>> count_flops(nn.Linear(4, 3, bias=False), torch.zeros(1, 4))
        24
    """
    model.eval()
    inputs: dict[nn.Module, torch.Tensor] = {}

    def keep_input(module: nn.Module, args: tuple) -> None:
        inputs.setdefault(module, args[0])

    weighted = [m for m in model.modules() if isinstance(m, _WEIGHTED)] if zero_aware else []
    hooks = [m.register_forward_pre_hook(keep_input) for m in weighted]
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            model(example)
    finally:
        for h in hooks:
            h.remove()
    total = counter.get_total_flops()
    for m, x in inputs.items():
        density = float(torch.count_nonzero(m.weight)) / m.weight.numel()
        if density < 1.0:
            layer_counter = FlopCounterMode(display=False)
            with layer_counter:
                m(x)
            total -= round(layer_counter.get_total_flops() * (1.0 - density))
    return int(total)


@torch.no_grad()
def latency_ms(model: nn.Module, batch: torch.Tensor, *, warmup: int, repeats: int) -> float:
    """Median time of one forward pass on ``batch`` in milliseconds, after ``warmup`` passes."""
    model.eval()
    cuda = batch.device.type == "cuda"
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize(batch.device)
        start = time.perf_counter()
        model(batch)
        if cuda:
            torch.cuda.synchronize(batch.device)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def weight_numels(model: nn.Module) -> dict[str, int]:
    """Entries of every Linear/Conv weight by layer name: the dense sizes to compare against."""
    return {name: m.weight.numel() for name, m in model.named_modules() if isinstance(m, _WEIGHTED)}


def removed_fraction(model: nn.Module, dense: dict[str, int], names: set[str]) -> float:
    """Sparsity over the layers ``names``: the share of their dense entries now zero or removed.

    For a masked model that is the share of zeros; for a compacted one it also counts the rows
    and input channels that were physically removed.
    """
    modules = dict(model.named_modules())
    kept = sum(int(torch.count_nonzero(modules[n].weight)) for n in names)
    total = sum(dense[n] for n in names)
    return 1.0 - kept / total if total else 0.0


def layer_table(model: nn.Module, dense: dict[str, int], names: set[str]) -> list[dict]:
    """Per-layer rows (layer, param, numel, nonzero, in_scope) for every Linear/Conv weight.

    ``numel`` is the dense layer's size, so ``1 - nonzero / numel`` is the layer's sparsity
    whether its zeros are masked or removed.
    """
    rows = []
    for name, m in model.named_modules():
        if isinstance(m, _WEIGHTED):
            rows.append(
                {
                    "layer": name,
                    "param": "weight",
                    "numel": dense.get(name, m.weight.numel()),
                    "nonzero": int(torch.count_nonzero(m.weight)),
                    "in_scope": name in names,
                }
            )
    return rows


def _weights_and_buffers(model: nn.Module):
    # A pruned module's parameter is `weight_orig` and the effective tensor `weight` (an attribute).
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("_orig"):
                yield getattr(module, name[: -len("_orig")])
            else:
                yield p
